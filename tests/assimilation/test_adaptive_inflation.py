"""Adaptive inflation schemes and the spectral innovation likelihood, on arrays (no cycling)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.optimize

from pyoops.assimilation.adaptive_inflation import (
    AdaptiveInflation,
    AdaptiveInflationParameters,
    ObsSpaceEnsemble,
    _dart_log_posterior,
    _dart_observation,
    cycle_posterior_mode,
    enkf_n_inflation,
    inverse_gamma_shape,
)
from pyoops.assimilation.letkf import LocalObsSelection, letkf_weights
from pyoops.config.parameters import validate
from pyoops.diagnostics.tuning import TuningCycle, TuningData
from pyoops.diagnostics.tuning.estimators import build_model
from pyoops.diagnostics.tuning.spectral import marginal_innovations, spectral_innovations


def _ensemble(rng: np.random.Generator, p: int, n: int, scale: float = 1.0) -> np.ndarray:
    y = scale * rng.standard_normal((p, n))
    return y - y.mean(axis=1, keepdims=True)


@pytest.mark.parametrize("weighted", [False, True])
def test_spectral_likelihood_equals_the_tuning_model(weighted: bool) -> None:
    """The ensemble-space likelihood, score and Fisher information equal HybridCovarianceModel's (form hybrid with
    beta -> 1, inflation and a_o free); localization weights w act as errors sigma/sqrt(w).  Agreement to 1e-10
    relative: both are exact, they differ by the order of floating-point operations (Cholesky of a 15 x 15 matrix
    against an 8 x 8 eigen-decomposition)."""
    rng = np.random.default_rng(1)
    p, n = 15, 8
    y = _ensemble(rng, p, n)
    sigma = rng.uniform(0.5, 2.0, p)
    d = 2.0 * rng.standard_normal(p)
    w = rng.uniform(0.2, 1.0, p) if weighted else np.ones(p)
    stats = spectral_innovations(y, d, 1.0 / sigma**2, w)
    cycle = TuningCycle(d, sigma / np.sqrt(w), np.zeros((p, 1)), ensemble_perturbations=y)
    model, par = build_model(TuningData([cycle]), ("inflation", "a_o"), {"beta": 1 - 1e-12})
    for lam, ao in [(1.0, 1.0), (1.7, 0.6), (0.4, 2.5)]:
        ev = model.evaluate(par.internal({"inflation": lam, "a_o": ao}), gradient=True, fisher=True)
        grad, fisher = stats.score(lam, ao)
        if not weighted:
            const = 0.5 * (p * np.log(2 * np.pi) + np.sum(np.log(sigma**2)))
            assert stats.negative_log_likelihood(lam, ao) + const == pytest.approx(ev.nll, rel=1e-10)
            np.testing.assert_allclose(grad, ev.gradient, rtol=1e-10)
            np.testing.assert_allclose(fisher, ev.fisher, rtol=1e-10)
        else:
            # The tempered likelihood counts the a_o directions by their weights (p_eff): the lambda parts agree.
            assert grad[0] == pytest.approx(ev.gradient[0], rel=1e-10)
            assert fisher[0, 0] == pytest.approx(ev.fisher[0, 0], rel=1e-10)


def test_marginal_likelihood_is_the_sum_of_the_observations_own() -> None:
    """marginal_innovations: -log L = sum_i 1/2 [log v_i + d_i^2 / v_i] + const with
    v_i = lambda s_i + a_o sigma_i^2/w_i (checked against that sum written out, the constant removed by
    differencing two parameter values), its lambda score equals a central finite difference, and with one
    observation it is the joint likelihood (the two forms coincide when there are no correlations to ignore).
    Tolerances: 1e-10 relative for closed forms that differ in the order of operations; 1e-6 for the finite
    difference (step 1e-5 in log lambda, error O(h^2))."""
    rng = np.random.default_rng(13)
    p, n = 9, 7
    y = _ensemble(rng, p, n)
    sigma = rng.uniform(0.5, 2.0, p)
    w = rng.uniform(0.2, 1.0, p)
    d = 2.0 * rng.standard_normal(p)
    stats = marginal_innovations(y, d, 1.0 / sigma**2, w)
    s = (y * y).sum(axis=1) / (n - 1)

    def direct(lam: float) -> float:
        v = lam * s + sigma**2 / w
        return float(0.5 * np.sum(np.log(v) + d**2 / v))   # the local analysis's R_w = sigma^2 / w

    for lam in (0.7, 1.9):
        got = stats.negative_log_likelihood(lam) - stats.negative_log_likelihood(1.0)
        assert got == pytest.approx(direct(lam) - direct(1.0), rel=1e-10)
    h, lam = 1e-5, 1.4
    fd = (stats.negative_log_likelihood(lam * np.exp(h)) - stats.negative_log_likelihood(lam * np.exp(-h))) / (2 * h)
    assert stats.score(lam)[0][0] == pytest.approx(fd, rel=1e-6)
    one = (y[:1], d[:1], 1.0 / sigma[:1] ** 2, w[:1])
    joint, marginal = spectral_innovations(*one), marginal_innovations(*one)
    for lam in (0.5, 1.0, 3.0):
        assert marginal.negative_log_likelihood(lam) == pytest.approx(joint.negative_log_likelihood(lam), rel=1e-10)


def test_enkf_n_minimises_the_dual_cost() -> None:
    """lambda = l1^2 minimises J(l1) of Bocquet (2011) with the mode correction of Bocquet et al. (2015): checked
    against scipy's bounded scalar minimisation of the same cost to 1e-6 relative (its xatol 1e-10 on u)."""
    rng = np.random.default_rng(2)
    n = 20
    for scale, xn in [(0.3, 1.0), (1.0, 2.0), (3.0, 1.0)]:
        y = _ensemble(rng, 40, n, scale)
        d = rng.standard_normal(40) * 1.3
        st = spectral_innovations(y, d, np.ones(40))
        lam = enkf_n_inflation(st.gamma[None], st.q[None], n, xn)[0]
        gamma, q = st.gamma, st.q
        n1 = n - 1
        e_n, c_l = (n + 1) / n, n / n1
        kappa = np.mean(1.0 / (1.0 + np.concatenate([gamma, np.zeros(max(n - gamma.size, 0))])))
        mc = np.sqrt((e_n / c_l) ** kappa)
        e_n, c_l = xn * e_n / mc, xn * c_l * mc

        def cost(u: float) -> float:
            return float(np.sum(q / (n1 * (1 + u * gamma))) + e_n / u + c_l * np.log(u))

        ref = scipy.optimize.minimize_scalar(cost, bounds=(1e-3, 1e3), method="bounded",
                                             options={"xatol": 1e-10}).x
        assert lam == pytest.approx(ref, rel=1e-6)


