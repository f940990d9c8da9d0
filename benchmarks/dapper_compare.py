"""Benchmark: pyoops against DAPPER on the same Lorenz-96 twin experiment (truth and observations).

Prerequisite (not a dependency of pyoops or of its tests; install it in the environment
you run this benchmark in, e.g. a virtual environment made with
``--system-site-packages`` next to an editable pyoops)::

    pip install dapper

Setup (REFERENCES.md section 3): F = 8, n = 40, dt = 0.05 = PT6H, all 40 variables
observed every step, R = I, perfect model; ``--cycles`` cycles (default 2200), time
means over the cycles after ``--spin-up`` (default 200).  The truth and the
observations are made *once by pyoops* (the twin of ``pyoops cycle``: the truth run
and the observation errors drawn from one stream per observation time) and handed to
DAPPER as its ``xx``/``yy``, so both assimilate exactly the same data.  pyoops runs
each method through ``pyoops cycle`` (the configurations of ``l96_twin.py``), DAPPER
through ``xp.assimilate(HMM, xx, yy)``.

Methods, pyoops | DAPPER (DAPPER's ``infl`` multiplies analysis anomalies, pyoops's
``mult`` the covariance, hence the squares):

* 3D-Var: ``explicit covariance`` B = 0.02 B_clim, exact minimisation | ``Var3D(B=...)``, the same matrix;
* ETKF N = 20: LETKF without localization, mult 1.02^2 | ``EnKF('Sqrt', N=20, infl=1.02, rot=True)``;
* LETKF N = 10: Gaspari-Cohn, zero beyond 0.364 (= 3.64 x 4 grid points / 40) and mult 1.04 |
  ``LETKF(N=10, infl=1.02, rot=True, loc_rad=4)`` (DAPPER's GC with radius 4 reaches zero at 3.64 x 4 points);
* stochastic EnKF N = 40: ``EnKF`` method (perturbed observations), mult 1.06^2 |
  ``EnKF('PertObs', N=40, infl=1.06)``.

DAPPER's 4D-Var (``Var4D``) is not compared here (see docs/benchmarks.rst).

Wall time per cycle: pyoops, the mean time of one cycle of ``pyoops cycle`` *including*
the truth step, making the observations and the checkpoint written after every cycle;
DAPPER, the time of ``assimilate`` divided by the number of cycles (its truth and
observations are given, its statistics are computed on the fly).  The ratio is
pyoops / DAPPER (below 1: pyoops faster).

Usage::

    python benchmarks/dapper_compare.py [--cycles 2200] [--spin-up 200] [--only NAME ...]

Writes ``benchmarks/output/dapper_compare/results.json`` and prints the table.
No assertion: a benchmark exits 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "output" / "dapper_compare"
sys.path.insert(0, str(HERE))

import l96_twin  # noqa: E402  (the pyoops configurations)


def make_twin(cfg: dict[str, Any], cycles: int) -> tuple[np.ndarray, np.ndarray]:
    """Truth ``xx`` (cycles + 1, 40: the experiment start, then every analysis time) and obs ``yy`` (cycles, 40)."""
    from pyoops.apps import make_application
    from pyoops.config.yaml_io import load_config

    app = make_application("cycle")
    app.validate(load_config(cfg))
    exp = app.experiment
    truth = exp.initial_truth()
    xx = [np.array(truth.fields["x"])]
    yy = []
    for k in range(cycles):
        w = exp.window(k)
        a_k = exp.analysis_time(k)
        times = sorted(set(exp.obs_times(w)) | {a_k})
        truth_at = exp.advance_truth(truth, times[-1], times)
        twin = exp.observe(w, truth_at)
        if list(twin.times) != [a_k.seconds_since_epoch()] * 40:
            raise RuntimeError("expected 40 observations at the analysis time")
        order = np.argsort(twin.locations.coords["x"])
        xx.append(np.array(truth_at[a_k]["x"]))
        yy.append(twin.values[0][order])
    return np.array(xx), np.array(yy)


def dapper_hmm(xx: np.ndarray, cycles: int, spin_up: int) -> Any:
    import dapper.mods as modelling
    from dapper.mods.Lorenz96 import dstep_dx, step
    from dapper.tools.localization import nd_Id_localization

    tseq = modelling.Chronology(dt=0.05, dko=1, K=cycles, BurnIn=spin_up * 0.05 + 1e-9)
    dyn = {"M": 40, "model": step, "linear": dstep_dx, "noise": 0}
    obs = modelling.partial_Id_Obs(40, np.arange(40))
    obs["noise"] = 1
    obs["localizer"] = nd_Id_localization((40,), (1,))
    x0 = modelling.GaussRV(mu=xx[0], C=1.0)
    return modelling.HiddenMarkovModel(dyn, obs, tseq, x0)


def run_dapper(name: str, hmm: Any, xx: np.ndarray, yy: np.ndarray, bmatrix: np.ndarray) -> dict[str, Any]:
    import dapper as dpr
    import dapper.da_methods as da
    import dapper.tools.progressbar as pb

    pb.disable_progbar = True
    methods = {
        "3D-Var": lambda: da.Var3D(B=bmatrix, xB=1.0),
        "ETKF N=20": lambda: da.EnKF("Sqrt", N=20, infl=1.02, rot=True),
        "LETKF N=10": lambda: da.LETKF(N=10, infl=1.02, rot=True, loc_rad=4),
        "EnKF N=40": lambda: da.EnKF("PertObs", N=40, infl=1.06),
    }
    dpr.set_seed(3000)
    xp = methods[name]()
    started = time.perf_counter()
    xp.assimilate(hmm, xx, yy, liveplots=False)
    wall = time.perf_counter() - started
    xp.stats.average_in_time()
    return {"analysis rmse": float(xp.avrgs.err.rms.a.val), "seconds per cycle": wall / (len(xx) - 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=2200)
    parser.add_argument("--spin-up", type=int, default=200)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    try:
        import dapper  # noqa: F401
    except ImportError:
        sys.exit("DAPPER is not installed: 'pip install dapper' (only for this benchmark)")
    import pyoops

    OUT.mkdir(parents=True, exist_ok=True)
    l96_twin.OUT = OUT
    bfile = OUT / "b_static.nc"
    if not bfile.exists():
        from pyoops.saber.generic.explicit import write_matrix

        write_matrix(str(bfile), 0.02 * l96_twin.climatological_covariance())
    from pyoops.saber.generic.explicit import read_matrix

    bmatrix = read_matrix(str(bfile))
    exps = l96_twin.experiments(args.cycles, args.spin_up, bfile, 1)
    names = args.only or ["3D-Var", "ETKF N=20", "LETKF N=10", "EnKF N=40"]
    xx, yy = make_twin(exps["3D-Var"], args.cycles)
    hmm = dapper_hmm(xx, args.cycles, args.spin_up)
    results_file = OUT / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name in names:
        print(f"running {name} (pyoops) ...", flush=True)
        cfg = exps[name]
        cfg["resume"] = False
        summary = pyoops.run("cycle", cfg)
        stats = json.loads((Path(cfg["output"]["directory"]) / "statistics.json").read_text())
        # The pyoops truth at the analysis times is the truth handed to DAPPER (same twin).
        ours = {"analysis rmse": stats["time means"]["analysis rmse"],
                "seconds per cycle": stats["seconds per cycle"]}
        print(f"running {name} (DAPPER) ...", flush=True)
        theirs = run_dapper(name, hmm, xx, yy, bmatrix)
        results[name] = {"pyoops": ours, "DAPPER": theirs, "cycles": summary["cycles"],
                         "spin-up cycles": args.spin_up}
        results_file.write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(f"Lorenz-96 twin, same truth and observations, {args.cycles} cycles, time means over cycles "
          f"{args.spin_up + 1}-{args.cycles} (Python {platform.python_version()}, NumPy {np.__version__})")
    print(f"{'method':<12} {'RMSE pyoops':>12} {'RMSE DAPPER':>12} {'diff':>7} {'s/cycle pyoops':>15} "
          f"{'s/cycle DAPPER':>15} {'ratio':>6}")
    for name, r in results.items():
        a, b = r["pyoops"], r["DAPPER"]
        print(f"{name:<12} {a['analysis rmse']:>12.3f} {b['analysis rmse']:>12.3f} "
              f"{a['analysis rmse'] - b['analysis rmse']:>+7.3f} {a['seconds per cycle']:>15.4f} "
              f"{b['seconds per cycle']:>15.4f} {a['seconds per cycle'] / b['seconds per cycle']:>6.2f}")


if __name__ == "__main__":
    main()
