"""Gaspari–Cohn in observation space, distances and the data contract."""

from __future__ import annotations

import numpy as np
import pytest

from pyoops.diagnostics.tuning import TuningCycle, TuningData, periodic_distance
from pyoops.diagnostics.tuning.localization import (
    gaspari_cohn,
    gaspari_cohn_derivative,
    localization,
    localization_log_length_derivative,
)
from pyoops.saber.generic.ensemble import gaspari_cohn as saber_gaspari_cohn


def test_gaspari_cohn_matches_the_saber_implementation_with_half_width_convention():
    r = np.linspace(0.0, 3.0, 601)
    # an independent implementation (SABER's, support 2c): L_l(r) = GC(r/l) with c = l
    np.testing.assert_allclose(localization(r, 0.7), saber_gaspari_cohn(r, 0.7), atol=1e-14)
    assert gaspari_cohn(np.array(0.0)) == 1.0
    assert np.all(gaspari_cohn(np.array([2.0, 2.5, 10.0])) == 0.0)
    assert gaspari_cohn(np.array(1.0)) == pytest.approx(5.0 / 24.0)       # 0.208 at the half-width


def test_gaspari_cohn_derivative_matches_finite_differences_and_is_continuous():
    z = np.concatenate([np.linspace(0.01, 0.99, 50), np.linspace(1.01, 1.99, 50)])
    h = 1e-6
    fd = (gaspari_cohn(z + h) - gaspari_cohn(z - h)) / (2 * h)
    np.testing.assert_allclose(gaspari_cohn_derivative(z), fd, atol=1e-8)  # O(h^2) truncation, 1e-10 round-off
    for knot in (1.0, 2.0):
        assert gaspari_cohn_derivative(np.array(knot - 1e-9)) == pytest.approx(
            gaspari_cohn_derivative(np.array(knot + 1e-9)), abs=1e-7)
    r, ell = np.linspace(0.0, 1.5, 40), 0.4
    fd = (localization(r, ell * np.exp(h)) - localization(r, ell * np.exp(-h))) / (2 * h)
    np.testing.assert_allclose(localization_log_length_derivative(r, ell), fd, atol=1e-8)
    assert np.all(localization(r, np.inf) == 1.0) and np.all(localization_log_length_derivative(r, np.inf) == 0.0)


def test_localized_covariance_stays_positive_semidefinite():
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(0, 1, 30))
    r = periodic_distance()({"x": x}, {"x": x})
    y = rng.standard_normal((30, 5))
    c = y @ y.T / 4                                                          # rank 5
    for ell in (0.02, 0.1, 0.3):
        assert np.linalg.eigvalsh(localization(r, ell) * c).min() > -1e-10


def test_periodic_distance():
    d = periodic_distance(1.0)({"x": np.array([0.05, 0.5])}, {"x": np.array([0.95, 0.1])})
    np.testing.assert_allclose(d, [[0.1, 0.05], [0.45, 0.4]])


def _cycle(p=4, **kw):
    args = {"innovations": np.ones(p), "obs_error": np.ones(p), "static_factor": np.eye(p)}
    args.update(kw)
    return TuningCycle(**args)


def test_cycle_validation_and_subsets():
    with pytest.raises(ValueError, match="obs_error has shape"):
        _cycle(obs_error=np.ones(3))
    with pytest.raises(ValueError, match="positive"):
        _cycle(obs_error=np.array([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="N >= 2"):
        _cycle(ensemble_perturbations=np.ones((4, 1)))
    with pytest.raises(ValueError, match="static_factor"):
        _cycle(static_factor=np.eye(3))
    c = _cycle(static_scale=0.5, ensemble_perturbations=np.arange(8.0).reshape(4, 2), obs_group=["a", "b", "a", "b"],
               region="west", coordinates={"x": np.arange(4) / 4})
    np.testing.assert_allclose(c.static_covariance(), 0.5 * np.eye(4))
    y = c.ensemble_perturbations
    np.testing.assert_allclose(c.ensemble_covariance(), y @ y.T)
    s = c.subset(c.obs_group == "b")
    assert s.nobs == 2 and list(s.obs_group) == ["b", "b"] and list(s.coordinates["x"]) == [0.25, 0.75]
    data = TuningData((c, _cycle()))
    assert data.obs_groups() == ["", "a", "b"] and data.regions() == ["", "west"]
    only = data.select(region="west")
    assert len(only) == 1 and only.nobs == 4
    with pytest.raises(ValueError, match="no observations"):
        data.select(region="east")
