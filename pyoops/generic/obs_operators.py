"""Generic observation operators on GeoVaLs: ``Identity``, ``WindSpeed`` and their linear versions."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from pydantic import Field

from pyoops.config.parameters import Parameters
from pyoops.generic.obs_space import ObsSpace, ObsVector, stack_variables
from pyoops.interface.observations import GeoVaLs, LinearObsOperator, ObsOperator
from pyoops.util.variables import Variables

__all__ = ["IdentityObsOperator", "IdentityParameters", "LinearIdentityObsOperator", "LinearWindSpeedObsOperator",
           "WindSpeedObsOperator", "WindSpeedParameters"]


class IdentityParameters(Parameters):
    """``obs operator: {name: Identity}``: each simulated variable is the model variable of the same name."""

    name: Literal["Identity"] = Field(description="Operator name.")
    variables: list[str] | None = Field(
        None, description="Model variable of each simulated variable, if the names differ.")


def _model_variables(params: IdentityParameters, obs_space: ObsSpace) -> Variables:
    if params.variables is None:
        return obs_space.simulated_variables
    if len(params.variables) != len(obs_space.simulated_variables):
        from pyoops.util.errors import ConfigError

        raise ConfigError(f"{len(params.variables)} model variables for {len(obs_space.simulated_variables)} "
                          "simulated variables", "obs operator.variables")
    return Variables(params.variables)


class IdentityObsOperator(ObsOperator):
    r"""Model values interpolated to the observation locations: :math:`\mathcal{H}(g) = g`."""

    Parameters = IdentityParameters
    linear = True

    def __init__(self, params: Any, obs_space: ObsSpace):
        super().__init__(params, obs_space)
        self._variables = _model_variables(params, obs_space)

    @property
    def required_variables(self) -> Variables:
        return self._variables

    def simulate_obs(self, geovals: GeoVaLs) -> ObsVector:
        return stack_variables(self.obs_space, (geovals[v] for v in self._variables))


class LinearIdentityObsOperator(LinearObsOperator):
    r"""Linear Identity operator: :math:`\mathbf{H} = \mathbf{I}` on GeoVaLs."""

    Parameters = IdentityParameters

    def __init__(self, params: Any, obs_space: ObsSpace):
        super().__init__(params, obs_space)
        self._variables = _model_variables(params, obs_space)

    @property
    def required_variables(self) -> Variables:
        return self._variables

    def set_trajectory(self, geovals: GeoVaLs) -> None:
        """Linear operator: the trajectory is not needed."""

    def simulate_obs_tl(self, dgeovals: GeoVaLs) -> ObsVector:
        return stack_variables(self.obs_space, (dgeovals[v] for v in self._variables))

    def simulate_obs_ad(self, dy: ObsVector) -> GeoVaLs:
        # Unused observations (QC) do not enter the ObsVector inner product, so the
        # adjoint with respect to it gives them no sensitivity (UFO skips missing values).
        values = dy.masked_values()
        return GeoVaLs({v: values[..., i, :] for i, v in enumerate(self._variables)})


class WindSpeedParameters(Parameters):
    """``obs operator: {name: WindSpeed}``: the speed :math:`\\sqrt{u^2 + v^2}` of the model wind."""

    name: Literal["WindSpeed"] = Field(description="Operator name.")
    wind_components: list[str] = Field(["u", "v"], min_length=2, max_length=2,
                                       description="Model variables of the eastward and northward wind.")


def _speed_components(params: WindSpeedParameters, obs_space: ObsSpace) -> Variables:
    if len(obs_space.simulated_variables) != 1:
        from pyoops.util.errors import ConfigError

        raise ConfigError(f"WindSpeed simulates one variable (the speed), got {list(obs_space.simulated_variables)}",
                          "obs space.simulated variables")
    return Variables(params.wind_components)


class WindSpeedObsOperator(ObsOperator):
    r"""Wind speed from the wind components at the observation locations: :math:`\mathcal{H}(g) = \sqrt{u^2 + v^2}`.

    The one simulated variable may have any name (e.g. ``wind_speed``); the model
    wind components are ``wind components`` (default ``[u, v]``).
    """

    Parameters = WindSpeedParameters

    def __init__(self, params: Any, obs_space: ObsSpace):
        super().__init__(params, obs_space)
        self._variables = _speed_components(params, obs_space)

    @property
    def required_variables(self) -> Variables:
        return self._variables

    def simulate_obs(self, geovals: GeoVaLs) -> ObsVector:
        u, v = (geovals[c] for c in self._variables)
        return stack_variables(self.obs_space, [np.hypot(u, v)])


class LinearWindSpeedObsOperator(LinearObsOperator):
    r"""Tangent linear :math:`\delta s = (u\,\delta u + v\,\delta v)/s` of ``WindSpeed`` and its adjoint.

    Where the trajectory's speed is zero the derivative does not exist; it is taken as zero there.
    """

    Parameters = WindSpeedParameters

    def __init__(self, params: Any, obs_space: ObsSpace):
        super().__init__(params, obs_space)
        self._variables = _speed_components(params, obs_space)
        self._cu = self._cv = None

    @property
    def required_variables(self) -> Variables:
        return self._variables

    def set_trajectory(self, geovals: GeoVaLs) -> None:
        u, v = (np.asarray(geovals[c], dtype=float) for c in self._variables)
        speed = np.hypot(u, v)
        safe = np.where(speed > 0, speed, 1.0)
        self._cu = np.where(speed > 0, u / safe, 0.0)
        self._cv = np.where(speed > 0, v / safe, 0.0)

    def _coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        if self._cu is None:
            raise RuntimeError("WindSpeed linear operator: set_trajectory was not called")
        return self._cu, self._cv

    def simulate_obs_tl(self, dgeovals: GeoVaLs) -> ObsVector:
        cu, cv = self._coefficients()
        du, dv = (dgeovals[c] for c in self._variables)
        return stack_variables(self.obs_space, [cu * du + cv * dv])

    def simulate_obs_ad(self, dy: ObsVector) -> GeoVaLs:
        cu, cv = self._coefficients()
        values = dy.masked_values()[..., 0, :]
        return GeoVaLs({self._variables[0]: cu * values, self._variables[1]: cv * values})
