"""Rotating shallow-water model plugin for pyoops.

Installing this distribution makes ``model plugin: shallow_water`` available, with
the geometry ``{nx, ny, dx, dy}`` (doubly periodic f-plane, collocated grid), the
model ``ShallowWater``, the linear model ``ShallowWaterTLM``, analytic initial states
(``vortex``, ``jet``, ``turbulence``, ``gravity wave pulse``, ``rest``) and the SABER
outer block ``geostrophic balance``.

The classes are imported on first access (``from pyoops_shallow_water import ...`` works as
usual), so that importing the package for its registration imports neither them nor numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyoops.util.lazy import lazy_exports

if TYPE_CHECKING:
    from pyoops_shallow_water.balance import (
        GeostrophicBalance,
        GeostrophicBalanceParameters,
    )
    from pyoops_shallow_water.geometry import (
        ShallowWaterGeometry,
        ShallowWaterGeometryParameters,
    )
    from pyoops_shallow_water.model import (
        ShallowWaterModel,
        ShallowWaterParameters,
        ShallowWaterTLM,
        ShallowWaterTLMParameters,
    )
    from pyoops_shallow_water.state import ShallowWaterState

#: Public name -> the module that defines it.
_EXPORTS = {
    "GeostrophicBalance": "pyoops_shallow_water.balance",
    "GeostrophicBalanceParameters": "pyoops_shallow_water.balance",
    "ShallowWaterGeometry": "pyoops_shallow_water.geometry",
    "ShallowWaterGeometryParameters": "pyoops_shallow_water.geometry",
    "ShallowWaterModel": "pyoops_shallow_water.model",
    "ShallowWaterParameters": "pyoops_shallow_water.model",
    "ShallowWaterState": "pyoops_shallow_water.state",
    "ShallowWaterTLM": "pyoops_shallow_water.model",
    "ShallowWaterTLMParameters": "pyoops_shallow_water.model",
}

__version__ = "0.1.0"
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
