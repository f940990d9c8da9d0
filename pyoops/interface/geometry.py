"""Abstract Geometry and the GetValues (interpolation) interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import numpy as np

from pyoops.config.parameters import Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.util.variables import Variables

__all__ = ["Geometry", "GetValues", "Locations", "SearchCoordinates"]


class Locations:
    """Observation locations: named coordinate arrays and times, all of length ``nlocs``.

    Coordinates use the geometry's names (``x``; ``x, y``; ``x, y, z``) and units;
    times are seconds since 1970-01-01T00:00:00Z (the IODA ``dateTime`` convention).
    """

    def __init__(self, coords: Mapping[str, Any], times: Any = None):
        self.coords = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in coords.items()}
        sizes = {v.size for v in self.coords.values()}
        if len(sizes) > 1:
            raise ValueError(f"location coordinates have different lengths: {sizes}")
        self.nlocs = sizes.pop() if sizes else 0
        self.times = np.zeros(self.nlocs) if times is None else np.asarray(times, dtype=np.float64).ravel()
        if self.times.size != self.nlocs:
            raise ValueError(f"{self.times.size} times for {self.nlocs} locations")

    def __len__(self) -> int:
        return self.nlocs

    def subset(self, index: Any) -> "Locations":
        return Locations({k: v[index] for k, v in self.coords.items()}, self.times[index])

    def key(self) -> tuple:
        """An exact, hashable key of the coordinates (names and bytes; not the times): equal keys, the
        same network in space."""
        return tuple((k, v.tobytes()) for k, v in sorted(self.coords.items()))


class SearchCoordinates(NamedTuple):
    r"""Coordinates in which a KD-tree measures :meth:`Geometry.distance <pyoops.interface.geometry.Geometry.distance>`.

    ``points`` ``(nlocs, k)`` are Cartesian coordinates and ``boxsize`` ``(k,)`` gives
    the period of each coordinate (0 for a non-periodic one), the convention of
    :class:`scipy.spatial.cKDTree`: the distance between locations :math:`a` and
    :math:`b` is

    .. math::

        \Big(\sum_{i=1}^k \delta_i^2\Big)^{1/2}, \qquad
        \delta_i = \begin{cases}
        \min_{n\in\mathbb{Z}} |b_i - a_i + n L_i|, & L_i > 0 \text{ (periodic, period } L_i),\\
        |b_i - a_i|, & L_i = 0,
        \end{cases}

    which must equal the geometry's ``distance`` up to round-off (a few units in the last
    place of the coordinates).  Periodic coordinates lie in :math:`[0, L_i)`.
    """

    points: np.ndarray
    boxsize: np.ndarray

    def kd_tree(self) -> Any:
        """A :class:`scipy.spatial.cKDTree` of ``points`` with this ``boxsize`` (scipy is imported here, not when
        this module is)."""
        from scipy.spatial import cKDTree

        return cKDTree(self.points, boxsize=np.asarray(self.boxsize, dtype=np.float64))


class GetValues(ABC):
    r"""Interpolation of model fields to observation locations, with TL and AD.

    Linear in the fields: :math:`g = W f`, so :meth:`apply_tl` is :meth:`apply`
    and :meth:`apply_ad` computes :math:`W^\mathsf{T} g`.  Leading batch axes
    (ensemble members) pass through.
    """

    nlocs: int

    @abstractmethod
    def apply(self, fields: FieldSet, variables: Variables) -> FieldSet:
        """GeoVaLs ``{var: (..., nlocs)}`` of ``variables`` interpolated from ``fields``."""

    def apply_tl(self, dfields: FieldSet, variables: Variables) -> FieldSet:
        """Tangent linear of :meth:`apply` (the same linear map)."""
        return self.apply(dfields, variables)

    @abstractmethod
    def apply_ad(self, geovals: FieldSet, fields: FieldSet) -> None:
        """Add :math:`W^\\mathsf{T}` ``geovals`` into ``fields`` in place (adjoint accumulation)."""


class Geometry(ABC):
    """The model grid: shapes, coordinates, cell areas, distances and interpolation.

    A plugin subclasses this (usually through
    :class:`pyoops.generic.grid.StructuredGrid`) and declares ``Parameters``.
    """

    Parameters: ClassVar[type[Parameters]]

    #: Dimension names of a grid field in file order, e.g. ``("y", "x")``.
    dims: tuple[str, ...]
    #: Grid shape matching :attr:`~pyoops.interface.geometry.Geometry.dims`.
    shape: tuple[int, ...]

    def field_shape(self, variable: str) -> tuple[int, ...]:
        """Grid shape of ``variable`` (all variables share :attr:`~pyoops.interface.geometry.Geometry.shape` unless overridden)."""
        return self.shape

    def field_dims(self, variable: str) -> tuple[str, ...]:
        """Dimension names of ``variable`` in files."""
        return self.dims

    @property
    @abstractmethod
    def variables(self) -> Variables:
        """The model variables this geometry holds by default."""

    @property
    @abstractmethod
    def coordinates(self) -> dict[str, np.ndarray]:
        """1-D coordinate array of each dimension in :attr:`~pyoops.interface.geometry.Geometry.dims`."""

    @property
    @abstractmethod
    def location_names(self) -> tuple[str, ...]:
        """Names of the coordinates of an observation location (``x``, ``y``, ...)."""

    @abstractmethod
    def cell_areas(self) -> np.ndarray:
        """Area (length in 1-D) of each grid cell, of shape :attr:`~pyoops.interface.geometry.Geometry.shape` without levels."""

    @abstractmethod
    def distance(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> np.ndarray:
        """Horizontal distance between locations ``a`` and ``b`` (broadcasting)."""

    def search_coordinates(self, locations: Locations) -> SearchCoordinates | None:
        """Coordinates of ``locations`` for a KD-tree search of :meth:`distance`, or ``None``.

        A geometry whose ``distance`` is a Euclidean distance with optional periodic
        coordinates (minimum image) returns a
        :class:`~pyoops.interface.geometry.SearchCoordinates`; then neighbours within a
        radius are found in :math:`O(n \\log n)` time and memory proportional to the
        neighbour pairs (e.g. by
        :func:`~pyoops.assimilation.letkf.local_obs_selection`).  The default ``None``
        says there is no such embedding: callers then evaluate ``distance`` between all
        pairs, in chunks.
        """
        return None

    @abstractmethod
    def check_locations(self, locations: Locations, source: str = "") -> None:
        """Raise a clear error if any location lies outside the domain."""

    @abstractmethod
    def grid_locations(self) -> Locations:
        """Every grid point as a location (coordinates named as :attr:`location_names`)."""

    @abstractmethod
    def interpolator(self, locations: Locations) -> GetValues:
        """The :class:`~pyoops.interface.geometry.GetValues` from this grid to ``locations``."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Plain data identifying the geometry (written to files, compared on read)."""

    def same_as(self, other: "Geometry") -> bool:
        return type(self) is type(other) and self.describe() == other.describe()

    def coordinate_units(self) -> dict[str, str]:
        """CF ``units`` of the coordinate of each file dimension, e.g. ``{"x": "m"}``.

        Written as the coordinate variable's ``units`` attribute and compared on read
        when a file gives one.  Default: none declared.
        """
        return {}

    def spacing_keys(self) -> dict[str, str]:
        """Geometry YAML key that sets the grid spacing along each file dimension, e.g. ``{"x": "dx"}``.

        Only for messages: a file on another grid spacing names ``geometry.<key>``.
        """
        return {}

    def field_shapes(self, variables: Variables) -> dict[str, tuple[int, ...]]:
        return {v: self.field_shape(v) for v in variables}

    def zeros(self, variables: Variables, batch_shape: tuple[int, ...] = ()) -> FieldSet:
        """A FieldSet of zeros for ``variables`` with optional leading batch axes."""
        return FieldSet({v: np.zeros(batch_shape + self.field_shape(v)) for v in variables}, copy=False)

    def random(self, variables: Variables, rng: np.random.Generator, batch_shape: tuple[int, ...] = ()) -> FieldSet:
        """Independent standard-normal fields of ``variables``, drawn from ``rng`` variable by variable."""
        return FieldSet({v: rng.standard_normal(tuple(batch_shape) + tuple(self.field_shape(v))) for v in variables},
                        copy=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"
