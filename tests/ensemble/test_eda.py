"""``pyoops eda`` and the EDA functions: control = variational, perturbations, spread–skill, bad inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import pyoops
from pyoops.cli import main
from pyoops.ensemble.eda import covariance_needs_ensemble, eda_stream, perturbed_obs_enkf_analysis

DATE = "2010-01-02T00:00:00Z"
NMEM = 4


def _spun_up_state(seed: int = 0, steps: int = 500) -> np.ndarray:
    from pyoops_lorenz96.model import rk4_step

    x = 8.0 + np.random.default_rng(seed).standard_normal(40)
    for _ in range(steps):
        x = rk4_step(x, 8.0, 0.05)
    return x


@pytest.fixture(scope="module")
def eda_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Truth, control background, 4 member backgrounds and observations of every grid point (error 1)."""
    from pyoops.generic.obs_space import ObsSpace, ObsSpaceParameters
    from pyoops.util.datetime import TimeWindow
    from pyoops_lorenz96 import Lorenz96Geometry, Lorenz96State
    from pyoops.fields.fieldset import FieldSet

    d = tmp_path_factory.mktemp("eda")
    geometry = Lorenz96Geometry({"resol": 40})
    rng = np.random.default_rng(42)
    truth = _spun_up_state()
    Lorenz96State(geometry, FieldSet({"x": truth + 0.5 * rng.standard_normal(40)}), DATE).write(str(d / "bg.nc"))
    for k in range(1, NMEM + 1):
        Lorenz96State(geometry, FieldSet({"x": truth + 0.5 * rng.standard_normal(40)}), DATE).write(
            str(d / f"ens.{k}.nc"))
    window = TimeWindow("2010-01-01T21:00:00Z", "PT6H")
    gen = {"name": "grid", "simulated variables": ["x"],
           "generate": {"begin": "PT3H", "obs frequency": "PT6H", "obs density": 40, "obs error": 1.0}}
    space = ObsSpace(ObsSpaceParameters.model_validate(gen), window, geometry)
    space.put_db("ObsValue", "x", truth + rng.standard_normal(40))
    space.save(str(d / "obs.nc"))
    small = Lorenz96Geometry({"resol": 20})
    for k in (1, 2):
        Lorenz96State(small, FieldSet({"x": truth[::2]}), DATE).write(str(d / f"small.{k}.nc"))
    return {"dir": d, "truth": truth}


def _eda_config(d: Path, members: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "model plugin": "lorenz96",
        "cost function": {
            "cost type": "3D-Var",
            "time window": {"begin": "2010-01-01T21:00:00Z", "length": "PT6H"},
            "geometry": {"resol": 40},
            "background": {"date": DATE, "filename": str(d / "bg.nc")},
            "background error": {"covariance model": "SABER", "saber central block": {
                "saber block name": "Hybrid", "components": [
                    {"covariance": {"saber central block": {"saber block name": "spectral correlation",
                                                            "length scale": 0.03},
                                    "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": 0.5}}]},
                     "weight": {"value": 0.5}},
                    {"covariance": {"saber central block": {"saber block name": "Ensemble"}},
                     "weight": {"value": 0.5}}]}},
            "observations": {"observers": [{
                "obs space": {"name": "grid", "simulated variables": ["x"],
                              "obsdatain": {"filename": str(d / "obs.nc")}},
                "obs operator": {"name": "Identity"}}]},
        },
        "variational": {"minimizer": {"algorithm": "DRPCG"},
                        "iterations": [{"ninner": 40, "gradient norm reduction": 1e-10}]},
        "members": members or {"members from template": {
            "template": {"date": DATE, "filename": str(d / "ens.%mem%.nc")}, "pattern": "%mem%", "nmembers": NMEM}},
        "eda": {"seed": 7},
        "output": {"filename": str(d / "out" / "an.%mem%.nc")},
        "output control": {"filename": str(d / "out" / "an.control.nc")},
        "output mean": {"filename": str(d / "out" / "an.mean.nc")},
        "output spread": {"filename": str(d / "out" / "an.spread.nc")},
    }
    cfg.update(extra)
    return cfg


def _read(path: Path) -> np.ndarray:
    import netCDF4

    with netCDF4.Dataset(path) as ds:
        return np.asarray(ds["x"][:])


