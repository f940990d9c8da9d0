"""Benchmark: the standard Lorenz-96 twin experiment, cycled with ``pyoops cycle``.

Setup (REFERENCES.md section 3; Sakov & Oke 2008): F = 8, n = 40, dt = 0.05 = PT6H,
all 40 variables observed every step with R = I, perfect model.  Every method runs
``--cycles`` cycles (default 2200) on the *same* truth and observations (the
observation errors come from a stream per observation time); time means leave out
the first ``--spin-up`` cycles (default 200), so the default averages over 2000 cycles.

Methods (pyoops only):

``3D-Var``
    B = 0.02 B_clim, with B_clim the sample covariance of a 20 000-step free run
    (calibration), applied through the SABER ``explicit covariance`` block (a dense
    40 x 40 matrix: fine at n = 40, refused above ``max size``); DRPCG to a gradient
    reduction of 1e-8, i.e. the exact 3D-Var/OI analysis.
``ETKF N=20``
    LETKF without localization (= ETKF), multiplicative inflation 1.02^2.
``LETKF N=10``
    Gaspari-Cohn observation localization, zero beyond 0.364 (DAPPER's loc_rad = 4 grid
    points), inflation 1.04.
``EnKF N=40``
    stochastic EnKF (perturbed observations), posterior inflation 1.06^2.
``hybrid b=0.5``, ``EDA b=1``
    EDA-hybrid: 10 perturbed 3D-Vars plus the unperturbed control, each with
    B_h = (1 - b) 0.02 B_clim + b P_e, P_e the sample covariance of the 10 members'
    backgrounds (no localization); the analysis is the control's.  b = 0 is 3D-Var.

Usage::

    python benchmarks/l96_twin.py [--cycles 2200] [--spin-up 200] [--only NAME ...] [--workers 1]

Prints a table (method, time-mean analysis RMSE, spread, seconds per cycle) and writes
``benchmarks/output/l96_twin/results.json``.  Runs that already finished are read back
from their checkpoints (restart), so the script can be interrupted and rerun.
No assertion: a benchmark exits 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "output" / "l96_twin"
START = "2010-01-01T00:00:00Z"


def climatological_covariance(steps: int = 20000, seed: int = 11) -> np.ndarray:
    """Sample covariance of a long free Lorenz-96 run (F = 8, n = 40, dt = 0.05)."""
    from pyoops_lorenz96.model import rk4_step

    x = 8.0 + np.random.default_rng(seed).standard_normal(40)
    for _ in range(2000):
        x = rk4_step(x, 8.0, 0.05)
    xs = np.empty((steps, 40))
    for i in range(steps):
        x = rk4_step(x, 8.0, 0.05)
        xs[i] = x
    return np.cov(xs.T)


def base_config(method: str, cycles: int, spin_up: int, directory: Path, members: int | None = None,
                workers: int = 1) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "model plugin": "lorenz96",
        "geometry": {"resol": 40},
        "model": {"name": "Lorenz96", "f": 8.0, "tstep": "PT6H"},
        "truth": {"initial condition": {"date": START, "analytic init": {"method": "random", "seed": 3}},
                  "spin-up": "P100D"},
        "observations": {"obs frequency": "PT6H", "obs density": 40, "obs error": 1.0, "seed": 5},
        "cycling": {"method": method, "cycles": cycles, "window length": "PT6H", "spin-up cycles": spin_up,
                    "seed": 1, "initial perturbation": {"std": 1.0}},
        "output": {"directory": str(directory)},
    }
    if members:
        cfg["cycling"]["members"] = members
    if workers > 1:
        cfg["parallel"] = {"engine": "processes", "workers": workers}
    return cfg


def static_b(bfile: Path) -> dict[str, Any]:
    return {"covariance model": "SABER",
            "saber central block": {"saber block name": "explicit covariance", "read": {"filename": str(bfile)}}}


def experiments(cycles: int, spin_up: int, bfile: Path, workers: int) -> dict[str, dict[str, Any]]:
    var = {"minimizer": {"algorithm": "DRPCG"}, "iterations": [{"ninner": 40, "gradient norm reduction": 1e-8}]}
    exps: dict[str, dict[str, Any]] = {}
    c = base_config("3D-Var", cycles, spin_up, OUT / "3dvar")
    c["cost function"] = {"cost type": "3D-Var", "background error": static_b(bfile)}
    c["variational"] = var
    exps["3D-Var"] = c
    c = base_config("LETKF", cycles, spin_up, OUT / "etkf20", 20)
    c["local ensemble DA"] = {"inflation": {"mult": 1.02 ** 2}}
    exps["ETKF N=20"] = c
    c = base_config("LETKF", cycles, spin_up, OUT / "letkf10", 10)
    c["observations"]["obs localizations"] = [{"localization method": "Gaspari-Cohn", "lengthscale": 0.364}]
    c["local ensemble DA"] = {"inflation": {"mult": 1.04}}
    exps["LETKF N=10"] = c
    c = base_config("EnKF", cycles, spin_up, OUT / "enkf40", 40)
    c["eda"] = {"seed": 2, "inflation": {"mult": 1.06 ** 2}}
    exps["EnKF N=40"] = c
    for beta in (0.5, 1.0):
        name = f"hybrid b={beta:g}" if beta < 1 else "EDA b=1"
        c = base_config("EDA-hybrid" if beta < 1 else "3D-EnVar", cycles, spin_up, OUT / f"hybrid{beta:g}", 10,
                        workers)
        ens = {"saber central block": {"saber block name": "Ensemble"}}
        if beta < 1:
            berr = {"covariance model": "SABER", "saber central block": {
                "saber block name": "Hybrid", "components": [
                    {"covariance": {k: v for k, v in static_b(bfile).items() if k != "covariance model"},
                     "weight": {"value": 1 - beta}},
                    {"covariance": ens, "weight": {"value": beta}}]}}
        else:
            berr = {"covariance model": "SABER", **ens}
        c["cost function"] = {"cost type": "3D-Var", "background error": berr}
        c["variational"] = {"minimizer": {"algorithm": "DRPCG"},
                            "iterations": [{"ninner": 30, "gradient norm reduction": 1e-6}]}
        c["eda"] = {"seed": 2, "control member": True}
        exps[name] = c
    return exps


def run(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    import pyoops

    started = time.perf_counter()
    summary = pyoops.run("cycle", cfg)
    wall = time.perf_counter() - started
    stats = json.loads((Path(cfg["output"]["directory"]) / "statistics.json").read_text())
    means = stats["time means"]
    return {"method": name, "members": cfg["cycling"].get("members"), "cycles": summary["cycles"],
            "spin-up cycles": cfg["cycling"]["spin-up cycles"],
            "analysis rmse": means["analysis rmse"], "forecast rmse": means["forecast rmse"],
            "analysis spread": means.get("analysis spread"),
            "analysis mean rmse": means.get("analysis mean rmse"),
            "seconds per cycle": stats["seconds per cycle"], "wall seconds (this call)": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=2200)
    parser.add_argument("--spin-up", type=int, default=200)
    parser.add_argument("--only", nargs="*", default=None, help="method names to run (default: all)")
    parser.add_argument("--workers", type=int, default=1, help="processes for the EDA members")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    bfile = OUT / "b_static.nc"
    if not bfile.exists():
        from pyoops.saber.generic.explicit import write_matrix

        write_matrix(str(bfile), 0.02 * climatological_covariance())
    exps = experiments(args.cycles, args.spin_up, bfile, args.workers)
    names = args.only or list(exps)
    results_file = OUT / "results.json"
    for name in names:
        print(f"running {name} ...", flush=True)
        result = run(name, exps[name])
        results = json.loads(results_file.read_text()) if results_file.exists() else {}  # other runs may write too
        results[name] = result
        results_file.write_text(json.dumps(results, indent=1) + "\n")
    results = json.loads(results_file.read_text())
    print()
    print(f"Lorenz-96 twin, {args.cycles} cycles, time means over cycles {args.spin_up + 1}-{args.cycles} "
          f"({platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"NumPy {np.__version__})")
    print(f"{'method':<16} {'N':>4} {'RMSE a':>8} {'RMSE f':>8} {'spread a':>9} {'s/cycle':>9}")
    for name, r in results.items():
        spread = f"{r['analysis spread']:.3f}" if r.get("analysis spread") is not None else "-"
        print(f"{name:<16} {r['members'] or '-':>4} {r['analysis rmse']:>8.3f} {r['forecast rmse']:>8.3f} "
              f"{spread:>9} {r['seconds per cycle']:>9.4f}")


if __name__ == "__main__":
    main()
