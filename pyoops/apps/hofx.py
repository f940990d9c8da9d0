"""``pyoops hofx``: H(x) in 3-D (one state) or 4-D (during a forecast), and ``make obs``.

With ``make obs: true`` the simulated values become the ``ObsValue`` group
(plus a draw from :math:`\\mathcal{N}(0, \\mathbf{R})` when
``obs perturbations: true``, seeded): this is how synthetic observations are
made, as OOPS's MakeObs.  Observation networks can be read from files or
generated (``obs space.generate``) at a given density, error and frequency.
"""

from __future__ import annotations

import logging
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
from pyoops.config.parameters import DurationField, Parameters, TimeWindowParameters
from pyoops.util.sizes import check_generated_observations
from pyoops.generic.forecast import forecast, number_of_steps
from pyoops.generic.observers import (
    ObservationsParameters,
    ObserverParameters,
    Observers,
    validate_observations,
)
from pyoops.generic.state import StateParameters
from pyoops.registry import ModelPlugin
from pyoops.util.errors import ConfigError, join_path
from pyoops.util.random import generator

__all__ = ["HofXApplication", "HofXParameters"]

logger = logging.getLogger("pyoops")


class HofXParameters(ApplicationParameters):
    """``pyoops hofx`` configuration (OOPS HofX3D / HofX4D / MakeObs)."""

    time_window: TimeWindowParameters = Field(description="Assimilation window.")
    geometry: dict[str, Any] = Field(description="Geometry of the model plugin.")
    state: StateParameters | None = Field(None, description="3-D H(x): the state used for every observation.")
    initial_condition: StateParameters | None = Field(
        None, description="4-D H(x): state at the window begin, run with 'model' through the window.")
    model: dict[str, Any] | None = Field(None, description="4-D H(x): the model.")
    forecast_length: DurationField | None = Field(None, description="4-D H(x): defaults to the window length.")
    observations: dict[str, Any] = Field(description="{observers: [{obs space, obs operator, obs error}, ...]}.")
    make_obs: bool = Field(False, description="Write H(x) (+ perturbation) as ObsValue: synthetic observations.")
    obs_perturbations: bool = Field(False, description="With make obs: add a draw from N(0, R).")
    obs_perturbations_seed: int = Field(0, ge=0, description="Seed of the observation perturbations.")

    def check_mode(self) -> None:
        """3-D (``state``) or 4-D (``initial condition`` and ``model``): a ConfigError naming the key."""
        four_d = self.model is not None or self.initial_condition is not None
        if four_d and self.state is not None:
            raise ConfigError("give either 'state' (3-D H(x)) or 'initial condition' and 'model' (4-D), not both",
                              "state")
        if four_d and (self.model is None or self.initial_condition is None):
            missing = "model" if self.model is None else "initial condition"
            raise ConfigError("required key is missing: 4-D H(x) needs both 'initial condition' and 'model'",
                              missing)
        if not four_d and self.state is None:
            raise ConfigError("required key is missing: give 'state' (3-D H(x)) or 'initial condition' and 'model' "
                              "(4-D H(x))", "state")
        if self.obs_perturbations and not self.make_obs:
            raise ConfigError("only applies with 'make obs: true'", "obs perturbations")


class HofXApplication(Application):
    """Compute H(x) for every observer and write it to the output obs files."""

    name = "hofx"
    summary = "compute H(x) in 3-D or 4-D; with make obs, write synthetic observations"
    Parameters = HofXParameters

    def validate_plugins(self, params: HofXParameters) -> None:
        params.check_mode()
        self._geometry = self.geometry(params.geometry)
        self._obs_params = validate_observations(params.observations, self.registry, "observations")
        window = params.time_window.window()
        check_generated_observations(self._obs_params, window, "observations")
        if params.state is not None:
            check_state_in_window(params.state.date, window, "state")
            self._model = None
        else:
            if params.initial_condition.date != window.begin:
                raise ConfigError(f"4-D H(x) starts at the window begin {window.begin}, got "
                                  f"{params.initial_condition.date}", "initial condition.date")
            self._model = self.make("model", params.model, "model", self._geometry)
            length = params.forecast_length or window.length
            if length != window.length:
                raise ConfigError(f"must equal the window length {window.length}, got {length}", "forecast length")
            try:
                number_of_steps(length, self._model.time_resolution, "window length")
            except ConfigError as exc:
                raise ConfigError(exc.message, "time window.length") from None
        for i, obs in enumerate(self._obs_params.observers):
            if params.make_obs and obs.obs_space.obsdataout is None:
                raise ConfigError("'make obs' needs an output file", join_path("observations.observers", i,
                                                                                  "obs space.obsdataout"))

    def run(self, params: HofXParameters) -> dict[str, Any]:
        window = params.time_window.window()
        observers = Observers.from_config(self._obs_params, window, self._geometry, self.registry)
        if self._model is None:
            state = self.plugin.state.from_config(self._geometry, params.state, "state")
            hofx = observers.hofx_3d(state.fields)
        else:
            state = self.plugin.state.from_config(self._geometry, params.initial_condition, "initial condition")
            post = observers.post_processor()
            forecast(self._model, state, window.length, [post])
            hofx = post.hofx()
        summary: dict[str, Any] = {"observers": {}, "outputs": []}
        for i, (ob, hx) in enumerate(zip(observers, hofx)):
            space = ob.obs_space
            hx.save("hofx")
            stats = {"nobs": space.nlocs * len(space.simulated_variables), "hofx rms": hx.rms()}
            if params.make_obs:
                values = hx.copy()
                if params.obs_perturbations:
                    values += ob.obs_error.randomize(generator(params.obs_perturbations_seed, "obs perturbations",
                                                               space.name, i))
                values.save("ObsValue")
                ob.obs_error.obserrors().save("ObsError")
                stats["obs rms"] = values.rms()
            elif all(space.has("ObsValue", v) for v in space.simulated_variables):
                omb = space.obs_values() - hx
                stats["y - H(x) rms"] = omb.rms()
                stats["y - H(x) mean"] = float(np.nanmean(np.where(omb.mask(), omb.values, np.nan)))
            out = space.save()
            if out:
                summary["outputs"].append(out)
            summary["observers"][space.name] = stats
            logger.info("H(x) %s: %s", space.name, ", ".join(f"{k} {v:.6g}" for k, v in stats.items()))
        return summary

    def schema_parameters(self, plugin: ModelPlugin | None) -> type[Parameters]:
        observer = specialise(ObserverParameters, "ObserverParameters",
                              obs_operator=union_of_parameters(self.registry.obs_operator),
                              obs_error=union_of_parameters(self.registry.obs_error))
        observations = specialise(ObservationsParameters, "ObservationsParameters", observers=list[observer])
        return specialise(HofXParameters, "HofXParameters",
                          geometry=self.geometry_schema_type(plugin),
                          model=union_of_parameters(self.registry.model, plugin) | None,
                          observations=observations)
