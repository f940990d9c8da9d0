"""Two-layer quasi-geostrophic channel model plugin for pyoops (the OOPS QG toy model).

Installing this distribution makes ``model plugin: qg`` available: the geometry
``{nx, ny, depths}``, the model ``QG``, the linear model ``QgTLM``, analytic
initial states (``baroclinic-instability``, ``large-vortices``, ``uniform field``).

The classes are imported on first access (``from pyoops_qg import ...`` works as
usual), so that importing the package for its registration imports neither them nor numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyoops.util.lazy import lazy_exports

if TYPE_CHECKING:
    from pyoops_qg.geometry import QgGeometry, QgGeometryParameters
    from pyoops_qg.model import QgModel, QgModelParameters, QgTLM, QgTLMParameters
    from pyoops_qg.state import QgState

#: Public name -> the module that defines it.
_EXPORTS = {
    "QgGeometry": "pyoops_qg.geometry",
    "QgGeometryParameters": "pyoops_qg.geometry",
    "QgModel": "pyoops_qg.model",
    "QgModelParameters": "pyoops_qg.model",
    "QgState": "pyoops_qg.state",
    "QgTLM": "pyoops_qg.model",
    "QgTLMParameters": "pyoops_qg.model",
}

__version__ = "0.1.0"
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
