"""``pyoops ensemble-forecast``: advance every member of an ensemble in one batched forecast.

The members are read into one State whose arrays have a leading member axis, and
the model advances them all in one call per time step (the model's ``step`` acts on
batched FieldSets, as DAPPER's ensembles are arrays).  A model whose step acts
member by member (as the interface test kit's batched-forecast test requires) gives
bitwise the same members as one forecast per member.  YAML::

    model plugin: lorenz96
    geometry: {resol: 40}
    model: {name: Lorenz96, tstep: PT6H}
    initial condition:
      members from template:
        template: {date: 2010-01-01T00:00:00Z, filename: data/ens.%mem%.nc}
        pattern: "%mem%"
        nmembers: 20
    forecast length: P1D
    output:                       # one file per member (and per time with %date%)
      filename: out/fc.%mem%.%date%.nc
      frequency: PT6H
    output mean: {filename: out/fc.mean.%date%.nc, frequency: PT6H}
    output spread: {filename: out/fc.spread.%date%.nc, frequency: PT6H}

``%mem%`` in an output file name is replaced by the member's number as the input
numbered it (``start`` and ``zero padding`` of ``members from template``, else
1, 2, ...); without ``%mem%`` all members go to one file with a ``member``
dimension.  Outputs follow ``frequency``/``first`` as in ``pyoops forecast`` (default:
the final time only).  The spread is the standard deviation with :math:`N - 1`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pydantic import Field

from pyoops.apps.base import Application, ApplicationParameters, specialise, union_of_parameters
from pyoops.apps.forecast import OutputParameters, StateWriter, check_output_times
from pyoops.assimilation.costfunction import VariableName
from pyoops.config.parameters import DurationField, Parameters
from pyoops.util.sizes import check_members, end_date, state_bytes
from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import check_same_geometry, write_fields
from pyoops.generic.ensemble import EnsembleSourceParameters, member_filenames, read_ensemble
from pyoops.generic.forecast import forecast, number_of_steps
from pyoops.registry import ModelPlugin
from pyoops.util.datetime import DateTime
from pyoops.util.errors import ConfigError, join_path
from pyoops.util.variables import Variables

__all__ = [
    "EnsembleForecastApplication",
    "EnsembleForecastParameters",
    "EnsembleWriter",
    "ensemble_date",
    "ensemble_mean",
    "ensemble_spread",
    "member_labels",
    "read_members",
    "validate_ensemble_source",
]

logger = logging.getLogger("pyoops")


# Helpers shared by the ensemble applications ------------------------------------------------------
def member_count(source: EnsembleSourceParameters) -> int | None:
    """Number of members a source declares (None for an ensemble file, known only when read)."""
    if source.members is not None:
        return len(source.members)
    if source.members_from_template is not None:
        return source.members_from_template.nmembers
    return None


def member_labels(source: EnsembleSourceParameters, nmembers: int) -> list[str]:
    """Numbers that replace ``%mem%`` in output names: as the input template numbered them, else 1..N."""
    t = source.members_from_template
    if t is not None:
        return [str(k).zfill(t.zero_padding) if t.zero_padding else str(k) for k in range(t.start, t.start + nmembers)]
    return [str(k) for k in range(1, nmembers + 1)]


def ensemble_date(source: EnsembleSourceParameters, path: str) -> DateTime:
    """The common valid time of the members (every member must give its ``date``).

    A template is looked at once (its members share its date), never expanded: an
    ensemble of a billion members is refused by :func:`validate_ensemble_source` first.
    """
    if source.filename is not None:
        if source.date is None:
            raise ConfigError("give the 'date' of the ensemble file", join_path(path, "date"))
        return source.date
    template = source.members_from_template
    entries = [template.template] if template is not None else list(source.members or [])
    if any(e.states is not None for e in entries):
        raise ConfigError("4-D members ('states') are not supported here: give one state per member", path)
    where = join_path(path, "members from template.template" if template is not None else "members")
    dates = {e.date for e in entries}
    if None in dates:
        raise ConfigError("every member needs a 'date' (its valid time)", where)
    if len(dates) != 1:
        raise ConfigError(f"all members must be valid at the same time, got {sorted(map(str, dates))}", where)
    return dates.pop()


def member_count_path(source: EnsembleSourceParameters, path: str) -> str:
    """The YAML key that sets the number of members of ``source``."""
    if source.members_from_template is not None:
        return join_path(path, "members from template.nmembers")
    return join_path(path, "members" if source.members is not None else "filename")


def validate_ensemble_source(source: EnsembleSourceParameters, path: str, geometry: Any = None,
                             variables: Any = None, copies: int = 4) -> DateTime:
    """Configuration checks of an ensemble section: 2 to MAX_MEMBERS members that fit in memory
    (``copies`` ensembles of them on ``geometry``), one common date."""
    n = member_count(source)
    if n is not None:
        if n < 2:
            raise ConfigError(f"an ensemble needs at least 2 members, got {n}", member_count_path(source, path))
        if geometry is not None:
            check_members(n, geometry, variables, member_count_path(source, path), copies)
    return ensemble_date(source, path)


def read_members(source: EnsembleSourceParameters, geometry: Any, variables: Variables, date: DateTime,
                 path: str) -> FieldSet:
    """Read the members stacked on a leading axis, checking that each file is on ``geometry``."""
    files = [source.filename] if source.filename is not None else [e.filename for e in member_filenames(source)]
    for name in files:
        if name is not None:
            try:
                check_same_geometry(name, geometry)
            except OSError:
                pass  # missing or unreadable: read_ensemble gives the file error
    return read_ensemble(source, geometry, variables, date, path)


def ensemble_mean(fields: FieldSet) -> FieldSet:
    return fields.map(lambda a: a.mean(axis=0))


def ensemble_spread(fields: FieldSet) -> FieldSet:
    """Standard deviation over the members (:math:`N - 1` normalisation)."""
    return fields.map(lambda a: a.std(axis=0, ddof=1))


class EnsembleWriter(StateWriter):
    """Write the members (``%mem%`` → label, or one file with a member dimension), mean or spread."""

    def __init__(self, output: OutputParameters, what: str = "members", labels: list[str] | None = None,
                 pattern: str = "%mem%"):
        super().__init__(output)
        self.what = what
        self.labels = labels or []
        self.pattern = pattern

    def _write(self, state: Any) -> None:
        self.written.extend(write_ensemble(state, self.output.filename_at(state.time), self.what, self.labels,
                                           self.pattern))


def write_ensemble(state: Any, filename: str, what: str = "members", labels: list[str] | None = None,
                   pattern: str = "%mem%") -> list[str]:
    """Write a batched state's members, mean or spread; returns the file names."""
    if what == "mean":
        write_fields(filename, state.geometry, ensemble_mean(state.fields), state.time, kind="state")
        return [filename]
    if what == "spread":
        write_fields(filename, state.geometry, ensemble_spread(state.fields), state.time, kind="stddev")
        return [filename]
    if pattern not in filename:
        write_fields(filename, state.geometry, state.fields, state.time, kind="ensemble")
        return [filename]
    names = []
    for k, label in enumerate(labels or []):
        name = filename.replace(pattern, label)
        state.member(k).write(name)
        names.append(name)
    return names


