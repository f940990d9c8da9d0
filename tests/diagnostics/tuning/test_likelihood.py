"""The exact likelihood, its analytic gradient and the Fisher information.

Deterministic checks (tolerances from floating-point arithmetic) and one Monte-Carlo check of
the Fisher information (seeded; its tolerance is 5 standard errors).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from pyoops.diagnostics.tuning import TuningCycle, TuningData
from pyoops.diagnostics.tuning.estimators import build_model
from pyoops.diagnostics.tuning.simulate import ring_network, simulate_innovations
from pyoops.saber.generic.ensemble import gaspari_cohn as saber_gaspari_cohn


def _mixed_data(seed=0):
    """Cycles of different sizes, two obs groups, an ensemble in some cycles only."""
    rng = np.random.default_rng(seed)
    a = ring_network(rng, 3, p=12, members=6, obs_groups=["a", "b"])
    b = ring_network(rng, 2, p=7, members=None, obs_groups=["b", "a"], random_locations=True)
    data = TuningData(a.cycles + b.cycles, a.distance)
    return simulate_innovations(data, {"beta": 0.4, "inflation": 1.2, "length": 0.2, "a_o": 0.9}, rng)


def test_likelihood_equals_the_gaussian_density():
    data = _mixed_data()
    model, par = build_model(data, ("beta", "inflation", "length", "a_o[a]", "a_o[b]"))
    values = {"beta": 0.3, "inflation": 1.4, "length": 0.15, "a_o[a]": 0.7, "a_o[b]": 1.3}
    phi = par.internal(values)
    full = par.natural(phi)
    reference = 0.0
    for c in data.cycles:
        r = data.distance(c.coordinates, c.coordinates)
        ce = c.ensemble_covariance() * saber_gaspari_cohn(r, 0.15)          # zeros without ensemble
        rdiag = np.where(c.obs_group == "a", 0.7, 1.3) * c.obs_error ** 2
        s = 1.4 * (0.7 * c.static_covariance() + 0.3 * ce) + np.diag(rdiag)
        reference -= multivariate_normal(cov=s).logpdf(c.innovations)
    assert model.evaluate(phi, gradient=False).nll == pytest.approx(reference, rel=1e-12)
    assert full["a_s"] == 1.0 and full["a_e"] == 1.0


@pytest.mark.parametrize("form, free", [
    ("hybrid", ("beta", "inflation", "length", "a_o[a]", "a_o[b]", "a_s", "a_e")),
    ("hybrid", ("beta", "a_o")),
    ("weights", ("w_s", "w_e", "length", "a_o")),
])
def test_gradient_matches_finite_differences(form, free):
    data = _mixed_data(1)
    model, par = build_model(data, free, form=form)
    rng = np.random.default_rng(2)
    phi = par.internal({}) + 0.3 * rng.standard_normal(par.size)
    grad = model.evaluate(phi).gradient
    h = 1e-5
    fd = np.array([(model.evaluate(phi + h * e, False).nll - model.evaluate(phi - h * e, False).nll) / (2 * h)
                   for e in np.eye(par.size)])
    # central differences: truncation O(h^2) ~ 1e-10, round-off ~ 1e-16 * nll / h ~ 1e-9
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("p, rho, lam, sd_per_cycle", [(40, 1.0, 1.0, 0.45), (5, 0.5, 1.0, 1.9)])
def test_fisher_information_equals_the_cramer_rao_bound_formula(p, rho, lam, sd_per_cycle):
    """TUNING.md section 2: S = lambda C + I, C = rho I: CRB(lambda) = (2/p)(lambda + 1/rho)^2 per cycle."""
    cycles = 3
    data = TuningData(tuple(TuningCycle(np.zeros(p), np.ones(p), np.sqrt(rho) * np.eye(p)) for _ in range(cycles)))
    model, par = build_model(data, ("inflation",), {"beta": 0.0})
    fisher_internal = model.evaluate(par.internal({"inflation": lam}), gradient=False, fisher=True).fisher[0, 0]
    fisher_natural = fisher_internal / lam ** 2                               # d(log lambda)/d lambda = 1/lambda
    crb = 2.0 / p * (lam + 1.0 / rho) ** 2
    assert 1.0 / fisher_natural == pytest.approx(crb / cycles, rel=1e-12)
    assert np.sqrt(crb) == pytest.approx(sd_per_cycle, abs=0.01)             # the figures quoted in TUNING.md


def test_fisher_information_is_the_covariance_of_the_score():
    """Monte Carlo, seed 3: 4000 single-cycle scores; the sample covariance matches the Fisher
    information within 5 standard errors (diagonal: relative SE sqrt(2/4000) = 2.2 %)."""
    rng = np.random.default_rng(3)
    base = ring_network(rng, 1, p=10, members=5)
    theta = {"beta": 0.4, "inflation": 1.2, "length": 0.15, "a_o": 0.8}
    model1, par = build_model(base, ("beta", "inflation", "length", "a_o"))
    phi = par.internal(theta)
    fisher = model1.evaluate(phi, gradient=False, fisher=True).fisher
    n = 4000
    s = model1.covariances(par.natural(phi))[0]
    draws = np.linalg.cholesky(s) @ rng.standard_normal((s.shape[0], n))
    many = TuningData(tuple(base.cycles[0].with_innovations(d) for d in draws.T), base.distance)
    model, _ = build_model(many, ("beta", "inflation", "length", "a_o"))
    values = par.natural(phi)
    st = model.states(values, derivative=True)[0]
    jac = model.coefficient_jacobian(values)
    bases = [st.block.cs, st.cel, st.dcel]
    per = np.stack([0.5 * (np.einsum("kij,kij->k", st.sinv, b) - np.einsum("ki,kij,kj->k", st.alpha, b, st.alpha))
                    for b in bases]
                   + [0.5 * ((np.diagonal(st.sinv, axis1=1, axis2=2) - st.alpha ** 2) * st.block.sig2).sum(axis=1)],
                   axis=1)
    scores = per @ jac.T                                                   # (n, 4) per-cycle scores
    assert np.abs(scores.mean(axis=0)).max() < 5 * np.sqrt(np.diag(fisher) / n).max()   # E[score] = 0
    cov = np.cov(scores.T)
    # SE of a sample covariance entry, Gaussian approximation (sigma_ij^2 + sigma_ii sigma_jj)/n; the scores are
    # quadratic forms, heavier-tailed, which is why the band is 5 SE
    se = np.sqrt((fisher ** 2 + np.outer(np.diag(fisher), np.diag(fisher))) / n)
    assert np.all(np.abs(cov - fisher) < 5 * se)


def test_result_transforms_the_information_to_the_natural_scale():
    """S = lambda rho I + I: the natural-scale information of lambda from an ML result is the
    CRB formula's inverse at the estimate (exact), and the natural covariance its inverse."""
    from pyoops.diagnostics.tuning import estimate

    p, rho, cycles = 40, 1.0, 5
    rng = np.random.default_rng(9)
    data = TuningData(tuple(TuningCycle(np.sqrt(2.0) * rng.standard_normal(p), np.ones(p), np.sqrt(rho) * np.eye(p))
                            for _ in range(cycles)))
    res = estimate(data, "ml", ("inflation",), {"beta": 0.0})
    lam = res.values["inflation"]
    expected = cycles * p / (2 * (lam + 1 / rho) ** 2)
    assert res.natural_information()[0, 0] == pytest.approx(expected, rel=1e-10)
    assert res.natural_covariance()[0, 0] == pytest.approx(1 / expected, rel=1e-10)
    with pytest.raises(ValueError, match="need a likelihood"):
        estimate(data, "desroziers", ("inflation",), {"beta": 0.0}, profile=True)
