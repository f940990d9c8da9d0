"""Minimizer benchmark: wall time per inner iteration and iterations to a 1e-3 gradient reduction.

Two problems, run through the real ``variational`` application:

* Lorenz-96 4D-Var: 40 variables, a 1-day window with 20 observations every 6 h
  (error 0.4), B = 0.5² × Gaussian spectral correlation (length 0.05), one outer loop;
* a 2-D 3D-Var on a 256 × 256 doubly periodic grid (65,536 points, a toy model
  plugin registered in-process: the 3D-Var needs no model), 4,000 random
  observations, B = StdDev × Gaussian spectral correlation.

For each minimizer it prints the wall time of the minimisation alone (set-up, the
nonlinear H(x) and output excluded) divided by the number of inner iterations, and the number of iterations needed to reduce the B-norm of the
gradient by 1e-3.  Usage::

    python benchmarks/minimizers.py [--quick]

Record the printed tables in docs/benchmarks.rst.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
from pathlib import Path

import netCDF4
import numpy as np
from pydantic import Field

import pyoops
from pyoops.assimilation.minimizers import ALGORITHMS, ITERATIVE_ALGORITHMS
from pyoops.config.parameters import Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import write_fields
from pyoops.generic.grid import Axis, StructuredGrid
from pyoops.registry import get_registry, hookimpl
from pyoops.util.datetime import DateTime
from pyoops.util.random import generator


class Toy2DGeometryParameters(Parameters):
    n: int = Field(gt=3)


class Toy2DGeometry(StructuredGrid):
    """A doubly periodic unit square with one variable ``h``."""

    Parameters = Toy2DGeometryParameters

    def __init__(self, params: Toy2DGeometryParameters):
        super().__init__([Axis.periodic_axis("y", params.n, 1.0), Axis.periodic_axis("x", params.n, 1.0)], ["h"])


class _Toy2DPlugin:
    @hookimpl
    def pyoops_register(self, registry):
        registry.add_model_plugin("benchmark-2d", geometry=Toy2DGeometry, description="benchmark toy 2-D grid")


def _write_obs(path: Path, coords: dict, times: np.ndarray, values: np.ndarray, error: float, var: str) -> None:
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("Location", values.size)
        meta = ds.createGroup("MetaData")
        t = meta.createVariable("dateTime", "i8", ("Location",))
        t.units = "seconds since 1970-01-01T00:00:00Z"
        t[:] = times.astype(np.int64)
        for name, c in coords.items():
            meta.createVariable(name, "f8", ("Location",))[:] = c
        ds.createGroup("ObsValue").createVariable(var, "f8", ("Location",))[:] = values
        ds.createGroup("ObsError").createVariable(var, "f8", ("Location",))[:] = np.full(values.size, error)


def _iterations_to(trace: list[dict], reduction: float) -> int | None:
    for rec in trace:
        if rec["gradient norm reduction"] <= reduction:
            return int(rec["iteration"])
    return None


def _run(config: dict, algorithm: str) -> tuple[float, int, int | None, float]:
    config["variational"]["minimizer"]["algorithm"] = algorithm
    summary = pyoops.run("variational", config)
    elapsed = summary["minimizer seconds"]
    trace = summary["trace"]
    return elapsed, len(trace) - 1, _iterations_to(trace, 1e-3), summary["final J"]


def lorenz96_config(work: Path) -> dict:
    date0 = "2010-01-01T00:00:00Z"
    model = {"name": "Lorenz96", "f": 8.0, "tstep": "PT6H"}
    # Truth: 11 days from a random state, written daily.
    pyoops.run("forecast", {"model plugin": "lorenz96", "geometry": {"resol": 40}, "model": model,
                            "initial condition": {"date": "2009-12-21T00:00:00Z",
                                                  "analytic init": {"method": "random", "seed": 1}},
                            "forecast length": "P11D",
                            "output": {"filename": str(work / "truth.%date%.nc"), "frequency": "P1D"}})
    pyoops.run("hofx", {"model plugin": "lorenz96", "time window": {"begin": date0, "length": "P1D"},
                        "geometry": {"resol": 40},
                        "initial condition": {"date": date0, "filename": str(work / f"truth.{date0}.nc")},
                        "model": model,
                        "observations": {"observers": [{"obs space": {
                            "name": "l96", "simulated variables": ["x"],
                            "generate": {"begin": "PT6H", "obs frequency": "PT6H", "obs density": 20,
                                         "obs error": 0.4, "locations": "random", "random seed": 2},
                            "obsdataout": {"filename": str(work / "obs.nc")}},
                            "obs operator": {"name": "Identity"}}]},
                        "make obs": True, "obs perturbations": True, "obs perturbations seed": 3})
    # Background: a 1-day forecast with F = 8.5 from the truth of the day before.
    pyoops.run("forecast", {"model plugin": "lorenz96", "geometry": {"resol": 40},
                            "model": {"name": "Lorenz96", "f": 8.5, "tstep": "PT6H"},
                            "initial condition": {"date": "2009-12-31T00:00:00Z",
                                                  "filename": str(work / "truth.2009-12-31T00:00:00Z.nc")},
                            "forecast length": "P1D", "output": {"filename": str(work / "bg.nc")}})
    return {
        "model plugin": "lorenz96",
        "cost function": {
            "cost type": "4D-Var", "time window": {"begin": date0, "length": "P1D"},
            "geometry": {"resol": 40},
            "background": {"date": date0, "filename": str(work / "bg.nc")},
            "model": {"name": "Lorenz96", "f": 8.0, "tstep": "PT6H"},
            "linear model": {"name": "Lorenz96TLM", "f": 8.0, "tstep": "PT6H"},
            "background error": {"covariance model": "SABER",
                                 "saber central block": {"saber block name": "spectral correlation",
                                                         "length scale": 0.05},
                                 "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": 0.5}}]},
            "observations": {"observers": [{"obs space": {"name": "l96", "simulated variables": ["x"],
                                                          "obsdatain": {"filename": str(work / "obs.nc")}},
                                            "obs operator": {"name": "Identity"}}]}},
        "variational": {"minimizer": {"algorithm": "DRPCG"},
                        "iterations": [{"ninner": 60, "gradient norm reduction": 1e-6}]},
    }


def toy2d_config(work: Path, n: int, nobs: int) -> dict:
    registry = get_registry()
    if "benchmark-2d" not in registry.model_plugins:
        registry.register_plugin(_Toy2DPlugin(), name="benchmark-2d")
    geometry = Toy2DGeometry(Toy2DGeometryParameters(n=n))
    date = DateTime("2010-01-01T00:00:00Z")
    rng = generator(7, "benchmark")
    yy, xx = np.meshgrid(geometry.axes[0].points, geometry.axes[1].points, indexing="ij")
    truth = np.sin(2 * np.pi * 3 * xx) * np.cos(2 * np.pi * 2 * yy)
    background = truth + 0.3 * rng.standard_normal(truth.shape)
    write_fields(work / "bg2d.nc", geometry, FieldSet({"h": background}), date)
    ox, oy = rng.random(nobs), rng.random(nobs)
    values = np.sin(2 * np.pi * 3 * ox) * np.cos(2 * np.pi * 2 * oy) + 0.2 * rng.standard_normal(nobs)
    _write_obs(work / "obs2d.nc", {"x": ox, "y": oy}, np.full(nobs, date.seconds_since_epoch()), values, 0.2, "h")
    return {
        "model plugin": "benchmark-2d",
        "cost function": {
            "cost type": "3D-Var", "time window": {"begin": "2009-12-31T21:00:00Z", "length": "PT6H"},
            "geometry": {"n": n},
            "background": {"date": str(date), "filename": str(work / "bg2d.nc")},
            "background error": {"covariance model": "SABER",
                                 "saber central block": {"saber block name": "spectral correlation",
                                                         "length scale": 0.03},
                                 "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": 0.3}}]},
            "observations": {"observers": [{"obs space": {"name": "h", "simulated variables": ["h"],
                                                          "obsdatain": {"filename": str(work / "obs2d.nc")}},
                                            "obs operator": {"name": "Identity"}}]}},
        "variational": {"minimizer": {"algorithm": "DRPCG"},
                        "iterations": [{"ninner": 40, "gradient norm reduction": 1e-4}]},
    }


def table(title: str, config: dict, algorithms: tuple[str, ...]) -> None:
    print(f"\n{title}")
    print(f"{'minimizer':<11} {'iterations':>10} {'to 1e-3':>8} {'s / iteration':>14} {'final J':>16}")
    for algorithm in algorithms:
        elapsed, iterations, to_1e3, final_j = _run(config, algorithm)
        per = elapsed / max(iterations, 1)
        print(f"{algorithm:<11} {iterations:>10d} {str(to_1e3):>8} {per:>14.4g} {final_j:>16.10g}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller 2-D grid (64 x 64), for a smoke test")
    args = parser.parse_args()
    logging.getLogger("pyoops").setLevel(logging.WARNING)
    print(f"Python {platform.python_version()}, NumPy {np.__version__}, {platform.machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = lorenz96_config(work)
        table("Lorenz-96 4D-Var (n = 40, 1-day window, 80 obs, one outer loop)", config, ALGORITHMS)
        n = 64 if args.quick else 256
        config2 = toy2d_config(work, n, 4000)
        # n * n > DIRECT_MAX_SIZE: DirectSolve is refused there.
        table(f"2-D 3D-Var ({n} x {n} = {n * n} points, 4000 obs)", config2, ITERATIVE_ALGORITHMS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
