"""Gridded netCDF files: exact round trips, third-party files, clear errors, atomic writes."""

import json
import os

import netCDF4
import numpy as np
import pytest

from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import read_fields, write_fields
from pyoops.generic.grid import StructuredGrid
from pyoops.util import DateTime, Duration, InputFileError, Variables

DATE = DateTime("2010-01-02T00:00:00Z")


@pytest.fixture
def grid():
    return StructuredGrid.channel_2d(6, 5, lx=2.0, ly=1.0, variables=["psi", "u"], levels=[0, 1])


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def _fields(grid, rng, batch=()):
    return FieldSet({v: rng.standard_normal(batch + grid.shape) for v in grid.variables})


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir())


def test_round_trip_is_exact(tmp_path, grid, rng):
    fs = _fields(grid, rng)
    f = tmp_path / "state.nc"
    write_fields(f, grid, fs, DATE)
    back, date = read_fields(f, grid, grid.variables)
    assert date == DATE
    assert list(back) == ["psi", "u"]
    for v in fs:
        np.testing.assert_array_equal(back[v], fs[v])
        assert back[v].dtype == np.float64
    assert _leftovers(tmp_path) == ["state.nc"]
    with netCDF4.Dataset(f) as ds:
        assert ds.date == "2010-01-02T00:00:00Z"
        assert ds.pyoops_kind == "state"
        assert ds.Conventions == "CF-1.8"
        assert json.loads(ds.geometry)["axes"][0]["name"] == "z"
        assert tuple(ds["psi"].dimensions) == grid.dims


def test_round_trip_with_member_dimension(tmp_path, grid, rng):
    ens = _fields(grid, rng, batch=(4,))
    f = tmp_path / "ens.nc"
    write_fields(f, grid, ens, DATE, kind="ensemble", attrs={"note": "test"})
    back, _ = read_fields(f, grid, grid.variables, DATE, allow_members=True)
    for v in ens:
        np.testing.assert_array_equal(back[v], ens[v])
    one, _ = read_fields(f, grid, grid.variables, member=2)
    np.testing.assert_array_equal(one["u"], ens["u"][2])
    with netCDF4.Dataset(f) as ds:
        assert ds.pyoops_kind == "ensemble" and ds.note == "test"
        assert tuple(ds["psi"].dimensions) == ("member",) + grid.dims
    with pytest.raises(InputFileError, match="ensemble file") as err:
        read_fields(f, grid, grid.variables)
    assert "ens.nc" in str(err.value)
    with pytest.raises(InputFileError, match="4 members, member 4"):
        read_fields(f, grid, grid.variables, member=4)


def test_member_requested_from_single_state_file_is_an_error(tmp_path, grid, rng):
    f = tmp_path / "single.nc"
    write_fields(f, grid, _fields(grid, rng), DATE)
    with pytest.raises(InputFileError, match="member") as err:
        read_fields(f, grid, grid.variables, member=1)
    assert "single.nc" in str(err.value)


def test_two_batch_axes_cannot_be_written(tmp_path, grid, rng):
    with pytest.raises(ValueError, match="batch"):
        write_fields(tmp_path / "x.nc", grid, _fields(grid, rng, batch=(2, 2)), DATE)
    assert _leftovers(tmp_path) == []


def test_subset_of_variables_read(tmp_path, grid, rng):
    fs = _fields(grid, rng)
    f = tmp_path / "s.nc"
    write_fields(f, grid, fs, DATE)
    back, _ = read_fields(f, grid, Variables(["u"]))
    assert list(back) == ["u"]


def _plain_file(path, grid, data, date="2010-01-02T00:00:00Z", dims=None, member=False):
    """A file written by plain netCDF4 code following the documented layout."""
    dims = dims or grid.dims
    with netCDF4.Dataset(path, "w") as ds:
        if date is not None:
            ds.date = date
        if member:
            ds.createDimension("member", next(iter(data.values())).shape[0])
        for d, n in zip(grid.dims, grid.shape):
            ds.createDimension(d, n)
            ds.createVariable(d, "f8", (d,))[:] = grid.coordinates[d]
        for name, arr in data.items():
            v = ds.createVariable(name, "f4" if name == "u" else "f8", (("member",) if member else ()) + dims)
            v[...] = arr


