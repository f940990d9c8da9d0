"""Adaptive hybrid weight β on the Lorenz-96 hybrid (n = 40, N = 10, no localization of the ensemble B).

For a method (``EDA-hybrid``: the EDA of 3D-Vars feeding its own ensemble; ``LETKF-hybrid``: the
ensemble from a cycled LETKF, NCEP's GSI hybrid) it runs

1. the sweep β ∈ {0, 0.1, …, 1} with fixed weights and fixed inflation;
2. the adaptive runs (``adaptive: {hybrid weight: ...}``) started at β = 0.1 and β = 0.9;
3. the same adaptive runs with the ensemble fed to B (and used for C_e) replaced, every cycle, by
   the members' mean plus N seeded draws from B_s (the static chain's SABER randomization,
   stream ``generator(seed, "B_s draws", k)``): β is then not identifiable and the guard should
   hold it where it started.

and prints a table (mean analysis RMSE of the control after the spin-up, β at the end and its mean
over the second half of the cycles, the fraction of cycles with an update, seconds).

Run (one process, serially)::

    PYTHONPATH=.:plugins/lorenz96/src python benchmarks/adaptive_hybrid.py --method EDA-hybrid \\
        --cycles 1100 --spin-up 100
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "ensemble"))

from test_cycle import l96_cycle  # noqa: E402  (the Lorenz-96 cycle configuration of the tests)


def config(method: str, beta: float, cycles: int, spin_up: int, directory: Path, inflation: float,
           adaptive: dict[str, Any] | None) -> dict[str, Any]:
    """The L96 twin: n = 40, every point observed every 6 h with error 1, N = 10, unlocalized hybrid B."""
    cfg = l96_cycle("EDA-hybrid" if method == "EDA-hybrid" else "hybrid", directory, cycles=cycles, members=10)
    cfg["cycling"].update({"method": method, "spin-up cycles": spin_up})
    cfg["cost function"]["background error"]["saber central block"]["components"][0]["weight"]["value"] = 1.0 - beta
    cfg["cost function"]["background error"]["saber central block"]["components"][1]["weight"]["value"] = beta
    cfg["resume"] = False
    if method == "EDA-hybrid":
        cfg["eda"] = {"seed": 2, "inflation": {"mult": inflation}}
    else:
        # The LETKF needs localization with N = 10 (an unlocalized L96-40 ETKF needs ~14 members);
        # the hybrid's Ensemble block stays unlocalized.
        cfg["observations"]["obs localizations"] = [{"localization method": "Gaspari-Cohn", "lengthscale": 0.364}]
        cfg["local ensemble DA"] = {"inflation": {"mult": inflation}}
    if adaptive is not None:
        cfg["adaptive"] = {"hybrid weight": adaptive}
    return cfg


def static_draws_hook(experiment: Any, seed: int = 11) -> Any:
    """An ``ensemble_hook``: the members' mean plus N draws from B_s (the static chain's randomization)."""
    from pyoops.assimilation.costfunction import CostFunction, CostFunctionParameters
    from pyoops.config.parameters import validate
    from pyoops.util.random import generator

    cfg = experiment.cost_config(0)
    hybrid = experiment.params.cost_function["background error"]["saber central block"]
    cfg["background error"] = {"covariance model": "SABER", **copy.deepcopy(hybrid["components"][0]["covariance"])}
    cost = CostFunction(validate(CostFunctionParameters, cfg, "cost function"), experiment.registry, experiment.plugin)
    chain = cost.covariance(cost.geometry).chain

    def hook(k: int, members: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = next(iter(members.values())).shape[0]
        draws = chain.randomize(generator(seed, "B_s draws", k), (n,))
        return {v: a.mean(axis=0) + np.asarray(draws[v]) for v, a in members.items()}

    return hook


def run(method: str, beta: float, cycles: int, spin_up: int, inflation: float, adaptive: dict[str, Any] | None,
        draws: bool = False) -> dict[str, Any]:
    from pyoops.apps import make_application
    from pyoops.config.yaml_io import load_config

    with tempfile.TemporaryDirectory() as tmp:
        app = make_application("cycle")
        app.validate(load_config(config(method, beta, cycles, spin_up, Path(tmp), inflation, adaptive)))
        exp = app.experiment
        if draws:
            exp.ensemble_hook = static_draws_hook(exp)
        started = time.perf_counter()
        state = exp.run(tmp, show_progress=False)
        seconds = time.perf_counter() - started
    rmse = np.asarray(state["stats"]["analysis rmse"])[spin_up:]
    out = {"method": method, "run": "fixed" if adaptive is None else f"{adaptive['scheme']}",
           "draws": draws, "beta0": beta, "rmse": float(np.mean(rmse)) if np.all(np.isfinite(rmse)) else math.nan,
           "seconds per cycle": seconds / cycles}
    if adaptive is not None:
        series = exp.adaptation.series
        b = np.asarray(series["hybrid weight"])
        out.update({"beta end": float(b[-1]), "beta mean 2nd half": float(np.mean(b[cycles // 2:])),
                    "updated": float(np.mean(series["hybrid weight updated"])),
                    "cosine end": float(series["hybrid weight guard cosine"][-1])})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="EDA-hybrid", choices=("EDA-hybrid", "LETKF-hybrid"))
    parser.add_argument("--cycles", type=int, default=1100)
    parser.add_argument("--spin-up", type=int, default=100)
    parser.add_argument("--inflation", type=float, default=1.05)
    parser.add_argument("--betas", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1")
    parser.add_argument("--scheme", default="likelihood", choices=("likelihood", "el gharamti"))
    parser.add_argument("--memory", type=float, default=100.0)
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--json", default=None, help="Append the rows to this JSON-lines file.")
    args = parser.parse_args()
    rows = []

    def report(row: dict[str, Any]) -> None:
        rows.append(row)
        extra = "" if "beta end" not in row else (f"  β end {row['beta end']:.3f}  β mean(2nd half) "
                                                  f"{row['beta mean 2nd half']:.3f}  updated {row['updated']:.2f}  "
                                                  f"cos {row['cosine end']:.3f}")
        print(f"{row['method']:<13} {row['run']:<12} {'B_s draws' if row['draws'] else 'members':<10} "
              f"β0 {row['beta0']:.2f}  RMSE {row['rmse']:.4f}{extra}  ({row['seconds per cycle']:.3f} s/cycle)",
              flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    if not args.skip_sweep:
        for beta in [float(b) for b in args.betas.split(",")]:
            try:
                report(run(args.method, beta, args.cycles, args.spin_up, args.inflation, None))
            except Exception as exc:  # noqa: BLE001 - a diverged run (beta = 1 unlocalized) must not stop the sweep
                print(f"β {beta}: failed ({type(exc).__name__}: {exc})", flush=True)
    adaptive = {"scheme": args.scheme, "memory": args.memory}
    for draws in (False, True):
        for beta0 in (0.1, 0.9):
            report(run(args.method, beta0, args.cycles, args.spin_up, args.inflation, {**adaptive, "initial": beta0},
                       draws))
    fixed = [r for r in rows if r["run"] == "fixed" and math.isfinite(r["rmse"])]
    if fixed:
        best = min(fixed, key=lambda r: r["rmse"])
        print(f"sweep best: β = {best['beta0']:.1f}, RMSE {best['rmse']:.4f}")
        for r in rows:
            if r["run"] != "fixed" and not r["draws"]:
                print(f"  adaptive from {r['beta0']:.1f}: |β − β_best| = {abs(r['beta mean 2nd half'] - best['beta0']):.3f}"
                      f" (target ≤ 0.1), RMSE − best = {r['rmse'] - best['rmse']:+.4f} (target ≤ 0.01)")
            if r["run"] != "fixed" and r["draws"]:
                print(f"  B_s draws from {r['beta0']:.1f}: β end {r['beta end']:.3f} (target: {r['beta0']:.1f})")


if __name__ == "__main__":
    main()
