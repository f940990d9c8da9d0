"""Emulated members of a QG EDA that emulate the streamfunction only: the potential vorticity and the winds of every
emulated analysis follow from its streamfunction through the plugin's variable change (``variables: [x]``,
``variable change: {variable change name: QG}``), for the non-learned ``linear`` generator and for a flow generator
trained on ``x`` alone (``generator: variables: [x]``)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pyoops
from pyoops.emulators.features import GridLayout
from pyoops.emulators.members import emulation_cycle
from pyoops.ensemble.member_archive import read_member_archive
from pyoops.fields.fieldset import FieldSet
from pyoops.registry import get_registry
from pyoops.util.errors import ConfigError
from pyoops.util.variables import Variables

from .qg_twin import TRUTH_INIT as INIT
from .qg_twin import draws_around_truth, static_b

GEOMETRY = {"nx": 16, "ny": 9, "depths": [4500.0, 5500.0]}
AT = "2010-01-03T06:00:00Z"
N, REAL = 6, 3
QG_CHANGE = {"variable change name": "QG"}


@pytest.fixture(scope="module")
def initial(tmp_path_factory: pytest.TempPathFactory) -> str:
    """N draws (sigma 4e5) from the static B around the truth at the first analysis: the members' %mem% template."""
    return draws_around_truth(tmp_path_factory.mktemp("qgmembers"), GEOMETRY, AT, N, 4.0e5, 2)


def eda(directory: Path, template: str, cycles: int, emulated: dict[str, Any] | None) -> dict[str, Any]:
    """An EDA of N 3D-Vars, sigma_b from the members, perturbed observations, no control member, the analyses
    archived."""
    cfg = {"model plugin": "qg", "geometry": GEOMETRY, "model": {"name": "QG", "tstep": "PT1H"},
           "truth": {"initial condition": INIT, "spin-up": "P2D"},
           "observations": {"name": "streamfunction", "simulated variables": ["x"], "obs frequency": "PT6H",
                            "obs density": 30, "obs error": 4.0e5, "locations": "random", "locations seed": 1,
                            "seed": 3},
           "cycling": {"method": "EDA", "members": N, "cycles": cycles, "window length": "PT6H",
                       "spin-up cycles": 0, "seed": 4, "initial ensemble": {"filename": template}},
           "eda": {"seed": 4, "control member": False},
           "cost function": {"background error": static_b({"calibration": {}})},
           "variational": {"minimizer": {"algorithm": "DRPCG"},
                           "iterations": [{"ninner": 10, "gradient norm reduction": 1e-3}]},
           "output": {"directory": str(directory), "plots": False, "member archive": True,
                      "member archive analyses": True}}
    if emulated is not None:
        cfg["emulated members"] = {"real": REAL, "emulated": N - REAL, **emulated}
    return cfg


def qg_change() -> Any:
    registry = get_registry()
    geometry = registry.model_plugin("qg").make_geometry(GEOMETRY)
    factory = registry.variable_change
    return factory.maker_for(QG_CHANGE)(factory.parameters(QG_CHANGE), geometry), geometry


def assert_balanced(analyses: dict[str, np.ndarray], members: slice) -> None:
    """Every member's q, u, v are the QG variable change of its x (bitwise: the same operators on the same x)."""
    change, _ = qg_change()
    x = analyses["x"][:, members]
    for k in range(x.shape[0]):
        for j in range(x.shape[1]):
            derived = change.change_var(FieldSet({"x": x[k, j]}), Variables(["q", "u", "v"]))
            for v in ("q", "u", "v"):
                np.testing.assert_array_equal(analyses[v][k, members][j], derived[v], err_msg=f"{v} {k} {j}")


@pytest.mark.parametrize("baseline", ["covariance regression", "spread ratio"])
def test_linear_generator_of_the_streamfunction_derives_pv_and_winds(initial: str, tmp_path: Path,
                                                                     baseline: str) -> None:
    cfg = eda(tmp_path / "lin", initial, 3, {"generator": "linear", "variables": ["x"], "baseline": baseline,
                                             "variable change": QG_CHANGE})
    pyoops.run("cycle", cfg)
    archive = read_member_archive(tmp_path / "lin" / "members.nc")
    assert archive.analyses is not None
    assert_balanced(archive.analyses, slice(REAL, N))
    # The emulated streamfunction is the baseline of x alone on the real pairs of x.
    _, geometry = qg_change()
    layout = GridLayout.from_geometry(geometry, ["x"])
    for k in range(archive.ncycles):
        xb = {"x": archive.members["x"][k]}
        cyc = emulation_cycle(layout, xb, {"x": archive.analyses["x"][k, :REAL]}, range(REAL), range(REAL, N),
                              baseline=baseline)
        np.testing.assert_allclose(archive.analyses["x"][k, REAL:], cyc.physical(layout, cyc.linear)["x"],
                                   rtol=1e-12, atol=1e-12 * np.abs(archive.analyses["x"][k]).max())


def _bad(cfg: dict[str, Any], tmp_path: Path, io: Any, cli: Callable[..., Any]) -> str:
    config = io.write_yaml(tmp_path / "bad.yaml", cfg)
    code, _, err = cli("cycle", config, "--validate-only")
    assert code == 2 and len(err) == 1, err
    return err[0]


