"""Benchmark: small problems at small-problem cost (issue 11, item 3).

Lorenz-96 (n = 40) cycled through ``pyoops.run("cycle", cfg)``, the configuration of
``tests/ensemble/test_cycle.py::l96_cycle``: all 40 grid points observed every ``PT6H`` with
error 1, B = 0.6² × spectral correlation (length 0.02), window ``PT6H``:

``3D-Var``
    one outer loop, ``ninner`` 20, gradient-norm reduction 1e-6 (the test's settings);
``4D-Var``
    lag 1 (the window is one model step, observations at its end), the TLM ``Lorenz96TLM``,
    three outer loops of the same inner settings.

Each is run with the pyoops of every ``--roots`` entry (``name=path``: a checkout; each run is
a subprocess with ``PYTHONPATH=path:path/plugins/lorenz96/src``, so a base commit and the
working tree are measured in one invocation, alternately) and every minimizer of ``--minimizers``
that checkout knows.  Reported per run: *loop*, ``statistics.json``'s mean seconds of one cycle
(observations, analysis, forecast, statistics; no set-up, checkpoint or output files), *e2e*, the
wall time of the whole ``pyoops.run`` call divided by the cycles, and the time-mean analysis RMSE
over the cycles after the spin-up.

With DAPPER importable (``--dapper``), also DAPPER's ``Var3D(B)`` and ``Var4D(B, Lag=1, nIter=3)``
seconds per cycle with ``rc.comps.error_only`` on its own Lorenz-96 twin of the same size
(``benchmarks/dapper_compare.py``'s HMM: all 40 variables every step with R = I, B = 0.02 times
the climatological covariance): the same problem sizes, not the same numbers.  Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/small_problems.py [--cycles 1100] [--spin-up 100]
        [--roots base=/tmp/base,new=.] [--minimizers DRPCG,DirectSolve] [--repeats 1] [--dapper]

Writes ``benchmarks/output/small_problems/results.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "output" / "small_problems"
sys.path.insert(0, str(HERE.parent / "tests" / "ensemble"))

from test_cycle import l96_cycle  # noqa: E402  (the Lorenz-96 cycle configuration of the tests)

METHODS = ("3D-Var", "4D-Var")


def config(method: str, cycles: int, spin_up: int, directory: Path, algorithm: str) -> dict[str, Any]:
    """The Lorenz-96 cycle of ``tests/ensemble/test_cycle.py::l96_cycle`` (``4D-Var``: lag 1, three outer loops)."""
    cfg = l96_cycle(method, directory, cycles=cycles)
    cfg["cycling"]["spin-up cycles"] = spin_up
    cfg["variational"]["minimizer"]["algorithm"] = algorithm
    if method == "4D-Var":
        cfg["cost function"]["linear model"] = {"name": "Lorenz96TLM", "tstep": "PT6H"}
        cfg["variational"]["iterations"] *= 3
    return cfg


def worker(method: str, algorithm: str, cycles: int, spin_up: int) -> dict[str, Any]:
    """One run with the pyoops on ``sys.path``: loop and end-to-end seconds per cycle, mean analysis RMSE."""
    import pyoops
    from pyoops.assimilation.minimizers import ALGORITHMS

    if algorithm not in ALGORITHMS:
        return {"skipped": f"{algorithm} unknown to this pyoops"}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "out"
        cfg = config(method, cycles, spin_up, directory, algorithm)
        started = time.perf_counter()
        pyoops.run("cycle", cfg)
        wall = time.perf_counter() - started
        stats = json.loads((directory / "statistics.json").read_text())
    return {"loop s/cycle": stats["seconds per cycle"], "e2e s/cycle": wall / cycles,
            "analysis rmse": stats["time means"]["analysis rmse"]}


def run_worker(root: Path, method: str, algorithm: str, cycles: int, spin_up: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=f"{root}:{root / 'plugins' / 'lorenz96' / 'src'}")
    out = subprocess.run([sys.executable, __file__, "--worker", method, algorithm, "--cycles", str(cycles),
                          "--spin-up", str(spin_up)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _patch_var4d_obs(model: Any) -> None:
    """DAPPER 1.8.1's ``Var4D`` calls ``HMM.Obs(ko)(ko).linear(x)`` (the time index passed once
    more, to the observation *model*), which fails with ``invalid index to scalar variable``; the
    observation model here answers an integer with its own operator, so the call gets ``.linear``
    (the other calls, on states, are unchanged)."""
    op = model.Obs(0)
    if not hasattr(op, "linear"):  # DAPPER 1.7: a plain function of (x, t)
        return
    plain = op.model

    def obs_model(x: Any, *rest: Any) -> Any:
        return op if isinstance(x, (int, np.integer)) else plain(x, *rest)

    op.model = obs_model


def dapper_times(cycles: int, spin_up: int, seed: int = 3000) -> dict[str, dict[str, float]]:
    """DAPPER's Var3D and Var4D (Lag 1, 3 iterations) with error-only statistics, on its own twin."""
    os.environ.setdefault("DAPPER_LIVEPLOTTING", "no")
    sys.path.insert(0, str(HERE))
    import dapper
    import dapper.da_methods as da
    import dapper_compare as dc
    import l96_twin
    from dapper.tools.randvars import GaussRV

    dc.dapper_quiet()
    bmatrix = 0.02 * l96_twin.climatological_covariance()
    twin = dc.make_twin(cycles, 1000, seed)
    methods = {"3D-Var": lambda: da.Var3D(B=bmatrix, xB=1.0),
               "4D-Var": lambda: da.Var4D(B=bmatrix, xB=1.0, Lag=1, nIter=3)}
    out: dict[str, dict[str, float]] = {"version": {"DAPPER": dapper.__version__}}  # type: ignore[dict-item]
    for name, make in methods.items():
        model = dc.hmm(cycles, GaussRV(mu=twin["x0b"], C=1.0))
        _patch_var4d_obs(model)
        dc.set_error_only(True)
        dapper.set_seed(seed + 2)
        xp = make()
        started = time.perf_counter()
        xp.assimilate(model, twin["xx"], twin["yy"], liveplots=False)
        wall = time.perf_counter() - started
        dc.set_error_only(False)
        rmse = np.asarray(xp.stats.err.rms.a, dtype=np.float64)
        out[name] = {"error-only s/cycle": wall / cycles, "analysis rmse (its twin)": float(np.mean(rmse[spin_up:]))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=1100)
    parser.add_argument("--spin-up", type=int, default=100)
    parser.add_argument("--roots", default=f"new={HERE.parent}", help="name=path,... (default: this checkout)")
    parser.add_argument("--minimizers", default="DRPCG,DirectSolve")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dapper", action="store_true", help="also time DAPPER's Var3D and Var4D (error-only)")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "MINIMIZER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.cycles, args.spin_up)))
        return
    roots = dict(item.split("=", 1) for item in args.roots.split(","))
    minimizers = args.minimizers.split(",")
    load_start = os.getloadavg()
    runs: list[dict[str, Any]] = []
    dapper_runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for method in METHODS:
            for algorithm in minimizers:
                for name, root in roots.items():  # alternate the checkouts run by run
                    print(f"{method} {algorithm} {name} (repeat {repeat + 1}) ...", flush=True)
                    r = run_worker(Path(root).resolve(), method, algorithm, args.cycles, args.spin_up)
                    runs.append({"method": method, "minimizer": algorithm, "root": name, "repeat": repeat, **r})
        if args.dapper:   # DAPPER in every repeat, between pyoops's runs: the ratios share the machine's load
            print(f"DAPPER Var3D / Var4D (error-only) (repeat {repeat + 1}) ...", flush=True)
            dapper_runs.append(dapper_times(args.cycles, args.spin_up))
    results: dict[str, Any] = {"runs": runs}
    if dapper_runs:
        results["DAPPER"] = dapper_runs[-1]
        results["DAPPER repeats"] = dapper_runs
    results["environment"] = {
        "python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"), "load average at start": load_start,
        "load average at end": os.getloadavg(), "cycles": args.cycles, "spin-up": args.spin_up,
        "roots": roots, "command": " ".join(sys.argv)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    report(results)