def test_file_written_by_plain_netcdf4_is_read(tmp_path, grid, rng):
    fs = _fields(grid, rng)
    f = tmp_path / "plain.nc"
    _plain_file(f, grid, fs)
    back, date = read_fields(f, grid, grid.variables, DATE)
    assert date == DATE
    np.testing.assert_array_equal(back["psi"], fs["psi"])
    np.testing.assert_array_equal(back["u"], fs["u"].astype(np.float32).astype(np.float64))  # f4 accepted
    assert back["u"].dtype == np.float64


def test_plain_file_with_members(tmp_path, grid, rng):
    ens = _fields(grid, rng, batch=(3,))
    f = tmp_path / "plain_ens.nc"
    _plain_file(f, grid, {"psi": ens["psi"]}, member=True)
    back, _ = read_fields(f, grid, ["psi"], allow_members=True)
    np.testing.assert_array_equal(back["psi"], ens["psi"])


def test_missing_file(tmp_path, grid):
    with pytest.raises(InputFileError, match="not found") as err:
        read_fields(tmp_path / "nope.nc", grid, grid.variables, DATE)
    assert "nope.nc" in str(err.value)


def test_corrupt_file(tmp_path, grid):
    f = tmp_path / "corrupt.nc"
    f.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(InputFileError) as err:
        read_fields(f, grid, grid.variables, DATE)
    assert "corrupt.nc" in str(err.value)
    assert "netCDF" in str(err.value)


def test_missing_variable(tmp_path, grid, rng):
    f = tmp_path / "mv.nc"
    _plain_file(f, grid, {"psi": rng.standard_normal(grid.shape)})
    with pytest.raises(InputFileError) as err:
        read_fields(f, grid, grid.variables, DATE)
    msg = str(err.value)
    assert "mv.nc" in msg and "'u'" in msg and "psi" in msg


def test_wrong_grid_shape(tmp_path, grid, rng):
    other = StructuredGrid.channel_2d(7, 5, lx=2.0, ly=1.0, variables=["psi", "u"], levels=[0, 1])
    f = tmp_path / "ws.nc"
    write_fields(f, other, _fields(other, rng), DATE)
    with pytest.raises(InputFileError) as err:
        read_fields(f, grid, grid.variables, DATE)
    msg = str(err.value)
    assert "ws.nc" in msg and "(2, 5, 7)" in msg and "(2, 5, 6)" in msg


def test_wrong_dimension_order(tmp_path, rng):
    g = StructuredGrid.periodic_2d(4, 4)
    f = tmp_path / "wd.nc"
    _plain_file(f, g, {"h": rng.standard_normal((4, 4))}, dims=("x", "y"))
    with pytest.raises(InputFileError, match="dimensions") as err:
        read_fields(f, g, ["h"], DATE)
    assert "wd.nc" in str(err.value)


def test_missing_grid_dimension(tmp_path, grid, rng):
    f = tmp_path / "md.nc"
    with netCDF4.Dataset(f, "w") as ds:
        ds.date = str(DATE)
        ds.createDimension("y", 5)
        ds.createDimension("x", 6)
        ds.createVariable("psi", "f8", ("y", "x"))[:] = 0.0
    with pytest.raises(InputFileError, match="dimensions") as err:
        read_fields(f, grid, ["psi"], DATE)
    assert "md.nc" in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values(tmp_path, grid, rng, bad):
    fs = _fields(grid, rng)
    fs["u"][1, 2, 3] = bad
    f = tmp_path / "nan.nc"
    write_fields(f, grid, fs, DATE)
    with pytest.raises(InputFileError, match="1 non-finite") as err:
        read_fields(f, grid, grid.variables, DATE)
    assert "nan.nc" in str(err.value) and "'u'" in str(err.value)


