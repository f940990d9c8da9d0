"""Structured grids: 1-D periodic, 2-D doubly periodic and 2-D channel, with levels.

A :class:`StructuredGrid` is a tensor product of :class:`Axis` objects.  It
provides everything the :class:`~pyoops.interface.geometry.Geometry`
interface asks for, so a toy model's geometry is a few lines::

    class Lorenz96Geometry(StructuredGrid):
        Parameters = Lorenz96GeometryParameters
        def __init__(self, params):
            super().__init__([Axis.periodic_axis("x", params.resol, 1.0, dim="position")],
                             variables=["x"])

Interpolation to observation locations is linear along every horizontal axis
(periodic wrap-around where the axis is periodic, constant extrapolation
between the last point and a wall) and nearest-point along a level axis.  It is
stored as a sparse matrix :math:`W` (``nlocs × npoints``) so that the tangent
linear is :math:`W` and the adjoint is exactly :math:`W^\\mathsf{T}`.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported where used: a forecast never needs scipy (start-up, issue 11)
    import scipy.sparse as sp

from pyoops.fields.fieldset import FieldSet
from pyoops.interface.geometry import Geometry, GetValues, Locations, SearchCoordinates
from pyoops.util.errors import ConfigError
from pyoops.util.resources import format_bytes, require_memory
from pyoops.util.variables import Variables

__all__ = ["Axis", "STATES_IN_MEMORY", "SparseInterpolator", "StructuredGrid"]

#: A grid is accepted when this many states of it fit in memory, the fewest any application
#: holds (the state, a time-stepping stage, an increment and an output buffer).
STATES_IN_MEMORY = 4

#: Interpolators already built, by grid and locations (:meth:`StructuredGrid.interpolator`),
#: most recent last; at most :data:`_INTERPOLATOR_CACHE_SIZE` of them.
_interpolators: OrderedDict[Hashable, SparseInterpolator] = OrderedDict()
_INTERPOLATOR_CACHE_SIZE = 32


def _array_key(a: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    """An array as a hashable, exact key: dtype, shape and bytes."""
    a = np.asarray(a)
    return a.dtype.str, a.shape, np.ascontiguousarray(a).tobytes()


@dataclass(frozen=True)
class Axis:
    """One grid axis.

    Attributes
    ----------
    name:
        Dimension and location-coordinate name (``x``, ``y``, ``z``).
    points:
        Grid-point coordinates, increasing.
    lower:
        Lower domain bound.
    upper:
        Upper domain bound; on a periodic axis ``upper - lower`` is the period.
    periodic:
        Whether the axis wraps around.
    interpolation:
        ``"linear"`` or ``"nearest"`` (levels).
    horizontal:
        Whether the axis counts in horizontal distances and cell areas.
    dim:
        Name of the file dimension and coordinate variable (default: ``name``);
        set it when a model variable has the same name as the coordinate, as
        Lorenz-96's ``x``.
    """

    name: str
    points: np.ndarray
    lower: float
    upper: float
    periodic: bool
    interpolation: str = "linear"
    horizontal: bool = True
    dim: str = ""

    @classmethod
    def periodic_axis(cls, name: str, n: int, length: float, start: float = 0.0, dim: str = "") -> "Axis":
        """``n`` points ``start + i·length/n`` on a periodic axis of period ``length``."""
        _check_size(name, n, 1)
        return cls(name, start + np.arange(n) * (length / n), start, start + length, True, dim=dim)

    @classmethod
    def bounded_axis(cls, name: str, n: int, length: float, start: float = 0.0, dim: str = "") -> "Axis":
        """``n`` cell centres ``start + (i + ½)·length/n`` between walls at ``start`` and ``start + length``."""
        _check_size(name, n, 2)
        dx = length / n
        return cls(name, start + (np.arange(n) + 0.5) * dx, start, start + length, False, dim=dim)

    @classmethod
    def level_axis(cls, name: str, levels: Sequence[float], dim: str = "") -> "Axis":
        """A vertical axis of discrete levels, nearest-level interpolation."""
        levels = np.asarray(levels, dtype=float)
        return cls(name, levels, float(levels.min()), float(levels.max()), False, "nearest", False, dim)

    @property
    def file_dim(self) -> str:
        """Dimension name in files."""
        return self.dim or self.name

    @property
    def n(self) -> int:
        return int(self.points.size)

    @property
    def spacing(self) -> float:
        """Grid spacing (domain length over number of points)."""
        return (self.upper - self.lower) / self.n

    def weights(self, coord: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per-location (index, weight) pairs of the 1-D interpolation to ``coord``."""
        p = self.points
        if self.interpolation == "nearest":
            idx = np.abs(coord[:, None] - p[None, :]).argmin(axis=1)
            return [(idx, np.ones_like(coord))]
        if self.n == 1:
            return [(np.zeros(coord.size, dtype=int), np.ones_like(coord))]
        if self.periodic:
            t = (coord - p[0]) / self.spacing
            # A location on a grid point gets weight exactly 1 there, despite rounding in j/N * N.
            nearest = np.rint(t)
            t = np.where(np.abs(t - nearest) <= 1e-10, nearest, t)
            i0 = np.floor(t).astype(int)
            w = t - i0
            i0 %= self.n
            return [(i0, 1.0 - w), ((i0 + 1) % self.n, w)]
        i0 = np.clip(np.searchsorted(p, coord, side="right") - 1, 0, self.n - 2)
        w = np.clip((coord - p[i0]) / (p[i0 + 1] - p[i0]), 0.0, 1.0)
        w = np.where(np.abs(w - np.rint(w)) <= 1e-10, np.rint(w), w)
        return [(i0, 1.0 - w), (i0 + 1, w)]

    def separation(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Signed shortest separation ``b - a`` (minimum image on periodic axes)."""
        d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
        if self.periodic:
            period = self.upper - self.lower
            d = (d + 0.5 * period) % period - 0.5 * period
        return d


def _check_size(name: str, n: int, minimum: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < minimum:
        raise ConfigError(f"grid axis '{name}' needs at least {minimum} point(s), got {n!r}")
    # Fields on this axis alone (8 bytes a value) must fit before the coordinates are allocated.
    require_memory(STATES_IN_MEMORY * 8.0 * n,
                   f"a grid axis '{name}' of {n} points ({STATES_IN_MEMORY} fields of "
                   f"{format_bytes(8.0 * n)} each, the least a run holds)")


class SparseInterpolator(GetValues):
    """GetValues stored as a sparse matrix :math:`W` (``nlocs × npoints``)."""

    def __init__(self, matrix: sp.csr_matrix, field_shape: tuple[int, ...]):
        self.matrix = matrix.tocsr()
        self.matrix_t = self.matrix.T.tocsr()
        self.field_shape = field_shape
        self.nlocs = matrix.shape[0]

    def _flat(self, arr: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        batch = arr.shape[: arr.ndim - len(self.field_shape)]
        return arr.reshape((-1, int(np.prod(self.field_shape)))), batch

    def apply(self, fields: FieldSet, variables: Variables) -> FieldSet:
        from pyoops.interface.observations import GeoVaLs

        out = {}
        for var in variables:
            flat, batch = self._flat(fields[var])
            out[var] = (self.matrix @ flat.T).T.reshape(batch + (self.nlocs,))
        return GeoVaLs(out, copy=False)

    def apply_ad(self, geovals: FieldSet, fields: FieldSet) -> None:
        for var, g in geovals.items():
            batch = g.shape[:-1]
            flat = g.reshape((-1, self.nlocs))
            fields[var] += (self.matrix_t @ flat.T).T.reshape(batch + self.field_shape)

    def subset(self, rows: np.ndarray) -> "SparseInterpolator":
        """The interpolator to a subset of the locations (itself when ``rows`` are all of them, in order)."""
        rows = np.asarray(rows)
        if rows.dtype.kind in "iu" and rows.shape == (self.nlocs,) and np.array_equal(rows, np.arange(self.nlocs)):
            return self
        return SparseInterpolator(self.matrix[rows], self.field_shape)


class StructuredGrid(Geometry):
    """A tensor-product grid of :class:`Axis` objects.

    Parameters
    ----------
    axes:
        Axes in file (C) order, slowest first, e.g. ``[z, y, x]``.
    variables:
        Default model variables.
    """

    def __init__(self, axes: Sequence[Axis], variables: Sequence[str]):
        self.axes = tuple(axes)
        names = [a.name for a in self.axes]
        if len(set(names)) != len(names):
            raise ConfigError(f"grid axis names must be distinct, got {names}")
        self.dims = tuple(a.file_dim for a in self.axes)
        clash = set(self.dims) & set(variables)
        if clash:
            raise ConfigError(f"model variable(s) {sorted(clash)} have the name of a grid dimension; give the "
                              "axis another file dimension name (Axis(..., dim=...))")
        self.shape = tuple(a.n for a in self.axes)
        self._variables = Variables(variables)
        state_bytes = 8.0 * math.prod(self.shape) * max(len(self._variables), 1)
        require_memory(STATES_IN_MEMORY * state_bytes,
                       f"a grid of {' x '.join(map(str, self.shape))} points ({STATES_IN_MEMORY} states of "
                       f"{format_bytes(state_bytes)} each, the least a run holds)")

    # Convenience constructors, mostly for tests and tutorials ---------------------------
    @classmethod
    def periodic_1d(cls, n: int, length: float = 1.0, variables: Sequence[str] = ("x",)) -> "StructuredGrid":
        """Lorenz-96-like ring: coordinate ``x``, file dimension ``position`` (the default variable is ``x``)."""
        return StructuredGrid([Axis.periodic_axis("x", n, length, dim="position")], variables)

    @classmethod
    def periodic_2d(cls, nx: int, ny: int, lx: float = 1.0, ly: float = 1.0,
                    variables: Sequence[str] = ("h",)) -> "StructuredGrid":
        return StructuredGrid([Axis.periodic_axis("y", ny, ly), Axis.periodic_axis("x", nx, lx)], variables)

    @classmethod
    def channel_2d(cls, nx: int, ny: int, lx: float = 1.0, ly: float = 1.0,
                   variables: Sequence[str] = ("h",), levels: Sequence[float] | None = None) -> "StructuredGrid":
        axes = [Axis.bounded_axis("y", ny, ly), Axis.periodic_axis("x", nx, lx)]
        if levels is not None:
            axes.insert(0, Axis.level_axis("z", levels))
        return StructuredGrid(axes, variables)

    # Geometry interface -----------------------------------------------------------------
    @property
    def variables(self) -> Variables:
        return self._variables

    @property
    def coordinates(self) -> dict[str, np.ndarray]:
        return {a.file_dim: a.points.copy() for a in self.axes}

    @property
    def location_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in reversed(self.axes))

    @property
    def horizontal_axes(self) -> tuple[Axis, ...]:
        return tuple(a for a in self.axes if a.horizontal)

    def axis(self, name: str) -> Axis:
        for a in self.axes:
            if a.name == name:
                return a
        raise KeyError(name)

    def cell_areas(self) -> np.ndarray:
        area = np.ones(())
        for a in self.horizontal_axes:
            area = np.multiply.outer(area, np.full(a.n, a.spacing))
        return np.asarray(area)

    def mesh(self) -> dict[str, np.ndarray]:
        """Full coordinate arrays of every grid point, each of shape :attr:`~pyoops.interface.geometry.Geometry.shape`."""
        grids = np.meshgrid(*[a.points for a in self.axes], indexing="ij")
        return {a.name: g for a, g in zip(self.axes, grids)}

    def grid_locations(self) -> Locations:
        """Every grid point, in C order of :attr:`~pyoops.interface.geometry.Geometry.shape`, as a :class:`~pyoops.interface.geometry.Locations`."""
        return Locations({name: arr.ravel() for name, arr in self.mesh().items()})

    def distance(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> np.ndarray:
        sq = 0.0
        for axis in self.horizontal_axes:
            sq = sq + axis.separation(a[axis.name], b[axis.name]) ** 2
        return np.sqrt(sq)

    def search_coordinates(self, locations: Locations) -> SearchCoordinates | None:
        r"""The horizontal coordinates for a KD-tree (periodic ones shifted to start at 0).

        :meth:`distance` is the Euclidean distance over the horizontal axes with the
        minimum-image separation on periodic ones, which is the KD-tree distance of
        :class:`~pyoops.interface.geometry.SearchCoordinates` with the period
        :math:`L = \text{upper} - \text{lower}` as box size (0 on a bounded axis).  A
        periodic coordinate is mapped to :math:`(c - \text{lower}) \bmod L \in [0, L)`
        (a location on the upper bound, or one that rounds onto it, becomes 0); a bounded
        coordinate is kept as it is.  The two distances then differ only by the rounding
        of that shift and of the tree's own arithmetic, a few units in the last place of
        the coordinates.  ``None`` when a subclass measures ``distance``
        otherwise (the embedding would not hold) or when there is no horizontal axis.
        """
        if type(self).distance is not StructuredGrid.distance or not self.horizontal_axes:
            return None
        columns, box = [], []
        for axis in self.horizontal_axes:
            c = np.asarray(locations.coords[axis.name], dtype=np.float64)
            period = axis.upper - axis.lower if axis.periodic else 0.0
            if axis.periodic:
                with np.errstate(invalid="ignore"):  # a non-finite coordinate stays NaN (never within reach)
                    c = np.mod(c - axis.lower, period)
                c = np.where(c < period, c, 0.0)
            columns.append(c)
            box.append(period)
        return SearchCoordinates(np.stack(columns, axis=1), np.asarray(box, dtype=np.float64))

    def check_locations(self, locations: Locations, source: str = "") -> None:
        where = f"{source}: " if source else ""
        for axis in self.axes:
            if axis.name not in locations.coords:
                raise ConfigError(f"{where}observation locations lack coordinate '{axis.name}' "
                                  f"(this geometry needs {', '.join(self.location_names)})")
            c = locations.coords[axis.name]
            bad = ~np.isfinite(c) | (c < axis.lower) | (c > axis.upper)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ConfigError(
                    f"{where}{int(bad.sum())} observation(s) outside the domain: {axis.name}[{i}] = {c[i]!r}, "
                    f"expected {axis.lower} <= {axis.name} <= {axis.upper}")

    def interpolation_matrix(self, locations: Locations) -> sp.csr_matrix:
        """The sparse :math:`W` with ``W @ field.ravel()`` = values at ``locations``."""
        n = locations.nlocs
        rows = np.arange(n)
        idx_list: list[np.ndarray] = [np.zeros(n, dtype=np.int64)]
        w_list: list[np.ndarray] = [np.ones(n)]
        for axis in self.axes:
            pairs = axis.weights(locations.coords[axis.name])
            idx_list = [i * axis.n + j for i in idx_list for j, _ in pairs]
            w_list = [wi * wj for wi in w_list for _, wj in pairs]
        import scipy.sparse as sp

        data = np.concatenate(w_list)
        cols = np.concatenate(idx_list)
        return sp.csr_matrix((data, (np.tile(rows, len(w_list)), cols)), shape=(n, int(np.prod(self.shape))))

    def interpolator(self, locations: Locations) -> SparseInterpolator:
        """The :class:`SparseInterpolator` to ``locations`` (shared, read-only).

        Built once per grid and set of locations: an analysis interpolates to the same
        locations several times (the observer, every outer loop, the final H(x)), and a
        cycle with fixed observation locations every cycle.  The key is exact: the grid's
        class, every field of every :class:`Axis` (the points by their bytes) and the
        bytes of the location coordinates the axes read, so an interpolator is reused
        only where :meth:`interpolation_matrix` would return the same matrix.
        """
        self.check_locations(locations)
        key = (type(self), self.shape,
               tuple(tuple(_array_key(v) if isinstance(v, np.ndarray) else v
                           for v in (getattr(axis, f.name) for f in dataclasses.fields(axis)))
                     for axis in self.axes),
               tuple(_array_key(locations.coords[axis.name]) for axis in self.axes))
        interp = _interpolators.get(key)
        if interp is None:
            interp = SparseInterpolator(self.interpolation_matrix(locations), self.shape)
            _interpolators[key] = interp
            if len(_interpolators) > _INTERPOLATOR_CACHE_SIZE:
                _interpolators.popitem(last=False)
        else:
            _interpolators.move_to_end(key)
        return interp

    def describe(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "axes": [
                {"name": a.name, "dim": a.file_dim, "n": a.n, "lower": float(a.lower), "upper": float(a.upper),
                 "periodic": a.periodic, "interpolation": a.interpolation}
                for a in self.axes
            ],
            "variables": self._variables.tolist(),
        }
