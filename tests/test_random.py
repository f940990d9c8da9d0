"""Seeded random streams (:mod:`pyoops.util.random`): the fast construction draws exactly what
``SeedSequence`` of the key list draws."""

from __future__ import annotations

import numpy as np
import pytest

from pyoops.util.random import _key, generator, substream


def _reference(seed: int, *labels: str | int) -> np.random.Generator:
    """The stream as defined: ``SeedSequence`` of the Python list of keys."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *map(_key, labels)])))


LABELS = [(), ("member", 3), ("eda", 12, 0), ("observations", 1262304000), ("initial", 2**32 - 1),
          ("hbht", "cycle", 2**32), ("x", 2**40 + 5, "y", 0), (True, False), ("",)]


@pytest.mark.parametrize("seed", [0, 1, 7, 2**31, 2**32 - 1, 2**32, 2**63 + 11])
@pytest.mark.parametrize("labels", LABELS)
def test_generator_fast_path_is_the_seed_sequence_of_the_list(seed: int, labels: tuple) -> None:
    a, b = generator(seed, *labels), _reference(seed, *labels)
    np.testing.assert_array_equal(a.bit_generator.seed_seq.pool, b.bit_generator.seed_seq.pool)
    assert a.bit_generator.state == b.bit_generator.state
    np.testing.assert_array_equal(a.integers(0, 2**63, 64), b.integers(0, 2**63, 64))
    np.testing.assert_array_equal(a.standard_normal(64), b.standard_normal(64))


def test_streams_are_those_of_earlier_versions() -> None:
    """Draws recorded before the fast path (pyoops 0.1.0 at commit 19f2142)."""
    np.testing.assert_array_equal(generator(7, "member", 3).integers(0, 2**63, 3),
                                  [3705871959522741854, 7837547052303944392, 2478652541619607963])
    np.testing.assert_array_equal(substream(2**40, "eda", 5, 2**33).integers(0, 2**63, 2),
                                  [9109739946097714923, 8008960914996795443])
    np.testing.assert_array_equal(generator(0).integers(0, 2**63, 2), [5874934615388537135, 2488343231644625808])


def test_negative_labels_are_refused_as_before() -> None:
    with pytest.raises(ValueError):
        generator(1, -3)