def test_control_member_is_the_unperturbed_variational_analysis(eda_files: dict[str, Any]) -> None:
    d = eda_files["dir"]
    cfg = _eda_config(d)
    summary = pyoops.run("eda", cfg)
    assert summary["members"] == NMEM and summary["control member"]
    for k in range(1, NMEM + 1):
        assert (d / "out" / f"an.{k}.nc").exists()
    # The same cost function through 'pyoops variational' with the members as its ensemble file list.
    var = {"model plugin": "lorenz96", "cost function": cfg["cost function"], "variational": cfg["variational"],
           "output": {"filename": str(d / "var.nc")}}
    var["cost function"] = dict(cfg["cost function"])
    var["cost function"]["background error"] = {**cfg["cost function"]["background error"],
                                                "ensemble": cfg["members"]}
    pyoops.run("variational", var)
    np.testing.assert_array_equal(_read(d / "out" / "an.control.nc"), _read(d / "var.nc"))
    # The perturbed members differ from each other and from their backgrounds.
    members = np.stack([_read(d / "out" / f"an.{k}.nc") for k in range(1, NMEM + 1)])
    assert np.all(np.std(members, axis=0) > 0)
    assert not np.array_equal(members[0], _read(d / "ens.1.nc"))
    np.testing.assert_allclose(_read(d / "out" / "an.mean.nc"), members.mean(axis=0), rtol=1e-14)


def test_perturbations_are_seeded_per_member_and_engine_independent(eda_files: dict[str, Any]) -> None:
    d = eda_files["dir"]
    serial = pyoops.run("eda", _eda_config(d, output=None, **{"output control": None, "output mean": None,
                                                              "output spread": None}))["analyses"]
    procs = pyoops.run("eda", _eda_config(d, parallel={"engine": "processes", "workers": 2}, output=None,
                                          **{"output control": None, "output mean": None,
                                             "output spread": None}))["analyses"]
    for k in range(NMEM + 1):
        np.testing.assert_array_equal(serial[k][0]["x"], procs[k][0]["x"])
    # Member 2's draw is generator(seed, "eda", 2) whatever else is drawn.
    a = eda_stream(7, 2).standard_normal(5)
    eda_stream(7, 1).standard_normal(100)
    np.testing.assert_array_equal(a, eda_stream(7, 2).standard_normal(5))
    other = pyoops.run("eda", _eda_config(d, eda={"seed": 8}, output=None, **{
        "output control": None, "output mean": None, "output spread": None}))["analyses"]
    np.testing.assert_array_equal(other[0][0]["x"], serial[0][0]["x"])        # control: unperturbed
    assert not np.array_equal(other[1][0]["x"], serial[1][0]["x"])


def test_perturbed_obs_enkf_matches_the_gain_form() -> None:
    rng = np.random.default_rng(3)
    n, nx = 6, 12
    xb = rng.standard_normal((n, nx))
    h = rng.standard_normal((8, nx))
    hx = xb @ h.T
    y, var, eps = rng.standard_normal(8), rng.uniform(0.5, 2, 8), rng.standard_normal((n, 8))
    xa = perturbed_obs_enkf_analysis({"x": xb}, hx, y, var, eps)["x"]
    xp, yp = (xb - xb.mean(0)).T / np.sqrt(n - 1), (hx - hx.mean(0)).T / np.sqrt(n - 1)
    gain = xp @ yp.T @ np.linalg.inv(yp @ yp.T + np.diag(var))
    np.testing.assert_allclose(xa, xb + (y + eps - hx) @ gain.T, rtol=1e-12, atol=1e-12)


def test_covariance_needs_ensemble() -> None:
    assert covariance_needs_ensemble({"saber central block": {"saber block name": "Ensemble"}})
    assert not covariance_needs_ensemble({"ensemble": {"filename": "e.nc"},
                                          "saber central block": {"saber block name": "Ensemble"}})
    assert not covariance_needs_ensemble({"saber central block": {"saber block name": "ID"}})


