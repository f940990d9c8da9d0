"""The cycle log ``statistics.nc.log``: per-cycle series out of the checkpoint, truncation on resume
(``checkpoint every`` > 1, torn rows), a checkpoint of constant size, old checkpoints refused in one line."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import pyoops
from pyoops.apps import make_application
from pyoops.cli import main
from pyoops.config.yaml_io import load_config
from pyoops.ensemble.cycle_log import CycleLog, read_cycle_log
from pyoops.ensemble.cycling import STATISTICS, load_checkpoint, save_checkpoint
from pyoops.util.errors import InputFileError

from .test_cycle import l96_cycle

COLUMNS = ["a", "b", "seconds"]


def _rows(n: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, len(COLUMNS)))


def test_cycle_log_resume_truncates_rows_after_the_checkpoint(tmp_path: Path) -> None:
    """Rows appended after the checkpoint, and a torn row, are dropped: the continued log is bytewise the
    uninterrupted one, and the read-only reader sees exactly the checkpoint's rows."""
    rows = _rows(7)
    straight = CycleLog(tmp_path / "straight" / "statistics.nc", COLUMNS)
    for k, row in enumerate(rows):
        straight.append(k, row)
    straight.release()

    log = CycleLog(tmp_path / "killed" / "statistics.nc", COLUMNS)
    for k in range(4):
        log.append(k, rows[k])
    state = log.checkpoint_state()
    assert state["cycles"] == 4
    log.append(4, rows[4])  # after the checkpoint (checkpoint every > 1) ...
    log.release()
    with open(log.path, "ab") as fh:  # ... and a torn write of the next row
        fh.write(b"\x43\x59\x43\x4c\x05")
    series = read_cycle_log(log.filename, state)
    np.testing.assert_array_equal(np.column_stack([series[c] for c in COLUMNS]), rows[:4])

    again = CycleLog(log.filename, COLUMNS)
    series = again.resume(state)
    np.testing.assert_array_equal(np.column_stack([series[c] for c in COLUMNS]), rows[:4])
    for k in range(4, 7):
        again.append(k, rows[k])
    again.release()
    assert log.path.read_bytes() == straight.path.read_bytes()


def test_cycle_log_refuses_another_log(tmp_path: Path) -> None:
    log = CycleLog(tmp_path / "statistics.nc", COLUMNS)
    log.append(0, [1.0, 2.0, 3.0])
    state = log.checkpoint_state()
    log.release()
    with pytest.raises(InputFileError, match="columns"):
        CycleLog(tmp_path / "statistics.nc", ["a", "c", "seconds"]).resume(state)
    with pytest.raises(InputFileError, match="checksum"):
        read_cycle_log(tmp_path / "statistics.nc", {**state, "crc32": state["crc32"] ^ 1})
    with pytest.raises(ValueError, match="cycle 2 appended"):
        CycleLog(tmp_path / "other.nc", COLUMNS).append(2, [1.0, 2.0, 3.0])


def _run_until(cfg: dict[str, Any], fail_at: int) -> None:
    """Run ``cfg`` in process and fail inside cycle ``fail_at`` (a crash after the rows of the cycles before it)."""
    app = make_application("cycle")
    app.validate(load_config(cfg))
    experiment = app.experiment
    run_cycle = experiment.run_cycle

    def failing(k: int, *args: Any) -> Any:
        if k == fail_at:
            raise KeyboardInterrupt("killed")
        return run_cycle(k, *args)

    experiment.run_cycle = failing
    with pytest.raises(KeyboardInterrupt):
        experiment.run(Path(cfg["output"]["directory"]), show_progress=False)


@pytest.mark.parametrize("adaptive", [False, True])
def test_checkpoint_every_k_resumes_bitwise(tmp_path: Path, adaptive: bool) -> None:
    """``checkpoint every: 4``, a crash in cycle 6: the log holds rows 0-5, the checkpoint 4 cycles; the resumed
    run drops rows 4-5, recomputes them and ends bitwise equal to an uninterrupted run (statistics, adaptive.nc
    series; ``seconds`` is a wall time, not reproducible)."""
    cfg = l96_cycle("LETKF", tmp_path / "killed", cycles=10, members=6)
    cfg["cycling"]["checkpoint every"] = 4
    cfg["local ensemble DA"] = {"inflation": {"mult": 1.05}}
    if adaptive:
        cfg["adaptive"] = {"inflation": {"scheme": "likelihood", "spatial": "global"},
                           "obs error": {"scheme": "likelihood"}}
        cfg["local ensemble DA"] = {}
    _run_until(cfg, fail_at=6)
    ckpt = tmp_path / "killed" / "checkpoint.npz"
    assert load_checkpoint(ckpt)["cycle"] == 4
    assert len(load_checkpoint(ckpt)["stats"]["analysis rmse"]) == 4
    resumed = pyoops.run("cycle", cfg)["experiment"]
    straight = copy.deepcopy(cfg)
    straight["output"]["directory"] = str(tmp_path / "straight")
    ref = pyoops.run("cycle", straight)["experiment"]
    for name in STATISTICS:
        assert len(resumed.stats[name]) == 10
        np.testing.assert_array_equal(resumed.stats[name], ref.stats[name], err_msg=name)
    assert len(resumed.seconds) == 10
    reread = load_checkpoint(ckpt)
    for name in STATISTICS:
        np.testing.assert_array_equal(reread["stats"][name], ref.stats[name], err_msg=name)
    if adaptive:
        import netCDF4

        with netCDF4.Dataset(tmp_path / "killed" / "adaptive.nc") as a, \
                netCDF4.Dataset(tmp_path / "straight" / "adaptive.nc") as b:
            assert a.dimensions["cycle"].size == 10
            for var in b.variables:
                np.testing.assert_array_equal(a[var][:], b[var][:], err_msg=var)


