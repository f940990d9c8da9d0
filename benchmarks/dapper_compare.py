"""Benchmark: pyoops against DAPPER, analysis by analysis, on a Lorenz-96 twin made by DAPPER.

Prerequisite (not a dependency of pyoops or of its tests): DAPPER 1.7 or 1.8 in the environment
this script runs in, next to pyoops and its Lorenz-96 plugin, e.g.::

    python3.12 -m venv venv-dapper && venv-dapper/bin/pip install dapper
    venv-dapper/bin/pip install -e . -e plugins/lorenz96
    OPENBLAS_NUM_THREADS=1 venv-dapper/bin/python benchmarks/dapper_compare.py

What it does
------------
1. **DAPPER makes the twin** (outside pyoops): F = 8, n = 40, dt = 0.05 = PT6H, perfect model;
   the truth starts from DAPPER's ``x0`` run ``--truth-spin-up`` steps with DAPPER's ``step``,
   ``HMM.simulate()`` gives the truth ``xx`` (K+1, 40) and the observations ``yy`` (K, 40) of
   all 40 variables at every step with R = I (DAPPER's random generator, ``--seed``).
   DAPPER also draws the initial conditions at t = 0 from N(xx[0], I): the ensemble ``E0``
   (N = 20) and the 3D-Var background ``x0b``, and forecasts them one step with its ``step``.
2. **The documented numpy -> files path**: ``xx``, ``yy`` and the forecasts of ``E0``/``x0b``
   (the first backgrounds, valid at the first analysis time) are written by
   ``tutorials/lorenz96/numpy_to_cycle.py`` (``write_filter_experiment``) and ``pyoops cycle``
   reads them as given observations (``observations.obsdatain``), truth (``truth.filename``)
   and ``cycling.initial background``/``initial ensemble`` with
   ``cycling.start`` = DAPPER's t = 0.  Both systems thus assimilate the same bits from the
   same first backgrounds; each then makes its own forecasts.  ``--layout one-file`` (the
   default) writes the observations of all windows in one file and the truth of every time in
   one file, as arrays are naturally given; ``--layout per-cycle`` a file of each per analysis
   time (each cycle then opens two netCDF files).
3. **Per-cycle comparison** of the analyses.  pyoops writes the innovation archive
   (``output.archive``): with H = I at every grid point, ``HofXAnalysis`` of cycle k *is* the
   analysis (ETKF: the mean over the members of H(x_a), i.e. the analysis mean).  DAPPER's is
   ``xp.stats.mu.a[k]``.  Reported: max over cycles of max_i |x_a,i(pyoops) - x_a,i(DAPPER)|,
   the first cycle where it exceeds 1e-6 (if any), and the per-cycle analysis RMSE difference
   (pyoops's ``statistics.nc`` against DAPPER's ``stats.err.rms.a``).

Methods compared analysis by analysis (identical algorithms, so the analyses must agree to
round-off as long as the filter keeps round-off differences from growing):

``3D-Var``
    DAPPER ``Var3D(B=B, xB=1)``: the Kalman-gain equation solved in closed form with the
    dense B.  pyoops: cost type 3D-Var, B the SABER ``explicit covariance`` block of the
    same matrix (B = 0.02 B_clim, B_clim the covariance of a 20 000-step free run,
    ``l96_twin.climatological_covariance``), DRPCG iterated until the gradient norm has
    dropped by ``--gradient-reduction`` (default 1e-12; the reductions reached are reported);
    ``--minimizer DirectSolve``: the exact solve by a Cholesky factorisation, as DAPPER's.
``ETKF N=20``
    DAPPER ``EnKF('Sqrt', N=20, infl=1.0, rot=False)``: the symmetric square-root ETKF
    (eigen-decomposition in ensemble space).  pyoops: ``LETKF`` without localization (the
    ETKF, symmetric square root, eigen-decomposition in ensemble space since 20 < 40
    observations), no inflation (this filter loses the truth after about 600 cycles).

``ETKF N=20 infl``
    DAPPER ``EnKF('Sqrt', N=20, infl=1.02, rot=False)``; pyoops ``LETKF`` without localization,
    ``inflation: {posterior mult: 1.02**2}`` (DAPPER's ``infl`` scales the analysis anomalies,
    pyoops's ``posterior mult`` the analysis covariance).

Measured (docs/benchmarks.rst, 2200 cycles, DAPPER 1.8.1 and 1.7.1): 3D-Var within 1.2e-12 in every
cycle; the uninflated ETKF within 1e-6 for the first 736 cycles only: it loses the truth (RMSE > 1)
at cycle 611, after which the round-off difference grows at about the model's Lyapunov rate; the
inflated ETKF (stable, RMSE 0.1837 in both) within 1e-6 for 2077 cycles, 1e-10 for 1100: the
difference grows by 1.009 per cycle from 1e-14.

Statistics only (``--statistics``; the same data, but not the same algorithm or random
numbers, so only time-mean RMSEs are compared): ``LETKF N=10`` (Gaspari-Cohn zero beyond
0.364 = DAPPER ``loc_rad=4``, pyoops posterior mult 1.02^2 | DAPPER infl 1.02) and ``EnKF N=40``
(perturbed observations, mult 1.06^2 | infl 1.06; different random perturbations).

Timing (seconds per cycle, all single-threaded BLAS if run as above):

* pyoops end-to-end: wall time of ``pyoops.run("cycle", cfg)`` / cycles, a run *without* the
  archive: configuration validation, the setup, reading each cycle's observations and truth,
  the analyses, the forecasts, the statistics, the checkpoints (the default policy: by wall
  time, each completed cycle's checkpoint kept in memory) and the output files; and the same
  with a checkpoint written after every cycle (``checkpoint seconds: 0``).  Also the time of
  the comparison run (with ``output.archive``, and for 3D-Var the exact diag(HBH^T) of the
  archive: 40 more B products per cycle).
* pyoops cycle loop: ``statistics.json`` "seconds per cycle" of the run without archive
  (reading the files, analysis, forecast, statistics; not the checkpoint nor setup).
* DAPPER: wall time of ``xp.assimilate(HMM, xx, yy)`` / cycles, with its default statistics
  (computed on the fly every cycle) and with ``rc.comps.error_only`` (mean and error only).
  Truth and observations are given, so neither includes making them.

Usage::

    python benchmarks/dapper_compare.py [--cycles 2200] [--spin-up 200] [--only NAME ...] [--minimizer M]
                                        [--statistics] [--seed 3000] [--no-timing] [--layout per-cycle]

Writes ``benchmarks/output/dapper_compare/results.json`` (and the per-cycle differences in
``diffs_<method>.npz``) and prints the tables.  No assertion: a benchmark exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import logging
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "output" / "dapper_compare"
sys.path.insert(0, str(HERE))

import l96_twin  # noqa: E402  (the climatological B)

DT = 0.05                                  # model time units per step = PT6H
START = np.datetime64("2010-01-01T00:00:00", "s")   # DAPPER's t = 0 (cycling.start)
STEP = np.timedelta64(6, "h")
EQUIVALENT = ("3D-Var", "ETKF N=20", "ETKF N=20 infl")
STATISTICAL = ("LETKF N=10", "EnKF N=40")
TOLERANCE = 1e-6


def numpy_to_cycle() -> Any:
    """The documented converter (tutorials/lorenz96/numpy_to_cycle.py), imported from its file."""
    spec = importlib.util.spec_from_file_location("numpy_to_cycle", ROOT / "tutorials" / "lorenz96" /
                                                  "numpy_to_cycle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# DAPPER, versions 1.7 and 1.8 --------------------------------------------------------------------
def dapper_quiet() -> None:
    import dapper
    import dapper.tools.progressbar as pb

    pb.disable_progbar = True
    pb.disable_user_interaction = True
    _rc_set(dapper.rc, "liveplotting", False)


def _rc_set(obj: Any, key: str, value: Any) -> None:
    """DAPPER 1.7's rc is a mapping (rc.comps["error_only"]), 1.8's a dataclass (rc.comps.error_only)."""
    if isinstance(obj, dict):
        obj[key] = value
    else:
        setattr(obj, key, value)


def set_error_only(flag: bool) -> None:
    import dapper

    _rc_set(dapper.rc.comps if not isinstance(dapper.rc, dict) else dapper.rc["comps"], "error_only", flag)


def hmm(cycles: int, x0: Any, localizer: bool = False, observed: Any = None, dko: int = 1) -> Any:
    """A Lorenz-96 HMM: 40 variables, the ``observed`` ones (default all) every ``dko`` steps with R = I,
    ``cycles`` analyses."""
    import dapper.mods as modelling
    from dapper.mods.Lorenz96 import dstep_dx, step

    observed = np.arange(40) if observed is None else np.asarray(observed)
    tseq = modelling.Chronology(dt=DT, dko=dko, K=cycles * dko)
    dyn = {"M": 40, "model": step, "linear": dstep_dx, "noise": 0}
    obs = dict(modelling.partial_Id_Obs(40, observed), noise=1)
    if localizer:
        from dapper.tools.localization import nd_Id_localization

        obs["localizer"] = nd_Id_localization((40,), (1,), observed)
    # 1.8 takes an Operator (or a function of the obs index) and calls a dict ("'dict' object is not
    # callable"); 1.7 builds its TimeDependentOperator from the dict's keywords.
    if "op_or_func" in inspect.signature(modelling.TimeDependentOperator.__init__).parameters:
        obs = modelling.Operator(**obs)
    return modelling.HiddenMarkovModel(dyn, obs, tseq, x0)


def make_twin(cycles: int, spin_up_steps: int, seed: int) -> dict[str, np.ndarray]:
    """DAPPER's truth, observations and initial conditions (its own model and random generator)."""
    import dapper as dpr
    from dapper.mods.Lorenz96 import step
    from dapper.mods.Lorenz96 import x0 as l96_x0
    from dapper.tools.randvars import RV, GaussRV

    x = l96_x0(40) + 8.0                   # DAPPER's initial condition on the fixed point F = 8 (plus 1 at x[0])
    for _ in range(spin_up_steps):
        x = step(x, np.nan, DT)
    dpr.set_seed(seed)
    xx, yy = hmm(cycles, RV(M=40, func=lambda n: np.tile(x, (n, 1)))).simulate()
    yy = np.array([np.asarray(y, dtype=np.float64) for y in yy])
    x0 = GaussRV(mu=xx[0], C=1.0)
    dpr.set_seed(seed + 1)
    e0 = x0.sample(20)                     # the ETKF's initial ensemble at t = 0
    x0b = x0.sample(1)[0]                  # 3D-Var's initial background at t = 0
    twin = {"xx": xx, "yy": yy, "E0 20": e0, "x0b": x0b,
            "Eb 20": step(e0, 0.0, DT), "xb": step(x0b, 0.0, DT)}   # first backgrounds, at the first analysis
    for n in (10, 40):                     # the ensembles of the statistics-only methods
        dpr.set_seed(seed + 10 + n)
        twin[f"E0 {n}"] = x0.sample(n)
        twin[f"Eb {n}"] = step(twin[f"E0 {n}"], 0.0, DT)
    return twin