def test_eda_spread_matches_the_error_of_the_ensemble_mean(tmp_path: Path) -> None:
    """Spread–skill of a cycled EDA with correctly specified R.

    Setup: Lorenz-96 (n = 40, F = 8, PT6H steps), every variable observed every step with
    error 1 (R = I, the error the observations are made with), 6 perturbed 3D-Var members
    (no control), static B = 0.02 B_clim (the sample covariance of a free run, applied
    through the ``explicit covariance`` block), perfect model, no inflation; 80 cycles,
    time means over cycles 21-80.  The time-mean analysis spread must equal the
    time-mean RMSE of the ensemble-mean analysis to within 20%.
    """
    from pyoops.saber.generic.explicit import write_matrix
    from pyoops_lorenz96.model import rk4_step

    x = _spun_up_state(1)
    xs = []
    for _ in range(5000):
        x = rk4_step(x, 8.0, 0.05)
        xs.append(x)
    write_matrix(str(tmp_path / "b.nc"), 0.02 * np.cov(np.array(xs).T))
    cfg = {
        "model plugin": "lorenz96", "geometry": {"resol": 40}, "model": {"name": "Lorenz96", "tstep": "PT6H"},
        "truth": {"initial condition": {"date": "2010-01-01T00:00:00Z",
                                        "analytic init": {"method": "random", "seed": 3}}, "spin-up": "P25D"},
        "observations": {"obs frequency": "PT6H", "obs density": 40, "obs error": 1.0, "seed": 5},
        "cycling": {"method": "EDA", "members": 6, "cycles": 80, "window length": "PT6H", "spin-up cycles": 20,
                    "seed": 1},
        "cost function": {"background error": {"covariance model": "SABER", "saber central block": {
            "saber block name": "explicit covariance", "read": {"filename": str(tmp_path / "b.nc")}}}},
        "variational": {"minimizer": {"algorithm": "DRPCG"},
                        "iterations": [{"ninner": 20, "gradient norm reduction": 1e-4}]},
        "eda": {"seed": 2, "control member": False},
        "output": {"directory": str(tmp_path / "out"), "plots": False},
    }
    s = pyoops.run("cycle", cfg)
    ratio = s["mean analysis spread"] / s["mean analysis mean rmse"]
    assert 0.8 <= ratio <= 1.2, (s["mean analysis spread"], s["mean analysis mean rmse"])
    assert s["mean analysis mean rmse"] < 0.6


# Bad inputs: one clear line each ---------------------------------------------------------------
def _one_line(tmp_path: Path, capsys: Any, cfg: dict[str, Any], validate_only: bool = True) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    argv = ["eda", str(path)] + (["--validate-only"] if validate_only else [])
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_eda_configs(eda_files: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    d = eda_files["dir"]
    one = {"members from template": {"template": {"date": DATE, "filename": str(d / "ens.%mem%.nc")},
                                     "pattern": "%mem%", "nmembers": 1}}
    assert "at least 2 members" in _one_line(tmp_path, capsys, _eda_config(d, members=one))
    small = {"members from template": {"template": {"date": DATE, "filename": str(d / "small.%mem%.nc")},
                                       "pattern": "%mem%", "nmembers": 2}}
    assert "different geometry" in _one_line(tmp_path, capsys, _eda_config(d, members=small), validate_only=False)
    assert "must be >= 1" in _one_line(tmp_path, capsys, _eda_config(d, eda={"obs error inflation": 0.9}))
    assert ">= 1" in _one_line(tmp_path, capsys, _eda_config(d, eda={"inflation": {"mult": 0.9}}))
    assert "%mem%" in _one_line(tmp_path, capsys, _eda_config(d, output={"filename": str(d / "x.nc")}))


def test_eda_writes_the_innovation_archive(eda_files: dict[str, Any], tmp_path: Path) -> None:
    """``output archive``: the control's O-B and J(x_a), diag(HBH^T) of the hybrid B, the members' perturbations."""
    import xarray as xr

    d = eda_files["dir"]
    cfg = _eda_config(d, **{"output archive": {"filename": str(tmp_path / "innovations.nc")}})
    cfg["output"] = {"filename": str(tmp_path / "an.%mem%.nc")}
    for key in ("output control", "output mean", "output spread"):
        del cfg[key]
    pyoops.run("eda", cfg)
    path = tmp_path / "innovations.nc"

    def group(name: str) -> np.ndarray:
        return xr.open_dataset(path, group=name)["value"].values

    xb = _read(d / "bg.nc")
    members = np.stack([_read(d / f"ens.{k}.nc") for k in range(1, NMEM + 1)])
    y = group("ObsValue")
    np.testing.assert_allclose(group("ombg"), y - xb, atol=1e-12)        # Identity at the 40 grid points
    np.testing.assert_allclose(group("EnsembleHofXPerturbations"), (members - members.mean(axis=0)).T, atol=1e-12)
    # Hybrid B = 0.5 * 0.25 C + 0.5 * localized P_e: its diagonal at grid points (no localization block here).
    expected = 0.5 * 0.25 + 0.5 * members.var(axis=0, ddof=1)
    np.testing.assert_allclose(group("BackgroundErrorVariance"), expected, rtol=1e-8)
    cost = xr.open_dataset(path, group="Cycle")["costAtAnalysis"].values
    assert cost.shape == (1,) and np.isfinite(cost).all()


def test_setup_observers_stay_in_the_process() -> None:
    """EDASetup.observers (the caller's built observers, serial engine) are not pickled to worker processes."""
    import pickle

    from pyoops.ensemble.eda import EDASetup

    setup = EDASetup("lorenz96", {}, {}, observers=[object()])
    copy = pickle.loads(pickle.dumps(setup))
    assert copy.observers is None and setup.observers is not None
    assert copy.run_token == setup.run_token and copy.model_plugin == "lorenz96"
