r"""Conserved quantities and eddy diagnostics of the two-layer QG channel.

Without forcing or dissipation the QG equations conserve, per unit density,

* the total energy (kinetic plus available potential), here per unit volume,

  .. math::

      E = \frac{1}{L_x L_y (D_1 + D_2)} \int \Big[\tfrac12 \sum_l D_l |\nabla\psi_l|^2
          + \tfrac12 \frac{f_0^2}{g'} (\psi_1 - \psi_2)^2\Big]\,\mathrm{d}A
      \quad (\mathrm{m^2\,s^{-2}}),

  with the differences of the five-point Laplacian (gradients between grid
  points) and :math:`g' = g\,\Delta\theta/\bar\theta` (:math:`D_l F_l = f_0^2/g'`);
* the PV integral of each layer :math:`\int q_l\,\mathrm{d}A` over the interior rows
  (the wall rows carry the boundary values), given the circulations along the
  walls, which the model keeps.

Every function accepts leading member axes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyoops_qg.geometry import CORIOLIS, DELTA_THETA, GRAVITY

__all__ = ["eddy_energy", "energy", "pv_integrals", "zonal_mean_removed"]


def energy(geometry: Any, psi: np.ndarray, parts: bool = False) -> Any:
    """Total energy per unit volume (m² s⁻²); with ``parts``, ``(kinetic, potential)``."""
    dx, dy = geometry.dx, geometry.dy
    gy = np.diff(psi, axis=-2) / dy                                   # between rows, walls included
    gx = (np.roll(psi, -1, axis=-1) - psi)[..., 1:-1, :] / dx         # interior rows
    depths = geometry.depths
    ke = 0.5 * sum(depths[k] * ((gy[..., k, :, :] ** 2).sum(axis=(-2, -1))
                                + (gx[..., k, :, :] ** 2).sum(axis=(-2, -1))) for k in range(2))
    shear = (psi[..., 0, 1:-1, :] - psi[..., 1, 1:-1, :]) ** 2
    pe = 0.5 * CORIOLIS ** 2 / (GRAVITY * DELTA_THETA) * shear.sum(axis=(-2, -1))
    scale = dx * dy / (geometry.lx * geometry.ly * depths.sum())
    ke, pe = ke * scale, pe * scale
    return (ke, pe) if parts else ke + pe


def zonal_mean_removed(psi: np.ndarray) -> np.ndarray:
    """:math:`\\psi' = \\psi - \\overline{\\psi}^x` (the eddies)."""
    return psi - psi.mean(axis=-1, keepdims=True)


def eddy_energy(geometry: Any, psi: np.ndarray) -> Any:
    """Energy (m² s⁻²) of the departure from the zonal mean: the waves of an instability."""
    return energy(geometry, zonal_mean_removed(psi))


def pv_integrals(geometry: Any, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per layer, :math:`\\int q_l\\,\\mathrm{d}A` and :math:`\\int |q_l|\\,\\mathrm{d}A` over the interior rows."""
    inner = q[..., 1:-1, :]
    area = geometry.dx * geometry.dy
    return inner.sum(axis=(-2, -1)) * area, np.abs(inner).sum(axis=(-2, -1)) * area