@pytest.mark.parametrize("adaptive", [False, True])
def test_wall_time_checkpoints_keep_the_cycles_before_a_failure(tmp_path: Path, monkeypatch: Any,
                                                                adaptive: bool) -> None:
    """The default checkpoint policy (by wall time; here an hour, so never due by time): the checkpoint is
    written after the first cycle and after the last only, yet a cycle that fails (cycle 6) leaves the
    checkpoint of the 6 cycles before it, the one writing after every cycle gives, from which the run resumes
    bitwise."""
    import pyoops.ensemble.cycling as cycling

    written: list[int] = []
    real = cycling.write_checkpoint

    def counted(filename: Any, arrays: dict[str, np.ndarray]) -> None:
        written.append(json.loads(bytes(arrays["meta"]).decode())["cycle"])
        real(filename, arrays)

    monkeypatch.setattr(cycling, "write_checkpoint", counted)
    cfg = l96_cycle("LETKF", tmp_path / "killed", cycles=10, members=6)
    cfg["cycling"]["checkpoint seconds"] = 3600
    cfg["local ensemble DA"] = {"inflation": {"mult": 1.05}}
    if adaptive:
        cfg["adaptive"] = {"inflation": {"scheme": "likelihood", "spatial": "global"}}
        cfg["local ensemble DA"] = {}
    _run_until(cfg, fail_at=6)
    assert written == [1, 6]
    ckpt = tmp_path / "killed" / "checkpoint.npz"
    every = copy.deepcopy(cfg)
    every["cycling"]["checkpoint seconds"] = 0
    every["output"]["directory"] = str(tmp_path / "every")
    _run_until(every, fail_at=6)
    assert written[2:] == [1, 2, 3, 4, 5, 6]
    with np.load(ckpt) as a, np.load(tmp_path / "every" / "checkpoint.npz") as b:
        assert a.files == b.files
        for key in a.files:
            if key == "meta":         # the same but for the cycle log's checksum (its 'seconds' are wall times)
                meta_a, meta_b = (json.loads(bytes(m["meta"]).decode()) for m in (a, b))
                for meta in (meta_a, meta_b):
                    meta["statistics log"].pop("crc32")
                assert meta_a == meta_b
            else:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    del written[:]
    resumed = pyoops.run("cycle", cfg)["experiment"]
    assert written == [7, 10]                                  # the first cycle of this run, and the last
    straight = copy.deepcopy(cfg)
    straight["output"]["directory"] = str(tmp_path / "straight")
    ref = pyoops.run("cycle", straight)["experiment"]
    for name in STATISTICS:
        np.testing.assert_array_equal(resumed.stats[name], ref.stats[name], err_msg=name)


def test_checkpoint_holds_no_series(tmp_path: Path) -> None:
    """The checkpoint holds the current state only: its arrays are the same after 2 and after 8 cycles."""
    cfg = l96_cycle("LETKF", tmp_path / "out", cycles=8, members=4)
    cfg["adaptive"] = {"inflation": {"scheme": "likelihood", "spatial": "global"}}
    app = make_application("cycle")
    app.validate(load_config(cfg))
    ckpt = tmp_path / "out" / "checkpoint.npz"

    def arrays() -> dict[str, tuple[int, ...]]:
        with np.load(ckpt) as data:
            return {k: data[k].shape for k in data.files if k != "meta"}

    app.experiment.run(tmp_path / "out", stop_after=2, show_progress=False)
    early = arrays()
    assert not any(k.startswith(("stats/", "adaptive/series/")) or k == "seconds" for k in early)
    state = app.experiment.run(tmp_path / "out", show_progress=False)
    assert arrays() == early
    assert len(state["stats"]["analysis rmse"]) == len(app.experiment.adaptation.series["inflation mean"]) == 8
    assert (tmp_path / "out" / "statistics.nc.log").exists()


def test_old_or_orphaned_checkpoint_is_one_line(tmp_path: Path, capsys: Any) -> None:
    """A version-1 checkpoint, and a checkpoint whose cycle log is gone, fail with one line."""
    cfg = l96_cycle("LETKF", tmp_path / "out", cycles=3, members=4)
    config = tmp_path / "cycle.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["cycle", str(config), "--quiet"]) == 0
    ckpt = tmp_path / "out" / "checkpoint.npz"
    log = tmp_path / "out" / "statistics.nc.log"
    cfg["cycling"]["cycles"] = 4
    config.write_text(yaml.safe_dump(cfg))

    log.rename(log.with_suffix(".moved"))
    capsys.readouterr()
    assert main(["cycle", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "statistics.nc.log" in err[0] and "missing" in err[0], err
    log.with_suffix(".moved").rename(log)

    state = load_checkpoint(ckpt)
    with np.load(ckpt) as data:
        arrays = {k: np.array(data[k]) for k in data.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    meta["version"] = 1
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(ckpt, **arrays)
    assert main(["cycle", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint version 1, expected 2" in err[0], err

    save_checkpoint(ckpt, state, meta["digest"])  # the current version resumes and extends the run
    assert main(["cycle", str(config), "--quiet"]) == 0
    assert load_checkpoint(ckpt)["cycle"] == 4
