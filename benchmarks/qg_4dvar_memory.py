"""Benchmark: peak memory and wall time of a QG 4D-Var with a 24-hour window on growing grids.

A 4D-Var stores the linear model's trajectory for every model step of the window, so its
memory grows with the grid points times the number of steps, and the number of steps grows
with the resolution (the semi-Lagrangian guard, ``model.tstep`` <= 2 min(dx, dy) / 150 m/s).
Each grid runs with the longest round time step its limit allows: 80 x 40 ``PT30M``
(48 steps per day), 160 x 80 ``PT15M`` (96), 320 x 160 ``PT8M`` (180).

The experiment on each grid (OOPS depths 4500/5500 m): the truth is the baroclinic-instability
state with a wave perturbation of 1 m/s, the background the same flow with 2 m/s;
streamfunction and wind observations (30 and 20 random locations every 4 hours, errors
4e5 m^2/s and 1 m/s, perturbed) come from a ``make obs`` run of the truth; B is the
tutorial's static B (diffusion, ``QG walls``, ``QG balance``); one outer loop of
``--ninner`` DRPCG iterations (the trajectory is stored once per outer loop; more
iterations add time, not memory).

Each 4D-Var runs in a fresh Python subprocess (the observations are made in another one
first), which reports its peak resident set (``ru_maxrss``) and the wall, user and system
times of the 4D-Var (after the imports).  *B/point/step* is the growth of the peak with the window:
``(peak(24 h) - peak(6 h)) / (nx ny (steps(24 h) - steps(6 h)))``, what the stored trajectory
costs per grid point (both layers) and model step.

Usage::

    python benchmarks/qg_4dvar_memory.py [--grids 80x40 160x80 320x160] [--ninner 3]
                                         [--trajectory default|matrices|departures|state]

Record the printed table in docs/benchmarks.rst.  No assertion: a benchmark exits 0.
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

#: The longest round time step of each grid under the semi-Lagrangian guard at 150 m/s.
TSTEPS = {(80, 40): "PT30M", (160, 80): "PT15M", (320, 160): "PT8M", (40, 20): "PT1H"}
T0 = "2010-01-01T00:00:00Z"
DEPTHS = [4500.0, 5500.0]


def _init(perturbation: float) -> dict[str, Any]:
    return {"method": "baroclinic-instability", "perturbation": perturbation}


def _observers(folder: Path, generate: bool, seed: int = 1) -> list[dict[str, Any]]:
    specs = [("streamfunction", ["x"], 4.0e5, 30), ("wind", ["u", "v"], 1.0, 20)]
    out = []
    for i, (name, variables, error, density) in enumerate(specs):
        space: dict[str, Any] = {"name": name, "simulated variables": variables}
        filename = str(folder / f"obs_{name}.nc")
        if generate:
            space["generate"] = {"begin": "PT4H", "obs frequency": "PT4H", "obs density": density,
                                 "obs error": error, "locations": "random", "random seed": 100 * seed + i}
            space["obsdataout"] = {"filename": filename}
        else:
            space["obsdatain"] = {"filename": filename}
        out.append({"obs space": space, "obs operator": {"name": "Identity"},
                    "obs error": {"covariance model": "diagonal"}})
    return out


def static_b() -> dict[str, Any]:
    """The QG tutorial's static B: diffusion (1000 km), 0.6 between the layers, sigma 3e6 m^2/s, walls, balance."""
    return {"covariance model": "SABER",
            "saber central block": {"saber block name": "diffusion", "horizontal length scale": 1.0e6},
            "saber outer blocks": [{"saber block name": "QG vertical correlation", "correlation": 0.6},
                                   {"saber block name": "StdDev", "read": {"value": {"x": 3.0e6}}},
                                   {"saber block name": "QG walls"},
                                   {"saber block name": "QG balance"}]}


def make_obs(nx: int, ny: int, window: str, folder: Path) -> None:
    """Observations of the truth over the window, perturbed with their errors."""
    import pyoops

    geometry = {"nx": nx, "ny": ny, "depths": DEPTHS}
    pyoops.run("hofx", {
        "model plugin": "qg", "time window": {"begin": T0, "length": window}, "geometry": geometry,
        "model": {"name": "QG", "tstep": TSTEPS[nx, ny]},
        "initial condition": {"date": T0, "analytic init": _init(1.0)},
        "observations": {"observers": _observers(folder, generate=True)},
        "make obs": True, "obs perturbations": True, "obs perturbations seed": 1})