def dapper_method(name: str, bmatrix: np.ndarray) -> Any:
    import dapper.da_methods as da

    return {
        "3D-Var": lambda: da.Var3D(B=bmatrix, xB=1.0),
        "ETKF N=20": lambda: da.EnKF("Sqrt", N=20, infl=1.0, rot=False),
        "ETKF N=20 infl": lambda: da.EnKF("Sqrt", N=20, infl=1.02, rot=False),
        "LETKF N=10": lambda: da.LETKF(N=10, infl=1.02, rot=False, loc_rad=4),
        "EnKF N=40": lambda: da.EnKF("PertObs", N=40, infl=1.06, rot=False),
    }[name]()


def run_dapper(name: str, twin: dict[str, np.ndarray], bmatrix: np.ndarray, cycles: int, seed: int,
               error_only: bool) -> dict[str, Any]:
    import dapper as dpr
    from dapper.tools.randvars import RV, GaussRV

    if name == "3D-Var":
        x0 = GaussRV(mu=twin["x0b"], C=1.0)          # Var3D starts from X0.mu (C: its diagnostics only)
    else:
        e0 = twin[f"E0 {dapper_method(name, bmatrix).N}"]     # the ensemble handed to pyoops too
        x0 = RV(M=40, func=lambda n: e0.copy())
    model = hmm(cycles, x0, localizer=name.startswith("LETKF"))
    set_error_only(error_only)
    dpr.set_seed(seed + 2)
    xp = dapper_method(name, bmatrix)
    started = time.perf_counter()
    xp.assimilate(model, twin["xx"], twin["yy"], liveplots=False)
    wall = time.perf_counter() - started
    set_error_only(False)
    return {"mu a": np.array(xp.stats.mu.a, dtype=np.float64),
            "rmse a": np.array(xp.stats.err.rms.a, dtype=np.float64),
            "seconds per cycle": wall / cycles}