def test_masked_fill_values_are_rejected(tmp_path, grid):
    f = tmp_path / "fill.nc"
    with netCDF4.Dataset(f, "w") as ds:
        ds.date = str(DATE)
        for d, n in zip(grid.dims, grid.shape):
            ds.createDimension(d, n)
            ds.createVariable(d, "f8", (d,))[:] = grid.coordinates[d]
        v = ds.createVariable("psi", "f8", grid.dims, fill_value=-999.0)
        v[0, 0, :] = 1.0  # everything else stays at the fill value
    with pytest.raises(InputFileError, match="non-finite") as err:
        read_fields(f, grid, ["psi"], DATE)
    assert "fill.nc" in str(err.value)


def test_date_mismatch(tmp_path, grid, rng):
    f = tmp_path / "date.nc"
    write_fields(f, grid, _fields(grid, rng), DATE)
    with pytest.raises(InputFileError) as err:
        read_fields(f, grid, grid.variables, DateTime("2010-01-02T06:00:00Z"))
    msg = str(err.value)
    assert "date.nc" in msg and "2010-01-02T00:00:00Z" in msg and "2010-01-02T06:00:00Z" in msg


def test_missing_date_attribute(tmp_path, grid, rng):
    f = tmp_path / "nodate.nc"
    _plain_file(f, grid, _fields(grid, rng), date=None)
    with pytest.raises(InputFileError, match="no global attribute 'date'") as err:
        read_fields(f, grid, grid.variables)
    assert "nodate.nc" in str(err.value)
    # with a date from the configuration, the file is accepted
    _, date = read_fields(f, grid, grid.variables, DATE)
    assert date == DATE


def test_bad_date_attribute(tmp_path, grid, rng):
    f = tmp_path / "baddate.nc"
    _plain_file(f, grid, _fields(grid, rng), date="yesterday")
    with pytest.raises(InputFileError, match="not an ISO-8601") as err:
        read_fields(f, grid, grid.variables, DATE)
    assert "baddate.nc" in str(err.value)


class _FailingGrid(StructuredGrid):
    """Raises in the middle of writing (after the netCDF file was created)."""

    def describe(self):
        raise RuntimeError("disk on fire")


def _failing(grid):
    return _FailingGrid(grid.axes, grid.variables)


def test_atomic_write_leaves_nothing_on_failure(tmp_path, grid, rng):
    f = tmp_path / "out" / "state.nc"
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_fields(f, _failing(grid), _fields(grid, rng), DATE)
    assert not f.exists()
    assert _leftovers(tmp_path / "out") == []


def test_atomic_write_preserves_existing_target(tmp_path, grid, rng):
    f = tmp_path / "state.nc"
    original = _fields(grid, rng)
    write_fields(f, grid, original, DATE)
    before = f.read_bytes()
    with pytest.raises(RuntimeError):
        write_fields(f, _failing(grid), _fields(grid, rng), DATE)
    assert f.read_bytes() == before
    assert _leftovers(tmp_path) == ["state.nc"]
    back, _ = read_fields(f, grid, grid.variables, DATE)
    np.testing.assert_array_equal(back["psi"], original["psi"])


def test_atomic_write_failure_inside_netcdf_variable_write(tmp_path, grid, rng, monkeypatch):
    f = tmp_path / "state.nc"
    write_fields(f, grid, _fields(grid, rng), DATE)
    before = f.read_bytes()
    calls = {"n": 0}
    real = netCDF4.Dataset.createVariable

    def flaky(self, name, *args, **kwargs):
        calls["n"] += 1
        if name == "u":
            raise OSError("quota exceeded")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(netCDF4.Dataset, "createVariable", flaky)
    with pytest.raises(OSError, match="quota"):
        write_fields(f, grid, _fields(grid, rng), DATE)
    assert calls["n"] > 1
    assert f.read_bytes() == before
    assert _leftovers(tmp_path) == ["state.nc"]
    assert not any(name.startswith(".pyoops-") for name in os.listdir(tmp_path))


