r"""Lorenz-96 geometry: :math:`N` equally spaced points on a periodic unit circle.

Grid point :math:`j = 0, \dots, N-1` sits at :math:`x_j = j/N`, so observation
locations are given as positions in :math:`[0, 1]` and interpolate linearly,
wrapping around from the last point to the first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from pyoops.config.parameters import Parameters, as_parameters
from pyoops.generic.grid import Axis, StructuredGrid

__all__ = ["Lorenz96Geometry", "Lorenz96GeometryParameters"]


class Lorenz96GeometryParameters(Parameters):
    """YAML keys of the Lorenz-96 geometry, e.g. ``{resol: 40}``."""

    resol: int = Field(
        ge=4,
        description="Number of grid points N; at least 4 since the tendency at j uses j-2, j-1 and j+1.",
    )


class Lorenz96Geometry(StructuredGrid):
    """One periodic axis ``x`` of ``resol`` points and the single variable ``x``.

    Parameters
    ----------
    params:
        Validated :class:`Lorenz96GeometryParameters`, or the YAML mapping itself.
    """

    Parameters = Lorenz96GeometryParameters

    def __init__(self, params: Lorenz96GeometryParameters | Mapping[str, Any]):
        params = as_parameters(Lorenz96GeometryParameters, params, "geometry")
        self.params = params
        super().__init__([Axis.periodic_axis("x", params.resol, 1.0, dim="position")], variables=["x"])

    def spacing_keys(self) -> dict[str, str]:
        """``resol`` sets the spacing :math:`1/N` of the ``position`` dimension."""
        return {"position": "resol"}

    @property
    def resol(self) -> int:
        """Number of grid points :math:`N`."""
        return self.shape[0]
