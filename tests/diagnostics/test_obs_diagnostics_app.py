"""``pyoops obs-diagnostics`` end to end, from YAML, on small archives of the linear toy (see conftest)."""

from __future__ import annotations

import json
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import yaml

import pyoops
from pyoops.cli import main
from pyoops.diagnostics.statistics import innovation_statistics

CYCLES, SKIP = 400, 20


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def archive(workdir, toy):
    """400 cycles of the toy with R assumed x2 and B x0.5, and 6 (uninformative) ensemble perturbations."""
    sim = toy.simulate(seed=11, cycles=CYCLES, b_factor=0.5, r_factor=2.0)
    rng = np.random.default_rng(12)
    pert = rng.standard_normal((sim["obs_value"].size, 6)) * np.sqrt(sim["background_error_variance"])[:, None]
    pert -= pert.mean(axis=1, keepdims=True)
    toy.write_archive(workdir / "run" / "innovations.nc", sim, members=6, perturbations=pert)
    return sim


def write_yaml(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)


def config(**overrides):
    base = {"archives": ["run/innovations.nc"], "group by": ["obs group"], "skip cycles": SKIP,
            "bootstrap": {"samples": 300, "seed": 3},
            "output": {"json": {"filename": "diag/report.json"}, "plots": {"directory": "diag"}}}
    base.update(overrides)
    return base


def test_end_to_end(workdir, archive, capsys):
    code = main(["obs-diagnostics", write_yaml(workdir / "diag.yaml", config())])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads((workdir / "diag" / "report.json").read_text())
    for name in ("timeseries.png", "ratios.png", "rank_histograms.png"):
        assert (workdir / "diag" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [s["name"] for s in report["subsets"]] == ["all", "obs group=east", "obs group=west"]
    assert report["cycles"]["count"] == CYCLES - SKIP and report["cycles"]["skipped"] == SKIP
    assert report["observations"] == (CYCLES - SKIP) * 10 and report["members"] == 6
    everything = report["subsets"][0]
    # The numbers are those of the statistics module on the same observations.
    keep = archive["cycle"] >= SKIP
    direct = innovation_statistics(*(archive[k][keep] for k in (
        "obs_value", "obs_error", "hofx_background", "hofx_analysis", "background_error_variance", "cycle")),
        samples=0)
    for key in ("chi2", "obs error variance ratio", "background error variance ratio", "O-B mean"):
        assert everything[key]["value"] == pytest.approx(direct[key].value, rel=1e-12)
        assert everything[key]["analytic interval"] == pytest.approx(list(direct[key].analytic), rel=1e-9)
    # R assumed too large, B too small: detected with the default (bootstrap) intervals.
    assert everything["obs error variance ratio"]["interval"][1] < 1.0
    assert everything["background error variance ratio"]["interval"][0] > 1.0
    assert report["2J/p"]["interval"][1] < 1.0
    assert len(everything["rank histogram"]["counts"]) == 7
    assert len(everything["series"]["O-B rms"]) == CYCLES - SKIP
    east = report["subsets"][1]
    assert east["count"] == (CYCLES - SKIP) * 5 and east["labels"] == {"obs group": "east"}
    # The table and the summary.
    assert "sigma_o^2 ratio" in out and "obs group=west" in out and "2J(x_a)/p" in out
    assert "outputs: diag/report.json" in out


def test_time_blocks_regions_and_analytic_intervals(workdir, archive):
    summary = pyoops.run("obs-diagnostics", config(**{
        "group by": ["time block", "region"], "time block length": "P25D", "interval": "analytic",
        "bootstrap": {"samples": 0}, "output": {"json": {"filename": "report.json"}, "table": False}}))
    report = json.loads((workdir / "report.json").read_text())
    names = [s["name"] for s in report["subsets"]][1:]
    # 380 cycles of 6 hours from 2010-01-06T00Z: 95 days, blocks of 25 days.
    assert names == [f"time block={d}T00:00:00Z, region=(none)" for d in
                     ("2010-01-06", "2010-01-31", "2010-02-25", "2010-03-22")]
    assert sum(s["count"] for s in report["subsets"][1:]) == report["observations"]
    assert report["subsets"][0]["chi2"]["bootstrap interval"] is None
    assert report["subsets"][0]["chi2"]["interval"] == report["subsets"][0]["chi2"]["analytic interval"]
    assert summary["subsets"] == 5 and summary["outputs"] == ["report.json"]


def test_validate_only_needs_no_model_plugin(workdir, archive, capsys):
    code = main(["obs-diagnostics", write_yaml(workdir / "diag.yaml", config()), "--validate-only"])
    assert code == 0 and "valid obs-diagnostics configuration" in capsys.readouterr().out
    assert not (workdir / "diag").exists()


def _bad_copy(workdir: Path) -> Path:
    bad = workdir / "run" / "bad.nc"
    bad.write_bytes((workdir / "run" / "innovations.nc").read_bytes())
    with netCDF4.Dataset(bad, "a") as ds:
        ds.renameGroup("BackgroundErrorVariance", "Something")
    return bad


@pytest.mark.parametrize("case", ["missing group", "missing file", "other geometry"])
def test_bad_archive_exits_2_with_one_line(workdir, archive, toy, capsys, case):
    if case == "missing group":
        name, expected = str(_bad_copy(workdir).relative_to(workdir)), "has no group BackgroundErrorVariance"
    elif case == "missing file":
        name, expected = "run/nothing.nc", "innovation archive not found"
    else:
        sim = toy.simulate(seed=1, cycles=5)
        toy.write_archive(workdir / "run" / "other.nc", sim, first_cycle=1000, geometry={"type": "toy", "n": 40})
        name, expected = "run/other.nc", "geometry"
    code = main(["obs-diagnostics", write_yaml(workdir / "diag.yaml", config(
        archives=["run/innovations.nc", {"filename": name}]))])
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and expected in lines[0], err
    assert "no output was written" in lines[0]
    assert not (workdir / "diag").exists()


def test_configuration_errors(workdir, archive, capsys):
    code = main(["obs-diagnostics", write_yaml(workdir / "diag.yaml", config(**{"skip cycles": CYCLES}))])
    err = capsys.readouterr().err
    assert code == 2 and "skip cycles: skips all 400 cycles" in err and "diag.yaml:" in err
    code = main(["obs-diagnostics", write_yaml(workdir / "diag.yaml", config(**{"group by": ["time block"]}))])
    assert code == 2 and "time block length" in capsys.readouterr().err
    code = main(["obs-diagnostics", write_yaml(workdir / "diag.yaml", config(
        output={"json": {"filename": "run/innovations.nc"}}))])
    assert code == 2 and "would replace the input" in capsys.readouterr().err
    assert (workdir / "run" / "innovations.nc").stat().st_size > 0
