"""The QG observation network of :func:`geometry_network`: a valid ``TuningData`` on the two-layer
QG channel (periodic in x, walls in y), and ML recovery of known parameters on it (seeded).

The coverage itself (100 replicates per theta*) is measured by ``benchmarks/tuning_coverage.py
--network qg``; here a few replicates with a bound that a calibrated interval passes almost surely.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyoops.diagnostics.tuning import TuningData, estimate
from pyoops.diagnostics.tuning.parameters import to_internal
from pyoops.diagnostics.tuning.simulate import geometry_network, simulate_innovations
from pyoops.interface.geometry import Locations

pytest.importorskip("pyoops_qg")


@pytest.fixture(scope="module")
def geometry():
    from pyoops.registry import get_registry

    return get_registry().model_plugin("qg").make_geometry({"nx": 40, "ny": 20, "depths": [4500.0, 5500.0]})


def test_qg_network_is_valid_tuning_data(geometry):
    data = geometry_network(geometry, np.random.default_rng(5), 3, p=60, members=15)
    assert isinstance(data, TuningData) and len(data.cycles) == 3 and data.nobs == 180
    c0 = data.cycles[0]
    assert set(c0.coordinates) == set(geometry.location_names)
    geometry.check_locations(Locations(c0.coordinates), "test")          # inside the channel, x, y, z
    for c in data.cycles:                                                 # a fixed network, fresh members
        assert all(np.array_equal(c.coordinates[k], c0.coordinates[k]) for k in c0.coordinates)
        assert c.ensemble_perturbations.shape == (60, 15)
        np.testing.assert_allclose(c.ensemble_perturbations.mean(axis=1), 0.0, atol=1e-12)
    assert not np.allclose(data.cycles[0].ensemble_perturbations, data.cycles[1].ensemble_perturbations)
    cs = c0.static_covariance()
    np.testing.assert_allclose(np.diag(cs), 1.0, atol=1e-8)               # unit static variance
    assert np.linalg.eigvalsh(cs).min() > -1e-8
    r = data.distances(c0)
    np.testing.assert_allclose(r, r.T)
    # periodic in x: no separation exceeds half the channel length in x combined with its full width
    assert r.max() <= np.hypot(0.5 * geometry.lx, geometry.ly) + 1e-6
    again = geometry_network(geometry, np.random.default_rng(5), 3, p=60, members=15)
    np.testing.assert_array_equal(again.cycles[2].ensemble_perturbations, data.cycles[2].ensemble_perturbations)


def test_ml_recovers_theta_on_the_qg_network(geometry):
    """3 replicates x 4 parameters = 12 nominal-95 % Wald intervals (ML; beta, lambda, a_o, l free,
    l* = 1800 km).  Misses are Binomial(12, 0.05) if calibrated: P(more than 3) = 0.2 %; each
    estimate also lies within 4 internal sds of the truth (a gross-error check)."""
    theta = {"beta": 0.7, "inflation": 1.3, "a_o": 0.8, "length": 1.8e6}
    misses = 0
    for seed in range(3):
        rng = np.random.default_rng([31, seed])
        data = simulate_innovations(geometry_network(geometry, rng, 15, p=80, members=15), theta, rng)
        res = estimate(data, "ml", ("beta", "inflation", "a_o", "length"))
        assert res.converged
        for name, e in res.estimates.items():
            lo, hi = e.wald_interval
            misses += not (lo <= theta[name] <= hi)
            assert abs(to_internal(name, e.value) - to_internal(name, theta[name])) < 4 * e.internal_sd
    assert misses <= 3
