"""Local observation search (KD-tree and brute force) and blocked LETKF/GETKF weights.

Both searches must give the selection of the former dense algorithm (a full
``(npoints, nobs)`` weight matrix, reproduced below as the oracle) exactly: the same
rows in the same order and the same weights *bit for bit*, because each weight is
computed by the same elementwise operations (``geometry.distance``, then the
localization functions) on the same coordinates; the KD-tree only chooses which pairs
are evaluated.  Blocking the weights and their application must not change a bit
either: every row (point) is an independent problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from pyoops.assimilation.letkf import (
    LocalObsSelection,
    ModulationParameters,
    ObsLocalization,
    apply_weights,
    getkf_weights,
    letkf_weights,
    local_obs_selection,
    localization_cutoff,
    localization_function,
    modulate_obs,
    modulation_modes,
)
from pyoops.fields.fieldset import FieldSet
from pyoops.generic.grid import StructuredGrid
from pyoops.interface.geometry import Locations
from pyoops.util.errors import ConfigError
from pyoops_lorenz96 import Lorenz96Geometry
from pyoops_qg import QgGeometry
from pyoops_qg.geometry import DOMAIN_MERIDIONAL, DOMAIN_ZONAL
from pyoops_shallow_water import ShallowWaterGeometry

GC, BOX = "Gaspari-Cohn", "Box Car"


def dense_reference(geometry: Any, groups: Sequence[Locations], per_group: Sequence[list[Any]],
                    ) -> LocalObsSelection:
    """The former algorithm: the dense weight matrix, compacted and merged row by row."""
    points = geometry.grid_locations()
    parts = []
    for locs, locz in zip(groups, per_group):
        a = {k: v[:, None] for k, v in points.coords.items()}
        b = {k: v[None, :] for k, v in locs.coords.items()}
        w = np.ones((points.nlocs, locs.nlocs))
        for loc in locz:
            w = w * localization_function(np.asarray(geometry.distance(a, b), dtype=float),
                                          loc.localization_method, loc.lengthscale)
        parts.append(w)
    weight = np.concatenate(parts, axis=1)
    npts, nobs = weight.shape
    weight = np.where(weight > 1e-12, weight, 0.0)
    used = weight > 0
    width = int(used.sum(axis=1).max()) if npts and nobs else 0
    if width == nobs:
        index, w = np.broadcast_to(np.arange(nobs), (npts, nobs)).copy(), weight.copy()
    else:
        order = np.argsort(~used, axis=1, kind="stable")[:, :width]
        w = np.take_along_axis(weight, order, axis=1)
        index, w = np.where(w > 0, order, 0), np.where(w > 0, w, 0.0)
    key = np.concatenate([index.astype(np.float64), w], axis=1)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    return LocalObsSelection(index[first], w[first], inverse.ravel().astype(np.intp), nobs)


def assert_identical(a: LocalObsSelection, b: LocalObsSelection) -> None:
    assert a.nobs == b.nobs
    assert a.index.shape == b.index.shape and a.index.dtype == b.index.dtype
    assert np.array_equal(a.index, b.index)
    assert np.array_equal(a.weight, b.weight)  # bitwise: the same operations on the same numbers
    assert np.array_equal(a.point_row, b.point_row)


def l96_case(rng: np.random.Generator) -> tuple[Any, list[Locations], dict[str, float]]:
    geom = Lorenz96Geometry({"resol": 60})
    # Group 2 holds an observation on the upper bound (x = 1 wraps to the grid point 0) and one at
    # exactly 0.25 from the grid point 0 (the Box Car cutoff below: weight 1, included).
    groups = [Locations({"x": rng.random(37)}), Locations({"x": rng.random(11)}),
              Locations({"x": np.array([1.0, 0.5, 0.25])})]
    return geom, groups, {"short": 0.04, "medium": 0.25, "long": 0.7, "domain": 3.0}


def qg_case(rng: np.random.Generator) -> tuple[Any, list[Locations], dict[str, float]]:
    geom = QgGeometry({"nx": 24, "ny": 9, "depths": [4500.0, 5500.0]})
    dx = DOMAIN_ZONAL / 24

    def locs(n: int) -> Locations:
        return Locations({"x": rng.uniform(0, DOMAIN_ZONAL, n), "y": rng.uniform(0, DOMAIN_MERIDIONAL, n),
                          "z": rng.uniform(0, 1.0e4, n)})

    # The last group: the upper x bound, and a point 2.5e6 m east of grid column 3 on the wall row
    # (exactly the Box Car cutoff below).
    edge = Locations({"x": np.array([DOMAIN_ZONAL, 3 * dx + 2.5e6]), "y": np.array([0.0, 0.0]),
                      "z": np.array([100.0, 100.0])})
    return geom, [locs(40), locs(15), edge], {"short": 8.0e5, "medium": 2.5e6, "long": 6.0e6, "domain": 3.0e7}


CASES = {"lorenz96": l96_case, "qg": qg_case}


def localization_sets(lengths: dict[str, float]) -> dict[str, Any]:
    """Localization arguments of :func:`local_obs_selection` covering every code path."""
    loc = {name: ObsLocalization(lengthscale=value) for name, value in lengths.items()}
    box = ObsLocalization(localization_method=BOX, lengthscale=lengths["medium"])
    return {
        "none": None,
        **{f"gc-{name}": [value] for name, value in loc.items()},
        "box-at-cutoff": [box],
        "product": [loc["long"], box],
        "per-group": [[loc["short"]], [], [box]],
        "one-localized-group": [[], [loc["medium"]], []],
        "none-per-group": [[], [], []],
    }


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("which", sorted(localization_sets({"short": 1, "medium": 1, "long": 1, "domain": 1})))
def test_kdtree_and_brute_search_give_the_dense_selection(case, which):
    rng = np.random.default_rng(sorted(CASES).index(case))
    geom, groups, lengths = CASES[case](rng)
    localizations = localization_sets(lengths)[which]
    if localizations is None:
        per_group = [[] for _ in groups]
    elif isinstance(localizations[0], list):
        per_group = localizations
    else:
        per_group = [localizations] * len(groups)
    expected = dense_reference(geom, groups, per_group)
    for search in ("kdtree", "brute", "auto"):
        assert_identical(local_obs_selection(geom, groups, localizations, search=search), expected)
    # Small chunks: the brute force search in many pieces.
    assert_identical(local_obs_selection(geom, groups, localizations, search="brute", chunk=50), expected)


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_observation_exactly_at_the_cutoff(case):
    """Box Car keeps an observation at exactly ``lengthscale`` (weight 1), Gaspari-Cohn drops it (weight 0)."""
    geom, groups, lengths = CASES[case](np.random.default_rng(0))
    edge = groups[-1]
    offset = sum(g.nlocs for g in groups[:-1])
    at_cutoff = offset + edge.nlocs - 1
    points = geom.grid_locations()
    q = int(np.flatnonzero(geom.distance({k: v[:, None] for k, v in points.coords.items()},
                                         {k: v[None, -1:] for k, v in edge.coords.items()})[:, 0]
                           == lengths["medium"])[0])
    for method, kept in ((BOX, True), (GC, False)):
        sel = local_obs_selection(geom, groups, [ObsLocalization(localization_method=method,
                                                                 lengthscale=lengths["medium"])], search="kdtree")
        row = sel.point_row[q]
        assert (at_cutoff in sel.index[row][sel.weight[row] > 0]) is kept


def test_localization_cutoff_is_the_support():
    r = np.linspace(0.0, 2.0, 2001)
    for method in (GC, BOX, "Horizontal Gaspari-Cohn", "Horizontal Box car"):
        cut = localization_cutoff(method, 0.7)
        assert cut == 0.7
        assert not localization_function(r[r > cut], method, 0.7).any()
    with pytest.raises(ConfigError, match="unknown localization"):
        localization_cutoff("Gaussian", 1.0)


@pytest.mark.parametrize("geom", [Lorenz96Geometry({"resol": 40}),
                                  QgGeometry({"nx": 16, "ny": 7, "depths": [4500.0, 5500.0]}),
                                  ShallowWaterGeometry({"nx": 12, "ny": 10, "dx": 1.0e5, "dy": 2.0e5}),
                                  StructuredGrid.channel_2d(9, 6, lx=3.0, ly=2.0)],
                         ids=["lorenz96", "qg", "shallow_water", "channel"])
def test_search_coordinates_measure_the_geometry_distance(geom):
    """The KD-tree metric (minimum image where the box size is positive) equals ``distance``.

    Tolerance: both are a handful of roundings of coordinates of magnitude at most the
    domain size ``scale``, so they agree to a few ulp of it; 1e-13 relative leaves a
    factor of ~500 over the double-precision epsilon.
    """
    rng = np.random.default_rng(3)
    pts = geom.grid_locations()
    n = 500
    hor = [a for a in geom.axes if a.horizontal]
    a = Locations({ax.name: rng.uniform(ax.lower, ax.upper, n) for ax in geom.axes})
    b = Locations({ax.name: np.concatenate([[ax.upper, ax.lower], rng.uniform(ax.lower, ax.upper, n - 2)])
                   for ax in geom.axes})
    ca, cb = geom.search_coordinates(a), geom.search_coordinates(b)
    box = ca.boxsize
    assert ca.points.shape == (n, len(hor))
    periodic = box > 0
    assert ((ca.points >= 0) & (ca.points < np.where(periodic, box, np.inf))).all()
    d = np.abs(ca.points - cb.points)
    d = np.where(periodic, np.minimum(d, box - d), d)
    scale = max(ax.upper - ax.lower for ax in hor)
    assert np.abs(np.sqrt((d**2).sum(axis=1)) - geom.distance(a.coords, b.coords)).max() <= 1e-13 * scale
    assert geom.search_coordinates(pts).points.shape[0] == pts.nlocs


class _Chebyshev(StructuredGrid):
    """A grid whose ``distance`` is not Euclidean: no KD-tree embedding."""

    def distance(self, a, b):
        return np.maximum(*(np.abs(ax.separation(a[ax.name], b[ax.name])) for ax in self.horizontal_axes))


def test_a_geometry_without_search_coordinates_falls_back_to_brute_force():
    geom = _Chebyshev([StructuredGrid.periodic_2d(8, 6).axes[0], StructuredGrid.periodic_2d(8, 6).axes[1]], ["h"])
    assert geom.search_coordinates(geom.grid_locations()) is None
    rng = np.random.default_rng(4)
    locs = Locations({"x": rng.random(20), "y": rng.random(20)})
    loc = [ObsLocalization(lengthscale=0.3)]
    assert_identical(local_obs_selection(geom, locs, loc), dense_reference(geom, [locs], [loc]))
    with pytest.raises(ValueError, match="no search coordinates"):
        local_obs_selection(geom, locs, loc, search="kdtree")
    with pytest.raises(ValueError, match="search must be"):
        local_obs_selection(geom, locs, loc, search="octree")


@pytest.mark.filterwarnings("ignore:invalid value encountered in remainder:RuntimeWarning")  # brute: NaN distances
def test_non_finite_observation_coordinates_are_never_selected():
    geom = Lorenz96Geometry({"resol": 30})
    locs = Locations({"x": np.array([0.1, np.nan, 0.5, np.inf])})
    loc = [ObsLocalization(lengthscale=0.2)]
    sel = local_obs_selection(geom, locs, loc, search="kdtree")
    assert_identical(sel, local_obs_selection(geom, locs, loc, search="brute"))
    assert set(np.unique(sel.index[sel.weight > 0])) == {0, 2}


# Blocked weights ------------------------------------------------------------------------------------
BLOCKS = (1, 2, 7, 64)  # single rows, a remainder block, one block larger than the problem


@pytest.fixture(scope="module")
def ring_problem():
    rng = np.random.default_rng(5)
    geom = Lorenz96Geometry({"resol": 50})
    locs = Locations({"x": rng.random(45)})
    h = geom.interpolation_matrix(locs)
    nmem = 8
    members = FieldSet({"x": rng.standard_normal((nmem, 50)), "w": rng.standard_normal((nmem, 50))})
    hx = (h @ members["x"].T).T
    y, r = rng.standard_normal(45), rng.uniform(0.5, 2.0, 45)
    sel = local_obs_selection(geom, locs, [ObsLocalization(lengthscale=0.12)])
    modes = modulation_modes(geom, ModulationParameters(lengthscale=0.3, number_of_modes=5))
    hz = modulate_obs(hx, h @ modes)
    return geom, members, hx, y, r, sel, modes, hz


@pytest.mark.parametrize("space", ["auto", "observation"])
def test_blocked_letkf_weights_and_update_are_bitwise_the_unblocked_ones(ring_problem, space):
    _, members, hx, y, r, sel, _, _ = ring_problem
    assert 1 < sel.nrows < 64
    ref = letkf_weights(sel, hx, y, r, mult=1.1, space=space, block=sel.nrows)
    xa = apply_weights(ref, members, rtpp=0.3, rtps=0.6, posterior_mult=1.05, block=sel.npoints)
    for block in BLOCKS + (None,):
        w = letkf_weights(sel, hx, y, r, mult=1.1, space=space, block=block)
        assert np.array_equal(w.mean, ref.mean) and np.array_equal(w.pert, ref.pert)
        assert np.array_equal(w.active, ref.active)
        out = apply_weights(w, members, rtpp=0.3, rtps=0.6, posterior_mult=1.05, block=block)
        for v in members:
            assert np.array_equal(out[v], xa[v])


def test_blocked_getkf_weights_and_update_are_bitwise_the_unblocked_ones(ring_problem):
    _, members, hx, y, r, sel, modes, hz = ring_problem
    ref = getkf_weights(sel, hx, hz, y, r, mult=1.2, block=sel.nrows)
    xa = apply_weights(ref, members, modes, rtps=0.5, block=sel.npoints)
    for block in BLOCKS + (None,):
        w = getkf_weights(sel, hx, hz, y, r, mult=1.2, block=block)
        assert np.array_equal(w.mean, ref.mean) and np.array_equal(w.pert, ref.pert)
        out = apply_weights(w, members, modes, rtps=0.5, block=block)
        for v in members:
            assert np.array_equal(out[v], xa[v])


def test_block_must_be_positive(ring_problem):
    _, _, hx, y, r, sel, _, _ = ring_problem
    with pytest.raises(ValueError, match="positive number of rows"):
        letkf_weights(sel, hx, y, r, block=0)
