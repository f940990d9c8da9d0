"""Benchmark: coverage of the tuning intervals, and pooling on a sparse regional network.

Part 1 — coverage.  A periodic Lorenz-96-like network (n = p = 40, x in [0, 1)): static
covariance C_s Gaussian-correlated (length 2/40), ensemble of N members per cycle (default 15)
drawn from a *different* covariance (SOAR, length 4/40) so that beta is identifiable,
sigma_o = 1.  Innovations drawn from the model with theta* for every combination of
beta* in {0.3, 0.7}, lambda* in {1.0, 1.3}, a_o* in {0.8, 1.5}, and l* = 0.15 (GC half-width;
the default is no localization).  For each theta*, ``--replicates`` seeded replicates of
``--cycles`` cycles; ML (beta, lambda, a_o, l free) with L-BFGS-B and the analytic gradient;
coverage of the nominal 95 % Wald intervals (Fisher information, internal log/logit scale),
and of the profile-likelihood intervals (of each method run) on the first ``--profile-replicates`` replicates;
MAP (default priors) Wald coverage too.  Time per fit.

With ``--network qg`` the network is instead ``--obs`` (default 80) fixed random locations
on the two-layer QG channel of the QG plugin (40 x 20 grid, 12,000 km x 6,300 km, periodic
in x, walls in y; upper layer), distances from the geometry (periodic in x), C_s Gaussian
(length 2 grid spacings, 632 km), the ensemble SOAR (4 spacings, 1263 km), sigma_o = 1 and
l* = 1800 km (0.15 of the channel length, as on the ring); see
pyoops.diagnostics.tuning.simulate.geometry_network.  ``--beta`` restricts the beta* values
(to split the runs between processes).

Part 2 — pooling.  8 regions of the ring, 5 observations per region per cycle, ``--pool-cycles``
cycles (short record), regional lambda*_r and a_o*_r log-normal around 1.2 and 1.0 (sd of log
0.25), beta = 0.5 and l = 0.15 known; regions independent.  Independent ML per region, one
global ML, hierarchical (empirical Bayes, DerSimonian-Laird) and its shared-prior MAP refit:
RMSE of log(theta_r) against theta*_r, and out-of-sample -log L per observation on 20 fresh
cycles, over ``--pool-seeds`` seeds.

Prints tables and writes benchmarks/output/tuning_coverage/results.json.  No assertion: the
tests in tests/diagnostics/tuning check the same things on fewer replicates.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/tuning_coverage.py [--replicates 100] [--cycles 40]
    OPENBLAS_NUM_THREADS=1 python benchmarks/tuning_coverage.py --network qg --cycles 20 --skip-pooling
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from pyoops.diagnostics.tuning import estimate, negative_log_likelihood
from pyoops.diagnostics.tuning.pooling import pool
from pyoops.diagnostics.tuning.simulate import (
    geometry_network,
    ring_network,
    simulate_innovations,
    simulate_regions,
)

HERE = Path(__file__).resolve().parent
OUT = HERE / "output" / "tuning_coverage"
FREE = ("beta", "inflation", "a_o", "length")
LENGTH = 0.15
QG_GEOMETRY = {"nx": 40, "ny": 20, "depths": [4500.0, 5500.0]}


def qg_geometry():
    """The QG plugin's channel (the plugin is imported here, not by the tuning core)."""
    from pyoops.registry import get_registry

    return get_registry().model_plugin("qg").make_geometry(QG_GEOMETRY)


def binomial_interval(k: int, n: int) -> tuple[float, float]:
    """Wilson 95 % interval of a proportion."""
    if n == 0:
        return (math.nan, math.nan)
    z = 1.959964
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def coverage(args: argparse.Namespace) -> list[dict]:
    rows = []
    geometry = qg_geometry() if args.network == "qg" else None
    length = LENGTH * geometry.lx if geometry is not None else LENGTH
    for k, (beta, lam, a_o) in enumerate(itertools.product((0.3, 0.7), (1.0, 1.3), (0.8, 1.5))):
        if beta not in args.beta:
            continue
        theta = {"beta": beta, "inflation": lam, "a_o": a_o, "length": length}
        kinds = ("ml wald", "map wald", "ml profile", "map profile")
        hits = {m: {n: 0 for n in FREE} for m in kinds}
        counts = {m: 0 for m in kinds}
        seconds = {"ml": [], "map": [], "ml profile": [], "map profile": []}
        verdicts: dict[str, dict[str, int]] = {n: {} for n in FREE}
        converged = 0
        for rep in range(args.replicates):
            rng = np.random.default_rng([args.seed, k, rep])
            if geometry is not None:
                net = geometry_network(geometry, rng, args.cycles, p=args.obs, members=args.members)
            else:
                net = ring_network(rng, args.cycles, members=args.members)
            data = simulate_innovations(net, theta, rng)
            for method in args.methods:
                prof = rep < args.profile_replicates
                t0 = time.perf_counter()
                res = estimate(data, method, FREE, profile=prof)
                dt = time.perf_counter() - t0
                seconds[f"{method} profile" if prof else method].append(dt)
                key = f"{method} wald"
                counts[key] += 1
                converged += method == "ml" and res.converged
                for n in FREE:
                    e = res.estimates[n]
                    hits[key][n] += e.wald_interval[0] <= theta[n] <= e.wald_interval[1]
                    if method == "ml":
                        verdicts[n][e.verdict] = verdicts[n].get(e.verdict, 0) + 1
                    if prof:
                        hits[f"{method} profile"][n] += e.profile_interval[0] <= theta[n] <= e.profile_interval[1]
                if prof:
                    counts[f"{method} profile"] += 1
        row = {"network": args.network, "theta": theta, "replicates": args.replicates, "cycles": args.cycles,
               "members": args.members,
               "ml converged": converged, "verdicts (ml)": verdicts,
               "seconds per fit": {m: (float(np.mean(v)) if v else None) for m, v in seconds.items()}}
        for m in hits:
            row[m] = {n: {"coverage": hits[m][n] / counts[m] if counts[m] else None,
                          "count": counts[m], "wilson 95 %": binomial_interval(hits[m][n], counts[m])}
                      for n in FREE}
        rows.append(row)
        def pct(m: str, row: dict = row, counts: dict = counts) -> str:
            return "  ".join(f"{n} {100 * row[m][n]['coverage']:5.1f}" for n in FREE) if counts[m] else "—"

        cov, covm = pct("ml wald"), pct("map wald")
        covp, covmp = pct("ml profile"), pct("map profile")
        per_fit = {m: ("—" if s is None else f"{s:.2f}") for m, s in row["seconds per fit"].items()}
        print(f"beta*={beta} lambda*={lam} a_o*={a_o}: ML Wald % [{cov}] | MAP Wald % [{covm}] | "
              f"ML profile ({counts['ml profile']}) % [{covp}] | MAP profile ({counts['map profile']}) % [{covmp}] | "
              f"s/fit ML {per_fit['ml']} MAP {per_fit['map']} ML with profile {per_fit['ml profile']} "
              f"MAP with profile {per_fit['map profile']}", flush=True)
    return rows


