"""The plugin module named by the entry point: one hook that registers the block."""

from pyoops.registry import hookimpl
from pyoops_soar.block import SoarCorrelation


@hookimpl
def pyoops_register(registry):
    registry.saber_block.register("SOAR correlation", SoarCorrelation)
