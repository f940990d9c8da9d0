"""IODA-like ObsSpace: reading, generating, saving; ObsVector algebra with QC."""

import netCDF4
import numpy as np
import pytest

from pyoops.config import validate
from pyoops.generic.grid import StructuredGrid
from pyoops.generic.obs_space import ObsSpace, ObsSpaceParameters, ObsVector
from pyoops.util import ConfigError, DateTime, Duration, InputFileError, TimeWindow

WINDOW = TimeWindow(begin="2010-01-01T21:00:00Z", length="PT6H")
TIMES = ["2010-01-01T22:00:00Z", "2010-01-02T00:00:00Z", "2010-01-02T00:00:00Z", "2010-01-02T03:00:00Z"]
X = np.array([0.1, 0.25, 0.5, 0.975])


def write_ioda_file(path, coords, times, values=None, errors=None, units="seconds since 1970-01-01T00:00:00Z",
                    skip_groups=(), extra=None):
    """An observation file written with plain netCDF4 code in the documented IODA-like layout.

    ``coords``: {name: array}; ``times``: ISO strings or numbers in ``units``;
    ``values`` / ``errors``: {variable: array}; ``extra``: {(group, variable): array}.
    """
    n = len(next(iter(coords.values())))
    numbers = np.array([DateTime(t).seconds_since_epoch() if isinstance(t, str) else t for t in times])
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("Location", n)
        groups = {g: ds.createGroup(g) for g in ("MetaData", "ObsValue", "ObsError") if g not in skip_groups}
        if "MetaData" in groups:
            dt = groups["MetaData"].createVariable("dateTime", "i8", ("Location",))
            dt.units = units
            dt[:] = numbers.astype(np.int64)
            for name, c in coords.items():
                groups["MetaData"].createVariable(name, "f8", ("Location",))[:] = c
        for group, data in (("ObsValue", values or {}), ("ObsError", errors or {})):
            if group in groups:
                for var, arr in data.items():
                    groups[group].createVariable(var, "f8", ("Location",))[:] = arr
        for (group, var), arr in (extra or {}).items():
            grp = ds.groups[group] if group in ds.groups else ds.createGroup(group)
            grp.createVariable(var, "f8" if np.asarray(arr).dtype.kind == "f" else "i4", ("Location",))[:] = arr
    return str(path)


@pytest.fixture
def grid():
    return StructuredGrid.periodic_1d(40)


def _params(**kw):
    cfg = {"name": "x obs", "simulated variables": ["x"]}
    cfg.update(kw)
    return validate(ObsSpaceParameters, cfg, "obs space")


def _file(tmp_path, values=(1.0, 2.0, np.nan, 4.0), errors=(0.5, 1.0, 1.0, 2.0), times=TIMES, **kw):
    return write_ioda_file(tmp_path / "obs.nc", {"x": X}, times, {"x": np.array(values)},
                           {"x": np.array(errors)}, **kw)


def _read(path, grid, window=WINDOW, **kw):
    return ObsSpace(_params(obsdatain={"filename": str(path)}, **kw), window, grid, "observers[0].obs space")


# Reading --------------------------------------------------------------------------------

def test_read_plain_netcdf4_file(tmp_path, grid):
    obs = _read(_file(tmp_path), grid)
    assert obs.nlocs == 4
    assert obs.name == "x obs"
    np.testing.assert_array_equal(obs.locations.coords["x"], X)
    expected = [DateTime(t).seconds_since_epoch() for t in TIMES]
    np.testing.assert_array_equal(obs.locations.times, expected)
    np.testing.assert_array_equal(obs.get_db("ObsError", "x"), [0.5, 1.0, 1.0, 2.0])
    assert np.isnan(obs.get_db("ObsValue", "x")[2])
    assert obs.qc_mask().tolist() == [[True, True, False, True]]
    assert obs.groups() == ["ObsError", "ObsValue"]
    assert obs.has("ObsValue", "x") and not obs.has("hofx", "x")


