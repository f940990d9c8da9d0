"""Benchmark: pyoops's adaptive inflation against DAPPER's EnKF-N and DART-style schemes, on the same data.

Prerequisite (not a dependency of pyoops or of its tests): DAPPER 1.7 or 1.8 in the environment this
script runs in, next to pyoops and its Lorenz-96 plugin (see ``benchmarks/dapper_compare.py``)::

    OPENBLAS_NUM_THREADS=1 venv-dapper/bin/python benchmarks/adaptive_peers.py

The twin (Lorenz-96, n = 40, dt = 0.05 = PT6H, truth F = 8, made with DAPPER's ``step``) and its
observations (numpy, seeded) are written once per case by ``tutorials/lorenz96/numpy_to_cycle.py``
and read by ``pyoops cycle`` as given observations and truth files; DAPPER assimilates the same
arrays (``xx``, ``yy``) from the same initial ensemble (N = 20, drawn from N(x_t(0), I) and
forecast to the first analysis with the assimilating model).

Cases
-----
``a``       perfect model, all 40 variables observed every step, R = I.
``b7`` ...  model error: the assimilating model has F = 7, 7.5, 8.5 or 9 (truth F = 8).
``c``       uneven network: variables 0-19 observed every step, 20-39 never.
``d``       sparse: every 4th variable every 4th step (window PT24H).
``e``       non-stationary: the true observation error doubles (sigma_o 1 -> 2) half-way through the
            cycles; every filter assumes R = I throughout.

Filters (every one N = 20): the ETKF (pyoops ``LETKF`` without localization) and the LETKF
(Gaspari-Cohn, zero beyond 0.365 of the domain = DAPPER's ``loc_rad = 4``).

Rows
----
* ``fixed ETKF``/``fixed LETKF``: a sweep of the prior multiplicative inflation ``mult`` (the
  reported best per case, and the single best of case ``a`` applied to every case);
* pyoops adaptive schemes (``adaptive.inflation``): ``likelihood`` (pyoops's; memory 1000 and 100 cycles,
  each also with ``per cycle: 4`` -- the analysis uses the cycle's posterior mode about the running
  estimate --, ``likelihood marginal`` (the product of the observations' marginal likelihoods; memory
  1000, and memory 100 with ``per cycle: 4``), and with the R amplitude estimated too,
  ``likelihood + R``, memory 100 for both; ``enkf-n + R``: EnKF-N's inflation, xN 1, with pyoops's online
  R, memory 100 -- an own row, since no peer tunes R), ``miyoshi``,
  ``anderson`` and ``el gharamti`` (DART's published settings: initial and lower-bound sd 0.6,
  damping 0.9, bounds [1, 100]), ``enkf-n`` (xN 1 and 2), global for the ETKF and local for the LETKF;
* DAPPER: ``EnKF_N(N=20, xN=1|2)`` and ``LETKF(N=20, loc_rad=4, xN=1|2)`` (the local EnKF-N).

Each row: time-mean analysis RMSE over cycles after ``--spin-up``, spread/RMSE ratio and the final
inflation (domain mean).  Results in ``benchmarks/output/adaptive_peers/results.json``; the table
is printed in reStructuredText for ``docs/adaptive.rst``.  No assertion: a benchmark exits 0.

``--seeds S1 S2 ...`` repeats the chosen cases, filters and schemes (and DAPPER) on twins of several
seeds (``results_seeds.json``, or ``results_seeds_<tag>.json``) and prints each row's mean and
standard deviation over the seeds, and per case the paired difference between pyoops's own best
row and the best peer row (best by the mean over seeds) with its 95 % Student-t interval:
single-seed time means of this twin differ by 0.02-0.1 from seed to seed, more than the 0.01 the
comparison asks about.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "output" / "adaptive_peers"
sys.path.insert(0, str(HERE))

from dapper_compare import dapper_quiet, hmm, numpy_to_cycle  # noqa: E402

DT = 0.05
START = np.datetime64("2010-01-01T00:00:00", "s")
NMEMBERS = 20
LOC_RAD = 4
LOC_LENGTH = 0.365          # pyoops: Gaspari-Cohn zero beyond it (= DAPPER's GC of loc_rad 4: 3.65 loc_rad points)
CASES = {
    "a": {"F": 8.0, "observed": "all", "dko": 1, "sigma": (1.0, 1.0)},
    "b7": {"F": 7.0, "observed": "all", "dko": 1, "sigma": (1.0, 1.0)},
    "b7.5": {"F": 7.5, "observed": "all", "dko": 1, "sigma": (1.0, 1.0)},
    "b8.5": {"F": 8.5, "observed": "all", "dko": 1, "sigma": (1.0, 1.0)},
    "b9": {"F": 9.0, "observed": "all", "dko": 1, "sigma": (1.0, 1.0)},
    "c": {"F": 8.0, "observed": "half", "dko": 1, "sigma": (1.0, 1.0)},
    "d": {"F": 8.0, "observed": "sparse", "dko": 4, "sigma": (1.0, 1.0)},
    "e": {"F": 8.0, "observed": "all", "dko": 1, "sigma": (1.0, 2.0)},
}
DART = {"initial sd": 0.6, "sd lower bound": 0.6, "damping": 0.9, "bounds": [1.0, 100.0]}
SCHEMES: dict[str, dict[str, Any]] = {
    "likelihood": {"scheme": "likelihood", "memory": 1000},
    "likelihood m100": {"scheme": "likelihood", "memory": 100},
    "likelihood per cycle": {"scheme": "likelihood", "memory": 1000, "per cycle": 4},
    "likelihood m100 per cycle": {"scheme": "likelihood", "memory": 100, "per cycle": 4},
    "likelihood marginal": {"scheme": "likelihood", "memory": 1000, "likelihood form": "marginal"},
    "likelihood marginal m100 per cycle": {"scheme": "likelihood", "memory": 100, "likelihood form": "marginal",
                                           "per cycle": 4},
    # Equal memories: an R amplitude faster than the inflation is refused (it diverged on 3 of 10 twins of case e).
    "likelihood + R": {"scheme": "likelihood", "memory": 100, "obs error": {"scheme": "likelihood", "memory": 100}},
    # EnKF-N's inflation (no memory; its hyperprior accounts for the ensemble's sampling error) with pyoops's online R.
    "enkf-n + R": {"scheme": "enkf-n", "xN": 1.0, "obs error": {"scheme": "likelihood", "memory": 100}},
    "miyoshi": {"scheme": "miyoshi"},
    "anderson": {"scheme": "anderson", **DART},
    "el gharamti": {"scheme": "el gharamti", **DART},
    "enkf-n xN=1": {"scheme": "enkf-n", "xN": 1.0},
    "enkf-n xN=2": {"scheme": "enkf-n", "xN": 2.0},
}
SWEEP = (1.0, 1.02, 1.04, 1.07, 1.1, 1.15, 1.2, 1.3, 1.45, 1.6, 1.8, 2.1)


def observed_indices(kind: str) -> np.ndarray:
    return {"all": np.arange(40), "half": np.arange(20), "sparse": np.arange(0, 40, 4)}[kind]


def l96_step(x: np.ndarray, force: float, steps: int = 1) -> np.ndarray:
    import dapper.mods.Lorenz96 as l96

    saved = l96.Force
    l96.Force = force
    try:
        for _ in range(steps):
            x = l96.step(x, np.nan, DT)
    finally:
        l96.Force = saved
    return x


def make_twin(case: str, cycles: int, seed: int) -> dict[str, Any]:
    """Truth (F = 8) at every analysis time, observations, the initial ensemble at the first analysis."""
    spec = CASES[case]
    dko = spec["dko"]
    rng = np.random.default_rng([seed, 1])
    x = 8.0 + rng.standard_normal(40)
    x = l96_step(x, 8.0, 2000)                        # spin-up onto the attractor
    truth = [x]
    for _ in range(cycles):
        x = l96_step(x, 8.0, dko)
        truth.append(x)
    truth = np.array(truth)                           # (K+1, 40) at T_0 and the K analysis times
    obs_idx = observed_indices(spec["observed"])
    sigma = np.where(np.arange(cycles) < cycles // 2, spec["sigma"][0], spec["sigma"][1])
    noise = np.random.default_rng([seed, 2]).standard_normal((cycles, obs_idx.size))
    yy = truth[1:, obs_idx] + sigma[:, None] * noise
    e0 = truth[0] + np.random.default_rng([seed, 3]).standard_normal((NMEMBERS, 40))
    eb = l96_step(e0, spec["F"], dko)                 # the first backgrounds, valid at the first analysis
    return {"truth": truth, "yy": yy, "E0": e0, "Eb": eb, "observed": obs_idx, "dko": dko, "F": spec["F"]}


# pyoops --------------------------------------------------------------------------------------
def pyoops_config(twin: dict[str, Any], entries: dict[str, Any], cycles: int, spin_up: int, directory: Path,
                  localized: bool, mult: float = 1.0, adaptive: dict[str, Any] | None = None) -> dict[str, Any]:
    hours = 6 * twin["dko"]
    cfg: dict[str, Any] = {
        "model plugin": "lorenz96",
        "geometry": {"resol": 40},
        "model": {"name": "Lorenz96", "f": twin["F"], "tstep": "PT6H"},
        "truth": entries["truth"],
        "observations": {"name": "l96", "simulated variables": ["x"], **entries["observations"]},
        "cycling": {"method": "LETKF", "members": NMEMBERS, "cycles": cycles, "window length": f"PT{hours}H",
                    "spin-up cycles": spin_up, "checkpoint every": 100, "start": entries["cycling"]["start"],
                    "initial ensemble": entries["cycling"]["initial ensemble"]},
        "local ensemble DA": {"inflation": {"mult": mult}},
        "output": {"directory": str(directory), "plots": False},
        "resume": False,
    }
    if localized:
        cfg["observations"]["obs localizations"] = [{"localization method": "Gaspari-Cohn",
                                                     "lengthscale": LOC_LENGTH}]
    if adaptive is not None:
        inflation = {k: v for k, v in adaptive.items() if k != "obs error"}
        cfg["adaptive"] = {"inflation": {**inflation, "spatial": "local" if localized else "global"}}
        if "obs error" in adaptive:
            cfg["adaptive"]["obs error"] = adaptive["obs error"]
    return cfg


def run_pyoops(cfg: dict[str, Any]) -> dict[str, Any]:
    import pyoops

    directory = Path(cfg["output"]["directory"])
    if directory.exists():
        shutil.rmtree(directory)
    started = time.perf_counter()
    try:
        pyoops.run("cycle", cfg)
    except Exception as exc:                 # a diverging filter (NaN) is a result, not a crash of the benchmark
        return {"rmse": float("nan"), "ratio": float("nan"), "lambda": float("nan"), "error": str(exc)[:200]}
    stats = json.loads((directory / "statistics.json").read_text())["time means"]
    out = {"rmse": stats["analysis mean rmse"], "ratio": stats["analysis spread"] / stats["analysis mean rmse"],
           "seconds": time.perf_counter() - started}
    if "adaptive" in cfg:
        import netCDF4

        with netCDF4.Dataset(directory / "adaptive.nc") as ds:
            out["lambda"] = float(ds["inflation_mean"][-1])
            out["lambda mean"] = float(np.mean(ds["inflation_mean"][cfg["cycling"]["spin-up cycles"]:]))
    else:
        out["lambda"] = cfg["local ensemble DA"]["inflation"]["mult"]
    shutil.rmtree(directory)
    return out


# DAPPER --------------------------------------------------------------------------------------
def run_dapper(kind: str, xN: float, twin: dict[str, Any], cycles: int, spin_up: int) -> dict[str, Any]:
    import dapper.da_methods as da
    import dapper.mods.Lorenz96 as l96
    from dapper.tools.randvars import RV

    e0 = twin["E0"]
    model = hmm(cycles, RV(M=40, func=lambda n: e0.copy()), localizer=kind == "LETKF", observed=twin["observed"],
                dko=twin["dko"])
    xp = da.EnKF_N(N=NMEMBERS, xN=xN) if kind == "ETKF" else da.LETKF(N=NMEMBERS, loc_rad=LOC_RAD, xN=xN)
    saved = l96.Force
    l96.Force = twin["F"]
    # DAPPER's truth array has every model step: the analysis times are every dko-th.
    xx = twin["truth"] if twin["dko"] == 1 else _fine_truth(twin)
    try:
        started = time.perf_counter()
        xp.assimilate(model, xx, twin["yy"], liveplots=False)
        seconds = time.perf_counter() - started
    except Exception as exc:
        return {"rmse": float("nan"), "ratio": float("nan"), "lambda": float("nan"), "error": str(exc)[:200]}
    finally:
        l96.Force = saved
    rmse = np.asarray(xp.stats.err.rms.a, dtype=np.float64)[spin_up:]
    sprd = np.asarray(xp.stats.spread.rms.a, dtype=np.float64)[spin_up:]
    infl = getattr(xp.stats, "infl", None)
    ad = getattr(xp.stats, "ad_inf", None)
    series = infl if infl is not None else ad
    lam = float("nan")
    if series is not None:
        values = np.asarray(series.a, dtype=np.float64)
        values = values[np.isfinite(values)]
        lam = float(values[-1]) ** 2 if values.size else lam     # DAPPER records l1: the anomalies' factor
    return {"rmse": float(np.mean(rmse)), "ratio": float(np.mean(sprd) / np.mean(rmse)), "lambda": lam,
            "seconds": seconds}


def _fine_truth(twin: dict[str, Any]) -> np.ndarray:
    """The truth at every model step (DAPPER's ``xx``) for windows of several steps."""
    x = twin["truth"][0]
    out = [x]
    for _ in range((twin["truth"].shape[0] - 1) * twin["dko"]):
        x = l96_step(x, 8.0)
        out.append(x)
    return np.array(out)


# Main -----------------------------------------------------------------------------------------
def run_case(case: str, cycles: int, spin_up: int, seed: int, families: list[str], skip_dapper: bool,
             sweep_values: list[float], schemes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    twin = make_twin(case, cycles, seed)
    # Per process: several runs of this script (other cases, seeds or rows) may share the machine.
    data = OUT / "data" / f"{case}.{os.getpid()}"
    run_dir = OUT / "run" / f"{case}.{os.getpid()}"
    if data.exists():
        shutil.rmtree(data)
    start = START
    step = np.timedelta64(6 * twin["dko"], "h")
    entries = numpy_to_cycle().write_filter_experiment(data, start, step, twin["truth"], twin["yy"], obs_error=1.0,
                                                        observed=twin["observed"], ensemble=twin["Eb"])
    rows: dict[str, Any] = {}
    for family in families:
        localized = family == "LETKF"
        sweep = {}
        for mult in sweep_values:
            res = run_pyoops(pyoops_config(twin, entries, cycles, spin_up, run_dir, localized, mult))
            sweep[mult] = res
            print(f"  {case} fixed {family} mult {mult}: {res['rmse']:.4f}", flush=True)
        if sweep:
            rows[f"fixed {family}"] = sweep
        for name, scheme in schemes.items():
            res = run_pyoops(pyoops_config(twin, entries, cycles, spin_up, run_dir, localized,
                                           adaptive=scheme))
            rows[f"pyoops {family} {name}"] = res
            print(f"  {case} pyoops {family} {name}: {res['rmse']:.4f} (lambda {res.get('lambda', 0):.3f})",
                  flush=True)
        if not skip_dapper:
            for xN in (1.0, 2.0):
                res = run_dapper(family, xN, twin, cycles, spin_up)
                rows[f"DAPPER {family} EnKF-N xN={xN:g}"] = res
                print(f"  {case} DAPPER {family} EnKF-N xN={xN:g}: {res['rmse']:.4f}", flush=True)
    shutil.rmtree(data, ignore_errors=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=2200)
    ap.add_argument("--spin-up", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--families", nargs="*", default=["ETKF", "LETKF"])
    ap.add_argument("--no-dapper", action="store_true")
    ap.add_argument("--sweep", nargs="*", type=float, default=list(SWEEP), help="fixed mult values")
    ap.add_argument("--schemes", nargs="*", default=list(SCHEMES))
    ap.add_argument("--tag", default="", help="write results_<tag>.json instead of results.json (e.g. other seeds)")
    ap.add_argument("--seed-report", nargs="*", default=None, metavar="TAG",
                    help="run nothing: the statistics over seeds of results_seeds_<TAG>.json for each TAG")
    ap.add_argument("--select-seeds", nargs="*", type=int, default=[2026, 2027],
                    help="with several twins, also choose the own and peer rows on these seeds and compare them on "
                         "the others (default: 2026 2027, the seeds the own rows were designed on)")
    ap.add_argument("--seeds", nargs="*", type=int, default=None,
                    help="several twins: results_seeds.json and the statistics over seeds (no sweep)")
    ap.add_argument("--merge", action="store_true",
                    help="with --seed-report: one report of the twins of all the TAGs (runs of disjoint seeds)")
    ap.add_argument("--own", default=None, metavar="ROW",
                    help="with --seed-report: a row fixed in advance (e.g. 'pyoops ETKF likelihood marginal') against "
                         "every peer row, paired twin by twin")
    args = ap.parse_args()
    if args.seed_report is not None:
        loaded = [json.loads((OUT / f"results_seeds_{tag}.json").read_text()) for tag in args.seed_report]
        if args.merge:
            loaded = [merge_seed_results(loaded)]
        for results in loaded:
            seed_report(results, args.select_seeds)
            if args.own:
                against_every_peer(results, args.own)
        return
    dapper_quiet()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.seeds:
        run_seeds(args)
        return
    results_file = OUT / (f"results_{args.tag}.json" if args.tag else "results.json")
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    started = time.perf_counter()
    for case in args.cases:
        print(f"case {case}", flush=True)
        rows = run_case(case, args.cycles, args.spin_up, args.seed, args.families, args.no_dapper,
                        args.sweep, {k: SCHEMES[k] for k in args.schemes})
        results.setdefault(case, {}).update(rows)        # rows of other families or schemes are kept
        results_file.write_text(json.dumps(results, indent=1, default=str))
    import dapper

    import pyoops

    meta = {"cycles": args.cycles, "spin-up": args.spin_up, "seed": args.seed, "python": platform.python_version(),
            "numpy": np.__version__, "pyoops": pyoops.__version__, "dapper": dapper.__version__,
            "load": os.getloadavg(), "wall seconds": time.perf_counter() - started}
    results["meta"] = meta
    results_file.write_text(json.dumps(results, indent=1, default=str))
    report(results)


def best_fixed(sweep: dict[Any, Any]) -> tuple[float, dict[str, Any]]:
    """The mult of the sweep with the lowest RMSE (NaN, and the first mult, if every run diverged)."""
    finite = {float(m): r for m, r in sweep.items() if np.isfinite(r["rmse"])}
    if not finite:
        m = float(next(iter(sweep)))
        return m, {"rmse": float("nan"), "ratio": float("nan")}
    m = min(finite, key=lambda k: finite[k]["rmse"])
    return m, finite[m]


def report(results: dict[str, Any]) -> None:
    cases = [c for c in CASES if c in results]
    if not cases:
        return
    names: list[str] = []
    for c in cases:
        for k in results[c]:
            if not k.startswith("fixed") and k not in names:
                names.append(k)
    print()
    header = ["row"] + cases
    lines = [header]
    for family in ("ETKF", "LETKF"):
        key = f"fixed {family}"
        if not any(key in results[c] for c in cases):
            continue
        row = [f"best fixed {family} (mult)"]
        for c in cases:
            if key not in results[c]:
                row.append("-")
                continue
            m, r = best_fixed(results[c][key])
            row.append(f"{r['rmse']:.4f} ({m:g})")
        lines.append(row)
        if key in results.get("a", {}):
            ma, _ = best_fixed(results["a"][key])
            row = [f"fixed {family} tuned on a (mult {ma:g})"]
            for c in cases:
                r = results[c].get(key, {}).get(str(ma), results[c].get(key, {}).get(ma))
                row.append(f"{r['rmse']:.4f}" if r else "-")
            lines.append(row)
    for n in names:
        row = [n]
        for c in cases:
            r = results[c].get(n)
            row.append("-" if r is None else f"{r['rmse']:.4f} [{r['ratio']:.2f}; {r.get('lambda', float('nan')):.2f}]")
        lines.append(row)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    sep = "  ".join("=" * w for w in widths)
    print(sep)
    for i, line in enumerate(lines):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
        if i == 0:
            print(sep)
    print(sep)
    print("cells: time-mean analysis RMSE [spread/RMSE; final inflation (domain mean, covariance factor)]")
    verdicts(results, cases)
    print(json.dumps(results.get("meta", {})))


OWN = ("likelihood", "likelihood m100", "likelihood per cycle", "likelihood m100 per cycle", "likelihood marginal",
       "likelihood marginal m100 per cycle", "likelihood + R", "enkf-n + R")
PEERS = ("miyoshi", "anderson", "el gharamti", "enkf-n xN=1", "enkf-n xN=2")


def _own_and_peer_names(rows: dict[str, Any]) -> tuple[list[str], list[str]]:
    own = [f"pyoops {f} {s}" for f in ("ETKF", "LETKF") for s in OWN]
    peers = ([f"pyoops {f} {s}" for f in ("ETKF", "LETKF") for s in PEERS]
             + [f"DAPPER {f} EnKF-N xN={x}" for f in ("ETKF", "LETKF") for x in ("1", "2")])
    return [n for n in own if n in rows], [n for n in peers if n in rows]


def verdicts(results: dict[str, Any], cases: list[str]) -> None:
    """Per case: pyoops's own best (likelihood with memory 1000 or 100, likelihood + R; either filter) against the
    best peer (DAPPER's EnKF-N with xN 1 or 2 and pyoops's implementation of it, the DART-style and Miyoshi schemes;
    either filter) and the single fixed inflation tuned on case a (per filter)."""
    tuned = {}
    for family in ("ETKF", "LETKF"):
        key = f"fixed {family}"
        if key in results.get("a", {}):
            tuned[family] = best_fixed(results["a"][key])[0]
    print()
    print("case   pyoops own best                     best peer                                fixed tuned on a   "
          "verdict")
    wins = 0
    for c in cases:
        rows = results[c]

        def best(names: list[str]) -> tuple[str, float]:
            found = [(n, rows[n]["rmse"]) for n in names if n in rows and np.isfinite(rows[n]["rmse"])]
            return min(found, key=lambda t: t[1]) if found else ("-", float("inf"))

        own_names, peer_names = _own_and_peer_names(rows)
        own, peer = best(own_names), best(peer_names)
        fixed = [rows[f"fixed {f}"].get(str(m), rows[f"fixed {f}"].get(m)) for f, m in tuned.items()
                 if f"fixed {f}" in rows]
        fixed_best = min((r["rmse"] for r in fixed if r and np.isfinite(r["rmse"])), default=float("inf"))
        beats_peer = own[1] < peer[1]
        wins += beats_peer
        verdict = ("beats every peer" if beats_peer else
                   "within 0.01 of the best peer" if own[1] <= peer[1] + 0.01 else "MORE than 0.01 above the best peer")
        verdict += "; beats the fixed tuned on a" if own[1] < fixed_best else "; does NOT beat the fixed tuned on a"
        print(f"{c:6s} {own[0]:28s} {own[1]:.4f}  {peer[0]:33s} {peer[1]:.4f}  {fixed_best:.4f}             {verdict}")
    print(f"pyoops's own scheme beats every peer in {wins} of {len(cases)} cases")


def run_seeds(args: argparse.Namespace) -> None:
    """The chosen cases on twins of several seeds; rows merged into ``results_seeds.json``."""
    results_file = OUT / (f"results_seeds_{args.tag}.json" if args.tag else "results_seeds.json")
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    started = time.perf_counter()
    for seed in args.seeds:
        for case in args.cases:
            print(f"seed {seed} case {case}", flush=True)
            rows = run_case(case, args.cycles, args.spin_up, seed, args.families, args.no_dapper, [],
                            {k: SCHEMES[k] for k in args.schemes})
            results.setdefault(str(seed), {}).setdefault(case, {}).update(rows)
            results_file.write_text(json.dumps(results, indent=1, default=str))
    runs = results.setdefault("meta", {}).setdefault(",".join(args.cases), [])
    if isinstance(runs, dict):                           # written by an earlier version: one run per key
        runs = results["meta"][",".join(args.cases)] = [runs]
    runs.append({"cycles": args.cycles, "spin-up": args.spin_up, "seeds": args.seeds, "schemes": args.schemes,
                 "dapper": not args.no_dapper, "python": platform.python_version(), "numpy": np.__version__,
                 "load": os.getloadavg(), "wall seconds": time.perf_counter() - started})
    results_file.write_text(json.dumps(results, indent=1, default=str))
    seed_report(results, args.select_seeds)


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of ``a - b`` and the half-width of its 95 % Student-t interval (NaN with one pair)."""
    from scipy import stats

    diff = a - b
    half = stats.t.ppf(0.975, diff.size - 1) * diff.std(ddof=1) / np.sqrt(diff.size) if diff.size > 1 else np.nan
    return float(diff.mean()), float(half)


def seed_report(results: dict[str, Any], select: list[int] | None = None) -> None:
    """Per case, every row's mean +- sd over the seeds that ran it (a diverged run counts as failed, not
    averaged), and the paired difference own best - best peer with a 95 % t interval (rows run on every seed and
    never diverged; both chosen by their mean on these seeds, which makes either look better than it would on
    new twins)."""

    seeds = [s for s in results if s != "meta"]
    cases = [c for c in CASES if any(c in results[s] for s in seeds)]
    for case in cases:
        runs = {s: results[s][case] for s in seeds if case in results[s]}
        names = sorted({n for rows in runs.values() for n in rows})
        print(f"\ncase {case}: {len(runs)} seeds ({', '.join(runs)})")
        table = {}
        for n in names:
            values = np.array([runs[s][n]["rmse"] for s in runs if n in runs[s]])
            missing = len(runs) - values.size
            if not missing:
                table[n] = values
            ok = np.isfinite(values)
            spread = f"{values[ok].std(ddof=1):.4f}" if ok.sum() > 1 else "-"
            print(f"  {n:44s} mean {np.mean(values[ok]) if ok.any() else np.nan:.4f}  sd {spread}  "
                  f"diverged {int((~ok).sum())}/{values.size}" + (f"  (not run on {missing} seeds)" if missing else ""))
        complete = {n: v for n, v in table.items() if np.all(np.isfinite(v))}
        own, peers = _own_and_peer_names(complete)
        if not own or not peers:
            continue
        best_own = min(own, key=lambda n: complete[n].mean())
        best_peer = min(peers, key=lambda n: complete[n].mean())
        mean, half = _paired(complete[best_own], complete[best_peer])
        print(f"  own best {best_own} {complete[best_own].mean():.4f}; best peer {best_peer} "
              f"{complete[best_peer].mean():.4f}; paired difference {mean:+.4f} +- {half:.4f} (95 %)")
        # Rows fixed in advance: both chosen on the selection seeds, compared on the others (held out).
        chosen = np.array([s in {str(x) for x in (select or [])} for s in runs])
        if chosen.any() and (~chosen).sum() > 1:
            pick_own = min(own, key=lambda n: complete[n][chosen].mean())
            pick_peer = min(peers, key=lambda n: complete[n][chosen].mean())
            mean, half = _paired(complete[pick_own][~chosen], complete[pick_peer][~chosen])
            print(f"  chosen on seeds {', '.join(s for s, c in zip(runs, chosen) if c)}: {pick_own} - {pick_peer} on "
                  f"the {int((~chosen).sum())} others: {mean:+.4f} +- {half:.4f} (95 %)")


def merge_seed_results(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The twins of several ``results_seeds_<tag>.json`` in one dictionary (their ``meta`` entries listed); a seed
    present in two files is refused (the rows of one twin would be mixed)."""
    merged: dict[str, Any] = {"meta": []}
    for results in runs:
        for seed, cases in results.items():
            if seed == "meta":
                merged["meta"].append(cases)
                continue
            if seed in merged:
                raise SystemExit(f"seed {seed} is in two of the merged files")
            merged[seed] = cases
    return merged


def against_every_peer(results: dict[str, Any], own: str) -> None:
    """Per case: the row ``own`` (fixed in advance) minus every peer row, paired over the twins where both ran to
    the end (a diverged run is not averaged; divergences are counted), with a 95 % Student-t interval; a *resolved
    win* when every interval lies below zero."""
    seeds = [s for s in results if s != "meta"]
    for case in [c for c in CASES if any(c in results[s] for s in seeds)]:
        runs = {s: results[s][case] for s in seeds if case in results[s]}
        if not any(own in rows for rows in runs.values()):
            print(f"\ncase {case}: no row {own!r}")
            continue
        _, peers = _own_and_peer_names({n: None for rows in runs.values() for n in rows})
        print(f"\ncase {case}: {own} against every peer, paired over the twins where both ran to the end")
        upper = []
        for peer in peers:
            pairs = [(rows[own]["rmse"], rows[peer]["rmse"]) for rows in runs.values() if own in rows and peer in rows]
            a, b = (np.array(v, dtype=float) for v in zip(*pairs))
            both = np.isfinite(a) & np.isfinite(b)
            mean, half = _paired(a[both], b[both])
            upper.append(mean + half)
            print(f"  - {peer:36s} {mean:+.4f} +- {half:.4f} (95 %; {int(both.sum())} twins; diverged: own "
                  f"{int((~np.isfinite(a)).sum())}, peer {int((~np.isfinite(b)).sum())} of {a.size})")
        verdict = "a resolved win: every interval below zero" if upper and max(upper) < 0 else \
            "not a resolved win: some interval reaches zero or above"
        print(f"  {verdict}")


if __name__ == "__main__":
    main()
