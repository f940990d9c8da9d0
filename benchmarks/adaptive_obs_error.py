"""Benchmark: online R tuning recovers a factor-2 error in sigma_o (issue acceptance, docs/adaptive.rst).

Lorenz-96 twin of ``pyoops cycle`` (n = 40, every variable observed every 6 h with the true
R = I, perfect model), ETKF N = 20 (``LETKF`` without localization) with the fixed prior
inflation 1.04 that suits the true R, and the analysis starting with sigma_o wrong by a factor 2
(``adaptive.obs error.initial: 4``: the analysis uses 4 R).  For each scheme (``likelihood``,
``desroziers``, memory 100) it prints sqrt(a_o) at cycles 100, 200, 500 and the last, its mean
over the cycles after ``--spin-up``, and the time-mean analysis RMSE; the target is
|sqrt(a_o) - 1| < 0.1.  Also with the inflation estimated at the same time (``likelihood``
inflation and R together, memory 100 each).

Usage::

    python benchmarks/adaptive_obs_error.py [--cycles 1000] [--spin-up 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
from pathlib import Path

import netCDF4
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "ensemble"))

from test_cycle import l96_cycle  # noqa: E402  (the Lorenz-96 cycle configuration of the tests)

import pyoops  # noqa: E402

OUT = HERE / "output" / "adaptive_obs_error"


def run(scheme: str, cycles: int, spin_up: int, with_inflation: bool) -> dict:
    directory = OUT / f"{scheme}{'-inflation' if with_inflation else ''}"
    shutil.rmtree(directory, ignore_errors=True)
    cfg = l96_cycle("LETKF", directory, cycles=cycles, members=20)
    cfg["cycling"]["spin-up cycles"] = spin_up
    cfg["adaptive"] = {"obs error": {"scheme": scheme, "initial": 4.0, "memory": 100}}
    if with_inflation:
        # equal memories: the cycle refuses a likelihood R that adapts faster than a global likelihood inflation
        cfg["adaptive"]["inflation"] = {"scheme": "likelihood", "memory": 100}
    else:
        cfg["local ensemble DA"] = {"inflation": {"mult": 1.04}}
    summary = pyoops.run("cycle", cfg)
    with netCDF4.Dataset(directory / "adaptive.nc") as ds:
        factor = np.sqrt(np.asarray(ds["obs_error_amplitude_x"][:]))
    marks = [k for k in (100, 200, 500) if k < cycles] + [cycles]
    return {"at": {k: float(factor[k - 1]) for k in marks}, "mean": float(np.mean(factor[spin_up:])),
            "rmse": summary["mean analysis rmse"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--spin-up", type=int, default=200)
    args = ap.parse_args()
    rows = []
    for scheme, with_inflation in (("likelihood", False), ("desroziers", False), ("likelihood", True)):
        r = run(scheme, args.cycles, args.spin_up, with_inflation)
        name = scheme + (" + likelihood inflation" if with_inflation else " (inflation 1.04)")
        rows.append((name, r))
        at = ", ".join(f"{k}: {v:.3f}" for k, v in r["at"].items())
        print(f"{name:40s} sqrt(a_o) {at}; mean after {args.spin_up}: {r['mean']:.3f}; RMSE {r['rmse']:.4f}",
              flush=True)
    print(f"python {platform.python_version()}, numpy {np.__version__}, load {os.getloadavg()}")


if __name__ == "__main__":
    main()
