"""A small QG twin experiment for the data-assimilation tests (3D-Var, 4D-Var), run through the
pyoops applications exactly as a user would (``pyoops.run`` on YAML-like mappings).

Truth: the OOPS depths of the truth run (4000/6000 m), a sheared zonal flow (0 and 30 m/s at
the ground and the lid) over the default mountain, 10 days of spin-up so that baroclinic
waves are developed.  Model of the assimilation: 4500/5500 m (model error).  Background at
the window begin: the truth 1 day earlier plus a seeded draw from the static B, forecast
1 day by the assimilation model.  Observations over a 12-hour window (every 2 hours, random
locations and layers): streamfunction, wind (u, v) and wind speed, perturbed with their
errors.  Everything on the 40 x 20 grid.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np

import pyoops
from pyoops.registry import get_registry
from pyoops.saber.chain import ErrorCovariance
from pyoops.util.datetime import DateTime, Duration
from pyoops.util.random import generator

PLUGIN = "qg"
TRUTH_GEOMETRY = {"nx": 40, "ny": 20, "depths": [4000.0, 6000.0]}
GEOMETRY = {"nx": 40, "ny": 20, "depths": [4500.0, 5500.0]}
MODEL = {"name": "QG", "tstep": "PT1H"}
START = DateTime("2010-01-01T00:00:00Z")
T0 = DateTime("2010-01-11T00:00:00Z")          # window begin
WINDOW = Duration("PT12H")
MID = T0 + Duration("PT6H")
INIT = {"method": "baroclinic-instability", "perturbation": 1.0, "bottom wind": 0.0, "top wind": 30.0}
VARIABLES = ["x", "q", "u", "v"]

#: Static B (the tutorial's): diffusion (1000 km) of the control streamfunction, 0.6 between the
#: layers, sigma = 3e6 m^2/s, rigid walls, balance to x, q, u, v.
def static_b(sigma: float = 3.0e6, length: float = 1.0e6, correlation: float = 0.6) -> dict[str, Any]:
    return {
        "covariance model": "SABER",
        "saber central block": {"saber block name": "diffusion", "horizontal length scale": length},
        "saber outer blocks": [
            {"saber block name": "QG vertical correlation", "correlation": correlation},
            {"saber block name": "StdDev", "read": {"value": {"x": sigma}}},
            {"saber block name": "QG walls"},
            {"saber block name": "QG balance"},
        ],
    }


def observers(folder: Path, tag: str, outfile: bool = True, generate: bool = False, seed: int = 0) -> list:
    """Streamfunction, wind and wind-speed observers (generated networks or files)."""
    specs = [("streamfunction", ["x"], "Identity", 4.0e5, 20),
             ("wind", ["u", "v"], "Identity", 1.0, 15),
             ("wind speed", ["wind_speed"], "WindSpeed", 1.0, 15)]
    out = []
    for i, (name, variables, op, error, density) in enumerate(specs):
        key = name.replace(" ", "_")
        space: dict[str, Any] = {"name": name, "simulated variables": variables}
        if generate:
            space["generate"] = {"begin": "PT2H", "obs frequency": "PT2H", "obs density": density,
                                 "obs error": error, "locations": "random", "random seed": 100 * seed + i}
            space["obsdataout"] = {"filename": str(folder / f"obs_{key}.nc")}
        else:
            space["obsdatain"] = {"filename": str(folder / f"obs_{key}.nc")}
            if outfile:
                space["obsdataout"] = {"filename": str(folder / f"obs_{key}_{tag}.nc")}
        out.append({"obs space": space, "obs operator": {"name": op}, "obs error": {"covariance model": "diagonal"}})
    return out


def read_x(filename: "str | Path") -> np.ndarray:
    with netCDF4.Dataset(filename) as ds:
        return np.array(ds["x"][:], dtype=float)


def build(folder: Path, seed: int) -> dict[str, Any]:
    """Truth, background and observations in ``folder``; returns the file names."""
    folder.mkdir(parents=True, exist_ok=True)
    truth_files = folder / "truth.%date%.nc"
    if not (folder / f"truth.{MID}.nc").exists():
        pyoops.run("forecast", {
            "model plugin": PLUGIN, "geometry": TRUTH_GEOMETRY, "model": MODEL,
            "initial condition": {"date": str(START), "analytic init": INIT},
            "forecast length": "P10DT12H",
            "output": {"filename": str(truth_files), "first": "P9D", "frequency": "PT6H"}})
    # Background: truth 1 day before the window + a draw from the static B, forecast by the imperfect model.
    registry = get_registry()
    geometry = registry.model_plugin(PLUGIN).geometry(GEOMETRY)
    state_cls = registry.model_plugin(PLUGIN).state
    before = T0 - Duration("P1D")
    # The truth has other layer depths (model error): read its fields point by point on the DA geometry.
    x = state_cls.from_config(geometry, {"date": str(before), "filename": str(folder / f"truth.{before}.nc"),
                                         "allow other geometry": True})
    b = ErrorCovariance(static_b(), geometry, VARIABLES, before, registry, registry.model_plugin(PLUGIN))
    x += b.randomize(generator(seed, "qg twin", "background"))
    init = folder / f"init.{seed}.nc"
    x.write(str(init))
    pyoops.run("forecast", {
        "model plugin": PLUGIN, "geometry": GEOMETRY, "model": MODEL,
        "initial condition": {"date": str(before), "filename": str(init)},
        "forecast length": "P1DT6H",
        "output": {"filename": str(folder / f"background.{seed}.%date%.nc"), "first": "P1D", "frequency": "PT6H"}})
    pyoops.run("hofx", {
        "model plugin": PLUGIN, "time window": {"begin": str(T0), "length": str(WINDOW)},
        "geometry": TRUTH_GEOMETRY, "model": MODEL,
        "initial condition": {"date": str(T0), "filename": str(folder / f"truth.{T0}.nc")},
        "observations": {"observers": observers(folder, "", generate=True, seed=seed)},
        "make obs": True, "obs perturbations": True, "obs perturbations seed": seed})
    return {"background": lambda t: str(folder / f"background.{seed}.{t}.nc"),
            "truth": lambda t: str(folder / f"truth.{t}.nc")}


def variational(folder: Path, cost_type: str, files: dict[str, Any], seed: int, ninner: int = 25,
                outer: int = 2) -> dict[str, Any]:
    """Run 3D-Var (background and analysis at the window middle) or 4D-Var (at the window begin)."""
    when = MID if cost_type == "3D-Var" else T0
    cost: dict[str, Any] = {
        "cost type": cost_type,
        "time window": {"begin": str(T0), "length": str(WINDOW)},
        "geometry": GEOMETRY,
        "analysis variables": VARIABLES,
        "background": {"date": str(when), "filename": files["background"](when)},
        "background error": static_b(),
        "observations": {"observers": observers(folder, f"{cost_type}.{seed}", outfile=False)},
    }
    if cost_type == "4D-Var":
        cost["model"] = dict(MODEL)
        cost["linear model"] = {"name": "QgTLM", "tstep": MODEL["tstep"]}
    config = {
        "model plugin": PLUGIN, "cost function": cost,
        "variational": {"minimizer": {"algorithm": "DRPCG"},
                        "iterations": [{"ninner": ninner, "gradient norm reduction": 1e-6}] * outer},
        "output": {"filename": str(folder / f"an.{cost_type}.{seed}.%date%.nc")},
    }
    return pyoops.run("variational", copy.deepcopy(config))


def forecast_to_mid(folder: Path, analysis: str, tag: str) -> str:
    """Carry a 4D-Var analysis (window begin) to the window middle with the assimilation model."""
    out = folder / f"{tag}.mid.nc"
    pyoops.run("forecast", {
        "model plugin": PLUGIN, "geometry": GEOMETRY, "model": MODEL,
        "initial condition": {"date": str(T0), "filename": analysis},
        "forecast length": "PT6H", "output": {"filename": str(out)}})
    return str(out)


def rmse(a: "str | Path", b: "str | Path") -> float:
    """RMS difference of the streamfunction of two state files (m^2/s)."""
    return float(np.sqrt(np.mean((read_x(a) - read_x(b)) ** 2)))
