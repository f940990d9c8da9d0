"""Online adaptive hybrid weight: the schemes (likelihood fixed point, guard, El Gharamti MAP), cycled runs of
hybrid, EDA-hybrid and LETKF-hybrid with adaptive β, bitwise restart, the EDA's B cache, bad configurations."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pyoops
from pyoops.assimilation.adaptive_hybrid import (
    AdaptiveHybridWeight,
    AdaptiveHybridWeightParameters,
    HybridInnovations,
    el_gharamti_log_posterior,
    el_gharamti_map,
    hybrid_weight_score,
)
from pyoops.diagnostics.tuning.data import TuningCycle, TuningData
from pyoops.diagnostics.tuning.estimators import estimate
from pyoops.ensemble.cycling import STATISTICS, load_checkpoint

from .test_cycle import _one_line_error, l96_cycle

P, N = 24, 10


def _correlation(length: float) -> np.ndarray:
    """Gaussian correlation on a periodic line of P points."""
    i = np.arange(P)
    r = np.minimum(np.abs(i[:, None] - i[None, :]), P - np.abs(i[:, None] - i[None, :]))
    return np.exp(-0.5 * (r / length) ** 2)


def _sequence(ncycles: int, beta: float, seed: int, ensemble_from_static: bool = False
              ) -> list[HybridInnovations]:
    """A stationary sequence: C_s = 0.5 G(2), members from 0.8 G(5) (or from C_s), R = I, and
    d ~ N(0, (1-β) C_s + β C_e + R) of each cycle's own C_e."""
    rng = np.random.default_rng(seed)
    cs = 0.5 * _correlation(2.0)
    ctrue = cs if ensemble_from_static else 0.8 * _correlation(5.0)
    lt = _sqrt(ctrue)
    out = []
    for _ in range(ncycles):
        y = (lt @ rng.standard_normal((P, N))).T
        y = y - y.mean(axis=0)
        ce = y.T @ y / (N - 1)
        s = (1 - beta) * cs + beta * ce + np.eye(P)
        d = np.linalg.cholesky(s) @ rng.standard_normal(P)
        out.append(HybridInnovations.from_members(d, np.ones(P), cs, y))
    return out


def _sqrt(c: np.ndarray) -> np.ndarray:
    """A square root F F^T = C (eigen-decomposition, round-off negatives clipped)."""
    w, v = np.linalg.eigh(c)
    return v * np.sqrt(np.maximum(w, 0.0))


def _tuning_data(cycles: list[HybridInnovations]) -> TuningData:
    """The same cycles as TuningData (static factor and ensemble perturbations reproducing C_s and C_e)."""
    return TuningData(tuple(TuningCycle(c.departures, np.sqrt(c.obs_variance), _sqrt(c.static), 1.0,
                                        _sqrt(c.ensemble) * math.sqrt(P - 1)) for c in cycles))


def _likelihood(**kw: Any) -> AdaptiveHybridWeight:
    return AdaptiveHybridWeight(AdaptiveHybridWeightParameters.model_validate({"scheme": "likelihood", **kw}))


# Schemes ---------------------------------------------------------------------------------------
def test_score_is_the_derivative_of_the_likelihood() -> None:
    c = _sequence(1, 0.4, 1)[0]
    data = _tuning_data([c])
    from pyoops.diagnostics.tuning.estimators import negative_log_likelihood

    g, f = hybrid_weight_score(c, 0.3)
    h = 1e-5
    phi = math.log(0.3 / 0.7)

    def nll(x: float) -> float:
        return negative_log_likelihood(data, {"beta": 1 / (1 + math.exp(-x)), "inflation": 1.0})

    assert g == pytest.approx((nll(phi + h) - nll(phi - h)) / (2 * h), rel=1e-6)
    assert f > 0


def test_likelihood_fixed_point_of_one_repeated_cycle_is_its_ml_beta() -> None:
    """Fed the same cycle again and again, the Fisher-scoring recursion stops where the score vanishes: the ML β of
    that cycle (to the optimiser's tolerance, 1e-4 in β)."""
    c = _sequence(1, 0.4, 2)[0]
    ml = estimate(_tuning_data([c]), "ml", ("beta",), {"inflation": 1.0}, tolerance=1e-12).values["beta"]
    scheme = _likelihood(initial=0.8, memory=20, guard=False)
    for _ in range(300):
        scheme.update(c)
    assert scheme.beta == pytest.approx(ml, abs=1e-4)
    assert hybrid_weight_score(c, scheme.beta)[0] == pytest.approx(0.0, abs=1e-8)


