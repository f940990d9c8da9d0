"""DiagonalObsError: R, R⁻¹, R^½, randomization statistics and QC."""

import numpy as np
import pytest

from pyoops.config import validate
from pyoops.generic.grid import StructuredGrid
from pyoops.generic.obs_error import DiagonalObsError, DiagonalObsErrorParameters
from pyoops.generic.obs_space import ObsSpace, ObsSpaceParameters, ObsVector
from pyoops.util import ConfigError, InputFileError, TimeWindow
from pyoops.util.random import generator

WINDOW = TimeWindow(begin="2010-01-01T21:00:00Z", length="PT6H")
MISSING = [3, 10, 17]


def _obs_space(missing=MISSING, obs_error=0.5):
    params = validate(ObsSpaceParameters, {
        "name": "x obs", "simulated variables": ["x"],
        "generate": {"obs frequency": "PT2H", "obs density": 8, "obs error": obs_error}}, "obs space")
    obs = ObsSpace(params, WINDOW, StructuredGrid.periodic_1d(40), "obs space")
    values = np.linspace(-1.0, 1.0, obs.nlocs)
    values[list(missing)] = np.nan
    obs.put_db("ObsValue", "x", values)
    return obs


def _R(obs, **kw):
    return DiagonalObsError(validate(DiagonalObsErrorParameters, {"covariance model": "diagonal", **kw}), obs)


@pytest.fixture
def obs():
    return _obs_space()


@pytest.fixture
def sigma(obs):
    """Location-dependent standard deviations, set through update()."""
    return 0.2 + np.arange(obs.nlocs) / obs.nlocs


def _random_dy(obs, seed):
    return ObsVector(obs, generator(seed, "dy").standard_normal((1, obs.nlocs)))


def test_generated_obs_space_size(obs):
    assert obs.nlocs == 24  # 3 times (23Z, 01Z, 03Z) x 8
    assert obs.obs_values().nobs() == 21


def test_multiply_and_inverse_multiply_are_inverse(obs, sigma):
    R = _R(obs)
    R.update(ObsVector(obs, sigma[None]))
    dy = _random_dy(obs, 1)
    mask = obs.qc_mask()
    back = R.inverse_multiply(R.multiply(dy))
    np.testing.assert_allclose(back.values[mask], dy.values[mask], rtol=1e-14)
    back2 = R.multiply(R.inverse_multiply(dy))
    np.testing.assert_allclose(back2.values[mask], dy.values[mask], rtol=1e-14)
    np.testing.assert_allclose(R.multiply(dy).values[mask], (dy.values * sigma**2)[mask], rtol=1e-15)
    # R^½ R^½ = R and R^-½ R^-½ = R⁻¹
    np.testing.assert_allclose(R.multiply_sqrt(R.multiply_sqrt(dy)).values, R.multiply(dy).values, rtol=1e-14)
    np.testing.assert_allclose(R.multiply_inverse_sqrt(R.multiply_inverse_sqrt(dy)).values,
                               R.inverse_multiply(dy).values, rtol=1e-14)


def test_r_is_symmetric_positive(obs, sigma):
    R = _R(obs)
    R.update(ObsVector(obs, sigma[None]))
    a, b = _random_dy(obs, 2), _random_dy(obs, 3)
    assert R.multiply(a).dot_product_with(b) == pytest.approx(a.dot_product_with(R.multiply(b)), rel=1e-14)
    assert R.inverse_multiply(a).dot_product_with(a) > 0


def test_missing_observations_are_zero_everywhere(obs):
    R = _R(obs)
    dy = _random_dy(obs, 4)
    for out in (R.multiply(dy), R.inverse_multiply(dy), R.multiply_sqrt(dy), R.multiply_inverse_sqrt(dy),
                R.randomize(generator(1)), R.inverse_variance()):
        assert (out.values[0, MISSING] == 0.0).all()
        assert np.isfinite(out.values).all()
    assert np.isnan(R.obserrors().values[0, MISSING]).all()


def test_inverse_variance_and_obserrors(obs):
    R = _R(obs, inflation=2.0)
    used = obs.qc_mask()[0]
    np.testing.assert_allclose(R.obserrors().values[0, used], 1.0)  # 0.5 * 2
    np.testing.assert_allclose(R.inverse_variance().values[0, used], 1.0)
    assert (R.inverse_variance().values[0, ~used] == 0.0).all()


def test_update_rejects_non_positive_errors_of_used_obs(obs):
    R = _R(obs)
    bad = np.full((1, obs.nlocs), 1.0)
    bad[0, 0] = 0.0
    with pytest.raises(ValueError, match="positive"):
        R.update(ObsVector(obs, bad))
    ok = np.full((1, obs.nlocs), 1.0)
    ok[0, MISSING] = 0.0  # non-positive only where obs are missing: fine
    R.update(ObsVector(obs, ok))
    assert (R.obserrors().values[0, obs.qc_mask()[0]] == 1.0).all()


def test_bad_parameters():
    with pytest.raises(ConfigError, match="obs error.inflation"):
        validate(DiagonalObsErrorParameters, {"covariance model": "diagonal", "inflation": 0}, "obs error")
    with pytest.raises(ConfigError, match="obs error.covariance model"):
        validate(DiagonalObsErrorParameters, {"covariance model": "full"}, "obs error")


def test_invalid_error_in_obs_space_rejected(obs):
    obs.put_db("ObsError", "x", np.where(np.arange(obs.nlocs) == 5, -1.0, 0.5))
    with pytest.raises(InputFileError, match="positive"):
        _R(obs)


def test_randomize_is_seeded(obs):
    R = _R(obs)
    a, b, c = R.randomize(generator(7, "obs")), R.randomize(generator(7, "obs")), R.randomize(generator(8, "obs"))
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)


def test_randomize_sample_variance_matches_sigma_squared(obs, sigma):
    """K draws: each location's sample variance / σ² - 1 has std ≈ sqrt(2/K).

    Bounds at 99.9 %: pooled over all used observations (one test) |z| < 3.29, and per
    location with a Bonferroni correction over the 21 used observations |z| < 3.9 (3.29 is
    the two-sided 99.9 % quantile of N(0, 1); 3.9 that of 1 - 0.001/21).
    """
    R = _R(obs)
    R.update(ObsVector(obs, sigma[None]))
    rng = generator(2024, "randomize test")
    K = 4000
    draws = np.stack([R.randomize(rng).values[0] for _ in range(K)])  # (K, nlocs)
    used = obs.qc_mask()[0]
    z = draws[:, used] / sigma[used]
    # mean zero
    assert np.abs(z.mean(axis=0)).max() < 3.9 / np.sqrt(K)
    ratio = (draws[:, used] ** 2).mean(axis=0) / sigma[used] ** 2
    assert np.abs(ratio - 1.0).max() < 3.9 * np.sqrt(2.0 / K)
    pooled = (z**2).mean()
    assert abs(pooled - 1.0) < 3.29 * np.sqrt(2.0 / z.size)
    # uncorrelated between locations
    corr = np.corrcoef(z[:, 0], z[:, 1])[0, 1]
    assert abs(corr) < 3.29 / np.sqrt(K)
    assert (draws[:, ~used] == 0.0).all()