def test_cf_time_units_other_than_epoch_seconds(tmp_path, grid):
    t0 = DateTime("2010-01-01T00:00:00Z").seconds_since_epoch()
    hours = [(DateTime(t).seconds_since_epoch() - t0) / 3600 for t in TIMES]
    f = _file(tmp_path, times=hours, units="hours since 2010-01-01 00:00:00")
    obs = _read(f, grid)
    np.testing.assert_array_equal(obs.locations.times, [DateTime(t).seconds_since_epoch() for t in TIMES])


def test_bad_time_units(tmp_path, grid):
    f = _file(tmp_path, units="furlongs")
    with pytest.raises(InputFileError, match="units") as err:
        _read(f, grid)
    assert "obs.nc" in str(err.value)


@pytest.mark.parametrize("group", ["MetaData", "ObsValue", "ObsError"])
def test_missing_group_named(tmp_path, grid, group):
    f = _file(tmp_path, skip_groups=(group,))
    with pytest.raises(InputFileError) as err:
        _read(f, grid)
    msg = str(err.value)
    assert f"group '{group}'" in msg and "obs.nc" in msg


def test_missing_variable_in_group(tmp_path, grid):
    f = write_ioda_file(tmp_path / "obs.nc", {"x": X}, TIMES, {"y": np.ones(4)}, {"x": np.ones(4)})
    with pytest.raises(InputFileError, match="ObsValue/x") as err:
        _read(f, grid)
    assert "obs.nc" in str(err.value)


def test_missing_location_coordinate(tmp_path, grid):
    f = write_ioda_file(tmp_path / "obs.nc", {"lon": X}, TIMES, {"x": np.ones(4)}, {"x": np.ones(4)})
    with pytest.raises(InputFileError, match="MetaData/x"):
        _read(f, grid)


def test_missing_file_and_corrupt_file(tmp_path, grid):
    with pytest.raises(InputFileError, match="not found") as err:
        _read(tmp_path / "none.nc", grid)
    assert "none.nc" in str(err.value)
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(InputFileError, match="bad.nc"):
        _read(bad, grid)


def test_obs_outside_window(tmp_path, grid):
    times = list(TIMES)
    times[3] = "2010-01-02T03:00:01Z"
    with pytest.raises(InputFileError) as err:
        _read(_file(tmp_path, times=times), grid)
    msg = str(err.value)
    assert "1 observation(s) outside the time window" in msg and "2010-01-02T03:00:01Z" in msg
    assert "obs.nc" in msg


def test_obs_at_window_begin_follows_oops_convention(tmp_path, grid):
    times = list(TIMES)
    times[0] = "2010-01-01T21:00:00Z"
    f = _file(tmp_path, times=times)
    with pytest.raises(InputFileError, match="outside the time window"):
        _read(f, grid)
    w = TimeWindow(begin=WINDOW.begin, length=WINDOW.length, include_begin=True)
    assert _read(f, grid, window=w).nlocs == 4


def test_obs_outside_domain(tmp_path, grid):
    f = write_ioda_file(tmp_path / "obs.nc", {"x": [0.1, 1.5, 0.2, 0.3]}, TIMES,
                        {"x": np.ones(4)}, {"x": np.ones(4)})
    with pytest.raises(ConfigError, match=r"x\[1\]") as err:
        _read(f, grid)
    assert "obs.nc" in str(err.value)


def test_non_positive_error_of_used_obs_rejected(tmp_path, grid):
    with pytest.raises(InputFileError, match="ObsError/x must be positive"):
        _read(_file(tmp_path, errors=(0.5, 0.0, 1.0, 2.0)), grid)
    # a zero error on a missing observation is fine
    assert _read(_file(tmp_path, errors=(0.5, 1.0, 0.0, 2.0)), grid).nlocs == 4


