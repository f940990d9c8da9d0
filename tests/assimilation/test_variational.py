"""Integration tests of the variational application (``pyoops variational`` / ``pyoops.run("variational", ...)``).

Inputs are written with plain netCDF4 code in the documented layouts (states: global
attribute ``date``, dimension ``position`` with its coordinate, variable ``x``;
observations: the IODA-like groups of :mod:`pyoops.generic.obs_space`), configs are
dicts or YAML files in a temporary directory, outputs are read back with netCDF4 and
json.  Reference answers are built here independently of pyoops's operators: the dense
BLUE :math:`x_b + BG^T(GBG^T + R)^{-1}(y - Gx_b)` with :math:`G` made of this file's own
periodic linear interpolation and the dense step matrix of the linear test model
(``linear_toy_plugin.py``), and :math:`B = \\Sigma C \\Sigma` with the periodised Gaussian
correlation written out.  Dense matrices appear only in these tests.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
import yaml

import pyoops
from pyoops.cli import main

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
MINIMIZERS = ("DRPCG", "DRIPCG", "DRPLanczos", "PCG", "PLanczos", "RPCG", "MINRES", "DirectSolve")
T0 = "2010-01-01T00:00:00Z"


def _load_toy() -> Any:
    """The linear test-model plugin module (loaded once per process: --import-mode=importlib)."""
    name = "pyoops_tests_linear_toy_plugin"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("linear_toy_plugin.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


toy = _load_toy()


# ---------------------------------------------------------------------------------------------
# Plain-netCDF4 writers and readers, time helpers
# ---------------------------------------------------------------------------------------------
def seconds(text: str, offset_minutes: float = 0.0) -> int:
    t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00")) + datetime.timedelta(minutes=offset_minutes)
    return round((t - EPOCH).total_seconds())


def iso(text: str, offset_minutes: float = 0.0) -> str:
    t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00")) + datetime.timedelta(minutes=offset_minutes)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_yaml(path: "str | os.PathLike[str]", data: dict[str, Any]) -> str:
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)


def write_field(path: "str | os.PathLike[str]", x: np.ndarray, date: str | None) -> str:
    """A field on the periodic ring: dimension ``position`` (points j/N), variable ``x``; ``date`` if given."""
    n = x.size
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        if date is not None:
            ds.date = date
        ds.createDimension("position", n)
        ds.createVariable("position", "f8", ("position",))[:] = np.arange(n) / n
        ds.createVariable("x", "f8", ("position",))[:] = x
    return str(path)


def read_field(path: "str | os.PathLike[str]") -> tuple[np.ndarray, str]:
    with netCDF4.Dataset(path) as ds:
        return np.array(ds["x"][:], dtype=np.float64), str(ds.getncattr("date"))


def write_obs(path: "str | os.PathLike[str]", positions: Any, times: Any, values: Any, errors: Any) -> str:
    """IODA-like file: ``MetaData/dateTime`` (int64 s since 1970), ``MetaData/x``, ``ObsValue/x``, ``ObsError/x``."""
    positions = np.asarray(positions, dtype=float)
    n = positions.size
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("Location", n)
        meta = ds.createGroup("MetaData")
        dt = meta.createVariable("dateTime", "i8", ("Location",))
        dt.units = "seconds since 1970-01-01T00:00:00Z"
        dt[:] = np.broadcast_to(np.asarray(times, dtype=np.int64), (n,))
        meta.createVariable("x", "f8", ("Location",))[:] = positions
        ds.createGroup("ObsValue").createVariable("x", "f8", ("Location",))[:] = np.asarray(values, dtype=float)
        ds.createGroup("ObsError").createVariable("x", "f8", ("Location",))[:] = np.broadcast_to(errors, (n,))
    return str(path)


def read_obs(path: "str | os.PathLike[str]") -> dict[str, np.ndarray]:
    """``{"group/variable": values}`` of every group of an observation file (masked -> NaN)."""
    out = {}
    with netCDF4.Dataset(path) as ds:
        for gname, group in ds.groups.items():
            for vname, var in group.variables.items():
                data = np.ma.asarray(var[:])
                out[f"{gname}/{vname}"] = (np.ma.filled(data.astype(float), np.nan)
                                           if data.dtype.kind == "f" else np.ma.filled(data, -1))
    return out


def rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300))


# ---------------------------------------------------------------------------------------------
# Independent dense operators
# ---------------------------------------------------------------------------------------------
def interp_matrix(n: int, positions: Any) -> np.ndarray:
    """Linear interpolation on the periodic ring of ``n`` points j/n (written independently of pyoops)."""
    positions = np.asarray(positions, dtype=float)
    w = np.zeros((positions.size, n))
    for row, s in enumerate(positions):
        t = s * n
        i0 = int(np.floor(t + 1e-12))
        f = max(t - i0, 0.0)
        w[row, i0 % n] += 1.0 - f
        w[row, (i0 + 1) % n] += f
    return w


def periodic_gaussian(n: int, length: float) -> np.ndarray:
    """C_ij = g(x_i - x_j) / g(0), g the Gaussian exp(-r^2/2L^2) periodised over the unit circle."""
    x = np.arange(n) / n
    d = x[:, None] - x[None, :]
    m = np.arange(-6, 7)
    g = np.exp(-0.5 * ((d[..., None] + m) / length) ** 2).sum(axis=-1)
    return g / np.exp(-0.5 * (m / length) ** 2).sum()


def blue(xb: np.ndarray, b: np.ndarray, g: np.ndarray, r: np.ndarray, d: np.ndarray) -> np.ndarray:
    """x_b + B G^T (G B G^T + R)^-1 d."""
    return xb + b @ g.T @ np.linalg.solve(g @ b @ g.T + r, d)


def periodic_refine(n_coarse: int) -> np.ndarray:
    """Linear interpolation from n_coarse to 2 n_coarse periodic points (even: copy, odd: mean of neighbours)."""
    p = np.zeros((2 * n_coarse, n_coarse))
    for j in range(n_coarse):
        p[2 * j, j] = 1.0
        p[2 * j + 1, j] = 0.5
        p[2 * j + 1, (j + 1) % n_coarse] = 0.5
    return p


# ---------------------------------------------------------------------------------------------
# Config builders
# ---------------------------------------------------------------------------------------------
def observer(name: str, infile: str, outfile: str | None = None) -> dict[str, Any]:
    space: dict[str, Any] = {"name": name, "simulated variables": ["x"], "obsdatain": {"filename": str(infile)}}
    if outfile is not None:
        space["obsdataout"] = {"filename": str(outfile)}
    return {"obs space": space, "obs operator": {"name": "Identity"}, "obs error": {"covariance model": "diagonal"}}


def variational(plugin: str, cost_function: dict[str, Any], algorithm: str, iterations: list[dict[str, Any]],
                out: "str | os.PathLike[str]", tag: str) -> dict[str, Any]:
    out = Path(out)
    return {
        "model plugin": plugin,
        "cost function": cost_function,
        "variational": {"minimizer": {"algorithm": algorithm}, "iterations": iterations},
        "output": {"filename": str(out / f"an.{tag}.nc")},
        "output increment": {"filename": str(out / f"inc.{tag}.nc")},
        "output cost": {"filename": str(out / f"cost.{tag}.json")},
    }


def covariance(length: float | None = None, sigma: float | str | None = None) -> dict[str, Any]:
    """B = StdDev (value or file) . (spectral Gaussian correlation | ID)."""
    central = ({"saber block name": "ID"} if length is None
               else {"saber block name": "spectral correlation", "length scale": length})
    cov: dict[str, Any] = {"covariance model": "SABER", "saber central block": central}
    if sigma is not None:
        read = {"filename": sigma} if isinstance(sigma, str) else {"value": sigma}
        cov["saber outer blocks"] = [{"saber block name": "StdDev", "read": read}]
    return cov


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def lineartoy() -> Any:
    """``model plugin: lineartoy`` registered in the process-wide registry for the duration of one test."""
    yield toy.register()
    toy.unregister()


# =============================================================================================
# 1. The simplified 4-point Lorenz-96 3D-Var (REFERENCES.md section 3)
# =============================================================================================
def four_point_config(algorithm: str, obs_file: str = "obs.nc", obs_out: str = "obsout.nc") -> dict[str, Any]:
    return {
        "model plugin": "lorenz96",
        "cost function": {
            "cost type": "3D-Var",
            "time window": {"begin": "2010-01-01T21:00:00Z", "length": "PT6H"},
            "geometry": {"resol": 4},
            "analysis variables": ["x"],
            "background": {"date": "2010-01-02T00:00:00Z",
                           "analytic init": {"method": "sinusoid", "f": 3.0, "amplitude": 0.0}},
            "background error": {"covariance model": "SABER", "saber central block": {"saber block name": "ID"}},
            "observations": {"observers": [observer("Lorenz 96 grid points", obs_file, obs_out)]},
        },
        "variational": {"minimizer": {"algorithm": algorithm},
                        "iterations": [{"ninner": 10, "gradient norm reduction": 1e-10}]},
        "output": {"filename": "analysis.nc"},
        "output increment": {"filename": "increment.nc"},
        "output cost": {"filename": "cost.json"},
    }


def write_four_point_obs(path: str = "obs.nc") -> str:
    return write_obs(path, np.arange(4) / 4, seconds("2010-01-02T00:00:00Z"), [5.0, 7.0, -9.0, -5.0], 1.0)


@pytest.mark.parametrize("algorithm", MINIMIZERS)
def test_four_point_lorenz96_3dvar(workdir, algorithm):
    write_four_point_obs()
    summary = pyoops.run("variational", four_point_config(algorithm))

    assert summary["initial J"] == pytest.approx(114.0, rel=1e-14)
    assert summary["final J"] == pytest.approx(57.0, rel=1e-12)
    assert summary["final Jb"] == pytest.approx(28.5, rel=1e-12)
    assert summary["final Jo"] == pytest.approx(28.5, rel=1e-12)

    xa, date = read_field("analysis.nc")
    assert date == "2010-01-02T00:00:00Z"
    np.testing.assert_allclose(xa, [4.0, 5.0, -3.0, -1.0], rtol=0, atol=1e-12)
    inc, _ = read_field("increment.nc")
    np.testing.assert_allclose(inc, [1.0, 2.0, -6.0, -4.0], rtol=0, atol=1e-12)

    obs = read_obs("obsout.nc")
    np.testing.assert_array_equal(obs["ObsValue/x"], [5.0, 7.0, -9.0, -5.0])
    np.testing.assert_allclose(obs["hofx0/x"], [3.0, 3.0, 3.0, 3.0], rtol=0, atol=1e-14)
    np.testing.assert_allclose(obs["hofx1/x"], [4.0, 5.0, -3.0, -1.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(obs["ombg/x"], [2.0, 4.0, -12.0, -8.0], rtol=0, atol=1e-14)
    np.testing.assert_allclose(obs["oman/x"], [1.0, 2.0, -6.0, -4.0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(obs["EffectiveQC/x"], [0, 0, 0, 0])
    np.testing.assert_array_equal(obs["EffectiveError/x"], [1.0, 1.0, 1.0, 1.0])

    cost = json.loads(Path("cost.json").read_text())
    assert cost["cost type"] == "3D-Var" and cost["minimizer"] == algorithm
    trace = cost["trace"]
    assert trace[0] == {"outer iteration": 0, "iteration": 0, "J": 114.0, "Jb": 0.0, "Jo": 114.0,
                        "gradient norm": pytest.approx(trace[0]["gradient norm"]),
                        "gradient norm reduction": 1.0}
    assert trace[-1]["J"] == pytest.approx(57.0, rel=1e-12)
    assert trace[-1]["Jb"] == pytest.approx(28.5, rel=1e-12)
    assert trace[-1]["Jo"] == pytest.approx(28.5, rel=1e-12)
    assert trace[-1]["gradient norm reduction"] < 1e-10
    assert [r["iteration"] for r in trace] == list(range(len(trace)))
    assert all(r["J"] == pytest.approx(r["Jb"] + r["Jo"], rel=1e-14) for r in trace)
    assert all(b["J"] <= a["J"] * (1 + 1e-14) for a, b in zip(trace, trace[1:]))
    assert cost["online diagnostics"] == []


def test_four_point_from_yaml_through_the_cli(workdir, capsys):
    write_four_point_obs()
    write_yaml("3dvar.yaml", four_point_config("DRPLanczos"))
    assert main(["variational", "3dvar.yaml", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "final J: 57" in out
    np.testing.assert_allclose(read_field("analysis.nc")[0], [4.0, 5.0, -3.0, -1.0], rtol=0, atol=1e-12)


def test_direct_solve_refuses_a_large_increment_before_any_work(workdir):
    """DirectSolve forms dense n x n matrices: above DIRECT_MAX_SIZE values the run is refused at
    set-up with a one-line ConfigError naming variational.minimizer (no file has been read)."""
    from pyoops.assimilation.minimizers import DIRECT_MAX_SIZE
    from pyoops.util.errors import ConfigError

    cfg = four_point_config("DirectSolve")
    cfg["cost function"]["geometry"] = {"resol": DIRECT_MAX_SIZE + 1}
    with pytest.raises(ConfigError) as err:
        pyoops.run("variational", cfg)
    message = str(err.value)
    assert "variational.minimizer" in message and f"at most {DIRECT_MAX_SIZE}" in message
    assert f"has {DIRECT_MAX_SIZE + 1}" in message and "\n" not in message


# =============================================================================================
# 2. Lorenz-96 4D-Var: 40 variables, 1-day window, obs every 6 h, two outer loops
# =============================================================================================
L96_SIGMA_B = 0.6
L96_SIGMA_O = 0.4


@pytest.fixture(scope="module")
def l96_twin(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Truth, observations (make obs through the window) and a perturbed background, made with pyoops."""
    d = tmp_path_factory.mktemp("l96_4dvar")
    spin = pyoops.run("forecast", {
        "model plugin": "lorenz96", "geometry": {"resol": 40},
        "model": {"name": "Lorenz96", "f": 8.0, "tstep": "PT6H"},
        "initial condition": {"date": "2009-12-02T00:00:00Z",
                              "analytic init": {"method": "rest-perturbed", "perturbation": 0.01}},
        "forecast length": "P30D", "output": {"filename": str(d / "truth.%date%.nc")}})
    truth_file = str(d / f"truth.{T0}.nc")
    assert Path(truth_file).exists(), spin
    pyoops.run("hofx", {
        "model plugin": "lorenz96",
        "time window": {"begin": T0, "length": "P1D"},
        "geometry": {"resol": 40},
        "initial condition": {"date": T0, "filename": truth_file},
        "model": {"name": "Lorenz96", "f": 8.0, "tstep": "PT6H"},
        "observations": {"observers": [{
            "obs space": {"name": "random network", "simulated variables": ["x"],
                          "generate": {"begin": "PT6H", "obs frequency": "PT6H", "obs density": 20,
                                       "obs error": L96_SIGMA_O, "locations": "random", "random seed": 7},
                          "obsdataout": {"filename": str(d / "obs4d.nc")}},
            "obs operator": {"name": "Identity"}, "obs error": {"covariance model": "diagonal"}}]},
        "make obs": True, "obs perturbations": True, "obs perturbations seed": 5})
    truth, _ = read_field(truth_file)
    xb = truth + L96_SIGMA_B * np.random.default_rng(42).standard_normal(40)
    write_field(d / "bg.nc", xb, T0)
    return {"dir": d, "truth": truth, "xb": xb, "obs": str(d / "obs4d.nc")}


