"""Registration of the QG plugin (entry point ``qg`` in the group ``pyoops``)."""

from __future__ import annotations

from pyoops.registry import Registry, hookimpl

from pyoops_qg.blocks import QgBalance, QgVerticalCorrelation, QgWalls
from pyoops_qg.geometry import QgGeometry
from pyoops_qg.model import QgModel, QgTLM
from pyoops_qg.state import QgState
from pyoops_qg.variable_changes import QgLinearVariableChange, QgVariableChange


@hookimpl
def pyoops_register(registry: Registry) -> None:
    """Register ``model plugin: qg``, the model ``QG``, the linear model ``QgTLM``, the variable
    changes ``QG`` and the SABER blocks ``QG balance``, ``QG walls`` and ``QG vertical correlation``."""
    registry.add_model_plugin(
        "qg",
        geometry=QgGeometry,
        state=QgState,
        description="two-layer quasi-geostrophic channel (OOPS QG): semi-Lagrangian PV advection, TL/AD",
    )
    registry.model.register("QG", QgModel)
    registry.linear_model.register("QgTLM", QgTLM)
    registry.variable_change.register("QG", QgVariableChange)
    registry.linear_variable_change.register("QG", QgLinearVariableChange)
    registry.saber_block.register("QG balance", QgBalance)
    registry.saber_block.register("QG walls", QgWalls)
    registry.saber_block.register("QG vertical correlation", QgVerticalCorrelation)
