"""Benchmark: the innovation likelihood at large observation counts, exact and matrix-free.

A Lorenz-96-like periodic ring of p observations one unit apart (circumference p, so the
correlation scales stay fixed in observation spacings while p grows), sigma_o = 1, one cycle per
size.  Static covariance C_s = G G^T of modest rank K = 2 * --modes + 1 (the constant and the
largest-scale Fourier modes, amplitudes from a Gaussian spectrum); N = --members ensemble
members drawn by FFT from a SOAR-like spectrum (correlation length --ensemble-length spacings),
a different covariance; Gaspari-Cohn localization with half-width --length spacings (support
2 * length: 4 * length + 1 neighbours per observation).  Innovations are drawn from the
unlocalized model at beta = 0.5, inflation = 1, a_o = 1 (d = G z1 sqrt(c_s) + Y z2 sqrt(c_e / (N-1))
+ z3); every likelihood is evaluated at that point with (beta, inflation, a_o) free.

Per p it times one likelihood + gradient evaluation (the mean over --repeats evaluations, after
one untimed evaluation that builds the caches) of

* ``cholesky``: the exact dense model (pyoops.diagnostics.tuning.model) with localization, only
  for p <= --exact-max;
* ``low-rank``: the matrix-free model without localization (exact: Woodbury and the matrix
  determinant lemma, O(p (K + N)^2));
* ``stochastic``: the matrix-free model with localization (SLQ + Hutchinson, --probes probes);

their peak traced memory (tracemalloc, construction plus evaluations, MiB), and for the
stochastic path the probe standard error of -log L and its error against Cholesky where that is
computed (relative, and in standard errors).  ``low-rank err`` compares the low-rank path with
Cholesky on the unlocalized model (p <= --exact-max).  Prints a table; no assertion.

``--fit P`` then times one end-to-end maximum-likelihood fit on a ring of P observations:
``estimate(data, "ml", ["beta", "inflation", "a_o"], {"length": --length})`` with the default
``likelihood="auto"`` (matrix-free above 2000 observations), --probes probes, from the default start
(beta 0.5, inflation 1, a_o 1, which is the truth here), and prints the estimates with their standard
errors and the fit's message.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/tuning_large_p.py --sizes 500 1000 2000 4000 8000 20000 --fit 8000
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from pyoops.diagnostics.tuning import TuningCycle, TuningData, estimate
from pyoops.diagnostics.tuning.localization import periodic_distance
from pyoops.diagnostics.tuning.matrix_free import MatrixFreeCovarianceModel
from pyoops.diagnostics.tuning.model import HybridCovarianceModel
from pyoops.diagnostics.tuning.parameters import Parametrization

FREE = ("beta", "inflation", "a_o")
TRUTH = {"beta": 0.5, "inflation": 1.0, "a_o": 1.0}


def ring_cycle(rng: np.random.Generator, p: int, modes: int, members: int, ensemble_length: float) -> TuningCycle:
    """One cycle on the ring of circumference p (observations at 0, 1, ..., p - 1)."""
    x = np.arange(p, dtype=np.float64)
    k = np.arange(1, modes + 1)
    waves = 2.0 * np.pi * np.outer(x, k) / p
    amplitude = np.exp(-0.5 * (k / modes) ** 2)
    g = np.hstack([np.ones((p, 1)), np.cos(waves) * amplitude, np.sin(waves) * amplitude])
    g *= math.sqrt(p / np.sum(g * g))                                  # unit mean static variance
    wavenumber = 2.0 * np.pi * np.arange(p // 2 + 1) / p
    spectrum = 1.0 / (1.0 + (wavenumber * ensemble_length) ** 2) ** 2   # SOAR-like
    coefficients = (rng.standard_normal((members, p // 2 + 1)) + 1j * rng.standard_normal((members, p // 2 + 1)))
    y = np.fft.irfft(coefficients * np.sqrt(spectrum), n=p, axis=1).T
    y -= y.mean(axis=1, keepdims=True)
    y *= math.sqrt(p * (members - 1) / np.sum(y * y))                  # unit mean ensemble variance
    c_s, c_e = 0.5, 0.5                                                # beta = 0.5, inflation = 1
    d = (math.sqrt(c_s) * g @ rng.standard_normal(g.shape[1])
         + math.sqrt(c_e / (members - 1)) * y @ rng.standard_normal(members) + rng.standard_normal(p))
    return TuningCycle(d, np.ones(p), g, 1.0, y, {"x": x})


def timed(make: Callable[[], Any], phi: np.ndarray, repeats: int) -> dict:
    """Build a model with ``make()`` and evaluate it at ``phi`` (one untimed evaluation, then ``repeats`` timed
    ones), under tracemalloc."""
    tracemalloc.start()
    t0 = time.perf_counter()
    model = make()
    first = model.evaluate(phi)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(repeats):
        ev = model.evaluate(phi)
    seconds = (time.perf_counter() - t0) / repeats
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert ev.nll == first.nll                                         # the same probes every time
    return {"ev": ev, "seconds": seconds, "setup": setup, "peak": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000, 8000, 20000])
    parser.add_argument("--exact-max", type=int, default=4000, help="largest p for the dense Cholesky model")
    parser.add_argument("--modes", type=int, default=15, help="static factor rank K = 2 * modes + 1")
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--ensemble-length", type=float, default=10.0, help="in observation spacings")
    parser.add_argument("--length", type=float, default=15.0, help="GC half-width, in observation spacings")
    parser.add_argument("--probes", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit", type=int, default=0, help="observations of the end-to-end ML fit (0: none)")
    args = parser.parse_args()

    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, load {os.getloadavg()}")
    print(f"ring, K = {2 * args.modes + 1}, N = {args.members}, GC half-width {args.length:g} spacings "
          f"({int(4 * args.length) + 1} neighbours), {args.probes} probes; times per likelihood + gradient")
    head = (f"{'p':>6} | {'cholesky s':>10} {'MiB':>7} | {'low-rank s':>10} {'MiB':>6} {'err':>8} | "
            f"{'stochastic s':>12} {'MiB':>6} {'CG it':>5} {'SE(nll)':>8} {'rel err':>9} {'err/SE':>6}")
    print(head)
    print("-" * len(head))
    rng = np.random.default_rng(args.seed)
    for p in args.sizes:
        cycle = ring_cycle(rng, p, args.modes, args.members, args.ensemble_length)
        data = TuningData((cycle,), periodic_distance(float(p), "x"))

        local, flat = (Parametrization.create(FREE, {"length": length}, form="hybrid", groups=data.obs_groups(),
                                              has_ensemble=True) for length in (args.length, math.inf))
        phi = local.internal(TRUTH)
        stochastic = timed(partial(MatrixFreeCovarianceModel, data, local, probes=args.probes), phi, args.repeats)
        low_rank = timed(partial(MatrixFreeCovarianceModel, data, flat), phi, args.repeats)
        chol = chol_flat = None
        if p <= args.exact_max:
            chol = timed(partial(HybridCovarianceModel, data, local), phi, 1)
            chol_flat = HybridCovarianceModel(data, flat).evaluate(phi, gradient=False).nll
        ev = stochastic["ev"]
        cells = [f"{p:>6}"]
        cells.append(f"{chol['seconds']:>10.3f} {chol['peak']:>7.0f}" if chol else f"{'-':>10} {'-':>7}")
        lr_err = f"{abs(low_rank['ev'].nll / chol_flat - 1):>8.1e}" if chol else f"{'-':>8}"
        cells.append(f"{low_rank['seconds']:>10.4f} {low_rank['peak']:>6.0f} {lr_err}")
        if chol:
            err = ev.nll - chol["ev"].nll
            tail = f"{abs(err) / abs(chol['ev'].nll):>9.1e} {err / ev.nll_standard_error:>6.2f}"
        else:
            tail = f"{'-':>9} {'-':>6}"
        cells.append(f"{stochastic['seconds']:>12.3f} {stochastic['peak']:>6.0f} {ev.iterations:>5d} "
                     f"{ev.nll_standard_error:>8.3f} {tail}")
        print(" | ".join(cells), flush=True)
    if args.fit:
        cycle = ring_cycle(np.random.default_rng(args.seed), args.fit, args.modes, args.members, args.ensemble_length)
        data = TuningData((cycle,), periodic_distance(float(args.fit), "x"))
        t0 = time.perf_counter()
        result = estimate(data, "ml", FREE, {"length": args.length}, probes=args.probes)
        seconds = time.perf_counter() - t0
        values = ", ".join(f"{k} {e.value:.4g} (SE {e.standard_error:.2g})" for k, e in result.estimates.items())
        print(f"ML fit, p = {args.fit}, length {args.length:g} fixed: {seconds:.1f} s; {values}; "
              f"{result.details['likelihood']['likelihood']}; {result.message}")
    print(f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; load {os.getloadavg()}")


if __name__ == "__main__":
    main()
