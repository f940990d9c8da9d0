"""Incremental variational cost functions: 3D-Var, 3D-FGAT, 4D-FGAT, 4D-Var, 4D-Ens-Var.

At outer loop :math:`k` with guess :math:`x_k` the cost function is linearised:

.. math::

    J(\\delta x) = \\tfrac12 (\\delta x - \\delta x_b)^\\mathsf{T} \\mathbf{B}^{-1} (\\delta x - \\delta x_b)
                 + \\tfrac12 (\\mathbf{H}\\delta x - d)^\\mathsf{T} \\mathbf{R}^{-1} (\\mathbf{H}\\delta x - d),
    \\qquad d = y - \\mathcal{H}(x_k),\\quad \\delta x_b = x_b - x_k .

What :math:`\\mathbf{H}` contains depends on the cost type:

``3D-Var``
    the increment is valid at the window midpoint (where the background must be);
    every observation sees it: :math:`\\mathbf{H} = \\mathbf{H}_{obs}\\mathbf{W}`.
``3D-FGAT`` / ``4D-FGAT``
    :math:`\\mathcal{H}(x_k)` is computed along the nonlinear forecast from the window
    begin (first guess at the appropriate time) but the increment is constant in time
    (4D-Var with the identity linear model); valid at the midpoint (3D-FGAT: the analysis
    written is :math:`\\mathcal{M}_{t_0\\to t_m}(x_b) + \\delta x`, see
    :meth:`CostFunction.analysis_states`) or the window begin (4D-FGAT).
``4D-Var``
    strong constraint: the increment at the window begin is propagated by the linear
    model, :math:`\\mathbf{H}_t \\mathbf{W}_t \\mathbf{M}_{t_0 \\to t}`.
``4D-Ens-Var``
    one increment per sub-window time, no linear model; the 4-D ensemble covariance
    couples them.

Observations use the model state of their time slot (nearest model step; see
:mod:`pyoops.assimilation.slots`).  Control vectors and observation vectors are
flattened to 1-D arrays for the minimizers.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from pyoops.assimilation.slots import slot_indices, slot_times
from pyoops.config.parameters import DurationField, Parameters, TimeWindowParameters, VariableName, validate
from pyoops.util.sizes import check_generated_observations
from pyoops.fields.fieldset import FieldSet
from pyoops.generic.forecast import PostProcessor, forecast, number_of_steps
from pyoops.generic.grid import SparseInterpolator
from pyoops.generic.observers import Observers, validate_observations
from pyoops.generic.obs_space import ObsVector
from pyoops.generic.state import GenericState, StateParameters
from pyoops.interface.observations import GeoVaLs
from pyoops.saber.chain import ErrorCovariance, validate_covariance
from pyoops.util.datetime import DateTime, Duration
from pyoops.util.errors import ConfigError, join_path
from pyoops.util.variables import Variables

__all__ = ["COST_TYPES", "CostFunction", "CostFunctionParameters", "VariableName", "change_resolution"]

COST_TYPES = ("3D-Var", "3D-FGAT", "4D-FGAT", "4D-Var", "4D-Ens-Var")

#: A variable name in a configuration, a non-empty string.


class BackgroundStatesParameters(Parameters):
    """4D-Ens-Var background: one state per sub-window time."""

    states: list[StateParameters] = Field(min_length=2, description="Background states at the sub-window times.")


class CostFunctionParameters(Parameters):
    """The ``cost function`` section."""

    cost_type: Literal["3D-Var", "3D-FGAT", "4D-FGAT", "4D-Var", "4D-Ens-Var"] = Field(
        description="3D-Var, 3D-FGAT, 4D-FGAT, 4D-Var or 4D-Ens-Var.")
    time_window: TimeWindowParameters = Field(description="Assimilation window.")
    geometry: dict[str, Any] = Field(description="Outer-loop geometry of the model plugin.")
    analysis_variables: list[VariableName] | None = Field(
        None, min_length=1, description="Variables of the increment (default: all).")
    background: dict[str, Any] = Field(
        description="Background state {date, filename | analytic init}; for 4D-Ens-Var {states: [...]}.")
    background_error: dict[str, Any] = Field(description="covariance model: SABER, ...")
    observations: dict[str, Any] = Field(description="{observers: [...]}.")
    model: dict[str, Any] | None = Field(None, description="Nonlinear model (4D-Var, FGAT).")
    linear_model: dict[str, Any] | None = Field(None, description="Linear model (4D-Var).")
    subwindow: DurationField | None = Field(None, description="4D-Ens-Var: time between background states.")

    @model_validator(mode="after")
    def _needs(self) -> "CostFunctionParameters":
        if self.cost_type in ("4D-Var", "3D-FGAT", "4D-FGAT") and self.model is None:
            raise ValueError(f"cost type {self.cost_type} needs 'model'")
        if self.cost_type == "4D-Var" and self.linear_model is None:
            raise ValueError("cost type 4D-Var needs 'linear model'")
        if self.cost_type == "4D-Ens-Var" and self.subwindow is None:
            raise ValueError("cost type 4D-Ens-Var needs 'subwindow'")
        return self


def change_resolution(fields: FieldSet, source: Any, target: Any) -> FieldSet:
    """Fields on ``source`` interpolated to the grid points of ``target``.

    The operator is the generic interpolation of :meth:`~pyoops.generic.grid.StructuredGrid.interpolation_matrix`
    (linear along horizontal axes, periodic where the axis is, nearest level) evaluated
    at ``target.grid_locations()``; it is the identity when the geometries are the same.
    """
    if source.same_as(target):
        return fields.copy()
    interp = SparseInterpolator(source.interpolation_matrix(target.grid_locations()), source.shape)
    out = interp.apply(fields, fields.variables)
    return FieldSet({v: a.reshape(a.shape[:-1] + target.field_shape(v)) for v, a in out.items()}, copy=False)


class _SlotGeoVaLs(PostProcessor):
    """Gather nonlinear GeoVaLs slot by slot and optionally pass the trajectory to a linear model."""

    def __init__(self, observers: Observers, times: list[DateTime], slots: list[np.ndarray],
                 trajectory: Any = None):
        self.observers, self.times, self.slots = observers, times, slots
        self.trajectory = trajectory
        self.geovals: list[GeoVaLs | None] = [None] * len(observers)

    def process(self, state: Any) -> None:
        if self.trajectory is not None:
            self.trajectory(state)
        if state.time not in self.times:
            return
        k = self.times.index(state.time)
        for i, ob in enumerate(self.observers):
            rows = np.flatnonzero(self.slots[i] == k)
            if rows.size == 0:
                continue
            g = ob.geovals(state.fields, rows)
            if self.geovals[i] is None:
                self.geovals[i] = GeoVaLs({v: np.full(ob.obs_space.nlocs, np.nan) for v in g}, copy=False)
            for v, a in g.items():
                self.geovals[i][v][rows] = a


@dataclass
class Linearisation:
    """What one outer loop fixes: innovations, masks, slot interpolators, linear operators."""

    hofx: list[ObsVector]
    innovation: np.ndarray
    masks: list[np.ndarray]
    interpolators: list[list[tuple[np.ndarray, SparseInterpolator]]]
    linear_obs_operators: list[Any]


def _config_key(config: Any) -> str | None:
    """An exact text key of a configuration: JSON, arrays by dtype, shape and SHA-256 of their
    bytes, dates and durations by their ISO text; None (do not memoise) for anything else."""
    def default(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return ["ndarray", value.dtype.str, list(value.shape),
                    hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()]
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, (DateTime, Duration)):
            return [type(value).__name__, str(value)]
        raise TypeError(type(value).__name__)

    try:
        return json.dumps(config, sort_keys=True, default=default)
    except (TypeError, ValueError):
        return None


class CostFunction:
    """Builds, for each outer loop, the pieces of the quadratic problem.

    Parameters
    ----------
    params:
        Validated :class:`CostFunctionParameters`.
    registry, plugin:
        The plugin registry and the model plugin.
    path:
        YAML path of the section (``cost function``).
    memo:
        Optional memo shared by the cost functions of one run (the analyses of a cycle, say):
        the outer geometry and the validated ``observations`` and ``background error``
        sections are built once per configuration (its JSON text) and reused.  Only for
        cost functions built with the same ``registry`` and ``plugin``, whose plugins do not
        change in between; the geometry is then shared, so it must not be modified.
    """

    def __init__(self, params: CostFunctionParameters, registry: Any, plugin: Any, path: str = "cost function",
                 memo: dict[str, Any] | None = None):
        self.params = params
        self.registry = registry
        self.plugin = plugin
        self.path = path
        self.cost_type = params.cost_type
        self.window = params.time_window.window()
        gpath = join_path(path, "geometry")

        def memoised(section: str, config: Any, build: Any) -> Any:
            key = None if memo is None else _config_key([section, path, config])
            if key is None:
                return build()
            if key not in memo:  # type: ignore[operator]
                memo[key] = build()  # type: ignore[index]
            return memo[key]  # type: ignore[index]

        self.geometry = memoised("geometry", params.geometry, lambda: plugin.make_geometry(params.geometry, gpath))
        self.variables = Variables(params.analysis_variables or self.geometry.variables)
        unknown = self.variables - self.geometry.variables
        if unknown:
            raise ConfigError(f"unknown variable(s) {unknown} (geometry has {self.geometry.variables})",
                              join_path(path, "analysis variables"))
        self.obs_params = memoised("observations", params.observations, lambda: validate_observations(
            params.observations, registry, join_path(path, "observations")))
        check_generated_observations(self.obs_params, self.window, join_path(path, "observations"))
        memoised("background error", params.background_error, lambda: validate_covariance(
            params.background_error, registry, join_path(path, "background error")) or True)
        self.model = None
        #: ``(configuration, inner geometry, linear model)`` of the outer loops so far (:meth:`linear_model`).
        self._linear_models: list[tuple[Any, Any, Any]] = []
        if params.model is not None:
            self.model = self._make("model", params.model, join_path(path, "model"), self.geometry)
        self._check_times()

    # Set-up -----------------------------------------------------------------------------------
    def _make(self, kind: str, config: Any, path: str, *args: Any) -> Any:
        factory = self.registry.factory(kind)
        return factory.maker_for(config, path)(factory.parameters(config, path), *args)

    @functools.cached_property
    def _validated_backgrounds(self) -> list[StateParameters]:
        bpath = join_path(self.path, "background")
        if self.cost_type == "4D-Ens-Var":
            return validate(BackgroundStatesParameters, self.params.background, bpath).states
        return [validate(StateParameters, self.params.background, bpath)]

    def _background_params(self) -> list[StateParameters]:
        """The validated ``background`` section (validated once per cost function)."""
        return list(self._validated_backgrounds)

    def _check_times(self) -> None:
        w = self.window
        bpath = join_path(self.path, "background")
        backgrounds = self._background_params()
        if self.cost_type == "4D-Ens-Var":
            try:
                expected = slot_times(w.begin, w.end, self.params.subwindow)
            except ValueError:
                raise ConfigError(f"the window length {w.length} is not a multiple of the subwindow "
                                  f"{self.params.subwindow}", join_path(self.path, "subwindow")) from None
            dates = [b.date for b in backgrounds]
            if dates != expected:
                raise ConfigError(f"background states must be at the sub-window times {[str(t) for t in expected]}, "
                                  f"got {[str(d) for d in dates]}", join_path(bpath, "states"))
            return
        date = backgrounds[0].date
        if not (w.begin <= date <= w.end):
            raise ConfigError(f"background date {date} is outside the time window {w}", join_path(bpath, "date"))
        if self.cost_type == "3D-Var" and date != w.midpoint:
            raise ConfigError(f"3D-Var needs the background at the window midpoint {w.midpoint}, got {date}",
                              join_path(bpath, "date"))
        if self.cost_type in ("4D-Var", "3D-FGAT", "4D-FGAT"):
            if date != w.begin:
                raise ConfigError(f"{self.cost_type} needs the background at the window begin {w.begin}, got {date}",
                                  join_path(bpath, "date"))
            try:
                number_of_steps(w.length, self.model.time_resolution, "window length")
                if self.cost_type == "3D-FGAT":  # the analysis is written at the midpoint
                    number_of_steps(w.midpoint - w.begin, self.model.time_resolution, "half window")
            except ConfigError as exc:
                raise ConfigError(exc.message, join_path(self.path, "time window.length")) from None

    def analysis_states(self, background: list[Any], guess: list[Any]) -> tuple[list[Any], list[Any]]:
        r"""The analysis to write, and the background at the same times: ``(analyses, backgrounds)``.

        The incremental driver updates the guess at the increment times of the trajectory
        (the window begin for the FGAT and 4D-Var cost types), where the next outer loop or
        the next cycle starts.  3D-FGAT's increment is constant in time and valid at the
        window midpoint :math:`t_m` (Lorenc and Rawlins 2005), so its analysis is the
        background forecast plus the total increment there:

        .. math::

            x_a(t_m) = \mathcal{M}_{t_0\to t_m}(x_b) + \delta x, \qquad
            \delta x = \sum_k \delta x_k = x_g - x_b \text{ at } t_0,

        with :math:`x_g` the final guess.  Every other cost type writes the guess itself.
        """
        if self.cost_type != "3D-FGAT":
            return guess, background
        mid = self.window.midpoint - self.window.begin
        xb_mid = forecast(self.model, background[0].copy(), mid)
        xa_mid = xb_mid.copy()
        for v in self.variables:
            xa_mid.fields[v] = xb_mid.fields[v] + (guess[0].fields[v] - background[0].fields[v])
        return [xa_mid], [xb_mid]

    def read_background(self) -> list[Any]:
        """Background state(s): one, or one per sub-window time for 4D-Ens-Var."""
        return [self.plugin.state.from_config(self.geometry, b, join_path(self.path, "background"))
                for b in self._background_params()]

    def observers(self) -> Observers:
        path = join_path(self.path, "observations")
        return Observers.from_config(self.obs_params, self.window, self.geometry, self.registry, path)

    @property
    def increment_times(self) -> list[DateTime]:
        """Valid times of the control increments."""
        w = self.window
        if self.cost_type == "3D-Var" or self.cost_type == "3D-FGAT":
            return [w.midpoint]
        if self.cost_type == "4D-Ens-Var":
            return slot_times(w.begin, w.end, self.params.subwindow)
        return [w.begin]

    def slot_times(self) -> list[DateTime]:
        """Model times observations are taken at."""
        w = self.window
        if self.cost_type == "3D-Var":
            return [w.midpoint]
        if self.cost_type == "4D-Ens-Var":
            return slot_times(w.begin, w.end, self.params.subwindow)
        return slot_times(w.begin, w.end, self.model.time_resolution)

    def covariance(self, inner_geometry: Any, ensemble: FieldSet | None = None) -> ErrorCovariance:
        """:math:`\\mathbf{B}` on the inner geometry and analysis variables.

        ``ensemble``: optional members held in memory (leading member axis; ``(member, time,
        *grid)`` for 4D-Ens-Var) for the Ensemble blocks that read no file themselves.
        """
        times = self.increment_times
        return ErrorCovariance(self.params.background_error, inner_geometry, self.variables, times[0],
                               self.registry, self.plugin, join_path(self.path, "background error"),
                               ensemble=ensemble)

    def linear_model(self, config: Any, inner_geometry: Any, path: str) -> Any:
        """The 4D-Var linear model of an outer loop (None for the other cost types): built once per
        configuration section and inner geometry object and reused by the later outer loops (each
        linearisation clears and sets its trajectory)."""
        if self.cost_type != "4D-Var":
            return None
        if not config:
            config, path = self.params.linear_model, join_path(self.path, "linear model")
        for cached_config, cached_geometry, cached in self._linear_models:
            if cached_config is config and cached_geometry is inner_geometry:
                return cached
        linear_model = self._make("linear model", config, path, inner_geometry)
        # H and H^T take one linear-model step per model step (slot_times), so the steps must agree.
        if linear_model.time_resolution != self.model.time_resolution:
            raise ConfigError(f"the linear model time step {linear_model.time_resolution} differs from the model "
                              f"time step {self.model.time_resolution}", path)
        self._linear_models.append((config, inner_geometry, linear_model))
        return linear_model

    # Outer loop: nonlinear H(x) ------------------------------------------------------------
    def _nonlinear_geovals(self, guess: list[Any], observers: Observers, times: list[DateTime],
                           slots: list[np.ndarray], trajectory: Any = None) -> list[GeoVaLs]:
        """GeoVaLs of every observer from the guess (through the window where needed)."""
        post = _SlotGeoVaLs(observers, times, slots, trajectory)
        if self.cost_type == "3D-Var":
            post.process(guess[0])
        elif self.cost_type == "4D-Ens-Var":
            for state in guess:
                post.process(state)
        else:
            state = guess[0].copy()
            forecast(self.model, state, self.window.length, [post])
        return [g if g is not None else ob.geovals(guess[0].fields, np.arange(0))
                for ob, g in zip(observers, post.geovals)]

    def nonlinear_hofx(self, guess: list[Any], observers: Observers, masks: list[np.ndarray]) -> np.ndarray:
        """Flat :math:`\\mathcal{H}(x)` of ``guess`` (0 where ``masks`` are False), without side effects."""
        times = self.slot_times()
        slots = [slot_indices(ob.obs_space.locations.times, times) for ob in observers]
        geovals = self._nonlinear_geovals(guess, observers, times, slots)
        return np.concatenate([np.where(m, ob.obs_operator.simulate_obs(g).values, 0.0).ravel()
                               for ob, g, m in zip(observers, geovals, masks)]) if len(observers) else np.zeros(0)

    def linearise(self, guess: list[Any], observers: Observers, inner_geometry: Any,
                  linear_model: Any = None) -> Linearisation:
        """Run :math:`\\mathcal{H}(x_k)` (through the window where needed) and fix the linear problem."""
        times = self.slot_times()
        slots = [slot_indices(ob.obs_space.locations.times, times) for ob in observers]
        trajectory = None
        if linear_model is not None:
            linear_model.clear_trajectory()

            def trajectory(state: Any) -> None:
                fields = change_resolution(state.fields.subset(linear_model.variables), self.geometry,
                                           inner_geometry)
                linear_model.set_trajectory(GenericState(inner_geometry, fields, state.time))

        all_geovals = self._nonlinear_geovals(guess, observers, times, slots, trajectory)
        hofx, masks, innovations, interps, linops = [], [], [], [], []
        for i, ob in enumerate(observers):
            geovals = all_geovals[i]
            hx = ob.obs_operator.simulate_obs(geovals)
            hofx.append(hx)
            mask = ob.obs_space.qc_mask() & np.isfinite(ob.obs_space.obs_values().values)
            masks.append(mask)
            d = np.where(mask, ob.obs_space.obs_values().values - hx.values, 0.0)
            innovations.append(d.ravel())
            lin = ob.linear_obs_operator()
            lin.set_trajectory(geovals)
            linops.append(lin)
            per_slot = []
            for k in np.unique(slots[i]):
                rows = np.flatnonzero(slots[i] == k)
                interp = inner_geometry.interpolator(ob.obs_space.locations.subset(rows))
                per_slot.append((int(k), rows, interp))
            interps.append(per_slot)
        return Linearisation(hofx, np.concatenate(innovations) if innovations else np.zeros(0), masks,
                             interps, linops)

    # Linear H and its adjoint on flat vectors -----------------------------------------------
    def linear_h(self, lin: Linearisation, observers: Observers, inner_geometry: Any, linear_model: Any,
                 unflatten: Any, flatten: Any, with_rows: bool = False) -> tuple[Any, ...]:
        """``(h, h_ad)`` on flat control/observation vectors; with ``with_rows`` also ``h_rows``.

        ``h_rows`` applies :math:`\\mathbf{H}` to every row of a ``(k, n)`` array at once
        (``unflatten`` must then accept such an array and return FieldSets with a leading
        axis of ``k``; the interpolation, the linear observation operators and the linear
        model are applied to the whole batch) and returns ``(k, p)``: the ``DirectSolve``
        minimizer (:mod:`pyoops.assimilation.minimizers`) forms :math:`\\mathbf{H}\\mathbf{L}`
        with one call.  ``h(x)`` is the same code with no batch axis.
        """
        times = self.slot_times()
        nslots = len(times)
        variables = self.variables
        for i, ob in enumerate(observers):  # checked here, not only in h_ad: RPCG applies h first
            extra = [v for v in lin.linear_obs_operators[i].required_variables if v not in variables]
            if extra:
                raise ConfigError(f"observation operator of '{ob.name}' needs {extra}, not among the analysis "
                                  f"variables {variables}", join_path(self.path, "analysis variables"))

        observed = {k for per_slot in lin.interpolators for k, _, _ in per_slot}

        def slot_fields(x: np.ndarray) -> list[FieldSet | None]:
            """The increment at every slot that has observations (None at the others)."""
            increments = unflatten(x)
            if self.cost_type == "4D-Ens-Var":
                return increments
            if self.cost_type == "4D-Var":
                # The TL increment of every model step is made, but only those at observed slots are kept:
                # all of them would cost the analysis variables' size per grid point and model step.
                states: list[FieldSet | None] = [None] * nslots
                current = increments[0]
                for k, t in enumerate(times):
                    if k in observed:
                        states[k] = current
                    if k < nslots - 1:
                        current = linear_model.step_tl(current.copy(), linear_model.trajectory_at(t))
                return states
            return [increments[0]] * nslots

        def observe(fields: list[FieldSet | None], batch: tuple[int, ...]) -> np.ndarray:
            """The linear H(x) of every observer from the slot increments, ``batch + (p,)``."""
            out = []
            for i, ob in enumerate(observers):
                lin_op = lin.linear_obs_operators[i]
                geovals = GeoVaLs({v: np.zeros(batch + (ob.obs_space.nlocs,)) for v in lin_op.required_variables},
                                  copy=False)
                for k, rows, interp in lin.interpolators[i]:
                    g = interp.apply(fields[k], lin_op.required_variables)
                    for v, a in g.items():
                        geovals[v][..., rows] = a
                dy = lin_op.simulate_obs_tl(geovals)
                out.append(np.where(lin.masks[i], dy.values, 0.0).reshape(batch + (-1,)))
            return np.concatenate(out, axis=-1) if out else np.zeros(batch + (0,))

        def h(x: np.ndarray) -> np.ndarray:
            return observe(slot_fields(x), ())

        def h_rows(x: np.ndarray) -> np.ndarray:
            return observe(slot_fields(x), (x.shape[0],))

        def h_ad(y: np.ndarray) -> np.ndarray:
            # 4D-Var needs the forcing of the observed slots only (and the last, where the sweep starts).
            forcing: list[FieldSet | None] = [
                inner_geometry.zeros(variables)
                if self.cost_type != "4D-Var" or k in observed or k == nslots - 1 else None
                for k in range(nslots)]
            start = 0
            for i, ob in enumerate(observers):
                lin_op = lin.linear_obs_operators[i]
                size = lin.masks[i].size
                dy = ObsVector(ob.obs_space, np.where(lin.masks[i], y[start:start + size].reshape(lin.masks[i].shape),
                                                      0.0))
                start += size
                geovals = lin_op.simulate_obs_ad(dy)
                for k, rows, interp in lin.interpolators[i]:
                    sub = GeoVaLs({v: geovals[v][rows] for v in geovals}, copy=False)
                    target = forcing[k]
                    extra = [v for v in sub if v not in target]
                    if extra:
                        raise ConfigError(f"observation operator needs {extra}, not among the analysis variables "
                                          f"{variables}", join_path(self.path, "analysis variables"))
                    interp.apply_ad(sub, target)
            if self.cost_type == "4D-Ens-Var":
                return flatten(forcing)
            if self.cost_type == "4D-Var":
                adj = forcing[-1]
                for k in range(nslots - 2, -1, -1):
                    adj = linear_model.step_ad(adj, linear_model.trajectory_at(times[k]))
                    if forcing[k] is not None:
                        adj += forcing[k]
                return flatten([adj])
            total = forcing[0]
            for f in forcing[1:]:
                total += f
            return flatten([total])

        return (h, h_ad, h_rows) if with_rows else (h, h_ad)

    def r_operators(self, lin: Linearisation, observers: Observers) -> tuple[Any, Any, np.ndarray]:
        r"""``(r_inverse, r_multiply, inverse variances)`` on flat observation vectors (0 where unused):
        :math:`\mathbf{R}^{-1}\mathbf{y} = \mathbf{y} \odot` the inverse variances."""
        inv_var = np.concatenate([np.where(lin.masks[i], ob.obs_error.inverse_variance().values, 0.0).ravel()
                                  for i, ob in enumerate(observers)]) if observers else np.zeros(0)
        var = np.where(inv_var > 0, 1.0 / np.where(inv_var > 0, inv_var, 1.0), 0.0)

        def r_inverse(y: np.ndarray) -> np.ndarray:
            return y * inv_var

        def r_multiply(y: np.ndarray) -> np.ndarray:
            return y * var

        return r_inverse, r_multiply, inv_var
