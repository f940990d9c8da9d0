"""Integration tests of the forecast and hofx applications on small Lorenz-96 problems.

Inputs are written with plain netCDF4 code following the documented layouts
(:mod:`pyoops.fields.netcdf` for states, :mod:`pyoops.generic.obs_space` for
observations), configs are YAML files in a temporary directory, and outputs
are read back with plain netCDF4 code.  The model is checked against an
independent RK4 implementation written here.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
import yaml

import pyoops
from pyoops.cli import main
from pyoops.util.errors import ConfigError, InputFileError, PyoopsError

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
T0 = "2010-01-01T00:00:00Z"


# Plain-netCDF4 writers and readers -------------------------------------------------------------
def iso_seconds(text: str) -> int:
    return round((datetime.datetime.fromisoformat(text.replace("Z", "+00:00")) - EPOCH).total_seconds())


def iso(seconds: float) -> str:
    return (EPOCH + datetime.timedelta(seconds=float(seconds))).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_yaml(path: "str | os.PathLike[str]", data: dict[str, Any]) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)


def write_state(path: "str | os.PathLike[str]", x: np.ndarray, date: str) -> str:
    """Lorenz-96 state, layout of ``pyoops.fields.netcdf``: attribute ``date``, dimension ``position``
    with its coordinate variable (points j/N), float64 variable ``x(position)``."""
    n = x.size
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.date = date
        ds.createDimension("position", n)
        ds.createVariable("position", "f8", ("position",))[:] = np.arange(n) / n
        ds.createVariable("x", "f8", ("position",))[:] = x
    return str(path)


def read_state(path: "str | os.PathLike[str]") -> tuple[np.ndarray, str]:
    with netCDF4.Dataset(path) as ds:
        return np.array(ds["x"][:], dtype=np.float64), ds.getncattr("date")


def write_obs(path: "str | os.PathLike[str]", positions: np.ndarray, times: list[str], values: np.ndarray,
              errors: float | np.ndarray) -> str:
    """Observations, IODA-like layout of ``pyoops.generic.obs_space``: dimension ``Location``;
    ``MetaData/dateTime`` (int64 seconds since 1970-01-01T00:00:00Z) and ``MetaData/x``;
    ``ObsValue/x`` and ``ObsError/x``."""
    n = len(positions)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("Location", n)
        meta = ds.createGroup("MetaData")
        dt = meta.createVariable("dateTime", "i8", ("Location",))
        dt.units = "seconds since 1970-01-01T00:00:00Z"
        dt[:] = np.array([iso_seconds(t) for t in times], dtype=np.int64)
        meta.createVariable("x", "f8", ("Location",))[:] = positions
        ds.createGroup("ObsValue").createVariable("x", "f8", ("Location",))[:] = values
        ds.createGroup("ObsError").createVariable("x", "f8", ("Location",))[:] = np.broadcast_to(errors, (n,))
    return str(path)


def read_obs(path: "str | os.PathLike[str]") -> dict[str, np.ndarray]:
    """``{"group/variable": values}`` of every group of an observation file."""
    out = {}
    with netCDF4.Dataset(path) as ds:
        for gname, group in ds.groups.items():
            for vname, var in group.variables.items():
                out[f"{gname}/{vname}"] = np.ma.filled(np.ma.asarray(var[:]), np.nan)
    return out


def leftover_tmp(directory: Path) -> list[Path]:
    return sorted(directory.rglob(".pyoops-*"))


# Independent reference model ----------------------------------------------------------------
def l96_rk4(x: np.ndarray, nsteps: int, dt: float = 0.05, forcing: float = 8.0) -> list[np.ndarray]:
    """States after 0..nsteps classical RK4 steps of dx_j/dt = (x_{j+1} - x_{j-2}) x_{j-1} - x_j + F."""

    def f(y: np.ndarray) -> np.ndarray:
        return (np.roll(y, -1) - np.roll(y, 2)) * np.roll(y, 1) - y + forcing

    out = [x.copy()]
    for _ in range(nsteps):
        k1 = f(x)
        k2 = f(x + 0.5 * dt * k1)
        k3 = f(x + 0.5 * dt * k2)
        k4 = f(x + dt * k3)
        x = x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(x.copy())
    return out


def attractor_state(n: int, seed: int = 5) -> np.ndarray:
    """A state near the Lorenz-96 attractor: random around F, then 200 steps."""
    x = 8.0 + np.random.default_rng(seed).standard_normal(n)
    return l96_rk4(x, 200)[-1]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def forecast_cfg(n: int, length: str, output: dict[str, Any] | None, filename: str = "ic.nc",
                 date: str = T0, tstep: str = "PT6H") -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "model plugin": "lorenz96",
        "geometry": {"resol": n},
        "model": {"name": "Lorenz96", "f": 8.0, "tstep": tstep},
        "initial condition": {"date": date, "filename": filename},
        "forecast length": length,
    }
    if output is not None:
        cfg["output"] = output
    return cfg


def observer(name: str, obs_space_source: dict[str, Any], out: str | None, operator: str = "Identity",
             error: dict[str, Any] | None = None) -> dict[str, Any]:
    space: dict[str, Any] = {"name": name, "simulated variables": ["x"], **obs_space_source}
    if out is not None:
        space["obsdataout"] = {"filename": out}
    entry: dict[str, Any] = {"obs space": space, "obs operator": {"name": operator}}
    if error is not None:
        entry["obs error"] = error
    return entry


# Forecast ---------------------------------------------------------------------------------------
def test_forecast_writes_outputs_at_the_requested_frequency(workdir):
    n = 40
    x0 = attractor_state(n)
    write_state("ic.nc", x0, T0)  # plain netCDF4 state file is read by the forecast
    write_yaml("fc.yaml", forecast_cfg(n, "P1D", {"filename": "out/fc.%date%.nc", "frequency": "PT12H"}))
    assert main(["forecast", "fc.yaml", "--quiet"]) == 0
    expected = {"2010-01-01T00:00:00Z": 0, "2010-01-01T12:00:00Z": 2, "2010-01-02T00:00:00Z": 4}
    assert sorted(p.name for p in (workdir / "out").iterdir()) == sorted(f"fc.{d}.nc" for d in expected)
    reference = l96_rk4(x0, 4)
    for date, step in expected.items():
        x, file_date = read_state(workdir / "out" / f"fc.{date}.nc")
        assert file_date == date
        np.testing.assert_allclose(x, reference[step], rtol=1e-12, atol=0)
    x_first, _ = read_state(workdir / "out" / f"fc.{T0}.nc")
    np.testing.assert_array_equal(x_first, x0)  # the initial state is written as read
    assert leftover_tmp(workdir) == []


def test_forecast_output_first_offset_and_final_only(workdir):
    n = 12
    x0 = attractor_state(n)
    write_state("ic.nc", x0, T0)
    summary = pyoops.run("forecast", forecast_cfg(n, "P1D", {"filename": "a/fc.%date%.nc", "frequency": "PT12H",
                                                              "first": "PT6H"}))
    assert summary["outputs"] == ["a/fc.2010-01-01T06:00:00Z.nc", "a/fc.2010-01-01T18:00:00Z.nc"]
    assert sorted(p.name for p in (workdir / "a").iterdir()) == ["fc.2010-01-01T06:00:00Z.nc",
                                                               "fc.2010-01-01T18:00:00Z.nc"]
    assert read_state("a/fc.2010-01-01T18:00:00Z.nc")[1] == "2010-01-01T18:00:00Z"
    # Without a frequency only the final state is written, under the literal name.
    summary = pyoops.run("forecast", forecast_cfg(n, "PT18H", {"filename": "b/final.nc"}))
    assert summary["outputs"] == ["b/final.nc"] and summary["final date"] == "2010-01-01T18:00:00Z"
    x, date = read_state("b/final.nc")
    assert date == "2010-01-01T18:00:00Z"
    np.testing.assert_allclose(x, l96_rk4(x0, 3)[-1], rtol=1e-12, atol=0)
    assert [p.name for p in (workdir / "b").iterdir()] == ["final.nc"]


def test_zero_length_forecast_leaves_the_state_unchanged(workdir):
    n = 40
    x0 = attractor_state(n)
    write_state("ic.nc", x0, T0)
    write_yaml("fc.yaml", forecast_cfg(n, "PT0S", {"filename": "out/fc.nc"}))
    summary = pyoops.run("forecast", "fc.yaml")
    x, date = read_state(workdir / "out" / "fc.nc")
    np.testing.assert_array_equal(x, x0)
    assert date == T0
    assert summary["final date"] == T0
    assert summary["final norm"] == summary["initial norm"]
    np.testing.assert_array_equal(summary["state"].fields["x"], x0)


def test_run_from_python_with_a_dict(workdir):
    n = 8
    x0 = attractor_state(n)
    write_state("ic.nc", x0, T0)
    cfg = forecast_cfg(n, "PT12H", {"filename": "out/fc.nc"})
    assert pyoops.run("forecast", cfg, validate_only=True) == {"valid": True}
    assert not (workdir / "out").exists()
    summary = pyoops.run("forecast", cfg)
    assert summary["final date"] == "2010-01-01T12:00:00Z"
    assert summary["outputs"] == ["out/fc.nc"]
    state = summary["state"]
    assert str(state.time) == "2010-01-01T12:00:00Z"
    np.testing.assert_allclose(state.fields["x"], l96_rk4(x0, 2)[-1], rtol=1e-12, atol=0)
    np.testing.assert_array_equal(read_state("out/fc.nc")[0], state.fields["x"])
    assert summary["final norm"] == pytest.approx(np.sqrt(np.mean(state.fields["x"] ** 2)), rel=1e-14)
    # The same bad input as on the command line raises one PyoopsError naming the key.
    bad = dict(cfg, **{"forecast length": "PT7H"})
    with pytest.raises(ConfigError, match="forecast length"):
        pyoops.run("forecast", bad)
    with pytest.raises(InputFileError, match="nothere.nc"):
        pyoops.run("forecast", forecast_cfg(n, "PT6H", None, filename="nothere.nc"))


def test_forecast_from_analytic_init_and_restart_from_its_output(workdir):
    """A forecast of 12 h equals two chained forecasts of 6 h through a written file (restart)."""
    cfg = forecast_cfg(8, "PT12H", {"filename": "out/direct.nc"})
    cfg["initial condition"] = {"date": T0, "analytic init": {"method": "sinusoid", "amplitude": 1.0}}
    pyoops.run("forecast", cfg)
    cfg["forecast length"] = "PT6H"
    cfg["output"] = {"filename": "out/half.nc"}
    pyoops.run("forecast", cfg)
    pyoops.run("forecast", forecast_cfg(8, "PT6H", {"filename": "out/restart.nc"}, filename="out/half.nc",
                                        date="2010-01-01T06:00:00Z"))
    np.testing.assert_array_equal(read_state("out/restart.nc")[0], read_state("out/direct.nc")[0])
    x0 = 8.0 + np.sin(2 * np.pi * np.arange(8) / 8)
    np.testing.assert_allclose(read_state("out/direct.nc")[0], l96_rk4(x0, 2)[-1], rtol=1e-12, atol=0)


# 3-D H(x) -----------------------------------------------------------------------------------------
def hofx3d_cfg(n: int, state_file: str, observers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "model plugin": "lorenz96",
        "time window": {"begin": "2009-12-31T21:00:00Z", "length": "PT6H"},
        "geometry": {"resol": n},
        "state": {"date": T0, "filename": state_file},
        "observations": {"observers": observers},
        **extra,
    }


@pytest.mark.parametrize("n", [8, 40, 100])
def test_hofx3d_identity_at_grid_points_equals_the_state_exactly(workdir, n):
    x = attractor_state(n)
    write_state("bg.nc", x, T0)
    positions = np.arange(n) / n
    times = ["2010-01-01T00:00:00Z"] * (n // 2) + ["2010-01-01T02:00:00Z"] * (n - n // 2)
    write_obs("obs.nc", positions, times, values=x + 1.0, errors=0.5)
    write_yaml("hofx.yaml", hofx3d_cfg(n, "bg.nc", [observer("grid", {"obsdatain": {"filename": "obs.nc"}},
                                                               "out/hofx.nc")]))
    assert main(["hofx", "hofx.yaml", "--quiet"]) == 0
    out = read_obs(workdir / "out" / "hofx.nc")
    np.testing.assert_array_equal(out["hofx/x"], x)
    # Input groups are kept, as written.
    np.testing.assert_array_equal(out["ObsValue/x"], x + 1.0)
    np.testing.assert_array_equal(out["ObsError/x"], 0.5)
    np.testing.assert_array_equal(out["MetaData/x"], positions)
    assert [iso(s) for s in out["MetaData/dateTime"]] == times
    np.testing.assert_array_equal(out["EffectiveQC/x"], 0)


def test_hofx3d_from_a_plain_obs_file_interpolates_and_reports_departures(workdir):
    n = 40
    x = attractor_state(n)
    write_state("bg.nc", x, T0)
    rng = np.random.default_rng(3)
    positions = np.concatenate([np.arange(n) / n, (np.arange(n) + 0.5) / n, rng.uniform(0, 1, 10)])
    times = ["2010-01-01T01:30:00Z"] * positions.size
    # the periodic linear interpolant of x, computed independently
    cyclic = np.append(x, x[0])
    truth = np.interp(positions, np.arange(n + 1) / n, cyclic)
    y = truth + 0.25
    write_obs("obs.nc", positions, times, values=y, errors=1.0)
    summary = pyoops.run("hofx", hofx3d_cfg(n, "bg.nc", [observer("mixed", {"obsdatain": {"filename": "obs.nc"}},
                                                                       "out/hofx.nc")]))
    out = read_obs("out/hofx.nc")
    np.testing.assert_allclose(out["hofx/x"], truth, rtol=0, atol=1e-13)
    np.testing.assert_allclose(out["hofx/x"][n:2 * n], 0.5 * (x + np.roll(x, -1)), rtol=0, atol=1e-13)
    stats = summary["observers"]["mixed"]
    assert stats["nobs"] == positions.size
    assert stats["y - H(x) mean"] == pytest.approx(0.25, abs=1e-12)
    assert stats["y - H(x) rms"] == pytest.approx(0.25, abs=1e-12)
    assert summary["outputs"] == ["out/hofx.nc"]
    assert leftover_tmp(workdir) == []


def test_obs_outside_the_window_are_rejected_with_the_file_name(workdir):
    n = 8
    write_state("bg.nc", attractor_state(n), T0)
    write_obs("obs.nc", [0.0, 0.5], ["2010-01-01T00:00:00Z", "2010-01-01T03:00:01Z"], np.zeros(2), 1.0)
    with pytest.raises(InputFileError, match=r"obs\.nc.*1 observation\(s\) outside the time window"):
        pyoops.run("hofx", hofx3d_cfg(n, "bg.nc", [observer("o", {"obsdatain": {"filename": "obs.nc"}}, None)]))


# 4-D H(x) -----------------------------------------------------------------------------------------
def hofx4d_cfg(n: int, observers: list[dict[str, Any]], length: str = "P1D", **extra: Any) -> dict[str, Any]:
    return {
        "model plugin": "lorenz96",
        "time window": {"begin": T0, "length": length},
        "geometry": {"resol": n},
        "initial condition": {"date": T0, "filename": "ic.nc"},
        "model": {"name": "Lorenz96", "f": 8.0, "tstep": "PT6H"},
        "observations": {"observers": observers},
        **extra,
    }


def _truth_run(workdir: Path, n: int, steps: int) -> list[np.ndarray]:
    """The truth written every step by the forecast application, read back from its files."""
    x0 = attractor_state(n)
    write_state("ic.nc", x0, T0)
    pyoops.run("forecast", forecast_cfg(n, f"PT{6 * steps}H", {"filename": "truth/x.%date%.nc", "frequency": "PT6H"}))
    states = []
    for k in range(steps + 1):
        x, date = read_state(workdir / "truth" / f"x.{iso(iso_seconds(T0) + 6 * 3600 * k)}.nc")
        states.append(x)
    return states


def test_hofx4d_obs_on_model_steps_equal_the_truth_at_their_time(workdir):
    n, steps = 40, 4
    truth = _truth_run(workdir, n, steps)
    rng = np.random.default_rng(11)
    positions, times, expected = [], [], []
    for k in range(1, steps + 1):  # the window (T0, T0 + 1 day] holds steps 1..4
        j = rng.choice(n, 10, replace=False)
        positions.extend(j / n)
        times.extend([iso(iso_seconds(T0) + 6 * 3600 * k)] * j.size)
        expected.extend(truth[k][j])
    write_obs("obs.nc", np.array(positions), times, np.zeros(len(times)), 1.0)
    write_yaml("h4.yaml", hofx4d_cfg(n, [observer("steps", {"obsdatain": {"filename": "obs.nc"}}, "out/h.nc")]))
    assert main(["hofx", "h4.yaml", "--quiet"]) == 0
    hofx = read_obs(workdir / "out" / "h.nc")["hofx/x"]
    np.testing.assert_array_equal(hofx, expected)  # at grid points: the truth's values exactly


def test_hofx4d_obs_between_steps_use_the_nearest_step(workdir):
    """OOPS time slots: an obs at t belongs to step t_k with t in (t_k - dt/2, t_k + dt/2]."""
    n, steps = 40, 4
    truth = _truth_run(workdir, n, steps)
    begin = iso_seconds(T0)
    # (offset from the window begin in seconds, expected step)
    cases = [
        (60, 0),                    # just after the begin: the initial state
        (2 * 3600, 0),
        (3 * 3600, 0),              # exactly half-way: the earlier step (slot upper bound included)
        (3 * 3600 + 1, 1),          # one second later: the next step
        (5 * 3600, 1),
        (8 * 3600, 1),
        (9 * 3600, 1),
        (9 * 3600 + 1, 2),
        (14 * 3600, 2),
        (16 * 3600, 3),
        (21 * 3600, 3),
        (21 * 3600 + 1, 4),
        (24 * 3600 - 1, 4),
        (24 * 3600, 4),             # the window end: the final state
    ]
    positions = (np.arange(len(cases)) * 3 % n) / n
    times = [iso(begin + off) for off, _ in cases]
    expected = [truth[k][round(p * n)] for p, (_, k) in zip(positions, cases)]
    write_obs("obs.nc", positions, times, np.zeros(len(cases)), 1.0)
    summary = pyoops.run("hofx", hofx4d_cfg(n, [observer("between", {"obsdatain": {"filename": "obs.nc"}},
                                                         "out/h.nc")]))
    assert summary["observers"]["between"]["nobs"] == len(cases)
    hofx = read_obs("out/h.nc")["hofx/x"]
    for (off, k), got, want, p in zip(cases, hofx, expected, positions):
        j = round(p * n)
        others = [truth[m][j] for m in range(steps + 1) if m != k]
        assert got == want, (off, k)
        assert all(abs(got - o) > 1e-6 for o in others), (off, k)


def test_hofx4d_obs_at_the_window_begin_needs_bound_to_include_begin(workdir):
    n = 8
    truth = _truth_run(workdir, n, 1)
    write_obs("obs.nc", [0.25], [T0], np.zeros(1), 1.0)
    cfg = hofx4d_cfg(n, [observer("begin", {"obsdatain": {"filename": "obs.nc"}}, "out/h.nc")], length="PT6H")
    with pytest.raises(InputFileError, match="outside the time window"):
        pyoops.run("hofx", cfg)
    cfg["time window"]["bound to include"] = "begin"
    pyoops.run("hofx", cfg)
    assert read_obs("out/h.nc")["hofx/x"][0] == truth[0][2]


# make obs -----------------------------------------------------------------------------------------
def _generate(density: int, frequency: str = "PT6H", error: float = 0.4, locations: str = "regular",
              seed: int = 0) -> dict[str, Any]:
    return {"generate": {"begin": "PT6H", "obs frequency": frequency, "obs density": density,
                         "obs error": error, "locations": locations, "random seed": seed}}


def test_make_obs_without_perturbations_then_hofx_gives_zero_departures(workdir):
    n = 40
    truth = _truth_run(workdir, n, 4)
    diag = {"covariance model": "diagonal"}
    make = hofx4d_cfg(n, [observer("net", _generate(25, locations="random", seed=7), "obs/made.nc", error=diag)],
                      **{"make obs": True})
    summary = pyoops.run("hofx", make)
    made = read_obs("obs/made.nc")
    assert made["ObsValue/x"].size == 100  # 25 locations at 4 times
    np.testing.assert_array_equal(made["ObsValue/x"], made["hofx/x"])
    np.testing.assert_array_equal(made["ObsError/x"], 0.4)
    assert summary["observers"]["net"]["obs rms"] == summary["observers"]["net"]["hofx rms"]
    # the made obs are H(truth) at their time, interpolated (checked against an independent interpolation)
    steps = ((made["MetaData/dateTime"] - iso_seconds(T0)) / (6 * 3600)).astype(int)
    for k in range(1, 5):
        sel = steps == k
        ref = np.interp(made["MetaData/x"][sel], np.arange(n + 1) / n, np.append(truth[k], truth[k][0]))
        np.testing.assert_allclose(made["ObsValue/x"][sel], ref, rtol=0, atol=1e-12)
    # hofx of the same state on the made obs: y - H(x) = 0 exactly
    check = hofx4d_cfg(n, [observer("net", {"obsdatain": {"filename": "obs/made.nc"}}, "obs/check.nc")])
    summary = pyoops.run("hofx", check)
    assert summary["observers"]["net"]["y - H(x) rms"] == 0.0
    out = read_obs("obs/check.nc")
    np.testing.assert_array_equal(out["ObsValue/x"] - out["hofx/x"], 0.0)
    assert leftover_tmp(workdir) == []


def test_make_obs_3d_from_the_cli_then_hofx_from_the_cli(workdir):
    n = 40
    x = attractor_state(n)
    write_state("truth.nc", x, T0)
    make = hofx3d_cfg(n, "truth.nc", [observer("grid", {"generate": {"begin": "PT3H", "obs frequency": "PT6H",
                                                                     "obs density": n, "obs error": 0.4}},
                                               "obs3d.nc")], **{"make obs": True})
    write_yaml("make.yaml", make)
    assert main(["hofx", "make.yaml", "--quiet"]) == 0
    made = read_obs("obs3d.nc")
    np.testing.assert_array_equal(made["ObsValue/x"], made["hofx/x"])
    np.testing.assert_array_equal(made["ObsValue/x"], x)  # all grid points, at T0
    assert {iso(s) for s in made["MetaData/dateTime"]} == {T0}
    write_yaml("check.yaml", hofx3d_cfg(n, "truth.nc", [observer("grid", {"obsdatain": {"filename": "obs3d.nc"}},
                                                                 "check.nc")]))
    assert main(["hofx", "check.yaml", "--quiet"]) == 0
    out = read_obs("check.nc")
    np.testing.assert_array_equal(out["ObsValue/x"], out["hofx/x"])


def test_make_obs_perturbations_are_seeded_and_have_the_obs_error_std(workdir):
    n = 40
    _truth_run(workdir, n, 4)
    sigma = 0.4
    diag = {"covariance model": "diagonal"}

    def make(seed: int, out: str) -> dict[str, np.ndarray]:
        cfg = hofx4d_cfg(n, [observer("net", _generate(500, error=sigma, locations="random", seed=2), out,
                                      error=diag)],
                         **{"make obs": True, "obs perturbations": True, "obs perturbations seed": seed})
        pyoops.run("hofx", cfg)
        return read_obs(out)

    a, a2, b = make(1, "a.nc"), make(1, "a2.nc"), make(2, "b.nc")
    np.testing.assert_array_equal(a["ObsValue/x"], a2["ObsValue/x"])  # same seed: same obs
    np.testing.assert_array_equal(a["hofx/x"], b["hofx/x"])  # same network and truth
    assert not np.any(a["ObsValue/x"] == b["ObsValue/x"])  # another seed: other draws
    for obs in (a, b):
        eps = (obs["ObsValue/x"] - obs["hofx/x"]) / sigma
        m = eps.size
        assert m == 2000
        # The sample std s of m standard normal draws has a relative standard error of
        # 1/sqrt(2(m-1)) ≈ 0.016: |s - 1| < 5 of them (≈ 0.079) holds with probability > 1 - 1e-6.
        assert abs(eps.std(ddof=1) - 1.0) < 5.0 / np.sqrt(2 * (m - 1))
        assert abs(eps.mean()) < 5.0 / np.sqrt(m)
        np.testing.assert_array_equal(obs["ObsError/x"], sigma)
        np.testing.assert_array_equal(obs["EffectiveQC/x"], 0)
    # the two seeds' perturbations are uncorrelated
    ea = a["ObsValue/x"] - a["hofx/x"]
    eb = b["ObsValue/x"] - b["hofx/x"]
    assert abs(np.corrcoef(ea, eb)[0, 1]) < 5.0 / np.sqrt(2000)


def test_make_obs_needs_an_output_file(workdir):
    n = 8
    write_state("ic.nc", attractor_state(n), T0)
    cfg = hofx4d_cfg(n, [observer("net", _generate(4), None)], **{"make obs": True})
    with pytest.raises(ConfigError, match=r"observations\.observers\[0\]\.obs space\.obsdataout"):
        pyoops.run("hofx", cfg)
    cfg = hofx4d_cfg(n, [observer("net", _generate(4), "o.nc")], **{"obs perturbations": True})
    with pytest.raises(PyoopsError, match="make obs"):
        pyoops.run("hofx", cfg)
