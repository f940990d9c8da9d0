"""Small Lorenz-96 configurations and inputs shared by the bad-input corpus and the fuzz test.

Every configuration here is *valid* and runs in well under a second on the 8-point
Lorenz-96 ring: the corpus and the fuzz test break them.  Inputs are written with
plain netCDF4 code following ``docs/file_formats.rst`` (states: attribute ``date``,
dimension and coordinate ``position``, variable ``x``; observations: IODA-like groups).
"""

from __future__ import annotations

import copy
import datetime
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import yaml

N = 8
NMEM = 4
DATE = "2010-01-01T00:00:00Z"
BEGIN = "2009-12-31T21:00:00Z"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

#: Files every case directory starts with.
INPUTS = ("bg.nc", "obs.nc", *(f"ens.{k}.nc" for k in range(1, NMEM + 1)))


# Inputs ----------------------------------------------------------------------------------------
def _seconds(text: str) -> int:
    return round((datetime.datetime.fromisoformat(text.replace("Z", "+00:00")) - EPOCH).total_seconds())


def x0() -> np.ndarray:
    return 8.0 + np.sin(2 * np.pi * np.arange(N) / N)


def write_state(path: "str | os.PathLike[str]", x: np.ndarray, date: str = DATE) -> None:
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.date = date
        ds.createDimension("position", x.size)
        ds.createVariable("position", "f8", ("position",))[:] = np.arange(x.size) / x.size
        ds.createVariable("x", "f8", ("position",))[:] = x


def write_obs(path: "str | os.PathLike[str]", values: np.ndarray, error: float = 0.4, date: str = DATE) -> None:
    n = values.size
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("Location", n)
        meta = ds.createGroup("MetaData")
        dt = meta.createVariable("dateTime", "i8", ("Location",))
        dt.units = "seconds since 1970-01-01T00:00:00Z"
        dt[:] = np.full(n, _seconds(date), dtype=np.int64)
        meta.createVariable("x", "f8", ("Location",))[:] = np.arange(n) / n
        ds.createGroup("ObsValue").createVariable("x", "f8", ("Location",))[:] = values
        ds.createGroup("ObsError").createVariable("x", "f8", ("Location",))[:] = np.full(n, error)


def write_inputs(directory: Path) -> None:
    """The background, the observations (every grid point at DATE) and NMEM members."""
    rng = np.random.default_rng(1)
    write_state(directory / "bg.nc", x0())
    write_obs(directory / "obs.nc", x0() + 0.5 * rng.standard_normal(N))
    for k in range(1, NMEM + 1):
        write_state(directory / f"ens.{k}.nc", x0() + 0.5 * rng.standard_normal(N))


# Valid configurations ----------------------------------------------------------------------------
def static_b() -> dict[str, Any]:
    return {"covariance model": "SABER",
            "saber central block": {"saber block name": "spectral correlation", "length scale": 0.2},
            "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": 0.5}}]}


def members_template() -> dict[str, Any]:
    return {"members from template": {"template": {"date": DATE, "filename": "ens.%mem%.nc"},
                                      "pattern": "%mem%", "nmembers": NMEM}}


def observers(out: str | None = "out/obs_out.nc") -> list[dict[str, Any]]:
    space: dict[str, Any] = {"name": "grid", "simulated variables": ["x"], "obsdatain": {"filename": "obs.nc"}}
    if out:
        space["obsdataout"] = {"filename": out}
    return [{"obs space": space, "obs operator": {"name": "Identity"}, "obs error": {"covariance model": "diagonal"}}]


def forecast() -> dict[str, Any]:
    return {"model plugin": "lorenz96", "geometry": {"resol": N},
            "model": {"name": "Lorenz96", "f": 8.0, "tstep": "PT6H"},
            "initial condition": {"date": DATE, "filename": "bg.nc"},
            "forecast length": "PT12H",
            "output": {"filename": "out/fc.%date%.nc", "frequency": "PT6H"}}


