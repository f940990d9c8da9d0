"""Lorenz-96 model plugin for pyoops.

Installing this distribution makes ``model plugin: lorenz96`` available, with the
geometry ``{resol: N}``, the model ``Lorenz96``, the linear model ``Lorenz96TLM``
and analytic initial states (``rest-perturbed``, ``sinusoid``, ``random``).

The classes are imported on first access (``from pyoops_lorenz96 import ...`` works as
usual), so that importing the package for its registration imports neither them nor numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyoops.util.lazy import lazy_exports

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

__version__ = "0.1.0"
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