def report(results: dict[str, Any]) -> None:
    print(f"\n{'method':<7} {'minimizer':<11} {'pyoops':<6} {'loop ms':>8} {'e2e ms':>8} {'RMSE a':>13}")
    for r in results["runs"]:
        if "skipped" in r:
            continue
        print(f"{r['method']:<7} {r['minimizer']:<11} {r['root']:<6} {1e3 * r['loop s/cycle']:>8.3f} "
              f"{1e3 * r['e2e s/cycle']:>8.3f} {r['analysis rmse']:>13.10f}")
    repeats = results.get("DAPPER repeats") or ([results["DAPPER"]] if "DAPPER" in results else [])
    for i, dapper in enumerate(repeats):
        for name, r in dapper.items():
            if name == "version":
                continue
            print(f"{name:<7} DAPPER {dapper['version']['DAPPER']} error-only (repeat {i + 1}) "
                  f"{1e3 * r['error-only s/cycle']:.3f} ms/cycle "
                  f"(RMSE on its twin {r['analysis rmse (its twin)']:.4f})")
            mine = [x for x in results["runs"]
                    if x["method"] == name and x.get("repeat", 0) == i and "skipped" not in x]
            for x in mine:
                print(f"        loop / DAPPER error-only, {x['minimizer']} {x['root']}: "
                      f"{x['loop s/cycle'] / r['error-only s/cycle']:.2f}")
    env = results["environment"]
    print(f"load average {env['load average at start']} -> {env['load average at end']}")


if __name__ == "__main__":
    main()
