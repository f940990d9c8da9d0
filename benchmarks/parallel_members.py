"""Benchmark: ensemble members in parallel, ``serial`` vs ``processes`` vs ``dask`` (whole commands).

Times the whole command ``python -m pyoops.cli APP config.yaml`` (start-up, reading,
the work, writing; for ``dask`` the start and shutdown of its LocalCluster), so the
ratios are what a user sees, for two applications on QG (default grid 160 x 80,
``PT15M``):

``eda``
   an EDA of 3D-Vars (``--members`` perturbed members and the control, static B of the
   QG tutorial, streamfunction observations at ``--obs-density`` random points,
   ``--ninner`` DRPCG iterations), or with ``--cost 4D-Var`` of 4D-Vars (a 6-hour window
   starting at the members' time, observed 3 hours into it, the tangent-linear model);
``ensemble-forecast``
   the same ``--members`` members advanced by ``--forecast-length``, members, mean and
   spread written at the end.

Each engine runs ``--repeat`` times (default 3); the median is reported with its ratio
``serial / engine`` (above 1: faster than serial) and ``os.getloadavg()`` before and after
each application's runs.  The members of every engine are checked to be bitwise those
of the serial run.  The machine must be otherwise idle for the numbers to mean anything:
the script says so when the 1-minute load average is above ``--max-load`` (0.7) before a
timing, and ``--tiny`` (40 x 20, 4 members, a short forecast) only checks that it all runs.
The thread settings of the calling environment are passed on unchanged (the workers of
``processes`` and of dask limit themselves to one BLAS thread, see
:mod:`pyoops.ensemble.executors`).

Run (after installing pyoops and the QG plugin)::

    python benchmarks/parallel_members.py [--grid 160x80] [--members 10] [--workers 2] [--repeat 3]
    python benchmarks/parallel_members.py --tiny          # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import yaml

START = "2010-01-01T00:00:00Z"
DEPTHS = [4500.0, 5500.0]
#: The longest round time step the semi-Lagrangian limit allows at 150 m/s (benchmarks/qg_4dvar_memory.py).
TSTEPS = {(40, 20): "PT1H", (80, 40): "PT30M", (160, 80): "PT15M", (320, 160): "PT8M"}
ENGINES = {"serial": None,
           "processes": {"engine": "processes"},
           "dask": {"engine": "dask", "processes": True}}


def static_b() -> dict[str, Any]:
    """The QG tutorial's static B: diffusion (1000 km), 0.6 between the layers, sigma 3e6 m^2/s, walls, balance."""
    from qg_4dvar_memory import static_b as tutorial_b   # this directory is on sys.path when run as a script

    return tutorial_b()


def prepare(directory: Path, geometry: dict[str, Any], model: dict[str, Any], members: int, spin_up: str,
            density: int) -> dict[str, str]:
    """Truth after ``spin_up``, ``members + 1`` draws from the static B around it, observations of the truth."""
    import pyoops
    from pyoops.util.datetime import DateTime, Duration

    directory.mkdir(parents=True, exist_ok=True)
    at = str(DateTime(START) + Duration(spin_up))
    begin = str(DateTime(at) - Duration("PT3H"))   # the window (at - 3 h, at + 3 h]: the observations at its middle
    truth = str(directory / f"truth.{at}.nc")
    if not Path(truth).exists():
        pyoops.run("forecast", {"model plugin": "qg", "geometry": geometry, "model": model,
                                "initial condition": {"date": START, "analytic init": {
                                    "method": "baroclinic-instability", "bottom wind": 0.0, "top wind": 30.0,
                                    "perturbation": 1.0}},
                                "forecast length": spin_up,
                                "output": {"filename": str(directory / "truth.%date%.nc"), "frequency": "PT3H",
                                           "first": str(Duration(spin_up) - Duration("PT3H"))}})
    template = str(directory / "ens.%mem%.nc")
    pyoops.run("gen-ens-pert-b", {"model plugin": "qg", "geometry": geometry,
                                  "background": {"date": at, "filename": truth},
                                  "background error": static_b(), "members": members + 1, "seed": 2,
                                  "perturbed states": True, "output": {"filename": template}})
    obs = str(directory / "obs.nc")
    make_obs(geometry, model, begin, str(directory / f"truth.{begin}.nc"), density, obs)
    # 4D-Var: the window (at, at + 6 h] after the members' time, observed 3 h into it (the truth run on).
    obs4d = str(directory / "obs4d.nc")
    if not Path(obs4d).exists():
        make_obs(geometry, model, at, truth, density, obs4d)
    return {"date": at, "begin": begin, "template": template,
            "control": template.replace("%mem%", str(members + 1)), "obs": obs, "obs4d": obs4d}


