"""3D-Var and 4D-Var on the QG twin experiment of qg_twin.py (streamfunction, wind and wind-speed
observations over a 12-hour window, model error from the layer depths), through the variational
application.

Measured (seeds 1, 2, 3; streamfunction RMSE against the truth at the window middle, m^2/s):

======  ==========  ==========  ==========
seed    background  3D-Var      4D-Var
======  ==========  ==========  ==========
1       4.02e6      1.39e6      0.55e6
2       3.05e6      1.52e6      0.61e6
3       5.32e6      1.44e6      0.59e6
======  ==========  ==========  ==========

so both analyses beat the background, and 4D-Var (which sees each observation at its own time
through the tangent-linear model) beats 3D-Var by about 60% on average; the tests require 30%.
(Before B had ``QG walls``, whose draws and increments varied along the walls: 2.60e6, 3.10e6,
7.06e6; 1.44e6, 1.68e6, 1.64e6; 0.56e6, 0.63e6, 0.70e6.)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SEEDS = (1, 2, 3)


def _load_twin() -> Any:
    name = "pyoops_qg_tests_twin"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("qg_twin.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


twin = _load_twin()


@pytest.fixture(scope="module")
def experiments(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("qg_twin")
    out = {}
    for seed in SEEDS:
        files = twin.build(folder, seed)
        truth = files["truth"](twin.MID)
        res3 = twin.variational(folder, "3D-Var", files, seed)
        res4 = twin.variational(folder, "4D-Var", files, seed)
        an4 = twin.forecast_to_mid(folder, str(folder / f"an.4D-Var.{seed}.{twin.T0}.nc"), f"an4d.{seed}")
        out[seed] = {
            "background": twin.rmse(files["background"](twin.MID), truth),
            "3D-Var": twin.rmse(folder / f"an.3D-Var.{seed}.{twin.MID}.nc", truth),
            "4D-Var": twin.rmse(an4, truth),
            "results": {"3D-Var": res3, "4D-Var": res4},
        }
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("method", ["3D-Var", "4D-Var"])
def test_analysis_beats_background(experiments, seed, method):
    rmse = experiments[seed]
    assert rmse[method] < 0.8 * rmse["background"], rmse
    summary = rmse["results"][method]
    assert summary["final J"] < 0.2 * summary["initial J"]
    for name, stats in summary["observers"].items():
        assert stats["oman rms"] < stats["ombg rms"], (method, name, stats)


def test_4dvar_beats_3dvar(experiments):
    mean3 = np.mean([experiments[s]["3D-Var"] for s in SEEDS])
    mean4 = np.mean([experiments[s]["4D-Var"] for s in SEEDS])
    assert mean4 < 0.7 * mean3, (mean3, mean4)
