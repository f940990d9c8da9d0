"""The QG plugin's SABER blocks under pyoops.testing.BlockTests (``blocks.yaml``)."""

from pathlib import Path

from pyoops.testing import BlockTests


class TestQgBlocks(BlockTests):
    config_file = Path(__file__).with_name("blocks.yaml")
