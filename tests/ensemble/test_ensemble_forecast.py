"""``pyoops ensemble-forecast``: one batched run equals one forecast per member, bit for bit."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest

import pyoops
from pyoops.util.errors import ConfigError

T0 = "2010-01-01T00:00:00Z"
N = 5
RESOL = 40


def make_members(io, n=N, resol=RESOL, date=T0, pattern="ens.{k:03d}.nc"):
    x0 = io.attractor_state(resol)
    rng = np.random.default_rng(11)
    members = x0 + 0.5 * rng.standard_normal((n, resol))
    for k in range(n):
        io.write_state(pattern.format(k=k + 1), members[k], date)
    return members


def config(output=None, **extra):
    cfg = {
        "model plugin": "lorenz96",
        "geometry": {"resol": RESOL},
        "model": {"name": "Lorenz96", "f": 8.0, "tstep": "PT6H"},
        "initial condition": {"members from template": {
            "template": {"date": T0, "filename": "ens.%mem%.nc"}, "pattern": "%mem%", "nmembers": N,
            "zero padding": 3}},
        "forecast length": "P1D",
    }
    if output is not None:
        cfg["output"] = output
    cfg.update(extra)
    return cfg


def test_batched_equals_member_by_member_bitwise(workdir, io):
    make_members(io)
    summary = pyoops.run("ensemble-forecast", config({"filename": "out/fc.%mem%.%date%.nc", "frequency": "PT12H"}))
    assert summary["members"] == N
    times = ["2010-01-01T00:00:00Z", "2010-01-01T12:00:00Z", "2010-01-02T00:00:00Z"]
    assert sorted(summary["outputs"]) == sorted(f"out/fc.{k:03d}.{t}.nc" for k in range(1, N + 1) for t in times)
    for k in range(1, N + 1):
        single = pyoops.run("forecast", {
            "model plugin": "lorenz96", "geometry": {"resol": RESOL},
            "model": {"name": "Lorenz96", "f": 8.0, "tstep": "PT6H"},
            "initial condition": {"date": T0, "filename": f"ens.{k:03d}.nc"},
            "forecast length": "P1D",
            "output": {"filename": f"single/fc.{k}.%date%.nc", "frequency": "PT12H"}})
        assert len(single["outputs"]) == 3
        for t in times:
            batched, date = io.read_state(f"out/fc.{k:03d}.{t}.nc")
            alone, _ = io.read_state(f"single/fc.{k}.{t}.nc")
            assert date == t
            assert np.array_equal(batched, alone)  # bitwise


def test_mean_spread_and_single_ensemble_file(workdir, io):
    members = make_members(io)
    summary = pyoops.run("ensemble-forecast", config(
        {"filename": "out/all.%date%.nc"},  # no %mem%: one file with a member dimension
        **{"output mean": {"filename": "out/mean.%date%.nc", "frequency": "PT6H", "first": "PT18H"},
           "output spread": {"filename": "out/spread.nc"}}))
    expected = io.l96_rk4(members, 4)  # an independent RK4 on the stacked members
    with netCDF4.Dataset("out/all.2010-01-02T00:00:00Z.nc") as ds:
        assert ds.dimensions["member"].size == N
        assert ds.getncattr("date") == "2010-01-02T00:00:00Z"
        np.testing.assert_allclose(ds["x"][:], expected, rtol=1e-12, atol=1e-12)
    assert sorted(Path("out").iterdir()) == sorted(Path("out") / f for f in (
        "all.2010-01-02T00:00:00Z.nc", "mean.2010-01-01T18:00:00Z.nc", "mean.2010-01-02T00:00:00Z.nc",
        "spread.nc"))
    mean, date = io.read_state("out/mean.2010-01-02T00:00:00Z.nc")
    assert date == "2010-01-02T00:00:00Z"
    np.testing.assert_allclose(mean, expected.mean(axis=0), rtol=1e-12, atol=1e-12)
    spread, _ = io.read_state("out/spread.nc")
    np.testing.assert_allclose(spread, expected.std(axis=0, ddof=1), rtol=1e-10, atol=1e-12)
    assert summary["final spread"] == pytest.approx(np.sqrt(np.mean(expected.var(axis=0, ddof=1))), rel=1e-12)


def test_members_listed_one_by_one(workdir, io):
    make_members(io, n=3)
    cfg = config({"filename": "out/fc.%mem%.nc"})
    cfg["initial condition"] = {"members": [{"date": T0, "filename": f"ens.{k:03d}.nc"} for k in (1, 2, 3)]}
    summary = pyoops.run("ensemble-forecast", cfg)
    assert summary["outputs"] == ["out/fc.1.nc", "out/fc.2.nc", "out/fc.3.nc"]


@pytest.mark.parametrize("case, message", [
    ("one member", "an ensemble needs at least 2 members"),
    ("no date", "every member needs a 'date'"),
    ("two dates", "all members must be valid at the same time"),
    ("other geometry", "has grid shape (20,), but the geometry has (40,)"),
    ("frequency without %date%", "must contain %date%"),
])
def test_bad_configs_fail_with_one_line(case, message, workdir, io, cli):
    make_members(io)
    io.write_state("small.nc", np.ones(20), T0)
    cfg = config({"filename": "out/fc.%mem%.nc"})
    ic = cfg["initial condition"]["members from template"]
    if case == "one member":
        ic["nmembers"] = 1
    elif case == "no date":
        del ic["template"]["date"]
    elif case == "two dates":
        cfg["initial condition"] = {"members": [{"date": T0, "filename": "ens.001.nc"},
                                                {"date": "2010-01-01T06:00:00Z", "filename": "ens.002.nc"}]}
    elif case == "other geometry":
        cfg["initial condition"] = {"members": [{"date": T0, "filename": "ens.001.nc"},
                                                {"date": T0, "filename": "small.nc"}]}
    else:
        cfg["output"] = {"filename": "out/fc.%mem%.nc", "frequency": "PT6H"}
    io.write_yaml("bad.yaml", cfg)
    code, out, err = cli("ensemble-forecast", "bad.yaml")
    assert code == 2 and len(err) == 1, err
    assert message in err[0]
    assert not Path("out").exists()
    if case != "other geometry":
        with pytest.raises(ConfigError, match=message):
            pyoops.run("ensemble-forecast", cfg, validate_only=True)


def test_member_written_on_another_geometry(workdir, io, cli):
    """A member file that pyoops wrote on another grid is named, in one line."""
    from pyoops.fields.fieldset import FieldSet
    from pyoops.registry import get_registry

    make_members(io)
    plugin = get_registry().model_plugin("lorenz96")
    other = plugin.geometry({"resol": 20})
    plugin.state(other, FieldSet({"x": np.ones(20)}), T0).write("other.nc")
    cfg = config({"filename": "out/fc.%mem%.nc"})
    cfg["initial condition"] = {"members": [{"date": T0, "filename": "ens.001.nc"},
                                            {"date": T0, "filename": "other.nc"}]}
    io.write_yaml("bad.yaml", cfg)
    code, out, err = cli("ensemble-forecast", "bad.yaml")
    assert code == 2 and len(err) == 1, err
    assert "other.nc" in err[0] and "another geometry" in err[0]


# The parallel section: processes and dask give the serial run's members and statistics, bit for bit ----------------
def _all_outputs(directory: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for path in sorted(directory.rglob("*.nc")):
        with netCDF4.Dataset(path) as ds:
            out[str(path.relative_to(directory))] = {name: np.array(var[:]) for name, var in ds.variables.items()}
    return out


def _same_runs(base: Path, cfg: dict, engines: list[dict], caplog: pytest.LogCaptureFixture) -> None:
    """``cfg`` (outputs under ``out/``) run serially and with each of ``engines``: the same files and summary."""
    runs = []
    caplog.set_level("INFO", logger="pyoops")
    for k, parallel in enumerate([None] + engines):
        run = dict(cfg, **({"parallel": parallel} if parallel else {}))
        run = {key: (dict(value, filename=f"run{k}/{value['filename']}") if key.startswith("output") else value)
               for key, value in run.items()}
        caplog.clear()
        summary = pyoops.run("ensemble-forecast", run)
        engine = (parallel or {}).get("engine", "serial")
        assert any(f"tasks, engine {engine}" in r.getMessage() and (engine == "serial" or " 1 tasks" not in
                   r.getMessage()) for r in caplog.records), [r.getMessage() for r in caplog.records]
        runs.append((summary, _all_outputs(base / f"run{k}")))
    serial, files = runs[0]
    assert len(files) > 3
    for k, (summary, other) in enumerate(runs[1:], start=1):
        assert summary["outputs"] == [name.replace("run0/", f"run{k}/") for name in serial["outputs"]]
        assert summary["initial spread"] == serial["initial spread"]
        assert summary["final spread"] == serial["final spread"]  # bitwise
        for var, a in serial["state"].fields.items():
            assert np.array_equal(summary["state"].fields[var], a)
        assert other.keys() == files.keys()
        for name, variables in files.items():
            for var, a in variables.items():
                assert np.array_equal(other[name][var], a), (name, var)


ENGINES = [{"engine": "processes", "workers": 2},
           {"engine": "dask", "workers": 2, "processes": False}]


def test_forecast_batches_do_not_depend_on_the_engine() -> None:
    from pyoops.apps.ensemble_forecast import forecast_batches

    assert forecast_batches(7, 40.0, 2) == [[0, 1], [2, 3], [4, 5], [6]]
    assert forecast_batches(40, 40.0) == [list(range(40))]          # Lorenz-96: one batch, as before
    assert forecast_batches(4, 102400.0) == [[0], [1], [2], [3]]    # QG 160 x 80, four variables: one member each


def test_processes_and_dask_equal_serial_lorenz96(workdir, io, caplog):
    pytest.importorskip("distributed")
    make_members(io, n=7, pattern="ens.{k:03d}.nc")
    cfg = config({"filename": "out/fc.%mem%.%date%.nc", "frequency": "PT12H"},
                 **{"output mean": {"filename": "out/mean.%date%.nc", "frequency": "PT6H"},
                    "output spread": {"filename": "out/spread.nc"}, "batch size": 2})
    cfg["initial condition"]["members from template"]["nmembers"] = 7
    _same_runs(workdir, cfg, ENGINES, caplog)


def test_processes_and_dask_equal_serial_qg(workdir, caplog):
    """QG on a tiny grid, whose batched arithmetic depends on the batch (a batch of one member differs in the last
    bit): the batches are the same for every engine, so the members are too."""
    pytest.importorskip("distributed")
    from pyoops.fields.fieldset import FieldSet
    from pyoops.registry import get_registry

    geometry = {"nx": 16, "ny": 9, "depths": [4500.0, 5500.0]}
    pyoops.run("forecast", {"model plugin": "qg", "geometry": geometry, "model": {"name": "QG", "tstep": "PT1H"},
                            "initial condition": {"date": T0, "analytic init": {
                                "method": "baroclinic-instability", "perturbation": 2.0}},
                            "forecast length": "PT0S", "output": {"filename": "x0.nc"}})
    plugin = get_registry().model_plugin("qg")
    geom = plugin.geometry(geometry)
    with netCDF4.Dataset("x0.nc") as ds:
        x0 = np.array(ds["x"][:])
    rng = np.random.default_rng(3)
    for k in range(1, 6):
        plugin.state(geom, FieldSet({"x": x0 + 1e5 * rng.standard_normal(x0.shape)}), T0).write(f"qg.{k}.nc")
    cfg = {"model plugin": "qg", "geometry": geometry, "model": {"name": "QG", "tstep": "PT1H"},
           "variables": ["x"],
           "initial condition": {"members from template": {"template": {"date": T0, "filename": "qg.%mem%.nc"},
                                                           "pattern": "%mem%", "nmembers": 5}},
           "forecast length": "PT6H", "batch size": 2,
           "output": {"filename": "out/fc.%mem%.%date%.nc", "frequency": "PT3H"},
           "output mean": {"filename": "out/mean.nc"}, "output spread": {"filename": "out/spread.nc"}}
    _same_runs(workdir, cfg, ENGINES, caplog)


@pytest.mark.parametrize("parallel, key", [
    ({"engine": "processes", "wrokers": 2}, "parallel.wrokers"),
    ({"engine": "threads"}, "parallel.engine"),
    ({"engine": "processes", "workers": 0}, "parallel.workers"),
    ({"engine": "processes", "tasks per worker": -1}, "parallel.tasks per worker"),
])
def test_bad_parallel_key_is_named(parallel, key, workdir, io):
    make_members(io)
    with pytest.raises(ConfigError) as info:
        pyoops.run("ensemble-forecast", config(parallel=parallel), validate_only=True)
    assert info.value.path == key, str(info.value)
