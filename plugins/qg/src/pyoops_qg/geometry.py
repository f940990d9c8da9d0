r"""Two-layer quasi-geostrophic channel geometry: ``{nx, ny, depths, orography}``.

The domain is the OOPS QG channel, :math:`L_x \times L_y` = 12,000 km × 6,300 km,
periodic in :math:`x` and closed by rigid walls at :math:`y = 0` and
:math:`y = L_y`, with two layers of depths :math:`D_1` (lower, the one with
orography, as OOPS's layer 1) and :math:`D_2` (upper).

Grid
    ``nx`` points :math:`x_i = i\,\Delta x`, :math:`\Delta x = L_x/n_x` (periodic),
    and ``ny`` rows :math:`y_j = j\,\Delta y`, :math:`\Delta y = L_y/(n_y - 1)`,
    *including the two walls* (rows 0 and :math:`n_y - 1`).  The wall rows carry
    the boundary streamfunction (constant along each wall, so no flow crosses
    it); the dynamics acts on the :math:`n_y - 2` interior rows, so ``ny`` must be
    at least 3.  The two layers form a level axis ``z`` whose coordinate is the
    height of the middle of each layer above the ground,
    :math:`z_1 = D_1/2` and :math:`z_2 = D_1 + D_2/2`.  Fields have shape
    ``(2, ny, nx)``; file dimensions are ``z``, ``yc``, ``xc`` (``x`` is the
    streamfunction variable).

Physics (dimensional, as OOPS)
    :math:`f_0 = 10^{-4}\,\mathrm{s^{-1}}`, :math:`\beta = 1.5\times 10^{-11}\,
    \mathrm{m^{-1}s^{-1}}`, :math:`g = 10\,\mathrm{m\,s^{-2}}`,
    :math:`\Delta\theta/\bar\theta = 0.1`, and the layer coupling coefficients
    :math:`F_i = f_0^2 / (g\,(\Delta\theta/\bar\theta)\,D_i)` (m⁻²).  The
    potential vorticity is

    .. math::

        q_1 = \nabla^2\psi_1 - F_1(\psi_1 - \psi_2) + \beta (y - L_y/2) + R_s, \qquad
        q_2 = \nabla^2\psi_2 - F_2(\psi_2 - \psi_1) + \beta (y - L_y/2),

    with the orographic term :math:`R_s = f_0 h(x, y)/D_1` of a Gaussian mountain
    :math:`h = h_0 \exp(-r^2/a^2)` in the lower layer (OOPS's ``heating`` term,
    centred at :math:`(L_x/4, 3L_y/4)` by default; ``orography: {height: 0}`` is a
    flat bottom).  With the OOPS depths 4500/5500 m the Rossby radius
    :math:`(F_1 + F_2)^{-1/2}` is about 500 km.

Observation locations are ``(x, y, z)`` in metres: :math:`0 \le x \le L_x`,
:math:`0 \le y \le L_y`, :math:`0 \le z \le D_1 + D_2`; linear interpolation in
:math:`x, y`, nearest layer in :math:`z`.  Anything outside is one clear error.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from pyoops.config.parameters import Parameters, as_parameters
from pyoops.generic.grid import Axis, StructuredGrid
from pyoops.interface.geometry import Locations
from pyoops.util.errors import ConfigError

__all__ = [
    "BETA",
    "CORIOLIS",
    "DELTA_THETA",
    "DOMAIN_MERIDIONAL",
    "DOMAIN_ZONAL",
    "GRAVITY",
    "OrographyParameters",
    "QgGeometry",
    "QgGeometryParameters",
    "WallAxis",
]

#: Coriolis parameter f0 (s⁻¹).
CORIOLIS = 1.0e-4
#: Meridional gradient of the Coriolis parameter β (m⁻¹ s⁻¹).
BETA = 1.5e-11
#: Gravity g (m s⁻²).
GRAVITY = 10.0
#: Relative potential-temperature jump between the layers Δθ/θ̄.
DELTA_THETA = 0.1
#: Zonal length of the channel L_x (m).
DOMAIN_ZONAL = 12.0e6
#: Meridional width of the channel L_y (m).
DOMAIN_MERIDIONAL = 6.3e6

VARIABLES = ("x", "q", "u", "v")


@dataclass(frozen=True)
class WallAxis(Axis):
    """A bounded axis whose first and last points lie *on* the walls.

    ``n`` points :math:`y_j = j L/(n-1)` between walls at 0 and :math:`L`, so the
    spacing is :math:`L/(n-1)` (a :meth:`~pyoops.generic.grid.Axis.bounded_axis` has cell centres
    half a spacing from its walls instead).
    """

    @classmethod
    def with_walls(cls, name: str, n: int, length: float, dim: str = "") -> "WallAxis":
        return cls(name, np.linspace(0.0, length, n), 0.0, float(length), False, dim=dim)

    @property
    def spacing(self) -> float:
        return (self.upper - self.lower) / (self.n - 1)


class OrographyParameters(Parameters):
    """``orography:`` a Gaussian mountain :math:`h_0 \\exp(-r^2/a^2)` under the lower layer."""

    height: float = Field(1000.0, allow_inf_nan=False,
                          description="Mountain height h0 in metres (0: flat bottom).")
    x: float = Field(DOMAIN_ZONAL / 4, ge=0.0, le=DOMAIN_ZONAL, description="Zonal position of the top (m).")
    y: float = Field(0.75 * DOMAIN_MERIDIONAL, ge=0.0, le=DOMAIN_MERIDIONAL,
                     description="Meridional position of the top (m).")
    radius: float = Field(1.0e6, gt=0.0, allow_inf_nan=False, description="e-folding radius a (m).")


class QgGeometryParameters(Parameters):
    """YAML keys of the QG geometry, e.g. ``{nx: 40, ny: 20, depths: [4500.0, 5500.0]}``."""

    nx: int = Field(ge=4, description="Number of points along the periodic x axis (at least 4, the cubic stencil).")
    ny: int = Field(ge=3, description="Number of rows across the channel, both walls included (at least 3: one "
                                      "interior row between the walls).")
    depths: list[float] = Field(description="Depths of the lower and upper layers D1, D2 (m, positive).")
    orography: OrographyParameters = Field(default_factory=OrographyParameters,
                                           description="Gaussian mountain under the lower layer.")

    @field_validator("depths")
    @classmethod
    def _two_positive(cls, value: list[float]) -> list[float]:
        if len(value) != 2 or not all(np.isfinite(d) and d > 0 for d in value):
            raise ValueError(f"expected two positive layer depths in metres [D1, D2], got {value}")
        return [float(d) for d in value]


class QgGeometry(StructuredGrid):
    """The periodic channel with two layers and the variables ``x, q, u, v``.

    ``x`` is the streamfunction :math:`\\psi` (m² s⁻¹), ``q`` the potential
    vorticity (s⁻¹), ``u = -∂ψ/∂y`` and ``v = ∂ψ/∂x`` the winds (m s⁻¹).

    Parameters
    ----------
    params:
        Validated :class:`QgGeometryParameters`, or the YAML mapping itself.
    """

    Parameters = QgGeometryParameters

    def __init__(self, params: QgGeometryParameters | Mapping[str, Any]):
        params = as_parameters(QgGeometryParameters, params, "geometry")
        self.params = params
        d1, d2 = params.depths
        axes = [
            Axis.level_axis("z", [0.5 * d1, d1 + 0.5 * d2]),
            WallAxis.with_walls("y", params.ny, DOMAIN_MERIDIONAL, dim="yc"),
            Axis.periodic_axis("x", params.nx, DOMAIN_ZONAL, dim="xc"),
        ]
        super().__init__(axes, variables=VARIABLES)

    # Grid ------------------------------------------------------------------------------------
    def coordinate_units(self) -> dict[str, str]:
        """Coordinates ``xc``, ``yc`` (horizontal) and ``z`` (layer mid-depths) are in metres."""
        return {"xc": "m", "yc": "m", "z": "m"}

    def spacing_keys(self) -> dict[str, str]:
        """``nx`` and ``ny`` set the spacings of the fixed channel; ``depths`` the levels."""
        return {"xc": "nx", "yc": "ny", "z": "depths"}

    @property
    def nx(self) -> int:
        return self.shape[2]

    @property
    def ny(self) -> int:
        return self.shape[1]

    @property
    def lx(self) -> float:
        return DOMAIN_ZONAL

    @property
    def ly(self) -> float:
        return DOMAIN_MERIDIONAL

    @property
    def dx(self) -> float:
        return DOMAIN_ZONAL / self.nx

    @property
    def dy(self) -> float:
        return DOMAIN_MERIDIONAL / (self.ny - 1)

    @property
    def depths(self) -> np.ndarray:
        """Layer depths :math:`(D_1, D_2)` (lower, upper)."""
        return np.array(self.params.depths)

    @property
    def heights(self) -> np.ndarray:
        """Heights of the layer middles, the ``z`` coordinate of the levels."""
        return self.axes[0].points.copy()

    # Physics ---------------------------------------------------------------------------------
    @functools.cached_property
    def coupling(self) -> np.ndarray:
        """:math:`F_i = f_0^2/(g\\,\\Delta\\theta/\\bar\\theta\\,D_i)` (m⁻²), shape ``(2,)``."""
        return CORIOLIS ** 2 / (GRAVITY * DELTA_THETA * self.depths)

    @property
    def rossby_radius(self) -> float:
        """Internal Rossby radius :math:`(F_1 + F_2)^{-1/2}` (m)."""
        return float(1.0 / np.sqrt(self.coupling.sum()))

    @functools.cached_property
    def orography(self) -> np.ndarray:
        """Orography height :math:`h(x, y)` (m), shape ``(ny, nx)``, periodic in x."""
        o = self.params.orography
        mesh = self.mesh()
        x, y = mesh["x"][0], mesh["y"][0]
        dist_x = np.abs(x - o.x)
        dist_x = np.minimum(dist_x, DOMAIN_ZONAL - dist_x)
        return o.height * np.exp(-(dist_x ** 2 + (y - o.y) ** 2) / o.radius ** 2)

    @functools.cached_property
    def pv_offset(self) -> np.ndarray:
        """The part of q that does not depend on ψ, :math:`\\beta(y - L_y/2)` plus :math:`R_s` in layer 1.

        Shape ``(2, ny, nx)``.
        """
        y = self.axes[1].points
        beta = np.broadcast_to((BETA * (y - 0.5 * DOMAIN_MERIDIONAL))[:, None], (self.ny, self.nx))
        out = np.stack([beta + CORIOLIS * self.orography / self.depths[0], beta.copy()])
        return out

    @functools.cached_property
    def operators(self) -> Any:
        """The discrete operators of this grid (:class:`pyoops_qg.numerics.QgOperators`)."""
        from pyoops_qg.numerics import QgOperators

        return QgOperators(self)

    # Geometry interface ----------------------------------------------------------------------
    def check_locations(self, locations: Locations, source: str = "") -> None:
        """Every location must lie in the channel and between the ground and the lid."""
        where = f"{source}: " if source else ""
        bounds = {"x": (0.0, DOMAIN_ZONAL), "y": (0.0, DOMAIN_MERIDIONAL), "z": (0.0, float(self.depths.sum()))}
        for name, (lo, hi) in bounds.items():
            if name not in locations.coords:
                raise ConfigError(f"{where}observation locations lack coordinate '{name}' "
                                  f"(QG locations are x, y, z in metres)")
            c = locations.coords[name]
            bad = ~np.isfinite(c) | (c < lo) | (c > hi)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ConfigError(f"{where}{int(bad.sum())} observation(s) outside the QG domain: {name}[{i}] = "
                                  f"{c[i]!r}, expected {lo:g} <= {name} <= {hi:g} m")

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["depths"] = [float(d) for d in self.params.depths]
        out["orography"] = self.params.orography.model_dump()
        return out
