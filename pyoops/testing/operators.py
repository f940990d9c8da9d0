"""Helpers for testing linear operators on FieldSets (SABER blocks, covariances, variable changes).

Dense matrices are for tests on small grids only.  Both helpers are the ones the block
tests use (:mod:`pyoops.saber.checks`), re-exported here for test code.
"""

from __future__ import annotations

from pyoops.saber.checks import dense_matrix
from pyoops.testing.checks import random_fields

__all__ = ["dense_matrix", "random_fields"]
