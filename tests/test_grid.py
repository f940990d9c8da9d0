"""StructuredGrid: shapes, distances, interpolation W and its exact adjoint Wᵀ."""

import numpy as np
import pytest

from pyoops.fields.fieldset import FieldSet
from pyoops.generic.grid import Axis, StructuredGrid
from pyoops.interface.geometry import Locations
from pyoops.util import ConfigError, Variables


def _rel(a, b):
    return abs(a - b) / max(abs(a), abs(b))


@pytest.fixture
def rng():
    return np.random.default_rng(20240501)


def _random_locations(grid, n, rng):
    coords = {}
    for axis in grid.axes:
        if axis.interpolation == "nearest":
            coords[axis.name] = rng.choice(axis.points, n)
        else:
            coords[axis.name] = rng.uniform(axis.lower, axis.upper, n)
    return Locations(coords, np.zeros(n))


GRIDS = {
    "periodic_1d": lambda: StructuredGrid.periodic_1d(40),
    "periodic_2d": lambda: StructuredGrid.periodic_2d(12, 9, lx=3.0, ly=2.0, variables=["h", "u"]),
    "channel_levels": lambda: StructuredGrid.channel_2d(10, 8, lx=2.0, ly=1.0, variables=["psi"], levels=[0, 1]),
}


def test_shapes_dims_and_location_names():
    g1 = StructuredGrid.periodic_1d(40)
    assert g1.shape == (40,) and g1.location_names == ("x",)
    assert g1.dims == ("position",)  # the file dimension differs from the variable name 'x'
    assert set(g1.coordinates) == {"position"}
    g2 = StructuredGrid.periodic_2d(12, 9)
    assert g2.shape == (9, 12) and g2.dims == ("y", "x") and g2.location_names == ("x", "y")
    g3 = GRIDS["channel_levels"]()
    assert g3.shape == (2, 8, 10) and g3.dims == ("z", "y", "x") and g3.location_names == ("x", "y", "z")
    assert g3.variables == Variables(["psi"])
    assert g3.zeros(Variables(["psi"]), (4,))["psi"].shape == (4, 2, 8, 10)
    assert set(g3.coordinates) == {"x", "y", "z"}
    mesh = g3.mesh()
    assert mesh["y"].shape == g3.shape
    np.testing.assert_array_equal(mesh["y"][0, :, 0], g3.axis("y").points)


def test_variable_named_like_a_file_dimension_is_refused():
    with pytest.raises(ConfigError, match="dim="):
        StructuredGrid([Axis.periodic_axis("x", 4, 1.0)], ["x"])
    g = StructuredGrid([Axis.periodic_axis("x", 4, 1.0, dim="position")], ["x"])
    assert g.dims == ("position",) and g.location_names == ("x",)


def test_axis_points():
    p = Axis.periodic_axis("x", 4, 2.0)
    np.testing.assert_allclose(p.points, [0.0, 0.5, 1.0, 1.5])
    assert p.periodic and p.spacing == 0.5 and p.upper == 2.0
    b = Axis.bounded_axis("y", 4, 1.0)
    np.testing.assert_allclose(b.points, [0.125, 0.375, 0.625, 0.875])
    assert not b.periodic and b.lower == 0.0 and b.upper == 1.0
    with pytest.raises(ConfigError, match="'x'"):
        Axis.periodic_axis("x", 0, 1.0)
    with pytest.raises(ConfigError, match="'y'"):
        Axis.bounded_axis("y", 1, 1.0)
    with pytest.raises(ConfigError, match="distinct"):
        StructuredGrid([Axis.periodic_axis("x", 3, 1.0), Axis.periodic_axis("x", 3, 1.0)], ["a"])


def test_cell_areas():
    g = StructuredGrid.periodic_2d(12, 9, lx=3.0, ly=2.0)
    areas = g.cell_areas()
    assert areas.shape == (9, 12)
    assert areas.sum() == pytest.approx(6.0, rel=1e-14)
    g3 = GRIDS["channel_levels"]()
    assert g3.cell_areas().shape == (8, 10)  # levels do not count
    assert g3.cell_areas().sum() == pytest.approx(2.0, rel=1e-14)
    assert StructuredGrid.periodic_1d(40, length=4.0).cell_areas().sum() == pytest.approx(4.0)