def test_likelihood_recursion_converges_to_the_ml_beta_of_a_stationary_sequence() -> None:
    """Without forgetting (memory → ∞) the recursive Fisher scoring is asymptotically the ML estimate of all the
    cycles (their difference is o(SE)); after 400 cycles it is within half the ML standard error SE (the Fisher
    sd of β̂; measured 0.21 SE, the rest of the start at 0.5 and of the prior information I_0 = 1), far inside
    the sampling spread of either estimate."""
    cycles = _sequence(400, 0.35, 3)
    result = estimate(_tuning_data(cycles), "ml", ("beta",), {"inflation": 1.0})
    ml = result.values["beta"]
    se = math.sqrt(result.natural_covariance()[0, 0])
    scheme = _likelihood(initial=0.5, memory=1e15, guard=False)
    for c in cycles:
        scheme.update(c)
    assert abs(ml - 0.35) < 3 * se                      # the ML estimate itself is consistent
    assert abs(scheme.beta - ml) < 0.5 * se, (scheme.beta, ml, se)


def test_guard_blocks_updates_when_the_ensemble_is_drawn_from_b_s() -> None:
    """Members drawn from B_s: the pooled debiased cosine tends to 1, β stays where it started; without the guard
    the likelihood drifts (it removes sampling noise).  A flow-different ensemble passes the guard."""
    cycles = _sequence(200, 0.5, 4, ensemble_from_static=True)
    guarded = _likelihood(initial=0.7)
    free = _likelihood(initial=0.7, guard=False)
    for c in cycles:
        guarded.update(c)
        free.update(c)
    assert guarded.beta == 0.7 and guarded.cosine > 0.9
    assert abs(free.beta - 0.7) > 0.1
    other = _likelihood(initial=0.7)
    for c in _sequence(50, 0.5, 5):
        other.update(c)
    assert other.cosine < 0.9 and other.updated and other.beta != 0.7


def test_el_gharamti_map_against_a_grid() -> None:
    """The cubic's constrained MAP equals the maximum of the log posterior on a grid of [0, 1] (spacing 1e-5)."""
    rng = np.random.default_rng(6)
    grid = np.linspace(0.0, 1.0, 100_001)
    for _ in range(60):
        mean, sd = rng.uniform(0, 1), rng.uniform(0.02, 0.5)
        y = rng.uniform(0.5, 3.0)
        z = rng.uniform(-0.45, 2.0) * y          # Y + wZ > 0 on [0, 1]
        d = rng.normal(0, math.sqrt(y + 0.5 * z)) * rng.uniform(0.2, 3.0)
        w = el_gharamti_map(mean, sd, d, y, z)
        brute = grid[np.argmax(el_gharamti_log_posterior(grid, mean, sd, d, y, z))]
        assert abs(w - brute) <= 1e-5, (mean, sd, d, y, z, w, brute)
        assert el_gharamti_log_posterior(np.array([w]), mean, sd, d, y, z)[0] >= \
            el_gharamti_log_posterior(np.array([brute]), mean, sd, d, y, z)[0] - 1e-12


def test_el_gharamti_skips_observations_with_equal_variances() -> None:
    c = _sequence(1, 0.5, 7)[0]
    same = HybridInnovations(c.departures, c.obs_variance, c.static, c.static.copy(), N - 1)
    scheme = AdaptiveHybridWeight(AdaptiveHybridWeightParameters(scheme="el gharamti", initial=0.4))
    assert scheme.update(same) == 0.4 and not scheme.updated
    assert scheme.update(c) != 0.4 and scheme.updated


# Cycling ---------------------------------------------------------------------------------------
def _hybrid_cycle(method: str, directory: Path, cycles: int, scheme: str = "likelihood", **adaptive: Any
                  ) -> dict[str, Any]:
    cfg = l96_cycle("hybrid", directory, cycles=cycles, members=6)
    cfg["cycling"]["method"] = method
    cfg["cycling"]["spin-up cycles"] = 2
    if method == "LETKF-hybrid":
        cfg["observations"]["obs localizations"] = [{"localization method": "Gaspari-Cohn", "lengthscale": 0.364}]
        cfg["local ensemble DA"] = {"inflation": {"mult": 1.05}}
    else:
        cfg["eda"] = {"seed": 9, "inflation": {"mult": 1.05}}
    cfg["adaptive"] = {"hybrid weight": {"scheme": scheme, "initial": 0.3, "guard cycles": 2, **adaptive}}
    return cfg


@pytest.mark.parametrize("method,scheme", [("hybrid", "likelihood"), ("EDA-hybrid", "el gharamti"),
                                           ("LETKF-hybrid", "likelihood")])
