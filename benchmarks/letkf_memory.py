"""Benchmark: LETKF at scale on Lorenz-96, observation-search time and peak memory.

For each size ``n`` (grid points = observations), a fresh Python process builds a
Lorenz-96 ring of ``n`` points, ``n`` observations at uniformly random positions
(linear interpolation H), ``--members`` random members, and a Gaspari–Cohn
localization whose cutoff is ``--radius`` grid spacings (so every point sees about
``2 × radius`` observations, at every size); it times the observation search
(:func:`~pyoops.assimilation.letkf.local_obs_selection`) and one analysis
(:func:`~pyoops.assimilation.letkf.letkf_analysis`), and reports the peak resident set
size of the process (``resource.getrusage``, which includes the interpreter and the
imports: the ``baseline`` column is the peak before the search).  One process per size
keeps each peak its own.

Run with ``python benchmarks/letkf_memory.py [--sizes 4000 16000 64000] [--members 20]
[--radius 12] [--search auto|kdtree|brute] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np


def peak_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(n: int, members: int, radius: float, search: str, repeat: int, seed: int = 0) -> dict[str, float]:
    """One size in this process: the search and one analysis, timed, and the peak memory.

    The first search includes one-off costs (importing ``scipy.spatial``, first touches of
    memory); the search is then repeated ``repeat`` times and the best time kept.  The peak
    memory is read after the analysis, before the repetitions.
    """
    from pyoops.assimilation.letkf import ObsLocalization, letkf_analysis, local_obs_selection
    from pyoops.interface.geometry import Locations
    from pyoops_lorenz96 import Lorenz96Geometry

    rng = np.random.default_rng(seed)
    geometry = Lorenz96Geometry({"resol": n})
    locations = Locations({"x": rng.random(n)})
    h = geometry.interpolation_matrix(locations)
    xb = 3.0 * rng.standard_normal((members, n)) + 2.0
    hx = (h @ xb.T).T
    y = h @ rng.standard_normal(n) + rng.standard_normal(n)
    localization = [ObsLocalization(lengthscale=radius / n)]
    baseline = peak_mb()
    t0 = time.perf_counter()
    selection = local_obs_selection(geometry, locations, localization, search=search)
    t1 = time.perf_counter()
    xa = letkf_analysis(xb, hx, y, 1.0, selection, mult=1.05)
    t2 = time.perf_counter()
    assert np.isfinite(xa).all()
    peak = peak_mb()
    repeats = []
    for _ in range(repeat):
        t = time.perf_counter()
        local_obs_selection(geometry, locations, localization, search=search)
        repeats.append(time.perf_counter() - t)
    return {"n": n, "first_search_s": t1 - t0, "search_s": min(repeats, default=float("nan")),
            "analysis_s": t2 - t1, "rows": selection.nrows, "width": selection.width, "baseline_mb": baseline,
            "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 16000, 64000])
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--radius", type=float, default=12.0, help="localization cutoff in grid spacings")
    parser.add_argument("--search", default="auto", choices=["auto", "kdtree", "brute"])
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of the search (best time kept)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.members, args.radius, args.search, args.repeat)))
        return
    import numpy
    import scipy

    print(f"Python {platform.python_version()}, NumPy {numpy.__version__}, SciPy {scipy.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs; load: {os.getloadavg()}")
    print(f"Lorenz-96 LETKF, n = nobs, N = {args.members}, Gaspari-Cohn cutoff {args.radius:g} grid spacings, "
          f"search {args.search}")
    header = f"{'n = nobs':>9} {'rows':>7} {'width':>6} {'1st search [s]':>15} {'search [s]':>11} " \
             f"{'analysis [s]':>13} {'baseline [MB]':>14} {'peak [MB]':>10}"
    print(header)
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--worker", str(n), "--members", str(args.members),
                              "--radius", str(args.radius), "--search", args.search, "--repeat", str(args.repeat)],
                             check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['n']:>9d} {r['rows']:>7d} {r['width']:>6d} {r['first_search_s']:>15.3f} {r['search_s']:>11.3f} "
              f"{r['analysis_s']:>13.2f} "
              f"{r['baseline_mb']:>14.0f} {r['peak_mb']:>10.0f}", flush=True)


if __name__ == "__main__":
    main()