def test_params_need_exactly_one_source():
    with pytest.raises(ConfigError, match="exactly one"):
        validate(ObsSpaceParameters, {"name": "a", "simulated variables": ["x"]}, "obs space")
    with pytest.raises(ConfigError, match="obs space.simulated variables"):
        validate(ObsSpaceParameters, {"name": "a", "simulated variables": [], "obsdatain": {"filename": "f"}},
                 "obs space")
    with pytest.raises(ConfigError, match="^obs space.generate: obs frequency must be positive"):
        validate(ObsSpaceParameters, {"name": "a", "simulated variables": ["x"],
                                      "generate": {"obs frequency": "PT0S", "obs density": 3, "obs error": 1.0}},
                 "obs space")


# Generating -----------------------------------------------------------------------------

def _gen(grid, window=WINDOW, name="x obs", **kw):
    g = {"obs frequency": "PT1H", "obs density": 8, "obs error": 0.4}
    g.update({k.replace("_", " "): v for k, v in kw.items()})
    return ObsSpace(_params(name=name, generate=g), window, grid, "obs space")


def test_generate_regular(grid):
    obs = _gen(grid)
    # window (21Z, 03Z]: 22, 23, 00, 01, 02, 03 -> 6 times (begin excluded)
    assert obs.nlocs == 8 * 6
    times = obs.locations.times.reshape(6, 8)
    expected = [(WINDOW.begin + Duration("PT1H") * k).seconds_since_epoch() for k in range(1, 7)]
    np.testing.assert_array_equal(times[:, 0], expected)
    assert (times == times[:, :1]).all()
    np.testing.assert_allclose(obs.locations.coords["x"][:8], np.arange(8) / 8)
    np.testing.assert_array_equal(obs.get_db("ObsError", "x"), np.full(48, 0.4))
    assert obs.qc_mask().all()


def test_generate_include_begin_and_offsets(grid):
    w = TimeWindow(begin=WINDOW.begin, length=WINDOW.length, include_begin=True)
    assert _gen(grid, window=w).nlocs == 8 * 7
    obs = _gen(grid, begin="PT3H", end="PT3H")
    assert obs.nlocs == 8
    assert DateTime.from_seconds_since_epoch(obs.locations.times[0]) == DateTime("2010-01-02T00:00:00Z")


def test_generate_no_time_in_window(grid):
    with pytest.raises(ConfigError, match="obs space.generate"):
        _gen(grid, begin="PT7H", end="PT8H")


def test_generate_random_is_seeded_and_reproducible(grid):
    a = _gen(grid, locations="random", random_seed=3)
    b = _gen(grid, locations="random", random_seed=3)
    c = _gen(grid, locations="random", random_seed=4)
    assert a.nlocs == 48
    np.testing.assert_array_equal(a.locations.coords["x"], b.locations.coords["x"])
    assert not np.array_equal(a.locations.coords["x"], c.locations.coords["x"])
    x = a.locations.coords["x"]
    assert (x >= 0).all() and (x <= 1).all()
    assert len(np.unique(x)) == 48  # not the same points at every time


def test_generate_2d_with_levels():
    grid = StructuredGrid.channel_2d(10, 8, lx=2.0, ly=1.0, levels=[0, 1])
    obs = _gen(grid, obs_density=12)
    assert obs.nlocs == 12 * 6
    c = obs.locations.coords
    assert set(c) == {"x", "y", "z"}
    assert (c["y"] > 0).all() and (c["y"] < 1).all() and (c["x"] < 2).all()
    assert set(np.unique(c["z"])) == {0.0, 1.0}
    one_level = _gen(grid, obs_density=12, levels=[1.0])
    assert (one_level.locations.coords["z"] == 1.0).all()
    rnd = _gen(grid, obs_density=12, locations="random")
    assert rnd.nlocs == 72 and set(np.unique(rnd.locations.coords["z"])) <= {0.0, 1.0}


def _same_space(moved, fresh):
    """Everything an ObsSpace built for the window holds: window, locations, times, database."""
    assert moved.window == fresh.window and moved.nlocs == fresh.nlocs
    for name in fresh.locations.coords:
        np.testing.assert_array_equal(moved.locations.coords[name], fresh.locations.coords[name])
    np.testing.assert_array_equal(moved.locations.times, fresh.locations.times)
    assert moved.groups() == fresh.groups() == ["ObsError"]
    for var in fresh.simulated_variables:
        np.testing.assert_array_equal(moved.get_db("ObsError", var), fresh.get_db("ObsError", var))