def hofx() -> dict[str, Any]:
    return {"model plugin": "lorenz96", "time window": {"begin": BEGIN, "length": "PT6H"},
            "geometry": {"resol": N}, "state": {"date": DATE, "filename": "bg.nc"},
            "observations": {"observers": observers("out/hofx.nc")}}


def makeobs() -> dict[str, Any]:
    """``pyoops hofx`` with ``make obs`` on a generated network."""
    cfg = hofx()
    cfg["observations"] = {"observers": [{
        "obs space": {"name": "generated", "simulated variables": ["x"],
                      "generate": {"begin": "PT3H", "obs frequency": "PT6H", "obs density": N, "obs error": 0.4},
                      "obsdataout": {"filename": "out/made.nc"}},
        "obs operator": {"name": "Identity"}, "obs error": {"covariance model": "diagonal"}}]}
    cfg["make obs"] = True
    return cfg


def cost_function() -> dict[str, Any]:
    return {"cost type": "3D-Var", "time window": {"begin": BEGIN, "length": "PT6H"}, "geometry": {"resol": N},
            "analysis variables": ["x"], "background": {"date": DATE, "filename": "bg.nc"},
            "background error": static_b(), "observations": {"observers": observers()}}


def variational_section() -> dict[str, Any]:
    return {"minimizer": {"algorithm": "DRPCG"}, "iterations": [{"ninner": 5, "gradient norm reduction": 1e-10}]}


def variational() -> dict[str, Any]:
    return {"model plugin": "lorenz96", "cost function": cost_function(), "variational": variational_section(),
            "output": {"filename": "out/an.nc"}, "output increment": {"filename": "out/inc.nc"}}


def hybrid() -> dict[str, Any]:
    """3D-Var with a Hybrid static + localized ensemble B."""
    cfg = variational()
    b = static_b()
    cfg["cost function"]["background error"] = {"covariance model": "SABER", "saber central block": {
        "saber block name": "Hybrid", "components": [
            {"covariance": {k: v for k, v in b.items() if k != "covariance model"}, "weight": {"value": 0.5}},
            {"covariance": {"ensemble": members_template(), "saber central block": {
                "saber block name": "Ensemble", "localization": {"saber central block": {
                    "saber block name": "spectral correlation", "length scale": 0.2}}}},
             "weight": {"value": 0.5}}]}}
    return cfg


def fourdvar() -> dict[str, Any]:
    cfg = variational()
    cf = cfg["cost function"]
    cf["cost type"] = "4D-Var"
    cf["time window"] = {"begin": DATE, "length": "PT12H"}
    cf["model"] = {"name": "Lorenz96", "tstep": "PT6H"}
    cf["linear model"] = {"name": "Lorenz96TLM", "tstep": "PT6H"}
    cf["observations"]["observers"][0]["obs space"]["obsdatain"] = {"filename": "obs6.nc"}
    return cfg


def ensemble_forecast() -> dict[str, Any]:
    return {"model plugin": "lorenz96", "geometry": {"resol": N},
            "model": {"name": "Lorenz96", "tstep": "PT6H"},
            "initial condition": members_template(), "forecast length": "PT12H",
            "output": {"filename": "out/fc.%mem%.%date%.nc", "frequency": "PT6H"},
            "output mean": {"filename": "out/mean.%date%.nc", "frequency": "PT6H"}}


def gen_ens_pert_b() -> dict[str, Any]:
    return {"model plugin": "lorenz96", "geometry": {"resol": N}, "background": {"date": DATE, "filename": "bg.nc"},
            "background error": static_b(), "members": 3, "seed": 2, "output": {"filename": "out/pert.%mem%.nc"}}


def dirac() -> dict[str, Any]:
    return {"model plugin": "lorenz96", "geometry": {"resol": N}, "background": {"date": DATE, "filename": "bg.nc"},
            "background error": static_b(), "dirac": {"ixdir": [2]},
            "output dirac": {"filename": "out/dirac.nc"}}


