"""The EDA stddev emulator on QG: an EDA of 3D-Vars whose B takes sigma_b of the streamfunction from its members
archives x, q, u and v; an emulator of x alone (``emulator: variables: [x]``) is trained on it and feeds the StdDev of
the same B in a short cycle (the members carry all four variables, the emulator reads x)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("torch")

import pyoops  # noqa: E402
from pyoops.emulators.model import load_emulator  # noqa: E402
from pyoops.util.errors import ConfigError  # noqa: E402

from .qg_twin import TRUTH_INIT, draws_around_truth, static_b  # noqa: E402

GEOMETRY = {"nx": 16, "ny": 9, "depths": [4500.0, 5500.0]}
AT = "2010-01-03T06:00:00Z"     # the first 3D-Var analysis: 2 days of truth spin-up and a 6-hour window


@pytest.fixture(scope="module")
def qg_eda(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Truth at the first analysis, 9 draws from the static B around it (8 members, a control), a cycle config."""
    d = tmp_path_factory.mktemp("qgeda")
    init = TRUTH_INIT
    template = draws_around_truth(d, GEOMETRY, AT, 9, 3.0e6, 2)

    def config(directory: Path, members: int, cycles: int, stddev: dict) -> dict:
        return {"model plugin": "qg", "geometry": GEOMETRY, "model": {"name": "QG", "tstep": "PT1H"},
                "truth": {"initial condition": init, "spin-up": "P2D"},
                "observations": {"name": "streamfunction", "simulated variables": ["x"], "obs frequency": "PT6H",
                                 "obs density": 30, "obs error": 4.0e5, "locations": "random", "locations seed": 1,
                                 "seed": 3},
                "cycling": {"method": "EDA", "members": members, "cycles": cycles, "window length": "PT6H",
                            "spin-up cycles": 0, "seed": 4, "initial ensemble": {"filename": template},
                            "initial background": {"filename": template.replace("%mem%", "9")}},
                "eda": {"seed": 4, "control member": True},
                "cost function": {"background error": static_b(stddev)},
                "variational": {"minimizer": {"algorithm": "DRPCG"},
                                "iterations": [{"ninner": 10, "gradient norm reduction": 1e-3}]},
                "output": {"directory": str(directory), "plots": False}}

    cfg = config(d / "archive", 8, 12, {"calibration": {}})
    cfg["output"]["member archive"] = True
    pyoops.run("cycle", cfg)
    return {"archive": d / "archive" / "members.nc", "config": config}


def train_config(archive: Path, out: Path, variables: list[str]) -> dict:
    return {"model plugin": "qg", "geometry": GEOMETRY,
            "training data": {"archives": [str(archive)], "skip cycles": 2, "validation fraction": 0.25},
            "emulator": {"members": 5, "variables": variables, "predictors": ["mean", "gradient", "relative"],
                         "network": {"width": 8, "depth": 1, "kernel": 3,
                                                                         "activation": "relu"}},
            "training": {"epochs": 3, "patience": 3, "seed": 1, "batch size": 4},
            "output": {"model": str(out / "emu.pt"), "directory": str(out)}}


def test_an_emulator_of_the_streamfunction_feeds_the_qg_stddev_in_a_cycle(qg_eda: dict, tmp_path: Path) -> None:
    summary = pyoops.run("train-emulator", train_config(qg_eda["archive"], tmp_path, ["x"]))
    spec = yaml.safe_load((tmp_path / "emu.yaml").read_text())
    # One variable on two layers: two channels of a (y, x) grid with walls in y.
    assert spec["layout"]["variables"] == ["x"] and spec["layout"]["shape"] == [2, 9, 16]
    assert spec["network"]["activation"] == "relu"
    assert np.isfinite(summary["rmse emulator"])
    emulator = load_emulator(tmp_path / "emu.pt")
    assert emulator.layout.channels == 2

    cfg = qg_eda["config"](tmp_path / "cycle", 5, 3, {"emulated stddev": {"model": str(tmp_path / "emu.pt"),
                                                                          "members": 5}})
    stats = pyoops.run("cycle", cfg)["experiment"].stats
    assert np.all(np.isfinite(stats["analysis rmse"])) and len(stats["analysis rmse"]) == 3


def test_emulator_variables_must_be_the_geometry_s(qg_eda: dict, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="emulator.variables.*no variable.*psi"):
        pyoops.run("train-emulator", train_config(qg_eda["archive"], tmp_path, ["x", "psi"]))


def test_stddev_needs_every_variable_the_emulator_reads(tmp_path: Path) -> None:
    """An emulator of x and q feeds a StdDev of x only if the ensemble carries q as well; one that gives no sigma
    for a variable of the block is refused, naming the model file."""
    from pyoops.emulators.features import GridLayout
    from pyoops.emulators.model import Emulator
    from pyoops.fields.fieldset import FieldSet
    from pyoops.registry import get_registry
    from pyoops.saber.blocks import BlockContext
    from pyoops.saber.generic.basic import StdDev

    geometry = get_registry().model_plugin("qg").make_geometry(GEOMETRY, "geometry")
    both = GridLayout.from_geometry(geometry, ["x", "q"])
    channels = both.channels * (2 + len(both.horizontal))     # log sigma, mean and two gradients per channel
    Emulator(both, 5, 50, ["mean", "gradient"], {"width": 4, "depth": 1, "kernel": 3},
             np.zeros(channels), np.ones(channels)).save(tmp_path / "xq.pt")
    rng = np.random.default_rng(0)
    members = {v: rng.standard_normal((6,) + both.shape) for v in ("x", "q")}
    params = StdDev.Parameters.model_validate({"saber block name": "StdDev",
                                               "emulated stddev": {"model": str(tmp_path / "xq.pt"), "members": 5}})
    block = StdDev(params, BlockContext(geometry, ["x"], ensemble=FieldSet(members), path="background error"))
    assert block.sigma["x"].shape == both.shape and np.all(block.sigma["x"] > 0)
    with pytest.raises(ConfigError, match="emulated stddev.model.*ensemble has no \\['q'\\]"):
        StdDev(params, BlockContext(geometry, ["x"], ensemble=FieldSet({"x": members["x"]}), path="background error"))
    x_only = GridLayout.from_geometry(geometry, ["x"])
    n = x_only.channels * (2 + len(x_only.horizontal))
    Emulator(x_only, 5, 50, ["mean", "gradient"], {"width": 4, "depth": 1, "kernel": 3},
             np.zeros(n), np.ones(n)).save(tmp_path / "x.pt")
    params = StdDev.Parameters.model_validate({"saber block name": "StdDev",
                                               "emulated stddev": {"model": str(tmp_path / "x.pt"), "members": 5}})
    with pytest.raises(ConfigError, match="x.pt gives no σ for \\['q'\\]"):
        StdDev(params, BlockContext(geometry, ["x", "q"], ensemble=FieldSet(members), path="background error"))