def test_cycled_adaptive_hybrid_weight(tmp_path: Path, method: str, scheme: str) -> None:
    import netCDF4

    cfg = _hybrid_cycle(method, tmp_path / "out", 12, scheme)
    cfg["output"]["plots"] = True
    s = pyoops.run("cycle", cfg)
    state = s["experiment"]
    assert np.all(np.isfinite(state.stats["analysis rmse"])) and s["mean analysis rmse"] < 1.0
    with netCDF4.Dataset(tmp_path / "out" / "adaptive.nc") as ds:
        beta = np.asarray(ds["hybrid_weight"][:])
        assert ds.hybrid_weight_scheme == scheme
    assert beta.shape == (12,) and np.all((beta >= 0) & (beta <= 1))
    assert np.any(beta != 0.3)                       # it moved
    assert (tmp_path / "out" / "hybrid_weight.png").exists()
    if method == "LETKF-hybrid":
        assert state.control is not None and state.members["x"].shape == (6, 40)
        # The members are the LETKF's: their mean is not the control.
        assert not np.allclose(state.members["x"].mean(axis=0), state.control["x"])


def test_hybrid_weight_reaches_the_analysis(tmp_path: Path) -> None:
    """The weights injected into the cycle's cost function are those the analysis uses: a fixed-weight run with
    β = 0.3 equals an adaptive run whose guard never lets β move."""
    fixed = l96_cycle("EDA-hybrid", tmp_path / "fixed", cycles=4, members=4)
    for comp, w in zip(fixed["cost function"]["background error"]["saber central block"]["components"], (0.7, 0.3)):
        comp["weight"] = {"value": w}
    held = copy.deepcopy(fixed)
    held["output"]["directory"] = str(tmp_path / "held")
    for comp in held["cost function"]["background error"]["saber central block"]["components"]:
        comp["weight"] = {"value": 0.5}
    held["adaptive"] = {"hybrid weight": {"scheme": "likelihood", "initial": 0.3, "guard cycles": 100}}
    a = pyoops.run("cycle", fixed)["experiment"]
    b = pyoops.run("cycle", held)["experiment"]
    np.testing.assert_array_equal(a.stats["analysis rmse"], b.stats["analysis rmse"])
    np.testing.assert_array_equal(a.control["x"], b.control["x"])


@pytest.mark.parametrize("method", ["EDA-hybrid", "LETKF-hybrid"])
def test_adaptive_hybrid_restart_is_bitwise(tmp_path: Path, method: str) -> None:
    """Stop after 5 cycles, resume to 10: members, control, statistics and β equal an uninterrupted run."""
    from pyoops.apps import make_application
    from pyoops.config.yaml_io import load_config

    # The first ensembles (truth + white noise) look like the nearly white B_s: a permissive guard, so that
    # beta moves before and after the restart.
    cfg = _hybrid_cycle(method, tmp_path / "a", 10, **{"guard cosine": 0.99})
    app = make_application("cycle")
    app.validate(load_config(cfg))
    app.experiment.run(tmp_path / "a", stop_after=5)
    assert load_checkpoint(tmp_path / "a" / "checkpoint.npz")["cycle"] == 5
    resumed = pyoops.run("cycle", cfg)["experiment"]
    cfg_b = copy.deepcopy(cfg)
    cfg_b["output"]["directory"] = str(tmp_path / "b")
    ref = pyoops.run("cycle", cfg_b)["experiment"]
    for name in STATISTICS:
        np.testing.assert_array_equal(resumed.stats[name], ref.stats[name], err_msg=name)
    np.testing.assert_array_equal(resumed.members["x"], ref.members["x"])
    np.testing.assert_array_equal(resumed.control["x"], ref.control["x"])
    ca = load_checkpoint(tmp_path / "a" / "checkpoint.npz")
    cb = load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    for part in ("adaptive", "adaptive series"):  # the schemes' arrays; the series from the cycle log
        ra, rb = ca[part], cb[part]
        assert sorted(ra) == sorted(rb)
        for key in ra:
            np.testing.assert_array_equal(ra[key], rb[key], err_msg=key)
    series = ca["adaptive series"]
    assert len(series["hybrid weight"]) == 10 and np.any(series["hybrid weight updated"] == 1)