def test_miyoshi_update_by_hand() -> None:
    """One global Miyoshi (2011) update against the formula written out."""
    rng = np.random.default_rng(3)
    y = _ensemble(rng, 10, 6, 0.8)
    d = rng.standard_normal(10) * 1.5
    sigma = 0.9
    params = validate(AdaptiveInflationParameters, {"scheme": "miyoshi", "initial": 1.2}, "adaptive.inflation")
    scheme = AdaptiveInflation(params, 5)
    ens = ObsSpaceEnsemble(y.T, d, np.full(10, 1 / sigma**2), np.arange(10)[None], np.ones((1, 10)),
                           np.zeros(5, dtype=np.intp))
    lam = scheme.update(ens)
    t = np.sum(y.var(axis=1, ddof=1)) / sigma**2
    dd = np.sum(d**2) / sigma**2
    lam_o = (dd - 10) / t
    v_o = (2 / 10) * ((1.2 * t + 10) / t) ** 2
    expected = 1.2 + 0.04**2 / (0.04**2 + v_o) * (lam_o - 1.2)
    np.testing.assert_allclose(lam, max(expected, 1.0), rtol=1e-12)


@pytest.mark.parametrize("gaussian", [True, False])
def test_dart_observation_update_is_the_posterior_mode(gaussian: bool) -> None:
    """One observation's update: the new mean is the mode of the exact posterior (grid of step 1e-5, so 2e-5),
    inside the bounds; a Gaussian prior's sd never grows."""
    grid = np.linspace(1.0, 6.0, 500001)
    for d, var_p, gam in [(3.0, 0.5, 1.0), (0.3, 0.5, 1.0), (2.0, 1.0, 0.4), (5.0, 0.2, 0.9)]:
        lam, sd = np.array([1.3]), np.array([0.6])
        new, new_sd = _dart_observation(lam, sd, np.array([d]), np.array([var_p]), np.array([1.0]), np.array([gam]),
                                        1.0 if gaussian else 1.05, gaussian, np.array([True]), (1.0, 100.0))
        f = _dart_log_posterior(grid, lam, sd, d, var_p, 1.0, gam, 1.0 if gaussian else 1.05, gaussian)
        assert new[0] == pytest.approx(grid[np.argmax(f)], abs=2e-5)
        assert new[0] >= 1.0
        if gaussian:
            assert new_sd[0] <= sd[0]


