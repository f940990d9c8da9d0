"""Helpers for testing linear operators on FieldSets (SABER blocks, covariances, variable changes).

Dense matrices are for tests on small grids only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from pyoops.fields.fieldset import FieldSet
from pyoops.util.variables import Variables

__all__ = ["dense_matrix", "random_fields"]


def random_fields(geometry: object, variables: Iterable[str], rng: np.random.Generator,
                  batch: tuple[int, ...] = ()) -> FieldSet:
    """Independent standard normal fields of ``variables`` (optional leading batch axes)."""
    fields = geometry.zeros(Variables(variables), batch)
    for arr in fields.values():
        arr[...] = rng.standard_normal(arr.shape)
    return fields


def dense_matrix(apply: Callable[[FieldSet], FieldSet], geometry: object, variables: Iterable[str]) -> np.ndarray:
    """The matrix of a linear ``FieldSet -> FieldSet`` map, in :meth:`FieldSet.to_vector` order.

    All unit vectors go through ``apply`` in one batched call (a leading axis of size n).
    """
    variables = Variables(variables)
    template = geometry.zeros(variables)
    n = template.to_vector().size
    eye = np.eye(n)
    batch, start = {}, 0
    for v in template:
        size = template[v].size
        batch[v] = eye[:, start:start + size].reshape((n,) + template[v].shape)
        start += size
    out = apply(FieldSet(batch, copy=False))
    return np.concatenate([out[v].reshape(n, -1) for v in variables], axis=1).T
