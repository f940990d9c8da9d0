"""``pyoops cycle`` with ``output.archive``: the innovation archive of every method."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import pyoops
from pyoops.cli import main
from pyoops.util.random import generator

from .test_cycle import l96_cycle


def archived(method: str, directory: Path, cycles: int = 3, members: int | None = None) -> dict[str, Any]:
    cfg = l96_cycle(method, directory, cycles=cycles, members=members)
    cfg["output"]["archive"] = True
    if method == "4D-Var":
        cfg["cost function"]["linear model"] = {"name": "Lorenz96TLM", "tstep": "PT6H"}
    if method == "4D-EnVar":
        cfg["cycling"]["window length"] = "PT12H"
        cfg["cost function"] = {"cost type": "4D-Ens-Var", "subwindow": "PT6H", "background error": {
            "covariance model": "SABER", "saber central block": {"saber block name": "Ensemble"}}}
    if method == "3D-EnVar":
        cfg["cost function"] = {"background error": {"covariance model": "SABER",
                                                     "saber central block": {"saber block name": "Ensemble"}}}
    if method in ("4D-EnVar", "3D-EnVar"):
        cfg["variational"] = {"minimizer": {"algorithm": "DRPCG"},
                              "iterations": [{"ninner": 20, "gradient norm reduction": 1e-6}]}
    return cfg


def open_group(path: Path, group: str) -> Any:
    import xarray as xr

    return xr.open_dataset(path, group=group)


@pytest.mark.parametrize("method,members", [("3D-Var", None), ("4D-Var", None), ("EDA", 4), ("3D-EnVar", 4),
                                            ("4D-EnVar", 4), ("hybrid", 4), ("EDA-hybrid", 4), ("LETKF", 5),
                                            ("EnKF", 5)])
def test_archive_of_every_method(tmp_path: Path, method: str, members: int | None) -> None:
    cfg = archived(method, tmp_path, members=members)
    summary = pyoops.run("cycle", cfg)
    path = tmp_path / "innovations.nc"
    assert str(path) in summary["outputs"]
    cyc = open_group(path, "Cycle")
    np.testing.assert_array_equal(cyc["cycle"].values, [0, 1, 2])
    p = 40 * (2 if method == "4D-EnVar" else 1)  # 4D-EnVar: 12 h windows, obs every 6 h
    np.testing.assert_array_equal(cyc["nobs"].values, [p] * 3)
    cost = cyc["costAtAnalysis"].values
    if method in ("LETKF", "EnKF"):          # no cost function
        assert np.isnan(cost).all()
    else:                                    # J of the control's analysis
        assert np.isfinite(cost).all() and (cost > 0).all()
    y = open_group(path, "ObsValue")["value"].values
    hxb = open_group(path, "HofXBackground")["value"].values
    hxa = open_group(path, "HofXAnalysis")["value"].values
    var = open_group(path, "BackgroundErrorVariance")["value"].values
    assert y.shape == hxb.shape == hxa.shape == var.shape == (3 * p,)
    assert np.isfinite(hxa).all() and (var > 0).all()
    # The analysis is closer to the observations than the background.
    assert np.mean((y - hxa) ** 2) < np.mean((y - hxb) ** 2)
    if members:
        pert = open_group(path, "EnsembleHofXPerturbations")["value"].values
        assert pert.shape == (3 * p, members)
        np.testing.assert_allclose(pert.sum(axis=1), 0, atol=1e-10)
        if method in ("LETKF", "EnKF"):
            np.testing.assert_allclose(var, (pert ** 2).sum(axis=1) / (members - 1), rtol=1e-12)
    if method == "3D-Var":   # StdDev 0.6 on a correlation: diag(HBH^T) = 0.36 exactly at grid points
        np.testing.assert_allclose(var, 0.36, rtol=1e-9)


def test_archive_departures_computed_independently(tmp_path: Path) -> None:
    """Cycle 0 of a 3D-Var and of a LETKF: y, O-B, diag(HBH^T) and the HX perturbations from first principles."""
    from pyoops.apps import make_application
    from pyoops.config.yaml_io import load_config

    for method, members in (("3D-Var", None), ("LETKF", 6)):
        cfg = archived(method, tmp_path / method, cycles=1, members=members)
        app = make_application("cycle")
        app.validate(load_config(cfg))
        experiment = app.experiment
        initial = experiment.initial_experiment_state()
        pyoops.run("cycle", cfg)
        path = tmp_path / method / "innovations.nc"
        meta = open_group(path, "MetaData")
        y = open_group(path, "ObsValue")["value"].values
        omb = open_group(path, "ombg")["value"].values
        # Identity at the 40 regular locations = the 40 grid points, observed at the analysis time a_0.
        a0 = experiment.analysis_time(0)
        np.testing.assert_array_equal(meta["dateTime"].values.astype("datetime64[s]").astype(np.int64)
                                      if meta["dateTime"].dtype.kind == "M" else meta["dateTime"].values,
                                      round(a0.seconds_since_epoch()))
        truth = experiment.initial_truth()
        experiment.advance_truth(truth, a0, [])
        noise = generator(5, "observations", round(a0.seconds_since_epoch())).standard_normal((1, 40)).ravel()
        np.testing.assert_allclose(y, truth.fields["x"] + 1.0 * noise, rtol=0, atol=1e-12)
        if members is None:
            xb = initial["control"]["x"]
            np.testing.assert_allclose(omb, y - xb, rtol=0, atol=1e-12)
        else:
            xb = initial["members"]["x"]
            np.testing.assert_allclose(omb, y - xb.mean(axis=0), rtol=0, atol=1e-12)
            pert = open_group(path, "EnsembleHofXPerturbations")["value"].values
            np.testing.assert_allclose(pert, (xb - xb.mean(axis=0)).T, rtol=0, atol=1e-12)
            var = open_group(path, "BackgroundErrorVariance")["value"].values
            np.testing.assert_allclose(var, xb.var(axis=0, ddof=1), rtol=1e-12)


def test_randomized_background_variance(tmp_path: Path) -> None:
    """Above 'exact limit', diag(HBH^T) is a K-sample estimate with relative noise sqrt(2/K)."""
    cfg = archived("3D-Var", tmp_path, cycles=2)
    cfg["output"]["background error variance"] = {"exact limit": 0, "samples": 50, "seed": 3}
    pyoops.run("cycle", cfg)
    var = open_group(tmp_path / "innovations.nc", "BackgroundErrorVariance")["value"].values
    ratio = var / 0.36
    assert abs(ratio.mean() - 1) < 0.25
    assert 0.5 * np.sqrt(2 / 50) < ratio.std() < 2 * np.sqrt(2 / 50)
    attrs = open_group(tmp_path / "innovations.nc", "/").attrs
    assert "randomized with 50 samples" in attrs["background_error_variance"]


def test_obs_diagnostics_reads_the_cycle_archive(tmp_path: Path, capsys: Any) -> None:
    cfg = archived("LETKF", tmp_path / "run", cycles=12, members=6)
    cfg["local ensemble DA"] = {"inflation": {"mult": 1.05}}
    pyoops.run("cycle", cfg)
    diag = {"archives": [str(tmp_path / "run" / "innovations.nc")], "skip cycles": 2,
            "bootstrap": {"samples": 50, "seed": 1},
            "output": {"json": {"filename": str(tmp_path / "diag.json")}, "table": True}}
    (tmp_path / "diag.yaml").write_text(yaml.safe_dump(diag))
    assert main(["obs-diagnostics", str(tmp_path / "diag.yaml"), "--quiet"]) == 0
    out = json.loads((tmp_path / "diag.json").read_text())
    assert "LETKF" in json.dumps(out)
    assert "obs-diagnostics" in capsys.readouterr().out


@pytest.mark.parametrize("archived_first", [False, True])
def test_resume_without_archive_is_refused(tmp_path: Path, capsys: Any, archived_first: bool) -> None:
    """Cycles run without the archive cannot be archived later (also after an archived start: no gap)."""
    cfg = l96_cycle("3D-Var", tmp_path / "out", cycles=2)
    if archived_first:
        cfg["output"]["archive"] = True
        pyoops.run("cycle", cfg)
        cfg["output"]["archive"] = False
        cfg["cycling"]["cycles"] = 3
    pyoops.run("cycle", cfg)
    cfg["cycling"]["cycles"] += 1
    cfg["output"]["archive"] = True
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["cycle", str(tmp_path / "c.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "output.archive" in err[0]
