"""The matrix-free innovation likelihood against the exact (Cholesky) one.

Deterministic checks (tolerances from floating-point arithmetic and the CG tolerance) and seeded
statistical checks of the stochastic path (tolerances from probe standard errors computed here from the
per-probe values). Data: a 300-observation ring per cycle, static factor of rank 41, 20 members, three obs
groups with different sigma_o; innovations drawn from the model itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import hadamard

from pyoops.config.parameters import validate
from pyoops.diagnostics.tuning import TuningCycle, TuningData, estimate, matrix_free
from pyoops.diagnostics.tuning.estimators import (
    _length_scales,
    build_model,
    resolve_likelihood,
)
from pyoops.diagnostics.tuning.localization import (
    euclidean_distance,
    localization,
    localization_log_length_derivative,
    neighbour_pair_counts,
    neighbour_pairs,
    periodic_distance,
)
from pyoops.diagnostics.tuning.matrix_free import (
    LocalizedEnsemble,
    MatrixFreeCovarianceModel,
    PairBudget,
)
from pyoops.diagnostics.tuning.simulate import geometry_network, simulate_innovations
from pyoops.util.errors import ConfigError

TRUTH = {"beta": 0.4, "inflation": 1.2, "a_o": 0.9, "length": 0.05}
GROUPS = ("a", "b", "c")


def ring_cycles(rng: np.random.Generator, cycles: int = 3, p: int = 300, members: int = 20,
                modes: int = 20) -> TuningData:
    """Evenly spaced observations on the unit ring; C_s from 2*modes + 1 Fourier modes (a smooth, rank-41 static
    covariance), members drawn from a second-order autoregressive spectrum (another covariance, so beta is
    identifiable); groups a, b, c round-robin with sigma_o 0.8, 1.0, 1.3."""
    x = np.arange(p) / p
    k = np.arange(1, modes + 1)
    amplitude = np.exp(-0.5 * (2 * np.pi * k * 0.04) ** 2)
    waves = 2 * np.pi * np.outer(x, k)
    g = np.hstack([np.full((p, 1), 0.3), np.cos(waves) * amplitude, np.sin(waves) * amplitude])
    kk = np.arange(1, p // 2)
    spectrum = np.sqrt(1.0 / (1 + (2 * np.pi * kk * 0.03) ** 2) ** 2)
    all_waves = 2 * np.pi * np.outer(x, kk)
    basis = np.hstack([np.cos(all_waves) * spectrum, np.sin(all_waves) * spectrum])
    basis *= np.sqrt(p / np.sum(basis ** 2))                      # unit mean ensemble variance
    sigma = np.array([0.8, 1.0, 1.3])[np.arange(p) % 3]
    labels = np.array([GROUPS[i % 3] for i in range(p)], dtype=object)
    out = []
    for c in range(cycles):
        z = rng.standard_normal((basis.shape[1], members))
        z -= z.mean(axis=1, keepdims=True)
        out.append(TuningCycle(np.zeros(p), sigma, g, 1.0, basis @ z, {"x": x}, None, labels, cycle=c))
    return TuningData(tuple(out), periodic_distance(1.0, "x"))


@pytest.fixture(scope="module")
def data() -> TuningData:
    rng = np.random.default_rng(11)
    return simulate_innovations(ring_cycles(rng), TRUTH, rng)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


# -- (a) exact paths -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("form, free", [
    ("hybrid", ("beta", "inflation", "a_o[a]", "a_o[b]", "a_o[c]", "a_s", "a_e")),
    ("hybrid", ("beta", "inflation", "a_o")),
    ("weights", ("w_s", "w_e", "a_o")),
])
def test_low_rank_path_equals_the_cholesky_likelihood(data, form, free):
    """Without localization S = D + U U^T (rank 41 + 20 = 61 <= 300/2): Woodbury and the determinant lemma are
    exact, so nll, gradient and Fisher information agree with Cholesky to round-off (measured ~1e-13)."""
    dense, par = build_model(data, free, form=form)
    model = MatrixFreeCovarianceModel(data, par)
    phi = par.internal({"beta": 0.3, "inflation": 1.1, "a_o": 1.1, "a_o[b]": 0.7, "w_e": 0.6})
    assert [model.cycle_path(k, np.inf) for k in range(3)] == ["low-rank"] * 3
    exact, free_ = dense.evaluate(phi, fisher=True), model.evaluate(phi, fisher=True)
    assert free_.nll == pytest.approx(exact.nll, rel=1e-10)
    assert _relative(free_.gradient, exact.gradient) < 1e-10
    assert _relative(free_.fisher, exact.fisher) < 1e-10
    assert free_.nll_standard_error == 0.0 and np.all(free_.gradient_standard_error == 0.0)
    values = par.natural(phi)
    cosines = dense.whitened_cosines(values)
    for key, value in model.whitened_cosines(values).items():
        assert value == pytest.approx(cosines[key], rel=1e-10)


class HadamardProbes(MatrixFreeCovarianceModel):
    """The p = 256 columns of a Hadamard matrix as probes: they are Rademacher vectors with
    (1/p) sum_i z_i z_i^T = I exactly, so every Hutchinson average is an exact trace and SLQ an exact
    tr log (up to the Gauss quadrature of a converged Lanczos run)."""

    def probe_vectors(self, k: int, p: int) -> np.ndarray:
        return hadamard(p).astype(np.float64)


def test_wide_static_factor_gets_a_sketched_preconditioner_that_is_exact_with_complete_probes(monkeypatch):
    """K = 141 > p/2 = 128 static columns: the preconditioner takes a rank-64 randomised SVD of the static factor
    (p/4) plus the remainder's diagonal. Any preconditioner leaves the stochastic path exact with the complete
    Hadamard probe set (round-off as in the test above: 1e-10), so the sketch is checked term by term; and it
    must pay: the smooth static spectrum is captured by 64 modes, so CG needs at most half the iterations of the
    Jacobi static part (measured 20 against 57)."""
    rng = np.random.default_rng(5)
    data = simulate_innovations(ring_cycles(rng, cycles=1, p=256, modes=70), TRUTH, rng)
    assert data.cycles[0].static_factor.shape[1] == 141
    free = ("beta", "inflation", "a_o", "length")
    dense, par = build_model(data, free)
    phi = par.internal({"beta": 0.3, "inflation": 1.1, "length": 0.04})
    model = HadamardProbes(data, par, probes=256, tolerance=1e-12)
    exact, free_ = dense.evaluate(phi, fisher=True), model.evaluate(phi, fisher=True)
    assert model.describe(par.natural(phi))["sketched static factors"] == 1
    assert model.cycles[0].sketch[0].shape == (256, 64)
    assert free_.nll == pytest.approx(exact.nll, rel=1e-10)
    assert _relative(free_.gradient, exact.gradient) < 1e-10
    assert _relative(free_.fisher, exact.fisher) < 1e-10
    sketched = MatrixFreeCovarianceModel(data, par, probes=8).evaluate(phi, gradient=False).iterations
    monkeypatch.setattr(matrix_free, "truncated_factor",
                        lambda factor, rank, rng: (np.zeros((factor.shape[0], 0)), np.sum(factor * factor, axis=1)))
    jacobi = MatrixFreeCovarianceModel(data, par, probes=8).evaluate(phi, gradient=False).iterations
    assert sketched <= 0.5 * jacobi, (sketched, jacobi)


@pytest.mark.parametrize("free", [("beta", "inflation", "a_o[a]", "a_o[b]", "a_o[c]", "length"),
                                  ("w_s", "w_e", "a_o", "length")])
def test_stochastic_path_with_a_complete_probe_set_is_exact(free):
    """With localization (finite, free length) the stochastic path with the 256 orthogonal Hadamard probes must
    reproduce Cholesky: this checks the quadrature, the Hutchinson control variate and the Fisher correction
    term by term, without sampling error. CG stops at relative residual 1e-12, so the solves and the Gauss
    quadrature are accurate to round-off (measured: 1e-16 to 2e-13 relative); 1e-10 leaves room for BLAS."""
    rng = np.random.default_rng(4)
    data = simulate_innovations(ring_cycles(rng, cycles=2, p=256), TRUTH, rng)
    form = "weights" if "w_s" in free else "hybrid"
    dense, par = build_model(data, free, form=form)
    model = HadamardProbes(data, par, probes=256, tolerance=1e-12)
    phi = par.internal({"beta": 0.3, "inflation": 1.1, "a_o": 1.1, "a_o[b]": 0.7, "length": 0.04, "w_e": 0.6})
    assert model.stochastic(par.natural(phi))
    exact, free_ = dense.evaluate(phi, fisher=True), model.evaluate(phi, fisher=True)
    assert free_.nll == pytest.approx(exact.nll, rel=1e-10)
    assert _relative(free_.gradient, exact.gradient) < 1e-10
    assert _relative(free_.fisher, exact.fisher) < 1e-10
    values = par.natural(phi)
    cosines = dense.whitened_cosines(values)
    for key, value in model.whitened_cosines(values).items():            # exact sums over the sparse pattern
        assert value == pytest.approx(cosines[key], rel=1e-10)


# -- (b) stochastic path against the exact values --------------------------------------------------------------
@pytest.mark.parametrize("fixed, free", [({"length": 0.05}, ("beta", "inflation", "a_o")),
                                         ({}, ("beta", "inflation", "a_o[a]", "a_o[b]", "a_o[c]", "length"))])
def test_stochastic_nll_and_gradient_agree_within_their_probe_standard_errors(data, fixed, free):
    """30 Rademacher probes per cycle, seed 7. The per-probe values are independent draws of unbiased estimators
    (the probes are independent between probes and cycles), so the error of their mean has the standard error
    s/sqrt(30) computed here from their spread; |error| < 4 SE holds with probability ~0.9996 per quantity
    (t with 29 d.o.f.). The SEs themselves must be small, so the check is not vacuous: nll SE below 0.1 % of
    -log L (measured 0.06-0.07 %) and every gradient SE below a quarter of the score's statistical sd
    sqrt(Fisher_ii) (measured at most 0.15)."""
    dense, par = build_model(data, free, fixed)
    model = MatrixFreeCovarianceModel(data, par, probes=30, seed=7)
    phi = par.internal({"beta": 0.3, "inflation": 1.1, "a_o": 1.1, "length": 0.04})
    exact, free_ = dense.evaluate(phi, fisher=True), model.evaluate(phi)
    m = free_.nll_samples.size
    assert m == 30 and free_.nll == pytest.approx(free_.nll_samples.mean(), rel=1e-14)
    nll_se = free_.nll_samples.std(ddof=1) / np.sqrt(m)
    grad_se = free_.gradient_samples.std(axis=1, ddof=1) / np.sqrt(m)
    assert abs(free_.nll - exact.nll) < 4 * nll_se
    assert np.all(np.abs(free_.gradient - exact.gradient) < 4 * grad_se)
    assert nll_se < 1e-3 * exact.nll
    assert np.all(grad_se < 0.25 * np.sqrt(np.diag(exact.fisher)))
    np.testing.assert_allclose(free_.gradient_standard_error, grad_se, rtol=1e-12)   # what the model reports


# -- (c) estimates -------------------------------------------------------------------------------------------
def test_matrix_free_ml_estimates_agree_with_the_exact_ones(data):
    """ML of (beta, inflation, a_o). Unlocalized: the low-rank path is exact, so the estimates agree to the
    optimiser's precision (1e-3 SE). Localized (length 0.05 fixed), 64 probes, seed 0: the estimate solves the
    stochastic score equations, so it differs from the exact one by I^-1 (g_hat - g), whose probe sd is computed
    here from the per-probe gradients (about 0.05-0.1 SE at 64 probes); the difference must be within 4 of
    those sds and within 0.2 SE (>= 2 probe sds), and the probe sd itself below 0.15 SE (it adds < 2.3 % to the
    estimator's variance)."""
    free = ("beta", "inflation", "a_o")
    exact = estimate(data, "ml", free, likelihood="exact")
    low_rank = estimate(data, "ml", free, likelihood="matrix-free")
    se = np.sqrt(np.diag(np.linalg.inv(exact.information)))
    assert low_rank.converged and low_rank.details["likelihood"]["low-rank cycles"] == 3
    assert np.all(np.abs(low_rank.internal - exact.internal) < 1e-3 * se)

    fixed = {"length": 0.05}
    exact = estimate(data, "ml", free, fixed, likelihood="exact")
    stochastic = estimate(data, "ml", free, fixed, likelihood="matrix-free", probes=64, probe_seed=0)
    assert stochastic.converged and "score equations solved" in stochastic.message
    assert stochastic.details["likelihood"]["stochastic cycles"] == 3
    se = np.sqrt(np.diag(np.linalg.inv(exact.information)))
    model, _ = build_model(data, free, fixed, likelihood="matrix-free", probes=64, probe_seed=0)
    ev = model.evaluate(stochastic.internal, fisher=True)
    inverse = np.linalg.inv(ev.fisher)
    probe_sd = np.sqrt(np.diag(inverse @ (np.cov(ev.gradient_samples) / 64) @ inverse))
    error = np.abs(stochastic.internal - exact.internal)
    assert np.all(probe_sd < 0.15 * se)
    assert np.all(error < 4 * probe_sd)
    assert np.all(error < 0.2 * se)
    # the information is estimated with the same probes: within 10 % of the exact one on the diagonal
    np.testing.assert_allclose(np.diag(stochastic.information), np.diag(exact.information), rtol=0.1)


def _probe_sd(data, free, fixed, result, probes, seed, bounds=None, acting=None) -> np.ndarray:
    """Probe sd of a stochastic estimate: I_AA^-1 (g_hat - g)_A over the parameters A not held at a bound, the
    covariance of g_hat from the per-probe gradients (their mean's covariance is cov / m)."""
    model, _ = build_model(data, free, fixed, bounds=bounds, likelihood="matrix-free", probes=probes,
                           probe_seed=seed)
    ev = model.evaluate(result.internal, fisher=True)
    a = np.arange(len(free)) if acting is None else np.asarray(acting)
    inverse = np.linalg.inv(ev.fisher[np.ix_(a, a)])
    return np.sqrt(np.diag(inverse @ (np.cov(ev.gradient_samples[a]) / probes) @ inverse))


def test_matrix_free_ml_with_an_active_bound_matches_the_exact_constrained_ml(data):
    """a_o bounded to [1, 2] with the truth 0.9 outside: the exact constrained ML has a_o on its lower bound. The
    stochastic estimate (64 probes, seed 0) must hold a_o there (its score pushes outward) and put beta and the
    inflation within 0.2 exact SE and 4 probe sds of the exact constrained ML, as the unconstrained test above
    (measured -0.08 and -0.04 SE; 0.17 and 0.16 SE before the scoring respected the bound, and still 0.25 and
    0.21 SE at 1024 probes, against 0.005 and 0.007 now)."""
    free, fixed, bounds = ("beta", "inflation", "a_o"), {"length": 0.05}, {"a_o": (1.0, 2.0)}
    exact = estimate(data, "ml", free, fixed, bounds=bounds, likelihood="exact")
    assert exact.values["a_o"] == pytest.approx(1.0, abs=1e-9)       # the constraint is active
    stochastic = estimate(data, "ml", free, fixed, bounds=bounds, likelihood="matrix-free", probes=64, probe_seed=0)
    assert stochastic.converged and "held at a bound by their score: a_o" in stochastic.message
    assert stochastic.values["a_o"] == 1.0
    se = np.sqrt(np.diag(np.linalg.inv(exact.information)))[:2]
    error = np.abs(stochastic.internal - exact.internal)[:2]
    probe_sd = _probe_sd(data, free, fixed, stochastic, 64, 0, bounds, acting=[0, 1])
    assert np.all(error < 0.2 * se) and np.all(error < 4 * probe_sd), (error / se, error / probe_sd)


def test_matrix_free_map_agrees_with_the_exact_map(data):
    """MAP with the default priors on the stochastic path (64 probes, seed 0): the score equations include the
    priors' gradient and curvature, so the estimate must agree with the exact MAP as ML does (0.2 SE; measured
    0.09 SE at most) and report the Laplace information."""
    free, fixed = ("beta", "inflation", "a_o"), {"length": 0.05}
    exact = estimate(data, "map", free, fixed, likelihood="exact")
    stochastic = estimate(data, "map", free, fixed, likelihood="matrix-free", probes=64, probe_seed=0)
    assert stochastic.converged and stochastic.details["likelihood"]["stochastic cycles"] == 3
    assert stochastic.information_kind.startswith("Laplace")
    se = np.sqrt(np.diag(np.linalg.inv(exact.information)))
    assert np.all(np.abs(stochastic.internal - exact.internal) < 0.2 * se)


# -- (d) the sparse localized ensemble covariance -------------------------------------------------------------
def _plain(distance):
    """The same distance without KD-tree coordinates: forces the row-block search."""
    return lambda a, b: distance(a, b)


@pytest.mark.parametrize("geometry", ["ring", "plane", "ring-rows", "plane-rows"])
def test_sparse_localized_ensemble_equals_the_dense_schur_product(geometry):
    """Dot and symmetry tests of L∘C_e and (dL/dlog l)∘C_e against dense matrices (round-off: 1e-12), for the
    KD-tree search (periodic ring, Euclidean plane) and the row-block fallback, which must find the same pairs."""
    rng = np.random.default_rng(2)
    p, members, length = 250, 12, 0.04
    if geometry.startswith("ring"):
        coords, distance = {"x": np.sort(rng.uniform(0.0, 1.0, p))}, periodic_distance(1.0, "x")
    else:
        coords = {"x": rng.uniform(0.0, 1.0, p), "y": rng.uniform(0.0, 2.0, p)}
        distance = euclidean_distance(("x", "y"))
    if geometry.endswith("rows"):
        distance = _plain(distance)
    y = rng.standard_normal((p, members)) / np.sqrt(members - 1)
    operator = LocalizedEnsemble(y, coords, distance)
    loc, dloc = operator.bases(length)
    r = distance(coords, coords)
    dense = localization(r, length) * (y @ y.T)
    ddense = localization_log_length_derivative(r, length) * (y @ y.T)
    u, v = rng.standard_normal((p, 3)), rng.standard_normal((p, 3))
    for sparse, full in ((loc, dense), (dloc, ddense)):
        scale = np.abs(u).sum() * np.abs(full @ v).max()
        assert np.abs(u.T @ sparse.apply(v) - u.T @ (full @ v)).max() < 1e-12 * scale          # dot test
        assert np.abs(u.T @ sparse.apply(v) - (v.T @ sparse.apply(u)).T).max() < 1e-12 * scale  # symmetry
        np.testing.assert_allclose(sparse.diagonal(), np.diag(full), rtol=1e-12, atol=1e-15)
    assert operator.npairs == int(np.count_nonzero(r <= 2 * length))        # exactly the pairs within 2 l
    assert operator.npairs < 0.2 * p * p                                     # and sparse


def test_geometry_distance_kd_tree_finds_the_pairs_of_the_distance_itself():
    """The QG channel (periodic in x, walls in y): the geometry's KD-tree coordinates give the same pairs as the
    row-block search with the geometry's distance, and the same distances to 1 mm (round-off ~1e-9 m of ~1e7 m)."""
    from pyoops.diagnostics.tuning.from_archive import geometry_distance
    from pyoops.registry import get_registry

    geometry = get_registry().model_plugin("qg").make_geometry({"nx": 40, "ny": 20, "depths": [4500.0, 5500.0]})
    data = geometry_network(geometry, np.random.default_rng(5), 1, p=300, members=4)
    coords = data.cycles[0].coordinates
    distance = geometry_distance(geometry)
    tree, rows = neighbour_pairs(distance, coords, 2.0e6), neighbour_pairs(_plain(distance), coords, 2.0e6)
    assert 300 < tree.rows.size < 0.5 * 300 * 300
    assert np.array_equal(tree.rows, rows.rows) and np.array_equal(tree.cols, rows.cols)
    np.testing.assert_allclose(tree.distance, rows.distance, rtol=0, atol=1e-3)


def test_pair_search_refuses_more_pairs_than_allowed():
    x = {"x": np.arange(100) / 100}
    with pytest.raises(ValueError, match="max_pairs"):
        neighbour_pairs(periodic_distance(), x, 0.305, max_pairs=1000)
    with pytest.raises(ValueError, match="max_pairs"):
        neighbour_pairs(_plain(periodic_distance()), x, 0.305, max_pairs=1000)
    assert neighbour_pairs(periodic_distance(), x, 0.305, max_pairs=10_000).rows.size == 100 * 61


@pytest.mark.parametrize("geometry", ["ring", "plane"])
def test_neighbour_pair_counts_equal_the_dense_counts(geometry):
    """Counts of pairs with r <= radius for several radii, KD-tree and row-block, against the dense distance
    matrix: exact integers (random coordinates, so no distance ties a radius)."""
    rng = np.random.default_rng(8)
    p = 300
    if geometry == "ring":
        coords, distance = {"x": rng.uniform(0.0, 1.0, p)}, periodic_distance(1.0, "x")
    else:
        coords = {"x": rng.uniform(0.0, 1.0, p), "y": rng.uniform(0.0, 2.0, p)}
        distance = euclidean_distance(("x", "y"))
    radii = np.array([0.0, 0.013, 0.05, 0.2, 0.9, 5.0])
    r = distance(coords, coords)
    dense = np.array([np.count_nonzero(r <= radius) for radius in radii])
    assert dense[0] == p and dense[-1] == p * p
    np.testing.assert_array_equal(neighbour_pair_counts(distance, coords, radii), dense)
    np.testing.assert_array_equal(neighbour_pair_counts(_plain(distance), coords, radii), dense)


def _ring(p: int, cycles: int = 2) -> TuningData:
    """Unit ring, p observations 1/p apart (each within 2 l of 2 floor(2 l p) + 1 observations, itself included)."""
    rng = np.random.default_rng(3)
    x = np.arange(p) / p
    out = tuple(TuningCycle(rng.standard_normal(p), np.ones(p), np.ones((p, 1)), 1.0, rng.standard_normal((p, 5)),
                            {"x": x}, cycle=c) for c in range(cycles))
    return TuningData(out, periodic_distance(1.0, "x"))


def test_pair_budget_is_shared_by_all_cycles_and_caps_the_default_length_bound():
    """The budget counts the pairs of every cycle: 2 cycles of p = 200 at l = 0.0374 hold 2 x 200 x 29 = 11600
    pairs (2 l p = 14.96: 14 neighbours on each side and the observation itself), at l = 0.0399 2 x 200 x 31 =
    12400. Lengths are taken away from ties (2 l p not an integer), so the counts are exact."""
    data = _ring(200)
    _, par = build_model(data, ("beta", "length"))
    model = MatrixFreeCovarianceModel(data, par, max_pairs=11_600)
    np.testing.assert_array_equal(model.pair_counts([0.0374, 0.0399]), [11_600, 12_400])
    assert model.longest_length([0.01, 0.0374, 0.0399]) == 0.0374
    model.cycles[0].localized.bases(0.0374)
    assert model.budget.total == 5800                                            # one cycle searched so far
    model.cycles[1].localized.bases(0.0374)
    assert model.budget.total == 11_600
    with pytest.raises(ValueError, match=r"budget max_pairs = 11600 over all cycles.*estimator: \{max pairs"):
        model.cycles[1].localized.bases(0.0399)                                  # 5800 + 6200 pairs: over
    # build_model lowers a free length's default upper bound to the budget (not a user's bound), and says so
    capped, par = build_model(data, ("beta", "length"), likelihood="matrix-free", max_pairs=11_600)
    assert capped.length_cap == par.bounds["length"][1]
    assert capped.pair_counts([capped.length_cap])[0] <= 11_600 < capped.pair_counts([capped.length_cap * 1.1])[0]
    assert capped.describe(par.natural(par.internal({})))["length cap from max pairs"] == capped.length_cap
    free_bound, par = build_model(data, ("beta", "length"), likelihood="matrix-free", max_pairs=11_600,
                                  bounds={"length": (0.01, 0.3)})
    assert free_bound.length_cap is None and par.bounds["length"] == (0.01, 0.3)
    assert PairBudget(None).allowance(0) is None


def test_length_on_the_budget_cap_is_reported_as_computational(data):
    """A budget of 22500 pairs caps the length near 0.021, below the truth 0.05: the ML estimate (16 probes, seed 0)
    sits on the cap (the likelihood keeps falling towards the truth, so on any probe draw) and its verdict, reason
    and a note must say the bound is the budget's, not the data's."""
    result = estimate(data, "ml", ("beta", "inflation", "a_o", "length"), likelihood="matrix-free",
                      max_pairs=22_500, probes=16)
    cap = result.details["likelihood"]["length cap from max pairs"]
    assert cap < 0.03 and result.values["length"] == pytest.approx(cap, rel=1e-9)
    e = result.estimates["length"]
    assert e.verdict != "identified" and "neighbour-pair budget" in e.reason and "not the data's" in e.reason
    assert any(n.startswith("length:") and "max_pairs = 22500" in n for n in result.notes)


def test_length_scales_use_a_seeded_subset_of_2000_observations():
    """A cycle of 2500 observations contributes the 2000 drawn by default_rng(0) (the documented seed), so the
    bounds and start are reproducible and need no 2500 x 2500 matrix; the subset's extremes lie within the
    full set's."""
    p = 2500
    x = np.random.default_rng(1).uniform(0.0, 100.0, p)
    data = TuningData((TuningCycle(np.zeros(p), np.ones(p), np.ones((p, 1)), 1.0, None, {"x": x}),),
                      euclidean_distance(("x",)))
    keep = np.sort(np.random.default_rng(0).choice(p, 2000, replace=False))
    r = np.abs(x[keep, None] - x[None, keep])[np.triu_indices(2000, 1)]
    assert _length_scales(data) == (r.min(), np.median(r), r.max())
    full = np.abs(x[:, None] - x[None, :])[np.triu_indices(p, 1)]
    assert full.min() <= r.min() and r.max() <= full.max()


# -- (e) determinism ------------------------------------------------------------------------------------------
def test_same_seed_gives_bitwise_the_same_likelihood(data):
    """Common random numbers: the probes are drawn once per cycle from the seed, so two models with seed 3 agree
    bitwise, repeated evaluations too; another seed gives other probes, hence another estimate."""
    _, par = build_model(data, ("beta", "inflation", "a_o"), {"length": 0.05})
    phi = par.internal({"beta": 0.3})
    one = MatrixFreeCovarianceModel(data, par, probes=8, seed=3)
    two = MatrixFreeCovarianceModel(data, par, probes=8, seed=3)
    first = one.evaluate(phi)
    assert first.nll == two.evaluate(phi).nll == one.evaluate(phi).nll
    assert np.array_equal(first.gradient, two.evaluate(phi).gradient)
    assert MatrixFreeCovarianceModel(data, par, probes=8, seed=4).evaluate(phi).nll != first.nll


# -- choice of likelihood and configuration ---------------------------------------------------------------------
def test_auto_choice_and_refused_combinations(data):
    def cycles(p: int) -> TuningData:
        return TuningData((TuningCycle(np.zeros(p), np.ones(p), np.ones((p, 1))),))

    assert resolve_likelihood(cycles(2000), "auto") == "exact"
    assert resolve_likelihood(cycles(2001), "auto") == "matrix-free"
    assert resolve_likelihood(cycles(2001), "auto", "desroziers") == "exact"
    # memory: 88 bytes per entry of each cycle's p x p matrices, 4 GiB at most: 12 cycles of 2000, not 13
    many = TuningData(cycles(2000).cycles * 12)
    assert resolve_likelihood(many, "auto") == "exact"
    assert resolve_likelihood(TuningData(many.cycles + cycles(2000).cycles), "auto") == "matrix-free"
    with pytest.raises(ValueError, match="probes must be an integer from 2 to 4096"):
        MatrixFreeCovarianceModel(data, build_model(data, ("beta",))[1], probes=4097)
    with pytest.raises(ValueError, match="'ml' and 'map' only"):
        estimate(data, "desroziers", ("inflation", "a_o"), likelihood="matrix-free")
    with pytest.raises(ValueError, match="likelihood must be one of"):
        estimate(data, "ml", ("inflation",), likelihood="fast")
    _, par = build_model(data, ("beta", "length"))
    with pytest.raises(ValueError, match="low-rank path needs no localization"):
        MatrixFreeCovarianceModel(data, par, path="low-rank")


@pytest.mark.parametrize("entry, where", [
    ({"likelihood": "fast"}, "estimator.likelihood"),
    ({"probes": 1}, "estimator.probes"),
    ({"probes": 4097}, "estimator.probes"),
    ({"probe seed": -2}, "estimator.probe seed"),
    ({"max pairs": 0}, "estimator.max pairs"),
    ({"method": "moments", "likelihood": "matrix-free"}, "estimator: likelihood"),
])
def test_tune_estimator_keys_are_validated(entry, where):
    from pyoops.apps.tune import EstimatorParameters

    with pytest.raises(ConfigError) as info:
        validate(EstimatorParameters, entry, "estimator")
    message = str(info.value)
    assert message.startswith(where) and "\n" not in message
    ok = validate(EstimatorParameters, {"likelihood": "matrix-free", "probes": 40, "probe seed": 3,
                                        "max pairs": 1000}, "estimator")
    assert (ok.likelihood, ok.probes, ok.probe_seed, ok.max_pairs) == ("matrix-free", 40, 3, 1000)


def test_tune_passes_the_likelihood_keys_to_the_fit_and_the_cross_validation(tmp_path, monkeypatch):
    """``pyoops tune`` with estimator likelihood: matrix-free, probes: 12, probe seed: 5, max pairs: 1000 on a
    3-cycle Lorenz-96 archive (40 observations, static factor of 40 columns): the report's fit used them, and so
    did every cross-validation fit (spied)."""
    import json

    import yaml

    import pyoops
    from pyoops.cli import main
    from pyoops.diagnostics.tuning import crossval
    from pyoops.testing.linear_gaussian import desroziers_experiment

    cfg, _ = desroziers_experiment("3D-Var", tmp_path / "twin", model_plugin="lorenz96",
                                   geometry_config={"resol": 40}, cycles=4)
    pyoops.run("cycle", cfg)
    seen = []

    def spy(*args, **kwargs):
        seen.append({k: kwargs.get(k) for k in ("likelihood", "probes", "probe_seed", "max_pairs")})
        return estimate(*args, **kwargs)

    monkeypatch.setattr(crossval, "estimate", spy)
    keys = {"likelihood": "matrix-free", "probes": 12, "probe seed": 5, "max pairs": 1000}
    tune = {"model plugin": "lorenz96", "geometry": {"resol": 40},
            "archives": [str(tmp_path / "twin" / "run" / "innovations.nc")],
            "static covariance": cfg["cost function"]["background error"],
            "estimator": {"method": "ml", "parameters": ["a_s", "a_o"], **keys},
            "cross validation": {"folds": 2},
            "output": {"json": {"filename": str(tmp_path / "tune.json")}, "table": False}}
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(tune))
    assert main(["tune", str(tmp_path / "tune.yaml"), "--quiet"]) == 0
    report = json.loads((tmp_path / "tune.json").read_text())
    used = report["estimate"]["details"]["likelihood"]
    assert (used["likelihood"], used["probes"], used["probe seed"], used["max pairs"]) == ("matrix-free", 12, 5, 1000)
    assert seen == [{"likelihood": "matrix-free", "probes": 12, "probe_seed": 5, "max_pairs": 1000}] * 2
    assert report["cross validation"]["folds"][0]["out-of-sample"] is not None