@pytest.mark.parametrize("locations", ["regular", "random"])
def test_generated_space_moved_to_another_window_is_the_space_built_there(grid, locations):
    """at_window reuses the drawn network: the result equals a space generated for the new window
    (bitwise), also after ObsValue was put into the space it was moved from."""
    first = _gen(grid, locations=locations, random_seed=3)
    first.put_db("ObsValue", "x", np.arange(first.nlocs, dtype=float))
    for hours in (6, 30, -6):
        later = TimeWindow(WINDOW.begin + Duration(f"PT{abs(hours)}H") * (1 if hours > 0 else -1), WINDOW.length)
        moved = first.at_window(later)
        _same_space(moved, _gen(grid, window=later, locations=locations, random_seed=3))
    assert first.window == WINDOW and first.groups() == ["ObsError", "ObsValue"]   # not changed


def test_space_that_cannot_be_moved(tmp_path, grid):
    """Read from a file, or another number of observation times in the new window: None."""
    assert _read(_file(tmp_path), grid).at_window(TimeWindow(WINDOW.begin + Duration("PT6H"), WINDOW.length)) is None
    longer = TimeWindow(WINDOW.begin, WINDOW.length + Duration("PT1H"))
    assert _gen(grid).at_window(longer) is None


# Saving ---------------------------------------------------------------------------------

def test_save_writes_groups_and_round_trips(tmp_path, grid):
    out = tmp_path / "out" / "obs_out.nc"
    obs = _read(_file(tmp_path), grid, obsdataout={"filename": str(out)})
    hofx = ObsVector(obs, np.array([[1.5, 2.5, 3.5, 4.5]]))
    hofx.save("hofx")
    assert obs.save() == str(out)
    with netCDF4.Dataset(out) as ds:
        assert set(ds.groups) == {"MetaData", "ObsValue", "ObsError", "hofx", "EffectiveQC"}
        assert ds["MetaData/dateTime"].dtype == np.int64
        assert ds["MetaData/dateTime"].units == "seconds since 1970-01-01T00:00:00Z"
        assert ds["EffectiveQC/x"].dtype == np.int32
        assert ds["EffectiveQC/x"][:].tolist() == [0, 0, 1, 0]
    back = _read(out, grid)
    assert back.nlocs == 4
    np.testing.assert_array_equal(back.locations.coords["x"], obs.locations.coords["x"])
    np.testing.assert_array_equal(back.locations.times, obs.locations.times)
    np.testing.assert_array_equal(back.get_db("hofx", "x"), [1.5, 2.5, 3.5, 4.5])
    np.testing.assert_array_equal(back.get_db("ObsValue", "x"), obs.get_db("ObsValue", "x"))
    assert back.qc_mask().tolist() == [[True, True, False, True]]
    assert sorted(p.name for p in out.parent.iterdir()) == ["obs_out.nc"]


def test_save_generated_obs_round_trip(tmp_path, grid):
    obs = _gen(grid, locations="random", random_seed=1)
    obs.put_db("ObsValue", "x", np.linspace(-1, 1, obs.nlocs))
    f = obs.save(str(tmp_path / "gen.nc"))
    back = _read(f, grid)
    np.testing.assert_array_equal(back.locations.coords["x"], obs.locations.coords["x"])
    np.testing.assert_array_equal(back.locations.times, obs.locations.times)
    np.testing.assert_array_equal(back.get_db("ObsError", "x"), obs.get_db("ObsError", "x"))


def test_save_without_output_file_is_a_no_op(tmp_path, grid):
    obs = _read(_file(tmp_path), grid)
    assert obs.save() is None


def test_put_db_checks_length_and_get_db_names_missing(tmp_path, grid):
    obs = _read(_file(tmp_path), grid)
    with pytest.raises(ValueError, match="4 locations"):
        obs.put_db("hofx", "x", np.zeros(3))
    with pytest.raises(InputFileError, match="ombg/x"):
        obs.get_db("ombg", "x")


