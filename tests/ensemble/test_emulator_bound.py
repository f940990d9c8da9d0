"""The bound and the oracle floor of EDA stddev emulation (numpy only: runs without PyTorch)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyoops.emulators.bound import c4, completion_stddevs, log_stddev_noise, oracle_relative_sd
from pyoops.emulators.scores import coverage, ensemble_crps, gaussian_crps, pit


def test_c4_and_oracle_floor_match_tuning_md() -> None:
    # ../shared/TUNING.md section 4 quotes sd(s_n)/sigma to three decimals.
    for n, quoted in ((5, 0.341), (10, 0.232), (20, 0.161), (50, 0.101)):
        assert oracle_relative_sd(n) == pytest.approx(quoted, abs=5e-4)
    assert c4(2) == pytest.approx(math.sqrt(2 / math.pi), rel=1e-14)


def test_c4_and_log_noise_against_sampling() -> None:
    """Sample standard deviations of 200,000 Gaussian samples of n = 5 (seed 0): their mean / sigma is c4(5) and the
    sd of their log is sqrt(trigamma(2))/2, each within 4 standard errors (false alarm ~1e-4 for each)."""
    rng = np.random.default_rng(0)
    s = rng.standard_normal((200_000, 5)).std(axis=1, ddof=1)
    assert abs(s.mean() - c4(5)) < 4 * s.std() / math.sqrt(s.size)
    logs = np.log(s)
    # the standard error of a sample sd is about sd / sqrt(2 n_samples) (Gaussian-like; log s is close to it)
    assert abs(logs.std() - log_stddev_noise(5)) < 4 * logs.std() / math.sqrt(2 * s.size) * 1.5


def test_monte_carlo_bound_matches_its_closed_form() -> None:
    """The mean over K completions of sigma_N^2 equals the exact expectation over random (N-M)-subsets of the pool.

    With the pool's mean m_P and variance S^2 (ddof 1) of P members, a subset S of size k = N - M drawn without
    replacement, SS_N = SS_M + SS_S + (M k / N) (xbar_M - xbar_S)^2, E SS_S = (k - 1) S^2 and
    E (xbar_M - xbar_S)^2 = (xbar_M - m_P)^2 + (S^2 / k)(1 - k / P).  Checked at every point within 4 Monte Carlo
    standard errors (40 points, seed 1: a false alarm has probability ~40 x 6e-5)."""
    rng = np.random.default_rng(1)
    m, n, p, k_draws = 5, 50, 500, 3000
    fixed = 0.3 + rng.standard_normal((m, 40))
    pool = rng.standard_normal((p, 40)) * np.linspace(0.5, 2.0, 40)
    sig = completion_stddevs(fixed, pool, n, k_draws, np.random.default_rng(2))
    assert sig.shape == (k_draws, 40)
    k = n - m
    ss_m = ((fixed - fixed.mean(axis=0)) ** 2).sum(axis=0)
    s2 = pool.var(axis=0, ddof=1)
    exact = (ss_m + (k - 1) * s2 + (m * k / n) * ((fixed.mean(axis=0) - pool.mean(axis=0)) ** 2
                                                   + s2 / k * (1 - k / p))) / (n - 1)
    var = sig ** 2
    err = np.abs(var.mean(axis=0) - exact) / (var.std(axis=0) / math.sqrt(k_draws))
    assert err.max() < 4.0
    # Completing with every pool member in turn is not possible (M + P > N), and a too-small pool is refused.
    with pytest.raises(ValueError, match="pool"):
        completion_stddevs(fixed, pool[:10], n, 5, rng)


def test_bound_beats_naive_on_exchangeable_members() -> None:
    """For i.i.d. members, E[log s_N | F_M] from a pool has a smaller RMSE against log s_N than the best constant
    rescaling of log s_M (2000 points, seed 3): the bound is a bound."""
    rng = np.random.default_rng(3)
    m, n, npts = 5, 50, 2000
    sigma = np.exp(rng.standard_normal(npts) * 0.3)
    members = rng.standard_normal((n, npts)) * sigma
    pool = rng.standard_normal((450, npts)) * sigma
    target = np.log(members.std(axis=0, ddof=1))
    naive = np.log(members[:m].std(axis=0, ddof=1))
    naive = naive + (target - naive).mean()
    completions = completion_stddevs(members[:m], pool, n, 200, np.random.default_rng(4))
    bound = np.log(completions).mean(axis=0)
    rmse_naive = np.sqrt(np.mean((naive - target) ** 2))
    rmse_bound = np.sqrt(np.mean((bound - target) ** 2))
    assert rmse_bound < 0.5 * rmse_naive
    # The completions are a calibrated predictive distribution: their 5-95 % range covers log s_N about 90 %.
    lo, hi = np.quantile(np.log(completions), [0.05, 0.95], axis=0)
    cover = np.mean((target >= lo) & (target <= hi))
    assert 0.85 < cover < 0.95   # binomial sd of the coverage over 2000 points: 0.0067


def test_scores() -> None:
    rng = np.random.default_rng(5)
    y = rng.standard_normal(100_000)
    # CRPS of N(0,1) at N(0,1) draws has mean 1/sqrt(pi) (the expected score of a perfect forecast).
    assert gaussian_crps(np.zeros_like(y), np.ones_like(y), y).mean() == pytest.approx(
        1 / math.sqrt(math.pi), rel=0.01)
    # A large ensemble from the same distribution scores the same (fair CRPS).
    ens = rng.standard_normal((50, 2000))
    assert ensemble_crps(ens, y[:2000]).mean() == pytest.approx(1 / math.sqrt(math.pi), rel=0.05)
    # Fair CRPS by its definition on a tiny case.
    x, t = np.array([0.0, 1.0, 3.0]), 2.0
    direct = np.abs(x - t).mean() - np.abs(x[:, None] - x[None]).sum() / (2 * 3 * 2)
    assert ensemble_crps(x[:, None], np.array([t]))[0] == pytest.approx(direct, rel=1e-14)
    assert coverage(np.zeros_like(y), np.ones_like(y), y) == pytest.approx(0.9, abs=0.005)
    u = pit(np.zeros_like(y), np.ones_like(y), y)
    assert abs(np.mean(u < 0.1) - 0.1) < 0.005
