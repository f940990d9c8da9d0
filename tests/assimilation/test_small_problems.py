"""Small problems at small-problem cost: DirectSolve in cycled 3D-Var and 4D-Var, and what the
variational cycle reuses between analyses (cost-function memo, shared dense B) without
changing a result."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pyoops
from pyoops.assimilation.costfunction import (
    CostFunction,
    CostFunctionParameters,
    _config_key,
)
from pyoops.config.parameters import validate
from pyoops.registry import get_registry
from pyoops.util.datetime import DateTime
from pyoops.util.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ensemble"))
from test_cycle import l96_cycle, stats_of


def _cycle(method: str, directory: Path, algorithm: str, cycles: int = 12) -> dict[str, np.ndarray]:
    cfg = l96_cycle(method, directory, cycles=cycles)
    cfg["variational"] = {"minimizer": {"algorithm": algorithm},
                          "iterations": [{"ninner": 60, "gradient norm reduction": 1e-13}]}
    if method == "4D-Var":  # lag 1 (one model step), three outer loops
        cfg["cost function"]["linear model"] = {"name": "Lorenz96TLM", "tstep": "PT6H"}
        cfg["variational"]["iterations"] *= 3
    return stats_of(pyoops.run("cycle", cfg)["experiment"])


#: The minimiser's final gradient-norm reduction, from its summary log line.
_REDUCTION = re.compile(r"^DRPCG: .* gradient reduction ([0-9.eE+-]+)$")


@pytest.mark.parametrize("method", ["3D-Var", "4D-Var"])
def test_direct_solve_cycles_like_a_converged_drpcg(tmp_path: Path, method: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """DRPCG converged to a gradient-norm reduction of 1e-13 and the exact solve give the same cycled
    analyses up to the iterative solver's residual.

    Premise, checked first: every DRPCG solve reached the requested reduction, or stopped at rounding
    level (``p^T A p <= 0`` below 1e-10, the minimiser's own rule), which a BLAS kernel other than this
    machine's may do earlier.  Tolerance: 1e3 times the largest reduction reached.  Measured here (OpenBLAS
    Haswell kernel): reductions <= 9.7e-14 and relative differences <= 3.0e-14 (3D-Var) and 6.6e-16
    (4D-Var); the factor 1e3 covers the Hessian's conditioning (the residual is a gradient, the difference
    a state) and the chaotic growth of a difference over the 12 cycles."""
    with caplog.at_level(logging.INFO, logger="pyoops.assimilation.minimizers"):
        drpcg = _cycle(method, tmp_path / "drpcg", "DRPCG")
    reductions = [float(m.group(1)) for r in caplog.records if (m := _REDUCTION.match(r.getMessage()))]
    assert len(reductions) == 12 * (3 if method == "4D-Var" else 1), "one DRPCG summary per solve"
    assert max(reductions) <= 1e-10, f"premise: DRPCG stopped at gradient reductions {reductions}"
    direct = _cycle(method, tmp_path / "direct", "DirectSolve")
    rtol = 1e3 * max(max(reductions), 1e-13)
    for key in ("analysis rmse", "forecast rmse"):
        np.testing.assert_allclose(direct[key], drpcg[key], rtol=rtol, atol=0,
                                   err_msg=f"{key}; DRPCG's largest gradient reduction {max(reductions):.2e}")


def _l96_cost(sigma: float = 0.6, resol: int = 40) -> dict[str, Any]:
    return {"cost type": "3D-Var", "time window": {"begin": "2010-01-01T21:00:00Z", "length": "PT6H"},
            "geometry": {"resol": resol}, "analysis variables": ["x"],
            "background": {"date": "2010-01-02T00:00:00Z", "filename": "in-memory"},
            "background error": {"covariance model": "SABER", "saber central block": {"saber block name": "ID"},
                                 "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": sigma}}]},
            "observations": {"observers": [{"obs space": {"name": "o", "simulated variables": ["x"], "generate": {
                "begin": "PT3H", "end": "PT3H", "obs frequency": "PT6H", "obs density": 10, "obs error": 1.0}},
                "obs operator": {"name": "Identity"}, "obs error": {"covariance model": "diagonal"}}]}}


def _cost(config: dict[str, Any], memo: dict[str, Any] | None) -> CostFunction:
    registry = get_registry()
    return CostFunction(validate(CostFunctionParameters, config, "cost function"), registry,
                        registry.model_plugin("lorenz96"), memo=memo)


def test_cost_function_memo_reuses_only_the_same_configuration() -> None:
    memo: dict[str, Any] = {}
    first = _cost(_l96_cost(), memo)
    again = _cost(_l96_cost(), memo)
    assert again.geometry is first.geometry and again.obs_params is first.obs_params
    assert len(memo) == 3  # geometry, observations, background error
    other = _cost(_l96_cost(resol=20), memo)
    assert other.geometry is not first.geometry and other.geometry.shape == (20,)
    assert _cost(_l96_cost(), None).geometry is not first.geometry  # no memo: built afresh
    # A bad section is validated (and refused) whatever the memo holds for the good one.
    bad = _l96_cost()
    bad["background error"]["saber central block"] = {"saber block name": "No such block"}
    with pytest.raises(ConfigError, match="No such block"):
        _cost(bad, memo)


def test_config_key_is_exact_or_refuses() -> None:
    a = np.linspace(0.0, 1.0, 2000)
    b = a.copy()
    b[1234] = np.nextafter(b[1234], 2.0)
    assert _config_key({"x": a}) == _config_key({"x": a.copy()}) != _config_key({"x": b})  # no repr truncation
    assert _config_key({"d": DateTime("2010-01-01T00:00:00Z")}) != _config_key({"d": "2010-01-01T00:00:00Z"})
    assert _config_key({"f": object()}) is None and _config_key({1: "non-string key", "a": 2}) is None


def test_batched_h_is_checked_once_per_operator_classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DirectSolve's check of the batched H (one H on the first column against h_rows) runs in the first
    outer loop that meets a set of operator classes; the later outer loops and cycles of the run trust it,
    and the 4D-Var analyses are bitwise those of a run that checks every time (the check only compares)."""
    from pyoops.assimilation import driver, minimizers

    calls = {"checks": 0}
    original = minimizers._h_columns

    def counting(problem: Any, lin: Any, L: np.ndarray) -> np.ndarray:
        calls["checks"] += not problem.h_rows_checked
        return original(problem, lin, L)

    monkeypatch.setattr(minimizers, "_h_columns", counting)
    monkeypatch.setattr(driver, "_batched_h_checked", set())
    trusted = _cycle("4D-Var", tmp_path / "trusted", "DirectSolve", cycles=4)
    assert calls["checks"] == 1 and len(driver._batched_h_checked) == 1
    monkeypatch.setattr(driver, "_operator_classes", lambda *args: object())   # never known: check every loop
    calls["checks"] = 0
    checked = _cycle("4D-Var", tmp_path / "checked", "DirectSolve", cycles=4)
    assert calls["checks"] == 4 * 3
    for name in ("analysis rmse", "forecast rmse"):
        np.testing.assert_array_equal(trusted[name], checked[name])
