"""End-to-end runs of the covariance applications on Lorenz-96 (small sizes)."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
import yaml

import pyoops
from pyoops.cli import main

BACKGROUND = {"date": "2010-01-01T00:00:00Z", "analytic init": {"method": "sinusoid"}}
B_STATIC = {
    "covariance model": "SABER",
    "saber central block": {"saber block name": "ID"},
    "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": 0.6}}],
}


def base(**extra):
    return {"model plugin": "lorenz96", "geometry": {"resol": 40}, "background": BACKGROUND,
            "background error": B_STATIC, **extra}


def test_dirac_writes_b_times_impulses_and_a_png(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = pyoops.run("dirac", base(dirac={"ixdir": [3, 17]}, **{"output dirac": {"filename": "out/dirac.nc"},
                                                                     "output plot": {"filename": "out/dirac.png"}}))
    with netCDF4.Dataset(tmp_path / "out/dirac.nc") as ds:
        x = np.asarray(ds["x"][:])
    expected = np.zeros(40)
    expected[[3, 17]] = 0.36
    np.testing.assert_allclose(x, expected, rtol=1e-15)
    assert (tmp_path / "out/dirac.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["B max"] == pytest.approx(0.36)


def test_toolbox_randomization_matches_exact_variance(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    k = 2000
    summary = pyoops.run("error-covariance-toolbox", base(**{"block tests": True,
                                                            "randomization": {"size": k, "seed": 3}}))
    tests = summary["block tests"]
    assert all(t["verdict"] in ("passed", "not run") for t in tests.values())
    assert tests["B adjoint"]["verdict"] == "passed" and tests["B adjoint"]["figure"] <= 1e-12
    assert summary["exact variance mean"] == pytest.approx(0.36, rel=1e-14)
    # Pooled over 40 independent points, the mean ratio has std sqrt(2/K/40): 5-sigma bound.
    assert abs(summary["sample variance mean"] / 0.36 - 1) < 5 * np.sqrt(2 / k / 40)
    assert summary["sample/exact variance rms deviation"] == pytest.approx(np.sqrt(2 / k), rel=0.35)


def test_gen_ens_pert_b_is_seeded_and_ens_mean_variance_matches_numpy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gen = base(members=6, seed=9, output={"filename": "ens/mem.%mem%.nc"})
    pyoops.run("gen-ens-pert-b", gen)
    first = [netCDF4.Dataset(tmp_path / f"ens/mem.{k}.nc")["x"][:].copy() for k in range(1, 7)]
    pyoops.run("gen-ens-pert-b", gen)
    again = [netCDF4.Dataset(tmp_path / f"ens/mem.{k}.nc")["x"][:].copy() for k in range(1, 7)]
    np.testing.assert_array_equal(np.array(first), np.array(again))
    assert not np.allclose(first[0], first[1])
    summary = pyoops.run("ens-mean-variance", {
        "model plugin": "lorenz96", "geometry": {"resol": 40}, "date": "2010-01-01T00:00:00Z",
        "ensemble": {"members from template": {"template": {"filename": "ens/mem.%mem%.nc"}, "nmembers": 6}},
        "output mean": {"filename": "mean.nc"}, "output variance": {"filename": "var.nc"}})
    members = np.array(first)
    with netCDF4.Dataset(tmp_path / "mean.nc") as ds:
        np.testing.assert_allclose(ds["x"][:], members.mean(axis=0), rtol=1e-14)
    with netCDF4.Dataset(tmp_path / "var.nc") as ds:
        np.testing.assert_allclose(ds["x"][:], members.var(axis=0, ddof=1), rtol=1e-12)
    assert summary["members"] == 6


def test_cli_bad_covariance_config_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = base(dirac={"ixdir": [1]})
    cfg["background error"] = {"saber central block": {"saber block name": "ID"},
                               "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": 1.0},
                                                       "calibration": {}}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["dirac", "c.yaml", "--validate-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "background error.saber outer blocks[0]: give either 'read' or 'calibration', not both" in err[0]
    assert "c.yaml:" in err[0]