# pyoops ----------------------------------------------------------------------------------------
def pyoops_config(name: str, entries: dict[str, Any], cycles: int, spin_up: int, bfile: Path, directory: Path,
                  archive: bool, reduction: float, minimizer: str = "DRPCG",
                  checkpoint_seconds: float | None = None) -> dict[str, Any]:
    """The ``cycle`` configuration of method ``name``; ``checkpoint_seconds``: the checkpoint policy (default: the
    application's, a checkpoint by wall time; 0: after every cycle)."""
    cfg: dict[str, Any] = {
        "model plugin": "lorenz96",
        "geometry": {"resol": 40},
        "model": {"name": "Lorenz96", "f": 8.0, "tstep": "PT6H"},
        "truth": entries["truth"],
        "observations": {"name": "l96", "simulated variables": ["x"], **entries["observations"]},
        "cycling": {"cycles": cycles, "window length": "PT6H", "spin-up cycles": spin_up,
                    "start": entries["cycling"]["start"]},
        "output": {"directory": str(directory), "archive": archive, "plots": False},
        "resume": False,
    }
    c = cfg["cycling"]
    if checkpoint_seconds is not None:
        c["checkpoint seconds"] = checkpoint_seconds
    if name == "3D-Var":
        c["method"] = "3D-Var"
        c["initial background"] = entries["cycling"]["initial background"]
        cfg["cost function"] = {"cost type": "3D-Var", "background error": l96_twin.static_b(bfile)}
        cfg["variational"] = {"minimizer": {"algorithm": minimizer},
                              "iterations": [{"ninner": 60, "gradient norm reduction": reduction}]}
        return cfg
    members = {"ETKF N=20": 20, "ETKF N=20 infl": 20, "LETKF N=10": 10, "EnKF N=40": 40}[name]
    c["members"] = members
    ensemble = entries["cycling"]["initial ensemble"]["filename"]            # the 20 members
    c["initial ensemble"] = {"filename": ensemble if members == 20 else ensemble.replace(".nc", f"{members}.nc")}
    if name.startswith("EnKF"):
        c["method"] = "EnKF"
        cfg["eda"] = {"seed": 2, "inflation": {"mult": 1.06 ** 2}}
        return cfg
    c["method"] = "LETKF"
    # DAPPER's infl multiplies the analysis anomalies: pyoops's posterior mult = infl^2 (covariance).
    posterior = {"ETKF N=20": 1.0, "ETKF N=20 infl": 1.02 ** 2, "LETKF N=10": 1.02 ** 2}[name]
    cfg["local ensemble DA"] = {"inflation": {"posterior mult": posterior}}
    if name == "LETKF N=10":
        cfg["observations"]["obs localizations"] = [{"localization method": "Gaspari-Cohn", "lengthscale": 0.364}]
    return cfg