def four_dvar(nx: int, ny: int, window: str, folder: Path, ninner: int, trajectory: str) -> dict[str, Any]:
    """The 4D-Var of the module docs; returns the cost function's summary."""
    import pyoops

    tstep = TSTEPS[nx, ny]
    cost = {"cost type": "4D-Var", "time window": {"begin": T0, "length": window},
            "geometry": {"nx": nx, "ny": ny, "depths": DEPTHS}, "analysis variables": ["x", "q", "u", "v"],
            "background": {"date": T0, "analytic init": _init(2.0)}, "background error": static_b(),
            "observations": {"observers": _observers(folder, generate=False)},
            "model": {"name": "QG", "tstep": tstep}, "linear model": {"name": "QgTLM", "tstep": tstep}}
    if trajectory != "default":  # the QgTLM of code versions without the key
        cost["linear model"]["trajectory"] = trajectory
    return pyoops.run("variational", {
        "model plugin": "qg", "cost function": cost,
        "variational": {"minimizer": {"algorithm": "DRPCG"},
                        "iterations": [{"ninner": ninner, "gradient norm reduction": 1e-6}]},
        "output": {"filename": str(folder / "an.%date%.nc")}})


def _child(args: list[str]) -> dict[str, Any]:
    """Run this script with ``args`` in a fresh subprocess; the JSON record it prints last."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_case(nx: int, ny: int, hours: int, ninner: int, trajectory: str) -> dict[str, Any]:
    """Observations, then the measured 4D-Var, each in a fresh subprocess."""
    with tempfile.TemporaryDirectory(prefix="qg4dvar") as tmp:
        base = [str(nx), str(ny), f"PT{hours}H", tmp, str(ninner), trajectory]
        _child(["--make-obs", *base])
        return _child(["--worker", *base])


def worker(nx: int, ny: int, window: str, folder: Path, ninner: int, trajectory: str) -> dict[str, Any]:
    import logging
    import resource

    from pyoops.util.datetime import Duration

    logging.getLogger("pyoops").setLevel(logging.WARNING)
    start = time.perf_counter()
    summary = four_dvar(nx, ny, window, folder, ninner, trajectory)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    steps = int(Duration(window).total_seconds() // Duration(TSTEPS[nx, ny]).total_seconds())
    return {"nx": nx, "ny": ny, "window": window, "tstep": TSTEPS[nx, ny], "steps": steps,
            "seconds": seconds, "user s": usage.ru_utime, "system s": usage.ru_stime,
            "peak MiB": usage.ru_maxrss / 1024.0,  # KiB on Linux
            "initial J": summary["initial J"], "final J": summary["final J"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", nargs="+", default=["80x40", "160x80"],
                        help="grids NXxNY among " + ", ".join(f"{a}x{b}" for a, b in TSTEPS))
    parser.add_argument("--ninner", type=int, default=3, help="inner iterations of the one outer loop")
    parser.add_argument("--short", type=int, default=6, help="hours of the short window for B/point/step")
    parser.add_argument("--trajectory", choices=["default", "matrices", "departures", "state"], default="default",
                        help="the QgTLM's 'trajectory' key (default: not given)")
    parser.add_argument("--worker", nargs=6, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--make-obs", nargs=6, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for flag, job in ((args.make_obs, "obs"), (args.worker, "4dvar")):
        if flag is not None:
            nx, ny, window, folder, ninner = int(flag[0]), int(flag[1]), flag[2], Path(flag[3]), int(flag[4])
            trajectory = flag[5]
            if job == "obs":
                make_obs(nx, ny, window, folder)
                print(json.dumps({}))
            else:
                print(json.dumps(worker(nx, ny, window, folder, ninner, trajectory)))
            return 0

    import scipy

    print(f"Python {platform.python_version()}, NumPy {np.__version__}, SciPy {scipy.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")
    print(f"QG 4D-Var, 24 h window, 1 outer loop x {args.ninner} inner iterations, trajectory: {args.trajectory}")
    print(f"{'grid':>9} {'tstep':>6} {'steps':>6} {'peak [MiB]':>11} {'6 h peak':>9} {'B/point/step':>13} "
          f"{'wall [s]':>9} {'user [s]':>9} {'sys [s]':>8} {'sys %':>6}")
    for grid in args.grids:
        nx, ny = (int(n) for n in grid.split("x"))
        long = run_case(nx, ny, 24, args.ninner, args.trajectory)
        short = run_case(nx, ny, args.short, args.ninner, args.trajectory)
        per = (long["peak MiB"] - short["peak MiB"]) * 2**20 / (nx * ny * (long["steps"] - short["steps"]))
        cpu = long["user s"] + long["system s"]
        print(f"{grid:>9} {long['tstep']:>6} {long['steps']:>6} {long['peak MiB']:>11.0f} {short['peak MiB']:>9.0f} "
              f"{per:>13.0f} {long['seconds']:>9.1f} {long['user s']:>9.1f} {long['system s']:>8.1f} "
              f"{100 * long['system s'] / cpu:>6.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
