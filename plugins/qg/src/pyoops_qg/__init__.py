"""Two-layer quasi-geostrophic channel model plugin for pyoops (the OOPS QG toy model).

Installing this distribution makes ``model plugin: qg`` available: the geometry
``{nx, ny, depths}``, the model ``QG``, the linear model ``QgTLM``, analytic
initial states (``baroclinic-instability``, ``large-vortices``, ``uniform field``).

The classes are imported on first access (``from pyoops_qg import ...`` works as
usual), so that importing the package for its registration imports neither them nor numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    """Import a public class from its module on first access (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily imported classes included."""
    return sorted({*globals(), *_EXPORTS})