def test_inverse_gamma_shape_has_the_asked_mode_and_sd() -> None:
    alpha, beta = inverse_gamma_shape(np.array([1.0, 1.5, 3.0]), np.array([0.6, 0.1, 2.0]))
    np.testing.assert_allclose(beta / (alpha + 1), [1.0, 1.5, 3.0], rtol=1e-12)
    np.testing.assert_allclose(np.sqrt(beta**2 / ((alpha - 1) ** 2 * (alpha - 2))), [0.6, 0.1, 2.0], rtol=1e-9)


@pytest.mark.parametrize("form", [spectral_innovations, marginal_innovations])
def test_cycle_posterior_mode_minimises_the_penalised_likelihood(form) -> None:
    """phi_t = argmin -log L_t(phi) + kappa/2 (phi - phi_bar)^2, checked per row against a bounded scalar minimisation
    (agreement 1e-6 in phi, the reference's accuracy at xatol 1e-9), batched over 60 rows that include the regime
    the option is for: innovations far larger than the running estimate expects (lambda* up to 30 against
    lambda_bar 1-2), where Fisher-scoring steps overshoot and a plain iteration oscillates."""
    rng = np.random.default_rng(11)
    rows, p, n = 60, 12, 6
    ys = np.stack([_ensemble(rng, p, n) for _ in range(rows)])
    lam_true = np.exp(rng.uniform(np.log(0.2), np.log(30.0), rows))
    d = np.stack([np.linalg.cholesky(lt * y @ y.T / (n - 1) + np.eye(p)) @ rng.standard_normal(p)
                  for lt, y in zip(lam_true, ys)])
    stats = form(ys, d, np.ones((rows, p)))
    running = np.exp(rng.uniform(0.0, np.log(2.0), rows))
    kappa = rng.choice([0.5, 1.0, 4.0, 16.0], rows) * stats.score(running)[1][:, 0, 0]
    phi = np.log(cycle_posterior_mode(stats, running, kappa))
    for r in range(rows):
        one = form(ys[r], d[r], np.ones(p))

        def objective(x: float, r: int = r, one=one) -> float:
            return float(one.negative_log_likelihood(np.exp(x))) + 0.5 * kappa[r] * (x - np.log(running[r])) ** 2

        ref = scipy.optimize.minimize_scalar(objective, bounds=(-15, 15), method="bounded", options={"xatol": 1e-9})
        assert phi[r] == pytest.approx(ref.x, abs=1e-6), r
    # An infinitely confident prior returns the running estimate bitwise; a weaker one moves toward the data.
    np.testing.assert_array_equal(cycle_posterior_mode(stats, running, np.full(rows, np.inf)), running)
    weak = np.log(cycle_posterior_mode(stats, running, 0.1 * kappa))
    assert np.all(np.abs(weak - np.log(running)) >= np.abs(phi - np.log(running)))


@pytest.mark.parametrize("form", [spectral_innovations, marginal_innovations])
def test_observed_curvature_is_the_second_derivative(form) -> None:
    """observed_curvature = d^2(-log L)/d(log lambda)^2: central second difference with step 1e-4 in log lambda
    (truncation O(h^2) ~ 1e-8, round-off ~ eps |NLL| / h^2 ~ 1e-7 relative), at lambda below and above the
    maximum, where it takes both signs."""
    rng = np.random.default_rng(15)
    y = _ensemble(rng, 10, 5)
    stats = form(y, 3.0 * rng.standard_normal(10), np.full(10, 0.8))
    h = 1e-4
    for lam in (0.05, 1.0, 4.0, 60.0):
        nll = [float(stats.negative_log_likelihood(lam * np.exp(k * h))) for k in (-1, 0, 1)]
        fd = (nll[0] - 2 * nll[1] + nll[2]) / h**2
        assert float(stats.observed_curvature(lam)) == pytest.approx(fd, rel=1e-5, abs=1e-6)


