"""``pyoops cycle``: cycled twin experiments, restart (SIGKILL mid-run), methods, bad configurations."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import pyoops
from pyoops.cli import main
from pyoops.ensemble.cycling import STATISTICS, load_checkpoint

START = "2010-01-01T00:00:00Z"


def l96_cycle(method: str, directory: Path, cycles: int = 20, members: int | None = None, **extra: Any
              ) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "model plugin": "lorenz96",
        "geometry": {"resol": 40},
        "model": {"name": "Lorenz96", "tstep": "PT6H"},
        "truth": {"initial condition": {"date": START, "analytic init": {"method": "random", "seed": 3}},
                  "spin-up": "P20D"},
        "observations": {"obs frequency": "PT6H", "obs density": 40, "obs error": 1.0, "seed": 5},
        "cycling": {"method": method, "cycles": cycles, "window length": "PT6H", "spin-up cycles": 5, "seed": 1},
        "output": {"directory": str(directory), "plots": False},
    }
    if members:
        cfg["cycling"]["members"] = members
    static = {"covariance model": "SABER",
              "saber central block": {"saber block name": "spectral correlation", "length scale": 0.02},
              "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": 0.6}}]}
    if method in ("3D-Var", "4D-Var", "EDA"):
        cfg["cost function"] = {"background error": static}
    if method in ("hybrid", "EDA-hybrid"):
        cfg["cost function"] = {"background error": {"covariance model": "SABER", "saber central block": {
            "saber block name": "Hybrid", "components": [
                {"covariance": {k: v for k, v in static.items() if k != "covariance model"}, "weight": {"value": 0.5}},
                {"covariance": {"saber central block": {"saber block name": "Ensemble"}}, "weight": {"value": 0.5}}]}}}
    if "cost function" in cfg:
        cfg["variational"] = {"minimizer": {"algorithm": "DRPCG"},
                              "iterations": [{"ninner": 20, "gradient norm reduction": 1e-6}]}
    for key, value in extra.items():
        cfg[key] = value
    return cfg


def stats_of(state: Any) -> dict[str, np.ndarray]:
    stats = state.stats if hasattr(state, "stats") else state["stats"]
    return {k: np.asarray(v) for k, v in stats.items()}


# Methods ---------------------------------------------------------------------------------------
def test_3dvar_cycle_writes_statistics_and_plots(tmp_path: Path) -> None:
    cfg = l96_cycle("3D-Var", tmp_path / "out", cycles=15)
    cfg["output"]["plots"] = True
    summary = pyoops.run("cycle", cfg)
    out = tmp_path / "out"
    for name in ("checkpoint.npz", "statistics.nc", "statistics.json", "rmse.png"):
        assert (out / name).exists(), name
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["cycles"] == 15 and stats["spin-up cycles"] == 5
    # Observations of every variable with error 1: the analysis beats the observations and the forecast.
    assert stats["time means"]["analysis rmse"] < 0.7
    assert stats["time means"]["analysis rmse"] < stats["time means"]["forecast rmse"]
    assert summary["mean analysis rmse"] == pytest.approx(stats["time means"]["analysis rmse"])
    import netCDF4

    with netCDF4.Dataset(out / "statistics.nc") as ds:
        assert ds.dimensions["cycle"].size == 15
        np.testing.assert_array_equal(ds["analysis_rmse"][:], stats_of(summary["experiment"])["analysis rmse"])


def test_a_run_shorter_than_its_spin_up_writes_its_plots(tmp_path: Path) -> None:
    """3 cycles with 5 spin-up cycles and plots (an ensemble, so the spread-error plot is asked for): the run
    ends normally with rmse.png and no spread-error plot (no cycle after the spin-up to scatter), and no time
    means (it used to stop with a traceback in the plot)."""
    cfg = l96_cycle("LETKF", tmp_path / "out", cycles=3, members=5)
    cfg["output"]["plots"] = True
    summary = pyoops.run("cycle", cfg)
    out = tmp_path / "out"
    assert (out / "rmse.png").exists() and not (out / "spread_error.png").exists()
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["cycles"] == 3 and stats["spin-up cycles"] == 3 and stats["time means"] == {}
    assert summary["cycles"] == 3


def test_letkf_cycle_is_stable_with_localization(tmp_path: Path) -> None:
    cfg = l96_cycle("LETKF", tmp_path, cycles=60, members=10)
    cfg["observations"]["obs localizations"] = [{"localization method": "Gaspari-Cohn", "lengthscale": 0.364}]
    cfg["local ensemble DA"] = {"inflation": {"mult": 1.04}}
    s = pyoops.run("cycle", cfg)
    assert s["mean analysis rmse"] < 0.4
    assert 0.5 < s["mean analysis spread"] / s["mean analysis rmse"] < 2.0


def test_4dvar_and_4denvar_cycles(tmp_path: Path) -> None:
    cfg = l96_cycle("4D-Var", tmp_path / "4dvar", cycles=6)
    cfg["cycling"]["window length"] = "P1D"
    cfg["cycling"]["spin-up cycles"] = 1
    cfg["cost function"]["linear model"] = {"name": "Lorenz96TLM", "tstep": "PT6H"}
    s = pyoops.run("cycle", cfg)
    assert s["mean analysis rmse"] < 0.6
    cfg = l96_cycle("hybrid", tmp_path / "4denvar", cycles=6, members=6)
    cfg["cycling"]["method"] = "4D-EnVar"
    cfg["cycling"]["window length"] = "PT12H"
    cfg["cycling"]["spin-up cycles"] = 1
    cfg["cost function"]["cost type"] = "4D-Ens-Var"
    cfg["cost function"]["subwindow"] = "PT6H"
    s = pyoops.run("cycle", cfg)
    state = s["experiment"]
    assert state.members["x"].shape == (6, 40)
    assert np.all(np.isfinite(stats_of(state)["analysis rmse"]))


def test_enkf_equals_eda_with_pure_ensemble_b(tmp_path: Path) -> None:
    """The closed-form stochastic EnKF is the limit of an EDA of 3D-Vars with B = P_e (same perturbations)."""
    enkf = l96_cycle("EnKF", tmp_path / "enkf", cycles=3, members=5)
    enkf["eda"] = {"seed": 4}
    eda = l96_cycle("3D-EnVar", tmp_path / "eda", cycles=3, members=5)
    eda["cost function"] = {"background error": {"covariance model": "SABER",
                                                 "saber central block": {"saber block name": "Ensemble"}}}
    eda["variational"] = {"minimizer": {"algorithm": "DRPCG"},
                          "iterations": [{"ninner": 40, "gradient norm reduction": 1e-13}]}
    eda["eda"] = {"seed": 4, "control member": False}
    a = pyoops.run("cycle", enkf)["experiment"]
    b = pyoops.run("cycle", eda)["experiment"]
    np.testing.assert_allclose(a.members["x"], b.members["x"], rtol=0, atol=1e-8)


# Restart ---------------------------------------------------------------------------------------
def _cycles_done(ckpt: Path) -> int:
    try:
        with np.load(ckpt) as data:
            return int(json.loads(bytes(data["meta"]).decode())["cycle"])
    except (OSError, ValueError, KeyError, EOFError):
        return 0


def killed_and_straight(cfg: dict[str, Any], tmp_path: Path, at: int, sig: int = signal.SIGKILL,
                        settle: float = 0.0, past: bool = False) -> tuple[dict[str, Any], Any]:
    """Run ``cfg`` (output directory ``tmp_path/killed``) as a process, SIGKILL it once ``at`` cycles are
    checkpointed, resume it in-process to the end; run it uninterrupted in ``tmp_path/straight``.  Returns the
    resumed checkpoint and the uninterrupted run's experiment state.  Without a checkpoint setting in ``cfg``
    the run checkpoints after every cycle (``checkpoint seconds: 0``).  ``sig``: the signal (SIGTERM: the run
    stops cleanly, exit status 143); ``settle``: seconds to wait after ``at`` cycles before sending it;
    ``past``: the checkpoint left must hold more than ``at`` cycles."""
    total = cfg["cycling"]["cycles"]
    cfg = copy.deepcopy(cfg)
    if "checkpoint every" not in cfg["cycling"]:
        cfg["cycling"].setdefault("checkpoint seconds", 0)
    cfg["output"]["directory"] = str(tmp_path / "killed")
    config = tmp_path / "cycle.yaml"
    config.write_text(yaml.safe_dump(cfg))
    ckpt = tmp_path / "killed" / "checkpoint.npz"
    proc = subprocess.Popen([sys.executable, "-m", "pyoops.cli", "cycle", str(config), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _cycles_done(ckpt) < at and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        time.sleep(settle)
        proc.send_signal(sig)
    finally:
        proc.wait()
    done = _cycles_done(ckpt)
    assert at <= done < total, f"the run was not killed mid-way ({done} cycles done)"
    assert done > at or not past, f"the checkpoint holds {done} cycles"
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + sig), proc.stderr.read()
    assert main(["cycle", str(config), "--quiet"]) == 0                 # resumes
    resumed = load_checkpoint(ckpt)
    assert resumed["cycle"] == total
    straight = copy.deepcopy(cfg)
    straight["output"]["directory"] = str(tmp_path / "straight")
    ref = pyoops.run("cycle", straight)["experiment"]
    for name in STATISTICS:
        a, b = np.asarray(resumed["stats"][name]), np.asarray(ref.stats[name])
        assert a.shape == (total,)
        np.testing.assert_array_equal(a, b, err_msg=name)
    for group in ("control", "members"):
        if getattr(ref, group) is not None:
            np.testing.assert_array_equal(resumed[group]["x"], getattr(ref, group)["x"], err_msg=group)
    return resumed, ref


@pytest.mark.parametrize("seconds,at", [(0, 20), (1.0, 1)])
def test_killed_run_resumes_bitwise(tmp_path: Path, seconds: float, at: int) -> None:
    """SIGKILL a cycling run after some cycles; resuming gives bitwise the statistics and the innovation
    archive of an uninterrupted run.  ``checkpoint seconds: 0``: a checkpoint after every cycle, killed after
    20; the default 1 s: killed after the checkpoint of the first cycle, the cycles run after it are lost and
    recomputed."""
    cfg = l96_cycle("LETKF", tmp_path / "killed", cycles=150, members=10)
    cfg["local ensemble DA"] = {"inflation": {"mult": 1.04}}
    cfg["output"]["archive"] = True
    cfg["cycling"]["checkpoint seconds"] = seconds
    resumed, ref = killed_and_straight(cfg, tmp_path, at)

    np.testing.assert_array_equal(resumed["truth"]["x"], ref.truth["x"])
    archive = (tmp_path / "killed" / "innovations.nc").read_bytes()
    assert archive == (tmp_path / "straight" / "innovations.nc").read_bytes()


def test_terminated_run_keeps_its_last_cycle_and_resumes_bitwise(tmp_path: Path) -> None:
    """SIGTERM (a batch system's time limit) stops a run cleanly: with the default checkpoint policy (by wall
    time, here never due by time) the checkpoint of the last completed cycle is written on the way out (more
    than the first cycle's), the exit status is 143, and the resumed run ends bitwise as an uninterrupted one."""
    cfg = l96_cycle("LETKF", tmp_path / "killed", cycles=600, members=10)
    cfg["local ensemble DA"] = {"inflation": {"mult": 1.04}}
    cfg["cycling"]["checkpoint seconds"] = 3600
    killed_and_straight(cfg, tmp_path, 1, sig=signal.SIGTERM, settle=0.2, past=True)
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.npz")["cycle"] == 600   # resumed to the end


def test_eda_hybrid_restart_in_process(tmp_path: Path) -> None:
    """Stop an EDA-hybrid after 3 cycles, resume to 6: equal to 6 uninterrupted cycles (members, control, stats,
    innovation archive)."""
    cfg = l96_cycle("EDA-hybrid", tmp_path / "a", cycles=6, members=4)
    cfg["eda"] = {"seed": 9, "inflation": {"rtps": 0.5}}
    cfg["output"]["archive"] = True
    from pyoops.apps import make_application
    from pyoops.config.yaml_io import load_config

    app = make_application("cycle")
    params = app.validate(load_config(cfg))
    app.experiment.run(tmp_path / "a", stop_after=3)
    assert load_checkpoint(tmp_path / "a" / "checkpoint.npz")["cycle"] == 3
    resumed = pyoops.run("cycle", cfg)["experiment"]
    cfg_b = copy.deepcopy(cfg)
    cfg_b["output"]["directory"] = str(tmp_path / "b")
    ref = pyoops.run("cycle", cfg_b)["experiment"]
    assert resumed.cycle == ref.cycle == 6
    for name in STATISTICS:
        np.testing.assert_array_equal(resumed.stats[name], ref.stats[name], err_msg=name)
    np.testing.assert_array_equal(resumed.members["x"], ref.members["x"])
    np.testing.assert_array_equal(resumed.control["x"], ref.control["x"])
    assert (tmp_path / "a" / "innovations.nc").read_bytes() == (tmp_path / "b" / "innovations.nc").read_bytes()
    del params


def test_checkpoint_of_another_configuration_is_refused(tmp_path: Path, capsys: Any) -> None:
    cfg = l96_cycle("LETKF", tmp_path / "out", cycles=3, members=4)
    pyoops.run("cycle", cfg)
    cfg["observations"]["obs error"] = 0.5
    config = tmp_path / "other.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["cycle", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different configuration" in err[0]
    cfg["resume"] = False
    config.write_text(yaml.safe_dump(cfg))
    assert main(["cycle", str(config), "--quiet"]) == 0


# Bad configurations: one clear line each ------------------------------------------------------
def _one_line_error(tmp_path: Path, capsys: Any, cfg: dict[str, Any]) -> str:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["cycle", str(config), "--validate-only"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_cycle_configs(tmp_path: Path, capsys: Any) -> None:
    cfg = l96_cycle("LETKF", tmp_path, members=10)
    cfg["local ensemble DA"] = {"inflation": {"mult": 0.9}}
    assert "inflation must be >= 1" in _one_line_error(tmp_path, capsys, cfg)

    cfg = l96_cycle("LETKF", tmp_path, members=10)
    cfg["observations"]["obs localizations"] = [{"lengthscale": 0.0}]
    assert "lengthscale must be a positive" in _one_line_error(tmp_path, capsys, cfg)

    cfg = l96_cycle("LETKF", tmp_path, members=1)
    assert "at least 2 members" in _one_line_error(tmp_path, capsys, cfg)

    cfg = l96_cycle("EDA", tmp_path, members=4)
    cfg["eda"] = {"obs error inflation": 0.5}
    assert "must be >= 1" in _one_line_error(tmp_path, capsys, cfg)

    cfg = l96_cycle("3D-Var", tmp_path, members=4)
    assert "deterministic" in _one_line_error(tmp_path, capsys, cfg)

    cfg = l96_cycle("hybrid", tmp_path, members=4)
    cfg["cycling"]["method"] = "3D-Var"
    cfg["cycling"].pop("members")
    assert "has no ensemble" in _one_line_error(tmp_path, capsys, cfg)

    cfg = l96_cycle("3D-Var", tmp_path)
    cfg["cycling"]["window length"] = "PT5H"
    assert "window length" in _one_line_error(tmp_path, capsys, cfg)

    cfg = l96_cycle("3D-Var", tmp_path)
    cfg["cost function"]["background"] = {"date": START, "filename": "x.nc"}
    assert "set by the cycling" in _one_line_error(tmp_path, capsys, cfg)
