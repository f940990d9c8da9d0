"""GenericState / GenericIncrement: the OOPS increment algebra, I/O and xarray."""

import numpy as np
import pytest

from pyoops.fields.fieldset import FieldSet
from pyoops.generic.grid import StructuredGrid
from pyoops.generic.state import GenericIncrement, GenericState
from pyoops.util import ConfigError, DateTime, Duration, InputFileError
from pyoops.util.random import generator

T0 = DateTime("2010-01-02T00:00:00Z")
TOL = 1e-12


def _rel(a, b):
    return abs(a - b) / max(abs(a), abs(b))


@pytest.fixture
def grid():
    return StructuredGrid.channel_2d(6, 5, lx=2.0, ly=1.0, variables=["psi", "u"], levels=[0, 1])


def _rand_inc(grid, seed, batch=()):
    inc = GenericIncrement.zeros(grid, grid.variables, T0, batch)
    inc.random(generator(seed, "test"))
    return inc


def _rand_state(grid, seed):
    rng = generator(seed, "state")
    return GenericState(grid, FieldSet({v: rng.standard_normal(grid.shape) for v in grid.variables}), T0)


def test_new_increment_is_zero(grid):
    inc = GenericIncrement.zeros(grid, grid.variables, T0)
    assert inc.norm() == 0.0
    assert inc.variables == grid.variables
    assert inc.batch_shape == () and inc.nmembers is None
    assert inc.fields["psi"].shape == grid.shape


def test_copy_minus_itself_is_zero_and_copy_is_deep(grid):
    a = _rand_inc(grid, 1)
    b = a.copy()
    b -= a
    assert b.norm() == 0.0
    b.ones()
    assert a.norm() != 1.0


def test_triangle_inequality_and_dot_symmetry(grid):
    a, b = _rand_inc(grid, 1), _rand_inc(grid, 2)
    s = a.copy()
    s += b
    assert s.norm() <= a.norm() + b.norm()
    assert _rel(a.dot_product_with(b), b.dot_product_with(a)) < TOL
    assert a.dot_product_with(a) > 0


def test_two_a_minus_a_plus_a(grid):
    a = _rand_inc(grid, 3)
    two_a = a.copy()
    two_a *= 2.0
    sum_ = a.copy()
    sum_ += a
    two_a -= sum_
    assert two_a.norm() < TOL * a.norm()


def test_axpy(grid):
    a, b = _rand_inc(grid, 4), _rand_inc(grid, 5)
    c = a.copy()
    c.axpy(-0.5, b)
    for v in grid.variables:
        np.testing.assert_allclose(c.fields[v], a.fields[v] - 0.5 * b.fields[v], rtol=1e-15)
    b.time = T0 + Duration("PT6H")
    with pytest.raises(ValueError, match="valid at"):
        a.copy().axpy(1.0, b)
    a.copy().axpy(1.0, b, check=False)


def test_norm_is_rms(grid):
    inc = GenericIncrement.zeros(grid, grid.variables, T0)
    inc.ones()
    assert inc.norm() == pytest.approx(1.0)
    inc *= 3.0
    assert inc.norm() == pytest.approx(3.0)


def test_schur_with_zero_and_one(grid):
    a = _rand_inc(grid, 6)
    zero = a.zeros_like()
    z = a.copy()
    z.schur_product_with(zero)
    assert z.norm() == 0.0
    one = a.zeros_like()
    one.ones()
    o = a.copy()
    o.schur_product_with(one)
    assert o.fields.allclose(a.fields, rtol=0, atol=0)
    b = _rand_inc(grid, 7)
    p = a.copy()
    p.schur_product_with(b)
    np.testing.assert_array_equal(p.fields["u"], a.fields["u"] * b.fields["u"])


def test_mismatched_variables_raise(grid):
    a = _rand_inc(grid, 1)
    b = GenericIncrement.zeros(grid, ["psi"], T0)
    for op in (lambda: a.dot_product_with(b), lambda: a.copy().axpy(1.0, b),
               lambda: a.copy().schur_product_with(b)):
        with pytest.raises(ValueError, match="different variables"):
            op()
    with pytest.raises(ValueError):
        c = a.copy()
        c += b


def test_shape_checked_on_construction(grid):
    with pytest.raises(ValueError, match="grid shape"):
        GenericIncrement(grid, FieldSet({"psi": np.zeros((5, 6))}), T0)