def test_eda_b_cache_does_not_serve_a_stale_hybrid(tmp_path: Path) -> None:
    """A configuration-only B is cached per run; a change of the Hybrid weights is a change of its key."""
    from pyoops.ensemble.cycling import with_hybrid_weights
    from pyoops.ensemble.eda import EDASetup, analyse_members

    cfg = l96_cycle("3D-Var", tmp_path, cycles=1)
    static = cfg["cost function"]["background error"]
    comp = {k: v for k, v in static.items() if k != "covariance model"}
    berr = {"covariance model": "SABER", "saber central block": {"saber block name": "Hybrid", "components": [
        {"covariance": copy.deepcopy(comp), "weight": {"value": 0.5}},
        {"covariance": copy.deepcopy(comp), "weight": {"value": 0.5}}]}}
    from pyoops.apps import make_application
    from pyoops.config.yaml_io import load_config

    app = make_application("cycle")
    app.validate(load_config(cfg))
    exp = app.experiment
    cost = exp.cost_config(0)
    rng = np.random.default_rng(0)
    xb = {"x": rng.standard_normal(40)}
    twin_values = [rng.standard_normal((1, 40))]
    out = []
    for w in (0.5, 0.05):
        c = dict(cost)
        c["background error"] = with_hybrid_weights(berr, {0: w, 1: w})
        setup = EDASetup("lorenz96", c, dict(cfg["variational"]), {0: xb}, twin_values, run_token="same run")
        out.append(analyse_members(setup, [0]).analyses[0][-1]["x"])
    assert not np.allclose(out[0], out[1])


def test_bad_adaptive_hybrid_configs(tmp_path: Path, capsys: Any) -> None:
    cfg = l96_cycle("LETKF", tmp_path, members=4)
    cfg["adaptive"] = {"hybrid weight": {"scheme": "likelihood"}}
    line = _one_line_error(tmp_path, capsys, cfg)
    assert "adaptive.hybrid weight" in line and "needs method" in line

    cfg = l96_cycle("EDA-hybrid", tmp_path, members=4)
    cfg["adaptive"] = {"hybrid weight": {"scheme": "likelihood", "bounds": [0.0, 1.0]}}
    assert "bounds" in _one_line_error(tmp_path, capsys, cfg)

    cfg = l96_cycle("EDA-hybrid", tmp_path, members=4)
    comps = cfg["cost function"]["background error"]["saber central block"]["components"]
    comps.append(copy.deepcopy(comps[0]))
    cfg["adaptive"] = {"hybrid weight": {"scheme": "el gharamti"}}
    line = _one_line_error(tmp_path, capsys, cfg)
    assert "two components" in line and "cost function.background error" in line

    cfg = l96_cycle("hybrid", tmp_path, members=4)
    cfg["cycling"]["method"] = "LETKF-hybrid"
    cfg["eda"] = {"seed": 1}
    assert "remove 'eda'" in _one_line_error(tmp_path, capsys, cfg)


def test_localized_ensemble_covariance_in_observation_space(tmp_path: Path) -> None:
    """With a localized Ensemble block, C_e comes from p columns of the Hybrid with weights (0, 1): for H = I on the
    grid it is L ∘ (Y^T Y/(N-1)), L the localization's own columns (weights (1, 0) of a Hybrid whose static part is
    the localization correlation), to round-off."""
    from pyoops.apps import make_application
    from pyoops.config.yaml_io import load_config

    loc = {"saber central block": {"saber block name": "spectral correlation", "length scale": 0.1}}
    cfg = l96_cycle("hybrid", tmp_path, cycles=1, members=5)
    cfg["cost function"]["background error"]["saber central block"]["components"] = [
        {"covariance": copy.deepcopy(loc), "weight": {"value": 0.5}},
        {"covariance": {"saber central block": {"saber block name": "Ensemble", "localization": copy.deepcopy(loc)}},
         "weight": {"value": 0.5}}]
    cfg["adaptive"] = {"hybrid weight": {"scheme": "likelihood"}}
    app = make_application("cycle")
    app.validate(load_config(cfg))
    exp = app.experiment
    assert exp._hybrid_indices == (0, 1, True)
    rng = np.random.default_rng(1)
    members = {"x": rng.standard_normal((5, 40))}
    xb = {"x": members["x"].mean(axis=0)}
    values = np.zeros((1, 40))
    cost = exp.cost_config(0)
    lmat = exp._obs_covariance(cost, {0: 1.0, 1: 0.0}, xb, members, values)
    ce = exp._obs_covariance(cost, {0: 0.0, 1: 1.0}, xb, members, values)
    y = members["x"] - members["x"].mean(axis=0)
    np.testing.assert_allclose(np.diag(lmat), 1.0, rtol=1e-10)
    np.testing.assert_allclose(ce, lmat * (y.T @ y / 4), rtol=0, atol=1e-12)
