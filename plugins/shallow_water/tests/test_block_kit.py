"""The shallow-water plugin's geostrophic balance block under pyoops.testing.BlockTests (``blocks.yaml``)."""

from pathlib import Path

from pyoops.testing import BlockTests


class TestShallowWaterBlocks(BlockTests):
    config_file = Path(__file__).with_name("blocks.yaml")
