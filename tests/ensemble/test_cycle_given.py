"""``pyoops cycle`` on given observations, truth and initial states: a twin converted to files with plain
netCDF4 (tutorials/lorenz96/numpy_to_cycle.py, the code of docs/cycling.rst) reproduces the twin bitwise."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import pyoops
from pyoops.cli import main
from pyoops.ensemble.cycling import STATISTICS

from .test_cycle import l96_cycle

ROOT = Path(__file__).resolve().parents[2]


def converter() -> Any:
    spec = importlib.util.spec_from_file_location("numpy_to_cycle", ROOT / "tutorials" / "lorenz96" / "numpy_to_cycle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def twin_to_files(cfg: dict[str, Any], directory: Path, one_obs_file: bool = False) -> dict[str, Any]:
    """Run the twin with its archive, write its observations, truth and initial states as a user would, and
    return the configuration of the same experiment on those files (``one_obs_file``: the observations of all
    windows in one file and the truth at every analysis time in one file)."""
    import xarray as xr

    from pyoops.apps import make_application
    from pyoops.config.yaml_io import load_config

    conv = converter()
    cfg = copy.deepcopy(cfg)
    cfg["output"]["archive"] = True
    pyoops.run("cycle", cfg)
    archive = Path(cfg["output"]["directory"]) / "innovations.nc"
    meta = xr.open_dataset(archive, group="MetaData")
    y = xr.open_dataset(archive, group="ObsValue")["value"].values
    sigma = xr.open_dataset(archive, group="ObsError")["value"].values
    cycle, times, x = meta["cycle"].values, meta["dateTime"].values, meta["x"].values
    app = make_application("cycle")
    app.validate(load_config(cfg))
    exp = app.experiment
    directory.mkdir(parents=True, exist_ok=True)
    ncycles = cfg["cycling"]["cycles"]
    analysis_times = [exp.analysis_time(k) for k in range(ncycles)]
    if one_obs_file:
        conv.write_obs_file(directory / "obs.nc", times, x, y, sigma)
    else:
        for k, a_k in enumerate(analysis_times):
            rows = cycle == k
            conv.write_obs_file(directory / f"obs.{a_k}.nc", times[rows], x[rows], y[rows], sigma[rows])
    truth = exp.initial_truth()
    at = exp.advance_truth(truth, analysis_times[-1], analysis_times)
    if one_obs_file:          # and the truth in one file of every time
        conv.write_state_series(directory / "truth.nc", [np.datetime64(str(a_k)[:-1]) for a_k in analysis_times],
                                [at[a_k]["x"] for a_k in analysis_times])
    for a_k in analysis_times:
        conv.write_state_file(directory / f"truth.{a_k}.nc", np.datetime64(str(a_k)[:-1]), at[a_k]["x"])
    initial = exp.initial_experiment_state()
    s0 = np.datetime64(str(exp.background_time(0))[:-1])
    given = copy.deepcopy(cfg)
    given["output"]["directory"] = str(directory / "out")
    given["truth"] = {"filename": str(directory / ("truth.nc" if one_obs_file else "truth.%date%.nc"))}
    given["cycling"]["start"] = str(exp.start)
    obs = {k: v for k, v in cfg["observations"].items() if k not in ("obs frequency", "obs density", "obs error",
                                                                      "seed", "locations", "locations seed")}
    obs["obsdatain"] = {"filename": str(directory / ("obs.nc" if one_obs_file else "obs.%date%.nc"))}
    given["observations"] = obs
    if initial["control"] is not None:
        conv.write_state_file(directory / "background.nc", s0, initial["control"]["x"])
        given["cycling"]["initial background"] = {"filename": str(directory / "background.nc")}
    if initial["members"] is not None:
        conv.write_state_file(directory / "ensemble.nc", s0, initial["members"]["x"])
        given["cycling"]["initial ensemble"] = {"filename": str(directory / "ensemble.nc")}
    return given


@pytest.mark.parametrize("method,members,one_file", [("3D-Var", None, False), ("LETKF", 8, False),
                                                     ("EnKF", 6, True), ("4D-Var", None, True)])
def test_given_files_reproduce_the_twin_bitwise(tmp_path: Path, method: str, members: int | None,
                                                one_file: bool) -> None:
    cfg = l96_cycle(method, tmp_path / "twin", cycles=8, members=members)
    if method == "LETKF":        # no localization: the ETKF
        cfg["local ensemble DA"] = {"inflation": {"mult": 1.02}}
    if method == "4D-Var":       # windows of 4 observation times, background at the window begin
        cfg["cycling"]["window length"] = "P1D"
        cfg["cost function"]["linear model"] = {"name": "Lorenz96TLM", "tstep": "PT6H"}
    given = twin_to_files(cfg, tmp_path / "files", one_obs_file=one_file)
    twin = pyoops.run("cycle", dict(cfg, output=dict(cfg["output"], archive=True)))["experiment"]
    ran = pyoops.run("cycle", given)["experiment"]
    for name in STATISTICS:
        np.testing.assert_array_equal(ran.stats[name], twin.stats[name], err_msg=name)
    a = (tmp_path / "twin" / "innovations.nc")
    import xarray as xr

    for group in ("ombg", "oman", "BackgroundErrorVariance"):
        np.testing.assert_array_equal(xr.open_dataset(tmp_path / "files" / "out" / "innovations.nc", group=group)
                                      ["value"].values, xr.open_dataset(a, group=group)["value"].values)


@pytest.mark.parametrize("method,members,one_file", [("3D-Var", None, False), ("LETKF", 8, False),
                                                     ("3D-Var", None, True), ("LETKF", 8, True)])
def test_arrays_in_dapper_layout_reproduce_the_twin_bitwise(tmp_path: Path, method: str, members: int | None,
                                                            one_file: bool) -> None:
    """The path of benchmarks/dapper_compare.py: a twin as plain arrays laid out like DAPPER's ``xx`` (truth at
    T_0 and at every analysis time) and ``yy`` (observations at the analysis times, by grid point), written by
    numpy_to_cycle.write_filter_experiment (a file per analysis time, or ``one_file``: one observation file and
    one truth file), gives bitwise the twin's statistics and analyses (HofXAnalysis: H = I at every grid point)."""
    import xarray as xr

    from pyoops.apps import make_application
    from pyoops.config.yaml_io import load_config

    cfg = l96_cycle(method, tmp_path / "twin", cycles=6, members=members)
    cfg["output"]["archive"] = True
    if method == "LETKF":        # no localization: the ETKF
        cfg["local ensemble DA"] = {"inflation": {"mult": 1.02}}
    twin = pyoops.run("cycle", cfg)["experiment"]
    archive = tmp_path / "twin" / "innovations.nc"
    meta = xr.open_dataset(archive, group="MetaData")
    cycle, x = meta["cycle"].values, meta["x"].values
    y = xr.open_dataset(archive, group="ObsValue")["value"].values
    app = make_application("cycle")
    app.validate(load_config(cfg))
    exp = app.experiment
    times = [exp.analysis_time(k) for k in range(6)]
    truth = exp.initial_truth()
    xx = [np.array(truth.fields["x"])]
    at = exp.advance_truth(truth, times[-1], times)
    xx += [at[t]["x"] for t in times]
    yy = np.empty((6, 40))
    for k in range(6):                                     # by grid point, as DAPPER's yy
        rows = cycle == k
        yy[k][np.rint(x[rows] * 40).astype(int)] = y[rows]
    initial = exp.initial_experiment_state()
    start = np.datetime64(str(exp.start)[:-1])
    entries = converter().write_filter_experiment(
        tmp_path / "files", start, np.timedelta64(6, "h"), np.array(xx), yy, obs_error=1.0,
        background=None if initial["control"] is None else initial["control"]["x"],
        ensemble=None if initial["members"] is None else initial["members"]["x"], one_file=one_file)
    assert ("%date%" in entries["truth"]["filename"]) != one_file
    given = copy.deepcopy(cfg)
    given["output"]["directory"] = str(tmp_path / "given")
    given["truth"] = entries["truth"]
    given["observations"] = entries["observations"]
    given["cycling"].update(entries["cycling"])
    ran = pyoops.run("cycle", given)["experiment"]
    for name in STATISTICS:
        np.testing.assert_array_equal(ran.stats[name], twin.stats[name], err_msg=name)
    for group in ("HofXAnalysis", "HofXBackground", "ObsValue"):
        np.testing.assert_array_equal(xr.open_dataset(tmp_path / "given" / "innovations.nc", group=group)
                                      ["value"].values, xr.open_dataset(archive, group=group)["value"].values)


