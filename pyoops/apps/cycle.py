"""``pyoops cycle``: a cycled twin experiment (truth, synthetic observations, N analyses, statistics).

See :mod:`pyoops.ensemble.cycling` for the experiment and :doc:`/cycling` for the
YAML.  Outputs in ``output.directory``: ``checkpoint.npz`` (the restart file: the current
state, written atomically after each completed cycle), ``statistics.nc.log`` (the cycle log:
one row of statistics, seconds and adaptive series appended per cycle, which a resumed run
truncates to the checkpoint and continues), ``statistics.nc`` (per-cycle RMSE and spread),
``statistics.json`` (time means), ``rmse.png`` and, for ensembles, ``spread_error.png``;
with ``archive: true`` the innovation archive ``innovations.nc`` (and its log
``innovations.nc.log``, which a resumed run continues); with ``member archive: true``
(ensemble methods) the member archive ``members.nc`` (and ``members.nc.log``) of
:mod:`pyoops.ensemble.member_archive`.
Run again with the same configuration, the experiment resumes from the checkpoint
(``resume: false`` starts afresh); raising ``cycling.cycles`` extends a finished run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pydantic import Field

from pyoops.apps.base import Application, ApplicationParameters, specialise, union_of_parameters
from pyoops.assimilation.letkf import LocalEnsembleDAParameters
from pyoops.config.parameters import Parameters
from pyoops.diagnostics.hbht import BackgroundVarianceParameters
from pyoops.diagnostics.regions import ArchiveRegions
from pyoops.ensemble.cycling import (
    MEMBER_ARCHIVE_NAME,
    STATISTICS_NAME,
    CycleExperiment,
    CyclingParameters,
    SyntheticObservationsParameters,
    TruthParameters,
    plot_statistics,
    time_means,
    write_statistics,
)
from pyoops.ensemble.adaptive import AdaptiveParameters, plot_adaptive, write_adaptive
from pyoops.ensemble.eda import EDAParameters
from pyoops.ensemble.emulated_members import EmulatedMembersParameters
from pyoops.ensemble.executors import ParallelParameters
from pyoops.registry import ModelPlugin

__all__ = ["CycleApplication", "CycleOutputParameters", "CycleParameters"]

logger = logging.getLogger("pyoops")


class CycleOutputParameters(Parameters):
    """The ``output`` section of ``pyoops cycle``."""

    directory: str = Field(description="Directory of the checkpoint, statistics and plots.")
    plots: bool = Field(True, description="Write rmse.png (and spread_error.png for ensembles).")
    archive: bool = Field(False, description="Write the innovation archive innovations.nc (y, sigma_o, H(x_b), "
                                             "H(x_a), diag(HBH^T), ensemble H(x) perturbations, J(x_a) per cycle).")
    member_archive: bool = Field(False, description="Ensemble methods: write the member archive members.nc (every "
                                                    "cycle's member backgrounds, their mean and standard deviation), "
                                                    "the training data of EDA emulators.")
    member_archive_analyses: bool = Field(
        False, alias="member archive analyses", description="With the member archive: also every member's "
                                                            "analysis (the pairs a generator of emulated members "
                                                            "learns from; LETKF, EnKF, EDA).")
    background_error_variance: BackgroundVarianceParameters = Field(
        default_factory=BackgroundVarianceParameters, alias="background error variance",
        description="Archive of variational methods: how diag(HBH^T) is computed (exact or randomized).")
    regions: ArchiveRegions


class CycleParameters(ApplicationParameters):
    """``pyoops cycle`` configuration."""

    geometry: dict[str, Any] = Field(description="Geometry of the model plugin (truth and analyses).")
    model: dict[str, Any] = Field(description="The assimilating model (forecasts between cycles).")
    truth: TruthParameters | None = Field(
        None, description="Truth run (initial condition, spin up, optional model) or truth files; required for "
                          "synthetic observations, optional with given ones (then no state-space statistics).")
    observations: SyntheticObservationsParameters = Field(
        description="The synthetic observation network, or given observations (obsdatain).")
    cycling: CyclingParameters = Field(description="Method, number of cycles, window length, ensemble size.")
    cost_function: dict[str, Any] | None = Field(
        None, description="Variational methods: cost type, background error, (linear) model, subwindow; the "
                          "time window, geometry, background and observations are set by each cycle.")
    variational: dict[str, Any] | None = Field(None, description="Variational methods: minimizer and iterations.")
    local_ensemble_da: LocalEnsembleDAParameters | None = Field(
        None, alias="local ensemble DA", description="LETKF: solver options and inflation.")
    eda: EDAParameters | None = Field(None, description="Ensemble of variational analyses: seed, control member, "
                                                         "observation perturbations, inflation.")
    adaptive: AdaptiveParameters | None = Field(
        None, description="Online adaptive inflation and observation error (ensemble filters, EDA members) and hybrid "
                          "weight (hybrid, EDA-hybrid, LETKF-hybrid).")
    emulated_members: EmulatedMembersParameters | None = Field(
        None, alias="emulated members", description="Hybrid ensemble: members 1..real analysed, the others' analyses "
                                                    "emulated from their backgrounds (LETKF, EnKF, EDA).")
    parallel: ParallelParameters = Field(default_factory=ParallelParameters,
                                         description="How members are distributed (serial, processes, dask).")
    output: CycleOutputParameters = Field(description="Output directory.")
    resume: bool = Field(True, description="Resume from the checkpoint in the output directory if there is one.")


class CycleApplication(Application):
    """Cycled twin experiment of one method, restartable."""

    name = "cycle"
    summary = "cycled twin experiment: truth, synthetic obs, N cycles of 3D/4D-Var, EnVar, hybrid, EDA or LETKF"
    Parameters = CycleParameters

    def validate_plugins(self, params: CycleParameters) -> None:
        data = self.document.data if self.document is not None else {}
        self.experiment = CycleExperiment(params, self.registry, self.plugin, dict(data))

    def run(self, params: CycleParameters, show_progress: bool | None = None) -> dict[str, Any]:
        experiment = self.experiment
        directory = Path(params.output.directory)
        state = experiment.run(directory, resume=params.resume, show_progress=show_progress)
        outputs = [str(directory / "checkpoint.npz"), str(directory / f"{STATISTICS_NAME}.log")]
        if params.output.archive:
            outputs.append(str(directory / "innovations.nc"))
        if params.output.member_archive:
            outputs.append(str(directory / MEMBER_ARCHIVE_NAME))
        outputs += write_statistics(directory, experiment, state)
        skip = min(experiment.cycling.spin_up_cycles, state["cycle"])
        if experiment.adaptation is not None:
            times = [experiment.analysis_time(k) for k in range(state["cycle"])]
            shape = experiment.geometry.field_shape(experiment.variables[0])
            outputs.append(write_adaptive(directory, experiment.adaptation, times, skip, tuple(shape)))
            if params.output.plots and state["cycle"]:
                outputs += plot_adaptive(directory, experiment.adaptation, skip, f"{experiment.method}, "
                                         f"{params.model_plugin}")
        if params.output.plots and state["cycle"]:
            times = [experiment.analysis_time(k) for k in range(state["cycle"])]
            outputs += plot_statistics(times, state, skip, directory, f"{experiment.method}, "
                                       f"{params.model_plugin}")
        means = time_means(state, skip)
        for name, value in means.items():
            logger.info("time mean %s over cycles %d-%d: %.4f", name, skip + 1, state["cycle"], value)
        summary: dict[str, Any] = {"method": experiment.method, "cycles": state["cycle"]}
        summary.update({f"mean {k}": v for k, v in means.items()})
        summary["outputs"] = outputs
        summary["experiment"] = SimpleNamespace(**state)  # not printed by the CLI
        return summary

    def schema_parameters(self, plugin: ModelPlugin | None) -> type[Parameters]:
        return specialise(CycleParameters, "CycleParameters", geometry=self.geometry_schema_type(plugin),
                          model=union_of_parameters(self.registry.model))
