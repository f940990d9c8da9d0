"""FieldSet: an ordered mapping ``variable → float64 ndarray`` with vector algebra.

The Python counterpart of ``atlas::FieldSet``.  Every field of a FieldSet has
the same *batch shape*: optional leading axes (ensemble members) in front of
the field's own grid shape.  ``FieldSet`` algebra acts on all fields at once,
so the same code serves a single state and a stacked ensemble.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np

from pyoops.util.variables import Variables

__all__ = ["FieldSet"]


class FieldSet(MutableMapping[str, np.ndarray]):
    """Ordered ``{variable: ndarray}``; arrays are float64 and owned by the set.

    Parameters
    ----------
    fields:
        Mapping or iterable of ``(name, array)``; arrays are converted to float64.
    copy:
        Copy the arrays (default) or keep references to them.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: "Mapping[str, Any] | Iterable[tuple[str, Any]] | None" = None, copy: bool = True):
        self._fields: dict[str, np.ndarray] = {}
        if fields is None:
            return
        items = fields.items() if isinstance(fields, Mapping) else fields
        for name, value in items:
            arr = np.array(value, dtype=np.float64, copy=True) if copy else np.asarray(value, dtype=np.float64)
            self._fields[name] = arr

    # Mapping protocol -----------------------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        return self._fields[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self._fields[name] = np.asarray(value, dtype=np.float64)

    def __delitem__(self, name: str) -> None:
        del self._fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {v.shape}" for k, v in self._fields.items())
        return f"FieldSet({{{inner}}})"

    @property
    def variables(self) -> Variables:
        return Variables(self._fields.keys())

    # Construction helpers --------------------------------------------------------------
    def copy(self) -> "FieldSet":
        return type(self)(self._fields, copy=True)

    def zeros_like(self) -> "FieldSet":
        return type(self)({k: np.zeros_like(v) for k, v in self._fields.items()}, copy=False)

    def subset(self, variables: Iterable[str]) -> "FieldSet":
        """A FieldSet of ``variables`` sharing this set's arrays."""
        return type(self)({v: self._fields[v] for v in variables}, copy=False)

    def map(self, func: Any) -> "FieldSet":
        """Apply ``func(array)`` to every field and return a new FieldSet."""
        return type(self)({k: func(v) for k, v in self._fields.items()}, copy=False)

    def batch_shape(self, field_shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
        """The leading (ensemble) axes, given each field's grid shape."""
        shapes = set()
        for name, arr in self._fields.items():
            ndim = len(field_shapes[name])
            shapes.add(arr.shape[: arr.ndim - ndim])
        if len(shapes) > 1:
            raise ValueError(f"fields have different batch shapes: {sorted(shapes)}")
        return shapes.pop() if shapes else ()

    # Vector algebra -------------------------------------------------------------------
    def _check_compatible(self, other: "FieldSet") -> None:
        if list(self._fields) != list(other._fields):
            raise ValueError(f"field sets differ: {list(self._fields)} vs {list(other._fields)}")

    def __iadd__(self, other: "FieldSet") -> "FieldSet":
        self._check_compatible(other)
        for k, v in self._fields.items():
            v += other._fields[k]
        return self

    def __isub__(self, other: "FieldSet") -> "FieldSet":
        self._check_compatible(other)
        for k, v in self._fields.items():
            v -= other._fields[k]
        return self

    def __imul__(self, factor: "float | FieldSet") -> "FieldSet":
        if isinstance(factor, FieldSet):
            return self.schur(factor)
        for v in self._fields.values():
            v *= factor
        return self

    def __add__(self, other: "FieldSet") -> "FieldSet":
        out = self.copy()
        out += other
        return out

    def __sub__(self, other: "FieldSet") -> "FieldSet":
        out = self.copy()
        out -= other
        return out

    def __mul__(self, factor: float) -> "FieldSet":
        out = self.copy()
        out *= factor
        return out

    __rmul__ = __mul__

    def __neg__(self) -> "FieldSet":
        return self * -1.0

    def axpy(self, a: float, other: "FieldSet") -> "FieldSet":
        """``self += a * other`` in place."""
        self._check_compatible(other)
        for k, v in self._fields.items():
            v += a * other._fields[k]
        return self

    def schur(self, other: "FieldSet") -> "FieldSet":
        """Element-wise product in place (broadcasting allowed)."""
        self._check_compatible(other)
        for k in self._fields:
            self._fields[k] = self._fields[k] * other._fields[k]
        return self

    def dot(self, other: "FieldSet") -> float:
        """Euclidean inner product over every field and every element."""
        self._check_compatible(other)
        return float(sum(np.vdot(v, other._fields[k]) for k, v in self._fields.items()))

    def norm(self) -> float:
        """Euclidean norm over every field and every element."""
        return float(np.sqrt(sum(np.vdot(v, v) for v in self._fields.values())))

    def rms(self) -> float:
        """Root-mean-square over every element of every field."""
        n = sum(v.size for v in self._fields.values())
        return float(self.norm() / np.sqrt(n)) if n else 0.0

    def is_finite(self) -> bool:
        return all(bool(np.isfinite(v).all()) for v in self._fields.values())

    def allclose(self, other: "FieldSet", rtol: float = 1e-12, atol: float = 0.0) -> bool:
        return list(self) == list(other) and all(
            np.allclose(v, other[k], rtol=rtol, atol=atol) for k, v in self._fields.items()
        )

    # Flattening (serialize) ---------------------------------------------------------------
    def to_vector(self) -> np.ndarray:
        """All fields raveled and concatenated in variable order."""
        if not self._fields:
            return np.zeros(0)
        return np.concatenate([v.ravel() for v in self._fields.values()])

    def from_vector(self, vector: np.ndarray) -> "FieldSet":
        """A FieldSet with this set's shapes filled from ``vector`` (inverse of :meth:`to_vector`)."""
        vector = np.asarray(vector, dtype=np.float64)
        expected = sum(v.size for v in self._fields.values())
        if vector.size != expected:
            raise ValueError(f"vector has {vector.size} elements, field set needs {expected}")
        out, start = {}, 0
        for k, v in self._fields.items():
            out[k] = vector[start : start + v.size].reshape(v.shape).copy()
            start += v.size
        return FieldSet(out, copy=False)