def test_read_float64_gives_the_bits_of_the_masked_read(tmp_path):
    """The unmasked fast path of read_float64 and netCDF4's masked read agree bit for bit, fill values as NaN."""
    from pyoops.fields.netcdf import as_float64, read_float64

    filename = tmp_path / "kinds.nc"
    with netCDF4.Dataset(filename, "w") as ds:
        ds.createDimension("n", 5)
        ds.createVariable("default_fill", "f8", ("n",))[:] = [1, 2, netCDF4.default_fillvals["f8"], np.nan, 5]
        ds.createVariable("fill_attribute", "f8", ("n",), fill_value=-9.0)[:] = [1, -9, 3, 4, 5]
        ds.createVariable("int64", "i8", ("n",))[:] = [1, 2, netCDF4.default_fillvals["i8"], 4, 5]
        ds.createVariable("float32", "f4", ("n",))[:] = [1.5, 2, 3, 4, 5]
        v = ds.createVariable("valid_max", "f8", ("n",))
        v.valid_max = 3.0
        v[:] = [1, 2, 3, 4, 5]
        ds.createVariable("int32", "i4", ("n",))[:] = [1, 2, 3, 4, 5]
        ds.createVariable("unwritten", "f8", ("n",))[:2] = [1, 2]
        ds.createVariable("int8", "i1", ("n",))[:] = [1, 2, 3, -127, 5]
    with netCDF4.Dataset(filename) as ds:
        for name, nc in ds.variables.items():
            fast, masked = read_float64(nc), as_float64(nc[...])
            assert fast.dtype == np.float64 and type(fast) is np.ndarray, name
            assert np.array_equal(fast, masked, equal_nan=True), name
            assert nc.mask, name   # the variable's masking is left as it was
        assert np.isnan(read_float64(ds.variables["default_fill"])[2])
        assert np.isnan(read_float64(ds.variables["unwritten"])[2:]).all()


# A time series in one file (a nature run) ----------------------------------------------------------

def _series_file(path, grid, values, seconds, units="seconds since 1970-01-01T00:00:00Z", dims=None):
    """A file of several times written with plain netCDF4: fields on (time, z, y, x)."""
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", len(seconds))
        t = ds.createVariable("time", "f8", ("time",))
        t.units = units
        t[:] = seconds
        for dim in grid.dims:
            ds.createDimension(dim, len(grid.coordinates[dim]))
            ds.createVariable(dim, "f8", (dim,))[:] = grid.coordinates[dim]
        for v, arr in values.items():
            ds.createVariable(v, "f8", dims or ("time", *grid.dims))[:] = arr
    return path


def test_field_series_reads_each_time(tmp_path, grid, rng):
    from pyoops.fields.netcdf import FieldSeries

    times = [DATE, DATE + Duration("PT6H"), DATE + Duration("PT12H")]
    values = {v: rng.standard_normal((3, *grid.shape)) for v in grid.variables}
    f = _series_file(tmp_path / "truth.nc", grid, values, [t.seconds_since_epoch() for t in times])
    with FieldSeries(f, grid, grid.variables) as series:
        assert series.times == times
        for i in (2, 0, 1):
            fields = series.read(times[i])
            for v in grid.variables:
                np.testing.assert_array_equal(fields[v], values[v][i])
        with pytest.raises(InputFileError, match=r"truth.nc: has no time 2010-01-02T03:00:00Z"):
            series.read(DATE + Duration("PT3H"))
    # Other CF units (as xarray writes datetime64 coordinates): hours since a date.
    g = _series_file(tmp_path / "hours.nc", grid, values, [0.0, 6.0, 12.0], units="hours since 2010-01-02 00:00:00")
    with FieldSeries(g, grid, Variables(["u"])) as series:
        np.testing.assert_array_equal(series.read(DATE + Duration("PT12H"))["u"], values["u"][2])


