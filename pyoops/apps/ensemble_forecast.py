"""``pyoops ensemble-forecast``: advance every member of an ensemble in batched forecasts, serially or in parallel.

The members are read into arrays with a leading member axis and cut into *forecast
batches* (:func:`forecast_batches`): the model advances the members of a batch in one
call per time step (the model's ``step`` acts on batched FieldSets, as DAPPER's
ensembles are arrays).  A model whose step acts member by member (as the interface test
kit's batched-forecast test requires) gives bitwise the same members as one forecast
per member.

The batches depend only on the number of members, the size of a member and
``batch size``, never on the ``parallel`` engine: the executor
(:mod:`pyoops.ensemble.executors`) hands each task whole batches (``min(batches, workers
x tasks per worker)`` tasks of nearly equal numbers of batches), a task forecasts its
batches one after the other with :func:`forecast_task` (a module-level function that
returns NumPy arrays), and the serial engine runs the same function on all the batches
in the calling process.  Every member is therefore computed by the same arithmetic
(the same batch) whatever the engine and the number of workers: members, mean, spread
and the summary are bitwise identical to the serial run's, even for a model whose
batched arithmetic depends on which members share a batch (QG on small grids, whose
wall correction is a matrix product over the batch).  The tasks return the members at
the output times and at the end; the calling process writes every output file, as the
serial run does.  YAML::

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
    batch size: 10                # members per batched forecast (default: about 65536 values a batch)
    parallel: {engine: processes, workers: 2}   # serial (default) | processes | dask, as for eda and cycle

``%mem%`` in an output file name is replaced by the member's number as the input
numbered it (``start`` and ``zero padding`` of ``members from template``, else
1, 2, ...); without ``%mem%`` all members go to one file with a ``member``
dimension.  Outputs follow ``frequency``/``first`` as in ``pyoops forecast`` (default:
the final time only).  The spread is the standard deviation with :math:`N - 1`.

Memory: the members at every output time are held until the tasks are done (they come
back together), so the ensemble is checked to fit ``2 + output times`` times in memory.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import numpy as np
from pydantic import Field

from pyoops.apps.base import Application, ApplicationParameters, specialise, union_of_parameters
from pyoops.apps.forecast import OutputParameters, StateWriter, check_output_times
from pyoops.assimilation.costfunction import VariableName
from pyoops.config.parameters import DurationField, Parameters, validate
from pyoops.ensemble.executors import MemberExecutor, ParallelParameters, member_chunks
from pyoops.util.sizes import check_members, end_date, state_bytes
from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import check_same_geometry, write_fields
from pyoops.generic.ensemble import (
    EnsembleSourceParameters,
    member_count,
    member_count_path,
    member_filenames,
    member_labels,
    read_ensemble,
)
from pyoops.generic.forecast import StateRecorder, c_ordered_copy, forecast, number_of_steps
from pyoops.registry import ModelPlugin
from pyoops.util.datetime import DateTime, Duration
from pyoops.util.errors import ConfigError, join_path
from pyoops.util.variables import Variables

__all__ = [
    "EnsembleForecastApplication",
    "EnsembleForecastParameters",
    "EnsembleWriter",
    "ensemble_date",
    "forecast_batches",
    "forecast_task",
    "ensemble_mean",
    "ensemble_spread",
    "member_labels",
    "read_members",
    "validate_ensemble_source",
]

logger = logging.getLogger("pyoops")


# Helpers shared by the ensemble applications ------------------------------------------------------
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
    batch_size: int | None = Field(
        None, gt=0, description="Members advanced together in one batched forecast (default: as many as hold "
                                "about 65536 grid values, at least one). The batches, not the engine, fix the "
                                "arithmetic: results do not depend on 'parallel'.")
    parallel: ParallelParameters = Field(default_factory=ParallelParameters,
                                         description="Executor of the forecast batches (as for eda and cycle).")


class EnsembleForecastApplication(Application):
    """Batched forecast of all members: ``initial condition`` → ``forecast length`` → outputs."""

    name = "ensemble-forecast"
    summary = "advance every member of an ensemble in batched forecasts, serially or in parallel"
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
        end = end_date(self._date, params.forecast_length, "forecast length")
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
        source = member_count(params.initial_condition)
        if source is not None:  # the members at every output time come back together (see the module docs)
            writers = [EnsembleWriter(o) for o in (params.output, params.output_mean, params.output_spread)
                       if o is not None]
            for w in writers:
                w.initialize(SimpleNamespace(time=self._date), end, model.time_resolution)
            count = len(record_times(writers, self._date, params.forecast_length, model.time_resolution))
            if count > 1:
                check_members(source, geometry, self._variables, member_count_path(params.initial_condition,
                              "initial condition"), copies=2 + count)
        self._geometry, self._model = geometry, model

    def run(self, params: EnsembleForecastParameters) -> dict[str, Any]:
        fields = read_members(params.initial_condition, self._geometry, self._variables, self._date,
                              "initial condition")
        n = next(iter(fields.values())).shape[0]
        labels = member_labels(params.initial_condition, n)
        state = self.plugin.state(self._geometry, fields, self._date)
        writers: list[EnsembleWriter] = []
        if params.output is not None:
            writers.append(EnsembleWriter(params.output, "members", labels))
        if params.output_mean is not None:
            writers.append(EnsembleWriter(params.output_mean, "mean"))
        if params.output_spread is not None:
            writers.append(EnsembleWriter(params.output_spread, "spread"))
        initial_spread = _rms_spread(state.fields)
        step = self._model.time_resolution
        end = state.time + params.forecast_length
        for w in writers:
            w.initialize(state, end, step)
        times = record_times(writers, state.time, params.forecast_length, step)
        batches = forecast_batches(n, state_bytes(self._geometry, self._variables) / 8.0, params.batch_size)
        with MemberExecutor(params.parallel) as executor:
            groups = member_chunks(len(batches), executor.ntasks)
            logger.info("Ensemble forecast of %d members from %s: %d batches, %d tasks, engine %s", n, state.time,
                        len(batches), len(groups), executor.engine)
            tasks = []
            for group in groups:
                members = [m for b in group for m in batches[b]]
                first = members[0]
                tasks.append({"model plugin": params.model_plugin, "geometry": dict(params.geometry),
                              "model": dict(params.model), "time": str(state.time),
                              "length": str(params.forecast_length), "record": [str(t) for t in times],
                              "fields": {v: np.asarray(a[first:first + len(members)]) for v, a in fields.items()},
                              "batches": [[m - first for m in batches[b]] for b in group]})
            parts = executor.map(forecast_task, tasks)
        recorded = {str(t): FieldSet({v: np.concatenate([p[str(t)][v] for p in parts]) for v in fields},
                                     copy=False) for t in times}
        del parts
        for t in times:  # the writers see the states in time order, as during a forecast
            at = self.plugin.state(self._geometry, recorded[str(t)], t)
            for w in writers:
                w.process(at)
        final = self.plugin.state(self._geometry, recorded[str(end)], end)
        for w in writers:
            w.finalize(final)
        final_spread = _rms_spread(final.fields)
        logger.info("Final %s: mean norm %.12g, spread %.6g", final.time, ensemble_mean(final.fields).rms(),
                    final_spread)
        return {"members": n, "final date": str(final.time), "initial spread": initial_spread,
                "final spread": final_spread, "outputs": [name for w in writers for name in w.written],
                "state": final}

    def schema_parameters(self, plugin: ModelPlugin | None) -> type[Parameters]:
        return specialise(EnsembleForecastParameters, "EnsembleForecastParameters",
                          geometry=self.geometry_schema_type(plugin), model=union_of_parameters(self.registry.model))


# The forecast tasks ------------------------------------------------------------------------------
#: The grid values in a default forecast batch, members times values per member.  Batching pays while batches
#: are small (Lorenz-96, 20x for 40 members of 40 values) and is neutral for large states (QG, docs/benchmarks.rst).
BATCH_VALUES = 1 << 16


def forecast_batches(nmembers: int, member_values: float, batch_size: int | None = None) -> list[list[int]]:
    """Members ``0..nmembers-1`` in contiguous batches of at most ``batch_size`` members (sizes differ by 1 at most).

    The default ``batch_size`` is ``BATCH_VALUES // member_values`` (at least 1).  The
    batches depend on nothing else (never on the engine or the workers).
    """
    size = batch_size or max(1, int(BATCH_VALUES // max(1.0, float(member_values))))
    return member_chunks(nmembers, -(-int(nmembers) // int(size)))


def record_times(writers: list[Any], start: DateTime, length: Duration, step: Duration) -> list[DateTime]:
    """The model times at which a writer (already initialised) is due, and the end time, in order."""
    end = start + length
    nsteps = int(round(length / step))
    due = [w for w in writers if w.output.frequency is not None]
    times = [start + step * k for k in range(nsteps) if any(w._due(start + step * k) for w in due)] if due else []
    return times + [end]


def forecast_task(task: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """Executor task: forecast the batches of some members, one after the other (module level, picklable).

    ``task``: ``model plugin``, ``geometry`` and ``model`` (configurations), ``time`` and
    ``length`` (ISO strings), ``record`` (the times to return), ``fields`` (the task's
    members stacked) and ``batches`` (lists of rows of ``fields``, contiguous, in order).
    Returns, for each recorded time, the task's members (C-ordered float64 arrays).
    """
    from pyoops.registry import get_registry

    registry = get_registry()
    plugin = registry.model_plugin(task["model plugin"])
    geometry = plugin.geometry(validate(plugin.geometry.Parameters, task["geometry"], "geometry"))
    factory = registry.model
    model = factory.maker_for(task["model"], "model")(factory.parameters(task["model"], "model"), geometry)
    times = [DateTime(t) for t in task["record"]]
    parts = []
    for batch in task["batches"]:
        fields = FieldSet(c_ordered_copy({v: a[batch] for v, a in task["fields"].items()}), copy=False)
        state = plugin.state(geometry, fields, DateTime(task["time"]))
        rec = StateRecorder(times)
        forecast(model, state, Duration(task["length"]), [rec], show_progress=False)
        parts.append(rec.states)
    return {str(t): {v: np.concatenate([p[t][v] for p in parts]) for v in task["fields"]} for t in times}


def _rms_spread(fields: FieldSet) -> float:
    """Root of the mean ensemble variance over all grid values."""
    var = [a.var(axis=0, ddof=1).ravel() for a in fields.values()]
    return float(np.sqrt(np.mean(np.concatenate(var)))) if var else 0.0
