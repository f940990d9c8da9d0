"""Benchmark: Desroziers diagnostics on a linear-Gaussian twin, every method, correct and mis-specified.

The twin (:mod:`pyoops.testing.linear_gaussian`): a random-walk truth on the Lorenz-96
grid (n = 40), every point observed with sigma_o = 1, assimilated with the persistence
model, where the steady-state Kalman filter is known exactly (a Riccati equation).
3D-Var and 4D-Var (two observation times per 6-hour window) use a correlated model noise
Q and B = P_f; LETKF (N = 48, no localization) and EDA-hybrid (N = 20, beta = 0.5,
diagonal localization) a white Q, for which multiplicative inflation carries the steady
state exactly.  "Mis-specified" = the system assumes R x 2 and B x 0.5 (for the
ensembles: the inflation that holds the ensemble variance at P_f / 2).

For each run: ``pyoops cycle`` on the files (``--cycles``, default 2000), then the
diagnostics of ``pyoops obs-diagnostics`` (moving-block bootstrap, 1000 resamples, seed 1,
95 %): the ratios data / assumed of sigma_o^2 and diag(HBH^T), chi^2 and 2J(x_a)/p, each with
its exact steady-state expectation (``exp.``; for EDA-hybrid that of its static B, which its
sampled ensemble matches in mean only).  Prints a
table and writes ``benchmarks/output/desroziers_twin/results.json``.

Usage::

    python benchmarks/desroziers_twin.py [--cycles 2000] [--only 3D-Var ...] [--confidence 0.95]

No assertion: a benchmark exits 0; tests/diagnostics/test_desroziers_twin.py checks the
same experiments on fewer cycles.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import pyoops
from pyoops.diagnostics.archive import read_archive
from pyoops.diagnostics.report import DiagnosticsSettings, diagnose
from pyoops.testing.linear_gaussian import EXPERIMENT_METHODS, desroziers_experiment

HERE = Path(__file__).resolve().parent
OUT = HERE / "output" / "desroziers_twin"
STATS = ("obs error variance ratio", "background error variance ratio", "chi2")


def run(method: str, misspecified: bool, cycles: int, confidence: float) -> dict:
    directory = OUT / f"{method}-{'misspecified' if misspecified else 'correct'}"
    cfg, expected = desroziers_experiment(method, directory, model_plugin="lorenz96",
                                          geometry_config={"resol": 40}, cycles=cycles, misspecified=misspecified)
    t0 = time.perf_counter()
    summary = pyoops.run("cycle", cfg)
    seconds = time.perf_counter() - t0
    data = read_archive(Path(cfg["output"]["directory"]) / "innovations.nc")
    report = diagnose(data, DiagnosticsSettings(level=confidence, samples=1000, bootstrap_seed=1))
    whole = report["subsets"][0]
    out = {"method": method, "misspecified": misspecified, "cycles": cycles, "cycle seconds": seconds,
           "analysis rmse": summary["mean analysis rmse"]}
    for key in STATS:
        out[key] = {"value": whole[key]["value"], "interval": whole[key]["interval"], "expected": expected[key]}
    out["2J/p"] = report["2J/p"] and {"value": report["2J/p"]["value"], "interval": report["2J/p"]["interval"],
                                      "expected": expected["2J/p"]}
    return out


def fmt(entry: dict | None) -> str:
    if not entry or entry["value"] is None:
        return "—"
    lo, hi = entry["interval"]
    return f"{entry['value']:.3f} [{lo:.3f}, {hi:.3f}] (exp. {entry['expected']:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--only", nargs="*", default=list(EXPERIMENT_METHODS))
    parser.add_argument("--confidence", type=float, default=0.95)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for method in args.only:
        for mis in (False, True):
            rows.append(run(method, mis, args.cycles, args.confidence))
            r = rows[-1]
            print(f"{method:10s} {'R x 2, B x 0.5' if mis else 'correct':14s} sigma_o^2 {fmt(r[STATS[0]])}  "
                  f"HBH^T {fmt(r[STATS[1]])}  chi2 {fmt(r['chi2'])}  2J/p {fmt(r['2J/p'])}  "
                  f"({r['cycle seconds']:.0f} s)", flush=True)
    meta = {"python": platform.python_version(), "numpy": np.__version__, "pyoops": pyoops.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(), "load average at end": os.getloadavg(),
            "confidence": args.confidence, "bootstrap": {"samples": 1000, "seed": 1}}
    (OUT / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
