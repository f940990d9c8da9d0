"""``pyoops obs-diagnostics``: observation-space statistics from innovation archives.

Reads one or several innovation archives (:mod:`pyoops.diagnostics.archive`), drops the
first ``skip cycles`` cycles (spin-up), splits the observations by ``group by`` and
reports, per subset, mean and RMS of O−B, O−A and A−B, the χ² of the innovations, the
Desroziers estimates of :math:`\\sigma_o^2` and :math:`\\mathbf{HBH}^\\mathrm{T}` against the
assumed values, the spread–skill ratio, rank histograms (ensembles), and the
whole-cost check :math:`2J(x_a)/p`, each with a confidence interval that accounts for
serially correlated cycles (:mod:`pyoops.diagnostics.statistics`).  Outputs: a JSON file
of every number, a printed table and PNG plots.  No model plugin is needed::

    archives: [cycle/innovations.nc]
    group by: [obs group, variable]
    skip cycles: 100
    bootstrap: {samples: 1000, seed: 1}
    output:
      json: {filename: diagnostics/obs_diagnostics.json}
      plots: {directory: diagnostics}
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from pyoops.apps.base import Application, ApplicationParameters
from pyoops.config.parameters import DurationField, Parameters
from pyoops.diagnostics.regions import RegionParameters, Regions
from pyoops.util.atomic import atomic_output
from pyoops.util.datetime import Duration
from pyoops.util.errors import ConfigError

__all__ = ["ObsDiagnosticsApplication", "ObsDiagnosticsParameters"]


def archive_list(value: Any) -> Any:
    """``archives``: one name, a list of names, or a list of ``{filename: ...}`` -> a list of mappings."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        return [{"filename": v} if isinstance(v, str) else v for v in value]
    return value


class ArchiveFileParameters(Parameters):
    filename: str = Field(description="Innovation archive (netCDF) written by an assimilating application.")


class JsonOutputParameters(Parameters):
    filename: str = Field(description="JSON file of every number of the report.")


class PlotsOutputParameters(Parameters):
    directory: str = Field(description="Directory of timeseries.png, ratios.png and rank_histograms.png.")


class ObsDiagnosticsOutputParameters(Parameters):
    """The ``output`` section of ``pyoops obs-diagnostics``."""

    json_file: JsonOutputParameters | None = Field(None, alias="json", description="Write the report as JSON.")
    plots: PlotsOutputParameters | None = Field(None, description="Write the plots (PNG).")
    table: bool = Field(True, description="Print the table of headline numbers.")


class BootstrapParameters(Parameters):
    """Moving-block bootstrap over cycles."""

    samples: int = Field(1000, ge=0, description="Bootstrap replicates (0: analytic intervals only).")
    block_length: int | None = Field(None, gt=0, description="Cycles per block (default: round(ncycles^(1/3))).")
    seed: int = Field(0, description="Seed of the resampling.")


class RankHistogramParameters(Parameters):
    """Rank histograms (archives with ensemble perturbations)."""

    seed: int = Field(0, description="Seed of the observation-error draws added to the members.")