@pytest.mark.parametrize("name", list(GRIDS))
def test_rows_sum_to_one_and_nonnegative(name, rng):
    g = GRIDS[name]()
    W = g.interpolation_matrix(_random_locations(g, 200, rng))
    assert W.shape == (200, int(np.prod(g.shape)))
    np.testing.assert_allclose(np.asarray(W.sum(axis=1)).ravel(), 1.0, rtol=0, atol=1e-14)
    assert W.data.min() >= 0.0


@pytest.mark.parametrize("name", list(GRIDS))
def test_exact_at_grid_points(name, rng):
    g = GRIDS[name]()
    mesh = g.mesh()
    locs = Locations({a.name: mesh[a.name].ravel() for a in g.axes})
    var = g.variables[0]
    f = FieldSet({var: rng.standard_normal(g.shape)})
    geovals = g.interpolator(locs).apply(f, Variables([var]))
    np.testing.assert_allclose(geovals[var], f[var].ravel(), rtol=0, atol=1e-14)


def test_exact_on_bilinear_functions_channel(rng):
    g = StructuredGrid.channel_2d(10, 8, lx=2.0, ly=1.0)
    ax, ay = g.axis("x"), g.axis("y")
    mesh = g.mesh()
    func = lambda x, y: 1.5 - 2.0 * x + 3.0 * y + 0.7 * x * y  # noqa: E731
    f = FieldSet({"h": func(mesh["x"], mesh["y"])})
    # inside the convex hull of the grid points (no wrap, no wall extrapolation)
    x = rng.uniform(ax.points[0], ax.points[-1], 300)
    y = rng.uniform(ay.points[0], ay.points[-1], 300)
    got = g.interpolator(Locations({"x": x, "y": y})).apply(f, ["h"])["h"]
    np.testing.assert_allclose(got, func(x, y), rtol=0, atol=1e-12)


def test_exact_on_linear_function_periodic_1d(rng):
    g = StructuredGrid.periodic_1d(40, length=2.0)
    xs = g.axis("x").points
    f = FieldSet({"x": 3.0 - 1.25 * xs})
    x = rng.uniform(xs[0], xs[-1], 200)
    got = g.interpolator(Locations({"x": x})).apply(f, ["x"])["x"]
    np.testing.assert_allclose(got, 3.0 - 1.25 * x, rtol=0, atol=1e-13)


def test_constant_extrapolation_between_wall_and_first_point():
    g = StructuredGrid.channel_2d(4, 4, lx=1.0, ly=1.0)
    f = FieldSet({"h": np.arange(16.0).reshape(4, 4)})
    x0 = g.axis("x").points[1]
    locs = Locations({"x": [x0, x0, x0, x0], "y": [0.0, 0.05, 0.95, 1.0]})
    got = g.interpolator(locs).apply(f, ["h"])["h"]
    np.testing.assert_allclose(got, [f["h"][0, 1], f["h"][0, 1], f["h"][3, 1], f["h"][3, 1]])


def test_periodic_wrap_around_1d():
    g = StructuredGrid.periodic_1d(10, length=1.0)
    f = FieldSet({"x": np.arange(10.0) ** 2})
    # between the last point (0.9) and the period end (1.0 ≡ point 0)
    locs = Locations({"x": [0.95, 0.925, 1.0, 0.0]})
    got = g.interpolator(locs).apply(f, ["x"])["x"]
    np.testing.assert_allclose(got, [0.5 * 81 + 0.5 * 0, 0.75 * 81 + 0.25 * 0, 0.0, 0.0], atol=1e-12)


def test_periodic_wrap_around_2d_corner():
    g = StructuredGrid.periodic_2d(4, 4, lx=1.0, ly=1.0)
    f = FieldSet({"h": np.arange(16.0).reshape(4, 4)})
    # the corner cell spans points (3,3), (3,0), (0,3), (0,0): its centre averages them
    got = g.interpolator(Locations({"x": [0.875], "y": [0.875]})).apply(f, ["h"])["h"]
    assert got[0] == pytest.approx(np.mean([f["h"][3, 3], f["h"][3, 0], f["h"][0, 3], f["h"][0, 0]]))


