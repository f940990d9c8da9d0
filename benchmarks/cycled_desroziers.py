"""Benchmark: the cycled Desroziers fixed point recovers R x 2 and B x 0.5 on the linear-Gaussian twin.

Each run is ``pyoops cycle`` on the twin of :mod:`pyoops.testing.linear_gaussian` (3D-Var, or
4D-Var with two observation times per window; B = s_b P_f, R = s_o I), diagnosed by the
Desroziers ratios of its innovation archive; :func:`pyoops.diagnostics.tuning.cycled.cycled_fixed_point`
(Broyden on log s, first step = the classical Desroziers step) chooses the next (s_b, s_o),
starting from the mis-specified (0.5, 2). The truth is (1, 1). Prints one line per run and writes
``benchmarks/output/cycled_desroziers/results.json``.

Usage::

    python benchmarks/cycled_desroziers.py [--cycles 2000] [--runs 5] [--only 3D-Var 4D-Var]
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
from pyoops.diagnostics.tuning.cycled import cycled_fixed_point
from pyoops.testing.linear_gaussian import desroziers_experiment

OUT = Path(__file__).resolve().parent / "output" / "cycled_desroziers"


def ratios_of(method: str, cycles: int, scales: np.ndarray, log: list) -> np.ndarray:
    directory = OUT / method
    cfg, expected = desroziers_experiment(method, directory, model_plugin="lorenz96", geometry_config={"resol": 40},
                                          cycles=cycles, b_scale=float(scales[0]), r_scale=float(scales[1]))
    t0 = time.perf_counter()
    pyoops.run("cycle", cfg)
    data = read_archive(Path(cfg["output"]["directory"]) / "innovations.nc")
    whole = diagnose(data, DiagnosticsSettings(samples=200, bootstrap_seed=1))["subsets"][0]
    r = np.array([whole["background error variance ratio"]["value"], whole["obs error variance ratio"]["value"]])
    log.append({"B scale": float(scales[0]), "R scale": float(scales[1]), "ratios": r.tolist(),
                "expected ratios": [expected["background error variance ratio"], expected["obs error variance ratio"]],
                "seconds": time.perf_counter() - t0})
    print(f"{method}: run {len(log)}: B x {scales[0]:.4f}, R x {scales[1]:.4f} -> ratios HBH^T {r[0]:.4f}, "
          f"sigma_o^2 {r[1]:.4f} (expected {log[-1]['expected ratios'][0]:.4f}, {log[-1]['expected ratios'][1]:.4f})",
          flush=True)
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=["3D-Var", "4D-Var"])
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = {}
    for method in args.only:
        log: list = []
        fp = cycled_fixed_point(lambda s: ratios_of(method, args.cycles, s, log), [0.5, 2.0], max_runs=args.runs,
                                tolerance=0.01)
        results[method] = {"runs": log, "converged": fp.converged, "message": fp.message}
        print(f"{method}: {fp.message}; last B x {fp.scale[0]:.4f}, R x {fp.scale[1]:.4f} (truth 1, 1)", flush=True)
    results["environment"] = {"python": platform.python_version(), "numpy": np.__version__,
                              "pyoops": pyoops.__version__, "cpus": os.cpu_count(),
                              "load average at end": os.getloadavg(), "cycles": args.cycles}
    (OUT / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
