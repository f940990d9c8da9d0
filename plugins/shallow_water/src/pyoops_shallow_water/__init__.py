"""Rotating shallow-water model plugin for pyoops.

Installing this distribution makes ``model plugin: shallow_water`` available, with
the geometry ``{nx, ny, dx, dy}`` (doubly periodic f-plane, collocated grid), the
model ``ShallowWater``, the linear model ``ShallowWaterTLM``, analytic initial states
(``vortex``, ``jet``, ``turbulence``, ``gravity wave pulse``, ``rest``) and the SABER
outer block ``geostrophic balance``.
"""

from pyoops_shallow_water.balance import GeostrophicBalance, GeostrophicBalanceParameters
from pyoops_shallow_water.geometry import ShallowWaterGeometry, ShallowWaterGeometryParameters
from pyoops_shallow_water.model import (
    ShallowWaterModel,
    ShallowWaterParameters,
    ShallowWaterTLM,
    ShallowWaterTLMParameters,
)
from pyoops_shallow_water.state import ShallowWaterState

__all__ = [
    "GeostrophicBalance",
    "GeostrophicBalanceParameters",
    "ShallowWaterGeometry",
    "ShallowWaterGeometryParameters",
    "ShallowWaterModel",
    "ShallowWaterParameters",
    "ShallowWaterState",
    "ShallowWaterTLM",
    "ShallowWaterTLMParameters",
]
__version__ = "0.1.0"
