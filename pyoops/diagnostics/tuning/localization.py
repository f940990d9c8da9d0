r"""Gaspari–Cohn localization in observation space and distance functions.

Convention: the localization length :math:`\ell` is the **half-width** :math:`c` of the
Gaspari–Cohn (1999, eq. 4.10) function, so :math:`L_\ell(r) = \mathrm{GC}(r/\ell)` is 1 at
:math:`r = 0`, :math:`0.208` at :math:`r = \ell` and exactly 0 from :math:`r = 2\ell` on.  This is
the :math:`c` of :func:`pyoops.saber.generic.ensemble.gaspari_cohn`; the LETKF's
``lengthscale`` (the cut-off distance) is :math:`2\ell`.  With :math:`z = r/\ell \ge 0`:

.. math::

    \mathrm{GC}(z) = \begin{cases}
    -\tfrac14 z^5 + \tfrac12 z^4 + \tfrac58 z^3 - \tfrac53 z^2 + 1, & 0 \le z \le 1,\\
    \tfrac1{12} z^5 - \tfrac12 z^4 + \tfrac58 z^3 + \tfrac53 z^2 - 5z + 4 - \tfrac23 z^{-1}, & 1 < z < 2,\\
    0, & z \ge 2,
    \end{cases}

and, for the gradient with respect to :math:`\log\ell`,
:math:`\partial L_\ell(r)/\partial\log\ell = -z\,\mathrm{GC}'(z)` with

.. math::

    \mathrm{GC}'(z) = \begin{cases}
    -\tfrac54 z^4 + 2 z^3 + \tfrac{15}8 z^2 - \tfrac{10}3 z, & 0 \le z \le 1,\\
    \tfrac5{12} z^4 - 2 z^3 + \tfrac{15}8 z^2 + \tfrac{10}3 z - 5 + \tfrac2{3} z^{-2}, & 1 < z < 2,\\
    0, & z \ge 2.
    \end{cases}

:math:`L_\ell \circ \mathbf C` is positive semi-definite for any covariance :math:`\mathbf C`
(Schur product theorem; GC is a compactly supported correlation function in up to three
dimensions).  :math:`\ell = \infty` means no localization (:math:`L = 1`).

**Compact support.** :math:`\mathrm{GC}` and :math:`\mathrm{GC}'` are exactly zero from :math:`z = 2` on (the
outer polynomial and its derivative vanish at :math:`z = 2`; near it :math:`\mathrm{GC} = O((2-z)^3)`), so
:math:`L_\ell\circ\mathbf C` and :math:`(\partial_{\log\ell}L_\ell)\circ\mathbf C` are sparse: only the
observation pairs closer than :math:`2\ell` contribute, with no truncation.  :func:`neighbour_pairs` finds them
in memory proportional to their number: with a KD-tree (:class:`scipy.spatial.cKDTree`) when the distance
function declares KD-tree coordinates (:func:`search_coordinates`; the functions of this module and
:func:`~pyoops.diagnostics.tuning.from_archive.geometry_distance` do), otherwise by evaluating the distance
function a block of rows at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from pyoops.interface.geometry import SearchCoordinates

__all__ = [
    "DistanceFunction",
    "NeighbourPairs",
    "PairLimitExceeded",
    "checked_distances",
    "euclidean_distance",
    "gaspari_cohn",
    "gaspari_cohn_derivative",
    "localization",
    "localization_log_length_derivative",
    "neighbour_pair_counts",
    "neighbour_pairs",
    "periodic_distance",
    "search_coordinates",
]

DistanceFunction = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], np.ndarray]
"""``distance(coords_a, coords_b) -> (p_a, p_b)`` array of distances between two sets of locations."""


def gaspari_cohn(z: np.ndarray) -> np.ndarray:
    r""":math:`\mathrm{GC}(z)` for :math:`z = r/\ell` (any shape; :math:`|z|` is used)."""
    z = np.abs(np.asarray(z, dtype=np.float64))
    out = np.zeros_like(z)
    inner = z <= 1.0
    x = z[inner]
    out[inner] = 1.0 + x**2 * (-5.0 / 3.0 + x * (0.625 + x * (0.5 - 0.25 * x)))
    outer = (z > 1.0) & (z < 2.0)
    x = z[outer]
    out[outer] = 4.0 - 2.0 / (3.0 * x) + x * (-5.0 + x * (5.0 / 3.0 + x * (0.625 + x * (-0.5 + x / 12.0))))
    return out


def gaspari_cohn_derivative(z: np.ndarray) -> np.ndarray:
    r""":math:`\mathrm{GC}'(z)`, the derivative with respect to :math:`z \ge 0`."""
    z = np.abs(np.asarray(z, dtype=np.float64))
    out = np.zeros_like(z)
    inner = z <= 1.0
    x = z[inner]
    out[inner] = x * (-10.0 / 3.0 + x * (1.875 + x * (2.0 - 1.25 * x)))
    outer = (z > 1.0) & (z < 2.0)
    x = z[outer]
    out[outer] = -5.0 + 2.0 / (3.0 * x**2) + x * (10.0 / 3.0 + x * (1.875 + x * (-2.0 + x * 5.0 / 12.0)))
    return out


def localization(distance: np.ndarray, length: float) -> np.ndarray:
    r""":math:`L_\ell = \mathrm{GC}(r/\ell)` elementwise; all ones for :math:`\ell = \infty`."""
    r = np.asarray(distance, dtype=np.float64)
    if np.isinf(length):
        return np.ones_like(r)
    return gaspari_cohn(r / length)


def localization_log_length_derivative(distance: np.ndarray, length: float) -> np.ndarray:
    r""":math:`\partial L_\ell/\partial\log\ell = -z\,\mathrm{GC}'(z)`, :math:`z = r/\ell`
    (zero for :math:`\ell=\infty`)."""
    r = np.asarray(distance, dtype=np.float64)
    if np.isinf(length):
        return np.zeros_like(r)
    z = r / length
    return -z * gaspari_cohn_derivative(z)


def periodic_distance(period: float = 1.0, coordinate: str = "x") -> DistanceFunction:
    r"""Distance on a circle of circumference ``period``: :math:`\min(|\Delta x|, P - |\Delta x|)`.

    For Lorenz-96 with ``x`` in :math:`[0, 1)`: :math:`d = \min(|\Delta x|, 1 - |\Delta x|)`.
    """

    def distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> np.ndarray:
        dx = np.abs(np.asarray(a[coordinate], dtype=np.float64)[:, None]
                    - np.asarray(b[coordinate], dtype=np.float64)[None, :]) % period
        return np.minimum(dx, period - dx)

    def embedding(coords: Mapping[str, np.ndarray]) -> SearchCoordinates:
        x = np.mod(np.asarray(coords[coordinate], dtype=np.float64), period)
        return _search_coordinates(np.where(x < period, x, 0.0)[:, None], [period])   # mod may round up to P

    distance.search_coordinates = embedding  # type: ignore[attr-defined]
    return distance


def euclidean_distance(coordinates: Sequence[str] = ("x",)) -> DistanceFunction:
    r"""Euclidean distance :math:`\big(\sum_c (\Delta c)^2\big)^{1/2}` over the named coordinates."""
    names = tuple(coordinates)

    def distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> np.ndarray:
        total = 0.0
        for name in names:
            total = total + (np.asarray(a[name], dtype=np.float64)[:, None]
                             - np.asarray(b[name], dtype=np.float64)[None, :]) ** 2
        return np.sqrt(total)

    def embedding(coords: Mapping[str, np.ndarray]) -> SearchCoordinates:
        points = np.stack([np.asarray(coords[name], dtype=np.float64) for name in names], axis=1)
        return _search_coordinates(points, [0.0] * len(names))

    distance.search_coordinates = embedding  # type: ignore[attr-defined]
    return distance


def _search_coordinates(points: np.ndarray, boxsize: Sequence[float]) -> SearchCoordinates:
    from pyoops.interface.geometry import SearchCoordinates

    return SearchCoordinates(points, np.asarray(boxsize, dtype=np.float64))


def search_coordinates(distance: DistanceFunction, coordinates: Mapping[str, np.ndarray]) -> SearchCoordinates | None:
    """KD-tree coordinates of ``coordinates`` in which ``distance`` is measured, or None.

    A distance function declares them with a ``search_coordinates`` attribute (a function of the
    coordinate mapping returning a :class:`~pyoops.interface.geometry.SearchCoordinates`, whose
    tree distance must equal ``distance`` up to round-off): :func:`periodic_distance`,
    :func:`euclidean_distance` and :func:`~pyoops.diagnostics.tuning.from_archive.geometry_distance` do.
    """
    embed = getattr(distance, "search_coordinates", None)
    return None if embed is None else embed(coordinates)


class NeighbourPairs(NamedTuple):
    """Ordered observation pairs :math:`(i, j)` with :math:`r_{ij} \\le` ``radius`` (both orders, and
    :math:`i = j`), sorted by row then column."""

    rows: np.ndarray
    cols: np.ndarray
    distance: np.ndarray
    radius: float


class PairLimitExceeded(ValueError):
    """Raised by :func:`neighbour_pairs` when more than ``limit`` pairs lie within the radius (``count``: the pairs
    counted when the search stopped, at least ``limit + 1``)."""

    def __init__(self, message: str, count: int, limit: int) -> None:
        super().__init__(message)
        self.count = count
        self.limit = limit


_CHUNK_ENTRIES = 1 << 22          # distances evaluated at once by the row-block search (32 MiB)


def _row_blocks(distance: DistanceFunction, coordinates: Mapping[str, np.ndarray],
                p: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, r)``: the distances ``r`` (rows ``start ...``, all columns) a block of rows at a time."""
    step = max(1, _CHUNK_ENTRIES // max(p, 1))
    for start in range(0, p, step):
        block = {k: np.asarray(v)[start:start + step] for k, v in coordinates.items()}
        yield start, checked_distances(distance(block, coordinates), (min(step, p - start), p))


def checked_distances(r: object, shape: tuple[int, int]) -> np.ndarray:
    """A distance function's result as float64, checked: of ``shape``, finite and non-negative (ValueError)."""
    r = np.asarray(r, dtype=np.float64)
    if r.shape != shape:
        raise ValueError(f"the distance function returned shape {r.shape}, expected {shape}")
    if not np.all(np.isfinite(r) & (r >= 0)):
        raise ValueError("the distance function returned negative or non-finite distances")
    return r


def neighbour_pair_counts(distance: DistanceFunction, coordinates: Mapping[str, np.ndarray],
                          radii: Sequence[float]) -> np.ndarray:
    """Number of ordered pairs (self-pairs included) with :math:`r_{ij} \\le` each radius (``radii`` ascending):
    :meth:`scipy.spatial.cKDTree.count_neighbors` when ``distance`` declares :func:`search_coordinates`, else a
    histogram of the distances a block of rows at a time."""
    radii = np.asarray(radii, dtype=np.float64)
    p = len(next(iter(coordinates.values())))
    embedded = search_coordinates(distance, coordinates)
    if embedded is not None:
        tree = embedded.kd_tree()
        return np.asarray(tree.count_neighbors(tree, radii), dtype=np.int64)
    counts = np.zeros(radii.size + 1, dtype=np.int64)
    for _, r in _row_blocks(distance, coordinates, p):
        counts += np.bincount(np.searchsorted(radii, r.ravel(), side="left"), minlength=radii.size + 1)
    return np.cumsum(counts)[:-1]


def neighbour_pairs(distance: DistanceFunction, coordinates: Mapping[str, np.ndarray], radius: float,
                    max_pairs: int | None = None) -> NeighbourPairs:
    """The observation pairs within ``radius`` (:class:`NeighbourPairs`), in memory proportional to their number.

    KD-tree search when ``distance`` declares :func:`search_coordinates` (distances are then the tree's, equal
    to ``distance`` up to round-off: a pair at :math:`r = 2\\ell(1 \\pm 10^{-15})` may fall either side, where
    :math:`\\mathrm{GC} = O(10^{-45})`); otherwise ``distance`` is evaluated a block of rows at a time
    (:math:`O(p^2)` time, :math:`O(p\\times` neighbours :math:`)` memory).  More than ``max_pairs`` pairs raise
    :class:`PairLimitExceeded` (a ValueError) before they are stored.
    """
    p = len(next(iter(coordinates.values())))
    embedded = search_coordinates(distance, coordinates)

    def check(count: int) -> None:
        if max_pairs is not None and count > max_pairs:
            raise PairLimitExceeded(
                f"{'at least ' if embedded is None else ''}{count} observation pairs lie within {radius:.6g} of each "
                f"other ({count / p:.0f} per observation), more than max_pairs = {max_pairs}: the sparse "
                "localization would not fit; use a shorter localization length (or bounds on 'length') or raise "
                "max_pairs", count, max_pairs)

    if embedded is not None:
        tree = embedded.kd_tree()
        check(int(tree.count_neighbors(tree, radius)))
        found = tree.sparse_distance_matrix(tree, radius, output_type="ndarray")
        rows, cols, dist = found["i"], found["j"], found["v"]
    else:
        parts, count = [], 0
        for start, r in _row_blocks(distance, coordinates, p):
            i, j = np.nonzero(r <= radius)
            count += i.size
            check(count)
            parts.append((i + start, j, r[i, j]))
        rows, cols, dist = (np.concatenate(x) for x in zip(*parts))
    order = np.lexsort((cols, rows))
    return NeighbourPairs(rows[order].astype(np.intp, copy=False), cols[order].astype(np.intp, copy=False),
                          dist[order].astype(np.float64, copy=False), float(radius))
