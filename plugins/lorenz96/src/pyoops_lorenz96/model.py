r"""The Lorenz-96 model, its tangent linear and its adjoint.

The model (Lorenz 1996) advances :math:`N` periodic variables with

.. math::

    \frac{\mathrm{d}x_j}{\mathrm{d}t} = f_j(x) = (x_{j+1} - x_{j-2})\, x_{j-1} - x_j + F,
    \qquad x_{j+N} = x_j,

integrated by the classical fourth-order Runge--Kutta scheme

.. math::

    k_1 = f(x), \quad k_2 = f(x + \tfrac{h}{2} k_1), \quad
    k_3 = f(x + \tfrac{h}{2} k_2), \quad k_4 = f(x + h k_3), \qquad
    \mathcal{M}(x) = x + \tfrac{h}{6}(k_1 + 2k_2 + 2k_3 + k_4).

As in OOPS, one model time unit is 5 days, so ``tstep: PT6H`` is :math:`h = 0.05`.
Every array may carry leading batch axes (ensemble members): the stencil only
shifts the last axis, so one call advances a whole ensemble.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field

from pyoops.config.parameters import PositiveDurationField, as_parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.generic import timestepping
from pyoops.generic.timestepping import FixedTimeStep, TimeSteppingParameters
from pyoops.interface.geometry import Geometry
from pyoops.interface.model import LinearModel, Model
from pyoops.util.datetime import Duration

__all__ = [
    "Lorenz96Model",
    "Lorenz96Parameters",
    "Lorenz96TLM",
    "Lorenz96TLMParameters",
    "MODEL_TIME_UNIT",
    "rk4_step",
    "rk4_step_ad",
    "rk4_step_tl",
    "tendency",
    "tendency_ad",
    "tendency_tl",
]

#: Length of one Lorenz-96 time unit (the OOPS convention).
MODEL_TIME_UNIT = Duration("P5D")


class _Common(TimeSteppingParameters):
    f: float = Field(8.0, allow_inf_nan=False, description="Forcing F.")
    tstep: PositiveDurationField = Field(Duration("PT6H"), description="Time step (ISO-8601); 5 days = 1 model "
                                                                         "time unit.")

    @property
    def dt(self) -> float:
        """The time step in model time units."""
        return self.time_step(MODEL_TIME_UNIT)


class Lorenz96Parameters(_Common):
    """YAML keys of the nonlinear model: ``{name: Lorenz96, f: 8.0, tstep: PT6H}``."""

    name: Literal["Lorenz96"] = "Lorenz96"


class Lorenz96TLMParameters(_Common):
    """YAML keys of the linear model: ``{name: Lorenz96TLM, f: 8.0, tstep: PT6H}``.

    ``tstep`` and ``f`` must be those of the nonlinear model that made the trajectory.
    """

    name: Literal["Lorenz96TLM"] = "Lorenz96TLM"


# Kernels on raw arrays (shape (..., N)) -----------------------------------------------
# Neighbours come from one periodic halo per array rather than np.roll (one
# concatenate instead of three copies; np.roll costs ~20 us per call on N = 40).
def wrap(x: np.ndarray, left: int, right: int) -> np.ndarray:
    """``x`` extended periodically by ``left`` points before and ``right`` after, along the last axis."""
    n = x.shape[-1]
    return np.concatenate((x[..., n - left:], x, x[..., :right]), axis=-1)


def tendency(x: np.ndarray, f: float) -> np.ndarray:
    r""":math:`f_j(x) = (x_{j+1} - x_{j-2})\,x_{j-1} - x_j + F` along the last axis."""
    n, p = x.shape[-1], wrap(x, 2, 1)  # p[..., j + 2] = x_j
    return (p[..., 3:] - p[..., :n]) * p[..., 1:n + 1] - x + f


def tendency_tl(dx: np.ndarray, x: np.ndarray) -> np.ndarray:
    r"""Jacobian product :math:`J(x)\,\delta x`, with
    :math:`(J\delta x)_j = (\delta x_{j+1} - \delta x_{j-2}) x_{j-1} + (x_{j+1} - x_{j-2}) \delta x_{j-1} - \delta x_j`.
    """
    n, p, q = x.shape[-1], wrap(x, 2, 1), wrap(dx, 2, 1)
    return (q[..., 3:] - q[..., :n]) * p[..., 1:n + 1] + (p[..., 3:] - p[..., :n]) * q[..., 1:n + 1] - dx


def tendency_ad(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    r"""Transposed Jacobian product :math:`J(x)^\mathsf{T} g`.

    With :math:`a_j = x_{j-1} g_j` and :math:`b_j = (x_{j+1} - x_{j-2}) g_j`, each term of
    :func:`tendency_tl` that reads :math:`\delta x_{j+s}` sends its weight back by :math:`s`:
    :math:`(J^\mathsf{T} g)_j = a_{j-1} - a_{j+2} + b_{j+1} - g_j`.
    """
    n, p = x.shape[-1], wrap(x, 2, 1)
    a = wrap(p[..., 1:n + 1] * g, 1, 2)  # a[..., j + 1] = a_j
    b = wrap((p[..., 3:] - p[..., :n]) * g, 0, 1)
    return a[..., :n] - a[..., 3:] + b[..., 1:] - g


def rk4_step(x: np.ndarray, f: float, h: float) -> np.ndarray:
    """One RK4 step of length ``h`` (model time units): :func:`pyoops.generic.timestepping.rk4_step` of :func:`tendency`."""
    return timestepping.rk4_step(x, functools.partial(tendency, f=f), h)


def rk4_step_tl(dx: np.ndarray, x: np.ndarray, f: float, h: float) -> np.ndarray:
    """Exact TL of :func:`rk4_step` about ``x`` (:func:`pyoops.generic.timestepping.rk4_step_tl`)."""
    return timestepping.rk4_step_tl(dx, x, functools.partial(tendency, f=f), tendency_tl, h)


def rk4_step_ad(ax: np.ndarray, x: np.ndarray, f: float, h: float) -> np.ndarray:
    """Exact adjoint of :func:`rk4_step_tl` (:func:`pyoops.generic.timestepping.rk4_step_ad`)."""
    return timestepping.rk4_step_ad(ax, x, functools.partial(tendency, f=f), tendency_ad, h)


class Lorenz96Model(FixedTimeStep, Model):
    """Nonlinear Lorenz-96 model, ``{name: Lorenz96, f: 8.0, tstep: PT6H}``.

    Only a non-positive ``tstep`` is rejected: the stable step depends on ``f`` and
    on the state's amplitude.  With :math:`F = 8` a spun-up state stays bounded for
    :math:`h \\le 0.15` (``PT18H``) and blows up at :math:`h = 0.2` (``P1D``), which
    :func:`~pyoops.generic.forecast.forecast` reports as a NumericalError.

    Parameters
    ----------
    params:
        Validated :class:`Lorenz96Parameters`, or the YAML mapping itself.
    geometry:
        A :class:`~pyoops_lorenz96.geometry.Lorenz96Geometry`.
    """

    Parameters = Lorenz96Parameters

    def __init__(self, params: Lorenz96Parameters | Mapping[str, Any], geometry: Geometry):
        super().__init__(as_parameters(Lorenz96Parameters, params, "model"), geometry)
        self.f = float(self.params.f)
        self.dt = self.params.dt

    def step(self, fields: FieldSet) -> FieldSet:
        """Advance ``x`` (shape ``(..., N)``) by one RK4 step."""
        return FieldSet({"x": rk4_step(fields["x"], self.f, self.dt)}, copy=False)


class Lorenz96TLM(FixedTimeStep, LinearModel):
    """Tangent linear and adjoint of :class:`Lorenz96Model`, ``{name: Lorenz96TLM, tstep: PT6H}``.

    The TL is the exact derivative of the RK4 step (not a discretisation of the
    continuous TL), so the adjoint test holds to round-off.  ``tstep`` and ``f``
    must equal the nonlinear model's; the trajectory is the state at the start of
    each step, and may be a single state or batched like the increments.
    """

    Parameters = Lorenz96TLMParameters

    def __init__(self, params: Lorenz96TLMParameters | Mapping[str, Any], geometry: Geometry):
        super().__init__(as_parameters(Lorenz96TLMParameters, params, "linear model"), geometry)
        self.f = float(self.params.f)
        self.dt = self.params.dt

    def step_tl(self, dfields: FieldSet, trajectory: FieldSet) -> FieldSet:
        return FieldSet({"x": rk4_step_tl(dfields["x"], trajectory["x"], self.f, self.dt)}, copy=False)

    def step_ad(self, dfields: FieldSet, trajectory: FieldSet) -> FieldSet:
        return FieldSet({"x": rk4_step_ad(dfields["x"], trajectory["x"], self.f, self.dt)}, copy=False)