def pooling(args: argparse.Namespace) -> dict:
    regions = {f"r{i}": (i / 8, (i + 1) / 8) for i in range(8)}
    base = {"beta": 0.5, "length": LENGTH}
    kinds = ("independent", "global", "hierarchical", "refit")
    sq = {k: {"inflation": 0.0, "a_o": 0.0} for k in kinds}
    nll = {k: 0.0 for k in kinds}
    nobs_test = 0
    count = 0
    t0 = time.perf_counter()
    for seed in range(args.pool_seeds):
        rng = np.random.default_rng([args.seed, 99, seed])
        lam = np.exp(np.log(1.2) + 0.25 * rng.standard_normal(8))
        a_o = np.exp(0.25 * rng.standard_normal(8))
        truth = {f"r{i}": {"inflation": lam[i], "a_o": a_o[i]} for i in range(8)}
        values = {r: {**base, **truth[r]} for r in truth}
        train = simulate_regions(ring_network(rng, args.pool_cycles, members=10, regions=regions), values, rng)
        test = simulate_regions(ring_network(rng, 20, members=10, regions=regions), values, rng)
        res = pool(train, ("inflation", "a_o"), fixed=base, refit=True)
        for lab in res.labels:
            part = test.select(region=lab)
            for kind in kinds:
                vals = res.values(lab, kind)
                for n in ("inflation", "a_o"):
                    sq[kind][n] += (math.log(vals[n]) - math.log(truth[lab][n])) ** 2
                nll[kind] += negative_log_likelihood(part, vals)
            nobs_test += part.nobs
            count += 1
    out = {"seeds": args.pool_seeds, "cycles": args.pool_cycles, "regions": 8, "obs per region per cycle": 5,
           "seconds": time.perf_counter() - t0, "test observations": nobs_test}
    for kind in kinds:
        out[kind] = {"rmse log inflation": math.sqrt(sq[kind]["inflation"] / count),
                     "rmse log a_o": math.sqrt(sq[kind]["a_o"] / count),
                     "out-of-sample -log L per obs": nll[kind] / nobs_test}
    print(f"\npooling: 8 regions x 5 obs x {args.pool_cycles} cycles, {args.pool_seeds} seeds, test 20 cycles")
    print(f"{'estimate':<14}{'RMSE log λ':>12}{'RMSE log a_o':>14}{'held-out -logL/obs':>20}")
    for kind in kinds:
        r = out[kind]
        print(f"{kind:<14}{r['rmse log inflation']:12.4f}{r['rmse log a_o']:14.4f}"
              f"{r['out-of-sample -log L per obs']:20.5f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument("--profile-replicates", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=40)
    parser.add_argument("--members", type=int, default=15)
    parser.add_argument("--network", choices=["ring", "qg"], default="ring")
    parser.add_argument("--obs", type=int, default=80, help="observations per cycle on the QG network")
    parser.add_argument("--beta", type=float, nargs="+", default=[0.3, 0.7], help="beta* values to run")
    parser.add_argument("--pool-seeds", type=int, default=20)
    parser.add_argument("--pool-cycles", type=int, default=6)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--methods", nargs="+", default=["ml", "map"], choices=["ml", "map"])
    parser.add_argument("--skip-coverage", action="store_true")
    parser.add_argument("--skip-pooling", action="store_true")
    parser.add_argument("--tag", default="", help="suffix of the JSON file name (results_<tag>.json)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = [] if args.skip_coverage else coverage(args)
    pooled = None if args.skip_pooling else pooling(args)
    result = {"settings": vars(args), "coverage": rows, "pooling": pooled, "seconds": time.perf_counter() - t0,
              "platform": platform.platform(), "python": platform.python_version(),
              "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")}
    path = OUT / (f"results_{args.tag}.json" if args.tag else "results.json")
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {path} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
