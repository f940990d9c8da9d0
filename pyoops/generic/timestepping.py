r"""Time stepping shared by model plugins: the ``tstep`` key, and classical RK4 with its exact TL and adjoint.

A plugin whose model is an ordinary differential equation :math:`\dot x = f(x)` writes
its tendency :math:`f`, the Jacobian product :math:`J(x)\,\delta x` and its transpose
:math:`J(x)^\mathsf{T} g`, and takes the step, its tangent linear and its adjoint from
here.  One step of length :math:`h` is

.. math::

    x_1 = x,\quad x_2 = x + \tfrac{h}{2}k_1,\quad x_3 = x + \tfrac{h}{2}k_2,\quad x_4 = x + h k_3,
    \qquad k_i = f(x_i),

    \mathcal{M}(x) = x + \tfrac{h}{6}\big(k_1 + 2(k_2 + k_3) + k_4\big).

Its tangent linear is the exact derivative of this discrete step (not a discretisation
of the continuous TL), so the adjoint test holds to round-off:

.. math::

    \delta k_i = J(x_i)\big(\delta x + c_i h\,\delta k_{i-1}\big),\quad c = (0, \tfrac12, \tfrac12, 1),
    \qquad \delta x' = \delta x + \tfrac{h}{6}\big(\delta k_1 + 2(\delta k_2 + \delta k_3) + \delta k_4\big),

and the adjoint runs the stages backwards:
:math:`w_4 = J(x_4)^\mathsf{T}\tfrac{h}{6}a`,
:math:`w_3 = J(x_3)^\mathsf{T}(\tfrac{h}{3}a + h w_4)`,
:math:`w_2 = J(x_2)^\mathsf{T}(\tfrac{h}{3}a + \tfrac{h}{2} w_3)`,
:math:`w_1 = J(x_1)^\mathsf{T}(\tfrac{h}{6}a + \tfrac{h}{2} w_2)`,
:math:`\delta x^* = a + w_1 + w_2 + w_3 + w_4`.

Arrays may have any shape (leading member axes included); the functions only add,
scale and call the plugin's functions, so a batched tendency gives a batched step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import Field

from pyoops.config.parameters import Parameters, PositiveDurationField
from pyoops.util.datetime import Duration

__all__ = [
    "FixedTimeStep",
    "TimeSteppingParameters",
    "rk4_stages",
    "rk4_step",
    "rk4_step_ad",
    "rk4_step_tl",
]

Tendency = Callable[[np.ndarray], np.ndarray]
#: ``(perturbation, state) -> J(state) perturbation`` (TL) or ``J(state)^T perturbation`` (AD).
JacobianProduct = Callable[[np.ndarray, np.ndarray], np.ndarray]


class TimeSteppingParameters(Parameters):
    """The ``tstep`` key of a model that advances by a fixed step (subclass it, override the default)."""

    tstep: PositiveDurationField = Field(description="Time step (ISO-8601 duration, > 0).")

    def time_step(self, unit: Duration | None = None) -> float:
        """``tstep`` as a number: in seconds, or in multiples of ``unit`` (a model time unit)."""
        seconds = self.tstep.total_seconds()
        return seconds if unit is None else seconds / Duration(unit).total_seconds()


class FixedTimeStep:
    """Mixin of a :class:`~pyoops.interface.model.Model` or ``LinearModel`` whose parameters have ``tstep``."""

    params: Any

    @property
    def time_resolution(self) -> Duration:
        """The ``tstep`` of the parameters."""
        return self.params.tstep


def rk4_stages(x: np.ndarray, tendency: Tendency, h: float) -> list[np.ndarray]:
    """The stage states :math:`x_1, \\dots, x_4` of one step (what the TL and the adjoint linearise about)."""
    x2 = x + 0.5 * h * tendency(x)
    x3 = x + 0.5 * h * tendency(x2)
    x4 = x + h * tendency(x3)
    return [x, x2, x3, x4]


def rk4_step(x: np.ndarray, tendency: Tendency, h: float) -> np.ndarray:
    """One RK4 step of length ``h`` (in the units of the tendency's time).

    Holds at most four arrays of ``x``'s size besides ``x`` (the stages are freed as soon
    as they are used), so it serves large batched grids.
    """
    k1 = tendency(x)
    k2 = tendency(x + 0.5 * h * k1)
    k3 = tendency(x + 0.5 * h * k2)
    total = k2 + k3
    del k2
    k4 = tendency(x + h * k3)
    del k3
    total *= 2.0
    total += k1
    total += k4
    total *= h / 6.0
    total += x
    return total


def rk4_step_tl(dx: np.ndarray, x: np.ndarray, tendency: Tendency, tendency_tl: JacobianProduct,
                h: float) -> np.ndarray:
    """Exact tangent linear of :func:`rk4_step` about ``x``, applied to ``dx``."""
    x1, x2, x3, x4 = rk4_stages(x, tendency, h)
    dk1 = tendency_tl(dx, x1)
    dk2 = tendency_tl(dx + 0.5 * h * dk1, x2)
    dk3 = tendency_tl(dx + 0.5 * h * dk2, x3)
    dk4 = tendency_tl(dx + h * dk3, x4)
    return dx + (h / 6.0) * (dk1 + 2.0 * (dk2 + dk3) + dk4)


def rk4_step_ad(ax: np.ndarray, x: np.ndarray, tendency: Tendency, tendency_ad: JacobianProduct,
                h: float) -> np.ndarray:
    """Exact adjoint of :func:`rk4_step_tl` about ``x``, applied to ``ax``: the stages in reverse order."""
    x1, x2, x3, x4 = rk4_stages(x, tendency, h)
    w4 = tendency_ad((h / 6.0) * ax, x4)
    w3 = tendency_ad((h / 3.0) * ax + h * w4, x3)
    w2 = tendency_ad((h / 3.0) * ax + 0.5 * h * w3, x2)
    w1 = tendency_ad((h / 6.0) * ax + 0.5 * h * w2, x1)
    return ax + w1 + w2 + w3 + w4
