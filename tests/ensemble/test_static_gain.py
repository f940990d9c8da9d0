"""Cycled 3D-Var with a reused gain (:mod:`pyoops.ensemble.static_gain`): the same analyses as the cost
function, computed once per observation network, used only where it is exact."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

import pyoops
from pyoops.ensemble.cycling import STATISTICS
from pyoops.ensemble.static_gain import StaticGainCycle
from pyoops.generic.obs_operators import IdentityObsOperator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_cycle import killed_and_straight, l96_cycle, stats_of  # noqa: E402

GAIN_LOG = "3D-Var gain"


def direct_3dvar(directory: Path, cycles: int = 30) -> dict:
    cfg = l96_cycle("3D-Var", directory, cycles=cycles)
    cfg["variational"]["minimizer"]["algorithm"] = "DirectSolve"
    cfg["variational"]["iterations"] = [{"ninner": 1, "gradient norm reduction": 1e-12}] * 2
    return cfg


def gain_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if GAIN_LOG in r.getMessage()]


def test_reused_gain_gives_the_cost_functions_analyses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Thirty cycles, two outer loops: with the gain (computed once: the network is fixed) against the same
    run through the cost function (Identity declared nonlinear, so the cycle minimises).  Both apply the same
    factorisation of I + G^T R^-1 G to the innovation, the gain with the products in another order, and the
    second outer loop's exact increment is zero to rounding: per-cycle RMSEs of about 0.4 agree to 1e-12 (a
    few hundred epsilon of the increments, not growing in this stable filter)."""
    caplog.set_level(logging.INFO, logger="pyoops")
    fast = pyoops.run("cycle", direct_3dvar(tmp_path / "gain"))["experiment"]
    assert len(gain_messages(caplog)) == 1
    caplog.clear()
    monkeypatch.setattr(IdentityObsOperator, "linear", False)
    slow = pyoops.run("cycle", direct_3dvar(tmp_path / "cost"))["experiment"]
    assert gain_messages(caplog) == []
    a, b = stats_of(fast), stats_of(slow)
    for name in ("analysis rmse", "forecast rmse"):
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-12, err_msg=name)
    assert 0.2 < a["analysis rmse"][5:].mean() < 0.7
    np.testing.assert_allclose(fast.control["x"], slow.control["x"], rtol=0, atol=1e-11)


@pytest.mark.parametrize("change", ["minimizer", "archive"])
def test_gain_is_not_used_where_it_would_change_or_drop_results(tmp_path: Path, change: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """DRPCG stops at its gradient reduction (the gain would be another analysis); the archive records every
    outer loop's H(x) and diag(HBH^T): both run through the cost function."""
    caplog.set_level(logging.INFO, logger="pyoops")
    cfg = direct_3dvar(tmp_path / change, cycles=8)
    if change == "minimizer":
        cfg["variational"]["minimizer"]["algorithm"] = "DRPCG"
        cfg["variational"]["iterations"] = [{"ninner": 20, "gradient norm reduction": 1e-6}]
    else:
        cfg["output"]["archive"] = True
    pyoops.run("cycle", cfg)
    assert gain_messages(caplog) == []


def test_gain_is_computed_again_when_the_network_changes(tmp_path: Path) -> None:
    """The gain depends on the locations, the errors and the used observations: a cycle whose observations
    have other errors (here those of a configuration with ``obs error: 2``) computes it again, and each
    analysis is the exact 3D-Var analysis for its errors (H = I at the 40 grid points: x_a = x_b +
    B (B + R)^-1 (y - x_b) by numpy; B's eigenvalues lie in [0.06, 0.73] and R's in {1, 4}, so B + R is
    well conditioned and both agree to 1e-12)."""
    experiment = _experiment(direct_3dvar(tmp_path / "net", cycles=3))
    cfg = direct_3dvar(tmp_path / "net2", cycles=3)
    cfg["observations"]["obs error"] = 2.0
    other = _experiment(cfg)
    gain = experiment.static_gain
    assert isinstance(gain, StaticGainCycle)
    rng = np.random.default_rng(0)
    background = {"x": rng.standard_normal(40)}
    truth = {"x": rng.standard_normal(40)}
    twin, twin2 = _twin(experiment, truth), _twin(other, truth)
    xa = gain.analyse(0, twin, background)
    assert gain.computed == 1
    np.testing.assert_array_equal(gain.analyse(0, twin, background)["x"], xa["x"])
    assert gain.computed == 1
    xa2 = gain.analyse(0, twin2, background)
    assert gain.computed == 2
    B = _dense_b(experiment)
    for t, x, sigma in ((twin, xa, 1.0), (twin2, xa2, 2.0)):
        np.testing.assert_array_equal(t.error, sigma)
        innovation = t.values.ravel() - background["x"]
        expected = background["x"] + B @ np.linalg.solve(B + sigma ** 2 * np.eye(40), innovation)
        np.testing.assert_allclose(x["x"], expected, rtol=0, atol=1e-12)


def _experiment(cfg: dict):
    from pyoops.apps import make_application
    from pyoops.config.yaml_io import load_config

    app = make_application("cycle")
    app.validate(load_config(cfg))
    return app.experiment


def _twin(experiment, truth: dict):
    """The synthetic observations of cycle 0 of ``experiment`` from ``truth``."""
    w = experiment.window(0)
    times = experiment.obs_times(w)
    return experiment.observe(w, {t: truth for t in times}, times)


def _dense_b(experiment) -> np.ndarray:
    """B of the configuration, column by column through the SABER chain."""
    from pyoops.assimilation.costfunction import CostFunction, CostFunctionParameters
    from pyoops.config.parameters import validate
    from pyoops.fields.fieldset import FieldSet

    cost = CostFunction(validate(CostFunctionParameters, experiment.cost_config(0), "cost function"),
                        experiment.registry, experiment.plugin)
    chain = cost.covariance(cost.geometry).chain
    return np.array([chain.multiply(FieldSet({"x": e.copy()}))["x"] for e in np.eye(40)]).T


def test_killed_run_with_the_gain_resumes_bitwise(tmp_path: Path) -> None:
    """The gain computed again after a restart is bitwise the one before (it depends on B, H and R only):
    statistics and the control bitwise those of an uninterrupted run."""
    cfg = direct_3dvar(tmp_path / "killed", cycles=400)
    cfg["cycling"]["checkpoint seconds"] = 0
    resumed, ref = killed_and_straight(cfg, tmp_path, 100)
    np.testing.assert_array_equal(resumed["control"]["x"], ref.control["x"])
    assert set(STATISTICS) <= set(resumed["stats"])
