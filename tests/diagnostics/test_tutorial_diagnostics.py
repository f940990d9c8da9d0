"""The tutorial "reading the diagnostics" (docs/tutorials/lorenz96_diagnostics.rst) end to end at a small size:
its YAML files and make_given_obs.py, as run.sh runs them, with fewer cycles, so that the tutorial cannot rot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import yaml

from pyoops.cli import main

TUTORIAL = Path(__file__).resolve().parents[2] / "tutorials" / "lorenz96" / "diagnostics"
CYCLES, SKIP = 24, 4
RUNS = ["reference", "misspecified", "r2_only", "b_half_only"]


def make_given_obs():
    spec = importlib.util.spec_from_file_location("make_given_obs", TUTORIAL / "make_given_obs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_copy(name: str, workdir: Path) -> str:
    """The tutorial's YAML file with fewer cycles (and fewer bootstrap samples), in the working directory."""
    cfg = yaml.safe_load((TUTORIAL / name).read_text(encoding="utf-8"))
    if "cycling" in cfg:
        cfg["cycling"].update({"cycles": CYCLES, "spin-up cycles": SKIP, "checkpoint every": 5})
    else:
        cfg["skip cycles"] = SKIP
        cfg["bootstrap"]["samples"] = 50
    (workdir / name).write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return name


def test_tutorial_runs_and_shows_both_misspecifications_in_the_archive(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    run_sh = (TUTORIAL / "run.sh").read_text(encoding="utf-8")
    for name in [f"pyoops cycle {run}.yaml" for run in RUNS] + ["make_given_obs.py", "summary.py",
                                                                "for run in " + " ".join(RUNS), "diag_$run.yaml"]:
        assert name in run_sh, name
    assert main(["cycle", small_copy("reference.yaml", tmp_path), "--quiet"]) == 0
    make_given_obs().main(tmp_path / "out" / "reference" / "innovations.nc", tmp_path / "out" / "given" / "obs.nc")
    for run in RUNS[1:]:
        assert main(["cycle", small_copy(f"{run}.yaml", tmp_path), "--quiet"]) == 0
    for run in RUNS:
        assert main(["obs-diagnostics", small_copy(f"diag_{run}.yaml", tmp_path)]) == 0
    table = capsys.readouterr().out
    assert table.count("sigma_o^2 ratio") == 4 and "obs group=l96" in table

    with netCDF4.Dataset("out/reference/innovations.nc") as a, netCDF4.Dataset("out/misspecified/innovations.nc") as b:
        assert a.dimensions["Location"].size == b.dimensions["Location"].size == 40 * CYCLES
        # The same observations; the assumed sigma_o sqrt(2) times, the assumed HBH^T half.
        np.testing.assert_array_equal(b["ObsValue/value"][:], a["ObsValue/value"][:])
        np.testing.assert_array_equal(b["MetaData/dateTime"][:], a["MetaData/dateTime"][:])
        np.testing.assert_allclose(b["ObsError/value"][:], np.sqrt(2.0) * a["ObsError/value"][:], rtol=1e-15)
        np.testing.assert_allclose(b["BackgroundErrorVariance/value"][:],
                                   0.5 * a["BackgroundErrorVariance/value"][:], rtol=1e-12)
        np.testing.assert_allclose(a["ObsError/value"][:], 1.0)
        np.testing.assert_allclose(a["BackgroundErrorVariance/value"][:], 0.36, rtol=1e-12)

    reports = {run: json.loads(Path(f"out/{run}/obs_diagnostics.json").read_text())["subsets"][0] for run in RUNS}
    for whole in reports.values():
        assert whole["cycles"] == CYCLES - SKIP
    # Assuming more variance than there is lowers the ratios (data / assumed) below the reference's.
    ratio = {run: whole["obs error variance ratio"]["value"] for run, whole in reports.items()}
    assert ratio["misspecified"] < ratio["reference"]
    # R x 2 alone and B x 0.5 alone give the same gain, hence the same analyses and Desroziers estimates; the
    # ratios differ by the factor 2 of the assumed variances (the tutorial's point).
    for name in ("obs error variance", "background error variance", "O-B rms", "O-A rms"):
        value = reports["r2_only"][name]["value"] if isinstance(reports["r2_only"][name], dict) else reports["r2_only"][name]
        other = reports["b_half_only"][name]
        other = other["value"] if isinstance(other, dict) else other
        assert value == pytest.approx(other, rel=1e-12), name
    assert ratio["r2_only"] == pytest.approx(ratio["b_half_only"] / 2, rel=1e-12)

    spec = importlib.util.spec_from_file_location("summary", TUTORIAL / "summary.py")
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    summary.main(tmp_path)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[2:]] == RUNS
