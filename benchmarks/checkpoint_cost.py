"""Benchmark: the per-cycle checkpoint cost of ``pyoops cycle`` at cycle 200 and at cycle 20,000.

The state is that of the Lorenz-96 LETKF of :doc:`benchmarks` (n = 40, N = 20 members, no control,
truth run, ``checkpoint every: 1``), built synthetically instead of running 20,000 cycles: the truth
and the members are random fields of the right shapes and the per-cycle statistics (the six
``STATISTICS`` and ``seconds``) are random numbers, ``c`` rows of them for "cycle c".

What is timed, per cycle, is the bookkeeping a cycle does after its analysis and forecast, exactly as
``CycleExperiment.run`` does it with ``checkpoint every: 1``:

* this version (with :mod:`pyoops.ensemble.cycle_log`): append the cycle's row to the in-memory
  lists and to the cycle log ``statistics.nc.log`` (one write and a flush), take the log's
  ``checkpoint_state()`` and write ``checkpoint.npz`` with ``save_checkpoint`` (atomically, renamed
  into place);
* an older version (run with ``PYTHONPATH`` on a checkout of it; detected by the missing module):
  append the row to the lists and write ``checkpoint.npz`` with ``save_checkpoint``, which holds the
  whole history of the statistics.

For each start cycle ``c`` (``--at``, default 200 and 20000) the state of cycle ``c`` is built
(for this version the log is filled with ``c`` rows first, untimed), then ``--cycles`` further
cycles (default 300) are timed one by one with ``time.perf_counter``; the median per cycle is
reported, and the ratio of the last start cycle's median to the first's.  Versions (Python,
NumPy, pyoops) and load averages before and after are printed; the same machine runs both versions.

Usage::

    python benchmarks/checkpoint_cost.py [--at 200 20000] [--cycles 300] [--directory DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import pyoops
from pyoops.ensemble.cycling import STATISTICS, save_checkpoint

try:
    from pyoops.ensemble.cycle_log import CycleLog
except ImportError:  # a version before the cycle log: the statistics are in the checkpoint
    CycleLog = None  # type: ignore[assignment,misc]

N_GRID, N_MEMBERS = 40, 20
DIGEST = "0" * 64


def initial_state(rng: np.random.Generator, cycles: int) -> dict[str, Any]:
    """The state after ``cycles`` cycles (random fields and statistics of the right shapes)."""
    return {"cycle": cycles, "truth": {"x": rng.standard_normal(N_GRID)}, "truth time": "2010-03-01T00:00:00Z",
            "control": None, "members": {"x": rng.standard_normal((N_MEMBERS, N_GRID))},
            "stats": {name: list(rng.random(cycles)) for name in STATISTICS}, "seconds": list(rng.random(cycles)),
            "adaptive": None, "innovations": None, "member archive": None}


def measure(directory: Path, start: int, cycles: int) -> list[float]:
    """Seconds of the per-cycle bookkeeping of ``cycles`` cycles from cycle ``start``."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    rng = np.random.default_rng(start)
    state = initial_state(rng, start)
    ckpt = directory / "checkpoint.npz"
    log = None
    if CycleLog is not None:
        log = CycleLog(directory / "statistics.nc", [*STATISTICS, "seconds"])
        for k in range(start):  # the rows of the cycles already done (untimed)
            log.append(k, [state["stats"][name][k] for name in STATISTICS] + [state["seconds"][k]])
    times = []
    for k in range(start, start + cycles):
        row = list(rng.random(len(STATISTICS) + 1))
        state["members"] = {"x": rng.standard_normal((N_MEMBERS, N_GRID))}
        t0 = time.perf_counter()
        for name, value in zip(STATISTICS, row):
            state["stats"][name].append(value)
        state["seconds"].append(row[-1])
        if log is not None:
            log.append(k, row)
            state["statistics log"] = log.checkpoint_state()
        state["cycle"] = k + 1
        save_checkpoint(ckpt, state, DIGEST)
        times.append(time.perf_counter() - t0)
    if log is not None:
        log.release()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", type=int, nargs="+", default=[200, 20000], help="start cycles")
    parser.add_argument("--cycles", type=int, default=300, help="timed cycles per start cycle")
    parser.add_argument("--directory", type=Path, default=None, help="scratch directory (default: a temporary one)")
    args = parser.parse_args()
    scratch = args.directory or Path(tempfile.mkdtemp(prefix="pyoops-ckpt-"))
    load_before = os.getloadavg()
    print(f"Python {platform.python_version()}, NumPy {np.__version__}, pyoops {pyoops.__version__} "
          f"({Path(pyoops.__file__).parent}), {'cycle log' if CycleLog is not None else 'statistics in checkpoint'}")
    print(f"{'cycle':>8} {'median ms/cycle':>16} {'p10 ms':>8} {'p90 ms':>8} {'checkpoint bytes':>17}")
    medians = []
    for start in args.at:
        times = np.array(measure(scratch / f"at{start}", start, args.cycles)) * 1e3
        size = (scratch / f"at{start}" / "checkpoint.npz").stat().st_size
        medians.append(statistics.median(times))
        print(f"{start:>8} {medians[-1]:>16.3f} {np.percentile(times, 10):>8.3f} {np.percentile(times, 90):>8.3f} "
              f"{size:>17}")
    print(f"ratio cycle {args.at[-1]} / cycle {args.at[0]}: {medians[-1] / medians[0]:.2f}")
    print(f"load average before {load_before}, after {os.getloadavg()}")
    if args.directory is None:
        shutil.rmtree(scratch, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
