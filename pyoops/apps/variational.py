"""``pyoops variational``: incremental 3D-Var, FGAT, 4D-Var and 4D-Ens-Var from OOPS-style YAML.

Outputs: the analysis (``output``), the increment (``output increment``), the
observation-space diagnostics written into each observer's ``obsdataout``
(groups ``hofx0`` = H(x_b), ``hofx1`` = H(x_a), ``ombg``, ``oman``,
``EffectiveQC``, ``EffectiveError``), a machine-readable cost trace (``output
cost``: JSON with J, Jb, Jo and the gradient norm per inner iteration) and a
plot of the cost and gradient-norm reduction (``output plot``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from pydantic import Field

from pyoops.apps.base import Application, ApplicationParameters, specialise
from pyoops.assimilation.costfunction import CostFunction, CostFunctionParameters
from pyoops.assimilation.driver import VariationalSection, check_minimizer_memory, run_incremental
from pyoops.config.parameters import Parameters
from pyoops.diagnostics.hbht import BackgroundVarianceParameters
from pyoops.diagnostics.regions import ArchiveRegions, Regions, archive_regions
from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import write_fields
from pyoops.registry import ModelPlugin
from pyoops.util.atomic import atomic_output
from pyoops.util.errors import ConfigError
from pyoops.util.figures import pyplot, save_figure
from pyoops.util.sizes import check_output_files, state_bytes

__all__ = ["VariationalApplication", "VariationalParameters", "plot_cost_trace"]

logger = logging.getLogger("pyoops")


class _File(Parameters):
    filename: str = Field(description="Output file; %date% is replaced by the valid time.")


class ArchiveOutputParameters(Parameters):
    """``output archive``: the innovation archive of the analysis (one cycle)."""

    filename: str = Field(description="The archive (netCDF, see the diagnostics page).")
    background_error_variance: BackgroundVarianceParameters = Field(
        default_factory=BackgroundVarianceParameters, alias="background error variance",
        description="How diag(HBH^T) is computed (exact or randomized).")
    regions: ArchiveRegions


class VariationalParameters(ApplicationParameters):
    """``pyoops variational`` configuration (OOPS Variational)."""

    cost_function: CostFunctionParameters = Field(description="The cost function.")
    variational: VariationalSection = Field(description="Minimizer and outer loops.")
    output: _File | None = Field(None, description="Analysis state(s); %date% for 4D-Ens-Var.")
    output_increment: _File | None = Field(None, description="Analysis increment(s) x_a - x_b.")
    output_cost: _File | None = Field(None, description="JSON trace of J, Jb, Jo and gradient norms.")
    output_plot: _File | None = Field(None, description="PNG of the cost and gradient-norm reduction.")
    output_archive: ArchiveOutputParameters | None = Field(
        None, description="Innovation archive (netCDF): y, sigma_o, H(x_b), H(x_a), diag(HBH^T), J(x_a).")




def _filename(template: str, time: Any) -> str:
    return template.replace("%date%", str(time))


def plot_cost_trace(trace: list[dict[str, Any]], filename: str, title: str = "") -> None:
    """Cost (J, Jb, Jo) and gradient-norm reduction against the cumulative inner iteration."""
    plt = pyplot()

    x = np.arange(len(trace))
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for key, style in (("J", "k-"), ("Jb", "C0--"), ("Jo", "C3--")):
        ax0.plot(x, [r[key] for r in trace], style, label=key)
    ax0.set_yscale("log")
    ax0.set_xlabel("inner iteration (all outer loops)")
    ax0.set_ylabel("cost")
    ax0.legend()
    ax1.semilogy(x, [max(r["gradient norm reduction"], 1e-300) for r in trace], "C2-")
    ax1.set_xlabel("inner iteration (all outer loops)")
    ax1.set_ylabel("gradient norm reduction")
    starts = [i for i, r in enumerate(trace) if r.get("iteration", 0) == 0]
    for ax in (ax0, ax1):
        for s in starts[1:]:
            ax.axvline(s - 0.5, color="0.7", lw=0.8)
    if title:
        fig.suptitle(title)
    save_figure(fig, filename)


def write_archive(filename: str, cost: Any, result: Any, analysis_time: Any, regions: Regions | None = None
                  ) -> str:
    r"""The innovation archive of one variational analysis (cycle 0 at ``analysis_time``, the last
    written analysis state's): the used observations of every observer, :math:`H(x_b)` and :math:`H(x_a)`,
    :math:`\mathrm{diag}(\mathbf{HBH}^\mathrm{T})` (:mod:`pyoops.diagnostics.hbht`) and the final
    cost :math:`J(x_a)` (quadratic, of the last outer loop)."""
    from pyoops.diagnostics.archive import InnovationArchiveWriter
    from pyoops.diagnostics.collect import flat_hofx, observer_records, select

    record, used = observer_records(result.observers)
    record.update(hofx_background=flat_hofx(result.hofx_background), hofx_analysis=flat_hofx(result.hofx_analysis),
                  background_error_variance=result.background_error_variance)
    with InnovationArchiveWriter(filename, list(cost.geometry.location_names), geometry=cost.geometry,
                                 application="variational", method=cost.cost_type, resumable=False,
                                 regions=regions) as writer:
        writer.append_cycle(0, analysis_time, cost_at_analysis=float(result.trace[-1]["J"]),
                            **select(record, used))
    return filename


class VariationalApplication(Application):
    """Incremental variational assimilation."""

    name = "variational"
    summary = "incremental 3D-Var, 3D/4D-FGAT, 4D-Var, 4D-Ens-Var (hybrid through the SABER Hybrid block)"
    Parameters = VariationalParameters

    def validate_plugins(self, params: VariationalParameters) -> None:
        self._cost = CostFunction(params.cost_function, self.registry, self.plugin)
        check_minimizer_memory(self._cost, params.variational)
        self._regions = archive_regions(params.output_archive, self._cost.geometry)
        one = state_bytes(self._cost.geometry, self._cost.variables)
        for key in ("output", "output_increment"):
            option = getattr(params, key)
            if option is not None:
                check_output_files(len(self._cost.increment_times), one, option.filename,
                                   f"{key.replace('_', ' ')}.filename")
        if len(self._cost.increment_times) > 1:
            for key in ("output", "output_increment"):
                option = getattr(params, key)
                if option is not None and "%date%" not in option.filename:
                    raise ConfigError("must contain %date%: 4D-Ens-Var writes one state per sub-window time",
                                      f"{key.replace('_', ' ')}.filename")

    def run(self, params: VariationalParameters) -> dict[str, Any]:
        cost = self._cost
        archive = params.output_archive
        hbht = (archive.background_error_variance, ("variational",)) if archive is not None else None
        result = run_incremental(cost, params.variational, hbht=hbht)
        analyses, backgrounds = cost.analysis_states(result.background, result.analysis)
        outputs: list[str] = []
        if archive is not None:
            outputs.append(write_archive(archive.filename, cost, result, analyses[-1].time, self._regions))
        if params.output is not None:
            for state in analyses:
                name = _filename(params.output.filename, state.time)
                state.write(name)
                outputs.append(name)
        if params.output_increment is not None:
            for xa, xb in zip(analyses, backgrounds):
                name = _filename(params.output_increment.filename, xa.time)
                inc = FieldSet({v: xa.fields[v] - xb.fields[v] for v in cost.variables}, copy=False)
                write_fields(name, cost.geometry, inc, xa.time, kind="increment")
                outputs.append(name)
        stats: dict[str, Any] = {}
        for ob, hb, ha in zip(result.observers, result.hofx_background, result.hofx_analysis):
            space = ob.obs_space
            y = space.obs_values()
            hb.save("hofx0")
            ha.save("hofx1")
            (y - hb).save("ombg")
            (y - ha).save("oman")
            ob.obs_error.obserrors().save("EffectiveError")
            stats[space.name] = {"nobs": (y - hb).nobs(), "ombg rms": (y - hb).rms(), "oman rms": (y - ha).rms()}
            out = space.save()
            if out:
                outputs.append(out)
        if params.output_cost is not None:
            with atomic_output(params.output_cost.filename, ".json") as tmp:
                tmp.write_text(json.dumps({"cost type": cost.cost_type,
                                           "minimizer": params.variational.minimizer.algorithm,
                                           "trace": result.trace, "timings": result.timings,
                                           "online diagnostics": result.online_diagnostics}, indent=1) + "\n")
            outputs.append(params.output_cost.filename)
        if params.output_plot is not None:
            plot_cost_trace(result.trace, params.output_plot.filename,
                            f"{cost.cost_type}, {params.variational.minimizer.algorithm}")
            outputs.append(params.output_plot.filename)
        first, last = result.trace[0], result.trace[-1]
        return {"initial J": first["J"], "final J": last["J"], "final Jb": last["Jb"], "final Jo": last["Jo"],
                "inner iterations": len(result.trace) - len(params.variational.iterations),
                "minimizer seconds": sum(t["minimizer seconds"] for t in result.timings),
                "observers": stats, "outputs": outputs, "trace": result.trace, "timings": result.timings,
                "analysis": analyses}

    def schema_parameters(self, plugin: ModelPlugin | None) -> type[Parameters]:
        cf = specialise(CostFunctionParameters, "CostFunctionParameters", geometry=self.geometry_schema_type(plugin))
        return specialise(VariationalParameters, "VariationalParameters", cost_function=cf)