def test_random_is_seeded_and_standard_normal(grid):
    a, b, c = _rand_inc(grid, 11), _rand_inc(grid, 11), _rand_inc(grid, 12)
    assert a.fields.allclose(b.fields, rtol=0, atol=0)
    assert not a.fields.allclose(c.fields)
    big = _rand_inc(grid, 13, batch=(200,))
    values = big.serialize()
    n = values.size  # 200 * 2 * 60 = 24000
    assert abs(values.mean()) < 4 / np.sqrt(n)  # 4-sigma bound
    assert abs(values.var() - 1.0) < 4 * np.sqrt(2 / n)


def test_diff_sign_and_time(grid):
    x1, x2 = _rand_state(grid, 1), _rand_state(grid, 2)
    inc = GenericIncrement.zeros(grid, grid.variables, T0 - Duration("PT6H"))
    inc.diff(x1, x2)
    np.testing.assert_array_equal(inc.fields["psi"], x1.fields["psi"] - x2.fields["psi"])
    assert inc.time == T0
    d = x1 - x2
    assert isinstance(d, GenericIncrement)
    assert d.fields.allclose(inc.fields, rtol=0, atol=0)
    x2 += d
    assert x2.fields.allclose(x1.fields, rtol=1e-14, atol=1e-14)


def test_dirac(grid):
    inc = _rand_inc(grid, 1)
    inc.dirac({"ixdir": [0, 37], "variables": ["psi", "u"]})
    assert inc.fields["psi"].sum() == 1.0 and inc.fields["psi"].ravel()[0] == 1.0
    assert inc.fields["u"].sum() == 1.0
    assert inc.fields["u"][np.unravel_index(37, grid.shape)] == 1.0
    inc.dirac({"ixdir": [5]})  # default: first variable
    assert inc.fields["psi"].ravel()[5] == 1.0 and inc.fields["u"].sum() == 0.0


def test_dirac_errors(grid):
    inc = GenericIncrement.zeros(grid, grid.variables, T0)
    with pytest.raises(ConfigError, match="dirac.ixdir") as err:
        inc.dirac({"ixdir": [60]})
    assert "0..59" in str(err.value)
    with pytest.raises(ConfigError, match="dirac.variables"):
        inc.dirac({"ixdir": [1], "variables": ["temperature"]})
    with pytest.raises(ConfigError, match="dirac.variables"):
        inc.dirac({"ixdir": [1, 2], "variables": ["psi"]})
    with pytest.raises(ConfigError, match="did you mean 'ixdir'"):
        inc.dirac({"ixdri": [1]})


def test_dirac_on_batched_and_non_contiguous_increments(grid):
    ens = GenericIncrement.zeros(grid, grid.variables, T0, (3,))
    ens.dirac({"ixdir": [7]})
    for m in range(3):
        assert ens.fields["psi"][m].ravel()[7] == 1.0
    assert ens.fields["psi"].sum() == 3.0
    fortran = GenericIncrement(grid, FieldSet({"psi": np.asfortranarray(np.ones(grid.shape))}), T0)
    fortran.dirac({"ixdir": [7]})
    assert fortran.fields["psi"].sum() == 1.0
    assert fortran.fields["psi"][np.unravel_index(7, grid.shape)] == 1.0


def test_serialize_round_trip(grid):
    a = _rand_inc(grid, 21)
    v = a.serialize()
    assert v.shape == (2 * 60,)
    b = a.zeros_like()
    b.deserialize(v)
    assert b.fields.allclose(a.fields, rtol=0, atol=0)
    assert _rel(float(v @ v), a.dot_product_with(a)) < TOL
    with pytest.raises(ValueError):
        b.deserialize(v[:-1])


def test_state_plus_increment_time_check(grid):
    x = _rand_state(grid, 1)
    dx = _rand_inc(grid, 2)
    expected = x.fields["u"] + dx.fields["u"]
    x += dx
    np.testing.assert_array_equal(x.fields["u"], expected)
    late = dx.copy()
    late.time = T0 + Duration("PT1H")
    before = x.fields.copy()
    with pytest.raises(ValueError, match="valid at"):
        x += late
    assert x.fields.allclose(before, rtol=0, atol=0)


def test_state_copy_is_deep(grid):
    x = _rand_state(grid, 3)
    y = x.copy()
    y.fields["psi"][...] = 0.0
    assert x.fields["psi"].any()
    assert y.time == x.time


def test_batched_member_view(grid):
    ens = _rand_inc(grid, 4, batch=(3,))
    assert ens.nmembers == 3 and ens.batch_shape == (3,)
    m1 = ens.member(1)
    np.testing.assert_array_equal(m1.fields["psi"], ens.fields["psi"][1])
    assert m1.batch_shape == ()


