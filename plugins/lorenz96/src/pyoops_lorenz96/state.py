r"""Lorenz-96 states and their analytic initial conditions.

``analytic init: {method: NAME, ...}`` selects one of

* ``rest-perturbed``: the rest state :math:`x_j = F` with ``perturbation`` added at
  grid point ``index`` (default :math:`N/2`); the classical way to start a spin-up,
  since :math:`x_j = F` is an unstable fixed point.
* ``sinusoid``: :math:`x_j = F + a \sin(2\pi k j / N)` with ``amplitude`` :math:`a` and
  ``wavenumber`` :math:`k`.
* ``random``: :math:`x_j = F + \sigma \varepsilon_j`, :math:`\varepsilon_j \sim \mathcal{N}(0, 1)`,
  drawn from the stream :func:`pyoops.util.random.generator` of ``seed``, with ``std`` :math:`\sigma`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import Field

from pyoops.config.parameters import Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.generic.state import GenericState, analytic_init_methods, select_analytic_init
from pyoops.interface.geometry import Geometry
from pyoops.util.datetime import DateTime
from pyoops.util.errors import ConfigError, join_path
from pyoops.util.random import generator

__all__ = ["AnalyticInitParameters", "Lorenz96State", "RandomInit", "RestPerturbedInit", "SinusoidInit"]


class _Init(Parameters):
    f: float = Field(8.0, allow_inf_nan=False, description="Forcing F, the mean value of the state.")


class RestPerturbedInit(_Init):
    """``{method: rest-perturbed, perturbation: 0.01, index: N/2}``."""

    method: Literal["rest-perturbed"]
    perturbation: float = Field(0.01, allow_inf_nan=False, description="Value added at grid point 'index'.")
    index: int | None = Field(None, ge=0, description="Perturbed grid point (default N/2).")


class SinusoidInit(_Init):
    """``{method: sinusoid, amplitude: 1.0, wavenumber: 1}``."""

    method: Literal["sinusoid"]
    amplitude: float = Field(1.0, allow_inf_nan=False, description="Amplitude of the sine wave.")
    wavenumber: int = Field(1, description="Number of waves around the circle.")


class RandomInit(_Init):
    """``{method: random, seed: 1, std: 1.0}``."""

    method: Literal["random"]
    seed: int = Field(ge=0, description="Seed of the random stream (a non-negative integer).")
    std: float = Field(1.0, ge=0.0, allow_inf_nan=False, description="Standard deviation around F.")


#: The analytic initial conditions, discriminated by ``method`` (for JSON schemas).
AnalyticInitParameters = Annotated[Union[RestPerturbedInit, SinusoidInit, RandomInit], Field(discriminator="method")]

_METHODS = analytic_init_methods(AnalyticInitParameters)


class Lorenz96State(GenericState):
    """A Lorenz-96 state (the generic FieldSet-backed state plus analytic initial conditions)."""

    analytic_methods = tuple(_METHODS)

    @classmethod
    def analytic_init(cls, geometry: Geometry, config: dict[str, Any], date: DateTime, path: str) -> FieldSet:
        """Fields of the analytic initial condition described by ``config`` (see the module docs)."""
        params: Any = select_analytic_init(_METHODS, config, path)
        n = geometry.shape[-1]
        x = np.full(geometry.shape, params.f)
        if isinstance(params, RestPerturbedInit):
            index = n // 2 if params.index is None else params.index
            if index >= n:
                raise ConfigError(f"grid point {index} is outside 0..{n - 1}", join_path(path, "index"))
            x[..., index] += params.perturbation
        elif isinstance(params, SinusoidInit):
            x += params.amplitude * np.sin(2.0 * np.pi * params.wavenumber * np.arange(n) / n)
        else:
            x += params.std * generator(params.seed).standard_normal(geometry.shape)
        return FieldSet({"x": x}, copy=False)
