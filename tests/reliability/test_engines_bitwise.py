"""Serial, process-pool and dask engines give bitwise the same cycling statistics (docs/cycling.rst).

The LETKF and EnKF cycles forecast their members through the executor in chunks, and
analyse them in the calling process.  A chunked forecast returns C-ordered members
while the serial one kept the (transposed) order of the LETKF analysis; NumPy's
``mean(axis=0)`` and BLAS products sum in a different order for the two layouts, which
made the forecast RMSE differ in the last bit.  Ten members: ``mean(axis=0)`` over a
contiguous axis switches to pairwise summation with eight partial sums from eight
values on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pyoops

START = "2010-01-01T00:00:00Z"


def _cycle(method: str, directory: Path, parallel: dict[str, Any] | None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "model plugin": "lorenz96", "geometry": {"resol": 40}, "model": {"name": "Lorenz96", "tstep": "PT6H"},
        "truth": {"initial condition": {"date": START, "analytic init": {"method": "random", "seed": 3}},
                  "spin-up": "P5D"},
        "observations": {"obs frequency": "PT6H", "obs density": 20, "obs error": 1.0, "seed": 5,
                         "locations": "random", "locations seed": 4},
        "cycling": {"method": method, "members": 10, "cycles": 6, "window length": "PT6H", "seed": 1},
        "output": {"directory": str(directory), "plots": False},
    }
    if method == "LETKF":
        cfg["observations"]["obs localizations"] = [{"localization method": "Gaspari-Cohn", "lengthscale": 0.3}]
        cfg["local ensemble DA"] = {"inflation": {"mult": 1.05, "rtps": 0.3}}
    else:
        cfg["eda"] = {"seed": 2, "inflation": {"rtpp": 0.3}}
    if parallel is not None:
        cfg["parallel"] = parallel
    return cfg


ENGINES = {
    "processes": {"engine": "processes", "workers": 2},
    "dask threads": {"engine": "dask", "workers": 2, "processes": False},
    "dask processes": {"engine": "dask", "workers": 2, "processes": True},
}


@pytest.mark.parametrize("method", ["LETKF", "EnKF"])
def test_engines_agree_bitwise(method: str, tmp_path: Path) -> None:
    serial = pyoops.run("cycle", _cycle(method, tmp_path / "serial", None))["experiment"]
    for name, parallel in ENGINES.items():
        if name == "dask processes" and method == "EnKF":
            continue  # one dask process cluster is enough (it takes seconds to start)
        run = pyoops.run("cycle", _cycle(method, tmp_path / name.replace(" ", "_"), parallel))["experiment"]
        for stat in serial.stats:
            np.testing.assert_array_equal(np.asarray(run.stats[stat]), np.asarray(serial.stats[stat]),
                                          err_msg=f"{method}, {name}: {stat}")
        np.testing.assert_array_equal(run.members["x"], serial.members["x"], err_msg=f"{method}, {name}")