def test_write_and_read_state_from_config(tmp_path, grid):
    x = _rand_state(grid, 5)
    f = tmp_path / "bg.nc"
    x.write(str(f))
    y = GenericState.from_config(grid, {"date": "2010-01-02T00:00:00Z", "filename": str(f)})
    assert y.fields.allclose(x.fields, rtol=0, atol=0)
    assert y.time == T0
    sub = GenericState.from_config(grid, {"date": T0, "filename": str(f), "state variables": ["u"]})
    assert list(sub.variables) == ["u"]
    with pytest.raises(InputFileError, match="bg.nc"):
        GenericState.from_config(grid, {"date": "2010-01-02T06:00:00Z", "filename": str(f)})


def test_state_from_config_errors(grid, tmp_path):
    with pytest.raises(ConfigError, match="exactly one"):
        GenericState.from_config(grid, {"date": "2010-01-02T00:00:00Z"}, "background")
    with pytest.raises(ConfigError, match="exactly one"):
        GenericState.from_config(grid, {"date": "2010-01-02T00:00:00Z", "filename": "a.nc",
                                        "analytic init": {"method": "x"}})
    with pytest.raises(ConfigError, match="background.analytic init"):
        GenericState.from_config(grid, {"date": "2010-01-02T00:00:00Z", "analytic init": {"method": "x"}},
                                 "background")
    with pytest.raises(ConfigError, match="background.filenmae"):
        GenericState.from_config(grid, {"date": "2010-01-02T00:00:00Z", "filenmae": "a.nc"}, "background")
    with pytest.raises(ConfigError, match="'allow other geometry' is for a state read from 'filename'"):
        GenericState.from_config(grid, {"date": "2010-01-02T00:00:00Z", "analytic init": {"method": "x"},
                                        "allow other geometry": True}, "background")


def test_state_of_another_geometry_only_on_request(tmp_path, grid):
    """A file of the same shape on other levels is refused, or read point by point with the key."""
    other = StructuredGrid.channel_2d(6, 5, lx=2.0, ly=1.0, variables=["psi", "u"], levels=[0, 2])
    x = GenericState(other, _rand_state(grid, 3).fields, T0)
    x.write(str(tmp_path / "other.nc"))
    config = {"date": T0, "filename": str(tmp_path / "other.nc")}
    with pytest.raises(InputFileError, match="written on another geometry: z spacing 2 in the file, 1 in the geometry"):
        GenericState.from_config(grid, config)
    y = GenericState.from_config(grid, {**config, "allow other geometry": True})
    assert y.fields.allclose(x.fields, rtol=0, atol=0)


def test_increment_write_read(tmp_path, grid):
    dx = _rand_inc(grid, 8)
    f = tmp_path / "inc.nc"
    dx.write(str(f))
    back = GenericIncrement.read(grid, str(f))
    assert back.fields.allclose(dx.fields, rtol=0, atol=0)
    assert back.time == T0


@pytest.mark.parametrize("batch", [(), (3,)])
def test_xarray_round_trip(grid, batch):
    dx = _rand_inc(grid, 9, batch)
    ds = dx.to_xarray()
    assert ds.attrs["date"] == "2010-01-02T00:00:00Z"
    assert ds["psi"].dims == (("member",) if batch else ()) + grid.dims
    np.testing.assert_array_equal(ds["y"].values, grid.axis("y").points)
    back = GenericIncrement.from_xarray(grid, ds)
    assert back.time == T0
    assert back.fields.allclose(dx.fields, rtol=0, atol=0)
    # to_xarray copies
    ds["psi"].values[...] = 0.0
    assert dx.fields["psi"].any()


def test_xarray_transposed_dataset_and_subset(grid):
    x = _rand_state(grid, 10)
    ds = x.to_xarray().transpose("x", "z", "y")
    back = GenericState.from_xarray(grid, ds)
    assert back.fields.allclose(x.fields, rtol=0, atol=0)
    only_u = GenericState(grid, x.fields.subset(["u"]), T0)
    back_u = GenericState.from_xarray(grid, only_u.to_xarray(), variables=["u"])
    assert list(back_u.variables) == ["u"]
    with pytest.raises(ConfigError, match="'psi'"):
        GenericState.from_xarray(grid, only_u.to_xarray())
    ds2 = x.to_xarray()
    del ds2.attrs["date"]
    with pytest.raises(ConfigError, match="date"):
        GenericState.from_xarray(grid, ds2)
    assert GenericState.from_xarray(grid, ds2, time=T0).time == T0