class _MinimizerLog(logging.Handler):
    """Collects the final gradient-norm reduction and iteration count of every minimisation."""

    PATTERN = re.compile(r": (\d+) inner iterations( \(not converged\))?,.*gradient reduction ([0-9.e+-]+)")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[int, bool, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = self.PATTERN.search(record.getMessage())
        if m:
            self.records.append((int(m.group(1)), m.group(2) is None, float(m.group(3))))


def run_pyoops(cfg: dict[str, Any]) -> dict[str, Any]:
    import pyoops

    directory = Path(cfg["output"]["directory"])
    if directory.exists():
        shutil.rmtree(directory)
    log = _MinimizerLog()
    logger = logging.getLogger("pyoops")
    level = logger.level
    logger.addHandler(log)
    logger.setLevel(logging.INFO)
    try:
        started = time.perf_counter()
        summary = pyoops.run("cycle", cfg)
        wall = time.perf_counter() - started
    finally:
        logger.removeHandler(log)
        logger.setLevel(level)
    stats = json.loads((directory / "statistics.json").read_text())
    out = {"wall seconds per cycle": wall / summary["cycles"], "loop seconds per cycle": stats["seconds per cycle"],
           "minimizer": log.records}
    if cfg["output"]["archive"]:
        import xarray as xr

        archive = directory / "innovations.nc"
        meta = xr.open_dataset(archive, group="MetaData")
        cycle, x = meta["cycle"].values, meta["x"].values
        hxa = xr.open_dataset(archive, group="HofXAnalysis")["value"].values
        ncycles = summary["cycles"]
        xa = np.full((ncycles, 40), np.nan)
        for k in range(ncycles):
            rows = cycle == k
            xa[k][np.rint(x[rows] * 40).astype(int)] = hxa[rows]     # H = I: grid point j at x = j/40
        with xr.open_dataset(directory / "statistics.nc") as ds:
            out["rmse a"] = ds["analysis_rmse"].values.astype(np.float64)
        out["xa"] = xa
    return out


# Main ------------------------------------------------------------------------------------------
def compare(xa: np.ndarray, mu_a: np.ndarray, rmse_p: np.ndarray, rmse_d: np.ndarray, spin_up: int
            ) -> dict[str, Any]:
    diff = np.max(np.abs(xa - mu_a), axis=1)                    # per cycle: max over the 40 variables
    over = np.flatnonzero(~(diff <= TOLERANCE))
    drmse = np.abs(rmse_p - rmse_d)
    first_over = int(over[0]) + 1 if over.size else None        # 1-based cycle number
    within = first_over - 1 if first_over else len(diff)
    return {"max abs diff": float(np.max(diff)), "first cycle above 1e-6": first_over,
            "cycles within 1e-6": within,
            "max abs diff within": float(np.max(diff[:within])) if within else None,
            "max rmse diff": float(np.max(drmse)),
            "max rmse diff within": float(np.max(drmse[:within])) if within else None,
            "diff at cycles": {str(k): float(diff[k - 1]) for k in (1, 10, 100, 500, 1000, 1500, 2000, len(diff))
                               if k <= len(diff)},
            "rmse pyoops": float(np.mean(rmse_p[spin_up:])), "rmse DAPPER": float(np.mean(rmse_d[spin_up:])),
            **divergence(diff, rmse_d), "per cycle": diff}


def divergence(diff: np.ndarray, rmse_d: np.ndarray) -> dict[str, Any]:
    """Where the filter loses the truth and how fast the difference grows after.

    ``first cycle RMSE > 1``: the first cycle where DAPPER's analysis RMSE exceeds the observation
    error (1): the filter no longer tracks the truth.  ``growth``: least-squares slope of
    log(max |dx_a|) over the cycles between its first values above 1e-11 and 1e-3 (a chaotic
    system amplifies a difference the observations no longer damp by exp(lambda dt) per step;
    Lorenz-96 with F = 8 has lambda_max of about 1.7 per model time unit)."""
    out: dict[str, Any] = {}
    lost = np.flatnonzero(rmse_d > 1.0)
    if lost.size:
        k = int(lost[0])
        out["first cycle RMSE > 1"] = k + 1
        out["max abs diff before"] = float(np.max(diff[:k])) if k else None
    lo, hi = np.flatnonzero(diff > 1e-11), np.flatnonzero(diff > 1e-3)
    if lo.size and hi.size and hi[0] - lo[0] > 10:
        k = np.arange(lo[0], hi[0])
        slope = float(np.polyfit(k, np.log(diff[k]), 1)[0])
        out["growth per cycle"] = float(np.exp(slope))
        out["growth rate per time unit"] = slope / DT
        out["growth fitted over cycles"] = [int(lo[0]) + 1, int(hi[0])]
    return out


def main() -> None:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=2200)
    parser.add_argument("--spin-up", type=int, default=200, help="cycles left out of the time-mean RMSEs")
    parser.add_argument("--truth-spin-up", type=int, default=2000, help="DAPPER steps before the truth's t = 0")
    parser.add_argument("--seed", type=int, default=3000, help="DAPPER's seed (truth, observations, E0)")
    parser.add_argument("--gradient-reduction", type=float, default=1e-12, help="3D-Var DRPCG stopping criterion")
    parser.add_argument("--minimizer", default="DRPCG", help="3D-Var minimizer (DRPCG, or DirectSolve: the exact "
                        "solve, like DAPPER's)")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--statistics", action="store_true", help="also the statistics-only methods")
    parser.add_argument("--no-timing", action="store_true", help="skip the runs made only for timing")
    parser.add_argument("--report", action="store_true", help="print the tables of results.json, run nothing")
    parser.add_argument("--layout", choices=("one-file", "per-cycle"), default="one-file",
                        help="the given files: one observation file and one truth file (default), or a file of each "
                             "per analysis time")
    parser.add_argument("--output", type=Path, default=OUT, help="output directory (default: %(default)s)")
    args = parser.parse_args()
    OUT = args.output.resolve()
    if args.report:
        report(json.loads((OUT / "results.json").read_text()))
        return
    os.environ.setdefault("DAPPER_LIVEPLOTTING", "no")      # batch run: no live plots (read at import)
    try:
        import dapper
    except ImportError:
        sys.exit("DAPPER is not installed: 'pip install dapper' (only for this benchmark)")
    import pyoops

    dapper_quiet()
    OUT.mkdir(parents=True, exist_ok=True)
    bfile = OUT / "b_static.nc"
    from pyoops.saber.generic.explicit import read_matrix, write_matrix

    if not bfile.exists():
        write_matrix(str(bfile), 0.02 * l96_twin.climatological_covariance())
    bmatrix = read_matrix(str(bfile))         # DAPPER gets the bits pyoops reads

    print(f"DAPPER {dapper.__version__}: truth and observations, {args.cycles} cycles ...", flush=True)
    twin = make_twin(args.cycles, args.truth_spin_up, args.seed)
    files = OUT / "given"
    if files.exists():
        shutil.rmtree(files)
    conv = numpy_to_cycle()
    entries = conv.write_filter_experiment(files, START, STEP, twin["xx"], twin["yy"], obs_error=1.0,
                                           background=twin["xb"], ensemble=twin["Eb 20"],
                                           one_file=args.layout == "one-file")
    for n in (10, 40):                        # the statistics-only methods' ensembles, same converter
        conv.write_state_file(files / f"ensemble{n}.nc", START + STEP, twin[f"Eb {n}"])

    names = args.only or (list(EQUIVALENT) + (list(STATISTICAL) if args.statistics else []))
    results_file = OUT / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name in names:
        print(f"{name}: pyoops (with archive) ...", flush=True)
        cfg = pyoops_config(name, entries, args.cycles, args.spin_up, bfile, OUT / "runs" / name.replace(" ", "_"),
                            True, args.gradient_reduction, args.minimizer)
        ours = run_pyoops(cfg)
        print(f"{name}: DAPPER ...", flush=True)
        theirs = run_dapper(name, twin, bmatrix, args.cycles, args.seed, error_only=False)
        cmp = compare(ours["xa"], theirs["mu a"], ours["rmse a"], theirs["rmse a"], args.spin_up)
        np.savez(OUT / f"diffs_{name.replace(' ', '_')}.npz", max_abs_diff=cmp.pop("per cycle"),
                 rmse_pyoops=ours["rmse a"], rmse_dapper=theirs["rmse a"])
        entry = {"cycles": args.cycles, "spin-up cycles": args.spin_up, "equivalent": name in EQUIVALENT, **cmp,
                 "pyoops wall s/cycle (with archive)": ours["wall seconds per cycle"],
                 "DAPPER s/cycle (default stats)": theirs["seconds per cycle"]}
        if ours["minimizer"]:
            its = np.array([r[0] for r in ours["minimizer"]])
            red = np.array([r[2] for r in ours["minimizer"]])
            entry["minimizer"] = {"minimisations": len(its), "all converged": all(r[1] for r in ours["minimizer"]),
                                  "iterations min/median/max": [int(its.min()), float(np.median(its)),
                                                                int(its.max())],
                                  "gradient reduction max": float(red.max()),
                                  "gradient reduction median": float(np.median(red))}
            entry["minimizer name"] = args.minimizer
        if not args.no_timing:
            print(f"{name}: timing runs (pyoops without archive, DAPPER error-only stats) ...", flush=True)
            cfg = pyoops_config(name, entries, args.cycles, args.spin_up, bfile,
                                OUT / "runs" / (name.replace(" ", "_") + "_timing"), False, args.gradient_reduction,
                                args.minimizer)
            t = run_pyoops(cfg)
            entry["pyoops wall s/cycle"] = t["wall seconds per cycle"]
            entry["pyoops loop s/cycle"] = t["loop seconds per cycle"]
            cfg = pyoops_config(name, entries, args.cycles, args.spin_up, bfile,
                                OUT / "runs" / (name.replace(" ", "_") + "_timing"), False, args.gradient_reduction,
                                args.minimizer, checkpoint_seconds=0)
            entry["pyoops wall s/cycle (checkpoint every cycle)"] = run_pyoops(cfg)["wall seconds per cycle"]
            entry["DAPPER s/cycle (error-only stats)"] = run_dapper(name, twin, bmatrix, args.cycles, args.seed,
                                                                    error_only=True)["seconds per cycle"]
        results[name] = entry
        results["environment"] = {
            "python": platform.python_version(), "numpy": np.__version__, "DAPPER": dapper.__version__,
            "pyoops": getattr(pyoops, "__version__", "?"), "machine": platform.machine(),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"), "layout": args.layout,
            "load average at end": os.getloadavg(), "command": " ".join(sys.argv)}
        results_file.write_text(json.dumps(results, indent=1) + "\n")
    report(results)