def test_nearest_level_interpolation():
    g = StructuredGrid.channel_2d(4, 4, levels=[0, 1])
    f = FieldSet({"h": np.stack([np.zeros((4, 4)), np.ones((4, 4))])})
    x0, y0 = g.axis("x").points[2], g.axis("y").points[1]
    locs = Locations({"x": [x0] * 4, "y": [y0] * 4, "z": [0.0, 0.4, 0.6, 1.0]})
    np.testing.assert_array_equal(g.interpolator(locs).apply(f, ["h"])["h"], [0.0, 0.0, 1.0, 1.0])


@pytest.mark.parametrize("name", list(GRIDS))
@pytest.mark.parametrize("batch", [(), (3,)])
def test_adjoint_dot_product(name, batch, rng):
    g = GRIDS[name]()
    locs = _random_locations(g, 57, rng)
    interp = g.interpolator(locs)
    variables = g.variables
    f = FieldSet({v: rng.standard_normal(batch + g.shape) for v in variables})
    y = FieldSet({v: rng.standard_normal(batch + (57,)) for v in variables})
    wf = interp.apply(f, variables)
    assert wf[variables[0]].shape == batch + (57,)
    wty = g.zeros(variables, batch)
    interp.apply_ad(y, wty)
    lhs, rhs = wf.dot(y), f.dot(wty)
    assert _rel(lhs, rhs) < 1e-14
    # apply_tl is the same linear map
    assert interp.apply_tl(f, variables).allclose(wf, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(GRIDS))
def test_batched_apply_is_memberwise(name, rng):
    g = GRIDS[name]()
    interp = g.interpolator(_random_locations(g, 23, rng))
    var = g.variables[0]
    ens = FieldSet({var: rng.standard_normal((3,) + g.shape)})
    out = interp.apply(ens, [var])[var]
    for m in range(3):
        single = interp.apply(FieldSet({var: ens[var][m]}), [var])[var]
        np.testing.assert_allclose(out[m], single, rtol=1e-15, atol=1e-15)


def test_apply_ad_accumulates():
    g = StructuredGrid.periodic_1d(8)
    interp = g.interpolator(Locations({"x": [0.0625]}))  # halfway between points 0 and 1
    fields = FieldSet({"x": np.ones(8)})
    interp.apply_ad(FieldSet({"x": [2.0]}), fields)
    np.testing.assert_allclose(fields["x"], [2.0, 2.0, 1, 1, 1, 1, 1, 1])


def test_subset_interpolator(rng):
    g = StructuredGrid.periodic_1d(40)
    locs = _random_locations(g, 10, rng)
    interp = g.interpolator(locs)
    f = FieldSet({"x": rng.standard_normal(40)})
    rows = np.array([7, 2, 5])
    np.testing.assert_array_equal(interp.subset(rows).apply(f, ["x"])["x"], interp.apply(f, ["x"])["x"][rows])


@pytest.mark.parametrize(
    "coords, coord_name",
    [
        ({"x": [0.5, 1.2], "y": [0.5, 0.5]}, "x"),
        ({"x": [0.5, -0.1], "y": [0.5, 0.5]}, "x"),
        ({"x": [0.5, 0.5], "y": [0.5, 1.01]}, "y"),
        ({"x": [0.5, np.nan], "y": [0.5, 0.5]}, "x"),
    ],
)
def test_locations_outside_domain_raise_naming_coordinate(coords, coord_name):
    g = StructuredGrid.channel_2d(10, 8)
    with pytest.raises(ConfigError) as err:
        g.interpolator(Locations(coords))
    msg = str(err.value)
    assert f"{coord_name}[1]" in msg
    assert "outside the domain" in msg


