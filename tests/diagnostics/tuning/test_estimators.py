"""Recovery of known parameters by the four estimators (statistical tests, seeded).

Innovations are drawn from the model itself (:func:`simulate_innovations`) on a periodic
40-point Lorenz-96-like network: Gaussian-correlated static covariance (length 2/40), an
ensemble of 15 members per cycle drawn from a SOAR covariance (length 4/40), sigma_o = 1.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pyoops.diagnostics.tuning import LogNormal, estimate
from pyoops.diagnostics.tuning.parameters import to_internal
from pyoops.diagnostics.tuning.simulate import ring_network, simulate_innovations

GRID = list(itertools.product((0.3, 0.7), (1.0, 1.3), (0.8, 1.5)))   # (beta*, lambda*, a_o*)
LENGTH = 0.15                                                       # l* (the default is no localization)


def _data(theta, seed, cycles=40, members=15, **kw):
    rng = np.random.default_rng(seed)
    return simulate_innovations(ring_network(rng, cycles, members=members, **kw), theta, rng)


def test_ml_recovers_the_true_parameters_within_their_intervals():
    """8 settings x 4 parameters = 32 nominal-95 % Wald intervals (ML, l free); seeds 100..107.
    Misses are Binomial(32, 0.05) if calibrated: P(more than 5) = 0.7 %.  Each estimate also lies
    within 4 internal sds of the truth (a gross-error check)."""
    misses = 0
    for k, (beta, lam, a_o) in enumerate(GRID):
        theta = {"beta": beta, "inflation": lam, "a_o": a_o, "length": LENGTH}
        res = estimate(_data(theta, 100 + k), "ml", ("beta", "inflation", "a_o", "length"))
        assert res.converged
        for name, e in res.estimates.items():
            lo, hi = e.wald_interval
            misses += not (lo <= theta[name] <= hi)
            assert abs(to_internal(name, e.value) - to_internal(name, theta[name])) < 4 * e.internal_sd
    assert misses <= 5


def test_map_regularizes_short_records_and_agrees_with_ml_on_long_ones():
    theta = {"beta": 0.7, "inflation": 1.3, "a_o": 0.8, "length": LENGTH}
    short = _data(theta, 7, cycles=2, p=12)
    ml = estimate(short, "ml", ("beta", "inflation", "a_o"), {"length": LENGTH})
    mp = estimate(short, "map", ("beta", "inflation", "a_o"), {"length": LENGTH})
    for name in ("beta", "inflation"):
        # the prior adds information: intervals narrower on the internal scale
        assert mp.estimates[name].internal_sd < ml.estimates[name].internal_sd
    # the log-normal prior (median 1) pulls log(lambda) toward 0
    assert abs(math.log(mp.values["inflation"])) <= abs(math.log(ml.values["inflation"])) + 1e-9
    assert "log-normal" in mp.priors["inflation"] and "Beta(2, 2)" == mp.priors["beta"]
    long = _data(theta, 8, cycles=60)
    ml = estimate(long, "ml", ("beta", "inflation", "a_o"), {"length": LENGTH})
    mp = estimate(long, "map", ("beta", "inflation", "a_o"), {"length": LENGTH},
                  prior={"inflation": LogNormal(1.0, 0.5)})
    for name in ml.free:   # 2400 observations: the prior moves estimates by a small fraction of an sd
        assert abs(to_internal(name, mp.values[name]) - to_internal(name, ml.values[name])) < 0.3 * ml.estimates[name].internal_sd


def test_map_rejects_priors_on_fixed_parameters():
    with pytest.raises(ValueError, match="not free"):
        estimate(_data({"beta": 0.5}, 1, cycles=2), "map", ("inflation",), prior={"beta": LogNormal(1, 1)})
    with pytest.raises(ValueError, match="used by method='map'"):
        estimate(_data({"beta": 0.5}, 1, cycles=2), "ml", ("inflation",), prior={"inflation": LogNormal(1, 1)})


def test_desroziers_fixed_point_converges_on_fixed_innovations_and_recovers_r_x2_b_x05():
    """Assumed R and B from the truth by R x 2, B x 0.5 (truth a_o* = 2, lambda* = 0.5 relative to
    the assumed ones), 300 cycles of 40 observations, smooth static B (Gaussian, length 6/40), no
    ensemble, seed 11.  On a *fixed* set of innovations the iteration converges
    (|log s^2| < 1e-6; 15 iterations measured) and is within 5 % of its fixed point after at most
    5 iterations (3 measured).  a_o is within 5 % of the truth (sandwich sd 1.4 %); lambda within
    3 sandwich sds (its sd is 6 % with 300 cycles, so a 5 % criterion would need ~1500 cycles).
    The fixed point and ML are different consistent estimators: they agree within 1 sd (0.55 sd
    apart for lambda, measured)."""
    data = _data({"inflation": 0.5, "a_o": 2.0}, 11, cycles=300, members=None, static_length=6 / 40)
    res = estimate(data, "desroziers", ("inflation", "a_o"))
    assert res.converged and res.iterations < 30
    history = np.cumprod([[h["inflation"], h["a_o"]] for h in res.details["ratios"]], axis=0)
    assert np.all(np.abs(history[4] / history[-1] - 1) < 0.05)
    assert res.values["a_o"] == pytest.approx(2.0, rel=0.05)
    assert abs(math.log(res.values["inflation"] / 0.5)) < 3 * res.estimates["inflation"].internal_sd
    last = res.details["ratios"][-1]
    assert all(abs(v - 1) < 1e-5 for v in last.values())
    ml = estimate(data, "ml", ("inflation", "a_o"))
    for name in ("inflation", "a_o"):
        assert abs(to_internal(name, res.values[name]) - to_internal(name, ml.values[name])) < \
            ml.estimates[name].internal_sd
    with pytest.raises(ValueError, match="amplitudes only"):
        estimate(data, "desroziers", ("beta", "inflation"))


def test_desroziers_per_obs_group_amplitudes():
    """Two obs groups with different R amplitudes, 150 cycles, seeds 12..14: every estimate within
    3 sandwich sds of the truth (P(|z| > 3) = 0.3 % per check if calibrated; over 60 seeds the ML
    z-scores of this setting had mean -0.06..0.09 and sd 0.97..1.05)."""
    for seed in (12, 13, 14):
        data = _data({"inflation": 1.0, "a_o[a]": 0.7, "a_o[b]": 1.6}, seed, cycles=150, members=None,
                     obs_groups=["a", "b"])
        res = estimate(data, "desroziers", ("inflation", "a_o[a]", "a_o[b]"))
        assert res.converged
        for name, true in (("a_o[a]", 0.7), ("a_o[b]", 1.6), ("inflation", 1.0)):
            e = res.estimates[name]
            assert abs(math.log(e.value / true)) < 3 * e.internal_sd


def test_desroziers_sandwich_sd_matches_the_spread_over_seeds():
    """40 seeds of 20 cycles: the mean sandwich sd of log(a_o) and log(lambda) is within
    [0.7, 1.4] of the standard deviation of the estimates over seeds (sampling error of an sd
    from 40 values: about 11 %)."""
    est, sds = [], []
    for seed in range(40):
        res = estimate(_data({"inflation": 1.3, "a_o": 0.8}, 200 + seed, cycles=20, members=None),
                       "desroziers", ("inflation", "a_o"))
        est.append(np.log([res.values["inflation"], res.values["a_o"]]))
        sds.append([res.estimates["inflation"].internal_sd, res.estimates["a_o"].internal_sd])
    ratio = np.mean(sds, axis=0) / np.std(est, axis=0, ddof=1)
    assert np.all((0.7 < ratio) & (ratio < 1.4)), ratio


def test_moments_recover_beta_and_lambda():
    """Method of moments (all components, whitened) on 60 cycles, seeds 300..301: the truth
    lies inside the 95 % sandwich intervals."""
    for seed, (beta, lam) in zip((300, 301), ((0.3, 1.3), (0.7, 1.0))):
        theta = {"beta": beta, "inflation": lam, "a_o": 1.0, "length": LENGTH}
        res = estimate(_data(theta, seed, cycles=60), "moments", ("beta", "inflation"), {"length": LENGTH, "a_o": 1.0})
        for name in ("beta", "inflation"):
            lo, hi = res.estimates[name].interval
            assert lo <= theta[name] <= hi, (name, res.estimates[name])
    with pytest.raises(ValueError, match="non-linearly"):
        estimate(_data(theta, 1, cycles=2), "moments", ("length",))


def test_weights_form_recovers_two_independent_weights():
    """Weights that do not sum to one (w_s = 0.6, w_e = 0.9), 60 cycles, seed 400."""
    rng = np.random.default_rng(400)
    data = simulate_innovations(ring_network(rng, 60, members=15), {"w_s": 0.6, "w_e": 0.9, "length": LENGTH},
                                rng, form="weights")
    res = estimate(data, "ml", ("w_s", "w_e"), {"length": LENGTH}, form="weights")
    for name, true in (("w_s", 0.6), ("w_e", 0.9)):
        lo, hi = res.estimates[name].interval
        assert lo <= true <= hi


def test_ml_does_not_stop_at_its_start_when_the_first_step_leaves_the_positive_definite_region():
    """A ring replicate of the coverage benchmark (theta* = (0.7, 1.0, 0.8), l* = 0.15; seed [2024, 4, 42]) whose
    gradient at the start is large in a_o: the unscaled first L-BFGS-B step went to a corner of the box where S is
    not positive definite, the line search came back to the start and L-BFGS-B reported convergence there
    (beta = 0.5, lambda = a_o = 1, l = 0.25, -log L 2483.03).  With the objective scaled the fit moves on; its
    -log L is at most that of the fit with l held at the start value 0.25 (2461.30 here), i.e. no worse than any
    fit the start's l allows.  Deterministic (seeded data; exact likelihood)."""
    from pyoops.diagnostics.tuning import negative_log_likelihood

    theta = {"beta": 0.7, "inflation": 1.0, "a_o": 0.8, "length": 0.15}
    rng = np.random.default_rng([2024, 4, 42])
    data = simulate_innovations(ring_network(rng, 40, members=15), theta, rng)
    free = ("beta", "inflation", "a_o", "length")
    res = estimate(data, "ml", free)
    values = {n: res.estimates[n].value for n in free}
    held = estimate(data, "ml", free[:3], fixed={"length": 0.25})
    held_nll = negative_log_likelihood(data, {**{n: held.estimates[n].value for n in free[:3]}, "length": 0.25})
    assert res.converged and res.iterations > 1
    assert negative_log_likelihood(data, values) <= held_nll + 1e-6
    assert abs(values["a_o"] - 1.0) > 0.1 and values["length"] != pytest.approx(0.25, abs=1e-6)


