"""Two-layer quasi-geostrophic channel model plugin for pyoops (the OOPS QG toy model).

Installing this distribution makes ``model plugin: qg`` available: the geometry
``{nx, ny, depths}``, the model ``QG``, the linear model ``QgTLM``, analytic
initial states (``baroclinic-instability``, ``large-vortices``, ``uniform field``).
"""

from pyoops_qg.geometry import QgGeometry, QgGeometryParameters
from pyoops_qg.model import QgModel, QgModelParameters, QgTLM, QgTLMParameters
from pyoops_qg.state import QgState

__all__ = [
    "QgGeometry",
    "QgGeometryParameters",
    "QgModel",
    "QgModelParameters",
    "QgState",
    "QgTLM",
    "QgTLMParameters",
]
__version__ = "0.1.0"