def test_level_outside_range_and_missing_coordinate():
    g = StructuredGrid.channel_2d(10, 8, levels=[0, 1])
    with pytest.raises(ConfigError, match=r"z\[0\]"):
        g.check_locations(Locations({"x": [0.5], "y": [0.5], "z": [2.0]}), "obs.nc")
    with pytest.raises(ConfigError, match="lack coordinate 'z'") as err:
        g.check_locations(Locations({"x": [0.5], "y": [0.5]}), "obs.nc")
    assert str(err.value).startswith("obs.nc: ")


def test_distance_minimum_image_on_periodic_axes():
    g = StructuredGrid.periodic_2d(10, 10, lx=1.0, ly=2.0)
    a = {"x": np.array([0.05, 0.5]), "y": np.array([0.1, 0.0])}
    b = {"x": np.array([0.95, 0.5]), "y": np.array([1.9, 1.5])}
    np.testing.assert_allclose(g.distance(a, b), [np.hypot(0.1, 0.2), 0.5], rtol=1e-14)
    # symmetric and broadcasting
    np.testing.assert_allclose(g.distance(b, a), g.distance(a, b))
    d = g.distance({"x": np.array([0.0])[:, None], "y": np.array([0.0])[:, None]},
                   {"x": np.array([0.2, 0.7]), "y": np.array([0.0, 0.0])})
    np.testing.assert_allclose(d, [[0.2, 0.3]], rtol=1e-14)


def test_distance_no_wrap_on_bounded_axis_and_levels_ignored():
    g = StructuredGrid.channel_2d(10, 10, lx=1.0, ly=1.0, levels=[0, 1])
    a = {"x": 0.0, "y": 0.05, "z": 0.0}
    b = {"x": 0.0, "y": 0.95, "z": 1.0}
    assert g.distance(a, b) == pytest.approx(0.9)
    assert g.distance({"x": 0.02, "y": 0.5, "z": 0}, {"x": 0.98, "y": 0.5, "z": 1}) == pytest.approx(0.04)


def test_describe_and_same_as():
    a = StructuredGrid.periodic_1d(40)
    assert a.same_as(StructuredGrid.periodic_1d(40))
    assert not a.same_as(StructuredGrid.periodic_1d(41))
    d = a.describe()
    assert d["axes"][0] == {"name": "x", "dim": "position", "n": 40, "lower": 0.0, "upper": 1.0,
                            "periodic": True, "interpolation": "linear"}


def test_interpolators_are_reused_only_for_the_same_grid_and_locations(rng):
    """The interpolator cache: the same grid (a new, equal object) and the same coordinates give the
    same object; another grid, other points or other coordinates a new one, with the matrix
    interpolation_matrix gives; all-rows subsets are the interpolator itself."""
    g = StructuredGrid.periodic_1d(40)
    locs = _random_locations(g, 17, rng)
    first = g.interpolator(locs)
    again = StructuredGrid.periodic_1d(40).interpolator(Locations({"x": locs.coords["x"].copy()}, np.ones(17)))
    assert again is first
    moved = locs.coords["x"].copy()
    moved[3] = np.nextafter(moved[3], 2.0)  # one coordinate one ulp away: a new matrix
    other_locs = g.interpolator(Locations({"x": moved}, np.zeros(17)))
    other_grid = StructuredGrid.periodic_1d(41).interpolator(locs)
    # Same size, other points (a nearest-level axis: the interpolation field differs too).
    nearest = StructuredGrid([Axis("x", g.axes[0].points, 0.0, 1.0, True, interpolation="nearest")], ["u"])
    for interp in (other_locs, other_grid, nearest.interpolator(locs)):
        assert interp is not first
    for grid, where, interp in ((g, Locations({"x": moved}, np.zeros(17)), other_locs),
                                (StructuredGrid.periodic_1d(41), locs, other_grid)):
        np.testing.assert_array_equal(interp.matrix.toarray(), grid.interpolation_matrix(where).toarray())
    assert first.subset(np.arange(17)) is first
    part = first.subset(np.arange(3, 9))
    assert part is not first
    np.testing.assert_array_equal(part.matrix.toarray(), first.matrix.toarray()[3:9])
    with pytest.raises(ConfigError, match="outside the domain"):  # still checked on every call
        g.interpolator(Locations({"x": np.r_[locs.coords["x"][:16], 7.0]}, np.zeros(17)))
