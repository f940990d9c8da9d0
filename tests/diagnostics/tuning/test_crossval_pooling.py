"""Cross-validation, learning curves and hierarchical pooling (seeded statistical tests)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from pyoops.diagnostics.tuning import estimate, negative_log_likelihood
from pyoops.diagnostics.tuning.crossval import cross_validate, learning_curve
from pyoops.diagnostics.tuning.pooling import dersimonian_laird, pool, shrink
from pyoops.diagnostics.tuning.simulate import (
    ring_network,
    simulate_innovations,
    simulate_regions,
)

THETA = {"beta": 0.5, "inflation": 1.2, "a_o": 1.0, "length": 0.15}


def _data(seed, cycles, **kw):
    rng = np.random.default_rng(seed)
    return simulate_innovations(ring_network(rng, cycles, **kw), THETA, rng)


def test_conditional_heldout_score_is_the_conditional_gaussian():
    data = _data(0, 1, p=12, members=8)
    c = data.cycles[0]
    test = np.arange(12) % 3 == 0
    s = estimate(data, "ml", (), THETA)  # nothing free: the model at THETA
    full = negative_log_likelihood(data, s.values)
    train = negative_log_likelihood(data.subset_observations([~test]), s.values)
    from pyoops.diagnostics.tuning.estimators import build_model
    cov = build_model(data, (), THETA)[0].covariances(s.values)[0]
    a, b = np.where(test)[0], np.where(~test)[0]
    mean = cov[np.ix_(a, b)] @ np.linalg.solve(cov[np.ix_(b, b)], c.innovations[b])
    var = cov[np.ix_(a, a)] - cov[np.ix_(a, b)] @ np.linalg.solve(cov[np.ix_(b, b)], cov[np.ix_(b, a)])
    assert full - train == pytest.approx(-multivariate_normal(mean, var).logpdf(c.innovations[a]), rel=1e-10)


def test_cross_validation_folds_partition_the_data():
    data = _data(1, 12, members=10)
    kw = {"method": "ml", "parameters": ("beta", "inflation", "a_o"), "fixed": {"length": 0.15}}
    cv = cross_validate(data, 4, "time", **kw)
    assert sum(f.test_nobs for f in cv.folds) == data.nobs
    assert all(f.train_nobs + f.test_nobs == data.nobs for f in cv.folds)
    cv = cross_validate(data, 3, "observations", seed=2, **kw)
    assert sum(f.test_nobs for f in cv.folds) == data.nobs
    assert np.isfinite(cv.out_of_sample) and set(cv.to_dict()) >= {"in-sample", "out-of-sample", "folds"}


def test_overfitting_shows_as_an_out_of_sample_gap():
    """A flexible model (beta, lambda, a_o, l, a_s, a_e: 6 parameters, 2 not separately
    identifiable) on a short record, 3 cycles x 40 observations, time folds: the in-sample score
    is better than the held-out one, summed over seeds 0..3 (the expected optimism of ML is
    about k/n per observation = 6/80 here)."""
    gaps = []
    for seed in range(4):
        data = _data(10 + seed, 3, members=10)
        cv = cross_validate(data, 3, "time", method="ml",
                            parameters=("beta", "inflation", "a_o", "length", "a_s", "a_e"))
        gaps.append(cv.gap)
    assert np.mean(gaps) > 0


def test_learning_curve_intervals_shrink_like_one_over_root_n():
    """Seed 4: the Wald interval of log(lambda) from 10 and from 40 cycles; the width ratio is
    2 for Fisher-based widths at a fixed estimate, it may move with the estimate: [1.5, 2.7]."""
    data = _data(4, 40, members=10)
    curve = learning_curve(data, [10, 40], method="ml", parameters=("beta", "inflation", "a_o"),
                           fixed={"length": 0.15})
    w = [np.log(p.result.estimates["inflation"].interval[1] / p.result.estimates["inflation"].interval[0])
         for p in curve]
    assert 1.5 < w[0] / w[1] < 2.7
    assert [p.ncycles for p in curve] == [10, 40] and curve[1].nobs == 1600


def test_dersimonian_laird_recovers_the_between_group_variance():
    """2000 groups, tau = 0.3, within-group variances uniform in [0.01, 0.2], seed 5: the moment
    estimate of tau^2 = 0.09 is within 15 % (its sd is about 5 % here)."""
    rng = np.random.default_rng(5)
    v = rng.uniform(0.01, 0.2, 2000)
    x = 0.4 + rng.normal(0, 0.3, 2000) + rng.normal(0, np.sqrt(v))
    tau2, mu, _ = dersimonian_laird(x, v)
    assert tau2 == pytest.approx(0.09, rel=0.15) and mu == pytest.approx(0.4, abs=0.03)
    same = dersimonian_laird(np.full(5, 0.2), np.full(5, 0.1))
    assert same[0] == 0.0 and same[1] == pytest.approx(0.2) and same[2] == pytest.approx(0.0)
    est, var = shrink(np.array([1.0, 1.0]), np.array([0.01, 100.0]), 0.0, 1.0)
    assert est[0] == pytest.approx(1.0 / 1.01) and est[1] == pytest.approx(1.0 / 101.0)
    assert var[0] == pytest.approx(1.0 / 101.0)


def _sparse_network(seed, cycles):
    """8 regions of the ring, 5 observations per region per cycle (p = 40), regional lambda*_r and
    a_o*_r drawn log-normally around 1.2 and 1.0 (sd of the log 0.25), beta = 0.5, l = 0.15;
    returns (train data, independent test data of 20 cycles, truth per region)."""
    rng = np.random.default_rng(seed)
    regions = {f"r{i}": (i / 8, (i + 1) / 8) for i in range(8)}
    lam = np.exp(np.log(1.2) + 0.25 * rng.standard_normal(8))
    a_o = np.exp(0.25 * rng.standard_normal(8))
    truth = {f"r{i}": {"inflation": lam[i], "a_o": a_o[i]} for i in range(8)}
    values = {r: {**THETA, **truth[r]} for r in truth}
    train = simulate_regions(ring_network(rng, cycles, members=10, regions=regions), values, rng)
    test = simulate_regions(ring_network(rng, 20, members=10, regions=regions), values, rng)
    return train, test, truth


def test_hierarchical_pooling_beats_independent_and_global_on_a_sparse_network():
    """Seeds 20..22, 6 cycles, 5 obs per region per cycle (regions independent: each region's
    innovations are drawn with its own parameters and no cross-region covariance, so fitting
    regions separately is the right model).  Summed over seeds: RMSE of log(lambda_r), log(a_o_r)
    against the truth is lower for the hierarchical estimates than for independent ML and than
    for the global estimate, and the held-out (20 fresh cycles) log-likelihood of the pooled
    estimates beats the independent ones."""
    fixed = {"beta": 0.5, "length": 0.15}
    err = {"independent": 0.0, "global": 0.0, "hierarchical": 0.0}
    heldout = {"independent": 0.0, "hierarchical": 0.0}
    for seed in (20, 21, 22):
        train, test, truth = _sparse_network(seed, 6)
        res = pool(train, ("inflation", "a_o"), fixed=fixed)
        for kind in err:
            for lab in res.labels:
                vals = res.values(lab, kind)
                err[kind] += sum((np.log(vals[n]) - np.log(truth[lab][n])) ** 2 for n in ("inflation", "a_o"))
        for kind in heldout:
            for lab in res.labels:
                heldout[kind] += negative_log_likelihood(test.select(region=lab), res.values(lab, kind))
    assert err["hierarchical"] < err["independent"] and err["hierarchical"] < err["global"]
    assert heldout["hierarchical"] < heldout["independent"]
