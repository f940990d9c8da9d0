"""Benchmark: the cost of the innovation archive (``output.archive``) of ``pyoops cycle``.

Runs the Lorenz-96 ETKF (LETKF without localization, N = 20 members, multiplicative
inflation 1.02, n = 40, all 40 variables observed every PT6H with sigma_o = 1, i.e. 40
observations per cycle) for ``--cycles`` cycles (default 2200), end to end through
``pyoops.run("cycle", cfg)``, without (A) and with (B) ``output: {archive: true}``,
alternating A B A B ... for ``--pairs`` pairs (default 3), each run in a fresh output
directory and with ``checkpoint every: 1``.

The time of a run is the wall-clock time of the ``pyoops.run`` call: configuration
validation, truth spin-up and truth run, observation generation, the analyses and
ensemble forecasts, the checkpoint after every cycle, statistics.nc/statistics.json, and
for B the archive (members' H(x_a), the append-only log, the netCDF assembly at the end).
No plots. The imports and one short warm-up run are done before the timings.

Prints the two times and their ratio B/A per pair, the median ratio, and the versions
(Python, NumPy, pyoops) and load averages (``os.getloadavg()``) before and after.

Usage::

    python benchmarks/innovation_archive.py [--cycles 2200] [--pairs 3] [--directory DIR]
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


def config(directory: Path, cycles: int, archive: bool) -> dict[str, Any]:
    return {
        "model plugin": "lorenz96",
        "geometry": {"resol": 40},
        "model": {"name": "Lorenz96", "tstep": "PT6H"},
        "truth": {"initial condition": {"date": "2010-01-01T00:00:00Z",
                                        "analytic init": {"method": "random", "seed": 3}},
                  "spin-up": "P20D"},
        "observations": {"obs frequency": "PT6H", "obs density": 40, "obs error": 1.0, "seed": 5},
        "cycling": {"method": "LETKF", "members": 20, "cycles": cycles, "window length": "PT6H",
                    "spin-up cycles": min(200, cycles // 2), "seed": 1, "checkpoint every": 1},
        "local ensemble DA": {"inflation": {"mult": 1.02}},
        "output": {"directory": str(directory), "plots": False, "archive": archive},
        "resume": False,
    }


def timed_run(directory: Path, cycles: int, archive: bool) -> float:
    if directory.exists():
        shutil.rmtree(directory)
    cfg = config(directory, cycles, archive)
    t0 = time.perf_counter()
    pyoops.run("cycle", cfg)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2200)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--directory", default=None, help="Scratch directory (default: a temporary one).")
    args = parser.parse_args(argv)
    base = Path(args.directory) if args.directory else Path(tempfile.mkdtemp(prefix="pyoops_archive_bench_"))
    print(f"python {platform.python_version()}, numpy {np.__version__}, pyoops {pyoops.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} cpus")
    print("load average before: %.2f %.2f %.2f" % os.getloadavg())
    timed_run(base / "warmup", 20, True)
    ratios = []
    print(f"ETKF N=20, L96 n=40, 40 obs/cycle, {args.cycles} cycles, checkpoint every cycle")
    print(f"{'pair':>4}  {'A: no archive [s]':>18}  {'B: archive [s]':>15}  {'B/A':>6}")
    for pair in range(1, args.pairs + 1):
        a = timed_run(base / f"a{pair}", args.cycles, False)
        b = timed_run(base / f"b{pair}", args.cycles, True)
        ratios.append(b / a)
        print(f"{pair:>4}  {a:>18.2f}  {b:>15.2f}  {b / a:>6.3f}", flush=True)
    print(f"median B/A: {statistics.median(ratios):.3f}")
    print("load average after: %.2f %.2f %.2f" % os.getloadavg())
    if not args.directory:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