def test_effective_qc_overrides_missing_values(tmp_path, grid):
    f = _file(tmp_path, extra={("EffectiveQC", "x"): np.array([0, 1, 1, 0], dtype=np.int32)})
    obs = _read(f, grid)
    assert obs.qc_mask().tolist() == [[True, False, False, True]]


# ObsVector ------------------------------------------------------------------------------

def test_obsvector_dot_and_rms_honour_qc(tmp_path, grid):
    obs = _read(_file(tmp_path), grid)
    y = obs.obs_values()
    assert y.values.shape == (1, 4)
    assert y.nobs() == 3
    # the NaN at location 2 does not count
    assert y.dot_product_with(y) == pytest.approx(1 + 4 + 16)
    assert y.rms() == pytest.approx(np.sqrt(21 / 3))
    z = ObsVector(obs, np.array([[1.0, 1.0, 100.0, 1.0]]))
    assert z.dot_product_with(y) == pytest.approx(7.0)
    assert np.isfinite(y.masked_values()).all()


def test_obsvector_with_members(tmp_path, grid):
    obs = _read(_file(tmp_path), grid)
    ens = ObsVector(obs, np.ones((5, 1, 4)))
    assert ens.dot_product_with(ens) == pytest.approx(15.0)
    assert ens.rms() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ens.save("hofx")
    with pytest.raises(ValueError, match="trailing shape"):
        ObsVector(obs, np.ones((1, 5)))


def test_obsvector_algebra(tmp_path, grid):
    obs = _read(_file(tmp_path), grid)
    a = ObsVector(obs, np.array([[1.0, 2.0, 3.0, 4.0]]))
    b = ObsVector(obs, np.array([[0.5, 0.5, 0.5, 0.5]]))
    np.testing.assert_array_equal((a + b).values, [[1.5, 2.5, 3.5, 4.5]])
    np.testing.assert_array_equal((a - b).values, [[0.5, 1.5, 2.5, 3.5]])
    np.testing.assert_array_equal((a * b).values, [[0.5, 1.0, 1.5, 2.0]])
    np.testing.assert_array_equal((2.0 * a).values, [[2, 4, 6, 8]])
    np.testing.assert_array_equal((a / b).values, [[2, 4, 6, 8]])
    np.testing.assert_array_equal((-a).values, [[-1, -2, -3, -4]])
    c = a.copy()
    c.axpy(2.0, b)
    np.testing.assert_array_equal(c.values, [[2, 3, 4, 5]])
    c -= b
    c += b
    c *= 2.0
    np.testing.assert_array_equal(c.values, [[4, 6, 8, 10]])
    np.testing.assert_array_equal(a.values, [[1, 2, 3, 4]])  # untouched
    np.testing.assert_array_equal(a["x"], [1, 2, 3, 4])
    z = a.zeros_like()
    assert z.dot_product_with(z) == 0.0
    z.ones()
    assert z.rms() == 1.0
    z.zero()
    assert not z.values.any()


# One file of many windows: read once per process ------------------------------------------------

def _many_windows_file(tmp_path, times, name="many.nc"):
    n = len(times)
    rng = np.random.default_rng(3)
    return write_ioda_file(tmp_path / name, {"x": rng.random(n)}, times, {"x": rng.standard_normal(n)},
                           {"x": 0.5 + rng.random(n)})