def test_profile_of_the_length_is_not_trapped_at_the_beta_bound():
    """Ring replicate seed [2024, 2, 1] (theta* = (0.3, 1.3, 0.8), l* = 0.15): l-hat = 1.46, the profile in l flat
    above 0.5 and rising below.  Its lower end, by fresh fits at fixed l, lies between 0.1247 (2 dlog L = 4.99) and
    0.1394 (3.80).  The profile's search first tries l = 0.0063, where beta -> 0 and l drops out of the
    likelihood; warm-started from there alone, every later trial stayed at beta = 0 (2 dlog L = 7.69 at every l)
    and the interval ended at 0.1975, excluding l* = 0.15.  Started also from the estimate, it finds the end."""
    theta = {"beta": 0.3, "inflation": 1.3, "a_o": 0.8, "length": 0.15}
    rng = np.random.default_rng([2024, 2, 1])
    data = simulate_innovations(ring_network(rng, 40, members=15), theta, rng)
    res = estimate(data, "ml", ("beta", "inflation", "a_o", "length"), profile=True)
    lower, upper = res.estimates["length"].profile_interval
    assert res.estimates["length"].value > 1.0
    assert 0.1247 < lower < 0.1394 and upper == pytest.approx(5.0)


def test_minimize_scaled_keeps_the_first_step_near_the_start_and_the_true_gradient_tolerance():
    """A bowl whose objective is infinite outside |x| < 3 (as -log L outside the positive-definite region),
    started at 1 with gradient 200: plain L-BFGS-B's first trial point is the far bound and it stops at the
    start; the scaled one reaches the minimum at 0.5 with the true gradient below the default 1e-5."""
    import scipy.optimize

    from pyoops.diagnostics.tuning.optimize import minimize_scaled

    def bowl(x):
        if abs(x[0]) >= 3.0:
            return 1e300, np.zeros(1)
        return 100.0 * (x[0] - 0.5) ** 2, np.array([200.0 * (x[0] - 0.5)])

    bounds = [(-10.0, 10.0)]
    plain = scipy.optimize.minimize(bowl, np.array([1.5]), jac=True, method="L-BFGS-B", bounds=bounds)
    assert plain.x[0] == pytest.approx(1.5)          # the fault the scaling removes
    res = minimize_scaled(bowl, np.array([1.5]), bounds)
    assert res.success and res.scale == pytest.approx(200.0)
    assert res.x[0] == pytest.approx(0.5, abs=1e-6) and abs(bowl(res.x)[1][0]) <= 1e-5
