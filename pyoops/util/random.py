"""Seeded random streams.

Every random draw in pyoops comes from a :class:`numpy.random.Generator` made
here from a seed named in the configuration.  Independent sub-streams (one per
ensemble member, per observer, per cycle) are derived with
:func:`substream` so that results do not depend on the order in which
streams are used, nor on how work is split across processes.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["generator", "substream"]


def _key(label: "str | int") -> int:
    if isinstance(label, int):
        return label
    return zlib.crc32(label.encode("utf-8"))


def generator(seed: int, *labels: "str | int") -> np.random.Generator:
    """A PCG64 generator for ``seed`` and an optional path of labels.

    ``generator(7, "member", 3)`` is the stream of member 3 under seed 7; it is
    the same whichever other streams were created before.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *map(_key, labels)])))


def substream(seed: int, *labels: "str | int") -> np.random.Generator:
    """Alias of :func:`generator`, reads better where a stream is split."""
    return generator(seed, *labels)
