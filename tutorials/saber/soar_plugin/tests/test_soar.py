"""Every block test of pyoops.testing.BlockTests on the SOAR block (layout of blocks.yaml: docs, Writing a block)."""

from pathlib import Path

from pyoops.testing import BlockTests


class TestSoar(BlockTests):
    config_file = Path(__file__).with_name("blocks.yaml")