def make_obs(geometry: dict[str, Any], model: dict[str, Any], begin: str, truth: str, density: int,
             filename: str) -> None:
    """Perturbed streamfunction observations of the truth at ``density`` random points, 3 hours into the
    6-hour window from ``begin`` (the truth file ``truth`` valid then), written to ``filename``."""
    import pyoops

    pyoops.run("hofx", {"model plugin": "qg", "time window": {"begin": begin, "length": "PT6H"},
                        "geometry": geometry, "model": model, "initial condition": {"date": begin, "filename": truth},
                        "observations": {"observers": [{
                            "obs space": {"name": "streamfunction", "simulated variables": ["x"],
                                          "generate": {"begin": "PT3H", "end": "PT3H", "obs frequency": "PT6H",
                                                       "obs density": density, "obs error": 4.0e5,
                                                       "locations": "random", "random seed": 1},
                                          "obsdataout": {"filename": filename}},
                            "obs operator": {"name": "Identity"},
                            "obs error": {"covariance model": "diagonal"}}]},
                        "make obs": True, "obs perturbations": True, "obs perturbations seed": 3})


def eda_config(data: dict[str, str], geometry: dict[str, Any], members: int, ninner: int,
               out: Path, cost: str = "3D-Var", model: dict[str, Any] | None = None) -> dict[str, Any]:
    """An EDA of 3D-Vars (window centred on the members' time) or of 4D-Vars (window starting at it, the
    tangent-linear ``QgTLM``, one outer loop), ``ninner`` DRPCG iterations each."""
    four_d = cost == "4D-Var"
    cost_function: dict[str, Any] = {
        "cost type": cost, "time window": {"begin": data["date"] if four_d else data["begin"], "length": "PT6H"},
        "geometry": geometry, "analysis variables": ["x", "q", "u", "v"],
        "background": {"date": data["date"], "filename": data["control"]},
        "background error": static_b(),
        "observations": {"observers": [{
            "obs space": {"name": "streamfunction", "simulated variables": ["x"],
                          "obsdatain": {"filename": data["obs4d" if four_d else "obs"]}},
            "obs operator": {"name": "Identity"}, "obs error": {"covariance model": "diagonal"}}]}}
    if four_d:
        cost_function["model"] = dict(model)
        cost_function["linear model"] = {"name": "QgTLM", "tstep": model["tstep"]}
    return {"model plugin": "qg",
            "cost function": cost_function,
            "variational": {"minimizer": {"algorithm": "DRPCG"},
                            "iterations": [{"ninner": ninner, "gradient norm reduction": 1e-12}]},
            "members": {"members from template": {"template": {"date": data["date"], "filename": data["template"]},
                                                  "pattern": "%mem%", "nmembers": members}},
            "eda": {"seed": 7, "control member": True},
            "output": {"filename": str(out / "an.%mem%.nc")},
            "output mean": {"filename": str(out / "an.mean.nc")},
            "output spread": {"filename": str(out / "an.spread.nc")}}


def forecast_config(data: dict[str, str], geometry: dict[str, Any], model: dict[str, Any], members: int,
                    length: str, out: Path) -> dict[str, Any]:
    return {"model plugin": "qg", "geometry": geometry, "model": model,
            "initial condition": {"members from template": {
                "template": {"date": data["date"], "filename": data["template"]}, "pattern": "%mem%",
                "nmembers": members}},
            "forecast length": length,
            "output": {"filename": str(out / "fc.%mem%.nc")},
            "output mean": {"filename": str(out / "fc.mean.nc")},
            "output spread": {"filename": str(out / "fc.spread.nc")}}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_command(app: str, config: dict[str, Any], path: Path) -> float:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pyoops.cli", app, str(path), "--quiet"], capture_output=True,
                          text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{app} failed ({path}):\n{done.stderr}")
    return elapsed


