"""Benchmark: time and peak memory of one hybrid B application on 2-D periodic grids.

The covariance is the hybrid of a static and a localized ensemble covariance, with a
standard deviation common to both (the SABER layout of ``pyoops.saber.generic.hybrid``)::

    B = S (0.5 C + 0.5 B_e) S,   B_e x = sum_k e_k o L(e_k o x)

on an n = N x N doubly periodic unit square (variable ``h``): S = StdDev (0.8),
C = ``spectral correlation`` (Gaussian, length 0.05) or, with ``--static diffusion``,
``diffusion`` (Matérn nu = 1, length 0.05, spectral solver), L = ``spectral correlation``
(Gaussian, length 0.15), and 40 ensemble members drawn from a Gaussian correlation of
length 0.1 (generated in memory, member by member, and handed to the chain through
:class:`~pyoops.saber.blocks.BlockContext`, which brings them inwards through
StdDev's left inverse as a file-read ensemble would be).

Each grid size runs in a fresh Python subprocess, so that its peak memory is measured
independently:

* ``time``: best of R applications of B to one field (after one warm-up), R chosen so
  that the timed loop lasts about two seconds (at least 3); wall-clock time, and the
  process's CPU time (user + system), which is less disturbed by other processes on a
  shared machine (the computation is single-threaded);
* ``apply peak``: the peak of memory allocated *during* one application (tracemalloc,
  which NumPy and SciPy arrays report to), i.e. the work space of B on top of what the
  covariance holds;
* ``held``: the resident set after B is built minus that after the imports: what the
  covariance keeps (the members and their copies, spectra);
* ``RSS peak``: the subprocess's peak resident set (``ru_maxrss``): interpreter,
  libraries, the members and every copy the blocks keep, and the application;
  per grid point it is counted above the resident set after the imports
  (``RSS start``, about 90 MiB), which does not depend on n.

A dense n x n matrix would need 8 n^2 bytes (8 TB at 1024^2): memory per grid point
that stays roughly constant shows that none is formed.  The log-log slope of time
against n is printed with that of n log n over the same sizes (FFT cost).

Usage::

    python benchmarks/saber_hybrid.py [--sizes 64 128 256 512 1024] [--members 40]
                                      [--members-per-batch 10] [--static spectral|diffusion]
                                      [--rounds 1]

Record the printed table in docs/benchmarks.rst.  No assertion: a benchmark exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

DATE = "2010-01-01T00:00:00Z"


def covariance_config(static: str, members_per_batch: int | None) -> dict:
    if static == "spectral":
        central = {"saber block name": "spectral correlation", "length scale": 0.05}
    else:
        central = {"saber block name": "diffusion", "horizontal length scale": 0.05, "smoothness": 1.0}
    ensemble = {"saber block name": "Ensemble",
                "localization": {"saber central block": {"saber block name": "spectral correlation",
                                                         "length scale": 0.15}}}
    if members_per_batch:
        ensemble["members per batch"] = members_per_batch
    return {
        "covariance model": "SABER",
        "saber central block": {
            "saber block name": "Hybrid",
            "components": [
                {"covariance": {"saber central block": central}, "weight": {"value": 0.5}},
                {"covariance": {"saber central block": ensemble}, "weight": {"value": 0.5}},
            ],
        },
        "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": 0.8}}],
    }


def _rss_mib() -> float:
    """Current resident set (MiB), from /proc when available."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def worker(n: int, nmembers: int, members_per_batch: int | None, static: str) -> dict:
    """Build B on an n x n grid, time one application, measure its memory; return a record."""
    from pyoops.fields.fieldset import FieldSet
    from pyoops.generic.grid import StructuredGrid
    from pyoops.registry import get_registry
    from pyoops.saber import BlockContext, ErrorCovariance, SaberBlockChain
    from pyoops.util.datetime import DateTime
    from pyoops.util.random import generator
    from pyoops.util.variables import Variables

    registry = get_registry()
    gc.collect()
    rss_start = _rss_mib()  # interpreter, libraries and plugins: subtracted from the peak below
    geometry = StructuredGrid.periodic_2d(n, n, variables=["h"])
    variables = Variables(["h"])
    date = DateTime(DATE)

    # Ensemble perturbations: draws from a Gaussian correlation, one member at a time.
    t0 = time.perf_counter()
    truth = ErrorCovariance({"saber central block": {"saber block name": "spectral correlation",
                                                     "length scale": 0.1}},
                            geometry, variables, date, registry, path="truth")
    rng = generator(11, "benchmark members")
    pert = np.empty((nmembers, n, n))
    for k in range(nmembers):
        pert[k] = truth.chain.randomize(rng)["h"]
    del truth
    context = BlockContext(geometry, variables, date, registry, None,
                           ensemble=FieldSet({"h": pert}, copy=False), ensemble_is_perturbations=True,
                           path="background error")
    chain = SaberBlockChain(covariance_config(static, members_per_batch), context, "background error")
    del pert, context
    build_seconds = time.perf_counter() - t0

    x = geometry.zeros(variables)
    x["h"][...] = generator(12, "benchmark input").standard_normal((n, n))
    gc.collect()
    rss_built = _rss_mib()

    y = chain.multiply(x.copy())  # warm-up (FFT plans, caches)
    start, cpu = time.perf_counter(), time.process_time()
    first = chain.multiply(x.copy())
    once, best_cpu = time.perf_counter() - start, time.process_time() - cpu
    repeat = max(3, min(100, int(math.ceil(2.0 / max(once, 1e-6)))))
    best = once
    for _ in range(repeat - 1):
        start, cpu = time.perf_counter(), time.process_time()
        y = chain.multiply(x.copy())
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    del first

    gc.collect()
    xc = x.copy()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    y = chain.multiply(xc)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    # Symmetry check of this very operator, as a sanity check of what was timed (not an assertion).
    z = geometry.zeros(variables)
    z["h"][...] = generator(13, "benchmark input").standard_normal((n, n))
    bz = chain.multiply(z.copy())
    sym = abs(y.dot(z) - x.dot(bz)) / abs(y.dot(z))

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    maxrss_mib = maxrss / (1024.0 * 1024.0) if sys.platform == "darwin" else maxrss / 1024.0
    return {"n": n * n, "side": n, "seconds": best, "cpu seconds": best_cpu, "repeat": repeat,
            "build seconds": build_seconds, "apply peak MiB": (peak - base) / 2**20, "rss start MiB": rss_start,
            "rss built MiB": rss_built, "rss peak MiB": maxrss_mib, "symmetry": sym}