def test_per_cycle_leaves_the_running_estimate_alone() -> None:
    """``per cycle: 4``: the analysis gets the cycle's posterior mode with prior precision 4 F_t(lambda_bar) (bitwise
    the function's result, within the bounds); the running estimate, its information and so the next cycles'
    centre are bitwise those of the plain likelihood scheme (the same operations)."""
    rng = np.random.default_rng(12)
    p, n = 20, 8
    plain = AdaptiveInflation(validate(AdaptiveInflationParameters, {"scheme": "likelihood", "memory": 50},
                                       "adaptive.inflation"), 3)
    per_cycle = AdaptiveInflation(validate(AdaptiveInflationParameters,
                                           {"scheme": "likelihood", "memory": 50, "per cycle": 4},
                                           "adaptive.inflation"), 3)
    moved = 0
    for _ in range(20):
        y = _ensemble(rng, p, n)
        d = 3.0 * rng.standard_normal(p)       # lambda near 8: the bound at 1 does not hide the moves
        ens = ObsSpaceEnsemble(y.T, d, np.ones(p), np.arange(p)[None], np.ones((1, p)), np.zeros(3, dtype=np.intp))
        a, b = plain.update(ens), per_cycle.update(ens)
        np.testing.assert_array_equal(per_cycle.mean, plain.mean)
        np.testing.assert_array_equal(per_cycle.information, plain.information)
        np.testing.assert_array_equal(a, np.broadcast_to(plain.mean, 3))
        stats = spectral_innovations(y, d, np.ones(p))
        fisher = stats.score(per_cycle.mean[0])[1][0, 0]
        expected = np.clip(cycle_posterior_mode(stats, per_cycle.mean[0], 4.0 * fisher), 1.0, 100.0)
        np.testing.assert_array_equal(b, np.full(3, expected))
        moved += bool(b[0] != a[0])
    assert moved > 10


def _joint_innovations(rng: np.random.Generator, y: np.ndarray, lam: float) -> np.ndarray:
    """d ~ N(0, lambda C_e + I), C_e = Y Y^T/(N-1): the joint likelihood's model."""
    return np.linalg.cholesky(lam * y @ y.T / (y.shape[1] - 1) + np.eye(y.shape[0])) @ rng.standard_normal(y.shape[0])


def _independent_innovations(rng: np.random.Generator, y: np.ndarray, lam: float) -> np.ndarray:
    """d_i ~ N(0, lambda s_i + 1) independently, s_i the ensemble variance at i: the marginal likelihood's model."""
    return np.sqrt(lam * (y * y).sum(axis=1) / (y.shape[1] - 1) + 1.0) * rng.standard_normal(y.shape[0])


@pytest.mark.parametrize("form, innovations, seed", [("joint", _joint_innovations, 4),
                                                     ("marginal", _independent_innovations, 14)])
def test_likelihood_scheme_converges_to_the_true_inflation(form: str, innovations: Any, seed: int) -> None:
    """Stationary innovations drawn from the likelihood form's own model with lambda* = 1.6 (joint: d ~ N(0,
    lambda* C_e + R); marginal: independent d_i ~ N(0, lambda* s_i + 1), for which the marginal likelihood is the
    exact one and the joint form would be biased low, charging the variance outside the ensemble's span to R): after
    3000 cycles (memory 300) the estimate lies within 3 of its reported Fisher standard deviations of lambda*.  With
    forgetting the reported sd, 1/sqrt(I_t), is sqrt(2) times the estimator's own (sum rho^2j F / (sum rho^j F)^2 =
    1/(2 I_t)), so the bound is about 4.2 of the estimator's sd: a failure means bias, not chance."""
    rng = np.random.default_rng(seed)
    p, n, lam_true = 30, 10, 1.6
    params = validate(AdaptiveInflationParameters, {"scheme": "likelihood", "memory": 300, "likelihood form": form},
                      "adaptive.inflation")
    scheme = AdaptiveInflation(params, 1)
    for _ in range(3000):
        y = _ensemble(rng, p, n, 0.7)
        d = innovations(rng, y, lam_true)
        scheme.update(ObsSpaceEnsemble(y.T, d, np.ones(p), np.arange(p)[None], np.ones((1, p)),
                                       np.zeros(1, dtype=np.intp)))
    sd_log = scheme.sd[0]
    assert abs(np.log(scheme.mean[0]) - np.log(lam_true)) < 3 * sd_log
    assert sd_log < 0.1   # the data do inform: the window holds enough information