@pytest.mark.parametrize("order", ["ascending", "shuffled"])
@pytest.mark.parametrize("include_begin", [False, True])
def test_rows_of_a_window_are_those_of_the_window_test(tmp_path, order, include_begin):
    """``ObsFileContents.rows_in`` (bisection when the times ascend) selects exactly the rows
    ``TimeWindow.contains_seconds`` accepts, in file order, with times on both window edges."""
    from pyoops.generic.obs_space import read_obs_file

    base = DateTime("2010-01-01T00:00:00Z")
    seconds = np.repeat(np.arange(0, 48 * 3600 + 1, 3 * 3600), 3).astype(float)   # every 3 h, on the edges too
    if order == "shuffled":
        seconds = np.random.default_rng(1).permutation(seconds)
    path = _many_windows_file(tmp_path, [base.seconds_since_epoch() + s for s in seconds])
    contents = read_obs_file(path, ("x",))
    for start_hours in range(-6, 49, 3):
        window = TimeWindow(begin=base + Duration(f"PT{abs(start_hours)}H") * (1 if start_hours >= 0 else -1),
                            length="PT6H", include_begin=include_begin)
        expected = np.flatnonzero(window.contains_seconds(contents.times))
        np.testing.assert_array_equal(contents.rows_in(window), expected)


def test_one_file_of_many_windows_is_read_once_and_reread_when_it_changes(tmp_path, grid, monkeypatch):
    """With ``outside window: drop`` the whole file is read once; a window's space then holds its rows
    (writeable copies; the kept arrays are read-only); a rewritten file is read again."""
    import pyoops.generic.obs_space as obs_space

    reads = []
    real = obs_space._read_obs_file
    monkeypatch.setattr(obs_space, "_read_obs_file", lambda *a: reads.append(a[0]) or real(*a))
    monkeypatch.setattr(obs_space, "_OBS_FILE_CACHE", {})
    times = ["2010-01-01T22:00:00Z", "2010-01-02T00:00:00Z", "2010-01-02T04:00:00Z", "2010-01-02T06:00:00Z"]
    path = _many_windows_file(tmp_path, times)
    drop = {"filename": path, "outside window": "drop"}
    first = ObsSpace(_params(obsdatain=drop), WINDOW, grid)
    second = ObsSpace(_params(obsdatain=drop), TimeWindow(begin=WINDOW.end, length="PT6H"), grid)
    assert len(reads) == 1 and (first.nlocs, second.nlocs) == (2, 2)
    whole = obs_space.read_obs_file(path, ("x",), cached=True)
    np.testing.assert_array_equal(second.obs_values().values[0], whole.db[("ObsValue", "x")][2:])
    assert not whole.db[("ObsValue", "x")].flags.writeable
    second.get_db("ObsValue", "x")[0] = 99.0                       # the space's own copy
    assert whole.db[("ObsValue", "x")][2] != 99.0
    _many_windows_file(tmp_path, times[:3])                        # rewritten: 3 rows
    again = ObsSpace(_params(obsdatain=drop), TimeWindow(begin=WINDOW.end, length="PT6H"), grid)
    assert len(reads) == 2 and again.nlocs == 1
    ObsSpace(_params(obsdatain={"filename": path}), TimeWindow(begin=WINDOW.begin, length="PT12H"), grid)
    assert len(reads) == 3                                          # 'fail' (a file per window): not kept


def test_file_rewritten_with_its_old_modification_time_is_read_again(tmp_path, grid, monkeypatch):
    """A copy that keeps the modification time (``cp -p``, rsync -t) and the size is still seen as a new file
    (the status-change time is part of the key)."""
    import os

    import pyoops.generic.obs_space as obs_space

    monkeypatch.setattr(obs_space, "_OBS_FILE_CACHE", {})
    times = ["2010-01-01T22:00:00Z", "2010-01-02T00:00:00Z"]
    path = write_ioda_file(tmp_path / "many.nc", {"x": [0.1, 0.2]}, times, {"x": np.array([1.0, 1.0])},
                           {"x": np.ones(2)})
    before = os.stat(path)
    drop = {"filename": path, "outside window": "drop"}
    assert ObsSpace(_params(obsdatain=drop), WINDOW, grid).obs_values().values[0].tolist() == [1.0, 1.0]
    write_ioda_file(tmp_path / "many.nc", {"x": [0.1, 0.2]}, times, {"x": np.array([7.0, 7.0])}, {"x": np.ones(2)})
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size == before.st_size
    assert ObsSpace(_params(obsdatain=drop), WINDOW, grid).obs_values().values[0].tolist() == [7.0, 7.0]