def run_size(n: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n), "--members", str(args.members),
           "--members-per-batch", str(args.members_per_batch), "--static", args.static]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"n": n * n, "side": n, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024],
                        help="grid sides N (n = N^2 points)")
    parser.add_argument("--members", type=int, default=40)
    parser.add_argument("--members-per-batch", type=int, default=10,
                        help="'members per batch' of the Ensemble block (0: all members at once)")
    parser.add_argument("--static", choices=["spectral", "diffusion"], default="spectral")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run each size in this many fresh subprocesses and keep the best times "
                             "(for shared, noisy machines)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker is not None:
        import logging

        logging.getLogger("pyoops").setLevel(logging.WARNING)
        record = worker(args.worker, args.members, args.members_per_batch or None, args.static)
        print(json.dumps(record))
        return 0

    import scipy

    print(f"Python {platform.python_version()}, NumPy {np.__version__}, SciPy {scipy.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs")
    batch = args.members_per_batch or args.members
    print(f"One application of B = S (0.5 C + 0.5 B_e) S; C = {args.static}; B_e: {args.members} members, "
          f"spectral localization, {batch} members per batch")
    header = (f"{'grid':>11} {'n':>9} {'time [s]':>9} {'CPU [s]':>9} {'µs/point':>9} {'apply peak [MiB]':>17} "
              f"{'B/point':>8} {'held B/point':>13} {'RSS peak [MiB]':>15} {'B/point':>8} {'symmetry':>9}")
    print(header)
    print(f"{'(µs/point: CPU time; RSS B/point: above the RSS after the imports)':>121}")
    records = []
    for side in args.sizes:
        rec = run_size(side, args)
        for _ in range(args.rounds - 1):  # best time of several fresh subprocesses
            again = run_size(side, args)
            if "error" not in again and "error" not in rec:
                for key in ("seconds", "cpu seconds"):
                    rec[key] = min(rec[key], again[key])
        if "error" in rec:
            print(f"{side:>5} x {side:<4} failed: {rec['error']}")
            continue
        records.append(rec)
        n = rec["n"]
        held = (rec["rss built MiB"] - rec["rss start MiB"]) * 2**20 / n
        above = (rec["rss peak MiB"] - rec["rss start MiB"]) * 2**20 / n
        print(f"{side:>5} x {side:<4} {n:>9d} {rec['seconds']:>9.4g} {rec['cpu seconds']:>9.4g} "
              f"{1e6 * rec['cpu seconds'] / n:>9.3f} {rec['apply peak MiB']:>17.1f} "
              f"{rec['apply peak MiB'] * 2**20 / n:>8.0f} {held:>13.0f} {rec['rss peak MiB']:>15.1f} {above:>8.0f} "
              f"{rec['symmetry']:>9.1e}", flush=True)
    if len(records) >= 2:
        n = np.array([r["n"] for r in records], dtype=float)
        ref = np.polyfit(np.log(n), np.log(n * np.log(n)), 1)[0]
        for key, label in (("seconds", "wall time"), ("cpu seconds", "CPU time")):
            t = np.array([r[key] for r in records])
            slope = np.polyfit(np.log(n), np.log(t), 1)[0]
            line = f"log-log slope of {label} vs n: {slope:.3f} over all sizes (n log n: {ref:.3f}; n: 1; n^2: 2)"
            if len(records) >= 4:
                s3 = np.polyfit(np.log(n[-3:]), np.log(t[-3:]), 1)[0]
                r3 = np.polyfit(np.log(n[-3:]), np.log(n[-3:] * np.log(n[-3:])), 1)[0]
                line += f"; {s3:.3f} over the 3 largest (n log n: {r3:.3f})"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