# The application ------------------------------------------------------------------------------
class EnsembleForecastParameters(ApplicationParameters):
    """``pyoops ensemble-forecast`` configuration."""

    geometry: dict[str, Any] = Field(description="Geometry of the model plugin.")
    model: dict[str, Any] = Field(description="Model: {name: ..., tstep: ..., ...}.")
    initial_condition: EnsembleSourceParameters = Field(
        description="Members: 'members', 'members from template' or one ensemble 'filename'.")
    forecast_length: DurationField = Field(description="Length of the forecast (ISO-8601 duration).")
    variables: list[VariableName] | None = Field(
        None, min_length=1, description="Variables to read (default: the geometry's).")
    output: OutputParameters | None = Field(None, description="Member files: %mem% and %date% are replaced.")
    output_mean: OutputParameters | None = Field(None, description="Ensemble mean files.")
    output_spread: OutputParameters | None = Field(None, description="Ensemble standard deviation files.")


class EnsembleForecastApplication(Application):
    """Batched forecast of all members: ``initial condition`` → ``forecast length`` → outputs."""

    name = "ensemble-forecast"
    summary = "advance every member of an ensemble in one batched forecast"
    Parameters = EnsembleForecastParameters

    def validate_plugins(self, params: EnsembleForecastParameters) -> None:
        geometry = self.geometry(params.geometry)
        self._variables = Variables(params.variables or geometry.variables)
        unknown = self._variables - geometry.variables
        if unknown:
            raise ConfigError(f"unknown variable(s) {unknown} (geometry has {geometry.variables})", "variables")
        self._date = validate_ensemble_source(params.initial_condition, "initial condition", geometry,
                                              self._variables, copies=3)
        model = self.make("model", params.model, "model", geometry)
        try:
            number_of_steps(params.forecast_length, model.time_resolution)
        except ConfigError as exc:
            raise ConfigError(exc.message, "forecast length") from None
        end_date(self._date, params.forecast_length, "forecast length")
        n = member_count(params.initial_condition) or 1
        one = state_bytes(geometry, self._variables)
        for key in ("output", "output_mean", "output_spread"):
            option = getattr(params, key)
            if option is None:
                continue
            members = key == "output"
            per_time = n if members and "%mem%" in option.filename else 1
            size = one * n if members and "%mem%" not in option.filename else one
            check_output_times(option, params.forecast_length, model.time_resolution, key.replace("_", " "),
                               files_per_time=per_time, bytes_each=size)
        self._geometry, self._model = geometry, model

    def run(self, params: EnsembleForecastParameters) -> dict[str, Any]:
        fields = read_members(params.initial_condition, self._geometry, self._variables, self._date,
                              "initial condition")
        n = next(iter(fields.values())).shape[0]
        labels = member_labels(params.initial_condition, n)
        state = self.plugin.state(self._geometry, fields, self._date)
        writers = []
        if params.output is not None:
            writers.append(EnsembleWriter(params.output, "members", labels))
        if params.output_mean is not None:
            writers.append(EnsembleWriter(params.output_mean, "mean"))
        if params.output_spread is not None:
            writers.append(EnsembleWriter(params.output_spread, "spread"))
        initial_spread = _rms_spread(state.fields)
        logger.info("Ensemble forecast of %d members from %s", n, state.time)
        forecast(self._model, state, params.forecast_length, writers)
        final_spread = _rms_spread(state.fields)
        logger.info("Final %s: mean norm %.12g, spread %.6g", state.time, ensemble_mean(state.fields).rms(),
                    final_spread)
        return {"members": n, "final date": str(state.time), "initial spread": initial_spread,
                "final spread": final_spread, "outputs": [name for w in writers for name in w.written],
                "state": state}

    def schema_parameters(self, plugin: ModelPlugin | None) -> type[Parameters]:
        return specialise(EnsembleForecastParameters, "EnsembleForecastParameters",
                          geometry=self.geometry_schema_type(plugin), model=union_of_parameters(self.registry.model))


def _rms_spread(fields: FieldSet) -> float:
    """Root of the mean ensemble variance over all grid values."""
    var = [a.var(axis=0, ddof=1).ravel() for a in fields.values()]
    return float(np.sqrt(np.mean(np.concatenate(var)))) if var else 0.0
