"""Registration of the shallow-water plugin (entry point ``shallow_water`` in the group ``pyoops``)."""

from __future__ import annotations

from pyoops.registry import Registry, hookimpl

from pyoops_shallow_water.balance import GeostrophicBalance
from pyoops_shallow_water.geometry import ShallowWaterGeometry
from pyoops_shallow_water.model import ShallowWaterModel, ShallowWaterTLM
from pyoops_shallow_water.state import ShallowWaterState


@hookimpl
def pyoops_register(registry: Registry) -> None:
    """Register ``model plugin: shallow_water``, its model, linear model and the ``geostrophic balance`` block."""
    registry.add_model_plugin(
        "shallow_water",
        geometry=ShallowWaterGeometry,
        state=ShallowWaterState,
        description="rotating shallow water on a doubly periodic f-plane (A-grid, RK4), with TL/AD",
    )
    registry.model.register("ShallowWater", ShallowWaterModel)
    registry.linear_model.register("ShallowWaterTLM", ShallowWaterTLM)
    registry.saber_block.register("geostrophic balance", GeostrophicBalance)