class ObsDiagnosticsParameters(ApplicationParameters):
    """``pyoops obs-diagnostics`` configuration."""

    model_plugin: str | None = Field(None, description="Not needed (accepted and ignored).")
    archives: list[ArchiveFileParameters] = Field(min_length=1, description="Innovation archives (file names or "
                                                                   "{filename: ...}); pooled in cycle order.")
    group_by: list[Literal["obs group", "variable", "region", "time block"]] = Field(
        default_factory=lambda: ["obs group", "variable"],
        description="Subset keys (every combination present is a subset; 'all' is always reported).")
    skip_cycles: int = Field(0, ge=0, description="Leave out the first cycles (spin-up).")
    time_block_length: DurationField | None = Field(None, description="Length of a 'time block' (ISO-8601).")
    confidence_level: float = Field(0.95, gt=0, lt=1, description="Level of the confidence intervals.")
    interval: Literal["bootstrap", "analytic"] = Field(
        "bootstrap", description="Interval shown in the table and plots (the JSON has both).")
    bootstrap: BootstrapParameters = Field(default_factory=BootstrapParameters,
                                           description="Moving-block bootstrap over cycles.")
    rank_histograms: RankHistogramParameters = Field(default_factory=RankHistogramParameters,
                                                     description="Rank histogram settings.")
    output: ObsDiagnosticsOutputParameters = Field(default_factory=ObsDiagnosticsOutputParameters,
                                                   description="JSON, plots and table.")
    regions: list[RegionParameters] | None = Field(
        None, description="Relabel the observations' regions ([{name, bounds: {coordinate: [lower, upper)}}], "
                          "first match wins) instead of the labels stored in the archives.")

    @field_validator("archives", mode="before")
    @classmethod
    def _names_or_mappings(cls, value: Any) -> Any:
        return archive_list(value)

    @model_validator(mode="after")
    def _consistent(self) -> "ObsDiagnosticsParameters":
        if "time block" in self.group_by and self.time_block_length is None:
            raise ValueError("grouping by 'time block' needs 'time block length'")
        if self.time_block_length is not None and self.time_block_length <= Duration(0):
            raise ValueError(f"time block length must be positive, got {self.time_block_length}")
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError(f"group by lists a key twice: {self.group_by}")
        if self.interval == "bootstrap" and self.bootstrap.samples == 0:
            raise ValueError("interval 'bootstrap' needs bootstrap samples > 0 (or choose interval: analytic)")
        return self


class ObsDiagnosticsApplication(Application):
    """Observation-space diagnostics of innovation archives (no model plugin needed)."""

    name = "obs-diagnostics"
    needs_model_plugin = False
    summary = "observation-space statistics, Desroziers estimates and rank histograms from innovation archives"
    Parameters = ObsDiagnosticsParameters

    def run(self, params: ObsDiagnosticsParameters) -> dict[str, Any]:
        from pyoops.diagnostics.archive import read_archive
        from pyoops.diagnostics.plots import plot_report
        from pyoops.diagnostics.report import DiagnosticsSettings, diagnose, format_table

        data = read_archive([a.filename for a in params.archives])
        if params.regions is not None:
            data = data.with_regions(Regions(params.regions, list(data.coordinates), "regions"))
        if params.skip_cycles >= data.ncycles:
            raise ConfigError(f"skips all {data.ncycles} cycles of the archives", "skip cycles")
        keep = np.arange(data.ncycles) >= params.skip_cycles
        data = data.select_cycles(keep)
        if data.nobs == 0:
            raise ConfigError("the archives hold no observations after the skipped cycles", "skip cycles")
        settings = DiagnosticsSettings(
            group_by=tuple(params.group_by),
            time_block_seconds=(params.time_block_length.timedelta.total_seconds()
                                if params.time_block_length is not None else None),
            level=params.confidence_level, interval=params.interval, samples=params.bootstrap.samples,
            block_length=params.bootstrap.block_length, bootstrap_seed=params.bootstrap.seed,
            rank_seed=params.rank_histograms.seed)
        report = diagnose(data, settings)
        report["cycles"]["skipped"] = params.skip_cycles
        outputs: list[str] = []
        out = params.output
        if out.json_file is not None:
            with atomic_output(out.json_file.filename, ".json") as tmp:
                tmp.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n", encoding="utf-8")
            outputs.append(out.json_file.filename)
        if out.plots is not None:
            outputs += plot_report(report, out.plots.directory)
        if out.table:
            print(format_table(report), flush=True)
        everything = report["subsets"][0]
        summary: dict[str, Any] = {"archives": len(data.sources), "cycles": data.ncycles,
                                   "observations": data.nobs, "subsets": len(report["subsets"])}
        for key in ("chi2", "obs error variance ratio", "background error variance ratio", "spread-skill ratio"):
            if everything[key]["value"] is not None:
                summary[key] = everything[key]["value"]
        if report["2J/p"] is not None and report["2J/p"]["value"] is not None:
            summary["2J/p"] = report["2J/p"]["value"]
        summary["outputs"] = outputs
        return summary
