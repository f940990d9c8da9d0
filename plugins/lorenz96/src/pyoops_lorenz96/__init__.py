"""Lorenz-96 model plugin for pyoops.

Installing this distribution makes ``model plugin: lorenz96`` available, with the
geometry ``{resol: N}``, the model ``Lorenz96``, the linear model ``Lorenz96TLM``
and analytic initial states (``rest-perturbed``, ``sinusoid``, ``random``).
"""

from pyoops_lorenz96.geometry import Lorenz96Geometry, Lorenz96GeometryParameters
from pyoops_lorenz96.model import Lorenz96Model, Lorenz96Parameters, Lorenz96TLM, Lorenz96TLMParameters
from pyoops_lorenz96.state import Lorenz96State

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
