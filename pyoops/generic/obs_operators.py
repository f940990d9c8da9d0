"""Generic observation operators on GeoVaLs: ``Identity`` and its linear version."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from pyoops.config.parameters import Parameters
from pyoops.generic.obs_space import ObsSpace, ObsVector, stack_variables
from pyoops.interface.observations import GeoVaLs, LinearObsOperator, ObsOperator
from pyoops.util.variables import Variables

__all__ = ["IdentityObsOperator", "IdentityParameters", "LinearIdentityObsOperator"]


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