def l96_4dvar_cost(twin: dict[str, Any], tag: str) -> dict[str, Any]:
    return {
        "cost type": "4D-Var",
        "time window": {"begin": T0, "length": "P1D"},
        "geometry": {"resol": 40},
        "analysis variables": ["x"],
        "background": {"date": T0, "filename": str(twin["dir"] / "bg.nc")},
        "background error": covariance(sigma=L96_SIGMA_B),
        "observations": {"observers": [observer("random network", twin["obs"], str(twin["dir"] / f"obs.{tag}.nc"))]},
        "model": {"name": "Lorenz96", "f": 8.0, "tstep": "PT6H"},
        "linear model": {"name": "Lorenz96TLM", "f": 8.0, "tstep": "PT6H"},
    }


@pytest.fixture(scope="module")
def l96_4dvar_runs(l96_twin: dict[str, Any]) -> dict[str, Any]:
    runs = {}
    iterations = [{"ninner": 80, "gradient norm reduction": 1e-13}] * 2
    for algorithm in MINIMIZERS:
        cfg = variational("lorenz96", l96_4dvar_cost(l96_twin, algorithm), algorithm, iterations,
                          l96_twin["dir"], algorithm)
        summary = pyoops.run("variational", cfg)
        xa, date = read_field(l96_twin["dir"] / f"an.{algorithm}.nc")
        runs[algorithm] = {"summary": summary, "xa": xa, "date": date,
                           "cost": json.loads((l96_twin["dir"] / f"cost.{algorithm}.json").read_text()),
                           "obs": read_obs(l96_twin["dir"] / f"obs.{algorithm}.nc")}
    return runs


