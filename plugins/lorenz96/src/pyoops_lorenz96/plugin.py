"""Registration of the Lorenz-96 plugin (entry point ``lorenz96`` in the group ``pyoops``).

Every class is registered by its import path and imported on first use, so that
registering (``pyoops --help``, ``pyoops plugins``) imports neither the classes nor numpy.
"""

from __future__ import annotations

from pyoops.registry import Registry, hookimpl


@hookimpl
def pyoops_register(registry: Registry) -> None:
    """Register ``model plugin: lorenz96``, the model ``Lorenz96`` and the linear model ``Lorenz96TLM``."""
    registry.add_model_plugin(
        "lorenz96",
        geometry="pyoops_lorenz96.geometry:Lorenz96Geometry",
        state="pyoops_lorenz96.state:Lorenz96State",
        description="Lorenz-96 (1996) on a periodic circle of N points, RK4, with TL/AD",
    )
    registry.model.register("Lorenz96", "pyoops_lorenz96.model:Lorenz96Model")
    registry.linear_model.register("Lorenz96TLM", "pyoops_lorenz96.model:Lorenz96TLM")
