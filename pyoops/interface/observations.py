"""Abstract observation interfaces: ObsOperator, LinearObsOperator, ObsError.

Observation operators act on GeoVaLs, model values already interpolated to the
observation locations, so that one operator serves every model (as in UFO).
GeoVaLs are a :class:`~pyoops.fields.fieldset.FieldSet` whose arrays end with
the location axis ``(..., nlocs)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from pyoops.config.parameters import Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.util.variables import Variables

#: The observations of one obs space, e.g. :class:`pyoops.generic.obs_space.ObsSpace`; an interface
#: names no implementation, so the type is not imported.
ObsSpaceLike = Any
#: A vector in observation space, e.g. :class:`pyoops.generic.obs_space.ObsVector` (values and their
#: obs space).
ObsVectorLike = Any

__all__ = ["GeoVaLs", "LinearObsOperator", "ObsError", "ObsOperator"]


class GeoVaLs(FieldSet):
    """Model values at observation locations: ``{variable: (..., nlocs)}``."""

    __slots__ = ()

    @property
    def nlocs(self) -> int:
        for arr in self.values():
            return int(arr.shape[-1])
        return 0


class ObsOperator(ABC):
    """Nonlinear observation operator :math:`y = \\mathcal{H}(g)` on GeoVaLs."""

    Parameters: ClassVar[type[Parameters]]
    #: True when :math:`\mathcal{H}` is linear in the GeoVaLs, :math:`\mathcal{H}(g) = \mathbf{H}g`,
    #: and its linear operator (the same name, no ``linear obs operator`` section) is that
    #: :math:`\mathbf{H}` whatever the trajectory.  A cycled 3D-Var with ``DirectSolve`` and a static B
    #: then reuses one gain while the observation network is unchanged (see :doc:`/variational`).
    #: Leave it False unless both hold: a wrong True gives wrong analyses.
    linear: ClassVar[bool] = False

    def __init__(self, params: Any, obs_space: ObsSpaceLike):
        self.params = params
        self.obs_space = obs_space

    @property
    @abstractmethod
    def required_variables(self) -> Variables:
        """Model variables the operator needs as GeoVaLs."""

    @abstractmethod
    def simulate_obs(self, geovals: GeoVaLs) -> ObsVectorLike:
        """:math:`\\mathcal{H}(g)` for every simulated variable (leading batch axes allowed)."""


class LinearObsOperator(ABC):
    """Tangent linear :math:`\\mathbf{H}` of an ObsOperator and its adjoint.

    :meth:`set_trajectory` is called with the GeoVaLs of the linearisation state
    before :meth:`simulate_obs_tl` or :meth:`simulate_obs_ad`.
    """

    Parameters: ClassVar[type[Parameters]]

    def __init__(self, params: Any, obs_space: ObsSpaceLike):
        self.params = params
        self.obs_space = obs_space

    @property
    @abstractmethod
    def required_variables(self) -> Variables:
        """Model variables the operator needs as GeoVaLs."""

    @abstractmethod
    def set_trajectory(self, geovals: GeoVaLs) -> None:
        """Linearise about ``geovals``."""

    @abstractmethod
    def simulate_obs_tl(self, dgeovals: GeoVaLs) -> ObsVectorLike:
        """:math:`\\delta y = \\mathbf{H} \\delta g`."""

    @abstractmethod
    def simulate_obs_ad(self, dy: ObsVectorLike) -> GeoVaLs:
        """:math:`\\delta g = \\mathbf{H}^\\mathsf{T} \\delta y`."""


class ObsError(ABC):
    """Observation-error covariance :math:`\\mathbf{R}` of one ObsSpace."""

    Parameters: ClassVar[type[Parameters]]

    def __init__(self, params: Any, obs_space: ObsSpaceLike):
        self.params = params
        self.obs_space = obs_space

    @abstractmethod
    def multiply(self, dy: ObsVectorLike) -> ObsVectorLike:
        """:math:`\\mathbf{R}\\,\\delta y`."""

    @abstractmethod
    def inverse_multiply(self, dy: ObsVectorLike) -> ObsVectorLike:
        """:math:`\\mathbf{R}^{-1}\\delta y`."""

    @abstractmethod
    def randomize(self, rng: np.random.Generator) -> ObsVectorLike:
        """A draw from :math:`\\mathcal{N}(0, \\mathbf{R})`."""

    @abstractmethod
    def obserrors(self) -> ObsVectorLike:
        """Standard deviations."""

    @abstractmethod
    def update(self, obserrors: ObsVectorLike) -> None:
        """Replace the standard deviations."""

    @abstractmethod
    def inverse_variance(self) -> ObsVectorLike:
        """:math:`1/\\sigma^2` (0 where the observation is not used)."""