def test_given_observations_without_truth(tmp_path: Path) -> None:
    cfg = l96_cycle("LETKF", tmp_path / "twin", cycles=4, members=6)
    given = twin_to_files(cfg, tmp_path / "files")
    del given["truth"]
    s = pyoops.run("cycle", given)
    stats = s["experiment"].stats
    assert np.isnan(stats["analysis rmse"]).all() and np.isnan(stats["forecast mean rmse"]).all()
    assert np.isfinite(stats["analysis spread"]).all()          # not against the truth
    assert (tmp_path / "files" / "out" / "innovations.nc").exists()


def _error(tmp_path: Path, capsys: Any, cfg: dict[str, Any]) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()  # drop what earlier runs of this test logged (the level may be INFO from other tests)
    assert main(["cycle", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_given_files_bad_input(tmp_path: Path, capsys: Any) -> None:
    cfg = l96_cycle("3D-Var", tmp_path / "twin", cycles=3)
    files = tmp_path / "files"
    given = twin_to_files(cfg, files)
    conv = converter()
    # A missing obs file (the last window).
    bad = copy.deepcopy(given)
    bad["cycling"]["cycles"] = 4
    bad["output"]["directory"] = str(tmp_path / "o1")
    assert "obs.2010-01-22T00:00:00Z.nc" in _error(tmp_path, capsys, bad)
    # An obs file of another variable.
    name = sorted(files.glob("obs.*.nc"))[1]
    name.rename(tmp_path / "keep.nc")
    conv.write_obs_file(name, np.array(["2010-01-21T12:00:00"], "datetime64[s]"), [0.0], [1.0], [1.0], variable="u")
    bad = copy.deepcopy(given)
    bad["output"]["directory"] = str(tmp_path / "o2")
    msg = _error(tmp_path, capsys, bad)
    assert name.name in msg and "ObsValue/x" in msg
    (tmp_path / "keep.nc").rename(name)
    # A truth file on another geometry.
    truth = sorted(files.glob("truth.*.nc"))[0]
    conv.write_state_file(truth, np.datetime64(truth.name[6:25]), np.zeros(20))
    bad = copy.deepcopy(given)
    bad["output"]["directory"] = str(tmp_path / "o3")
    assert truth.name in _error(tmp_path, capsys, bad)
    # Synthetic keys with obsdatain; no start without a truth run.
    bad = copy.deepcopy(given)
    bad["observations"]["obs error"] = 1.0
    assert "obs error" in _error(tmp_path, capsys, bad)
    bad = copy.deepcopy(given)
    del bad["cycling"]["start"]
    assert "cycling.start" in _error(tmp_path, capsys, bad)


def test_truth_file_of_every_time_bad_input(tmp_path: Path, capsys: Any) -> None:
    """A truth file of every time that lacks an analysis time stops the run at that cycle with one line naming
    the file and the time; the cycles before stay in the checkpoint and the run resumes once the file is whole."""
    cfg = l96_cycle("3D-Var", tmp_path / "twin", cycles=3)
    files = tmp_path / "files"
    given = twin_to_files(cfg, files, one_obs_file=True)
    conv = converter()
    import netCDF4

    with netCDF4.Dataset(files / "truth.nc") as ds:
        seconds, x = ds["time"][:], ds["x"][:]
    epoch = np.datetime64("1970-01-01T00:00:00", "s")
    conv.write_state_series(files / "truth.nc", epoch + seconds[:2].astype("timedelta64[s]"), x[:2])
    msg = _error(tmp_path, capsys, given)
    missing = str(epoch + np.timedelta64(int(seconds[2]), "s")) + "Z"
    assert f"truth.nc: has no time {missing}" in msg
    out = Path(given["output"]["directory"])
    assert (out / "checkpoint.npz").exists()
    conv.write_state_series(files / "truth.nc", epoch + seconds.astype("timedelta64[s]"), x)
    resumed = pyoops.run("cycle", given)["experiment"]
    whole = pyoops.run("cycle", dict(given, resume=False, output=dict(given["output"], directory=str(tmp_path / "w"))))
    for name in STATISTICS:
        np.testing.assert_array_equal(resumed.stats[name], whole["experiment"].stats[name], err_msg=name)