def read_outputs(directory: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(directory.glob("*.nc")):
        with netCDF4.Dataset(path) as ds:
            for name, var in ds.variables.items():
                out[f"{path.name}:{name}"] = np.array(var[:])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="160x80", help="nx x ny of the QG channel (default 160x80)")
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs per engine; the median is reported")
    parser.add_argument("--ninner", type=int, default=20, help="DRPCG iterations of each EDA member")
    parser.add_argument("--cost", choices=("3D-Var", "4D-Var"), default="3D-Var",
                        help="the EDA members' analysis (4D-Var: 6-hour window, QgTLM, one outer loop)")
    parser.add_argument("--obs-density", type=int, default=400)
    parser.add_argument("--forecast-length", default="P1D")
    parser.add_argument("--spin-up", default="P2D", help="truth spin-up before the members are drawn")
    parser.add_argument("--apps", nargs="+", default=["eda", "ensemble-forecast"],
                        choices=["eda", "ensemble-forecast"])
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--max-load", type=float, default=0.7,
                        help="warn when the 1-minute load average is above this before a timing")
    parser.add_argument("--tiny", action="store_true", help="40x20, 4 members, PT6H, 1 repeat: a smoke run")
    parser.add_argument("--directory", default="parallel_members_out")
    args = parser.parse_args()
    if args.tiny:
        args.grid, args.members, args.repeat, args.ninner, args.obs_density = "40x20", 4, 1, 5, 50
        args.forecast_length, args.spin_up = "PT6H", "PT12H"
    nx, ny = (int(v) for v in args.grid.lower().split("x"))
    tstep = TSTEPS.get((nx, ny))
    if tstep is None:
        raise SystemExit(f"no time step known for {nx}x{ny}: use one of {', '.join(f'{a}x{b}' for a, b in TSTEPS)}")
    geometry = {"nx": nx, "ny": ny, "depths": DEPTHS}
    model = {"name": "QG", "tstep": tstep}
    base = Path(args.directory).resolve()
    print(f"QG {nx} x {ny} ({tstep}), {args.members} members, {args.workers} workers, median of {args.repeat}, "
          f"EDA of {args.cost}s with {args.ninner} iterations; "
          f"{os.cpu_count()} CPUs; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    print(f"load average before the preparation: {load()}")
    data = prepare(base / "data", geometry, model, args.members, args.spin_up, args.obs_density)
    rows = []
    for app in args.apps:
        times: dict[str, list[float]] = {}
        outputs: dict[str, dict[str, np.ndarray]] = {}
        before = load()
        if os.getloadavg()[0] > args.max_load:
            print(f"WARNING: 1-minute load average {os.getloadavg()[0]:.2f} > {args.max_load} before {app}: "
                  "the machine is busy, the timings are not a measurement")
        for repeat in range(args.repeat):
            for engine in args.engines:  # interleaved, so that a change of load hits every engine alike
                out = base / app / engine
                if app == "eda":
                    cfg = eda_config(data, geometry, args.members, args.ninner, out, args.cost, model)
                else:
                    cfg = forecast_config(data, geometry, model, args.members, args.forecast_length, out)
                if ENGINES[engine] is not None:
                    cfg["parallel"] = dict(ENGINES[engine], workers=args.workers)
                times.setdefault(engine, []).append(run_command(app, cfg, base / f"{app}.{engine}.yaml"))
                if repeat == 0:
                    outputs[engine] = read_outputs(out)
        after = load()
        reference = outputs[args.engines[0]]
        for engine in args.engines[1:]:
            same = outputs[engine].keys() == reference.keys() and all(
                np.array_equal(outputs[engine][k], v) for k, v in reference.items())
            if not same:
                raise SystemExit(f"{app}: the {engine} outputs differ from the {args.engines[0]} outputs")
        serial = statistics.median(times[args.engines[0]])
        for engine in args.engines:
            median = statistics.median(times[engine])
            rows.append((app, engine, median, serial / median, " ".join(f"{t:.2f}" for t in times[engine]),
                         before, after))
    print()
    print(f"{'application':<18} {'engine':<10} {'median [s]':>10} {'serial/engine':>14}  {'runs [s]':<22} "
          f"load before -> after")
    for app, engine, median, ratio, runs, before, after in rows:
        print(f"{app:<18} {engine:<10} {median:>10.2f} {ratio:>14.2f}  {runs:<22} {before} -> {after}")
    print("(outputs of every engine bitwise equal to the serial run's)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
