"""``pyoops letkf``: local ensemble DA (LETKF, GETKF) from OOPS LocalEnsembleDA-style YAML.

The maths is in :mod:`pyoops.assimilation.letkf`; this module reads the members and
the observations, computes :math:`\\mathcal{H}(x_k)` and writes the analysis.

3-D (no ``model``): every observation in the window is compared with the members at
their valid time, which is the analysis time.  4-D (``model`` given): the members
are valid at the window begin and are forecast through the window in one batched
run, :math:`\\mathcal{H}(x_k)` being collected at the observation times as
``pyoops hofx`` does in 4-D.  The ensemble weights of the 4D-LETKF
(Hunt et al. 2007, section 2.4) do not depend on time, so they are applied to the
background trajectory wherever an analysis is wanted (``analysis times``, default
the window end) and to every step of a second batched run, which gives
:math:`\\mathcal{H}(x^a_k)` at the observation times.

Outputs: the analysis members (``output``, with ``%mem%`` and ``%date%``), their
mean (``output mean``) and standard deviation (``output spread``), and, in each
observer's ``obsdataout``, the groups ``hofx0``/``hofx1`` (ensemble mean of
:math:`\\mathcal{H}(x)` before/after), ``ombg``/``oman`` (:math:`y` minus those),
``hofx0_variance``/``hofx1_variance`` (ensemble variance of :math:`\\mathcal{H}(x)`
before/after, :math:`N - 1` normalisation) and ``EffectiveError``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from pyoops.apps.base import (
    Application,
    ApplicationParameters,
    check_state_in_window,
    specialise,
    union_of_parameters,
)
from pyoops.apps.ensemble_forecast import (
    member_count,
    member_labels,
    read_members,
    validate_ensemble_source,
    write_ensemble,
)
from pyoops.assimilation.adaptive_inflation import (
    AdaptiveInflation,
    AdaptiveInflationParameters,
    ObsSpaceEnsemble,
    member_perturbations,
    point_spread,
    read_inflation_file,
    write_inflation_file,
)
from pyoops.assimilation.letkf import (
    EnsembleWeights,
    LocalEnsembleDAParameters,
    ObsLocalization,
    apply_weights,
    getkf_weights,
    letkf_weights,
    local_obs_selection,
    modulate,
    modulation_modes,
)
from pyoops.config.parameters import DateTimeField, Parameters, TimeWindowParameters, VariableName, validate
from pyoops.config.yaml_io import require_mapping
from pyoops.diagnostics.regions import ArchiveRegions, archive_regions
from pyoops.fields.fieldset import FieldSet
from pyoops.generic.ensemble import EnsembleSourceParameters
from pyoops.generic.forecast import PostProcessor, forecast, number_of_steps
from pyoops.generic.observers import (
    HofX4DPost,
    ObservationsParameters,
    ObserverParameters,
    Observers,
    validate_observations,
)
from pyoops.interface.geometry import Locations
from pyoops.registry import ModelPlugin
from pyoops.util.datetime import DateTime, Duration, TimeWindow
from pyoops.util.errors import ConfigError
from pyoops.util.resources import require_memory
from pyoops.util.sizes import check_generated_observations, check_output_files, state_bytes
from pyoops.util.variables import Variables

__all__ = [
    "LocalEnsembleDAApplication",
    "LocalEnsembleDAAppParameters",
    "LocalObservationsParameters",
    "LocalObserverParameters",
    "ObsNetwork",
]

logger = logging.getLogger("pyoops")


class LocalObserverParameters(ObserverParameters):
    """An observer of ``observations.observers`` with its ``obs localizations``."""

    obs_localizations: list[ObsLocalization] = Field(
        default_factory=list, description="Horizontal localizations (they multiply); none: no localization.")


class LocalObservationsParameters(ObservationsParameters):
    observers: list[LocalObserverParameters] = Field(min_length=1, description="One entry per observation type.")


class _File(Parameters):
    filename: str = Field(description="Output file; %mem% and %date% are replaced.")


class _ArchiveFile(Parameters):
    filename: str = Field(description="The innovation archive (netCDF, see the diagnostics page).")
    regions: ArchiveRegions


class AdaptiveInflationFileParameters(AdaptiveInflationParameters):
    """``adaptive inflation`` of ``pyoops letkf``: a scheme of :mod:`pyoops.assimilation.adaptive_inflation` whose
    state goes from one analysis to the next through inflation files (as DART's)."""

    input_file: str | None = Field(None, alias="input file",
                                   description="Inflation file of the previous analysis (none: start from 'initial').")
    output_file: str = Field(alias="output file", description="Inflation file written by this analysis.")


class LocalEnsembleDAAppParameters(ApplicationParameters):
    """``pyoops letkf`` configuration (OOPS LocalEnsembleDA)."""

    geometry: dict[str, Any] = Field(description="Geometry of the model plugin.")
    time_window: TimeWindowParameters = Field(description="Assimilation window.")
    background: EnsembleSourceParameters = Field(
        description="Background members ('members from template', 'members' or an ensemble 'filename'); their "
                    "date is the analysis time (3-D) or the window begin (4-D).")
    variables: list[VariableName] | None = Field(
        None, min_length=1, description="Analysed variables (default: the geometry's).")
    model: dict[str, Any] | None = Field(None, description="4-D: the model that runs the members through the window.")
    analysis_times: list[DateTimeField] | None = Field(
        None, description="4-D: times of the analyses written (default: the window end).")
    observations: dict[str, Any] = Field(
        description="{observers: [{obs space, obs operator, obs error, obs localizations}, ...]}.")
    local_ensemble_da: LocalEnsembleDAParameters = Field(
        default_factory=LocalEnsembleDAParameters, alias="local ensemble DA",
        description="Solver (LETKF | GETKF) and inflation.")
    output: _File | None = Field(None, description="Analysis members (%mem%; %date% with several analysis times).")
    output_mean: _File | None = Field(None, description="Analysis ensemble mean.")
    output_spread: _File | None = Field(None, description="Analysis ensemble standard deviation.")
    adaptive_inflation: AdaptiveInflationFileParameters | None = Field(
        None, alias="adaptive inflation",
        description="Adaptive prior inflation updated from this analysis's innovations (state in files).")
    output_archive: _ArchiveFile | None = Field(
        None, description="Innovation archive (netCDF): y, sigma_o, ensemble-mean H(x_b) and H(x_a), ensemble "
                          "variance of H(x_b), H(x_b) perturbations.")


def validate_local_observations(config: Any, registry: Any, path: str) -> LocalObservationsParameters:
    """Validate an ``observations`` section whose observers may have ``obs localizations``."""
    params = validate(LocalObservationsParameters, config, path)
    cfg = require_mapping(config, path)
    stripped = dict(cfg)
    stripped["observers"] = [{k: v for k, v in o.items() if k != "obs localizations"} if isinstance(o, dict) else o
                             for o in cfg.get("observers", [])]
    validate_observations(stripped, registry, path)
    return params


@dataclass
class ObsNetwork:
    """The observers' values flattened into one observation vector (variable-major per observer)."""

    observers: Any
    y: np.ndarray
    variance: np.ndarray
    locations: list[Locations]
    localizations: list[list[ObsLocalization]]
    sizes: list[tuple[int, int]]

    @classmethod
    def from_observers(cls, observers: Any, params: LocalObservationsParameters) -> ObsNetwork:
        ys, variances, locs, sizes = [], [], [], []
        for ob in observers:
            space = ob.obs_space
            nv, nl = len(space.simulated_variables), space.nlocs
            ys.append(space.obs_values().values.reshape(-1))
            variances.append(ob.obs_error.obserrors().values.reshape(-1) ** 2)
            locs.append(Locations({k: np.tile(v, nv) for k, v in space.locations.coords.items()},
                                  np.tile(space.locations.times, nv)))
            sizes.append((nv, nl))
        return cls(observers, np.concatenate(ys), np.concatenate(variances), locs,
                   [list(p.obs_localizations) for p in params.observers], sizes)

    def flatten(self, hofx: list[Any]) -> np.ndarray:
        """``(..., p)`` from one ObsVector (or values array) per observer."""
        parts = [np.asarray(getattr(h, "values", h)) for h in hofx]
        return np.concatenate([a.reshape(a.shape[:-2] + (-1,)) for a in parts], axis=-1)


class _ModulatedView(PostProcessor):
    """Feeds the modulated members :math:`\\bar x + v_j \\circ x'_k` of each state to another post-processor."""

    def __init__(self, inner: PostProcessor, modes: np.ndarray, state_class: Any):
        self.inner, self.modes, self.state_class = inner, modes, state_class

    def _view(self, state: Any) -> Any:
        return self.state_class(state.geometry, modulate(state.fields, self.modes), state.time)

    def initialize(self, state: Any, end: DateTime, step: Duration) -> None:
        self.inner.initialize(self._view(state), end, step)

    def process(self, state: Any) -> None:
        self.inner.process(self._view(state))

    def finalize(self, state: Any) -> None:
        self.inner.finalize(self._view(state))


class _AnalysisTrajectory(PostProcessor):
    """Applies the (time-independent) 4D-LETKF weights at every step: H(x_a) and the analyses."""

    def __init__(self, weights: EnsembleWeights, modes: Any, inflation: Any, hofx: HofX4DPost,
                 times: list[DateTime], state_class: Any):
        self.weights, self.modes, self.inflation = weights, modes, inflation
        self.hofx, self.times, self.state_class = hofx, times, state_class
        self.analyses: dict[DateTime, Any] = {}

    def _analysis(self, state: Any) -> Any:
        fields = apply_weights(self.weights, state.fields, self.modes, self.inflation.rtpp, self.inflation.rtps,
                               self.inflation.posterior_mult)
        return self.state_class(state.geometry, fields, state.time)

    def initialize(self, state: Any, end: DateTime, step: Duration) -> None:
        self._last = self._analysis(state)
        self.hofx.initialize(self._last, end, step)

    def process(self, state: Any) -> None:
        self._last = self._analysis(state)
        self.hofx.process(self._last)
        if state.time in self.times:
            self.analyses[state.time] = self._last

    def finalize(self, state: Any) -> None:
        self.hofx.finalize(self._last)


class LocalEnsembleDAApplication(Application):
    """LETKF / GETKF analysis of an ensemble (OOPS LocalEnsembleDA)."""

    name = "letkf"
    summary = "local ensemble DA: LETKF or GETKF analysis of an ensemble (3-D or 4-D H(x))"
    Parameters = LocalEnsembleDAAppParameters

    # Validation -----------------------------------------------------------------------------
    def validate_plugins(self, params: LocalEnsembleDAAppParameters) -> None:
        geometry = self.geometry(params.geometry)
        self._geometry = geometry
        self._regions = archive_regions(params.output_archive, geometry)
        self._variables = Variables(params.variables or geometry.variables)
        unknown = self._variables - geometry.variables
        if unknown:
            raise ConfigError(f"unknown variable(s) {unknown} (geometry has {geometry.variables})", "variables")
        self._date = validate_ensemble_source(params.background, "background", geometry, self._variables)
        window = params.time_window.window()
        self._obs_params = validate_local_observations(params.observations, self.registry, "observations")
        check_generated_observations(self._obs_params, window, "observations")
        if params.model is None:
            if params.analysis_times is not None:
                raise ConfigError("only with 'model' (4-D); in 3-D the analysis is at the background date",
                                  "analysis times")
            check_state_in_window(self._date, window, "background")
            self._model = None
            self._times = [self._date]
        else:
            if self._date != window.begin:
                raise ConfigError(f"4-D: the background members must be valid at the window begin {window.begin}, "
                                  f"got {self._date}", "background")
            self._model = self.make("model", params.model, "model", geometry)
            try:
                number_of_steps(window.length, self._model.time_resolution, "window length")
            except ConfigError as exc:
                raise ConfigError(exc.message, "time window.length") from None
            self._times = sorted(set(params.analysis_times or [window.end]))
            for t in self._times:
                if not window.begin <= t <= window.end:
                    raise ConfigError(f"{t} is outside the time window {window}", "analysis times")
                if (t - window.begin) % self._model.time_resolution:
                    raise ConfigError(f"{t} is not a model time (time step {self._model.time_resolution})",
                                      "analysis times")
        if len(self._times) > 1:
            for key in ("output", "output_mean", "output_spread"):
                option = getattr(params, key)
                if option is not None and "%date%" not in option.filename:
                    raise ConfigError("must contain %date%: there are several analysis times",
                                      f"{key.replace('_', ' ')}.filename")
        self._check_outputs(params, geometry)
        ai = params.adaptive_inflation
        if ai is not None and ai.scheme == "enkf-n" and params.local_ensemble_da.solver != "LETKF":
            raise ConfigError("enkf-n is the inflation of the ETKF/LETKF transform; use another scheme with the "
                              "GETKF", "adaptive inflation.scheme")
        self._modes = None
        modulation = params.local_ensemble_da.modulation
        if modulation is not None:
            axes, mod = modulation
            path = f"local ensemble DA.{axes} localization"
            npoints = geometry.grid_locations().nlocs
            if axes == "horizontal":
                # The dense localization matrix between all grid points, its eigenvectors and a copy.
                require_memory(3 * 8.0 * npoints**2, f"a horizontal modulation localization on {npoints} grid "
                               f"points (dense {npoints} x {npoints} matrices)", path)
            try:
                self._modes = modulation_modes(geometry, mod, axes)
            except ConfigError as exc:
                raise ConfigError(exc.message, path) from None
            if mod.number_of_modes is not None and self._modes.shape[1] < mod.number_of_modes:
                raise ConfigError(f"at most {self._modes.shape[1]} modes on this grid (the size of the "
                                  f"localization matrix), got {mod.number_of_modes}", f"{path}.number of modes")
            n = member_count(params.background)
            if n is not None:
                nmodes = self._modes.shape[1]
                require_memory(3 * n * nmodes * state_bytes(geometry, self._variables),
                               f"{n} members modulated by {nmodes} modes ({n * nmodes} modulated members)", path)

    def _adaptive_inflation(self, params: AdaptiveInflationFileParameters, selection: Any, hb: np.ndarray,
                            net: Any, fields: Any) -> AdaptiveInflation:
        """The scheme, restored from its input file, updated from this analysis's background innovations."""
        scheme = AdaptiveInflation(params, selection.npoints)
        if params.input_file is not None:
            read_inflation_file(params.input_file, scheme, "adaptive inflation.input file")
        xp = member_perturbations(fields) if params.needs_state_perturbations else None
        ens, _ = ObsSpaceEnsemble.from_hofx(hb, net.y, net.variance, selection.npoints,
                                            selection if params.spatial == "local" else None, xp)
        scheme.update(ens)
        return scheme

    def _check_outputs(self, params: LocalEnsembleDAAppParameters, geometry: Any) -> None:
        """The number and size of the files the analysis writes (members x analysis times)."""
        n = member_count(params.background)
        one = state_bytes(geometry, self._variables)
        for key in ("output", "output_mean", "output_spread"):
            option = getattr(params, key)
            if option is None:
                continue
            per_member = key == "output" and "%mem%" in option.filename
            files = len(self._times) * ((n or 1) if per_member else 1)
            size = one * (n or 1) if key == "output" and not per_member else one
            check_output_files(files, size, option.filename, f"{key.replace('_', ' ')}.filename")

    # Running ----------------------------------------------------------------------------------
    def run(self, params: LocalEnsembleDAAppParameters) -> dict[str, Any]:
        da = params.local_ensemble_da
        window: TimeWindow = params.time_window.window()
        geometry, modes = self._geometry, self._modes
        fields = read_members(params.background, geometry, self._variables, self._date, "background")
        n = next(iter(fields.values())).shape[0]
        labels = member_labels(params.background, n)
        state_class = self.plugin.state
        background = state_class(geometry, fields, self._date)
        observers = Observers.from_config(self._obs_params, window, geometry, self.registry)
        net = ObsNetwork.from_observers(observers, self._obs_params)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        selection = local_obs_selection(geometry, net.locations, net.localizations)
        timings["selection seconds"] = time.perf_counter() - t0

        # H(x) of the background members (and of the modulated members for GETKF).
        t0 = time.perf_counter()
        hofx_z = None
        if self._model is None:
            hofx_b = observers.hofx_3d(background.fields)
            if modes is not None:
                hofx_z = observers.hofx_3d(modulate(background.fields, modes))
        else:
            post = observers.post_processor()
            posts: list[PostProcessor] = [post]
            mpost = None
            if modes is not None:
                mpost = observers.post_processor()
                posts.append(_ModulatedView(mpost, modes, state_class))
            forecast(self._model, background.copy(), window.length, posts)
            hofx_b = post.hofx()
            if mpost is not None:
                hofx_z = mpost.hofx()
        timings["background H(x) seconds"] = time.perf_counter() - t0
        hb = net.flatten(hofx_b)

        t0 = time.perf_counter()
        mult: float | np.ndarray = da.inflation.mult
        adaptive = None
        if params.adaptive_inflation is not None:
            adaptive = self._adaptive_inflation(params.adaptive_inflation, selection, hb, net, background.fields)
            mult = da.inflation.mult * adaptive.field()
        if da.solver == "LETKF":
            weights = letkf_weights(selection, hb, net.y, net.variance, mult)
        else:
            hz = net.flatten(hofx_z).reshape(n, modes.shape[1], -1)
            weights = getkf_weights(selection, hb, hz, net.y, net.variance, mult)
        timings["weights seconds"] = time.perf_counter() - t0

        # The analysis (and H(x_a)).
        t0 = time.perf_counter()
        if self._model is None:
            xa = apply_weights(weights, background.fields, modes, da.inflation.rtpp, da.inflation.rtps,
                               da.inflation.posterior_mult)
            analyses = {self._date: state_class(geometry, FieldSet(xa, copy=False), self._date)}
            hofx_a = observers.hofx_3d(analyses[self._date].fields)
        else:
            post = observers.post_processor()
            traj = _AnalysisTrajectory(weights, modes, da.inflation, post, self._times, state_class)
            forecast(self._model, background.copy(), window.length, [traj])
            analyses = traj.analyses
            hofx_a = post.hofx()
        timings["analysis seconds"] = time.perf_counter() - t0

        outputs: list[str] = []
        if adaptive is not None:
            if self._model is None:
                adaptive.record_spread_ratio(point_spread(background.fields), point_spread(analyses[self._date].fields))
            outputs.append(write_inflation_file(params.adaptive_inflation.output_file, adaptive))
        if params.output_archive is not None:
            outputs.append(self._write_archive(params.output_archive.filename, observers, hb, net.flatten(hofx_a),
                                               da.solver, da.inflation.mult))
        for t in self._times:
            xa_state = analyses[t]
            for option, what in ((params.output, "members"), (params.output_mean, "mean"),
                                 (params.output_spread, "spread")):
                if option is not None:
                    outputs.extend(write_ensemble(xa_state, option.filename.replace("%date%", str(t)), what,
                                                  labels))
        stats = self._obs_statistics(observers, hofx_b, hofx_a, outputs)
        active = weights.active[weights.point_row]
        summary = {
            "solver": da.solver,
            "members": n,
            "modes": None if modes is None else int(modes.shape[1]),
            "analysis times": [str(t) for t in self._times],
            "observers": stats,
            "grid points with observations": int(active.sum()),
            "grid points": int(active.size),
            "local observations max": int(selection.counts().max()) if selection.npoints else 0,
            "background spread": _spread(background.fields),
            "analysis spread": _spread(analyses[self._times[-1]].fields),
            "outputs": outputs,
            "timings": timings,
            **({} if adaptive is None else {"inflation mean": float(adaptive.field().mean()),
                                            "inflation max": float(adaptive.field().max())}),
            "analysis": analyses[self._times[-1]],
            "analyses": analyses,
        }
        for name, s in stats.items():
            logger.info("%s: %d obs, ombg rms %.6g, oman rms %.6g, H(x) spread %.6g -> %.6g", name, s["nobs"],
                        s["ombg rms"], s["oman rms"], s["hofx0 spread"], s["hofx1 spread"])
        return summary

    def _write_archive(self, filename: str, observers: Any, hxb: np.ndarray, hxa: np.ndarray, solver: str,
                       prior_inflation: float) -> str:
        r"""The innovation archive of this analysis (cycle 0 at the last analysis time): for the used
        observations, the members' mean :math:`H(x)` before and after, the ensemble variance of
        :math:`H(x^b_k)` (:math:`N-1`) times the prior inflation ``mult`` as the assumed background
        variance, and the perturbations (inflated alike)."""
        from pyoops.diagnostics.archive import InnovationArchiveWriter
        from pyoops.diagnostics.collect import ensemble_innovations, observer_records, select

        record, used = observer_records(observers)
        record.update(ensemble_innovations(hxb, hxa, prior_inflation))
        with InnovationArchiveWriter(filename, list(self._geometry.location_names), hxb.shape[0],
                                     geometry=self._geometry, application="letkf", method=solver,
                                     resumable=False, regions=self._regions) as writer:
            writer.append_cycle(0, self._times[-1], **select(record, used))
        return filename

    def _obs_statistics(self, observers: Any, hofx_b: list[Any], hofx_a: list[Any],
                        outputs: list[str]) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        for ob, hb, ha in zip(observers, hofx_b, hofx_a):
            space = ob.obs_space
            y = space.obs_values()
            mask = space.qc_mask()
            groups = {}
            for tag, h in (("0", hb), ("1", ha)):
                values = np.asarray(h.values)
                groups[f"hofx{tag}"] = values.mean(axis=0)
                groups[f"hofx{tag}_variance"] = values.var(axis=0, ddof=1)
            groups["ombg"] = y.values - groups["hofx0"]
            groups["oman"] = y.values - groups["hofx1"]
            for group, values in groups.items():
                for var, row in zip(space.simulated_variables, values):
                    space.put_db(group, var, row)
            ob.obs_error.obserrors().save("EffectiveError")
            nobs = int(mask.sum())

            def rms(a: np.ndarray) -> float:
                return float(np.sqrt(np.mean(a[mask] ** 2))) if nobs else 0.0

            stats[space.name] = {
                "nobs": nobs,
                "ombg rms": rms(groups["ombg"]), "oman rms": rms(groups["oman"]),
                "ombg mean": float(groups["ombg"][mask].mean()) if nobs else 0.0,
                "oman mean": float(groups["oman"][mask].mean()) if nobs else 0.0,
                "hofx0 spread": float(np.sqrt(groups["hofx0_variance"][mask].mean())) if nobs else 0.0,
                "hofx1 spread": float(np.sqrt(groups["hofx1_variance"][mask].mean())) if nobs else 0.0,
            }
            out = space.save()
            if out:
                outputs.append(out)
        return stats

    def schema_parameters(self, plugin: ModelPlugin | None) -> type[Parameters]:
        observer = specialise(LocalObserverParameters, "LocalObserverParameters",
                              obs_operator=union_of_parameters(self.registry.obs_operator),
                              obs_error=union_of_parameters(self.registry.obs_error))
        observations = specialise(LocalObservationsParameters, "LocalObservationsParameters",
                                  observers=list[observer])
        return specialise(LocalEnsembleDAAppParameters, "LocalEnsembleDAAppParameters",
                          geometry=self.geometry_schema_type(plugin),
                          model=union_of_parameters(self.registry.model) | None,
                          observations=observations)


def _spread(fields: Any) -> float:
    var = [np.asarray(a).var(axis=0, ddof=1).ravel() for a in fields.values()]
    return float(np.sqrt(np.mean(np.concatenate(var))))
