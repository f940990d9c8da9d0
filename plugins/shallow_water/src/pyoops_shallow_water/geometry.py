r"""Shallow-water geometry: a doubly periodic f-plane box on a collocated (Arakawa A) grid.

``geometry: {nx: 30, ny: 30, dx: 31666.667, dy: 31666.667}`` is a box of
:math:`L_x = n_x \Delta x` by :math:`L_y = n_y \Delta y` metres, periodic in both
directions.  Without ``dx``/``dy`` the box is the 950 km square of the classical
twin experiments (:math:`\Delta x = 950\,\mathrm{km}/n_x`), so ``{nx: 60, ny: 60}``
and ``{nx: 15, ny: 15}`` cover the same domain: that is how the coarse grids of the
dual-resolution covariances and inner loops are written.

Grid point :math:`(j, i)` sits at :math:`x_i = i\,\Delta x`, :math:`y_j = j\,\Delta y`
(metres), and **all three variables** ``h`` (height anomaly), ``u`` and ``v`` are
held at the same points (an A-grid).  The collocated grid is what pyoops's
generic machinery assumes (one set of grid-point locations for every variable:
observation interpolation, the SABER ``interpolation`` block, inner-loop
resolution changes and the interface test kit), so every generic tool applies
exactly.  The price, and how the model deals with it, is discussed in
:mod:`pyoops_shallow_water.numerics`.

Fields are ``(ny, nx)`` arrays (``y`` slow, ``x`` fast), with file dimensions ``y``
and ``x``; observation locations are given by coordinates ``x`` and ``y`` in metres
and interpolated bilinearly, with periodic wrap-around.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from pyoops.config.parameters import Parameters, as_parameters
from pyoops.generic.grid import Axis, StructuredGrid

__all__ = ["DEFAULT_DOMAIN", "ShallowWaterGeometry", "ShallowWaterGeometryParameters", "VARIABLES"]

#: Side of the default square domain in metres (Nerger's shallow-water twin experiments).
DEFAULT_DOMAIN = 950_000.0

#: The model variables, surface-height anomaly (m) and the two wind components (m/s).
VARIABLES = ("h", "u", "v")


class ShallowWaterGeometryParameters(Parameters):
    """YAML keys of the shallow-water geometry, e.g. ``{nx: 30, ny: 30}``."""

    nx: int = Field(30, ge=4, description="Number of grid points in x (at least 4).")
    ny: int = Field(30, ge=4, description="Number of grid points in y (at least 4).")
    dx: float | None = Field(None, gt=0, allow_inf_nan=False,
                             description="Grid spacing in x (m); default 950 km / nx.")
    dy: float | None = Field(None, gt=0, allow_inf_nan=False,
                             description="Grid spacing in y (m); default 950 km / ny.")


def _length(n: int, spacing: float | None) -> float:
    # Rounded to the millimetre so that grids of one domain at different resolutions
    # have bit-identical bounds (the interpolation block compares them exactly).
    return DEFAULT_DOMAIN if spacing is None else round(n * spacing, 3)


class ShallowWaterGeometry(StructuredGrid):
    """Doubly periodic ``ny × nx`` grid of the variables ``h``, ``u``, ``v``.

    Parameters
    ----------
    params:
        Validated :class:`ShallowWaterGeometryParameters`, or the YAML mapping itself.
    """

    Parameters = ShallowWaterGeometryParameters

    def __init__(self, params: ShallowWaterGeometryParameters | Mapping[str, Any]):
        params = as_parameters(ShallowWaterGeometryParameters, params, "geometry")
        self.params = params
        lx, ly = _length(params.nx, params.dx), _length(params.ny, params.dy)
        super().__init__([Axis.periodic_axis("y", params.ny, ly), Axis.periodic_axis("x", params.nx, lx)],
                         variables=VARIABLES)

    def coordinate_units(self) -> dict[str, str]:
        """Coordinates ``x`` and ``y`` are in metres."""
        return {"x": "m", "y": "m"}

    def spacing_keys(self) -> dict[str, str]:
        """``dx`` and ``dy`` set the spacings (named when a file is on another spacing)."""
        return {"x": "dx", "y": "dy"}

    @property
    def nx(self) -> int:
        """Points in x."""
        return self.shape[1]

    @property
    def ny(self) -> int:
        """Points in y."""
        return self.shape[0]

    @property
    def dx(self) -> float:
        """Grid spacing in x (m)."""
        return self.axis("x").spacing

    @property
    def dy(self) -> float:
        """Grid spacing in y (m)."""
        return self.axis("y").spacing

    @property
    def lx(self) -> float:
        """Domain length in x (m)."""
        a = self.axis("x")
        return a.upper - a.lower

    @property
    def ly(self) -> float:
        """Domain length in y (m)."""
        a = self.axis("y")
        return a.upper - a.lower