def letkf() -> dict[str, Any]:
    obs = observers("out/obs_letkf.nc")
    obs[0]["obs localizations"] = [{"localization method": "Gaspari-Cohn", "lengthscale": 0.5}]
    return {"model plugin": "lorenz96", "geometry": {"resol": N}, "time window": {"begin": BEGIN, "length": "PT6H"},
            "background": members_template(), "observations": {"observers": obs},
            "local ensemble DA": {"solver": "LETKF", "inflation": {"mult": 1.1, "rtps": 0.5}},
            "output": {"filename": "out/an.%mem%.nc"}, "output mean": {"filename": "out/an.mean.nc"},
            "output spread": {"filename": "out/an.spread.nc"}}


def eda() -> dict[str, Any]:
    cf = cost_function()
    cf["observations"] = {"observers": observers(None)}
    return {"model plugin": "lorenz96", "cost function": cf, "variational": variational_section(),
            "members": members_template(), "eda": {"seed": 7},
            "output": {"filename": "out/an.%mem%.nc"}, "output mean": {"filename": "out/an.mean.nc"}}


def cycle() -> dict[str, Any]:
    """A 3D-Var twin experiment of 2 cycles."""
    return {"model plugin": "lorenz96", "geometry": {"resol": N}, "model": {"name": "Lorenz96", "tstep": "PT6H"},
            "truth": {"initial condition": {"date": DATE, "analytic init": {"method": "random", "seed": 3}},
                      "spin-up": "P1D"},
            "observations": {"obs frequency": "PT6H", "obs density": N, "obs error": 1.0, "seed": 5},
            "cycling": {"method": "3D-Var", "cycles": 2, "window length": "PT6H", "seed": 1},
            "cost function": {"background error": static_b()},
            "variational": variational_section(),
            "output": {"directory": "out", "plots": False}}


def cycle_letkf() -> dict[str, Any]:
    cfg = cycle()
    del cfg["cost function"], cfg["variational"]
    cfg["cycling"]["method"] = "LETKF"
    cfg["cycling"]["members"] = NMEM
    cfg["observations"]["obs localizations"] = [{"localization method": "Gaspari-Cohn", "lengthscale": 0.5}]
    cfg["local ensemble DA"] = {"inflation": {"mult": 1.05}}
    return cfg


#: name -> (application, builder of a valid configuration)
BASES: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
    "forecast": ("forecast", forecast),
    "hofx": ("hofx", hofx),
    "makeobs": ("hofx", makeobs),
    "variational": ("variational", variational),
    "hybrid": ("variational", hybrid),
    "4dvar": ("variational", fourdvar),
    "ensemble-forecast": ("ensemble-forecast", ensemble_forecast),
    "gen-ens-pert-b": ("gen-ens-pert-b", gen_ens_pert_b),
    "dirac": ("dirac", dirac),
    "letkf": ("letkf", letkf),
    "eda": ("eda", eda),
    "cycle": ("cycle", cycle),
    "cycle-letkf": ("cycle", cycle_letkf),
}


def prepare(directory: Path, base: str) -> tuple[str, dict[str, Any]]:
    """Write the inputs into ``directory``; return the application and a fresh valid config."""
    directory.mkdir(parents=True, exist_ok=True)
    write_inputs(directory)
    write_obs(directory / "obs6.nc", x0(), date="2010-01-01T06:00:00Z")
    app, build = BASES[base]
    return app, copy.deepcopy(build())


def write_config(directory: Path, cfg: Any, name: str = "cfg.yaml") -> str:
    (directory / name).write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return name


# Checks ------------------------------------------------------------------------------------------
def snapshot(directory: Path) -> set[str]:
    """Every file and directory below ``directory`` (relative names)."""
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


def temporaries(directory: Path) -> list[str]:
    return sorted(str(p) for p in directory.rglob(".pyoops-*"))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


class Timer:
    def __enter__(self) -> "Timer":
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.monotonic() - self.start