def test_l96_twin_data(l96_twin):
    obs = read_obs(l96_twin["obs"])
    t = obs["MetaData/dateTime"]
    assert sorted(set(t.tolist())) == [seconds(T0, 60 * h) for h in (6, 12, 18, 24)]
    assert t.size == 80
    assert np.all((obs["MetaData/x"] >= 0) & (obs["MetaData/x"] <= 1))
    assert np.all(np.isfinite(obs["ObsValue/x"]))


@pytest.mark.parametrize("algorithm", MINIMIZERS)
def test_l96_4dvar_minimizers_agree(l96_twin, l96_4dvar_runs, algorithm):
    run = l96_4dvar_runs[algorithm]
    ref = l96_4dvar_runs["DRPCG"]
    trace = run["cost"]["trace"]
    assert {r["outer iteration"] for r in trace} == {0, 1}
    j0 = trace[0]["J"]
    jfinal = run["summary"]["final J"]
    assert jfinal == trace[-1]["J"]
    assert jfinal < 0.5 * j0
    assert abs(jfinal - ref["summary"]["final J"]) <= 1e-10 * abs(ref["summary"]["final J"])
    # The first outer loop starts from the same innovations for everybody (J(0) = Jo(x_b)).
    assert trace[0]["J"] == pytest.approx(ref["cost"]["trace"][0]["J"], rel=1e-14)
    assert run["date"] == T0
    assert rel(run["xa"], ref["xa"]) < 1e-9
    rmse_a = np.sqrt(np.mean((run["xa"] - l96_twin["truth"]) ** 2))
    rmse_b = np.sqrt(np.mean((l96_twin["xb"] - l96_twin["truth"]) ** 2))
    assert rmse_a < 0.7 * rmse_b
    obs = run["obs"]
    assert np.sqrt(np.mean(obs["oman/x"] ** 2)) < np.sqrt(np.mean(obs["ombg/x"] ** 2))
    np.testing.assert_allclose(obs["ombg/x"], obs["ObsValue/x"] - obs["hofx0/x"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(obs["oman/x"], obs["ObsValue/x"] - obs["hofx1/x"], rtol=0, atol=1e-12)


# =============================================================================================
# 3. Exact BLUE with a linear model (4D-Var) and on random small 3D-Var problems
# =============================================================================================
TOY_N = 12
TOY_COEF = {"a0": 0.7, "a1": 0.2, "a2": 0.05}
TOY_MODEL = {"name": "LinearToy", **TOY_COEF, "tstep": "PT1H"}
TOY_TLM = {"name": "LinearToyTLM", **TOY_COEF, "tstep": "PT1H"}


def toy_problem(workdir: Path, seed: int, obs_groups: list[list[tuple[float, int]]], bg_date: str,
                length: float = 0.1, missing: int | None = None) -> dict[str, Any]:
    """Background, sigma file and observation files of a random toy problem.

    ``obs_groups``: one list per observer of ``(minutes after T0, number of obs)``.
    Returns the dense pieces (x_b, B, per-observer positions/times/values/errors) and the file names.
    """
    rng = np.random.default_rng(seed)
    n = TOY_N
    xb = 2.0 + rng.standard_normal(n)
    sigma = rng.uniform(0.5, 2.0, n)
    write_field(workdir / "bg.nc", xb, bg_date)
    write_field(workdir / "sigma.nc", sigma, None)
    c = periodic_gaussian(n, length)
    b = sigma[:, None] * c * sigma[None, :]
    observers = []
    for i, group in enumerate(obs_groups):
        pos, minutes, val, err = [], [], [], []
        for minute, count in group:
            pos.append(rng.uniform(0.0, 1.0, count))
            minutes.append(np.full(count, float(minute)))
            val.append(rng.normal(2.0, 2.0, count))
            err.append(rng.uniform(0.3, 1.5, count))
        pos_a, min_a, val_a, err_a = (np.concatenate(a) for a in (pos, minutes, val, err))
        if missing is not None and i == 0:
            val_a[missing] = np.nan
        name = workdir / f"obs{i}.nc"
        write_obs(name, pos_a, [seconds(T0, m) for m in min_a], val_a, err_a)
        observers.append({"file": str(name), "out": str(workdir / f"obsout{i}.nc"), "pos": pos_a, "minutes": min_a,
                          "y": val_a, "err": err_a})
    return {"xb": xb, "sigma_file": str(workdir / "sigma.nc"), "B": b, "observers": observers, "length": length}


def toy_cost(problem: dict[str, Any], cost_type: str, bg_date: str, window_length: str = "PT6H",
             model: dict[str, Any] | None = None, linear_model: dict[str, Any] | None = None) -> dict[str, Any]:
    cf: dict[str, Any] = {
        "cost type": cost_type,
        "time window": {"begin": T0, "length": window_length},
        "geometry": {"resol": TOY_N},
        "analysis variables": ["x"],
        "background": {"date": bg_date, "filename": str(Path(problem["sigma_file"]).with_name("bg.nc"))},
        "background error": covariance(problem["length"], problem["sigma_file"]),
        "observations": {"observers": [observer(f"toy obs {i}", o["file"], o["out"])
                                       for i, o in enumerate(problem["observers"])]},
    }
    if model is not None:
        cf["model"] = dict(model)
    if linear_model is not None:
        cf["linear model"] = dict(linear_model)
    return cf


def dense_4d(problem: dict[str, Any], steps_of: Any, tstep_minutes: float = 60.0,
             a: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(G, y, R, valid) with rows W(pos) A^k, k = steps_of(minutes), over every observer."""
    a = toy.dense_step_matrix(TOY_N, **TOY_COEF) if a is None else a
    rows, ys, errs = [], [], []
    for o in problem["observers"]:
        w = interp_matrix(TOY_N, o["pos"])
        for r, minute in enumerate(o["minutes"]):
            k = steps_of(minute / tstep_minutes)
            rows.append(w[r] @ np.linalg.matrix_power(a, k))
        ys.append(o["y"])
        errs.append(o["err"])
    g, y, err = np.array(rows), np.concatenate(ys), np.concatenate(errs)
    valid = np.isfinite(y)
    return g, y, np.diag(err**2), valid


def blue_of(problem: dict[str, Any], g: np.ndarray, y: np.ndarray, r: np.ndarray, valid: np.ndarray,
            g_nonlinear: np.ndarray | None = None) -> np.ndarray:
    """The BLUE over the valid observations; innovations from ``g_nonlinear`` (default ``g``)."""
    gn = g if g_nonlinear is None else g_nonlinear
    d = y[valid] - gn[valid] @ problem["xb"]
    return blue(problem["xb"], problem["B"], g[valid], r[np.ix_(valid, valid)], d)


def exact_steps(k: float) -> int:
    assert abs(k - round(k)) < 1e-12
    return int(round(k))


def test_toy_plugin_dense_pieces_match_pyoops(lineartoy):
    """The test's independent dense A, W and C are those pyoops applies (so the BLUE tests compare like with like)."""
    from pyoops.fields.fieldset import FieldSet
    from pyoops.interface.geometry import Locations
    from pyoops.saber.chain import SaberBlockChain
    from pyoops.saber.blocks import BlockContext
    from pyoops.util.datetime import DateTime

    geometry = toy.LinearToyGeometry({"resol": TOY_N})
    eye = FieldSet({"x": np.eye(TOY_N)})  # batched: row j is e_j
    model = toy.LinearToyModel(TOY_MODEL, geometry)
    tlm = toy.LinearToyTLM(TOY_TLM, geometry)
    a = toy.dense_step_matrix(TOY_N, **TOY_COEF)
    np.testing.assert_allclose(model.step(eye)["x"].T, a, rtol=0, atol=1e-15)
    np.testing.assert_allclose(tlm.step_tl(eye, eye)["x"].T, a, rtol=0, atol=1e-15)
    np.testing.assert_allclose(tlm.step_ad(eye, eye)["x"].T, a.T, rtol=0, atol=1e-15)
    pos = np.random.default_rng(0).uniform(0, 1, 9)
    w = geometry.interpolation_matrix(Locations({"x": pos})).toarray()
    np.testing.assert_allclose(w, interp_matrix(TOY_N, pos), rtol=0, atol=1e-14)
    chain = SaberBlockChain(covariance(0.1), BlockContext(geometry, geometry.variables, DateTime(T0), lineartoy,
                                                          lineartoy.model_plugins["lineartoy"]))
    c = chain.multiply(FieldSet({"x": np.eye(TOY_N)}))["x"].T
    np.testing.assert_allclose(c, periodic_gaussian(TOY_N, 0.1), rtol=0, atol=1e-12)


FOUR_D_OBS = [[(60, 4), (180, 3)], [(120, 2), (240, 3), (360, 5)]]  # (minutes, count) per observer, on model steps


@pytest.mark.parametrize("algorithm", MINIMIZERS)
def test_toy_4dvar_equals_dense_blue(workdir, lineartoy, algorithm):
    problem = toy_problem(workdir, 11, FOUR_D_OBS, T0)
    cfg = variational("lineartoy", toy_cost(problem, "4D-Var", T0, model=TOY_MODEL, linear_model=TOY_TLM),
                      algorithm, [{"ninner": 60, "gradient norm reduction": 1e-14}], workdir, "4d")
    summary = pyoops.run("variational", cfg)
    g, y, r, valid = dense_4d(problem, exact_steps)
    xa_blue = blue_of(problem, g, y, r, valid)
    xa, date = read_field(workdir / "an.4d.nc")
    assert date == T0
    inc_blue = xa_blue - problem["xb"]
    assert np.linalg.norm(xa - xa_blue) <= 1e-8 * np.linalg.norm(inc_blue), rel(xa, xa_blue)
    assert rel(xa, xa_blue) <= 1e-8

    # Observation-space output: H(x) along the (linear) model trajectory, per observer.
    hx_b, hx_a = g @ problem["xb"], g @ xa_blue
    start = 0
    for o in problem["observers"]:
        out = read_obs(o["out"])
        m = o["pos"].size
        np.testing.assert_allclose(out["hofx0/x"], hx_b[start:start + m], rtol=0, atol=1e-12)
        np.testing.assert_allclose(out["hofx1/x"], hx_a[start:start + m], rtol=0, atol=1e-8)
        np.testing.assert_allclose(out["ombg/x"], o["y"] - hx_b[start:start + m], rtol=0, atol=1e-12)
        np.testing.assert_allclose(out["oman/x"], o["y"] - hx_a[start:start + m], rtol=0, atol=1e-8)
        start += m

    # The minimum of the quadratic cost is the nonlinear J of the analysis (the model is linear).
    d = xa_blue - problem["xb"]
    jb = 0.5 * d @ np.linalg.solve(problem["B"], d)
    jo = 0.5 * np.sum((y - g @ xa_blue) ** 2 / np.diag(r))
    assert summary["final J"] == pytest.approx(jb + jo, rel=1e-10)
    assert summary["final Jb"] == pytest.approx(jb, rel=1e-8)
    assert summary["final Jo"] == pytest.approx(jo, rel=1e-8)


@pytest.mark.parametrize("shape", ["fewer obs than points", "more obs than points"])
@pytest.mark.parametrize("algorithm", MINIMIZERS)
def test_toy_3dvar_equals_dense_blue(workdir, lineartoy, algorithm, shape):
    """3D-Var: every observation sees the midpoint state whatever its time; one missing ObsValue is ignored."""
    mid = iso(T0, 180)
    if shape == "fewer obs than points":
        groups, seed, length, missing = [[(30, 2), (200, 3)]], 3, 0.08, None
    else:
        groups, seed, length, missing = [[(10, 10), (180, 8)], [(359, 12)]], 4, 0.12, 5
    problem = toy_problem(workdir, seed, groups, mid, length=length, missing=missing)
    cfg = variational("lineartoy", toy_cost(problem, "3D-Var", mid), algorithm,
                      [{"ninner": 60, "gradient norm reduction": 1e-14}], workdir, "3d")
    pyoops.run("variational", cfg)
    g, y, r, valid = dense_4d(problem, lambda k: 0)  # 3D-Var: no model, every obs sees x at the midpoint
    assert valid.sum() == (5 if missing is None else 29)
    xa_blue = blue_of(problem, g, y, r, valid)
    xa, date = read_field(workdir / "an.3d.nc")
    assert date == mid
    assert np.linalg.norm(xa - xa_blue) <= 1e-8 * np.linalg.norm(xa_blue - problem["xb"]), rel(xa, xa_blue)
    if missing is not None:
        out = read_obs(problem["observers"][0]["out"])
        assert np.isnan(out["oman/x"][missing]) and out["EffectiveQC/x"][missing] != 0
        assert np.isfinite(np.delete(out["oman/x"], missing)).all()


def write_multi(path: "str | os.PathLike[str]", fields: dict[str, np.ndarray], date: str) -> str:
    n = next(iter(fields.values())).size
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.date = date
        ds.createDimension("position", n)
        ds.createVariable("position", "f8", ("position",))[:] = np.arange(n) / n
        for v, a in fields.items():
            ds.createVariable(v, "f8", ("position",))[:] = a
    return str(path)


@pytest.mark.parametrize("analysis_variables", [["x", "y"], ["x"]])
@pytest.mark.parametrize("algorithm", ["DRPCG", "DRPLanczos", "PCG", "RPCG", "MINRES", "DirectSolve"])
def test_toy_4dvar_two_variables_equals_dense_blue(workdir, lineartoy, algorithm, analysis_variables):
    """Two model variables, per-variable StdDev values, one obs space simulating x and y (some y missing): the
    4D-Var analysis is the dense BLUE.  With analysis variables [x] the y observations cannot be simulated from the
    increment: one ConfigError naming 'analysis variables', for every minimizer (RPCG applies H before H^T)."""
    n, ell = TOY_N, 0.1
    sig = {"x": 1.3, "y": 0.6}
    rng = np.random.default_rng(71)
    xb = {v: rng.normal(1.0, 1.0, n) for v in ("x", "y")}
    write_multi(workdir / "bg.nc", xb, T0)
    minutes = np.repeat([60.0, 120.0, 300.0], 4)
    pos = rng.uniform(0, 1, minutes.size)
    y_obs = {v: rng.normal(1.0, 1.5, minutes.size) for v in ("x", "y")}
    y_obs["y"][[1, 7]] = np.nan
    err = {"x": rng.uniform(0.3, 0.9, minutes.size), "y": rng.uniform(0.3, 0.9, minutes.size)}
    with netCDF4.Dataset(workdir / "obs.nc", "w", format="NETCDF4") as ds:
        ds.createDimension("Location", pos.size)
        meta = ds.createGroup("MetaData")
        dt = meta.createVariable("dateTime", "i8", ("Location",))
        dt.units = "seconds since 1970-01-01T00:00:00Z"
        dt[:] = np.array([seconds(T0, t) for t in minutes], dtype=np.int64)
        meta.createVariable("x", "f8", ("Location",))[:] = pos
        for group, values in (("ObsValue", y_obs), ("ObsError", err)):
            g = ds.createGroup(group)
            for v in ("x", "y"):
                g.createVariable(v, "f8", ("Location",))[:] = values[v]
    obs_entry = observer("two variables", str(workdir / "obs.nc"), str(workdir / "obsout.nc"))
    obs_entry["obs space"]["simulated variables"] = ["x", "y"]
    cf = {"cost type": "4D-Var", "time window": {"begin": T0, "length": "PT6H"},
          "geometry": {"resol": n, "variables": ["x", "y"]}, "analysis variables": analysis_variables,
          "background": {"date": T0, "filename": str(workdir / "bg.nc")},
          "background error": {"covariance model": "SABER",
                               "saber central block": {"saber block name": "spectral correlation", "length scale": ell},
                               "saber outer blocks": [{"saber block name": "StdDev",
                                                       "read": {"value": {v: sig[v] for v in analysis_variables}}}]},
          "observations": {"observers": [obs_entry]},
          "model": TOY_MODEL, "linear model": TOY_TLM}
    cfg = variational("lineartoy", cf, algorithm, [{"ninner": 60, "gradient norm reduction": 1e-14}], workdir, "2v")
    if len(analysis_variables) == 1:
        # y is observed but not analysed: its H^T contribution has nowhere to go.
        with pytest.raises(pyoops.ConfigError, match="analysis variables"):
            pyoops.run("variational", cfg)
        return
    pyoops.run("variational", cfg)
    a = toy.dense_step_matrix(n, **TOY_COEF)
    w = interp_matrix(n, pos)
    rows = np.array([w[i] @ np.linalg.matrix_power(a, int(round(t / 60))) for i, t in enumerate(minutes)])
    zero = np.zeros_like(rows)
    g = np.block([[rows, zero], [zero, rows]])  # state [x, y], obs [x obs, y obs] (variable-major)
    y = np.concatenate([y_obs["x"], y_obs["y"]])
    r = np.diag(np.concatenate([err["x"], err["y"]]) ** 2)
    c = periodic_gaussian(n, ell)
    b = np.block([[sig["x"] ** 2 * c, np.zeros((n, n))], [np.zeros((n, n)), sig["y"] ** 2 * c]])
    x_b = np.concatenate([xb["x"], xb["y"]])
    valid = np.isfinite(y)
    xa_blue = blue(x_b, b, g[valid], r[np.ix_(valid, valid)], y[valid] - g[valid] @ x_b)
    with netCDF4.Dataset(workdir / "an.2v.nc") as ds:
        xa = np.concatenate([np.array(ds["x"][:]), np.array(ds["y"][:])])
    assert np.linalg.norm(xa - xa_blue) <= 1e-8 * np.linalg.norm(xa_blue - x_b), rel(xa, xa_blue)
    out = read_obs(workdir / "obsout.nc")
    np.testing.assert_allclose(out["hofx1/y"], rows @ xa_blue[n:], rtol=0, atol=1e-8)
    assert np.isnan(out["oman/y"][[1, 7]]).all() and list(out["EffectiveQC/y"][[1, 7]]) == [1, 1]


def test_toy_4dvar_obs_between_model_steps_use_the_nearest_step(workdir, lineartoy):
    """Obs at 0h20 use the initial state, at 1h20 and 1h30 the state after 1 step, at 1h40 after 2 steps, at 5h50
    after 6 (slot (t_k - dt/2, t_k + dt/2], slots.py)."""
    minutes = [20, 80, 90, 100, 350]
    problem = toy_problem(workdir, 21, [[(m, 2) for m in minutes]], T0)
    cfg = variational("lineartoy", toy_cost(problem, "4D-Var", T0, model=TOY_MODEL, linear_model=TOY_TLM),
                      "DRPCG", [{"ninner": 60, "gradient norm reduction": 1e-14}], workdir, "slots")
    pyoops.run("variational", cfg)

    def nearest(k: float) -> int:  # slot (t_k - dt/2, t_k + dt/2]
        return int(np.ceil(k - 0.5))

    assert [nearest(m / 60) for m in minutes] == [0, 1, 1, 2, 6]
    g, y, r, valid = dense_4d(problem, nearest)
    out = read_obs(problem["observers"][0]["out"])
    np.testing.assert_allclose(out["hofx0/x"], g @ problem["xb"], rtol=0, atol=1e-12)
    # The floor and the ceiling of the obs time give different H(x_b): the test can tell them apart.
    g_floor, *_ = dense_4d(problem, lambda k: int(np.floor(k)))
    g_ceil, *_ = dense_4d(problem, lambda k: int(np.ceil(k)))
    assert np.abs(g_floor @ problem["xb"] - out["hofx0/x"]).max() > 1e-3
    assert np.abs(g_ceil @ problem["xb"] - out["hofx0/x"]).max() > 1e-3
    xa_blue = blue_of(problem, g, y, r, valid)
    xa, _ = read_field(workdir / "an.slots.nc")
    assert np.linalg.norm(xa - xa_blue) <= 1e-8 * np.linalg.norm(xa_blue - problem["xb"])


# =============================================================================================
# 4. Inner loops at half resolution
# =============================================================================================
def half_resolution_problem(workdir: Path, seed: int = 8) -> dict[str, Any]:
    """Lorenz-96 3D-Var on 40 points: sinusoidal background, 30 obs at random locations (error 0.5)."""
    rng = np.random.default_rng(seed)
    mid = "2010-01-02T00:00:00Z"
    pos = rng.uniform(0, 1, 30)
    x = np.arange(40) / 40
    truth = 8.0 + np.sin(2 * np.pi * x) + 0.8 * np.cos(6 * np.pi * x + 0.3)
    y = interp_matrix(40, pos) @ truth + 0.5 * rng.standard_normal(pos.size)
    write_obs(workdir / "obs.nc", pos, seconds(mid), y, 0.5)
    return {"mid": mid, "pos": pos, "y": y, "xb": 8.0 + np.sin(2 * np.pi * x)}


def half_resolution_cost(workdir: Path, problem: dict[str, Any], length: float, tag: str) -> dict[str, Any]:
    return {
        "cost type": "3D-Var",
        "time window": {"begin": "2010-01-01T21:00:00Z", "length": "PT6H"},
        "geometry": {"resol": 40},
        "analysis variables": ["x"],
        "background": {"date": problem["mid"], "analytic init": {"method": "sinusoid", "f": 8.0, "amplitude": 1.0}},
        "background error": covariance(length, 1.0),
        "observations": {"observers": [observer("obs", str(workdir / "obs.nc"), str(workdir / f"obsout.{tag}.nc"))]},
    }


@pytest.mark.parametrize("algorithm", ["DRPCG", "PLanczos", "RPCG"])
def test_half_resolution_inner_loop_3dvar(workdir, algorithm):
    problem = half_resolution_problem(workdir)
    cfg = variational("lorenz96", half_resolution_cost(workdir, problem, 0.03, "half"), algorithm,
                      [{"ninner": 50, "gradient norm reduction": 1e-13, "geometry": {"resol": 20}}], workdir, "half")
    summary = pyoops.run("variational", cfg)
    inc, _ = read_field(workdir / "inc.half.nc")
    assert np.abs(inc).max() > 0.1
    # The increment is the documented linear interpolation of a 20-point field: odd points are the mean of
    # their neighbours (periodic), even points are free.
    np.testing.assert_allclose(inc[1::2], 0.5 * (inc[0::2] + np.roll(inc[0::2], -1)), rtol=0, atol=1e-12)
    assert np.abs(inc[0::2] - 0.5 * (np.roll(inc[1::2], 1) + inc[1::2])).max() > 1e-3
    # ... and the 20-point field is the dense BLUE of the inner problem: B on 20 points, H interpolating there.
    xb, y = problem["xb"], problem["y"]
    d = y - interp_matrix(40, problem["pos"]) @ xb
    b20 = periodic_gaussian(20, 0.03)
    dx20 = blue(np.zeros(20), b20, interp_matrix(20, problem["pos"]), 0.25 * np.eye(y.size), d)
    np.testing.assert_allclose(inc, periodic_refine(20) @ dx20, rtol=0, atol=1e-8 * np.abs(dx20).max())
    # J re-evaluated with the nonlinear (full-resolution) H: lower at the analysis than at the background.
    obs = read_obs(workdir / "obsout.half.nc")
    b40 = periodic_gaussian(40, 0.03)
    j_b = 0.5 * np.sum((obs["ombg/x"] / 0.5) ** 2)
    j_a = 0.5 * inc @ np.linalg.solve(b40, inc) + 0.5 * np.sum((obs["oman/x"] / 0.5) ** 2)
    assert summary["initial J"] == pytest.approx(j_b, rel=1e-12)
    assert j_a < 0.5 * j_b


@pytest.mark.parametrize("algorithm", MINIMIZERS)
def test_half_then_full_resolution_outer_loops_reach_the_full_blue(workdir, algorithm):
    """Outer loops at 20 then 40 points: B^-1 dx_b is recomputed for the new inner geometry, and the
    full-resolution loop of this linear problem ends at the full-resolution BLUE, whose J is the nonlinear one."""
    problem = half_resolution_problem(workdir)
    cfg = variational("lorenz96", half_resolution_cost(workdir, problem, 0.03, "two"), algorithm,
                      [{"ninner": 50, "gradient norm reduction": 1e-13, "geometry": {"resol": 20}},
                       {"ninner": 80, "gradient norm reduction": 1e-13}], workdir, "two")
    summary = pyoops.run("variational", cfg)
    xb, y = problem["xb"], problem["y"]
    h40 = interp_matrix(40, problem["pos"])
    b40 = periodic_gaussian(40, 0.03)
    xa_blue = blue(xb, b40, h40, 0.25 * np.eye(y.size), y - h40 @ xb)
    xa, _ = read_field(workdir / "an.two.nc")
    assert np.linalg.norm(xa - xa_blue) <= 1e-8 * np.linalg.norm(xa_blue - xb), rel(xa, xa_blue)

    def j(x: np.ndarray) -> float:
        dx = x - xb
        return 0.5 * dx @ np.linalg.solve(b40, dx) + 0.5 * np.sum((y - h40 @ x) ** 2 / 0.25)

    trace = json.loads((workdir / "cost.two.json").read_text())["trace"]
    second = [r for r in trace if r["outer iteration"] == 1]
    assert summary["final J"] == pytest.approx(j(xa_blue), rel=1e-10)
    first = [r for r in trace if r["outer iteration"] == 0]
    if algorithm != "RPCG":
        # The second loop starts at the half-resolution analysis, whose J is the nonlinear one too
        # (measured 17.16 against 42.54 at the background: no round-off question).
        assert second[0]["J"] < first[0]["J"]
    else:
        # RPCG's iteration 0 is J(dx_b), i.e. J at the background, in every outer loop: the two numbers are
        # the same J (Jb = 0, Jo of y - Hx_b) computed from other operands (d and H dx_b about another guess),
        # equal to round-off (measured |diff| = 1-2 ulps of J ~ 42, in either direction depending on the BLAS
        # kernel).  rel=1e-12 (~4500 ulps) leaves room for the O(n eps) round-off of the 30 squared departures
        # and is still far below a real difference (J at the half-resolution analysis would be 17.16).
        assert second[0]["J"] == pytest.approx(first[0]["J"], rel=1e-12)
    assert second[-1]["J"] <= second[0]["J"]  # 13.32 against 17.16 (42.54 for RPCG): a wide margin


@pytest.mark.parametrize("algorithm", MINIMIZERS)
def test_two_outer_loops_at_half_resolution_carry_the_background_term(workdir, algorithm):
    """3D-Var with H = interpolation is linear, and H_40 P = H_20 (P: linear refinement), so a second outer loop on
    the same 20-point inner grid (B^-1 dx_b carried, dx_b restricted to 20 points) has nothing left to do: it starts
    where the first loop ended and the analysis stays the one-loop analysis."""
    problem = half_resolution_problem(workdir)
    one = variational("lorenz96", half_resolution_cost(workdir, problem, 0.03, "one"), algorithm,
                      [{"ninner": 50, "gradient norm reduction": 1e-13, "geometry": {"resol": 20}}], workdir, "one")
    pyoops.run("variational", one)
    two = variational("lorenz96", half_resolution_cost(workdir, problem, 0.03, "two"), algorithm,
                      [{"ninner": 50, "gradient norm reduction": 1e-13, "geometry": {"resol": 20}}] * 2, workdir, "two")
    pyoops.run("variational", two)
    xb = problem["xb"]
    xa1, _ = read_field(workdir / "an.one.nc")
    xa2, _ = read_field(workdir / "an.two.nc")
    assert np.linalg.norm(xa2 - xa1) <= 1e-9 * np.linalg.norm(xa1 - xb)
    trace = json.loads((workdir / "cost.two.json").read_text())["trace"]
    first = [r for r in trace if r["outer iteration"] == 0]
    second = [r for r in trace if r["outer iteration"] == 1]
    assert second[-1]["J"] == pytest.approx(first[-1]["J"], rel=1e-10)
    if algorithm != "RPCG":  # RPCG's iteration 0 is J(dx_b), i.e. J at the background
        assert second[0]["J"] == pytest.approx(first[-1]["J"], rel=1e-10)
    else:
        assert second[0]["J"] == pytest.approx(first[0]["J"], rel=1e-10)


def test_half_resolution_inner_loop_4dvar_lorenz96(l96_twin):
    """Lorenz-96 4D-Var on 40 points with the inner loop (TLM, B, H) on 20: runs, the increment is the
    interpolation of a 20-point field, and J re-evaluated with the nonlinear model at 40 points goes down.

    (Lorenz-96 on 20 points is another dynamical system, so its TLM is a rough stand-in for the 40-point one
    and the reduction is modest; the exact check of a half-resolution 4D-Var is the linear-model test below.)
    """
    d = l96_twin["dir"]
    iterations = [{"ninner": 40, "gradient norm reduction": 1e-10, "geometry": {"resol": 20},
                   "linear model": {"name": "Lorenz96TLM", "f": 8.0, "tstep": "PT6H"}}]
    cfg = variational("lorenz96", l96_4dvar_cost(l96_twin, "half"), "DRPCG", iterations, d, "half")
    summary = pyoops.run("variational", cfg)
    xa, _ = read_field(d / "an.half.nc")
    obs = read_obs(d / "obs.half.nc")
    j_b = 0.5 * np.sum((obs["ombg/x"] / L96_SIGMA_O) ** 2)
    j_a = 0.5 * np.sum((xa - l96_twin["xb"]) ** 2) / L96_SIGMA_B**2 + 0.5 * np.sum((obs["oman/x"] / L96_SIGMA_O) ** 2)
    assert summary["initial J"] == pytest.approx(j_b, rel=1e-12)
    assert summary["final J"] < 0.7 * j_b
    assert j_a < j_b
    inc, _ = read_field(d / "inc.half.nc")
    assert np.abs(inc).max() > 0.1
    np.testing.assert_allclose(inc[1::2], 0.5 * (inc[0::2] + np.roll(inc[0::2], -1)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("algorithm", ["DRPCG", "PCG", "RPCG"])
def test_half_resolution_inner_loop_4dvar_linear_model_is_the_interpolated_inner_blue(workdir, lineartoy, algorithm):
    """Linear damping model on 24 points, inner loop on 12: the increment is P dx_12 with dx_12 the dense BLUE of
    the 12-point problem (B, W_12 A^k at 12 points, innovations from the 24-point model), and J goes down."""
    n, m, sigma_b, ell = 24, 12, 0.8, 0.06
    damping = {"a0": 0.85, "a1": 0.0, "a2": 0.0}
    rng = np.random.default_rng(61)
    xb = 1.0 + rng.standard_normal(n)
    write_field(workdir / "bg.nc", xb, T0)
    minutes = np.repeat([60.0, 180.0, 300.0], 6)
    pos = rng.uniform(0, 1, minutes.size)
    err = rng.uniform(0.3, 0.8, minutes.size)
    y = rng.normal(1.0, 1.5, minutes.size)
    write_obs(workdir / "obs.nc", pos, [seconds(T0, t) for t in minutes], y, err)
    cf = {"cost type": "4D-Var", "time window": {"begin": T0, "length": "PT6H"}, "geometry": {"resol": n},
          "background": {"date": T0, "filename": str(workdir / "bg.nc")},
          "background error": covariance(ell, sigma_b),
          "observations": {"observers": [observer("toy", str(workdir / "obs.nc"), str(workdir / "obsout.nc"))]},
          "model": {"name": "LinearToy", **damping, "tstep": "PT1H"},
          "linear model": {"name": "LinearToyTLM", **damping, "tstep": "PT1H"}}
    cfg = variational("lineartoy", cf, algorithm,
                      [{"ninner": 40, "gradient norm reduction": 1e-14, "geometry": {"resol": m}}], workdir, "half")
    pyoops.run("variational", cfg)
    inc, _ = read_field(workdir / "inc.half.nc")
    steps = np.rint(minutes / 60).astype(int)

    def g_of(k_points: int) -> np.ndarray:
        a = toy.dense_step_matrix(k_points, **damping)
        w = interp_matrix(k_points, pos)
        return np.array([w[i] @ np.linalg.matrix_power(a, k) for i, k in enumerate(steps)])

    d = y - g_of(n) @ xb
    dx_inner = blue(np.zeros(m), sigma_b**2 * periodic_gaussian(m, ell), g_of(m), np.diag(err**2), d)
    np.testing.assert_allclose(inc, periodic_refine(m) @ dx_inner, rtol=0, atol=1e-9 * np.abs(dx_inner).max())
    obs = read_obs(workdir / "obsout.nc")
    b_outer = sigma_b**2 * periodic_gaussian(n, ell)
    j_b = 0.5 * np.sum((obs["ombg/x"] / err) ** 2)
    jo_a = 0.5 * np.sum((obs["oman/x"] / err) ** 2)
    assert jo_a < 0.7 * j_b
    assert 0.5 * inc @ np.linalg.solve(b_outer, inc) + jo_a < j_b


# =============================================================================================
# 5. 3D-FGAT and 4D-FGAT
# =============================================================================================
@pytest.mark.parametrize("algorithm", ["DRPCG", "DirectSolve"])
@pytest.mark.parametrize("cost_type", ["3D-FGAT", "4D-FGAT"])
def test_fgat_equals_dense_blue_with_identity_linear_model(workdir, lineartoy, cost_type, algorithm):
    """FGAT: innovations along the nonlinear trajectory (W A^k x_b), increment constant in time (G = W).

    4D-FGAT writes its analysis at the window begin, x_b + dx; 3D-FGAT at the window midpoint
    t_m = begin + 3 h, as documented: the background forecast A^3 x_b plus the same increment dx.
    """
    problem = toy_problem(workdir, 31, FOUR_D_OBS, T0)
    cfg = variational("lineartoy", toy_cost(problem, cost_type, T0, model=TOY_MODEL), algorithm,
                      [{"ninner": 60, "gradient norm reduction": 1e-14}], workdir, "fgat")
    cfg["output increment"] = {"filename": str(workdir / "inc.fgat.nc")}
    pyoops.run("variational", cfg)
    g_nl, y, r, valid = dense_4d(problem, exact_steps)
    g_id, *_ = dense_4d(problem, exact_steps, a=np.eye(TOY_N))
    dx_blue = blue_of(problem, g_id, y, r, valid, g_nonlinear=g_nl) - problem["xb"]
    a3 = np.linalg.matrix_power(toy.dense_step_matrix(TOY_N, **TOY_COEF), 3)
    xb_written, date = (a3 @ problem["xb"], iso(T0, 180)) if cost_type == "3D-FGAT" else (problem["xb"], iso(T0))
    xa_blue = xb_written + dx_blue
    xa, written = read_field(workdir / "an.fgat.nc")
    assert written == date
    # The minimizer stops at a relative gradient of 1e-14; 1e-8 of the increment leaves room for its conditioning.
    assert np.linalg.norm(xa - xa_blue) <= 1e-8 * np.linalg.norm(dx_blue), rel(xa, xa_blue)
    inc, inc_date = read_field(workdir / "inc.fgat.nc")
    assert inc_date == date and np.linalg.norm(inc - dx_blue) <= 1e-8 * np.linalg.norm(dx_blue)
    # Not the 4D-Var answer: the linear model is the identity.
    xa_4dvar = blue_of(problem, g_nl, y, r, valid)
    assert rel(xa, xa_4dvar) > 1e-4
    out0 = read_obs(problem["observers"][0]["out"])
    np.testing.assert_allclose(out0["hofx0/x"], (g_nl @ problem["xb"])[:out0["hofx0/x"].size], rtol=0, atol=1e-12)


@pytest.mark.parametrize("algorithm", ["DRPCG", "PCG", "RPCG", "DirectSolve"])
def test_4dfgat_equals_4dvar_with_identity_linear_model(workdir, lineartoy, algorithm):
    problem = toy_problem(workdir, 32, FOUR_D_OBS, T0)
    iterations = [{"ninner": 60, "gradient norm reduction": 1e-14}]
    pyoops.run("variational", variational("lineartoy", toy_cost(problem, "4D-FGAT", T0, model=TOY_MODEL),
                                          algorithm, iterations, workdir, "fgat"))
    identity_tlm = {"name": "LinearToyTLM", "a0": 1.0, "a1": 0.0, "a2": 0.0, "tstep": "PT1H"}
    pyoops.run("variational", variational("lineartoy", toy_cost(problem, "4D-Var", T0, model=TOY_MODEL,
                                                                linear_model=identity_tlm),
                                          algorithm, iterations, workdir, "4dvar"))
    xa_fgat, _ = read_field(workdir / "an.fgat.nc")
    xa_4dvar, _ = read_field(workdir / "an.4dvar.nc")
    assert rel(xa_fgat, xa_4dvar) < 1e-12
    j_fgat = json.loads((workdir / "cost.fgat.json").read_text())["trace"][-1]["J"]
    j_4dvar = json.loads((workdir / "cost.4dvar.json").read_text())["trace"][-1]["J"]
    assert j_fgat == pytest.approx(j_4dvar, rel=1e-12)


@pytest.mark.parametrize("cost_type", ["3D-FGAT", "4D-FGAT"])
def test_fgat_with_all_obs_at_the_midpoint_and_identity_model_equals_3dvar(workdir, lineartoy, cost_type):
    mid = iso(T0, 180)
    problem = toy_problem(workdir, 33, [[(180, 9)]], T0)
    identity_model = {"name": "LinearToy", "a0": 1.0, "a1": 0.0, "a2": 0.0, "tstep": "PT1H"}
    iterations = [{"ninner": 60, "gradient norm reduction": 1e-14}]
    pyoops.run("variational", variational("lineartoy", toy_cost(problem, cost_type, T0, model=identity_model),
                                          "DRPCG", iterations, workdir, "fgat"))
    write_field(workdir / "bg.nc", problem["xb"], mid)  # the same background, valid at the midpoint
    pyoops.run("variational", variational("lineartoy", toy_cost(problem, "3D-Var", mid), "DRPCG", iterations,
                                          workdir, "3dvar"))
    xa_fgat, date = read_field(workdir / "an.fgat.nc")
    xa_3dvar, _ = read_field(workdir / "an.3dvar.nc")
    assert rel(xa_fgat - problem["xb"], xa_3dvar - problem["xb"]) < 1e-12
    assert np.abs(xa_3dvar - problem["xb"]).max() > 1e-2
    assert date == (mid if cost_type == "3D-FGAT" else iso(T0))  # with the identity model, the same fields


# =============================================================================================
# 6. Bad YAML: one clear line, exit status 2
# =============================================================================================
def _bad_run(workdir: Path, capsys: Any, cfg: dict[str, Any]) -> str:
    write_yaml(workdir / "bad.yaml", cfg)
    rc = main(["variational", str(workdir / "bad.yaml")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pyoops: error:")
    return lines[0]


def _toy_4dvar_cfg(workdir: Path) -> dict[str, Any]:
    problem = toy_problem(workdir, 41, [[(60, 3), (360, 3)]], T0)
    return variational("lineartoy", toy_cost(problem, "4D-Var", T0, model=TOY_MODEL, linear_model=TOY_TLM),
                       "DRPCG", [{"ninner": 10}], workdir, "bad")


def test_bad_yaml_reference_config_is_valid(workdir, capsys, lineartoy):
    """The configs the bad-YAML tests break are valid as they stand."""
    write_four_point_obs()
    write_yaml(workdir / "good.yaml", four_point_config("DRPCG"))
    assert main(["variational", str(workdir / "good.yaml"), "--quiet"]) == 0
    write_yaml(workdir / "good4d.yaml", _toy_4dvar_cfg(workdir))
    assert main(["variational", str(workdir / "good4d.yaml"), "--quiet"]) == 0
    capsys.readouterr()


def test_bad_yaml_unknown_cost_type(workdir, capsys):
    write_four_point_obs()
    cfg = four_point_config("DRPCG")
    cfg["cost function"]["cost type"] = "3DVar"
    line = _bad_run(workdir, capsys, cfg)
    assert "cost function.cost type" in line and "3D-Var" in line and "bad.yaml:" in line


def test_bad_yaml_unknown_minimizer_suggests_a_name(workdir, capsys):
    write_four_point_obs()
    cfg = four_point_config("DRPCG")
    cfg["variational"]["minimizer"]["algorithm"] = "DRPGC"
    line = _bad_run(workdir, capsys, cfg)
    assert "variational.minimizer.algorithm" in line and "DRPGC" in line
    assert "did you mean 'DRPCG'" in line


@pytest.mark.parametrize("ninner", [0, -3])
def test_bad_yaml_ninner_not_positive(workdir, capsys, ninner):
    write_four_point_obs()
    cfg = four_point_config("DRPCG")
    cfg["variational"]["iterations"][0]["ninner"] = ninner
    line = _bad_run(workdir, capsys, cfg)
    assert "variational.iterations[0].ninner" in line


def test_bad_yaml_background_outside_the_window(workdir, capsys):
    write_four_point_obs()
    cfg = four_point_config("DRPCG")
    cfg["cost function"]["background"]["date"] = "2010-01-02T06:00:00Z"
    line = _bad_run(workdir, capsys, cfg)
    assert "cost function.background.date" in line and "outside the time window" in line


def test_bad_yaml_3dvar_background_not_at_the_midpoint(workdir, capsys):
    write_four_point_obs()
    cfg = four_point_config("DRPCG")
    cfg["cost function"]["background"]["date"] = "2010-01-01T22:00:00Z"
    line = _bad_run(workdir, capsys, cfg)
    assert "cost function.background.date" in line and "midpoint" in line and "2010-01-02T00:00:00Z" in line


def test_bad_yaml_obs_outside_the_window(workdir, capsys):
    write_obs("late.nc", np.arange(4) / 4, [seconds("2010-01-02T00:00:00Z")] * 3 + [seconds("2010-01-02T04:00:00Z")],
              [5.0, 7.0, -9.0, -5.0], 1.0)
    cfg = four_point_config("DRPCG", obs_file="late.nc")
    line = _bad_run(workdir, capsys, cfg)
    assert "late.nc" in line and "outside the time window" in line


def test_bad_yaml_4dvar_without_linear_model(workdir, capsys, lineartoy):
    cfg = _toy_4dvar_cfg(workdir)
    del cfg["cost function"]["linear model"]
    line = _bad_run(workdir, capsys, cfg)
    assert "cost function" in line and "linear model" in line and "4D-Var" in line


def test_bad_yaml_4dvar_background_not_at_the_window_begin(workdir, capsys, lineartoy):
    cfg = _toy_4dvar_cfg(workdir)
    cfg["cost function"]["background"]["date"] = iso(T0, 60)
    line = _bad_run(workdir, capsys, cfg)
    assert "cost function.background.date" in line and "window begin" in line


def test_bad_yaml_linear_model_time_step_differs_from_the_model(workdir, capsys, lineartoy):
    """H takes one linear-model step per model step: a PT2H linear model under a PT1H model is refused."""
    cfg = _toy_4dvar_cfg(workdir)
    cfg["cost function"]["linear model"]["tstep"] = "PT2H"
    line = _bad_run(workdir, capsys, cfg)
    assert "cost function.linear model" in line and "PT2H" in line and "PT1H" in line
    cfg = _toy_4dvar_cfg(workdir)
    cfg["variational"]["iterations"][0]["linear model"] = {**TOY_TLM, "tstep": "PT30M"}
    line = _bad_run(workdir, capsys, cfg)
    assert "variational.iterations[0].linear model" in line and "PT30M" in line


@pytest.mark.parametrize("algorithm", ["PCG", "PLanczos", "MINRES"])
def test_bad_yaml_square_root_minimizer_without_square_root_of_b(workdir, capsys, algorithm):
    """Implicit diffusion with an odd exponent and a sparse solver has no B^1/2."""
    write_four_point_obs()
    cfg = four_point_config(algorithm)
    cfg["cost function"]["background error"] = {
        "covariance model": "SABER",
        "saber central block": {"saber block name": "diffusion", "length scale": 0.2, "iterations": 1,
                                "solver": "sparse"}}
    line = _bad_run(workdir, capsys, cfg)
    assert "variational.minimizer.algorithm" in line and algorithm in line and "square root" in line
    assert not Path("analysis.nc").exists()


# =============================================================================================
# 7. Online diagnostics
# =============================================================================================
@pytest.mark.parametrize("algorithm,operators", [("DRPCG", {"H", "B", "B^1/2"}), ("PCG", {"H", "B^1/2"}),
                                                 ("RPCG", {"H", "B", "B^1/2"})])
def test_online_adjoint_tests_are_recorded(workdir, lineartoy, algorithm, operators):
    problem = toy_problem(workdir, 51, FOUR_D_OBS, T0)
    iterations = [{"ninner": 30, "gradient norm reduction": 1e-12, "online diagnostics": {"online adj test": True}},
                  {"ninner": 30, "gradient norm reduction": 1e-12}]
    cfg = variational("lineartoy", toy_cost(problem, "4D-Var", T0, model=TOY_MODEL, linear_model=TOY_TLM),
                      algorithm, iterations, workdir, "diag")
    pyoops.run("variational", cfg)
    tests = json.loads((workdir / "cost.diag.json").read_text())["online diagnostics"]
    assert {t["operator"] for t in tests} == operators
    assert all(t["outer iteration"] == 0 for t in tests)  # only the loop that asked
    assert all(t["passed"] is True and t["relative error"] <= t["tolerance"] <= 1e-10 for t in tests)


def test_online_adjoint_test_records_a_wrong_adjoint(workdir, lineartoy):
    problem = toy_problem(workdir, 52, FOUR_D_OBS, T0)
    broken = {**TOY_TLM, "adjoint error": 0.01}
    iterations = [{"ninner": 5, "gradient norm reduction": 1e-3, "online diagnostics": {"online adj test": True}}]
    cfg = variational("lineartoy", toy_cost(problem, "4D-Var", T0, model=TOY_MODEL, linear_model=broken),
                      "DRPCG", iterations, workdir, "broken")
    pyoops.run("variational", cfg)
    tests = json.loads((workdir / "cost.broken.json").read_text())["online diagnostics"]
    h = [t for t in tests if t["operator"] == "H"]
    assert len(h) == 1 and h[0]["passed"] is False and h[0]["relative error"] > 1e-6
    assert [t["passed"] for t in tests if t["operator"] == "B"] == [True]


# =============================================================================================
# 8. 4D-Ens-Var with N - 1 >= n members and no localization equals 4D-Var with B = P_e
# =============================================================================================
@pytest.mark.parametrize("algorithm", ["DRPCG", "RPCG", "DirectSolve"])
def test_4denvar_equals_4dvar_with_the_propagated_ensemble_covariance(workdir, lineartoy, algorithm):
    """With a linear model M and members e_k(t) = M_{t0->t} e_k(t0), the 4-D ensemble covariance
    is M P_e M^T, so 4D-Ens-Var (increments at every sub-window time, no linear model) and
    4D-Var with B = P_e (the sample covariance at t0) minimise the same cost: the analyses agree
    at t0 and the 4D-Ens-Var analysis at t is M_{t0->t} of it."""
    n, nmembers, nsteps = 10, 14, 4
    a = toy.dense_step_matrix(n)
    rng = np.random.default_rng(21)
    times = [iso(T0, 60 * k) for k in range(nsteps + 1)]
    x0 = rng.standard_normal(n)
    members0 = x0 + 0.8 * rng.standard_normal((nmembers, n))
    background0 = x0 + 0.3 * rng.standard_normal(n)
    for k, t in enumerate(times):
        step = np.linalg.matrix_power(a, k)
        write_field(f"bg.{t}.nc", step @ background0, t)
        for m in range(nmembers):
            write_field(f"mem{m + 1}.{t}.nc", step @ members0[m], t)
    positions = rng.random(9)
    obs_times = [seconds(T0, 60 * k) for k in (1, 2, 3, 4, 4, 2, 3, 1, 4)]
    write_obs("obs.nc", positions, obs_times, rng.standard_normal(9), 0.5)
    model = {"name": "LinearToy", "tstep": "PT1H"}
    common = {"time window": {"begin": T0, "length": "PT4H"}, "geometry": {"resol": n},
              "observations": {"observers": [observer("obs", "obs.nc")]}}
    iterations = [{"ninner": 60, "gradient norm reduction": 1e-14}]
    fourdvar = dict(common, **{
        "cost type": "4D-Var", "background": {"date": T0, "filename": f"bg.{T0}.nc"},
        "model": model, "linear model": {"name": "LinearToyTLM", "tstep": "PT1H"},
        "background error": {"covariance model": "SABER",
                             "ensemble": {"members from template": {
                                 "template": {"date": T0, "filename": f"mem%mem%.{T0}.nc"}, "nmembers": nmembers}},
                             "saber central block": {"saber block name": "Ensemble"}}})
    envar = dict(common, **{
        "cost type": "4D-Ens-Var", "subwindow": "PT1H",
        "background": {"states": [{"date": t, "filename": f"bg.{t}.nc"} for t in times]},
        "background error": {"covariance model": "SABER",
                             "ensemble": {"members from template": {
                                 "template": {"states": [{"date": t, "filename": f"mem%mem%.{t}.nc"}
                                                         for t in times]},
                                 "nmembers": nmembers}},
                             "saber central block": {"saber block name": "Ensemble"}}})
    pyoops.run("variational", variational("lineartoy", fourdvar, algorithm, iterations, "out", "4dvar"))
    summary = pyoops.run("variational", dict(variational("lineartoy", envar, algorithm, iterations, "out", "envar"),
                                             output={"filename": "out/an.envar.%date%.nc"},
                                             **{"output increment": {"filename": "out/inc.envar.%date%.nc"}}))
    xa_4dvar, _ = read_field("out/an.4dvar.nc")
    for k, t in enumerate(times):
        xa_t, date = read_field(f"out/an.envar.{t}.nc")
        assert date == t
        expected = np.linalg.matrix_power(a, k) @ xa_4dvar
        assert rel(xa_t - np.linalg.matrix_power(a, k) @ background0,
                   expected - np.linalg.matrix_power(a, k) @ background0) < 1e-8
    assert summary["final J"] < summary["initial J"]


# =============================================================================================
# 9. Online tangent-linear test
# =============================================================================================
@pytest.mark.parametrize(("tlm_a0", "passes"), [(0.7, True), (0.6, False)])
def test_online_tlm_test_detects_a_wrong_linear_model(workdir, lineartoy, tlm_a0, passes):
    """The online TL test compares H(x + a dx) - H(x) with a H' dx; a linear model whose
    coefficients differ from the model's (0.6 instead of 0.7) must fail it."""
    n = 12
    rng = np.random.default_rng(3)
    write_field("bg.nc", rng.standard_normal(n), T0)
    write_obs("obs.nc", rng.random(6), [seconds(T0, 60 * k) for k in (1, 2, 3, 3, 2, 1)], rng.standard_normal(6), 0.5)
    cost = {"cost type": "4D-Var", "time window": {"begin": T0, "length": "PT3H"}, "geometry": {"resol": n},
            "background": {"date": T0, "filename": "bg.nc"},
            "model": {"name": "LinearToy", "tstep": "PT1H"},
            "linear model": {"name": "LinearToyTLM", "tstep": "PT1H", "a0": tlm_a0},
            "background error": covariance(sigma=0.5),
            "observations": {"observers": [observer("obs", "obs.nc")]}}
    config = variational("lineartoy", cost, "DRPCG",
                         [{"ninner": 10, "online diagnostics": {"online tlm test": True}}], "out", "tl")
    pyoops.run("variational", config)
    record = [d for d in json.loads(Path("out/cost.tl.json").read_text())["online diagnostics"]
              if d["operator"].startswith("H (tangent linear")][0]
    assert record["passed"] is passes
    if passes:
        assert record["relative error"] < 1e-8  # the model is linear: finite differences are exact
    else:
        assert record["relative error"] > 1e-2
