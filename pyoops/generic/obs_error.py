"""The ``diagonal`` observation-error covariance."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from pyoops.config.parameters import Parameters
from pyoops.generic.obs_space import ObsSpace, ObsVector
from pyoops.interface.observations import ObsError
from pyoops.util.errors import InputFileError

__all__ = ["DiagonalObsError", "DiagonalObsErrorParameters"]


class DiagonalObsErrorParameters(Parameters):
    covariance_model: Literal["diagonal"] = Field(description="'diagonal': uncorrelated errors.")
    inflation: float = Field(1.0, gt=0, description="Factor applied to every standard deviation.")


class DiagonalObsError(ObsError):
    r"""Uncorrelated observation errors, :math:`\mathbf{R} = \mathrm{diag}(\sigma^2)`.

    :math:`\sigma` comes from the ObsSpace group ``ObsError`` (times
    ``inflation``); unused observations (QC) have :math:`1/\sigma^2 = 0`.
    """

    Parameters = DiagonalObsErrorParameters

    def __init__(self, params: Any, obs_space: ObsSpace):
        super().__init__(params, obs_space)
        sigma = ObsVector.from_group(obs_space, "ObsError").values * params.inflation
        self._mask = obs_space.qc_mask()
        bad = self._mask & ~(np.isfinite(sigma) & (sigma > 0))
        if bad.any():
            raise InputFileError(obs_space.source, f"ObsError must be positive and finite for every used observation; "
                                                   f"{int(bad.sum())} value(s) are not (obs space '{obs_space.name}')")
        self._sigma = np.where(self._mask, sigma, 1.0)

    def multiply(self, dy: ObsVector) -> ObsVector:
        return ObsVector(dy.obs_space, np.where(self._mask, dy.values * self._sigma**2, 0.0))

    def inverse_multiply(self, dy: ObsVector) -> ObsVector:
        return ObsVector(dy.obs_space, np.where(self._mask, dy.values / self._sigma**2, 0.0))

    def multiply_sqrt(self, dy: ObsVector) -> ObsVector:
        r""":math:`\mathbf{R}^{1/2}\delta y`."""
        return ObsVector(dy.obs_space, np.where(self._mask, dy.values * self._sigma, 0.0))

    def multiply_inverse_sqrt(self, dy: ObsVector) -> ObsVector:
        r""":math:`\mathbf{R}^{-1/2}\delta y`."""
        return ObsVector(dy.obs_space, np.where(self._mask, dy.values / self._sigma, 0.0))

    def randomize(self, rng: np.random.Generator) -> ObsVector:
        noise = rng.standard_normal(self._sigma.shape)
        return ObsVector(self.obs_space, np.where(self._mask, noise * self._sigma, 0.0))

    def obserrors(self) -> ObsVector:
        return ObsVector(self.obs_space, np.where(self._mask, self._sigma, np.nan))

    def update(self, obserrors: ObsVector) -> None:
        values = np.asarray(obserrors.values, dtype=float)
        if (self._mask & ~(np.isfinite(values) & (values > 0))).any():
            raise ValueError("updated observation errors must be positive where observations are used")
        self._sigma = np.where(self._mask, values, 1.0)

    def inverse_variance(self) -> ObsVector:
        return ObsVector(self.obs_space, np.where(self._mask, 1.0 / self._sigma**2, 0.0))