def test_bad_emulated_variables(initial: str, tmp_path: Path, io: Any, cli: Callable[..., Any]) -> None:
    out = tmp_path / "out"
    cfg = eda(out, initial, 2, {"generator": "linear", "variables": ["x"]})
    assert "give 'variable change'" in _bad(cfg, tmp_path, io, cli)
    cfg = eda(out, initial, 2, {"generator": "linear", "variables": ["psi"], "variable change": QG_CHANGE})
    assert "emulated members.variables" in _bad(cfg, tmp_path, io, cli)
    cfg = eda(out, initial, 2, {"generator": "linear", "variable change": QG_CHANGE})
    assert "nothing for 'variable change' to give" in _bad(cfg, tmp_path, io, cli)
    cfg = eda(out, initial, 2, {"generator": "resample", "baseline": "spread ratio"})
    assert "'baseline' chooses the 'linear' emulator" in _bad(cfg, tmp_path, io, cli)
    cfg = eda(out, initial, 2, {"generator": "linear", "baseline": "nonesuch"})
    assert "emulated members.baseline" in _bad(cfg, tmp_path, io, cli)
    cfg = eda(out, initial, 2, {"generator": "resample", "variables": ["x"]})
    assert "'variables' chooses what 'linear' emulates" in _bad(cfg, tmp_path, io, cli)
    cfg = eda(out, initial, 2, {"generator": "linear", "variables": ["x"],
                                "variable change": {"variable change name": "nonesuch"}})
    assert "emulated members.variable change" in _bad(cfg, tmp_path, io, cli)


def test_flow_generator_of_the_streamfunction_in_a_qg_eda(initial: str, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pyoops.run("cycle", eda(tmp_path / "full", initial, 6, None))
    model = tmp_path / "gen" / "gen.pt"
    train = {"model plugin": "qg", "geometry": GEOMETRY,
             "training data": {"archives": [str(tmp_path / "full" / "members.nc")], "skip cycles": 0,
                               "validation fraction": 0.34},
             "generator": {"real members": REAL, "variables": ["x"],
                           "network": {"width": 4, "depth": 1, "kernel": 3, "set width": 4, "set channels": 2},
                           "bridge": {"sigma": 0.3, "steps": 2}},
             "training": {"epochs": 2, "batch size": 2, "seed": 0},
             "output": {"model": str(model)}}
    pyoops.run("train-member-generator", train)
    cfg = eda(tmp_path / "flow", initial, 2, {"generator": "flow", "model": str(model),
                                              "variable change": QG_CHANGE})
    pyoops.run("cycle", cfg)
    archive = read_member_archive(tmp_path / "flow" / "members.nc")
    assert archive.analyses is not None
    assert_balanced(archive.analyses, slice(REAL, N))
    again = copy.deepcopy(cfg)
    again["output"]["directory"] = str(tmp_path / "again")
    pyoops.run("cycle", again)
    np.testing.assert_array_equal(read_member_archive(tmp_path / "again" / "members.nc").analyses["x"],
                                  archive.analyses["x"])
    # Without the variable change the members' q, u and v would be missing: one line naming the key.
    bad = copy.deepcopy(cfg)
    del bad["emulated members"]["variable change"]
    with pytest.raises(ConfigError, match="variable change"):
        pyoops.run("cycle", bad)


def test_shadow_analyses_archive_real_analyses_and_leave_the_cycle_alone(initial: str, tmp_path: Path) -> None:
    """``shadow analyses``: the member archive pairs the hybrid's backgrounds with every member's real analysis,
    while the cycle is the hybrid's: the same backgrounds and statistics, bitwise, as without the option; at the
    first cycle (same backgrounds) the archived analyses are the full EDA's, bitwise (each member has its own
    observation-perturbation stream, whoever else is analysed)."""
    hybrid = {"generator": "linear", "variables": ["x"], "variable change": QG_CHANGE}
    runs = {"full": None, "hybrid": hybrid, "shadow": {**hybrid, "shadow analyses": True}}
    archives = {}
    for name, emulated in runs.items():
        pyoops.run("cycle", eda(tmp_path / name, initial, 3, emulated))
        archives[name] = read_member_archive(tmp_path / name / "members.nc")
    full, plain, shadow = archives["full"], archives["hybrid"], archives["shadow"]
    assert plain.analyses is not None and shadow.analyses is not None and full.analyses is not None
    for v in ("x", "q", "u", "v"):
        np.testing.assert_array_equal(shadow.members[v], plain.members[v], err_msg=v)
        np.testing.assert_array_equal(shadow.analyses[v][:, :REAL], plain.analyses[v][:, :REAL], err_msg=v)
        np.testing.assert_array_equal(shadow.analyses[v][0], full.analyses[v][0], err_msg=v)
    # The emulated members' archived analyses are real ones, not the emulated analyses the cycle used ...
    assert not np.allclose(shadow.analyses["x"][:, REAL:], plain.analyses["x"][:, REAL:])
    # ... and the cycle went on with the emulated ones: from cycle 2 the backgrounds differ from the full EDA's.
    assert not np.allclose(shadow.members["x"][1:], full.members["x"][1:])
    stats = {name: json.loads((tmp_path / name / "statistics.json").read_text()) for name in ("hybrid", "shadow")}
    for s in stats.values():
        s.pop("seconds per cycle")       # the only entry that is not a result
    assert stats["shadow"] == stats["hybrid"]


def test_shadow_analyses_need_the_archived_analyses(initial: str, tmp_path: Path, io: Any,
                                                   cli: Callable[..., Any]) -> None:
    cfg = eda(tmp_path / "out", initial, 2, {"generator": "resample", "shadow analyses": True})
    cfg["output"]["member archive analyses"] = False
    assert "emulated members.shadow analyses" in _bad(cfg, tmp_path, io, cli)
