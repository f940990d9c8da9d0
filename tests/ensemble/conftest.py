"""Fixtures of the ensemble tests: plain-netCDF4 writers/readers of the documented layouts, Lorenz-96 helpers.

Inputs are written with netCDF4 code following ``docs/file_formats.rst`` (states:
attribute ``date``, dimension ``position`` with its coordinate, ``x(position)``;
observations: IODA-like groups), and outputs are read back the same way.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import netCDF4
import numpy as np
import pytest
import yaml

from pyoops.cli import main

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def iso_seconds(text: str) -> int:
    return round((datetime.datetime.fromisoformat(text.replace("Z", "+00:00")) - EPOCH).total_seconds())


def write_yaml(path: "str | os.PathLike[str]", data: dict[str, Any]) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)


def write_state(path: "str | os.PathLike[str]", x: np.ndarray, date: str) -> str:
    n = x.size
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.date = date
        ds.createDimension("position", n)
        ds.createVariable("position", "f8", ("position",))[:] = np.arange(n) / n
        ds.createVariable("x", "f8", ("position",))[:] = x
    return str(path)


def read_state(path: "str | os.PathLike[str]") -> tuple[np.ndarray, str]:
    with netCDF4.Dataset(path) as ds:
        return np.array(ds["x"][:], dtype=np.float64), ds.getncattr("date")


def write_obs(path: "str | os.PathLike[str]", positions: np.ndarray, times: list[str], values: np.ndarray,
              errors: "float | np.ndarray") -> str:
    n = len(positions)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("Location", n)
        meta = ds.createGroup("MetaData")
        dt = meta.createVariable("dateTime", "i8", ("Location",))
        dt.units = "seconds since 1970-01-01T00:00:00Z"
        dt[:] = np.array([iso_seconds(t) for t in times], dtype=np.int64)
        meta.createVariable("x", "f8", ("Location",))[:] = positions
        ds.createGroup("ObsValue").createVariable("x", "f8", ("Location",))[:] = values
        ds.createGroup("ObsError").createVariable("x", "f8", ("Location",))[:] = np.broadcast_to(errors, (n,))
    return str(path)


def read_obs(path: "str | os.PathLike[str]") -> dict[str, np.ndarray]:
    out = {}
    with netCDF4.Dataset(path) as ds:
        for gname, group in ds.groups.items():
            for vname, var in group.variables.items():
                out[f"{gname}/{vname}"] = np.ma.filled(np.ma.asarray(var[:]), np.nan)
    return out


def l96_rk4(x: np.ndarray, nsteps: int, dt: float = 0.05, forcing: float = 8.0) -> np.ndarray:
    """Independent classical RK4 of dx_j/dt = (x_{j+1} - x_{j-2}) x_{j-1} - x_j + F (batched on leading axes)."""

    def f(y: np.ndarray) -> np.ndarray:
        return (np.roll(y, -1, -1) - np.roll(y, 2, -1)) * np.roll(y, 1, -1) - y + forcing

    for _ in range(nsteps):
        k1 = f(x)
        k2 = f(x + 0.5 * dt * k1)
        k3 = f(x + 0.5 * dt * k2)
        k4 = f(x + dt * k3)
        x = x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def attractor_state(n: int, seed: int = 5) -> np.ndarray:
    return l96_rk4(8.0 + np.random.default_rng(seed).standard_normal(n), 300)


@pytest.fixture
def io() -> SimpleNamespace:
    """The helpers above, for the test modules."""
    return SimpleNamespace(write_yaml=write_yaml, write_state=write_state, read_state=read_state, write_obs=write_obs,
                           read_obs=read_obs, l96_rk4=l96_rk4, attractor_state=attractor_state,
                           iso_seconds=iso_seconds)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``pyoops.cli.main(args)`` in-process: ``(exit code, stdout, error lines of stderr)``."""

    def run(*args: str) -> tuple[int, str, list[str]]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, [line for line in err.splitlines() if not line.startswith("pyoops INFO: ")]

    return run
