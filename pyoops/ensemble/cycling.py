r"""Cycled twin experiments (OSSEs): truth run, synthetic observations, repeated analyses, statistics.

One :class:`CycleExperiment` runs ``cycles`` assimilation cycles of one method on
the same model plugin the truth is made with:

1. **Truth** — the ``truth.initial condition`` is run for ``truth.spin up`` to the
   experiment start :math:`T_0`, then advanced cycle by cycle (optionally with its own
   ``truth.model``: model error).
2. **Observations** — every ``obs frequency`` (times :math:`T_0 + j\,\Delta t_o`), an
   ``obs density`` network (regular, or random and fixed) of the ``simulated
   variables`` is observed through ``obs operator`` with error ``obs error``:
   :math:`y_t = \mathcal{H}(x^t_t) + \varepsilon_t`, :math:`\varepsilon_t` from the stream
   ``generator(seed, "observations", t)`` of the observation time ``t`` (seconds since
   the epoch), so every method and every window length sees the *same* observations.
3. **Cycles** — cycle :math:`k` has the analysis time :math:`a_k = T_0 + (k+1)L`
   (``window length`` :math:`L`).  *3-D* methods (3D-Var, 3D-EnVar, LETKF, EDA with a 3D-Var
   cost) use the window :math:`(a_k - L/2, a_k + L/2]` with the background valid at
   :math:`a_k`; *4-D* methods (4D-Var, 3D/4D-FGAT, 4D-EnVar) the window
   :math:`(a_k - L, a_k]` with the background at its begin, and their analysis at
   :math:`a_k` is the analysis trajectory at the window end (the filter analysis).
   The next background is the forecast from the analysis (batched over members).
4. **Statistics** at every :math:`a_k`: RMSE against the truth of the analysis and of
   the forecast (the background valid at :math:`a_k`), and for ensembles the RMSE of
   the ensemble mean and the ensemble spread (square root of the mean ensemble
   variance, :math:`N-1` normalisation), before and after the analysis.  Time means
   skip the first ``spin-up cycles``.

Methods (``cycling.method``):

``3D-Var``, ``4D-Var``
    one deterministic variational analysis per cycle (cost types 3D-Var/3D-FGAT and
    4D-Var/4D-FGAT), static B from ``cost function.background error``.
``EDA``, ``3D-EnVar``, ``4D-EnVar``, ``hybrid``, ``EDA-hybrid``
    an ensemble of ``members`` perturbed variational analyses plus an unperturbed
    control (:mod:`pyoops.ensemble.eda`).  Ensemble blocks of B that read no file get
    the members' backgrounds (4-D members at the sub-window times for 4D-Ens-Var): the
    EnVar and hybrid methods are cycled with their own EDA, as ECMWF does.  The reported
    *analysis* is the control; the ensemble statistics are those of the perturbed members.
``LETKF``
    the local ETKF of :mod:`pyoops.assimilation.letkf` (``local ensemble DA`` section:
    inflation; observation localization from ``observations.obs localizations``).
``LETKF-hybrid``
    the ensemble of a hybrid EnVar from a cycled LETKF, as NCEP's GSI hybrid: ``members``
    cycled by the LETKF (``local ensemble DA``; localization from ``observations.obs
    localizations``), and a deterministic control analysed by the hybrid 3D-Var of ``cost
    function`` whose Ensemble block gets the LETKF members' backgrounds.  The reported
    *analysis* is the control's; the ensemble statistics are the LETKF members'.
``EnKF``
    the stochastic (perturbed-observation) EnKF in closed form
    (:func:`~pyoops.ensemble.eda.perturbed_obs_enkf_analysis`): what an EDA of 3D-Vars
    with the pure, unlocalized ensemble B of its own members converges to, member by
    member, with the same observation perturbations (``eda`` section: seed, inflation).

Restart: after each completed cycle (every ``checkpoint every`` cycles) the current experiment
state — cycle counter, truth, backgrounds of the control and the members, the adaptive schemes'
arrays, the positions of the logs — is written atomically to ``checkpoint.npz`` in the output
directory (random draws come from per-cycle and per-member streams, so no generator state needs
saving).  The per-cycle series (the :data:`STATISTICS`, the seconds per cycle and the adaptive
series) are not in the checkpoint: each cycle appends its row to the cycle log
``statistics.nc.log`` (:mod:`pyoops.ensemble.cycle_log`), so a checkpoint costs the same at cycle
20,000 as at cycle 200.  A run killed at any point resumes from the last checkpoint (the log
truncated to it) and produces bitwise the same statistics as an uninterrupted run.

Given observations (``observations.obsdatain``): instead of step 2, each cycle reads an
IODA-like file (``%date%`` = its analysis time) or the rows of one file inside its window
(that file read once per process); the truth is then optional (a run, files ``truth.filename``
at the analysis times or one file of every time, or none: RMSEs NaN), and the first
backgrounds may be read from ``cycling.initial background`` / ``initial ensemble``
(required without a truth run, with ``cycling.start`` = :math:`T_0`).

Innovation archive (``output.archive``): each cycle's observations, :math:`H(x_b)`,
:math:`H(x_a)`, assumed background variance in observation space (ensemble variance of
:math:`H(x^b_k)` for the filters, :math:`\mathrm{diag}(\mathbf{HBH}^\mathrm{T})` by
:mod:`pyoops.diagnostics.hbht` for the variational methods), ensemble perturbations and
:math:`J(x_a)` are appended to an
:class:`~pyoops.diagnostics.archive.InnovationArchiveWriter` whose
:meth:`~pyoops.diagnostics.archive.InnovationArchiveWriter.checkpoint_state` is saved in
the checkpoint, so that the archive of a resumed run is bitwise that of an uninterrupted one.

Member archive (``output.member archive``, ensemble methods): every cycle's member backgrounds
(valid at the cycle's background time, as the analysis's B sees them), their mean and
standard deviation, in ``members.nc`` (:mod:`pyoops.ensemble.member_archive`), restart-safe in
the same way.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import time as _time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from pyoops.assimilation.adaptive_inflation import member_perturbations, point_spread
from pyoops.assimilation.letkf import (
    LocalEnsembleDAParameters,
    ObsLocalization,
    letkf_analysis,
    local_obs_selection,
)
from pyoops.config.parameters import DateTimeField, DurationField, Parameters, PositiveDurationField, validate
from pyoops.diagnostics.collect import ensemble_innovations, flat_metadata, variational_innovations
from pyoops.diagnostics.regions import Regions
from pyoops.ensemble.cycle_log import CycleLog, read_cycle_log
from pyoops.ensemble.eda import (
    EDAParameters,
    EDASetup,
    covariance_needs_ensemble,
    covariance_uses_members,
    eda_stream,
    inflate_perturbations,
    perturbed_obs_enkf_analysis,
    run_eda,
)
from pyoops.ensemble.emulated_members import EmulatedMembers
from pyoops.ensemble.executors import MemberExecutor
from pyoops.ensemble.static_gain import StaticGainCycle, static_gain_obstacle
from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import FieldSeries
from pyoops.fields.statistics import rmse, spread
from pyoops.generic.forecast import StateRecorder, c_ordered_copy, forecast, number_of_steps
from pyoops.generic.state import StateParameters
from pyoops.interface.observations import GeoVaLs
from pyoops.util.atomic import atomic_output, readable_path
from pyoops.util.datetime import DateTime, Duration, TimeWindow
from pyoops.util.errors import ConfigError, InputFileError, PyoopsError, join_path
from pyoops.util.figures import pyplot, save_figure
from pyoops.util.logging import progress
from pyoops.util.random import generator
from pyoops.util.resources import require_memory
from pyoops.util.sizes import check_members, end_date

__all__ = [
    "CycleExperiment",
    "CyclingParameters",
    "METHODS",
    "STATISTICS",
    "SyntheticObservationsParameters",
    "TruthParameters",
    "TwinObservations",
    "plot_statistics",
    "rmse",
    "spread",
]

logger = logging.getLogger("pyoops")

#: The innovation archive in the output directory (``output.archive``).
ARCHIVE_NAME = "innovations.nc"
#: The member archive in the output directory (``output.member archive``).
MEMBER_ARCHIVE_NAME = "members.nc"
#: The per-cycle statistics in the output directory; their cycle log is ``statistics.nc.log``.
STATISTICS_NAME = "statistics.nc"
#: Prefix of the adaptive series among the cycle log's columns.
ADAPTIVE_COLUMN = "adaptive/"
METHODS = ("3D-Var", "4D-Var", "3D-EnVar", "4D-EnVar", "hybrid", "EDA", "EDA-hybrid", "LETKF", "EnKF", "LETKF-hybrid")
ENSEMBLE_METHODS = ("3D-EnVar", "4D-EnVar", "hybrid", "EDA", "EDA-hybrid", "LETKF", "EnKF", "LETKF-hybrid")
#: Methods whose B is a Hybrid of a static and an ensemble chain (the adaptive hybrid weight).
HYBRID_METHODS = ("hybrid", "EDA-hybrid", "LETKF-hybrid")
#: Methods whose members can be emulated (``emulated members``).
EMULATED_MEMBER_METHODS = ("LETKF", "EnKF", "EDA", "EDA-hybrid")
FOUR_D_COST_TYPES = ("4D-Var", "3D-FGAT", "4D-FGAT", "4D-Ens-Var")

#: Per-cycle statistics (NaN where not applicable), in the order of the output files.
STATISTICS = ("analysis rmse", "forecast rmse", "analysis mean rmse", "forecast mean rmse",
              "analysis spread", "forecast spread")
#: The checkpoint format (2 since the per-cycle series moved from the checkpoint to the cycle log).
CHECKPOINT_VERSION = 2


# Parameters ------------------------------------------------------------------------------------
class TruthParameters(Parameters):
    """The ``truth`` section: a truth run (``initial condition``) or truth files (``filename``)."""

    initial_condition: StateParameters | None = Field(
        None, description="Initial state of the truth run (file or analytic init).")
    spin_up: DurationField = Field(Duration("PT0S"), alias="spin-up",
                                   description="Run the truth this long before the first cycle.")
    model: dict[str, Any] | None = Field(None, description="Truth model (default: the assimilating model; "
                                                           "another one makes model error).")
    filename: str | None = Field(None, description="Truth from files instead of a run (a nature run): one state file "
                                                   "per analysis time, %date% replaced by the analysis time; or, "
                                                   "without %date%, one file of every time (a 'time' dimension).")

    @model_validator(mode="after")
    def _one_source(self) -> "TruthParameters":
        if (self.initial_condition is None) == (self.filename is None):
            raise ValueError("give exactly one of 'initial condition' (a truth run) and 'filename' (truth files)")
        if self.filename is not None:
            if self.model is not None or self.spin_up != Duration(0):
                raise ValueError("'model' and 'spin-up' belong to a truth run ('initial condition')")
        return self


class ObsFileTemplateParameters(Parameters):
    """``observations.obsdatain``: given observations."""

    filename: str = Field(description="IODA-like observation file; with %date%: one file per window, %date% replaced "
                                      "by the cycle's analysis time; without: one file, its rows selected by each "
                                      "window.")


class SyntheticObservationsParameters(Parameters):
    """The ``observations`` section: one synthetic observation network, or given observations (``obsdatain``)."""

    name: str = Field("synthetic", description="Name of the obs space.")
    simulated_variables: list[str] | None = Field(None, description="Observed variables (default: all).")
    obsdatain: ObsFileTemplateParameters | None = Field(
        None, description="Given observations (ObsValue, ObsError, times, locations) instead of the synthetic ones.")
    obs_frequency: PositiveDurationField | None = Field(
        None, description="Time between observation times (a multiple of the model step).")
    obs_density: int | None = Field(None, gt=0, description="Number of locations at each observation time.")
    obs_error: float | None = Field(None, gt=0, description="Observation error standard deviation; R = obs error^2 I.")
    locations: Literal["regular", "random"] = Field("regular", description="Regular lattice or random (fixed) "
                                                                           "locations.")
    locations_seed: int = Field(0, ge=0, description="Seed of the random locations.")
    seed: int = Field(0, ge=0, description="Seed of the observation errors (one stream per observation time).")
    obs_operator: dict[str, Any] = Field(default_factory=lambda: {"name": "Identity"},
                                         description="Observation operator, e.g. {name: Identity}.")
    obs_localizations: list[ObsLocalization] = Field(
        default_factory=list, description="LETKF: observation-space localizations (lengthscale > 0).")

    @model_validator(mode="after")
    def _synthetic_or_given(self) -> "SyntheticObservationsParameters":
        synthetic = {"obs frequency": self.obs_frequency, "obs density": self.obs_density,
                     "obs error": self.obs_error}
        if self.obsdatain is None:
            missing = [k for k, v in synthetic.items() if v is None]
            if missing:
                raise ValueError(f"synthetic observations need {', '.join(repr(k) for k in missing)} (or give "
                                 "'obsdatain')")
        else:
            given = [k for k in ("obs_frequency", "obs_density", "obs_error", "locations", "locations_seed", "seed")
                     if k in self.model_fields_set]
            if given:
                raise ValueError(f"{', '.join(repr(k.replace('_', ' ')) for k in given)} describe synthetic "
                                 "observations; remove them with 'obsdatain'")
        return self


class InitialPerturbationParameters(Parameters):
    std: float = Field(1.0, ge=0, description="Standard deviation of the white initial background errors.")


class InitialFileParameters(Parameters):
    """``cycling.initial background`` / ``cycling.initial ensemble``: state files valid at the first background time."""

    filename: str = Field(description="State file (initial ensemble: %mem% replaced by the member number 1..N, or "
                                      "one file with a 'member' dimension, members 0..N-1).")


class CyclingParameters(Parameters):
    """The ``cycling`` section."""

    method: Literal["3D-Var", "4D-Var", "3D-EnVar", "4D-EnVar", "hybrid", "EDA", "EDA-hybrid", "LETKF", "EnKF",
                    "LETKF-hybrid"] = Field(
        description="Assimilation method of every cycle.")
    cycles: int = Field(gt=0, description="Number of cycles.")
    window_length: DurationField = Field(description="Cycle length L (= window length).")
    spin_up_cycles: int = Field(0, ge=0, alias="spin-up cycles", description="Cycles left out of the time means.")
    members: int | None = Field(None, description="Ensemble size N (ensemble methods), at least 2.")
    seed: int = Field(0, ge=0, description="Seed of the initial background perturbations and of the EDA.")
    initial_perturbation: InitialPerturbationParameters = Field(
        default_factory=InitialPerturbationParameters,
        description="Initial backgrounds: truth + N(0, std^2 I), one stream per member.")
    checkpoint_every: int | None = Field(
        None, gt=0, description="Write the checkpoint every this many cycles (and at the end); default: by wall "
                                "time, 'checkpoint seconds'.")
    checkpoint_seconds: float = Field(
        1.0, ge=0, description="Without 'checkpoint every': write the checkpoint after the first cycle, after any "
                               "cycle that ends this many wall-clock seconds or more after the last one was "
                               "written, after the last cycle, and when a cycle fails or is interrupted (the last "
                               "completed cycle); 0: after every cycle.")
    start: DateTimeField | None = Field(
        None, description="Experiment start T_0 (the first analysis is at T_0 + L) when there is no truth run "
                          "(default: the truth's initial date plus its spin-up).")
    initial_background: InitialFileParameters | None = Field(
        None, description="Control background at the first background time (default: truth + perturbation).")
    initial_ensemble: InitialFileParameters | None = Field(
        None, description="Members' backgrounds at the first background time (default: truth + perturbations).")

    @field_validator("members")
    @classmethod
    def _two(cls, value: int | None) -> int | None:
        if value is not None and value < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {value}")
        return value

    @model_validator(mode="after")
    def _members_for_ensembles(self) -> "CyclingParameters":
        if self.method in ENSEMBLE_METHODS and self.members is None:
            raise ValueError(f"method {self.method} needs 'members' (the ensemble size)")
        if self.method not in ENSEMBLE_METHODS and self.members is not None:
            raise ValueError(f"method {self.method} is deterministic; remove 'members'")
        if self.window_length <= Duration(0):
            raise ValueError("window length must be positive")
        if self.checkpoint_every is not None and "checkpoint_seconds" in self.model_fields_set:
            raise ValueError("give 'checkpoint every' (cycles) or 'checkpoint seconds' (wall time), not both")
        return self


# Small helpers ---------------------------------------------------------------------------------
def _mean(members: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {v: a.mean(axis=0) for v, a in members.items()}


def _forecast_chunk(shared: dict[str, Any], members: list[int]) -> dict[str, Any]:
    """Executor task: batched forecast of some members (module level, picklable)."""
    from pyoops.registry import get_registry

    registry = get_registry()
    plugin = registry.model_plugin(shared["model plugin"])
    geometry = plugin.geometry(validate(plugin.geometry.Parameters, shared["geometry"], "geometry"))
    factory = registry.model
    model = factory.maker_for(shared["model"], "model")(factory.parameters(shared["model"], "model"), geometry)
    fields = {v: a[members] for v, a in shared["fields"].items()}
    state = plugin.state(geometry, FieldSet(fields), DateTime(shared["time"]))
    rec = StateRecorder([DateTime(t) for t in shared["record"]])
    forecast(model, state, Duration(shared["length"]), [rec], show_progress=False)
    return {"final": c_ordered_copy(state.fields), "record": {str(t): f for t, f in rec.states.items()}}


# The twin: truth and observations --------------------------------------------------------------
@dataclass
class TwinObservations:
    """The observations of one window: observer config, values, their times and locations."""

    observer: dict[str, Any]
    values: np.ndarray              # (nvars, nlocs)
    error: np.ndarray               # (nvars, nlocs) standard deviations
    times: np.ndarray               # (nlocs,) seconds since the epoch
    locations: Any                  # Locations
    window: TimeWindow
    #: The Observer built for these observations (the analysis reuses it).
    built_observer: Any


class CycleExperiment:
    """A cycled twin experiment from a validated ``pyoops cycle`` configuration.

    Parameters
    ----------
    params:
        Validated :class:`~pyoops.apps.cycle.CycleParameters`.
    registry, plugin:
        The plugin registry and the model plugin.
    document:
        The configuration as a plain mapping (its digest guards the checkpoint).
    """

    def __init__(self, params: Any, registry: Any, plugin: Any, document: dict[str, Any] | None = None):
        self.params = params
        #: Scopes the EDA's cache of configuration-only B matrices to this experiment.
        self.run_token = uuid.uuid4().hex
        self.registry = registry
        self.plugin = plugin
        self.cycling: CyclingParameters = params.cycling
        self.method = self.cycling.method
        self.geometry = plugin.make_geometry(params.geometry, "geometry")
        self.regions = Regions(params.output.regions, self.geometry.location_names, "output.regions")
        self.model = self._make_model(params.model, "model")
        step = self.model.time_resolution
        truth = params.truth
        #: A truth run (``truth.initial condition``) / truth files (``truth.filename``) / no truth.
        self.truth_run = truth is not None and truth.initial_condition is not None
        self.truth_files = truth.filename if truth is not None else None
        self._truth_series: FieldSeries | None = None
        truth_cfg = (truth.model if truth is not None else None) or params.model
        self.truth_model = self._make_model(truth_cfg, "truth.model" if truth_cfg is not params.model else "model")
        if self.truth_model.time_resolution != step:
            raise ConfigError(f"the truth model time step {self.truth_model.time_resolution} differs from the "
                              f"assimilating model's {step}", "truth.model")
        self.obs = params.observations
        self.variables = list(self.geometry.variables)
        self.obs_variables = list(self.obs.simulated_variables or self.variables)
        unknown = [v for v in self.obs_variables if v not in self.variables]
        if unknown:
            raise ConfigError(f"unknown variable(s) {unknown} (geometry has {self.variables})",
                              "observations.simulated variables")
        L = self.cycling.window_length
        self._check_multiple(L, step, "cycling.window length")
        #: Observations from files (``observations.obsdatain``) instead of the synthetic twin.
        self.given_obs = self.obs.obsdatain is not None
        if not self.given_obs:
            if not self.truth_run:
                raise ConfigError("synthetic observations are made from a truth run: give 'truth.initial condition' "
                                  "(or given observations in 'observations.obsdatain')", "truth")
            self._check_multiple(self.obs.obs_frequency, step, "observations.obs frequency")
        if self.truth_run:
            self._check_multiple(truth.spin_up, step, "truth.spin-up")
            if self.cycling.start is not None:
                raise ConfigError("the start is the truth's initial date plus its spin-up; remove 'start'",
                                  "cycling.start")
            self.start = end_date(truth.initial_condition.date, truth.spin_up, "truth.spin-up")
        else:
            if self.cycling.start is None:
                raise ConfigError("without a truth run the experiment start T_0 must be given (the first analysis is "
                                  "at T_0 + window length)", "cycling.start")
            self.start = DateTime(self.cycling.start)

        self.document = document or {}
        self.archive = bool(getattr(params.output, "archive", False))
        self.member_archive = bool(getattr(params.output, "member_archive", False))
        self.member_archive_analyses = bool(getattr(params.output, "member_archive_analyses", False))
        self.last_innovations: dict[str, Any] | None = None
        #: The members' analyses of the last cycle, paired with their backgrounds (``member archive analyses``).
        self.last_member_analyses: dict[str, np.ndarray] | None = None
        #: Experiment hook ``(k, members) -> ensemble``: replaces the ensemble fed to the Ensemble block (and to the
        #: adaptive hybrid weight's C_e) at cycle ``k`` (e.g. draws from B_s in ``benchmarks/adaptive_hybrid.py``).
        self.ensemble_hook: Callable[[int, dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
        self._check_sizes()
        self._setup_method()
        self._setup_adaptive()
        if self.member_archive and not self.nmembers:
            raise ConfigError(f"method {self.method} has no ensemble members to archive", "output.member archive")
        if self.member_archive_analyses and not self.member_archive:
            raise ConfigError("the members' analyses go into the member archive: set 'member archive: true'",
                              "output.member archive analyses")
        self._setup_emulated_members()
        #: The reused gain of a deterministic 3D-Var cycle (:mod:`pyoops.ensemble.static_gain`), else None.
        obstacle = static_gain_obstacle(self)
        self.static_gain = StaticGainCycle(self) if obstacle is None else None
        if self.method == "3D-Var" and obstacle is not None:
            logger.info("3D-Var: each cycle minimises its cost function (no reused gain: %s)", obstacle)
        if self.cycling.initial_ensemble is not None and not self.nmembers:
            raise ConfigError(f"method {self.method} has no ensemble members", "cycling.initial ensemble")
        if self.cycling.initial_background is not None and not self.control_member:
            raise ConfigError(f"method {self.method} has no control member (eda.control member: false, or an "
                              "ensemble filter); remove it", "cycling.initial background")
        if not self.truth_run:
            if self.control_member and self.cycling.initial_background is None:
                raise ConfigError("without a truth run the control's initial background must be read from a file",
                                  "cycling.initial background")
            if self.cycling.members and self.cycling.initial_ensemble is None:
                raise ConfigError("without a truth run the initial ensemble must be read from files",
                                  "cycling.initial ensemble")

    def _check_sizes(self) -> None:
        """Before any work: the last cycle ends by the year 9999, and the statistics, the
        ensemble and one window's observations fit in memory."""
        c, L = self.cycling, self.cycling.window_length
        try:
            last = self.start + L * (c.cycles + 1)
        except (ConfigError, OverflowError):
            last = None
        if last is None:
            raise ConfigError(f"{c.cycles} cycles of {L} from {self.start} end after the year 9999 (the last "
                              "supported date)", "cycling.cycles")
        require_memory(8.0 * c.cycles * (len(STATISTICS) + 1) * 4, f"statistics of {c.cycles} cycles",
                       "cycling.cycles")
        if c.members is not None:
            # Backgrounds, analyses, forecasts and H(x) of the members, and the checkpoint's copy.
            check_members(c.members, self.geometry, self.variables, "cycling.members", copies=6)
        if self.given_obs:
            return  # the files' sizes are checked when each is read
        ntimes = int(L.total_seconds() // self.obs.obs_frequency.total_seconds()) + 1
        nlocs = ntimes * self.obs.obs_density
        nvars = len(self.obs_variables)
        require_memory(8.0 * nlocs * (4 + 10 * nvars + nvars * (c.members or 1)),
                       f"obs density {self.obs.obs_density} at {ntimes} observation time(s) per window "
                       f"({nlocs} locations of {nvars} variable(s)"
                       f"{f', H(x) of {c.members} members' if c.members else ''})", "observations.obs density")

    # Set-up -----------------------------------------------------------------------------------
    def _make_model(self, config: dict[str, Any], path: str) -> Any:
        factory = self.registry.model
        return factory.maker_for(config, path)(factory.parameters(config, path), self.geometry)

    @staticmethod
    def _check_multiple(length: Duration, step: Duration, path: str) -> None:
        try:
            number_of_steps(length, step, path.split(".")[-1])
        except ConfigError as exc:
            raise ConfigError(exc.message, path) from None

    def _setup_method(self) -> None:
        p, method = self.params, self.method
        self.nmembers = self.cycling.members or 0
        self.eda = p.eda or EDAParameters()
        if method == "EnKF":
            if p.cost_function is not None or p.variational is not None or p.local_ensemble_da is not None:
                raise ConfigError("EnKF takes no 'cost function', 'variational' or 'local ensemble DA' section",
                                  "cycling.method")
            self.cost_type = None
            self.four_d = False
            self.control_member = False
            return
        if method == "LETKF":
            if p.cost_function is not None or p.variational is not None:
                raise ConfigError("LETKF takes no 'cost function' or 'variational' section", "cycling.method")
            self.letkf = p.local_ensemble_da or LocalEnsembleDAParameters()
            if self.letkf.solver != "LETKF":
                raise ConfigError("cycling supports the LETKF solver (GETKF: run 'pyoops letkf' per cycle)",
                                  "local ensemble DA.solver")
            self.cost_type = None
            self.four_d = False
            self.control_member = False
            return
        if p.cost_function is None or p.variational is None:
            raise ConfigError(f"method {method} needs the 'cost function' and 'variational' sections", "cycling.method")
        if method == "LETKF-hybrid":
            # The members are cycled by the LETKF, the control by the hybrid 3D-Var.
            if p.eda is not None:
                raise ConfigError("LETKF-hybrid cycles its members with the LETKF ('local ensemble DA'), not an EDA; "
                                  "remove 'eda'", "eda")
            self.letkf = p.local_ensemble_da or LocalEnsembleDAParameters()
            if self.letkf.solver != "LETKF":
                raise ConfigError("cycling supports the LETKF solver", "local ensemble DA.solver")
            if self.archive:
                raise ConfigError("the innovation archive is not written by LETKF-hybrid (use hybrid or LETKF)",
                                  "output.archive")
        elif p.local_ensemble_da is not None:
            raise ConfigError("'local ensemble DA' only applies to methods LETKF and LETKF-hybrid", "local ensemble DA")
        cf = dict(p.cost_function)
        defaults = {"3D-Var": "3D-Var", "4D-Var": "4D-Var", "3D-EnVar": "3D-Var", "4D-EnVar": "4D-Ens-Var"}
        cost_type = cf.setdefault("cost type", defaults.get(method, "3D-Var"))
        allowed = {"3D-Var": ("3D-Var", "3D-FGAT"), "4D-Var": ("4D-Var", "4D-FGAT"), "3D-EnVar": ("3D-Var",),
                   "4D-EnVar": ("4D-Ens-Var",), "LETKF-hybrid": ("3D-Var",)}.get(method)
        if allowed is not None and cost_type not in allowed:
            raise ConfigError(f"method {method} needs cost type {' or '.join(allowed)}, got {cost_type}",
                              "cost function.cost type")
        for key in ("time window", "geometry", "background", "observations"):
            if key in cf:
                raise ConfigError("is set by the cycling (every cycle has its own); remove it",
                                  join_path("cost function", key))
        self.cost_type = cost_type
        self.four_d = cost_type in FOUR_D_COST_TYPES
        if cost_type in ("4D-Var", "3D-FGAT", "4D-FGAT") and "model" not in cf:
            cf["model"] = dict(p.model)
        if cost_type == "4D-Var" and "linear model" not in cf:
            raise ConfigError("cost type 4D-Var needs 'linear model'", "cost function")
        self.cost_template = cf
        berr = cf.get("background error")
        self.needs_ensemble = covariance_needs_ensemble(berr)
        #: B uses the members (Ensemble blocks, StdDev calibrated or emulated from them).
        self.uses_members = covariance_uses_members(berr)
        if self.uses_members and not self.needs_ensemble and method in ("3D-Var", "4D-Var"):
            raise ConfigError(f"a StdDev block takes σ from the members (calibration or emulated stddev) but method "
                              f"{method} has no ensemble; use EDA", "cost function.background error")
        if method in ("3D-Var", "4D-Var") and self.needs_ensemble:
            raise ConfigError(f"the background error has an Ensemble block but method {method} has no ensemble; "
                              "use 3D-EnVar, 4D-EnVar, hybrid or EDA", "cost function.background error")
        if method in ("3D-EnVar", "4D-EnVar", *HYBRID_METHODS) and not self.needs_ensemble:
            raise ConfigError(f"method {method} needs an Ensemble block (without its own 'ensemble' file) in the "
                              "background error", "cost function.background error")
        if method in HYBRID_METHODS and '"Hybrid"' not in json.dumps(berr):
            raise ConfigError(f"method {method} needs a Hybrid central block", "cost function.background error")
        self.control_member = method in ("3D-Var", "4D-Var", "LETKF-hybrid") or self.eda.control_member
        if method in ("3D-Var", "4D-Var"):
            if p.eda is not None:
                raise ConfigError(f"'eda' does not apply to the deterministic method {method}", "eda")
        # Validate the cost function once, on the first window.
        self._validate_cost_function()

    def _setup_emulated_members(self) -> None:
        """The generator of ``emulated members`` (None without the section)."""
        params = getattr(self.params, "emulated_members", None)
        self.emulated: EmulatedMembers | None = None
        if params is None:
            return
        if self.method not in EMULATED_MEMBER_METHODS:
            raise ConfigError(f"emulated members need a method that analyses every member "
                              f"({', '.join(EMULATED_MEMBER_METHODS)}), not {self.method}", "emulated members")
        if self.method in ("EDA", "EDA-hybrid") and (self.control_member or self.cost_type == "4D-Ens-Var"):
            raise ConfigError("emulated members in an EDA need 'eda: {control member: false}' and a cost type other "
                              "than 4D-Ens-Var", "emulated members")
        if params.real + params.emulated != self.nmembers:
            raise ConfigError(f"real + emulated = {params.real + params.emulated} members, cycling.members is "
                              f"{self.nmembers}", "emulated members")
        if self.adaptation is not None:
            raise ConfigError("emulated members and the adaptive schemes are not combined", "emulated members")
        if params.shadow_analyses and not self.member_archive_analyses:
            raise ConfigError("the shadow analyses go into the member archive only: set 'output: {member archive: "
                              "true, member archive analyses: true}'", "emulated members.shadow analyses")
        self.emulated = EmulatedMembers(params, self.geometry, self.variables, self.start, self.registry,
                                        self.plugin, self.cycling.seed)

    def _emulate(self, k: int, backgrounds: dict[str, np.ndarray], analyses: dict[str, np.ndarray]
                 ) -> dict[str, np.ndarray]:
        """Record the members' (background, analysis) pairs for the archive, and with ``emulated members`` the
        hybrid ensemble: the real members' analyses and the emulated ones.  With ``shadow analyses`` every member
        of ``analyses`` is a real analysis: the archive keeps them, the cycle goes on with the hybrid ensemble."""
        real = analyses
        if self.emulated is not None:
            analyses = self.emulated.complete(k, backgrounds, analyses)
        archived = real if self.emulated is not None and self.emulated.shadow else analyses
        self.last_member_analyses = archived if self.member_archive_analyses else None
        return analyses

    def _setup_adaptive(self) -> None:
        """The ``adaptive`` section: which methods take which scheme (:mod:`pyoops.ensemble.adaptive`)."""
        from pyoops.ensemble.adaptive import CycleAdaptation

        self.adaptation = None
        section = getattr(self.params, "adaptive", None)
        if section is None:
            return
        if self.method not in ("LETKF", "EnKF", "EDA", "3D-EnVar", *HYBRID_METHODS):
            raise ConfigError(f"adaptive inflation and obs error need an ensemble filter or an EDA, not method "
                              f"{self.method}", "adaptive")
        if section.hybrid_weight is not None:
            if self.method not in HYBRID_METHODS:
                raise ConfigError(f"the adaptive hybrid weight needs method {', '.join(HYBRID_METHODS)}, not "
                                  f"{self.method}", "adaptive.hybrid weight")
            if self.four_d:
                raise ConfigError(f"the adaptive hybrid weight needs a 3-D cost type (H B_s H^T and the members' "
                                  f"H(x) at the analysis time), not {self.cost_type}", "adaptive.hybrid weight")
            self._hybrid_indices = hybrid_component_indices(self.cost_template.get("background error"))
        if self.method not in ("LETKF", "EnKF"):
            if section.obs_error is not None:
                raise ConfigError("online R tuning is done by the LETKF and EnKF cycles (the EDA's observers "
                                  "take R from their configuration)", "adaptive.obs error")
            if self.four_d and section.inflation is not None:
                raise ConfigError(f"adaptive inflation of EDA members needs a 3-D cost type (the members' H(x) at "
                                  f"the analysis time), not {self.cost_type}", "adaptive.inflation")
        inflation = section.inflation
        if inflation is not None and inflation.spatial == "local" and self.method not in ("LETKF", "LETKF-hybrid") \
                and not self.obs.obs_localizations:
            raise ConfigError("local adaptive inflation needs 'observations.obs localizations' (the local "
                              "observations of each grid point)", "adaptive.inflation.spatial")
        if inflation is not None and inflation.scheme == "enkf-n" and self.method not in ("LETKF", "LETKF-hybrid"):
            raise ConfigError("enkf-n is an ensemble transform (ETKF/LETKF); use another scheme with method "
                              f"{self.method}", "adaptive.inflation.scheme")
        npoints = self.geometry.grid_locations().nlocs
        self.adaptation = CycleAdaptation(section, npoints, self.obs_variables)

    def _validate_cost_function(self) -> None:
        from pyoops.assimilation.costfunction import CostFunction, CostFunctionParameters
        from pyoops.assimilation.driver import VariationalSection, check_minimizer_memory

        cfg = self.cost_config(0)
        try:
            params = validate(CostFunctionParameters, cfg, "cost function")
            cost = CostFunction(params, self.registry, self.plugin)
        except ConfigError as exc:
            raise ConfigError(exc.message, exc.path) from None
        if cost.model is not None and cost.model.time_resolution != self.model.time_resolution:
            raise ConfigError("the cost function's model time step differs from the cycling model's",
                              "cost function.model")
        check_minimizer_memory(cost, validate(VariationalSection, self.params.variational, "variational"))
        self.increment_times_offsets = [t - cost.window.begin for t in cost.increment_times]

    def background_variance_rule(self) -> str:
        """How the archive's BackgroundErrorVariance is obtained (stored as an attribute)."""
        if self.method in ("LETKF", "EnKF"):
            return ("ensemble variance of H(x_b), N-1 normalisation"
                    + (", times the prior inflation mult" if self.method == "LETKF" else ""))
        return "diag(HBH^T) of the analysis B: " + self.params.output.background_error_variance.rule()

    # Time line --------------------------------------------------------------------------------
    def analysis_time(self, k: int) -> DateTime:
        return self.start + self.cycling.window_length * (k + 1)

    def window(self, k: int) -> TimeWindow:
        L = self.cycling.window_length
        a = self.analysis_time(k)
        begin = a - L if self.four_d else a - Duration(L.total_seconds() / 2)
        return TimeWindow(begin, L)

    def background_time(self, k: int) -> DateTime:
        """Valid time of the background the cycle starts from (window begin in 4-D, a_k in 3-D)."""
        return self.window(k).begin if self.four_d else self.analysis_time(k)

    def obs_times(self, window: TimeWindow) -> list[DateTime]:
        if self.given_obs:
            return []
        f = self.obs.obs_frequency
        j = math.ceil((window.begin - self.start).total_seconds() / f.total_seconds())
        out, t = [], self.start + f * max(j, 0)
        while t <= window.end:
            if window.contains(t):
                out.append(t)
            t = t + f
        return out

    # Observations --------------------------------------------------------------------------------
    def observer_config(self, window: TimeWindow, times: list[DateTime]) -> dict[str, Any]:
        o = self.obs
        gen = {"begin": str(times[0] - window.begin), "end": str(times[-1] - window.begin),
               "obs frequency": str(o.obs_frequency), "obs density": o.obs_density, "obs error": o.obs_error,
               "locations": o.locations, "random seed": o.locations_seed}
        return {"obs space": {"name": o.name, "simulated variables": self.obs_variables, "generate": gen},
                "obs operator": dict(o.obs_operator), "obs error": {"covariance model": "diagonal"}}

    def observe(self, window: TimeWindow, truth_at: dict[DateTime, dict[str, np.ndarray]],
                times: list[DateTime] | None = None) -> TwinObservations:
        """Synthetic observations of the window from the truth at the observation times (``times``: the
        window's ``obs_times``, if the caller has them)."""
        from pyoops.generic.observers import Observer, ObserverParameters

        times = self.obs_times(window) if times is None else times
        if not times:
            raise ConfigError(f"no observation time in the window {window} (obs frequency "
                              f"{self.obs.obs_frequency})", "observations.obs frequency")
        cfg = self.observer_config(window, times)
        # The network is the same every window with the same configuration (relative times, seeded
        # locations): the observer of the first such window is moved to this one.
        last = getattr(self, "_twin_observer", None)
        ob = last[1].at_window(window) if last is not None and last[0] == cfg else None
        if ob is None:
            ob = Observer(validate(ObserverParameters, cfg, "observations"), window, self.geometry, self.registry,
                          "observations")
            missing = [v for v in ob.obs_operator.required_variables if v not in self.variables]
            if missing:
                raise ConfigError(f"the observation operator needs model variable(s) {missing} that the model does "
                                  f"not have (it has {self.variables})", "observations.obs operator")
            self._twin_observer = (cfg, ob)
        space = ob.obs_space
        nvars = len(space.simulated_variables)
        geovals = None
        loc_times = space.locations.times
        values = np.empty((nvars, space.nlocs))
        for t in times:
            rows = np.flatnonzero(loc_times == t.seconds_since_epoch())
            g = ob.geovals(FieldSet(truth_at[t], copy=False), rows)
            if geovals is None:
                geovals = GeoVaLs({v: np.full(space.nlocs, np.nan) for v in g}, copy=False)
            for v, a in g.items():
                geovals[v][rows] = a
        hx = ob.obs_operator.simulate_obs(geovals).values
        sigma = ob.obs_error.obserrors().values
        for t in times:
            rows = np.flatnonzero(loc_times == t.seconds_since_epoch())
            noise = generator(self.obs.seed, "observations", _time_label(t)).standard_normal(
                (nvars, rows.size))
            values[:, rows] = hx[:, rows] + sigma[:, rows] * noise
        return TwinObservations(cfg, values, sigma, loc_times.copy(), space.locations, window, ob)

    def obs_filename(self, k: int) -> str:
        """The observation file of cycle ``k``: ``%date%`` replaced by its analysis time (ISO-8601, e.g.
        ``2010-01-01T06:00:00Z``); without ``%date%`` the one file of every window."""
        return self.obs.obsdatain.filename.replace("%date%", str(self.analysis_time(k)))

    def given_observer_config(self, k: int) -> dict[str, Any]:
        """Observer of the given observations of cycle ``k`` (a file of many windows: rows outside dropped)."""
        one_file = "%date%" not in self.obs.obsdatain.filename
        return {"obs space": {"name": self.obs.name, "simulated variables": self.obs_variables,
                              "obsdatain": {"filename": self.obs_filename(k),
                                            "outside window": "drop" if one_file else "fail"}},
                "obs operator": dict(self.obs.obs_operator), "obs error": {"covariance model": "diagonal"}}

    def read_observations(self, k: int) -> TwinObservations:
        """The given observations of cycle ``k`` (IODA-like file; its rows in the window if it is one file)."""
        from pyoops.generic.observers import Observer, ObserverParameters

        window = self.window(k)
        filename = self.obs_filename(k)
        cfg = self.given_observer_config(k)
        ob = Observer(validate(ObserverParameters, cfg, "observations"), window, self.geometry, self.registry,
                      "observations")
        space = ob.obs_space
        values = np.asarray(space.obs_values().values, dtype=np.float64)
        if space.nlocs == 0:
            raise InputFileError(filename, f"has no observation in the window {window} of cycle {k}")
        missing = int(np.isnan(values).sum())
        if missing:
            raise InputFileError(filename, f"has {missing} missing ObsValue(s) in the window {window}: cycle needs "
                                           "every simulated variable at every location")
        sigma = np.asarray(ob.obs_error.obserrors().values, dtype=np.float64)
        return TwinObservations(cfg, values, sigma, space.locations.times.copy(), space.locations, window, ob)

    def read_truth(self, time: DateTime) -> dict[str, np.ndarray]:
        """The truth at ``time`` from ``truth.filename``: its file (``%date%`` replaced; geometry and date
        checked), or its time in the one file of every time (:class:`~pyoops.fields.netcdf.FieldSeries`,
        opened and checked at the first read, closed by :meth:`close_inputs`)."""
        if "%date%" not in self.truth_files:
            if self._truth_series is None:
                self._truth_series = FieldSeries(self.truth_files, self.geometry, self.variables)
            fields = self._truth_series.read(time)
            return {v: fields[v] for v in self.variables}
        cfg = {"date": str(time), "filename": self.truth_files.replace("%date%", str(time))}
        state = self.plugin.state.from_config(self.geometry, cfg, "truth.filename")
        return {v: np.array(state.fields[v], dtype=np.float64) for v in self.variables}

    def close_inputs(self) -> None:
        """Close the input files a run keeps open (the truth's file of every time)."""
        if self._truth_series is not None:
            self._truth_series.close()
            self._truth_series = None

    # Truth ------------------------------------------------------------------------------------
    def initial_truth(self) -> Any:
        state = self.plugin.state.from_config(self.geometry, self.params.truth.initial_condition,
                                              "truth.initial condition")
        if self.params.truth.spin_up > Duration(0):
            forecast(self.truth_model, state, self.params.truth.spin_up, show_progress=False)
        return state

    def advance_truth(self, truth: Any, until: DateTime, record: Any) -> dict[DateTime, dict[str, np.ndarray]]:
        """Advance ``truth`` in place to ``until``, returning copies at the ``record`` times."""
        rec = StateRecorder(record)
        if until < truth.time:
            raise RuntimeError(f"the truth is at {truth.time}, it cannot go back to {until}")
        forecast(self.truth_model, truth, until - truth.time, [rec], show_progress=False)
        return rec.states

    # Forecasts ---------------------------------------------------------------------------------
    def forecast_fields(self, fields: dict[str, np.ndarray], time: DateTime, length: Duration,
                        record: Any = (), executor: MemberExecutor | None = None,
                        ) -> tuple[dict[str, np.ndarray], dict[DateTime, dict[str, np.ndarray]]]:
        """Forecast (batched) ``fields`` valid at ``time`` by ``length``; returns the final fields and records."""
        batched = next(iter(fields.values())).ndim > len(self.geometry.field_shape(self.variables[0]))
        if executor is not None and executor.engine != "serial" and batched:
            n = next(iter(fields.values())).shape[0]
            shared = {"model plugin": self.params.model_plugin, "geometry": self.params.geometry,
                      "model": self.params.model, "fields": fields, "time": str(time), "length": str(length),
                      "record": [str(t) for t in record]}
            parts = executor.map_chunks(_forecast_chunk, shared, n)
            final = {v: np.concatenate([p["final"][v] for p in parts]) for v in fields}
            records = {DateTime(t): {v: np.concatenate([p["record"][t][v] for p in parts]) for v in fields}
                       for t in parts[0]["record"]}
            return final, records
        state = self.plugin.state(self.geometry, FieldSet(c_ordered_copy(fields)), time)
        rec = StateRecorder(record)
        forecast(self.model, state, length, [rec], show_progress=False)
        return c_ordered_copy(state.fields), rec.states

    # Cost function of one window ------------------------------------------------------------------
    def cost_config(self, k: int, observer: dict[str, Any] | None = None) -> dict[str, Any]:
        w = self.window(k)
        cfg = dict(self.cost_template)
        cfg["time window"] = {"begin": str(w.begin), "length": str(w.length)}
        cfg["geometry"] = dict(self.params.geometry)
        if self.cost_type == "4D-Ens-Var":
            times = [w.begin + d for d in getattr(self, "increment_times_offsets", [])] or self._slot_times(w)
            cfg["background"] = {"states": [{"date": str(t), "filename": "in-memory"} for t in times]}
        else:
            date = w.begin if self.four_d else self.analysis_time(k)
            cfg["background"] = {"date": str(date), "filename": "in-memory"}
        if observer is None:
            observer = (self.given_observer_config(k) if self.given_obs
                        else self.observer_config(w, self.obs_times(w) or [w.end]))
        cfg["observations"] = {"observers": [observer]}
        return cfg

    def _slot_times(self, w: TimeWindow) -> list[DateTime]:
        sub = Duration(self.cost_template.get("subwindow", str(w.length)))
        n = int(round(w.length / sub))
        return [w.begin + sub * i for i in range(n + 1)]

    # Running ------------------------------------------------------------------------------------
    def digest(self) -> str:
        """Hash of the configuration parts that determine the results (not cycles, parallel, output)."""
        doc = {k: v for k, v in self.document.items() if k not in ("parallel", "output")}
        cyc = dict(doc.get("cycling", {}))
        cyc.pop("cycles", None)
        cyc.pop("checkpoint every", None)
        cyc.pop("checkpoint seconds", None)
        cyc.pop("spin-up cycles", None)
        doc["cycling"] = cyc
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    def initial_experiment_state(self) -> dict[str, Any]:
        r"""State before cycle 0: the truth (if run) and the backgrounds valid at the first background time
        :math:`s_0`, read from ``cycling.initial background``/``initial ensemble`` or drawn as
        :math:`x^t(s_0) + \sigma\,\eta_k`, :math:`\eta_k \sim \mathcal N(0, I)` from ``generator(seed, "initial", k)``.
        """
        truth = self.initial_truth() if self.truth_run else None
        s0 = self.background_time(0)
        at_s0 = None
        std = self.cycling.initial_perturbation.std
        seed = self.cycling.seed

        def perturbed(member: int) -> dict[str, np.ndarray]:
            nonlocal at_s0
            if at_s0 is None:
                at_s0 = self.plugin.state(self.geometry, truth.fields.copy(), truth.time)
                forecast(self.truth_model, at_s0, s0 - truth.time, show_progress=False)
            rng = generator(seed, "initial", member)
            return {v: np.asarray(at_s0.fields[v]) + std * rng.standard_normal(np.shape(at_s0.fields[v]))
                    for v in self.variables}

        def read(filename: str, path: str, member: int | None = None) -> dict[str, np.ndarray]:
            cfg = {"date": str(s0), "filename": filename, **({"member": member} if member is not None else {})}
            state = self.plugin.state.from_config(self.geometry, cfg, path)
            return {v: np.array(state.fields[v], dtype=np.float64) for v in self.variables}

        control = None
        if self.control_member:
            bg = self.cycling.initial_background
            control = read(bg.filename, "cycling.initial background") if bg is not None else perturbed(0)
        members = None
        if self.nmembers:
            ens = self.cycling.initial_ensemble
            if ens is None:
                draws = [perturbed(m) for m in range(1, self.nmembers + 1)]
            elif "%mem%" in ens.filename:
                draws = [read(ens.filename.replace("%mem%", str(m)), "cycling.initial ensemble")
                         for m in range(1, self.nmembers + 1)]
            else:
                draws = [read(ens.filename, "cycling.initial ensemble", m) for m in range(self.nmembers)]
            members = {v: np.stack([d[v] for d in draws]) for v in self.variables}
        return {"cycle": 0, "truth": c_ordered_copy(truth.fields) if truth is not None else None,
                "truth time": str(truth.time) if truth is not None else None, "control": control,
                "members": members, "stats": {name: [] for name in STATISTICS}, "seconds": []}

    def run(self, directory: "str | Path", resume: bool = True, executor: MemberExecutor | None = None,
            show_progress: bool | None = None, stop_after: int | None = None) -> dict[str, Any]:
        """Run (or resume) the experiment, writing the checkpoint to ``directory``.

        ``stop_after``: stop after this many cycles in this call (for tests and chunked runs).
        Returns the experiment state (statistics as arrays).
        """
        directory = Path(directory)
        ckpt = directory / "checkpoint.npz"
        digest = self.digest()
        state = None
        if resume and ckpt.exists():
            state = load_checkpoint(ckpt, digest, series=False)  # the series: from the log, resumed below
            if state["cycle"] > self.cycling.cycles:
                raise ConfigError(f"the checkpoint {ckpt} already holds {state['cycle']} cycles, more than the "
                                  f"{self.cycling.cycles} asked for", "cycling.cycles")
            logger.info("resuming from %s after cycle %d", ckpt, state["cycle"])
        if state is None:
            state = self.initial_experiment_state()
        elif self.archive and state["cycle"] and state.get("innovations") is None:
            raise ConfigError(f"the checkpoint {ckpt} was written without the innovation archive, which cannot be "
                              "made for the cycles already done; set 'resume: false' or another output directory",
                              "output.archive")
        elif self.member_archive and state["cycle"] and state.get("member archive") is None:
            raise ConfigError(f"the checkpoint {ckpt} was written without the member archive, which cannot be made "
                              "for the cycles already done; set 'resume: false' or another output directory",
                              "output.member archive")
        if self.adaptation is not None:
            if state.get("adaptive") is not None:
                self.adaptation.load_state(state["adaptive"])
            elif state["cycle"]:
                raise ConfigError(f"the checkpoint {ckpt} was written without the adaptive schemes; set 'resume: "
                                  "false' or another output directory", "adaptive")
            state["adaptive"] = self.adaptation.state_arrays()
        else:
            state["adaptive"] = None
        cycle_log = CycleLog(directory / STATISTICS_NAME, self.cycle_log_columns())
        if state.get("statistics log") is not None:
            self._restore_series(state, cycle_log.resume(state["statistics log"]))
        if not self.archive:
            state["innovations"] = None   # cycles run without the archive: it cannot be continued later
        if not self.member_archive:
            state["member archive"] = None
        archive = _Archive(self, directory / ARCHIVE_NAME, state) if self.archive else None
        members_archive = _MemberArchive(self, directory / MEMBER_ARCHIVE_NAME, state) \
            if self.member_archive else None
        own_executor = executor is None
        executor = executor or MemberExecutor(self.params.parallel)
        truth = None if state["truth"] is None else self.plugin.state(self.geometry, FieldSet(state["truth"]),
                                                                       DateTime(state["truth time"]))
        total = self.cycling.cycles
        first = state["cycle"]
        last = total if stop_after is None else min(total, first + stop_after)
        bar = progress(range(first, last), total=last - first, desc=f"cycle {self.method}", enabled=show_progress)
        policy = _CheckpointPolicy(self.cycling.checkpoint_every, self.cycling.checkpoint_seconds, first, last)
        pending: dict[str, np.ndarray] | None = None   # the last completed cycle's checkpoint, not yet written
        try:
            for k in bar:
                started = _time.perf_counter()
                backgrounds = state["members"]  # valid at the background time; the cycle replaces, never edits, it
                stats = self.run_cycle(k, truth, state, executor)
                row = [stats.get(name, float("nan")) for name in STATISTICS]
                for name, value in zip(STATISTICS, row):
                    state["stats"][name].append(value)
                state["seconds"].append(_time.perf_counter() - started)
                row.append(state["seconds"][-1])
                if self.adaptation is not None:
                    row += self.adaptation.series_row(k + 1)
                cycle_log.append(k, row)
                state["statistics log"] = cycle_log.checkpoint_state()
                state["cycle"] = k + 1
                if truth is not None:
                    state["truth"], state["truth time"] = c_ordered_copy(truth.fields), str(truth.time)
                if archive is not None:
                    archive.append(k, self.last_innovations, state)
                if members_archive is not None:
                    members_archive.append(k, backgrounds, state, self.last_member_analyses)
                due = policy.due(k)
                if due or policy.keeps_pending:
                    if self.adaptation is not None:
                        state["adaptive"] = self.adaptation.state_arrays()
                    arrays = checkpoint_arrays(state, digest, copy=not due)   # kept: copies; written now: not
                    pending = None if due else arrays
                    if due:
                        write_checkpoint(ckpt, arrays)
                        policy.written()
                if hasattr(bar, "set_postfix") and (k % 10 == 0 or k + 1 == last):
                    bar.set_postfix({"rmse a": f"{stats['analysis rmse']:.3f}"})
        except BaseException:
            if pending is not None:   # a failed or interrupted cycle: keep the cycles completed before it
                try:
                    write_checkpoint(ckpt, pending)
                except (OSError, PyoopsError) as exc:   # the run's own error is the one to report
                    logger.warning("%s: the checkpoint of the last completed cycle could not be written (%s)",
                                   ckpt, exc)
            for a in (archive, members_archive):
                if a is not None:
                    a.abandon()
            raise
        finally:
            cycle_log.release()  # kept on disk: what a resumed or extended run continues
            self.close_inputs()
            if own_executor:
                executor.close()
        for a in (archive, members_archive):
            if a is not None:
                a.close()
        return state

    def cycle_log_columns(self) -> list[str]:
        """The columns of the cycle log: the :data:`STATISTICS`, ``seconds`` and the adaptive series
        (prefixed ``adaptive/``)."""
        names = self.adaptation.series_names() if self.adaptation is not None else []
        return [*STATISTICS, "seconds", *(ADAPTIVE_COLUMN + n for n in names)]

    def _restore_series(self, state: dict[str, Any], series: dict[str, np.ndarray]) -> None:
        """Set the per-cycle series of ``state`` (and of the adaptive schemes) from the cycle log's columns."""
        state.update(_state_series(series))
        adaptive = state.pop("adaptive series")
        if self.adaptation is not None:
            self.adaptation.restore_series(adaptive)

    def run_cycle(self, k: int, truth: Any, state: dict[str, Any], executor: MemberExecutor) -> dict[str, float]:
        """One cycle: truth and observations, analysis, statistics, forecast to the next background."""
        w = self.window(k)
        a_k = self.analysis_time(k)
        if self.given_obs:
            twin = self.read_observations(k)
            if truth is not None:
                t_a = self.advance_truth(truth, a_k, [a_k])[a_k]
            elif self.truth_files is not None:
                t_a = self.read_truth(a_k)
            else:
                t_a = None
        else:
            obs_times = self.obs_times(w)
            needed = sorted(set(obs_times) | {a_k})
            truth_at = self.advance_truth(truth, needed[-1], needed)
            twin = self.observe(w, truth_at, obs_times)
            t_a = truth_at[a_k]
        if self.method == "LETKF":
            stats, innovations = self._cycle_letkf(k, twin, t_a, state, executor)
        elif self.method == "LETKF-hybrid":
            stats, innovations = self._cycle_letkf_hybrid(k, twin, t_a, state, executor)
        elif self.method == "EnKF":
            stats, innovations = self._cycle_enkf(k, twin, t_a, state, executor)
        else:
            stats, innovations = self._cycle_variational(k, twin, t_a, state, executor)
        #: The archive record of the cycle (``append_cycle`` keywords), None without archive.
        self.last_innovations = None if innovations is None else self._archive_record(twin, innovations)
        return stats

    # Innovation archive ---------------------------------------------------------------------------
    def _archive_record(self, twin: TwinObservations, innovations: dict[str, Any]) -> dict[str, Any]:
        """``append_cycle`` keywords: the cycle's values and metadata, observations in ``(nvars, nlocs)``
        C order (variable-major), as the observers and the flat H(x) vectors order them."""
        return {"obs_value": twin.values.ravel(), "obs_error": twin.error.ravel(),
                **flat_metadata(self.obs.name, self.obs_variables, twin.times, twin.locations.coords),
                **innovations}

    def _ensemble_hofx(self, ob: Any, fields: dict[str, np.ndarray]) -> np.ndarray:
        """:math:`H(x_k)` of every member, ``(N, p)``."""
        hx = ob.obs_operator.simulate_obs(ob.geovals(FieldSet(fields, copy=False))).values
        return hx.reshape(hx.shape[0], -1)

    # LETKF ----------------------------------------------------------------------------------------
    def _cycle_letkf(self, k: int, twin: TwinObservations, t_a: dict[str, np.ndarray], state: dict[str, Any],
                     executor: MemberExecutor) -> tuple[dict[str, float], dict[str, Any] | None]:
        xb = state["members"]
        xa, innovations = self._letkf_members(twin, xb, k)
        state["members"], _ = self.forecast_fields(xa, self.analysis_time(k), self.cycling.window_length, (), executor)
        return _filter_statistics(xb, xa, t_a), innovations

    def _letkf_members(self, twin: TwinObservations, xb: dict[str, np.ndarray], k: int
                       ) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
        """The LETKF analysis of the members ``xb`` of cycle ``k`` (with the adaptive schemes; with emulated
        members, the hybrid ensemble) and the archive's innovations (of the ensemble returned)."""
        ob = twin.built_observer
        selection = self._local_selection(twin)
        hx = ob.obs_operator.simulate_obs(ob.geovals(FieldSet(xb, copy=False))).values   # (N, nv, nlocs)
        n = hx.shape[0]
        infl = self.letkf.inflation
        mult: "float | np.ndarray" = infl.mult
        variance = (twin.error ** 2).ravel()
        adapt = self.adaptation is not None and (self.adaptation.inflation is not None
                                                 or self.adaptation.obs_error is not None)
        if adapt:
            lam, variance = self._adapt_before(twin, hx.reshape(n, -1), xb, selection)
            mult = infl.mult * lam
        xa = letkf_analysis(FieldSet(xb, copy=False), hx.reshape(n, -1), twin.values.ravel(), variance, selection,
                            mult, infl.rtpp, infl.rtps, infl.posterior_mult)
        xa = self._emulate(k, xb, c_ordered_copy(xa))
        hxa = self._ensemble_hofx(ob, xa) if self.archive or self._adapt_needs_hxa() else None
        if adapt:
            self._adapt_after(twin, hxa, xb, xa)
        innovations = (ensemble_innovations(hx.reshape(n, -1), hxa, mult if np.ndim(mult) == 0 else
                                            float(np.mean(mult))) if self.archive else None)
        return xa, innovations

    # LETKF-fed hybrid ---------------------------------------------------------------------------------
    def _cycle_letkf_hybrid(self, k: int, twin: TwinObservations, t_a: dict[str, np.ndarray], state: dict[str, Any],
                            executor: MemberExecutor) -> tuple[dict[str, float], None]:
        """The members by the LETKF; the control by the hybrid 3D-Var whose Ensemble block gets the members'
        backgrounds (NCEP's GSI hybrid).  The analysis is the control's; ensemble statistics are the members'."""
        a_k = self.analysis_time(k)
        xb, control = state["members"], state["control"]
        ensemble = self.ensemble_for_b(k, xb)
        cost_cfg = self.cost_config(k, twin.observer)
        if self.adaptation is not None and self.adaptation.hybrid_weight is not None:
            cost_cfg = self._adapt_hybrid_weight(twin, cost_cfg, control, ensemble)
        xa, _ = self._letkf_members(twin, xb, k)
        setup = EDASetup(self.params.model_plugin, cost_cfg, dict(self.params.variational), {0: control},
                         [twin.values], ensemble, self.cycling.seed, ("cycle", k), False, run_token=self.run_token)
        xc = run_eda(setup, [0], executor).analyses[0][-1]
        stats = _filter_statistics(xb, xa, t_a)
        stats["analysis rmse"], stats["forecast rmse"] = rmse(xc, t_a), rmse(control, t_a)
        stack = {v: np.concatenate([np.asarray(xc[v])[None], xa[v]]) for v in self.variables}
        nxt, _ = self.forecast_fields(stack, a_k, self.cycling.window_length, (), executor)
        state["control"] = {v: nxt[v][0] for v in self.variables}
        state["members"] = {v: nxt[v][1:] for v in self.variables}
        return stats, None

    # Adaptive hybrid weight -------------------------------------------------------------------------
    def ensemble_for_b(self, k: int, members: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The ensemble fed to the Ensemble block at cycle ``k``: the members' backgrounds, or what
        :attr:`ensemble_hook` (an experiment hook, e.g. draws from B_s in ``benchmarks/adaptive_hybrid.py``)
        returns for them."""
        return members if self.ensemble_hook is None else self.ensemble_hook(k, members)

    def _adapt_hybrid_weight(self, twin: TwinObservations, cost_cfg: dict[str, Any],
                             control: dict[str, np.ndarray] | None, members: dict[str, np.ndarray]
                             ) -> dict[str, Any]:
        r"""Update :math:`\beta` from this cycle (:mod:`pyoops.assimilation.adaptive_hybrid`) and return the cost
        function with the Hybrid weights :math:`(1-\beta, \beta)`.

        :math:`d = y - H(x_b)` of the control (the members' mean without control);
        :math:`\mathbf C_s = \mathbf{HB}_s\mathbf H^\mathrm T` from :math:`p` columns of the Hybrid with weights
        (1, 0), cached while the network does not move (linearised about the background of the cycle where
        it is first met: exact for a linear :math:`H`); :math:`\mathbf C_e` from the members' :math:`H(x_b)`,
        or, when the Ensemble block is localized, from :math:`p` columns of the Hybrid with weights (0, 1).
        """
        from pyoops.assimilation.adaptive_hybrid import HybridInnovations

        ob = twin.built_observer
        hx = self._ensemble_hofx(ob, members)
        hb = self._ensemble_hofx(ob, {v: control[v][None] for v in self.variables})[0] if control is not None \
            else hx.mean(axis=0)
        d = twin.values.ravel() - hb
        variance = twin.error.ravel() ** 2
        xb = control if control is not None else _mean(members)
        static_i, ensemble_i, localized = self._hybrid_indices
        key = twin.locations.key()
        if getattr(self, "_static_obs_key", None) != key:
            self._static_obs_cov = self._obs_covariance(cost_cfg, {static_i: 1.0, ensemble_i: 0.0}, xb, members,
                                                        twin.values)
            self._static_obs_key = key
        if localized:
            ce = self._obs_covariance(cost_cfg, {static_i: 0.0, ensemble_i: 1.0}, xb, members, twin.values)
            cycle = HybridInnovations(d, variance, self._static_obs_cov, ce, None)
        else:
            cycle = HybridInnovations.from_members(d, variance, self._static_obs_cov, hx - hx.mean(axis=0))
        beta = self.adaptation.update_hybrid_weight(cycle)
        self.adaptation.record_hybrid_weight()
        return self.with_hybrid_weight(cost_cfg, beta)

    def with_hybrid_weight(self, cost_cfg: dict[str, Any], beta: float) -> dict[str, Any]:
        """The cost function with the Hybrid block's weights :math:`(1-\\beta, \\beta)` (static, ensemble)."""
        static_i, ensemble_i, _ = self._hybrid_indices
        cfg = dict(cost_cfg)
        cfg["background error"] = with_hybrid_weights(cfg["background error"], {static_i: 1.0 - beta, ensemble_i: beta})
        return cfg

    def _obs_covariance(self, cost_cfg: dict[str, Any], weights: dict[int, float], background: dict[str, np.ndarray],
                        ensemble: dict[str, np.ndarray], values: np.ndarray) -> np.ndarray:
        r""":math:`\mathbf{HBH}^\mathrm T` ``(p, p)`` of the cycle's B with these Hybrid ``weights``, :math:`\mathbf H`
        linearised about ``background`` (:func:`~pyoops.diagnostics.hbht.hbht_matrix`)."""
        from pyoops.assimilation.costfunction import CostFunction, CostFunctionParameters
        from pyoops.assimilation.driver import FlatLinearisation
        from pyoops.diagnostics.hbht import hbht_matrix

        cfg = dict(cost_cfg)
        cfg["background error"] = with_hybrid_weights(cfg["background error"], weights)
        cost = CostFunction(validate(CostFunctionParameters, cfg, "cost function"), self.registry, self.plugin)
        observers = cost.observers()
        for ob in observers:   # one observer: the cycle's
            for var, row in zip(ob.obs_space.simulated_variables, np.asarray(values)):
                ob.obs_space.put_db("ObsValue", var, row)
        inner = cost.geometry
        cov = cost.covariance(inner, ensemble=FieldSet(ensemble, copy=False))
        date = DateTime(cfg["background"]["date"])
        guess = [self.plugin.state(cost.geometry, FieldSet(c_ordered_copy(background)), date)]
        flat = FlatLinearisation.build(cost, guess, observers, inner, None, cov, 1)
        return hbht_matrix(flat.h, flat.h_ad, flat.b_multiply, flat.lin.innovation.size)

    # Adaptive schemes -------------------------------------------------------------------------------
    def _local_selection(self, twin: TwinObservations) -> Any:
        """The local observations of every grid point (``observations.obs localizations``), cached while the
        network does not move."""
        key = twin.locations.key()
        if getattr(self, "_selection_key", None) != key:
            nv = len(self.obs_variables)
            from pyoops.interface.geometry import Locations

            locs = Locations({c: np.tile(v, nv) for c, v in twin.locations.coords.items()},
                             np.tile(twin.locations.times, nv))
            self._selection = local_obs_selection(self.geometry, locs, list(self.obs.obs_localizations))
            self._selection_key = key
        return self._selection

    def _group_of_obs(self, twin: TwinObservations) -> np.ndarray:
        """Observation group (simulated variable) of every value of the flat observation vector."""
        nv, nlocs = twin.values.shape
        return np.repeat(np.arange(nv), nlocs)

    def _adapt_before(self, twin: TwinObservations, hx: np.ndarray, xb: dict[str, np.ndarray],
                      selection: Any) -> tuple[np.ndarray, np.ndarray]:
        """Inflation field ``(npoints,)`` and R variances ``(p,)`` for this cycle's analysis."""
        a = self.adaptation
        local = a.params.inflation is not None and a.params.inflation.spatial == "local"
        if local and selection is None:
            selection = self._local_selection(twin)
        xp = member_perturbations(xb) if a.needs_state_perturbations() else None
        return a.before_analysis(hx, twin.values.ravel(), twin.error.ravel(), self._group_of_obs(twin),
                                 selection if local else None, xp)

    def _adapt_needs_hxa(self) -> bool:
        return self.adaptation is not None and self.adaptation.needs_analysis_hofx()

    def _adapt_after(self, twin: TwinObservations, hxa: np.ndarray | None, xb: dict[str, np.ndarray],
                     xa: dict[str, np.ndarray]) -> None:
        a = self.adaptation
        sf = sa = None
        if a.params.inflation is not None and a.params.inflation.cap is not None:
            sf, sa = point_spread(xb), point_spread(xa)
        a.after_analysis(None if hxa is None else hxa.mean(axis=0), twin.values.ravel(), twin.error.ravel(),
                         self._group_of_obs(twin), sf, sa)

    def _inflate_members(self, members: dict[str, np.ndarray], lam: np.ndarray) -> dict[str, np.ndarray]:
        """Prior inflation: perturbations about the mean times :math:`\\sqrt{\\lambda_g}` per grid point (``lam`` one
        value per point of the field, or one global value)."""
        out = {}
        for v, a in members.items():
            if lam.size not in (1, a[0].size):
                raise ValueError(f"inflation of {v!r}: {lam.size} values for a field of {a[0].size} points "
                                 "(one per point, or one global value)")
            factor = np.sqrt(lam).reshape(a.shape[1:]) if lam.size == a[0].size else np.sqrt(lam.reshape(-1)[0])
            mean = a.mean(axis=0)
            out[v] = mean + factor * (a - mean)
        return out

    # Stochastic EnKF --------------------------------------------------------------------------------
    def _cycle_enkf(self, k: int, twin: TwinObservations, t_a: dict[str, np.ndarray], state: dict[str, Any],
                    executor: MemberExecutor) -> tuple[dict[str, float], dict[str, Any] | None]:
        a_k = self.analysis_time(k)
        xb = state["members"]
        ob = twin.built_observer
        hx = ob.obs_operator.simulate_obs(ob.geovals(FieldSet(xb, copy=False))).values   # (N, nv, nlocs)
        error = twin.error
        xf = xb
        if self.adaptation is not None:
            lam, variance = self._adapt_before(twin, hx.reshape(hx.shape[0], -1), xb, None)
            error = np.sqrt(variance).reshape(twin.error.shape)
            if self.adaptation.inflation is not None:
                xf = self._inflate_members(xb, lam)
                hx = ob.obs_operator.simulate_obs(ob.geovals(FieldSet(xf, copy=False))).values
        perturbations = np.stack([self.eda.obs_error_inflation * error * eda_stream(
            self.eda.seed, m, "cycle", k).standard_normal(error.shape) for m in range(1, self.nmembers + 1)])
        xa = perturbed_obs_enkf_analysis(xf, hx, twin.values, error ** 2, perturbations)
        xa = inflate_perturbations(xa, xf, self.eda.inflation)
        xa = self._emulate(k, xb, xa)
        if self.adaptation is not None:
            self._adapt_after(twin, self._ensemble_hofx(ob, xa) if self._adapt_needs_hxa() else None, xf, xa)
        innovations = (ensemble_innovations(hx.reshape(hx.shape[0], -1), self._ensemble_hofx(ob, xa))
                       if self.archive else None)
        state["members"], _ = self.forecast_fields(xa, a_k, self.cycling.window_length, (), executor)
        return _filter_statistics(xb, xa, t_a), innovations

    # Variational and EDA ---------------------------------------------------------------------------
    @staticmethod
    def _cycle_observers(twin: TwinObservations, cost_cfg: dict[str, Any], executor: MemberExecutor) -> Any:
        """The cycle's observer for the analyses run in this process (the serial engine) when the cost function
        observes exactly ``twin``'s observations: its file is not read again nor its observer rebuilt."""
        from pyoops.generic.observers import Observers

        if executor.engine != "serial" or cost_cfg.get("observations") != {"observers": [twin.observer]}:
            return None
        return Observers([twin.built_observer])

    def _cycle_variational(self, k: int, twin: TwinObservations, t_a: dict[str, np.ndarray],
                           state: dict[str, Any], executor: MemberExecutor
                           ) -> tuple[dict[str, float], dict[str, Any] | None]:
        w = twin.window
        a_k = self.analysis_time(k)
        s_k = self.background_time(k)
        L = self.cycling.window_length
        gain_path = self.static_gain is not None and executor.engine == "serial"
        cost_cfg = None if gain_path else self.cost_config(k, twin.observer)
        control, members = state["control"], state["members"]
        n = self.nmembers
        if self.adaptation is not None and members is not None:
            inflated = members
            if self.adaptation.inflation is not None:
                # Prior inflation of the members' backgrounds (3-D: valid at a_k, where the observations are).
                ob = twin.built_observer
                hx = self._ensemble_hofx(ob, members)
                lam, _ = self._adapt_before(twin, hx, members, None)
                inflated = self._inflate_members(members, lam)
            self._adapt_after(twin, None, members, inflated)
            members = inflated
            if self.adaptation.hybrid_weight is not None:
                cost_cfg = self._adapt_hybrid_weight(twin, cost_cfg, control, self.ensemble_for_b(k, members))
        # All backgrounds stacked: control first (if any), then the perturbed members.
        labels = ([0] if control is not None else []) + list(range(1, n + 1))
        stack = {}
        for v in self.variables:
            parts = ([control[v][None]] if control is not None else []) + ([members[v]] if members is not None else [])
            stack[v] = np.concatenate(parts)
        # Backgrounds over the window: forecast valid at a_k (statistics), sub-window states (4D-Ens-Var).
        ens_times = [w.begin + d for d in self.increment_times_offsets] if self.cost_type == "4D-Ens-Var" else []
        if self.four_d:
            fc_end, traj = self.forecast_fields(stack, s_k, L, ens_times, executor)
        else:
            fc_end, traj = stack, {}
        backgrounds: dict[int, dict[str, np.ndarray]] = {}
        for i, m in enumerate(labels):
            if ens_times:
                backgrounds[m] = {v: np.stack([traj[t][v][i] for t in ens_times]) for v in self.variables}
            else:
                backgrounds[m] = {v: stack[v][i] for v in self.variables}
        ensemble = None
        if self.uses_members and n:
            ensemble = {v: np.stack([backgrounds[m][v] for m in range(1, n + 1)]) for v in self.variables}
            if not ens_times:
                ensemble = self.ensemble_for_b(k, ensemble)
        # With emulated members only the real ones (1..M) are analysed (all with shadow analyses, for the member
        # archive only); B_e still has all N backgrounds.
        real = labels if self.emulated is None else labels[:self.emulated.real]
        analysed = labels if self.emulated is None or self.emulated.shadow else real
        analyses, innovations = None, None
        if gain_path:
            xa = self.static_gain.analyse(k, twin, backgrounds[0])
            analyses = None if xa is None else {v: xa[v][None] for v in self.variables}
        if analyses is None:
            cost_cfg = cost_cfg or self.cost_config(k, twin.observer)
            setup = EDASetup(self.params.model_plugin, cost_cfg, dict(self.params.variational), backgrounds,
                             [twin.values], ensemble, self.eda.seed if self.params.eda else self.cycling.seed,
                             ("cycle", k), self.eda.perturb_observations, self.eda.obs_error_inflation,
                             record_hofx=self.archive, hbht=self.params.output.background_error_variance
                             if self.archive else None, hbht_member=labels[0], run_token=self.run_token,
                             observers=self._cycle_observers(twin, cost_cfg, executor))
            result = run_eda(setup, analysed, executor)
            innovations = variational_innovations(result.diagnostics, real, control is not None) \
                if self.archive else None
            # Analyses valid at s_k (the end of each member's minimisation), then, for 4-D windows, at a_k.
            analyses = {v: np.stack([result.analyses[m][-1][v] for m in analysed]) for v in self.variables}
        if n:
            first = 1 if control is not None else 0
            hybrid = self._emulate(k, members, {v: analyses[v][first:] for v in self.variables})
            analyses = {v: np.concatenate([analyses[v][:first], hybrid[v]]) for v in self.variables}
        if self.four_d and self.cost_type != "4D-Ens-Var":
            analyses, _ = self.forecast_fields(analyses, s_k, L, (), executor)
        # Posterior inflation of the perturbed members around their mean.
        if n:
            first = 1 if control is not None else 0
            xa = {v: analyses[v][first:] for v in self.variables}
            xb_end = {v: fc_end[v][first:] for v in self.variables}
            xa = inflate_perturbations(xa, xb_end, self.eda.inflation)
            for v in self.variables:
                analyses[v] = np.concatenate([analyses[v][:first], xa[v]]) if first else xa[v]
        stats: dict[str, float] = {}
        i0 = 0 if control is not None else None
        if n:
            first = 1 if control is not None else 0
            ma = {v: analyses[v][first:] for v in self.variables}
            mb = {v: fc_end[v][first:] for v in self.variables}
            stats.update({"analysis mean rmse": rmse(_mean(ma), t_a), "forecast mean rmse": rmse(_mean(mb), t_a),
                          "analysis spread": spread(ma), "forecast spread": spread(mb)})
        if i0 is not None:
            stats["analysis rmse"] = rmse({v: analyses[v][0] for v in self.variables}, t_a)
            stats["forecast rmse"] = rmse({v: fc_end[v][0] for v in self.variables}, t_a)
        else:
            stats["analysis rmse"] = stats["analysis mean rmse"]
            stats["forecast rmse"] = stats["forecast mean rmse"]
        # Next backgrounds.
        if self.four_d:
            nxt = analyses
        else:
            nxt, _ = self.forecast_fields(analyses, a_k, L, (), executor)
        first = 1 if control is not None else 0
        state["control"] = {v: nxt[v][0] for v in self.variables} if control is not None else None
        state["members"] = {v: nxt[v][first:] for v in self.variables} if n else None
        return stats, innovations


def _find_hybrid(config: Any) -> dict[str, Any] | None:
    """The first ``Hybrid`` block of a covariance section (depth first), or None."""
    if isinstance(config, dict):
        if config.get("saber block name") == "Hybrid":
            return config
        values: Any = config.values()
    elif isinstance(config, list):
        values = config
    else:
        return None
    for v in values:
        found = _find_hybrid(v)
        if found is not None:
            return found
    return None


def hybrid_component_indices(background_error: Any) -> tuple[int, int, bool]:
    """``(static, ensemble, localized)``: the components of the Hybrid block (exactly two, one with an Ensemble
    block fed by the members) and whether the ensemble one has a localization."""
    hybrid = _find_hybrid(background_error)
    comps = (hybrid or {}).get("components") or []
    needs = [covariance_needs_ensemble(c.get("covariance")) for c in comps]
    if len(comps) != 2 or sum(needs) != 1:
        raise ConfigError("the adaptive hybrid weight needs a Hybrid block of two components, a static one and an "
                          "Ensemble one fed by the members", "cost function.background error")
    ensemble = needs.index(True)
    return 1 - ensemble, ensemble, '"localization"' in json.dumps(comps[ensemble]["covariance"])


def with_hybrid_weights(background_error: dict[str, Any], weights: dict[int, float]) -> dict[str, Any]:
    """A deep copy of the covariance section with the Hybrid block's component ``i`` weight value set to
    ``weights[i]`` (a weight field, if any, is kept and multiplied)."""
    import copy

    out = copy.deepcopy(background_error)
    hybrid = _find_hybrid(out)
    for i, w in weights.items():
        comp = hybrid["components"][i]
        comp["weight"] = {**dict(comp.get("weight") or {}), "value": float(w)}
    return out


def _filter_statistics(xb: dict[str, np.ndarray], xa: dict[str, np.ndarray], t_a: dict[str, np.ndarray]
                       ) -> dict[str, float]:
    """Statistics of an ensemble filter (LETKF, EnKF): the analysis is the ensemble mean."""
    mean_b, mean_a = _mean(xb), _mean(xa)
    return {"analysis rmse": rmse(mean_a, t_a), "forecast rmse": rmse(mean_b, t_a),
            "analysis mean rmse": rmse(mean_a, t_a), "forecast mean rmse": rmse(mean_b, t_a),
            "analysis spread": spread(xa), "forecast spread": spread(xb)}


class _Archive:
    """The innovation archive of a run: an :class:`InnovationArchiveWriter`, created at the first
    cycle (its coordinates are those of the observations) or resumed from ``state["innovations"]``
    (the writer's :meth:`checkpoint_state` and the coordinate names, saved with the checkpoint)."""

    def __init__(self, experiment: "CycleExperiment", filename: Path, state: dict[str, Any]) -> None:
        self.experiment = experiment
        self.filename = filename
        self.writer: Any = None
        saved = state.get("innovations")
        if saved is not None:
            self._open(saved["coordinates"])
            self.writer.resume(saved["writer"])

    def _open(self, coordinates: list[str]) -> None:
        from pyoops.diagnostics.archive import InnovationArchiveWriter

        e = self.experiment
        self.coordinates = list(coordinates)
        self.writer = InnovationArchiveWriter(
            self.filename, self.coordinates, e.nmembers, geometry=e.geometry, application="cycle",
            method=e.method, attributes={"background_error_variance": e.background_variance_rule()},
            regions=e.regions)

    def append(self, k: int, record: dict[str, Any], state: dict[str, Any]) -> None:
        if self.writer is None:
            self._open(sorted(record["coordinates"]))
        self.writer.append_cycle(k, self.experiment.analysis_time(k), **record)
        state["innovations"] = {"coordinates": self.coordinates, "writer": self.writer.checkpoint_state()}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def abandon(self) -> None:
        if self.writer is not None:
            self.writer.__exit__(RuntimeError, None, None)


class _MemberArchive:
    """The member archive of a run: a :class:`~pyoops.ensemble.member_archive.MemberArchiveWriter` of the
    members' backgrounds at each cycle's background time, resumed from ``state["member archive"]``."""

    def __init__(self, experiment: "CycleExperiment", filename: Path, state: dict[str, Any]) -> None:
        from pyoops.ensemble.member_archive import MemberArchiveWriter

        self.experiment = experiment
        self.writer = MemberArchiveWriter(filename, experiment.geometry, experiment.variables, experiment.nmembers,
                                          application="cycle", method=experiment.method,
                                          analyses=experiment.member_archive_analyses)
        if state.get("member archive") is not None:
            self.writer.resume(state["member archive"])

    def append(self, k: int, members: dict[str, np.ndarray], state: dict[str, Any],
               analyses: dict[str, np.ndarray] | None = None) -> None:
        self.writer.append_cycle(k, self.experiment.background_time(k), members, analyses)
        state["member archive"] = self.writer.checkpoint_state()

    def close(self) -> None:
        self.writer.close()

    def abandon(self) -> None:
        self.writer.__exit__(RuntimeError, None, None)


def _time_label(t: DateTime) -> "int | str":
    """The random-stream label of an observation time: its seconds since 1970 (a string before 1970,
    since stream labels must not be negative)."""
    seconds = int(round(t.seconds_since_epoch()))
    return seconds if seconds >= 0 else f"seconds {seconds}"


# Checkpoints -------------------------------------------------------------------------------------
class _CheckpointPolicy:
    """When a run writes its checkpoint.

    ``every`` cycles (and after the last), or, without ``every``, by wall time: after the first
    cycle of the run, after the last, and after any cycle that ends ``seconds`` or more after the
    last write.  In the wall-time mode the checkpoint of every completed cycle is also kept in
    memory (:attr:`keeps_pending`), so that a cycle that fails or is interrupted leaves the
    checkpoint of the cycle before it, as writing after every cycle would; only a kill (SIGKILL,
    a node failure) loses the cycles of up to ``seconds`` since the last write, which a resumed
    run recomputes bitwise.
    """

    def __init__(self, every: int | None, seconds: float, first: int, last: int) -> None:
        self.every, self.seconds, self.first, self.last = every, seconds, first, last
        self.keeps_pending = every is None
        self._written_at = _time.perf_counter()

    def due(self, k: int) -> bool:
        """Whether the checkpoint is written after cycle ``k`` (0-based)."""
        if k + 1 == self.last:
            return True
        if self.every is not None:
            return (k + 1) % self.every == 0
        return k == self.first or _time.perf_counter() - self._written_at >= self.seconds

    def written(self) -> None:
        self._written_at = _time.perf_counter()


def save_checkpoint(filename: "str | Path", state: dict[str, Any], digest: str) -> None:
    """Write the current experiment state atomically (``.npz``): :func:`write_checkpoint` of
    :func:`checkpoint_arrays`."""
    write_checkpoint(filename, checkpoint_arrays(state, digest, copy=False))


def checkpoint_arrays(state: dict[str, Any], digest: str, copy: bool = True) -> dict[str, np.ndarray]:
    """The checkpoint of the current experiment state: the arrays of its ``.npz`` file (copies, so that it
    can be kept while the run goes on; ``copy=False`` for one written at once).

    Only what the next cycle needs is written — the truth, the backgrounds, the adaptive schemes'
    arrays, the counters and the logs' positions (``state["statistics log"]``, the archives'
    states, in the JSON array ``meta``) — so the cost does not grow with the run length: the
    per-cycle series of ``state["stats"]``, ``state["seconds"]`` and the adaptive series are in
    the cycle log.
    """
    take = np.array if copy else np.asarray
    arrays: dict[str, np.ndarray] = {}
    meta = {"version": CHECKPOINT_VERSION, "digest": digest, "cycle": int(state["cycle"]),
            "truth time": state["truth time"], "statistics log": state.get("statistics log"),
            "innovations": state.get("innovations"), "member archive": state.get("member archive")}
    for group in ("truth", "control", "members"):
        fields = state.get(group)
        meta[group] = None if fields is None else list(fields)
        for v, a in (fields or {}).items():
            arrays[f"{group}/{v}"] = take(a)
    adaptive = state.get("adaptive")
    meta["adaptive"] = None if adaptive is None else sorted(adaptive)
    for key, a in (adaptive or {}).items():
        arrays[f"adaptive/{key}"] = take(a, dtype=np.float64)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return arrays


def write_checkpoint(filename: "str | Path", arrays: dict[str, np.ndarray]) -> None:
    """Write the arrays of :func:`checkpoint_arrays` to ``filename`` atomically (a temporary renamed into
    place), committed at once, not at the end of the run: the checkpoint is what a killed run resumes from."""
    # Zipped in memory and written in one call: np.savez on a file seeks and writes per member.
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with atomic_output(filename, ".npz", commit="now") as tmp:
        with open(tmp, "wb") as fh:
            fh.write(buffer.getbuffer())


def load_checkpoint(filename: "str | Path", digest: str | None = None, series: bool = True) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (checking the configuration digest).

    With ``series`` (the default) the per-cycle series are read from the cycle log next to the
    checkpoint, as committed at the checkpoint (read-only: a killed run's later rows are ignored):
    ``state["stats"]``, ``state["seconds"]`` and, with adaptive schemes, ``state["adaptive series"]``
    hold one value per completed cycle.  Without, they are left for :meth:`~pyoops.ensemble.cycle_log.CycleLog.resume`.

    Raises
    ------
    InputFileError
        The checkpoint is unreadable or of another version (one line), or its cycle log is missing or
        does not match it.
    """
    try:
        # Its own restart file, replaced by design: read without recording it as an input of the run.
        with np.load(readable_path(filename), allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            arrays = {k: np.array(data[k]) for k in data.files if k != "meta"}
    except (OSError, ValueError, KeyError) as exc:
        raise InputFileError(str(filename), f"is not a readable cycling checkpoint ({exc})") from None
    if meta.get("version") != CHECKPOINT_VERSION:
        raise InputFileError(str(filename), f"checkpoint version {meta.get('version')}, expected {CHECKPOINT_VERSION} "
                                            "(written by another pyoops version); set 'resume: false' or use another "
                                            "output directory")
    if digest is not None and meta["digest"] != digest:
        raise ConfigError(f"the checkpoint {filename} was written by a different configuration; delete it, "
                          "use another output directory, or set 'resume: false'", "output.directory")
    state: dict[str, Any] = {"cycle": meta["cycle"], "truth time": meta["truth time"],
                             "statistics log": meta.get("statistics log"),
                             "innovations": meta.get("innovations"), "member archive": meta.get("member archive")}
    for group in ("truth", "control", "members"):
        names = meta.get(group)
        state[group] = None if names is None else {v: arrays[f"{group}/{v}"] for v in names}
    keys = meta.get("adaptive")
    state["adaptive"] = None if keys is None else {key: arrays[f"adaptive/{key}"] for key in keys}
    if series:
        state.update(_state_series(read_cycle_log(Path(filename).parent / STATISTICS_NAME, state["statistics log"])))
        if state["adaptive"] is None:
            state.pop("adaptive series")
    return state


def _state_series(columns: dict[str, np.ndarray]) -> dict[str, Any]:
    """``stats``, ``seconds`` and ``adaptive series`` (lists of floats, as a run accumulates them) from the
    cycle log's columns."""
    n = len(ADAPTIVE_COLUMN)
    return {"stats": {name: list(columns[name]) for name in STATISTICS}, "seconds": list(columns["seconds"]),
            "adaptive series": {k[n:]: v for k, v in columns.items() if k.startswith(ADAPTIVE_COLUMN)}}


# Outputs ---------------------------------------------------------------------------------------
def time_means(state: dict[str, Any], skip: int) -> dict[str, float]:
    """Means over cycles ``skip..`` of each statistic (NaN statistics are left out)."""
    out = {}
    for name in STATISTICS:
        series = np.asarray(state["stats"][name], dtype=np.float64)[skip:]
        if series.size and np.isfinite(series).any():
            out[name] = float(np.mean(series))
    return out


def plot_statistics(times: list[DateTime], state: dict[str, Any], skip: int, directory: Path, title: str
                    ) -> list[str]:
    """``rmse.png`` (RMSE and spread against time) and ``spread_error.png`` (spread against error)."""
    plt = pyplot()
    stats = {k: np.asarray(v, dtype=float) for k, v in state["stats"].items()}
    x = np.arange(1, len(stats["analysis rmse"]) + 1)
    out = []
    fig, ax = plt.subplots(figsize=(10, 4), constrained_layout=True)
    ax.plot(x, stats["forecast rmse"], "C3-", lw=0.8, label="forecast RMSE")
    ax.plot(x, stats["analysis rmse"], "C0-", lw=0.8, label="analysis RMSE")
    if np.isfinite(stats["analysis spread"]).any():
        ax.plot(x, stats["analysis spread"], "C2--", lw=0.8, label="analysis spread")
        if not np.allclose(stats["analysis mean rmse"], stats["analysis rmse"], equal_nan=True):
            ax.plot(x, stats["analysis mean rmse"], "C1-", lw=0.8, label="ensemble-mean analysis RMSE")
    if skip:
        ax.axvspan(0.5, skip + 0.5, color="0.9", label="spin-up cycles")
    ax.set_yscale("log")
    ax.set_xlabel("cycle")
    ax.set_ylabel("RMSE against the truth")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    out.append(save_figure(fig, directory / "rmse.png"))
    # The spread-error scatter of the cycles after the spin-up (none yet in a run shorter than its spin-up).
    if np.isfinite(stats["analysis spread"][skip:]).any():
        fig, ax = plt.subplots(figsize=(5, 5), constrained_layout=True)
        for kind, color in (("forecast", "C3"), ("analysis", "C0")):
            ax.scatter(stats[f"{kind} spread"][skip:], stats[f"{kind} mean rmse"][skip:], s=4, c=color, alpha=0.5,
                       label=kind)
        lim = np.nanmax([np.nanmax(stats["forecast spread"][skip:]), np.nanmax(stats["forecast mean rmse"][skip:])])
        ax.plot([0, lim], [0, lim], "k-", lw=0.8)
        ax.set_xlabel("ensemble spread")
        ax.set_ylabel("RMSE of the ensemble mean")
        ax.set_title(f"spread and error, {title}")
        ax.legend()
        out.append(save_figure(fig, directory / "spread_error.png"))
    return out


def write_statistics(directory: Path, experiment: CycleExperiment, state: dict[str, Any]) -> list[str]:
    """``statistics.nc`` (time series) and ``statistics.json`` (time means and settings)."""
    import netCDF4

    ncycles = state["cycle"]
    times = [experiment.analysis_time(k) for k in range(ncycles)]
    skip = min(experiment.cycling.spin_up_cycles, ncycles)
    nc_name = directory / STATISTICS_NAME
    with atomic_output(nc_name, ".nc") as tmp:
        # An absolute name: the netCDF library mishandles relative names with leading blanks (' out/...').
        with netCDF4.Dataset(os.path.abspath(tmp), "w") as ds:
            ds.method = experiment.method
            ds.spin_up_cycles = skip
            ds.createDimension("cycle", ncycles)
            t = ds.createVariable("time", "i8", ("cycle",))
            t.units = "seconds since 1970-01-01T00:00:00Z"
            t[:] = np.array([round(x.seconds_since_epoch()) for x in times], dtype=np.int64)
            for name in STATISTICS:
                var = ds.createVariable(name.replace(" ", "_"), "f8", ("cycle",))
                var.long_name = name
                var[:] = np.asarray(state["stats"][name], dtype=np.float64)
            ds.createVariable("seconds", "f8", ("cycle",))[:] = np.asarray(state["seconds"], dtype=np.float64)
    means = time_means(state, skip)
    summary = {"method": experiment.method, "cycles": ncycles, "spin-up cycles": skip,
               "members": experiment.nmembers or None,
               "first analysis time": str(times[0]) if times else None,
               "last analysis time": str(times[-1]) if times else None,
               "time means": means,
               "seconds per cycle": float(np.mean(state["seconds"])) if state["seconds"] else None}
    json_name = directory / "statistics.json"
    with atomic_output(json_name, ".json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
    return [str(nc_name), str(json_name)]
