r"""Gaspari–Cohn localization in observation space and distance functions.

Convention: the localization length :math:`\ell` is the **half-width** :math:`c` of the
Gaspari–Cohn (1999, eq. 4.10) function, so :math:`L_\ell(r) = \mathrm{GC}(r/\ell)` is 1 at
:math:`r = 0`, :math:`0.208` at :math:`r = \ell` and exactly 0 from :math:`r = 2\ell` on.  This is
the :math:`c` of :func:`pyoops.saber.generic.ensemble.gaspari_cohn`; the LETKF's
``lengthscale`` (the cut-off distance) is :math:`2\ell`.  With :math:`z = r/\ell \ge 0`:

.. math::

    \mathrm{GC}(z) = \begin{cases}
    -\tfrac14 z^5 + \tfrac12 z^4 + \tfrac58 z^3 - \tfrac53 z^2 + 1, & 0 \le z \le 1,\\
    \tfrac1{12} z^5 - \tfrac12 z^4 + \tfrac58 z^3 + \tfrac53 z^2 - 5z + 4 - \tfrac23 z^{-1}, & 1 < z < 2,\\
    0, & z \ge 2,
    \end{cases}

and, for the gradient with respect to :math:`\log\ell`,
:math:`\partial L_\ell(r)/\partial\log\ell = -z\,\mathrm{GC}'(z)` with

.. math::

    \mathrm{GC}'(z) = \begin{cases}
    -\tfrac54 z^4 + 2 z^3 + \tfrac{15}8 z^2 - \tfrac{10}3 z, & 0 \le z \le 1,\\
    \tfrac5{12} z^4 - 2 z^3 + \tfrac{15}8 z^2 + \tfrac{10}3 z - 5 + \tfrac2{3} z^{-2}, & 1 < z < 2,\\
    0, & z \ge 2.
    \end{cases}

:math:`L_\ell \circ \mathbf C` is positive semi-definite for any covariance :math:`\mathbf C`
(Schur product theorem; GC is a compactly supported correlation function in up to three
dimensions).  :math:`\ell = \infty` means no localization (:math:`L = 1`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "DistanceFunction",
    "euclidean_distance",
    "gaspari_cohn",
    "gaspari_cohn_derivative",
    "localization",
    "localization_log_length_derivative",
    "periodic_distance",
]

DistanceFunction = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], np.ndarray]
"""``distance(coords_a, coords_b) -> (p_a, p_b)`` array of distances between two sets of locations."""


def gaspari_cohn(z: np.ndarray) -> np.ndarray:
    r""":math:`\mathrm{GC}(z)` for :math:`z = r/\ell` (any shape; :math:`|z|` is used)."""
    z = np.abs(np.asarray(z, dtype=np.float64))
    out = np.zeros_like(z)
    inner = z <= 1.0
    x = z[inner]
    out[inner] = 1.0 + x**2 * (-5.0 / 3.0 + x * (0.625 + x * (0.5 - 0.25 * x)))
    outer = (z > 1.0) & (z < 2.0)
    x = z[outer]
    out[outer] = 4.0 - 2.0 / (3.0 * x) + x * (-5.0 + x * (5.0 / 3.0 + x * (0.625 + x * (-0.5 + x / 12.0))))
    return out


def gaspari_cohn_derivative(z: np.ndarray) -> np.ndarray:
    r""":math:`\mathrm{GC}'(z)`, the derivative with respect to :math:`z \ge 0`."""
    z = np.abs(np.asarray(z, dtype=np.float64))
    out = np.zeros_like(z)
    inner = z <= 1.0
    x = z[inner]
    out[inner] = x * (-10.0 / 3.0 + x * (1.875 + x * (2.0 - 1.25 * x)))
    outer = (z > 1.0) & (z < 2.0)
    x = z[outer]
    out[outer] = -5.0 + 2.0 / (3.0 * x**2) + x * (10.0 / 3.0 + x * (1.875 + x * (-2.0 + x * 5.0 / 12.0)))
    return out


def localization(distance: np.ndarray, length: float) -> np.ndarray:
    r""":math:`L_\ell = \mathrm{GC}(r/\ell)` elementwise; all ones for :math:`\ell = \infty`."""
    r = np.asarray(distance, dtype=np.float64)
    if np.isinf(length):
        return np.ones_like(r)
    return gaspari_cohn(r / length)


def localization_log_length_derivative(distance: np.ndarray, length: float) -> np.ndarray:
    r""":math:`\partial L_\ell/\partial\log\ell = -z\,\mathrm{GC}'(z)`, :math:`z = r/\ell` (zero for :math:`\ell=\infty`)."""
    r = np.asarray(distance, dtype=np.float64)
    if np.isinf(length):
        return np.zeros_like(r)
    z = r / length
    return -z * gaspari_cohn_derivative(z)


def periodic_distance(period: float = 1.0, coordinate: str = "x") -> DistanceFunction:
    r"""Distance on a circle of circumference ``period``: :math:`\min(|\Delta x|, P - |\Delta x|)`.

    For Lorenz-96 with ``x`` in :math:`[0, 1)`: :math:`d = \min(|\Delta x|, 1 - |\Delta x|)`.
    """

    def distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> np.ndarray:
        dx = np.abs(np.asarray(a[coordinate], dtype=np.float64)[:, None]
                    - np.asarray(b[coordinate], dtype=np.float64)[None, :]) % period
        return np.minimum(dx, period - dx)

    return distance


def euclidean_distance(coordinates: Sequence[str] = ("x",)) -> DistanceFunction:
    r"""Euclidean distance :math:`\big(\sum_c (\Delta c)^2\big)^{1/2}` over the named coordinates."""
    names = tuple(coordinates)

    def distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> np.ndarray:
        total = 0.0
        for name in names:
            total = total + (np.asarray(a[name], dtype=np.float64)[:, None]
                             - np.asarray(b[name], dtype=np.float64)[None, :]) ** 2
        return np.sqrt(total)

    return distance
