"""Lorenz-96 model plugin for pyoops.

Installing this distribution makes ``model plugin: lorenz96`` available, with the
geometry ``{resol: N}``, the model ``Lorenz96``, the linear model ``Lorenz96TLM``
and analytic initial states (``rest-perturbed``, ``sinusoid``, ``random``).

The classes are imported on first access (``from pyoops_lorenz96 import ...`` works as
usual), so that importing the package for its registration imports neither them nor numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyoops_lorenz96.geometry import Lorenz96Geometry, Lorenz96GeometryParameters
    from pyoops_lorenz96.model import (
        Lorenz96Model,
        Lorenz96Parameters,
        Lorenz96TLM,
        Lorenz96TLMParameters,
    )
    from pyoops_lorenz96.state import Lorenz96State

#: Public name -> the module that defines it.
_EXPORTS = {
    "Lorenz96Geometry": "pyoops_lorenz96.geometry",
    "Lorenz96GeometryParameters": "pyoops_lorenz96.geometry",
    "Lorenz96Model": "pyoops_lorenz96.model",
    "Lorenz96Parameters": "pyoops_lorenz96.model",
    "Lorenz96State": "pyoops_lorenz96.state",
    "Lorenz96TLM": "pyoops_lorenz96.model",
    "Lorenz96TLMParameters": "pyoops_lorenz96.model",
}

__all__ = [
    "Lorenz96Geometry",
    "Lorenz96GeometryParameters",
    "Lorenz96Model",
    "Lorenz96Parameters",
    "Lorenz96State",
    "Lorenz96TLM",
    "Lorenz96TLMParameters",
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
