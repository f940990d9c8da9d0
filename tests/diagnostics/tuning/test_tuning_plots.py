"""Plots of a tuning: the numbers behind them, and ``pyoops tune`` writing them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import pyoops
from pyoops.cli import main
from pyoops.diagnostics.tuning import estimate, plots
from pyoops.diagnostics.tuning.crossval import learning_curve
from pyoops.diagnostics.tuning.pooling import pool
from pyoops.diagnostics.tuning.simulate import (
    ring_network,
    simulate_innovations,
    simulate_regions,
)
from pyoops.testing.linear_gaussian import desroziers_experiment

THETA = {"beta": 0.5, "inflation": 1.2, "a_o": 1.0, "length": 0.15}


def _data(seed: int, cycles: int):
    rng = np.random.default_rng(seed)
    return simulate_innovations(ring_network(rng, cycles, p=20, members=10), THETA, rng)


def _png(path: str | Path) -> None:
    data = Path(path).read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n", path


@pytest.mark.parametrize("seed", [0, 1])
def test_surface_minimum_is_at_the_ml_estimate(seed: int, tmp_path: Path) -> None:
    data = _data(seed, 10)
    res = estimate(data, "ml", ["beta", "inflation", "a_o"], {"length": 0.15})
    s = plots.surface_grid(data, res, points=25)
    assert s.nll.shape == (25, 25) and np.all(np.isfinite(s.nll))
    i, j = s.argmin()
    ci, cj = s.center_index()
    assert abs(i - ci) <= 1 and abs(j - cj) <= 1, (s.argmin(), s.center_index())
    # the grid spans +-3 internal sd of each parameter (inside the bounds) around the estimate
    sd = res.estimates["inflation"].internal_sd
    assert s.y[0] == pytest.approx(s.center[1] - 3 * sd) and s.y[-1] == pytest.approx(s.center[1] + 3 * sd)
    assert s.nll_hat <= np.nanmin(s.nll) + 1e-9           # the ML estimate is below every grid point
    # along inflation (beta at the estimate) +-3 sd is outside the 95 % joint contour (Delta > chi2_2(0.95)/2 = 3.0;
    # quadratic: 4.5 or more); beta's grid is cut at MAX_HALF_WIDTH, so its edges need not be
    assert s.nll[0, cj] - s.nll_hat > 3.0 and s.nll[-1, cj] - s.nll_hat > 3.0
    _png(plots.likelihood_surface(data, res, tmp_path / "s.png", surface=s))


def test_slices_and_profiles_are_minimal_at_the_estimate(tmp_path: Path) -> None:
    data = _data(2, 10)
    res = estimate(data, "ml", ["beta", "inflation", "a_o"], {"length": 0.15})
    slices = plots.likelihood_curves(data, res, kind="slice", points=21)
    prof = plots.likelihood_curves(data, res, kind="profile", points=21)
    for name in res.free:
        s, p = slices[name], prof[name]
        assert np.argmin(s.nll) == 10 and np.argmin(p.nll) == 10            # the middle point is the estimate
        assert np.all(p.nll <= s.nll + 1e-6)                                 # re-minimising can only lower it
    for name in ("inflation", "a_o"):   # identified well enough for the Wald sd to be the profile's: at 2.1 sd
        p = prof[name]                    # Delta near 2.1**2 / 2 = 2.2 (beta's grid is capped at MAX_HALF_WIDTH)
        assert 1.0 < p.nll[17] - p.nll_hat < 4.0 and 1.0 < p.nll[3] - p.nll_hat < 4.0
    assert np.any(prof["a_o"].nll < slices["a_o"].nll - 1e-3)                # correlated with inflation
    _png(plots.profile_plots(data, res, tmp_path / "p.png", curves=prof))


def test_learning_curve_and_shrinkage_plots(tmp_path: Path) -> None:
    data = _data(3, 8)
    pts = learning_curve(data, [2, 4, 8], method="ml", parameters=["beta", "inflation"], fixed={"length": 0.15})
    _png(plots.learning_curve_plot(pts, tmp_path / "l.png"))
    rng = np.random.default_rng(4)
    regions = {f"r{i}": (i / 4, (i + 1) / 4) for i in range(4)}
    dr = simulate_regions(ring_network(rng, 6, members=10, regions=regions), {r: THETA for r in regions}, rng)
    pooled = pool(dr, ("inflation", "a_o"), fixed={"beta": 0.5, "length": 0.15})
    _png(plots.shrinkage_plot(pooled, tmp_path / "h.png"))
    with pytest.raises(ValueError, match="two free parameters"):
        plots.surface_grid(data, estimate(data, "ml", ["inflation"], {"length": 0.15}))


def test_tune_writes_the_plots(tmp_path: Path, capsys: Any) -> None:
    cfg, _ = desroziers_experiment("3D-Var", tmp_path / "twin", model_plugin="lorenz96",
                                   geometry_config={"resol": 40}, cycles=24, misspecified=True)
    pyoops.run("cycle", cfg)
    out = tmp_path / "figs"
    tune = {"model plugin": "lorenz96", "geometry": {"resol": 40},
            "archives": [str(tmp_path / "twin" / "run" / "innovations.nc")],
            "static covariance": cfg["cost function"]["background error"],
            "estimator": {"method": "ml", "parameters": ["a_s", "a_o"]},
            "learning curve": {"sizes": [6, 12, 24]},
            "output": {"json": {"filename": str(tmp_path / "tune.json")}, "plots": {"directory": str(out)},
                       "table": False}}
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(tune))
    assert main(["tune", str(tmp_path / "tune.yaml")]) == 0
    names = ["likelihood_surface.png", "profiles.png", "learning_curve.png"]
    for name in names:
        _png(out / name)
    assert sorted(p.name for p in out.iterdir()) == sorted(names)             # no shrinkage without pooling
    report = json.loads((tmp_path / "tune.json").read_text())
    assert [p["cycles"] for p in report["learning curve"]] == [6, 12, 24]
    assert set(report["learning curve"][0]["estimates"]) == {"a_s", "a_o"}
    summary = pyoops.run("tune", tune)
    assert sorted(Path(p).name for p in summary["outputs"]) == sorted(["tune.json", *names])


def test_tune_refuses_a_learning_curve_longer_than_the_record(tmp_path: Path, capsys: Any) -> None:
    cfg, _ = desroziers_experiment("3D-Var", tmp_path / "twin", model_plugin="lorenz96",
                                   geometry_config={"resol": 40}, cycles=4)
    pyoops.run("cycle", cfg)
    tune = {"model plugin": "lorenz96", "geometry": {"resol": 40},
            "archives": [str(tmp_path / "twin" / "run" / "innovations.nc")],
            "static covariance": cfg["cost function"]["background error"],
            "estimator": {"parameters": ["a_s", "a_o"]}, "learning curve": {"sizes": [2, 50]},
            "output": {"table": False}}
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(tune))
    capsys.readouterr()
    assert main(["tune", str(tmp_path / "tune.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "learning curve" in err and "50" in err