def report(results: dict[str, Any]) -> None:
    env = results.get("environment", {})
    print()
    print(f"pyoops vs DAPPER {env.get('DAPPER')} (Python {env.get('python')}, NumPy {env.get('numpy')}), "
          f"truth and observations made by DAPPER, given files: {env.get('layout', 'per-cycle')}")
    print(f"{'method':<15} {'cycles':>6} {'max|dxa|':>9} {'>1e-6 at':>8} {'max|dRMSE|':>10} {'RMSE pyoops':>11} "
          f"{'RMSE DAPPER':>11}")
    for name, r in results.items():
        if name == "environment":
            continue
        print(f"{name:<15} {r['cycles']:>6} {r['max abs diff']:>9.2e} {r['first cycle above 1e-6']!s:>8} "
              f"{r['max rmse diff']:>10.2e} {r['rmse pyoops']:>11.4f} {r['rmse DAPPER']:>11.4f}")
        if r.get("minimizer"):
            print(f"{'':<15} {r.get('minimizer name', 'DRPCG')}: {r['minimizer']}")
        if "first cycle RMSE > 1" in r:
            print(f"{'':<15} filter lost the truth (RMSE > 1) at cycle {r['first cycle RMSE > 1']}, max|dxa| before: "
                  f"{r['max abs diff before']:.2e}")
        if "growth per cycle" in r:
            print(f"{'':<15} |dxa| grows x{r['growth per cycle']:.3f} per cycle ({r['growth rate per time unit']:.2f} "
                  f"per time unit) over cycles {r['growth fitted over cycles']}")
    print()
    print(f"{'method':<15} {'pyoops e2e':>10} {'ckpt each':>9} {'+archive':>9} {'loop':>8} {'DAPPER':>8} "
          f"{'err-only':>8} {'e2e/DAPPER':>10}   (ms/cycle)")
    for name, r in results.items():
        if name == "environment" or "pyoops wall s/cycle" not in r:
            continue
        every = r.get("pyoops wall s/cycle (checkpoint every cycle)", float("nan"))
        print(f"{name:<15} {1e3 * r['pyoops wall s/cycle']:>10.3f} {1e3 * every:>9.3f} "
              f"{1e3 * r['pyoops wall s/cycle (with archive)']:>9.3f} "
              f"{1e3 * r['pyoops loop s/cycle']:>8.3f} {1e3 * r['DAPPER s/cycle (default stats)']:>8.3f} "
              f"{1e3 * r['DAPPER s/cycle (error-only stats)']:>8.3f} "
              f"{r['pyoops wall s/cycle'] / r['DAPPER s/cycle (default stats)']:>10.2f}")


if __name__ == "__main__":
    main()
