"""Registration of the shallow-water plugin (entry point ``shallow_water`` in the group ``pyoops``).

Every class is registered by its import path and imported on first use, so that
registering (``pyoops --help``, ``pyoops plugins``) imports neither the classes nor numpy.
"""

from __future__ import annotations

from pyoops.registry import Registry, hookimpl


@hookimpl
def pyoops_register(registry: Registry) -> None:
    """Register ``model plugin: shallow_water``, its model, linear model and the ``geostrophic balance`` block."""
    registry.add_model_plugin(
        "shallow_water",
        geometry="pyoops_shallow_water.geometry:ShallowWaterGeometry",
        state="pyoops_shallow_water.state:ShallowWaterState",
        description="rotating shallow water on a doubly periodic f-plane (A-grid, RK4), with TL/AD",
    )
    registry.model.register("ShallowWater", "pyoops_shallow_water.model:ShallowWaterModel")
    registry.linear_model.register("ShallowWaterTLM", "pyoops_shallow_water.model:ShallowWaterTLM")
    registry.saber_block.register("geostrophic balance", "pyoops_shallow_water.balance:GeostrophicBalance")