def test_plots_use_the_likelihood_of_the_estimate():
    """A matrix-free estimate (8 probes, seed 4) is plotted with the same matrix-free model: no p x p matrix, and
    -log L at the estimate equals the fit's bitwise (same probes: common random numbers)."""
    from pyoops.diagnostics.tuning import plots
    from pyoops.diagnostics.tuning.estimators import likelihood_settings

    data = _ring(200)
    result = estimate(data, "ml", ("beta",), {"length": 0.05}, likelihood="matrix-free", probes=8, probe_seed=4)
    assert likelihood_settings(result) == {"likelihood": "matrix-free", "probes": 8, "probe_seed": 4,
                                           "max_pairs": matrix_free.DEFAULT_MAX_PAIRS}
    model, _ = plots._model(data, result)
    assert isinstance(model, MatrixFreeCovarianceModel) and (model.probes, model.seed) == (8, 4)
    curve = plots.likelihood_curves(data, result, points=3)["beta"]
    assert curve.nll_hat == result.nll and np.all(np.isfinite(curve.nll))


def test_a_failed_evaluation_at_the_estimate_is_reported_not_raised(data, monkeypatch):
    """If S is not positive definite at the estimate (here forced: the final evaluation, the only one with
    gradient=False and fisher=True, returns -log L = inf), the result says so instead of raising."""
    original = MatrixFreeCovarianceModel.evaluate

    def failing(self, phi, gradient=True, fisher=False):
        if fisher and not gradient:
            return matrix_free.MatrixFreeEvaluation(np.inf)
        return original(self, phi, gradient, fisher)

    monkeypatch.setattr(MatrixFreeCovarianceModel, "evaluate", failing)
    result = estimate(data, "ml", ("inflation", "a_o"), {"length": np.inf}, likelihood="matrix-free")
    assert not result.converged and "evaluation at the estimate failed" in result.message
    assert result.details["likelihood"]["information standard error"] is None
    assert result.information_kind.startswith("none")