def test_per_point_mult_equals_one_problem_per_point() -> None:
    """letkf_weights with a per-point inflation: a uniform field gives bitwise the scalar result; a varying field
    gives at each point the weights of that point's scalar inflation (bitwise: the same operations per row)."""
    rng = np.random.default_rng(5)
    n, p, npts = 6, 8, 5
    hofx = rng.standard_normal((n, p))
    y, var = rng.standard_normal(p), np.full(p, 0.5)
    weight = rng.uniform(0.0, 1.0, (3, p))
    sel = LocalObsSelection(np.broadcast_to(np.arange(p), (3, p)).copy(), weight,
                            np.array([0, 1, 2, 1, 0]), p)
    w1 = letkf_weights(sel, hofx, y, var, 1.3)
    wu = letkf_weights(sel, hofx, y, var, np.full(npts, 1.3))
    np.testing.assert_array_equal(w1.mean, wu.mean)
    np.testing.assert_array_equal(w1.pert, wu.pert)
    field = np.array([1.0, 1.2, 1.5, 2.0, 1.1])
    wf = letkf_weights(sel, hofx, y, var, field)
    for q in range(npts):
        ref = letkf_weights(sel, hofx, y, var, field[q])
        np.testing.assert_array_equal(wf.mean[wf.point_row[q]], ref.mean[sel.point_row[q]])
        np.testing.assert_array_equal(wf.pert[wf.point_row[q]], ref.pert[sel.point_row[q]])


def test_state_round_trip_and_bad_shapes() -> None:
    params = validate(AdaptiveInflationParameters, {"scheme": "anderson", "spatial": "local"}, "adaptive.inflation")
    a = AdaptiveInflation(params, 7)
    a.mean[:] = np.linspace(1, 2, 7)
    b = AdaptiveInflation(params, 7)
    b.load_state(a.state_arrays())
    np.testing.assert_array_equal(b.field(), a.field())
    with pytest.raises(ValueError, match="shape"):
        AdaptiveInflation(params, 3).load_state(a.state_arrays())


@pytest.mark.parametrize("per_cycle", [None, 1.0])
def test_cap_limits_the_inflation(per_cycle: float | None) -> None:
    """EnKF-C's cap: lambda <= 1 + r (sigma_f / sigma_a - 1) with the previous analysis's spread ratio; with
    ``per cycle`` it bounds the field the analysis uses, the cycle's mode as well as the running estimate."""
    extra = {} if per_cycle is None else {"per cycle": per_cycle}
    params = validate(AdaptiveInflationParameters, {"scheme": "likelihood", "initial": 3.0, "cap": 0.5, **extra},
                      "adaptive.inflation")
    a = AdaptiveInflation(params, 1)
    a.record_spread_ratio(np.array([2.0]), np.array([1.0]))
    rng = np.random.default_rng(6)
    y = _ensemble(rng, 5, 4)
    lam = a.update(ObsSpaceEnsemble(y.T, 10 * rng.standard_normal(5), np.ones(5), np.arange(5)[None],
                                    np.ones((1, 5)), np.zeros(1, dtype=np.intp)))
    assert lam[0] == pytest.approx(1.5)
    if per_cycle is not None:
        assert a.cycle_mean[0] == pytest.approx(1.5) and a.mean[0] == pytest.approx(1.5)


def test_bad_parameters() -> None:
    from pyoops.util.errors import ConfigError

    with pytest.raises(ConfigError, match="bounds"):
        validate(AdaptiveInflationParameters, {"scheme": "likelihood", "bounds": [2, 1]}, "adaptive.inflation")
    with pytest.raises(ConfigError, match="enkf-n has no memory"):
        validate(AdaptiveInflationParameters, {"scheme": "enkf-n", "damping": 0.9}, "adaptive.inflation")
    with pytest.raises(ConfigError, match="per cycle"):
        validate(AdaptiveInflationParameters, {"scheme": "miyoshi", "per cycle": 4}, "adaptive.inflation")
    with pytest.raises(ConfigError, match="per cycle"):
        validate(AdaptiveInflationParameters, {"scheme": "likelihood", "per cycle": 0}, "adaptive.inflation")
    with pytest.raises(ConfigError, match="likelihood form"):
        validate(AdaptiveInflationParameters, {"scheme": "anderson", "likelihood form": "marginal"},
                 "adaptive.inflation")
