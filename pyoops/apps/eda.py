"""``pyoops eda``: an ensemble of data assimilations (perturbed variational analyses).

The ``cost function`` and ``variational`` sections are those of ``pyoops variational``
(any cost type); its ``background`` is the control background.  ``members`` lists the
backgrounds of the perturbed members (their own forecasts: the background
perturbations), as an ensemble section (``members from template``, ``members`` or one
file; 4-D members with ``states`` for 4D-Ens-Var).  Member :math:`k` assimilates the
observations plus a draw from :math:`\\mathcal{N}(0, \\mathbf{R})` from the stream
``generator(eda.seed, "eda", k)``; the control (member 0, ``eda.control member``) is
unperturbed.  Ensemble blocks of B that read no file get the members' backgrounds.
Members run through the ``parallel`` executor (serial, processes or dask), with
identical results.  YAML::

    model plugin: lorenz96
    cost function: {cost type: 3D-Var, ..., background: {date: ..., filename: bg.nc}, ...}
    variational: {minimizer: {algorithm: DRPCG}, iterations: [{ninner: 30}]}
    members:
      members from template:
        template: {date: 2010-01-02T00:00:00Z, filename: ens/bg.%mem%.nc}
        pattern: "%mem%"
        nmembers: 10
    eda: {seed: 7, control member: true}
    parallel: {engine: processes, workers: 2}
    output: {filename: out/an.%mem%.nc}          # perturbed members (%date% for 4D-Ens-Var)
    output control: {filename: out/an.control.nc}
    output mean: {filename: out/an.mean.nc}
    output spread: {filename: out/an.spread.nc}
    output member archive: {filename: out/members.nc}   # backgrounds, for EDA emulators
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pydantic import Field

from pyoops.apps.base import Application, ApplicationParameters, specialise
from pyoops.assimilation.costfunction import CostFunction, CostFunctionParameters
from pyoops.apps.variational import ArchiveOutputParameters
from pyoops.assimilation.driver import VariationalSection, check_minimizer_memory
from pyoops.config.parameters import Parameters
from pyoops.diagnostics.regions import archive_regions
from pyoops.ensemble.eda import (
    EDAParameters,
    EDASetup,
    covariance_uses_members,
    inflate_perturbations,
    run_eda,
)
from pyoops.ensemble.executors import MemberExecutor, ParallelParameters
from pyoops.util.sizes import check_members, check_output_files, state_bytes
from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import check_same_geometry, write_fields
from pyoops.fields.statistics import rmse, spread
from pyoops.generic.ensemble import (
    EnsembleSourceParameters,
    member_count,
    member_count_path,
    member_filenames,
    member_labels,
    read_ensemble,
)
from pyoops.registry import ModelPlugin
from pyoops.util.errors import ConfigError

__all__ = ["EDAApplication", "EDAAppParameters"]

logger = logging.getLogger("pyoops")


class _File(Parameters):
    filename: str = Field(description="Output file; %mem% (members) and %date% (4D-Ens-Var) are replaced.")


class EDAAppParameters(ApplicationParameters):
    """``pyoops eda`` configuration."""

    cost_function: CostFunctionParameters = Field(description="The cost function; 'background' is the control's.")
    variational: VariationalSection = Field(description="Minimizer and outer loops.")
    members: EnsembleSourceParameters = Field(description="Backgrounds of the perturbed members.")
    eda: EDAParameters = Field(default_factory=EDAParameters, description="Perturbations and control member.")
    parallel: ParallelParameters = Field(default_factory=ParallelParameters, description="Executor of the members.")
    output: _File | None = Field(None, description="Analyses of the perturbed members (%mem%).")
    output_control: _File | None = Field(None, description="Analysis of the control member.")
    output_mean: _File | None = Field(None, description="Mean of the perturbed members' analyses.")
    output_spread: _File | None = Field(None, description="Standard deviation of the perturbed members' analyses.")
    output_member_archive: _File | None = Field(
        None, description="Member archive (netCDF): the perturbed members' backgrounds, their mean and standard "
                          "deviation (4D-Ens-Var: at the first sub-window time), the training data of EDA emulators.")
    output_archive: ArchiveOutputParameters | None = Field(
        None, description="Innovation archive (netCDF): y, sigma_o, H(x_b), H(x_a) (the control's, else the members' "
                          "mean), diag(HBH^T), the members' H(x_b) perturbations, J(x_a).")


class EDAApplication(Application):
    """Ensemble of perturbed variational analyses (ECMWF-style EDA)."""

    name = "eda"
    summary = "ensemble of data assimilations: perturbed-observation variational analyses of every member"
    Parameters = EDAAppParameters

    def validate_plugins(self, params: EDAAppParameters) -> None:
        self._cost = CostFunction(params.cost_function, self.registry, self.plugin)
        check_minimizer_memory(self._cost, params.variational)
        self._regions = archive_regions(params.output_archive, self._cost.geometry)
        n = member_count(params.members)
        ntimes = len(self._cost.increment_times)
        if n is not None:
            if n < 2:
                raise ConfigError(f"an ensemble needs at least 2 members, got {n}",
                                  member_count_path(params.members, "members"))
            # Backgrounds, analyses and their stacks of every member (at every sub-window time).
            check_members(n, self._cost.geometry, self._cost.variables,
                          member_count_path(params.members, "members"), times=ntimes)
        one = state_bytes(self._cost.geometry, self._cost.variables)
        for key in ("output", "output_control", "output_mean", "output_spread"):
            option = getattr(params, key)
            if option is not None:
                files = ntimes * ((n or 1) if key == "output" else 1)
                check_output_files(files, one, option.filename, f"{key.replace('_', ' ')}.filename")
        if params.output is not None and "%mem%" not in params.output.filename:
            raise ConfigError("must contain %mem% (one file per member)", "output.filename")
        if len(self._cost.increment_times) > 1:
            for key in ("output", "output_control", "output_mean", "output_spread"):
                option = getattr(params, key)
                if option is not None and "%date%" not in option.filename:
                    raise ConfigError("must contain %date%: 4D-Ens-Var writes one state per sub-window time",
                                      f"{key.replace('_', ' ')}.filename")
        for entry in member_filenames(params.members):
            if entry.states is not None and self._cost.cost_type != "4D-Ens-Var":
                raise ConfigError("4-D members ('states') are for cost type 4D-Ens-Var", "members")

    def _read_members(self, params: EDAAppParameters) -> FieldSet:
        cost = self._cost
        files = [params.members.filename] if params.members.filename else [
            f for e in member_filenames(params.members) for f in e.filenames()]
        for name in files:
            try:
                check_same_geometry(name, cost.geometry)
            except OSError:
                pass  # missing or unreadable: read_ensemble names the file
            except ConfigError as exc:
                raise ConfigError(f"{exc.message} (members on a different geometry)", "members") from None
        backgrounds = cost._background_params()
        fields = read_ensemble(params.members, cost.geometry, cost.variables, backgrounds[0].date, "members")
        shape = cost.geometry.field_shape(cost.variables[0])
        lead = next(iter(fields.values())).shape[: -len(shape)]
        if cost.cost_type == "4D-Ens-Var" and (len(lead) != 2 or lead[1] != len(backgrounds)):
            raise ConfigError(f"4D-Ens-Var members need one state per sub-window time ({len(backgrounds)}), got "
                              f"axes {lead}", "members")
        return fields

    def run(self, params: EDAAppParameters) -> dict[str, Any]:
        cost = self._cost
        members = self._read_members(params)
        n = next(iter(members.values())).shape[0]
        control = cost.read_background()
        variables = list(cost.variables)
        backgrounds: dict[int, dict[str, np.ndarray]] = {}
        if len(control) > 1:
            backgrounds[0] = {v: np.stack([np.asarray(s.fields[v]) for s in control]) for v in variables}
        else:
            backgrounds[0] = {v: np.asarray(control[0].fields[v]) for v in variables}
        for k in range(n):
            backgrounds[k + 1] = {v: np.asarray(members[v][k]) for v in variables}
        raw = self.document.data if self.document is not None else {}
        berr = raw.get("cost function", {}).get("background error")
        ensemble = None
        if params.eda.ensemble_covariance_from_members and covariance_uses_members(berr):
            ensemble = {v: np.asarray(members[v]) for v in variables}
        setup = EDASetup(params.model_plugin, dict(raw["cost function"]), dict(raw["variational"]), backgrounds,
                         None, ensemble, params.eda.seed, (), params.eda.perturb_observations,
                         params.eda.obs_error_inflation)
        labels = ([0] if params.eda.control_member else []) + list(range(1, n + 1))
        archive = params.output_archive
        if archive is not None:
            setup.record_hofx, setup.hbht, setup.hbht_member = True, archive.background_error_variance, labels[0]
        logger.info("EDA: %d perturbed members%s, %s, engine %s", n,
                    " and the control" if params.eda.control_member else "", cost.cost_type,
                    params.parallel.engine)
        with MemberExecutor(params.parallel) as executor:
            result = run_eda(setup, labels, executor)
        times = result.times
        state_cls = self.plugin.state
        outputs: list[str] = []
        if archive is not None:
            outputs.append(self._write_archive(archive.filename, result, labels, bool(params.eda.control_member), n))
        if params.output_member_archive is not None:
            outputs.append(self._write_member_archive(params.output_member_archive.filename, members, n, times[0]))
        mem_labels = member_labels(params.members, n)
        analyses_t = []
        for t, time in enumerate(times):
            xa = {v: np.stack([result.analyses[k][t][v] for k in range(1, n + 1)]) for v in variables}
            if len(times) == 1:
                xb = {v: np.asarray(members[v]) for v in variables}
                xa = inflate_perturbations(xa, xb, params.eda.inflation)
            analyses_t.append(xa)
            if params.output is not None:
                for k, label in enumerate(mem_labels):
                    name = params.output.filename.replace("%mem%", label).replace("%date%", str(time))
                    state_cls(cost.geometry, FieldSet({v: xa[v][k] for v in variables}), time).write(name)
                    outputs.append(name)
            if params.output_control is not None and 0 in result.analyses:
                name = params.output_control.filename.replace("%date%", str(time))
                state_cls(cost.geometry, FieldSet(result.analyses[0][t]), time).write(name)
                outputs.append(name)
            if params.output_mean is not None:
                name = params.output_mean.filename.replace("%date%", str(time))
                write_fields(name, cost.geometry, FieldSet({v: xa[v].mean(axis=0) for v in variables}), time,
                             kind="state")
                outputs.append(name)
            if params.output_spread is not None:
                name = params.output_spread.filename.replace("%date%", str(time))
                write_fields(name, cost.geometry, FieldSet({v: xa[v].std(axis=0, ddof=1) for v in variables}), time,
                             kind="stddev")
                outputs.append(name)
        xb_last = {v: np.asarray(members[v]) if len(times) == 1 else np.asarray(members[v])[:, -1]
                   for v in variables}
        summary: dict[str, Any] = {
            "members": n, "control member": bool(params.eda.control_member), "cost type": cost.cost_type,
            "background spread": spread(xb_last), "analysis spread": spread(analyses_t[-1]),
            "mean increment rms": rmse({v: analyses_t[-1][v].mean(axis=0) for v in variables},
                                       {v: xb_last[v].mean(axis=0) for v in variables}),
            "mean inner iterations": float(np.mean([d["inner iterations"] for d in result.diagnostics.values()])),
            "outputs": outputs, "analyses": result.analyses,
        }
        logger.info("EDA: background spread %.4g -> analysis spread %.4g", summary["background spread"],
                    summary["analysis spread"])
        return summary

    def _write_archive(self, filename: str, result: Any, labels: list[int], has_control: bool, n: int) -> str:
        """The innovation archive of this EDA (cycle 0 at the last analysis time; the used observations)."""
        from pyoops.diagnostics.archive import InnovationArchiveWriter
        from pyoops.diagnostics.collect import observer_records, select, variational_innovations

        cost = self._cost
        record, used = observer_records(cost.observers())
        record.update(variational_innovations(result.diagnostics, labels, has_control))
        with InnovationArchiveWriter(filename, list(cost.geometry.location_names), n, geometry=cost.geometry,
                                     application="eda", method=cost.cost_type, resumable=False,
                                     regions=self._regions) as writer:
            writer.append_cycle(0, result.times[-1], **select(record, used))
        return filename

    def _write_member_archive(self, filename: str, members: FieldSet, n: int, time: Any) -> str:
        """The member archive of this EDA: one cycle (0), the members' backgrounds at the background date."""
        from pyoops.ensemble.member_archive import MemberArchiveWriter

        cost = self._cost
        first = self._cost.cost_type == "4D-Ens-Var"  # members (N, T, *grid): the first sub-window time
        with MemberArchiveWriter(filename, cost.geometry, list(cost.variables), n, application="eda",
                                 method=cost.cost_type, resumable=False) as writer:
            writer.append_cycle(0, time, {v: np.asarray(members[v])[:, 0] if first else np.asarray(members[v])
                                          for v in cost.variables})
        return filename

    def schema_parameters(self, plugin: ModelPlugin | None) -> type[Parameters]:
        cf = specialise(CostFunctionParameters, "CostFunctionParameters", geometry=self.geometry_schema_type(plugin))
        return specialise(EDAAppParameters, "EDAAppParameters", cost_function=cf)
