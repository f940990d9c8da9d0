"""Statistical tests of :mod:`pyoops.diagnostics.statistics` on toys simulated in numpy (see conftest).

Confidence: every interval is a 95 % interval and every seed is fixed, so each test is
deterministic.  Over 200 seeds (2000 independent cycles, correctly specified) each of the
χ², σ_o² and HBHᵀ intervals contained 1 for 94-95.5 % of the seeds and all three together
for 89 %: about one seed in nine would fail the joint check of
``test_correctly_specified_intervals_contain_one`` by chance.  The calibration tests below
measure this coverage directly on many seeds.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyoops.diagnostics.statistics import (
    block_bootstrap_ratios,
    cost_check,
    default_block_length,
    innovation_statistics,
    observation_ranks,
    per_cycle_sums,
    rank_flatness,
    rank_histogram,
    ratio_estimates,
)

RATIOS = ("chi2", "obs error variance ratio", "background error variance ratio")


def statistics_of(sim, seed=0, **kwargs):
    return innovation_statistics(sim["obs_value"], sim["obs_error"], sim["hofx_background"], sim["hofx_analysis"],
                                 sim["background_error_variance"], sim["cycle"],
                                 rng=np.random.default_rng(seed), **kwargs)


def test_correctly_specified_intervals_contain_one(toy):
    sim = toy.simulate(seed=1, cycles=2000)
    stats = statistics_of(sim)
    cost = cost_check(sim["cost"], sim["nobs"], rng=np.random.default_rng(0))
    for est in [stats[k] for k in RATIOS] + [cost]:
        assert est.bootstrap[0] <= 1.0 <= est.bootstrap[1]
        assert est.analytic[0] <= 1.0 <= est.analytic[1]
        assert est.bootstrap[1] - est.bootstrap[0] < 0.1  # informative: +-5 % or better
    # Desroziers estimates in physical units: E[(O-A)(O-B)] = sigma_o^2 = 1, E[(A-B)(O-B)] = HBH^T_ii = 1.
    assert stats["obs error variance"].value == pytest.approx(1.0, abs=0.03)
    assert stats["background error variance"].value == pytest.approx(1.0, abs=0.05)
    assert stats["assumed obs error variance"] == pytest.approx(1.0)
    assert stats["O-B mean"].analytic[0] <= 0.0 <= stats["O-B mean"].analytic[1]
    # E[d^2] = HBH^T_ii + R_ii = 2.
    assert stats["O-B rms"].value ** 2 == pytest.approx(2.0, rel=0.05)
    assert stats["count"] == 2000 * toy.N_OBS and stats["cycles"] == 2000


@pytest.mark.parametrize("b_factor, r_factor", [(0.5, 2.0), (1.0, 2.0), (0.5, 1.0)],
                         ids=["B*0.5 and R*2", "R*2", "B*0.5"])
def test_misspecified_covariances_are_detected(toy, b_factor, r_factor):
    """Assumed R = 2 R_true and/or B = 0.5 B_true: the ratios move away from 1 the right way.

    Each 95 % interval contains the exact expectation under the mis-specification
    (conftest ``expected``).  With *both* wrong, the smooth B and white R let the Desroziers
    ratios separate them: sigma_o^2 ratio 0.67 < 1 (R too large), HBH^T ratio 1.33 > 1 (B too
    small).  With only one wrong, the other ratio also moves (0.84 or 1.16): the single-pass
    Desroziers estimates mix the two error sources, as theory says.
    """
    sim = toy.simulate(seed=2, cycles=2000, b_factor=b_factor, r_factor=r_factor)
    stats = statistics_of(sim)
    cost = cost_check(sim["cost"], sim["nobs"], rng=np.random.default_rng(0))
    exact = toy.expected(b_factor, r_factor)
    for key in RATIOS:
        lo, hi = stats[key].bootstrap
        assert lo <= exact[key] <= hi, (key, exact[key], (lo, hi))
    assert cost.bootstrap[0] <= exact["2J/p"] <= cost.bootstrap[1]
    ro, rb = stats["obs error variance ratio"].bootstrap, stats["background error variance ratio"].bootstrap
    if r_factor > 1:
        assert ro[1] < 1.0  # R assumed too large
    if b_factor < 1:
        assert rb[0] > 1.0  # B assumed too small
    if r_factor > 1 and b_factor < 1:
        assert stats["chi2"].bootstrap[1] < 1.0  # the total is also too large: 0.8 expected
        assert exact["obs error variance ratio"] == pytest.approx(0.668, abs=0.01)
        assert exact["background error variance ratio"] == pytest.approx(1.328, abs=0.01)


def _widths_and_spread(toy, seeds, cycles, phi, block_length=None, samples=300):
    values, boot, analytic, covered = [], [], [], []
    for seed in seeds:
        stats = statistics_of(toy.simulate(seed, cycles, phi=phi), seed=10_000 + seed, samples=samples,
                              block_length=block_length)
        values.append([stats[k].value for k in RATIOS])
        boot.append([(stats[k].bootstrap[1] - stats[k].bootstrap[0]) / (2 * 1.96) for k in RATIOS])
        analytic.append([(stats[k].analytic[1] - stats[k].analytic[0]) / (2 * 1.96) for k in RATIOS])
        covered.append([stats[k].bootstrap[0] <= 1.0 <= stats[k].bootstrap[1] for k in RATIOS])
    values = np.array(values)
    return (values.std(axis=0, ddof=1), np.mean(boot, axis=0), np.mean(analytic, axis=0),
            np.mean(covered, axis=0))


def test_interval_widths_match_the_sampling_spread(toy):
    """Calibration on 120 seeds of 300 independent cycles: the interval half-widths are
    1.96 standard errors of the estimates (their spread over seeds), within sampling error
    (the spread of 120 values is known to about +-7 %)."""
    sd, boot, analytic, coverage = _widths_and_spread(toy, range(120), 300, phi=0.0)
    np.testing.assert_array_less(0.8, boot / sd)
    np.testing.assert_array_less(boot / sd, 1.2)
    np.testing.assert_array_less(0.8, analytic / sd)
    np.testing.assert_array_less(analytic / sd, 1.2)
    np.testing.assert_array_less(0.86, coverage)


def test_serially_correlated_cycles_need_blocks(toy):
    """AR(1) background errors (phi = 0.8 from cycle to cycle, as a persistent forecast error):
    the moving-block bootstrap (default block length) and the analytic AR(1) interval keep
    their width equal to the sampling spread; resampling single cycles (block length 1, an
    i.i.d. bootstrap) is much too narrow for the statistics driven by the background error."""
    seeds = range(100)
    sd, boot, analytic, _ = _widths_and_spread(toy, seeds, 300, phi=0.8)
    np.testing.assert_array_less(0.75, boot / sd)
    np.testing.assert_array_less(0.75, analytic / sd)
    np.testing.assert_array_less(boot / sd, 1.3)
    _, iid, _, _ = _widths_and_spread(toy, seeds, 300, phi=0.8, block_length=1)
    # chi2 and HBH^T ratio: about half the spread with single-cycle resampling (0.53, 0.51).
    assert iid[0] / sd[0] < 0.8 and iid[2] / sd[2] < 0.8


def test_per_cycle_sums_and_block_bootstrap_mechanics():
    rng = np.random.default_rng(3)
    values = rng.standard_normal((50, 2))
    cycle = np.sort(rng.integers(0, 7, 50))
    sums = per_cycle_sums(values, cycle, 7)
    for c in range(7):
        np.testing.assert_allclose(sums[c], values[cycle == c].sum(axis=0), atol=1e-14)
    F, G = rng.random((30, 3)), 1 + rng.random((30, 3))
    # One block of all cycles: every replicate is the estimate itself.
    reps = block_bootstrap_ratios(F, G, np.random.default_rng(0), samples=5, block_length=30)
    np.testing.assert_allclose(reps, np.broadcast_to(F.sum(0) / G.sum(0), reps.shape))
    # The cumulative-sum shortcut equals concatenating the blocks explicitly.
    ell, samples = 4, 6
    reps = block_bootstrap_ratios(F, G, np.random.default_rng(1), samples=samples, block_length=ell)
    starts = np.random.default_rng(1).integers(0, 30 - ell + 1, size=(samples, 8))
    for b in range(samples):
        idx = np.concatenate([np.arange(s, s + ell) for s in starts[b]])[:30]
        np.testing.assert_allclose(reps[b], F[idx].sum(0) / G[idx].sum(0), rtol=1e-12)
    # Same seed, same intervals; the default block length is round(C^(1/3)).
    a = ratio_estimates(F, G, rng=np.random.default_rng(5))
    b = ratio_estimates(F, G, rng=np.random.default_rng(5))
    assert a == b
    assert default_block_length(2000) == 13 and default_block_length(1) == 1
    # One cycle has no interval; no cycle has no estimate.
    (one,) = ratio_estimates(np.ones((1, 1)), 2 * np.ones((1, 1)), rng=np.random.default_rng(0))
    assert one.value == 0.5 and np.isnan(one.bootstrap).all() and np.isnan(one.analytic).all()
    none = ratio_estimates(np.empty((0, 2)), np.empty((0, 2)), rng=np.random.default_rng(0))
    assert len(none) == 2 and np.isnan(none[0].value)


def test_missing_quantities_give_nan_not_wrong_numbers(toy):
    sim = toy.simulate(seed=4, cycles=50)
    sim["background_error_variance"] = np.full_like(sim["obs_value"], np.nan)
    stats = statistics_of(sim, samples=50)
    assert np.isnan(stats["background error variance ratio"].value)
    assert np.isnan(stats["background error variance ratio"].bootstrap[0])
    assert np.isnan(stats["chi2"].value)
    assert np.isfinite(stats["obs error variance ratio"].value)
    assert cost_check(np.full(50, np.nan), np.full(50, 10)) is None


def test_rank_histogram_of_a_consistent_ensemble_is_flat(toy):
    """(d) A statistically consistent ensemble (truth exchangeable with the members), with the
    observation error added to the members: the flatness test's p-values over 100 seeds are
    uniform (Kolmogorov-Smirnov), so the test rejects a consistent ensemble at its nominal
    rate; the spread-skill ratio interval contains 1.  Without the observation error the
    histogram is U-shaped."""
    from scipy.stats import kstest

    pvalues = []
    for seed in range(100):
        ens = toy.ensemble(seed=seed, cycles=500, nobs=8, members=10)
        counts = rank_histogram(observation_ranks(ens["obs_value"], ens["obs_error"], ens["members_hofx"],
                                                  np.random.default_rng(1000 + seed)), 10)
        assert counts.sum() == 4000 and counts.size == 11
        pvalues.append(rank_flatness(counts).pvalue)
    pvalues = np.array(pvalues)
    assert kstest(pvalues, "uniform").pvalue > 0.01
    assert np.mean(pvalues < 0.05) <= 0.12
    assert rank_flatness(counts).dof == 10
    stats = innovation_statistics(ens["obs_value"], ens["obs_error"], ens["hofx_background"],
                                  ens["hofx_analysis"], ens["background_error_variance"], ens["cycle"],
                                  ensemble_variance=ens["background_error_variance"], members=10,
                                  rng=np.random.default_rng(7))
    lo, hi = stats["spread-skill ratio"].bootstrap
    assert lo <= 1.0 <= hi
    assert stats["spread source"] == "ensemble"
    # Without the observation error, y falls outside the members far too often.
    bare = rank_histogram(observation_ranks(ens["obs_value"], np.full(4000, 1e-300), ens["members_hofx"],
                                            np.random.default_rng(6)), 10)
    assert rank_flatness(bare).pvalue < 1e-6
    assert bare[0] + bare[-1] > 1.25 * 2 * 4000 / 11


def test_underdispersive_ensemble_is_detected(toy):
    ens = toy.ensemble(seed=8, cycles=500, nobs=8, members=10, spread_factor=0.5)
    counts = rank_histogram(observation_ranks(ens["obs_value"], ens["obs_error"], ens["members_hofx"],
                                              np.random.default_rng(9)), 10)
    assert rank_flatness(counts).pvalue < 1e-6
    assert counts[0] > counts[5] and counts[-1] > counts[5]  # U shape
    stats = innovation_statistics(ens["obs_value"], ens["obs_error"], ens["hofx_background"],
                                  ens["hofx_analysis"], ens["background_error_variance"], ens["cycle"],
                                  ensemble_variance=ens["background_error_variance"], members=10,
                                  rng=np.random.default_rng(10))
    assert stats["spread-skill ratio"].bootstrap[0] > 1.0  # too little spread assumed