def test_field_series_written_by_xarray_is_read(tmp_path, grid, rng):
    import xarray as xr

    from pyoops.fields.netcdf import FieldSeries

    times = np.array(["2010-01-02T00", "2010-01-02T06"], dtype="datetime64[ns]")
    psi = rng.standard_normal((2, *grid.shape))
    coords = {"time": times, **{d: grid.coordinates[d] for d in grid.dims}}
    xr.Dataset({"psi": (("time", *grid.dims), psi)}, coords=coords).to_netcdf(tmp_path / "x.nc")
    with FieldSeries(tmp_path / "x.nc", grid, Variables(["psi"])) as series:
        np.testing.assert_array_equal(series.read(DATE + Duration("PT6H"))["psi"], psi[1])


def test_field_series_errors_name_the_file(tmp_path, grid, rng):
    from pyoops.fields.netcdf import FieldSeries

    values = {v: rng.standard_normal((2, *grid.shape)) for v in grid.variables}
    s = [DATE.seconds_since_epoch(), (DATE + Duration("PT6H")).seconds_since_epoch()]
    cases = {
        "repeated times": (_series_file(tmp_path / "a.nc", grid, values, [s[0], s[0]]), "repeated times"),
        "no time": (tmp_path / "b.nc", "has no 'time' dimension"),
        "dims": (_series_file(tmp_path / "c.nc", grid, {"psi": values["psi"][0]}, [s[0]], dims=grid.dims),
                 "has dimensions ('z', 'y', 'x'), expected ('time', 'z', 'y', 'x')"),
    }
    write_fields(tmp_path / "b.nc", grid, _fields(grid, rng), DATE)        # a single state: no time
    for name, (path, message) in cases.items():
        with pytest.raises(InputFileError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            FieldSeries(path, grid, Variables(["psi"]))
        assert str(path) in str(err.value), name
    bad = dict(values)
    bad["psi"] = values["psi"].copy()
    bad["psi"][1, 0, 0, 0] = np.nan
    with FieldSeries(_series_file(tmp_path / "d.nc", grid, bad, s), grid, Variables(["psi"])) as series:
        series.read(DATE)                                              # the other time is not read
        with pytest.raises(InputFileError, match="variable 'psi' at 2010-01-02T06:00:00Z has 1 non-finite"):
            series.read(DATE + Duration("PT6H"))
    other = StructuredGrid.channel_2d(6, 5, lx=3.0, ly=1.0, variables=["psi", "u"], levels=[0, 1])
    with pytest.raises(InputFileError, match="written on another geometry"):
        FieldSeries(_series_file(tmp_path / "e.nc", other, values, s), grid, Variables(["psi"]))


def test_field_series_times_match_within_a_millisecond_and_calendars_are_checked(tmp_path, grid, rng):
    """Times summed step by step in 'days since' (as a model writes them) are off by far less than a second:
    each is matched to the requested time within 1 ms; a calendar other than the real one is refused, not
    read as if it were (a noleap day 424 is not 2012-03-01)."""
    from pyoops.fields.netcdf import FieldSeries

    n = 400
    days, t = [], 0.0
    for _ in range(n):
        days.append(t)
        t += 0.05                                            # 1.2 h, accumulated in float
    values = {"psi": rng.standard_normal((n, *grid.shape))}
    f = _series_file(tmp_path / "days.nc", grid, values, days, units="days since 2010-01-02 00:00:00")
    with FieldSeries(f, grid, Variables(["psi"])) as series:
        for i in (0, 1, 199, n - 1):
            time = DATE + Duration(f"PT{72 * i}M")
            np.testing.assert_array_equal(series.read(time)["psi"], values["psi"][i])
        with pytest.raises(InputFileError, match="has no time"):
            series.read(DATE + Duration("PT1S"))
    with netCDF4.Dataset(f, "a") as ds:
        ds["time"].calendar = "noleap"
    with pytest.raises(InputFileError, match="calendar 'noleap'"):
        FieldSeries(f, grid, Variables(["psi"]))
