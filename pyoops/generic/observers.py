"""Observers: H(x) for every observation space, in 3-D (one state) or 4-D (during a forecast).

In 4-D, an observation valid at time :math:`t_o` is computed from the model
state at the nearest model time :math:`t_k`, i.e. from the time slot
:math:`(t_k - \\Delta t/2,\\ t_k + \\Delta t/2]` (OOPS's GetValues posts).
GeoVaLs are gathered slot by slot during the forecast; the observation
operator is applied once they are complete.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from pyoops.config.parameters import Parameters, validate
from pyoops.generic.forecast import PostProcessor
from pyoops.generic.obs_space import ObsSpace, ObsSpaceParameters, ObsVector
from pyoops.interface.geometry import Geometry
from pyoops.interface.observations import GeoVaLs
from pyoops.util.datetime import DateTime, Duration, TimeWindow
from pyoops.util.errors import ConfigError, join_path
from pyoops.util.variables import Variables

__all__ = ["Observer", "ObserverParameters", "ObservationsParameters", "Observers"]


class ObserverParameters(Parameters):
    """One entry of ``observations.observers``."""

    obs_space: ObsSpaceParameters = Field(description="Where the observations come from and go to.")
    obs_operator: dict[str, Any] = Field(description="Observation operator: {name: ..., ...}.")
    linear_obs_operator: dict[str, Any] | None = Field(
        None, description="Linear operator if it differs from the linearised obs operator.")
    obs_error: dict[str, Any] = Field(
        default_factory=lambda: {"covariance model": "diagonal"},
        description="Observation-error covariance: {covariance model: diagonal}.")


class ObservationsParameters(Parameters):
    """The ``observations`` section."""

    observers: list[ObserverParameters] = Field(min_length=1, description="One entry per observation type.")


def validate_observations(config: Any, registry: Any, path: str) -> ObservationsParameters:
    """Validate the observations section including each plugin-typed sub-section."""
    params = validate(ObservationsParameters, config, path)
    for i, obs in enumerate(params.observers):
        here = join_path(path, "observers", i)
        registry.obs_operator.parameters(obs.obs_operator, join_path(here, "obs operator"))
        lin = obs.linear_obs_operator or obs.obs_operator
        lin_path = join_path(here, "linear obs operator" if obs.linear_obs_operator else "obs operator")
        if registry.linear_obs_operator.name_from_config(lin, lin_path) in registry.linear_obs_operator:
            registry.linear_obs_operator.parameters(lin, lin_path)
        registry.obs_error.parameters(obs.obs_error, join_path(here, "obs error"))
    return params


class Observer:
    """One observation type: its ObsSpace, operators, R and interpolator."""

    def __init__(self, params: ObserverParameters, window: TimeWindow, geometry: Geometry, registry: Any,
                 path: str = ""):
        self.params = params
        self.path = path
        self._registry = registry
        self.geometry = geometry
        self._operators(ObsSpace(params.obs_space, window, geometry, join_path(path, "obs space")))
        self._check_required_variables(geometry)
        self.interpolator = geometry.interpolator(self.obs_space.locations)

    def _operators(self, obs_space: ObsSpace, validated: tuple[Any, Any] | None = None) -> None:
        """The obs operator and obs error on ``obs_space`` (the linear operator is built on first use);
        ``validated``: their parameters, already validated by the observer this one is moved from."""
        registry, params, path = self._registry, self.params, self.path
        op_path, err_path = join_path(path, "obs operator"), join_path(path, "obs error")
        if validated is None:
            validated = (registry.obs_operator.parameters(params.obs_operator, op_path),
                         registry.obs_error.parameters(params.obs_error, err_path))
        self._validated = validated
        self.obs_space = obs_space
        self.obs_operator = registry.obs_operator.maker_for(params.obs_operator, op_path)(validated[0], obs_space)
        self.obs_error = registry.obs_error.maker_for(params.obs_error, err_path)(validated[1], obs_space)
        self._linear = None

    def at_window(self, window: TimeWindow) -> "Observer | None":
        """This observer as built from the same parameters for ``window``, when its observations are
        generated (:meth:`ObsSpace.at_window <pyoops.generic.obs_space.ObsSpace.at_window>`): the
        network and its interpolator are reused, the obs space, operators and errors are new.
        None when the space cannot be moved (read from a file; another number of times)."""
        space = self.obs_space.at_window(window)
        if space is None:
            return None
        new = object.__new__(Observer)
        new.params, new.path, new._registry, new.geometry = self.params, self.path, self._registry, self.geometry
        new.interpolator = self.interpolator
        new._operators(space, self._validated)
        return new

    def _check_required_variables(self, geometry: Geometry) -> None:
        """A ConfigError, before any H(x), unless the operator finds the model variables it needs."""
        missing = Variables(self.obs_operator.required_variables) - geometry.variables
        if missing:
            operator = self.params.obs_operator
            key = "obs operator.variables" if isinstance(operator, dict) and "variables" in operator else \
                "obs space.simulated variables"
            raise ConfigError(f"the observation operator needs model variable(s) {missing} that the model does not "
                              f"have (it has {geometry.variables})", join_path(self.path, key))

    @property
    def name(self) -> str:
        return self.obs_space.name

    def linear_obs_operator(self) -> Any:
        """The linear operator (built on first use)."""
        if self._linear is None:
            cfg = self.params.linear_obs_operator or self.params.obs_operator
            path = join_path(self.path, "linear obs operator" if self.params.linear_obs_operator else "obs operator")
            factory = self._registry.linear_obs_operator
            self._linear = factory.maker_for(cfg, path)(factory.parameters(cfg, path), self.obs_space)
        return self._linear

    def geovals(self, fields: Any, rows: np.ndarray | None = None) -> GeoVaLs:
        interp = self.interpolator if rows is None else self.interpolator.subset(rows)
        return interp.apply(fields, self.obs_operator.required_variables)

    def hofx(self, fields: Any) -> ObsVector:
        """:math:`\\mathcal{H}(x)` with every observation taken from ``fields`` (3-D)."""
        return self.obs_operator.simulate_obs(self.geovals(fields))


class HofX4DPost(PostProcessor):
    """Gathers GeoVaLs slot by slot during a forecast, for every observer."""

    def __init__(self, observers: "Observers"):
        self.observers = observers
        self.geovals: list[GeoVaLs | None] = [None] * len(observers)
        self._step: Duration | None = None
        self._begin: DateTime | None = None
        self._end: DateTime | None = None

    def initialize(self, state: Any, end: DateTime, step: Duration) -> None:
        self._step = step
        self._begin = state.time
        self._end = end
        self.geovals = [None] * len(self.observers)
        self._done = [np.zeros(ob.obs_space.nlocs, dtype=bool) for ob in self.observers]

    def process(self, state: Any) -> None:
        t = state.time
        half = self._step.total_seconds() / 2 if self._step is not None else 0.0
        tk = t.seconds_since_epoch()
        lo = tk - half if t > self._begin else -np.inf
        hi = tk + half if t < self._end else np.inf
        for i, ob in enumerate(self.observers):
            times = ob.obs_space.locations.times
            rows = np.flatnonzero((times > lo) & (times <= hi) & ~self._done[i])
            if rows.size == 0:
                continue
            g = ob.geovals(state.fields, rows)
            if self.geovals[i] is None:
                self.geovals[i] = GeoVaLs({v: np.full(a.shape[:-1] + (ob.obs_space.nlocs,), np.nan)
                                           for v, a in g.items()}, copy=False)
            for v, a in g.items():
                self.geovals[i][v][..., rows] = a
            self._done[i][rows] = True

    def finalize(self, state: Any) -> None:
        for i, ob in enumerate(self.observers):
            if not self._done[i].all():
                missing = int((~self._done[i]).sum())
                raise RuntimeError(f"{missing} observation(s) of '{ob.name}' were not reached by the forecast "
                                   f"from {self._begin} to {self._end}")

    def hofx(self) -> list[ObsVector]:
        return [ob.obs_operator.simulate_obs(g) for ob, g in zip(self.observers, self.geovals)]


class Observers(list):
    """The list of :class:`Observer` of an ``observations`` section."""

    @classmethod
    def from_config(cls, params: ObservationsParameters, window: TimeWindow, geometry: Geometry, registry: Any,
                    path: str = "observations") -> "Observers":
        return cls(Observer(p, window, geometry, registry, join_path(path, "observers", i))
                   for i, p in enumerate(params.observers))

    def hofx_3d(self, fields: Any) -> list[ObsVector]:
        return [ob.hofx(fields) for ob in self]

    def post_processor(self) -> HofX4DPost:
        return HofX4DPost(self)
