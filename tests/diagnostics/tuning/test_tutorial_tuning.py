"""The tuning tutorial's loop (tutorials/lorenz96/tuning/tune_loop.py) runs, on a few cycles."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[3] / "tutorials" / "lorenz96" / "tuning" / "tune_loop.py"


def test_tune_loop_feeds_each_round_the_previous_estimates(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("tune_loop", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(rounds=2, cycles=120, out=tmp_path, quiet=True)
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[0]["beta"] == 0.9 and rows[0]["lambda"] == 1.0
    assert rows[1]["beta"] == rows[0]["tuned beta"] and rows[1]["lambda"] == rows[0]["tuned lambda"]
    assert all(np.isfinite([r["analysis rmse"], r["tuned beta"], r["tuned lambda"]]).all() for r in rows)
    assert 0 < rows[0]["tuned beta"] < 1 and rows[0]["tuned lambda"] > 0
    assert (tmp_path / "tuned0.yaml").exists() and (tmp_path / "tune_loop.json").exists()
