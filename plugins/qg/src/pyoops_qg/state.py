r"""QG states and their analytic initial conditions (OOPS's three).

``analytic init: {method: NAME, ...}`` selects one of

* ``baroclinic-instability``: a zonal flow with vertical shear, the wind of each
  layer :math:`u_l = u_b + (u_t - u_b)\,z_l/(D_1 + D_2)` (OOPS: ``bottom wind``
  :math:`u_b = -2`, ``top wind`` :math:`u_t = 58` m/s, so 11.5 and 41.5 m/s with
  the 4500/5500 m layers), :math:`\psi_l = -u_l\,(y - L_y/2)`.  The shear exceeds
  the two-layer instability threshold :math:`\beta/F_2`, so waves grow from any
  perturbation: the orography, or the optional ``perturbation`` :math:`a` (m/s),
  which adds to both layers
  :math:`a\,\tfrac{L_y}{\pi}\sin(\pi y/L_y)\,\tfrac16\sum_{k=1}^{6}\cos(2\pi k x/L_x + \varphi_k)`
  with fixed phases :math:`\varphi_k = 2\pi k\,0.618034`.
* ``large-vortices``: :math:`\psi_l = u_l L_y \cos(2\pi x/L_x)\sin(\pi y/L_y)`, the same
  :math:`u_l` (two cyclone/anticyclone pairs, winds up to :math:`\pi u_l`).
* ``uniform field``: :math:`\psi_l = \mathrm{uval} - U_l (y - L_y/2)`: OOPS's constant
  streamfunction ``uval`` (rest), plus an optional uniform ``zonal wind``
  :math:`[U_1, U_2]` (m/s), a steady solution over a flat bottom.

``q``, ``u`` and ``v`` are computed from :math:`\psi` with the discrete operators
of :mod:`pyoops_qg.numerics`, so every state is consistent.  The wall rows of
:math:`\psi` are constant along each wall.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import Field, field_validator

from pyoops.config.parameters import Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.generic.state import GenericState, analytic_init_methods, select_analytic_init
from pyoops.interface.geometry import Geometry
from pyoops.util.datetime import DateTime

__all__ = ["AnalyticInitParameters", "BaroclinicInstabilityInit", "LargeVorticesInit", "QgState",
           "UniformFieldInit"]


class _Winds(Parameters):
    bottom_wind: float = Field(-2.0, allow_inf_nan=False, description="Zonal wind at the ground u_b (m/s).")
    top_wind: float = Field(58.0, allow_inf_nan=False, description="Zonal wind at the lid u_t (m/s).")


class BaroclinicInstabilityInit(_Winds):
    """``{method: baroclinic-instability, bottom wind: -2, top wind: 58, perturbation: 0}``."""

    method: Literal["baroclinic-instability"]
    perturbation: float = Field(0.0, allow_inf_nan=False,
                                description="Wind scale a (m/s) of the wave perturbation added to both layers.")


class LargeVorticesInit(_Winds):
    """``{method: large-vortices, bottom wind: -2, top wind: 58}``."""

    method: Literal["large-vortices"]


class UniformFieldInit(Parameters):
    """``{method: uniform field, uval: 0.0, zonal wind: [0.0, 0.0]}``."""

    method: Literal["uniform field"]
    uval: float = Field(0.0, allow_inf_nan=False, description="Constant streamfunction (m^2/s).")
    zonal_wind: list[float] = Field([0.0, 0.0], description="Uniform zonal wind of the lower and upper layer (m/s).")

    @field_validator("zonal_wind")
    @classmethod
    def _two(cls, value: list[float]) -> list[float]:
        if len(value) != 2 or not all(np.isfinite(v) for v in value):
            raise ValueError(f"expected two finite winds [U1, U2] in m/s, got {value}")
        return value


#: The analytic initial conditions, discriminated by ``method`` (for JSON schemas).
AnalyticInitParameters = Annotated[Union[BaroclinicInstabilityInit, LargeVorticesInit, UniformFieldInit],
                                   Field(discriminator="method")]

_METHODS = analytic_init_methods(AnalyticInitParameters)


def layer_winds(geometry: Any, params: _Winds) -> np.ndarray:
    """:math:`u_l = u_b + (u_t - u_b) z_l / (D_1 + D_2)` for the two layers."""
    return params.bottom_wind + (params.top_wind - params.bottom_wind) * geometry.heights / geometry.depths.sum()


def analytic_streamfunction(geometry: Any, params: Any) -> np.ndarray:
    """:math:`\\psi` of shape ``(2, ny, nx)`` for validated analytic-init parameters."""
    mesh = geometry.mesh()
    x, y = mesh["x"], mesh["y"]
    ly, lx = geometry.ly, geometry.lx
    # sin(pi y / Ly) on the rows, exactly zero on both walls.
    wall_profile = np.sin(np.pi * np.arange(geometry.ny) / (geometry.ny - 1))
    wall_profile[[0, -1]] = 0.0
    wall_profile = wall_profile[None, :, None]
    if isinstance(params, BaroclinicInstabilityInit):
        u = layer_winds(geometry, params)[:, None, None]
        psi = -u * (y - 0.5 * ly)
        if params.perturbation:
            phases = 2.0 * np.pi * np.arange(1, 7) * 0.618034
            wave = sum(np.cos(2.0 * np.pi * k * x[0, 0] / lx + phases[k - 1]) for k in range(1, 7)) / 6.0
            psi = psi + params.perturbation * ly / np.pi * wall_profile * wave[None, None, :]
        return psi
    if isinstance(params, LargeVorticesInit):
        u = layer_winds(geometry, params)[:, None, None]
        return u * ly * np.cos(2.0 * np.pi * x / lx) * wall_profile
    u = np.asarray(params.zonal_wind, dtype=float)[:, None, None]
    return params.uval - u * (y - 0.5 * ly)


class QgState(GenericState):
    """A QG state (the generic FieldSet-backed state plus OOPS's analytic initial conditions)."""

    analytic_methods = tuple(_METHODS)

    @classmethod
    def analytic_init(cls, geometry: Geometry, config: dict[str, Any], date: DateTime, path: str) -> FieldSet:
        """Fields ``x, q, u, v`` of the analytic initial condition described by ``config``."""
        params = select_analytic_init(_METHODS, config, path)
        psi = analytic_streamfunction(geometry, params)
        return FieldSet(geometry.operators.diagnose(psi, geometry.variables), copy=False)
