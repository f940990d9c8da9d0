"""Registration of the QG plugin (entry point ``qg`` in the group ``pyoops``).

Every class is registered by its import path and imported on first use, so that
registering (``pyoops --help``, ``pyoops plugins``) imports neither the classes nor numpy.
"""

from __future__ import annotations

from pyoops.registry import Registry, hookimpl


@hookimpl
def pyoops_register(registry: Registry) -> None:
    """Register ``model plugin: qg``, the model ``QG``, the linear model ``QgTLM``, the variable
    changes ``QG`` and the SABER blocks ``QG balance``, ``QG walls`` and ``QG vertical correlation``."""
    registry.add_model_plugin(
        "qg",
        geometry="pyoops_qg.geometry:QgGeometry",
        state="pyoops_qg.state:QgState",
        description="two-layer quasi-geostrophic channel (OOPS QG): semi-Lagrangian PV advection, TL/AD",
    )
    registry.model.register("QG", "pyoops_qg.model:QgModel")
    registry.linear_model.register("QgTLM", "pyoops_qg.model:QgTLM")
    registry.variable_change.register("QG", "pyoops_qg.variable_changes:QgVariableChange")
    registry.linear_variable_change.register("QG", "pyoops_qg.variable_changes:QgLinearVariableChange")
    registry.saber_block.register("QG balance", "pyoops_qg.blocks:QgBalance")
    registry.saber_block.register("QG walls", "pyoops_qg.blocks:QgWalls")
    registry.saber_block.register("QG vertical correlation", "pyoops_qg.blocks:QgVerticalCorrelation")
