"""Registration of the Lorenz-96 plugin (entry point ``lorenz96`` in the group ``pyoops``)."""

from __future__ import annotations

from pyoops.registry import Registry, hookimpl

from pyoops_lorenz96.geometry import Lorenz96Geometry
from pyoops_lorenz96.model import Lorenz96Model, Lorenz96TLM
from pyoops_lorenz96.state import Lorenz96State


@hookimpl
def pyoops_register(registry: Registry) -> None:
    """Register ``model plugin: lorenz96``, the model ``Lorenz96`` and the linear model ``Lorenz96TLM``."""
    registry.add_model_plugin(
        "lorenz96",
        geometry=Lorenz96Geometry,
        state=Lorenz96State,
        description="Lorenz-96 (1996) on a periodic circle of N points, RK4, with TL/AD",
    )
    registry.model.register("Lorenz96", Lorenz96Model)
    registry.linear_model.register("Lorenz96TLM", Lorenz96TLM)
