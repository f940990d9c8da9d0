"""The QG SABER blocks (``QG balance``, ``QG vertical correlation``) in a static B, and the generic
``WindSpeed`` observation operator that the QG observations use."""

from __future__ import annotations

import numpy as np
import pytest

from pyoops.config import validate
from pyoops.generic.grid import StructuredGrid
from pyoops.generic.obs_operators import LinearWindSpeedObsOperator, WindSpeedObsOperator, WindSpeedParameters
from pyoops.generic.obs_space import ObsSpace, ObsSpaceParameters, ObsVector
from pyoops.generic.state import GenericIncrement
from pyoops.interface.observations import GeoVaLs
from pyoops.registry import get_registry
from pyoops.saber.chain import ErrorCovariance
from pyoops.util import ConfigError, TimeWindow
from pyoops.util.datetime import DateTime
from pyoops.util.random import generator
from pyoops_qg import QgGeometry

DATE = DateTime("2010-01-01T00:00:00Z")
VARIABLES = ["x", "q", "u", "v"]


def static_b(sigma: float = 3.0e6, vertical: dict | None = None, tests: bool = True) -> dict:
    flags = {"adjoint test": True} if tests else {}
    return {
        "covariance model": "SABER",
        "saber central block": {"saber block name": "diffusion", "horizontal length scale": 1.0e6, **flags,
                                **({"square-root test": True} if tests else {})},
        "saber outer blocks": [
            {"saber block name": "QG vertical correlation", **(vertical or {"correlation": 0.6}), **flags,
             **({"inverse test": True} if tests else {})},
            {"saber block name": "StdDev", "read": {"value": sigma}, **flags},
            {"saber block name": "QG balance", **flags, **({"inverse test": True} if tests else {})},
        ],
    }


@pytest.fixture(scope="module")
def geometry() -> QgGeometry:
    return QgGeometry({"nx": 40, "ny": 20, "depths": [4500.0, 5500.0]})


def covariance(geometry, config, variables=VARIABLES) -> ErrorCovariance:
    registry = get_registry()
    return ErrorCovariance(config, geometry, variables, DATE, registry, registry.model_plugin("qg"))


def test_static_b_passes_the_block_tests_and_has_the_stated_structure(geometry):
    """Adjoint, square-root and inverse tests run at construction (1e-12); then B applied to a Dirac
    of the lower-layer streamfunction has variance sigma^2, correlation 0.6 with the upper layer
    at the same point, and balanced q, u, v."""
    b = covariance(geometry, static_b())
    dirac = GenericIncrement.zeros(geometry, VARIABLES, DATE)
    dirac.fields["x"][0, 10, 20] = 1.0
    out = b.multiply(dirac).fields
    assert out["x"][0, 10, 20] == pytest.approx(9.0e12, rel=1e-10)
    assert out["x"][1, 10, 20] / out["x"][0, 10, 20] == pytest.approx(0.6, rel=1e-12)
    assert 0.5 < out["x"][0, 10, 23] / out["x"][0, 10, 20] < 0.75         # 900 km from a 1000 km diffusion
    ops = geometry.operators
    np.testing.assert_allclose(out["q"], ops.pv_linear(out["x"]), rtol=0, atol=1e-12 * np.abs(out["q"]).max())
    u, v = ops.winds(out["x"])
    np.testing.assert_allclose(out["u"], u, rtol=0, atol=1e-12 * np.abs(u).max())
    np.testing.assert_allclose(out["v"], v, rtol=0, atol=1e-12 * np.abs(v).max())
    # Symmetry of the whole chain.
    rng = generator(2, "symmetry")
    x, y = (GenericIncrement.zeros(geometry, VARIABLES, DATE) for _ in range(2))
    x.random(rng)
    y.random(rng)
    lhs, rhs = b.multiply(x).dot_product_with(y), x.dot_product_with(b.multiply(y))
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), abs(rhs))


def test_randomized_spread_matches_the_configuration(geometry):
    b = covariance(geometry, static_b(tests=False))
    draws = b.randomize(generator(3, "draws"), nmembers=400).fields["x"]
    std = draws.std(axis=0)
    assert std.mean() == pytest.approx(3.0e6, rel=0.05)
    corr = np.mean((draws[:, 0] - draws[:, 0].mean(0)) * (draws[:, 1] - draws[:, 1].mean(0)), axis=0) / (
        draws[:, 0].std(0) * draws[:, 1].std(0))
    assert corr.mean() == pytest.approx(0.6, abs=0.05)


def test_vertical_length_scale(geometry):
    from pyoops_qg.blocks import QgVerticalCorrelation

    b = covariance(geometry, static_b(vertical={"vertical length scale": 5000.0}))
    block = next(blk for blk, _ in b.chain.outer if isinstance(blk, QgVerticalCorrelation))
    assert block.correlation == pytest.approx(np.exp(-0.5 * (5000.0 / 5000.0) ** 2))


def _balance(geometry, outer):
    from pyoops.saber.blocks import BlockContext
    from pyoops_qg.blocks import QgBalance, QgBalanceParameters

    params = validate(QgBalanceParameters, {"saber block name": "QG balance"})
    return QgBalance(params, BlockContext(geometry, outer, DATE))


def test_balance_left_inverse_is_the_pv_inversion(geometry):
    """U^-1 U psi = psi through q (the wall rows from x); without x the walls are zero (increments)."""
    from pyoops.fields.fieldset import FieldSet

    psi = generator(4, "balance").standard_normal((3,) + geometry.shape)
    for outer in (["x", "q", "u", "v"], ["x", "u", "v"]):
        block = _balance(geometry, outer)
        back = block.left_inverse_multiply(block.multiply(FieldSet({"x": psi})))["x"]
        np.testing.assert_allclose(back, psi, rtol=0, atol=1e-9)
    inner = psi.copy()
    inner[..., [0, -1], :] = 0.0
    block = _balance(geometry, ["q", "u"])
    back = block.left_inverse_multiply(block.multiply(FieldSet({"x": inner})))["x"]
    np.testing.assert_allclose(back, inner, rtol=0, atol=1e-9)


def test_balance_rejects_other_variables_and_geometries(geometry):
    with pytest.raises(ConfigError, match="active variables"):
        _balance(geometry, ["x", "h"])
    with pytest.raises(ConfigError, match="QG geometry"):
        _balance(StructuredGrid.channel_2d(10, 8, variables=["h", "q"], levels=[0, 1]), ["q"])


# ----------------------------------------------------------------------------------------------
# WindSpeed
# ----------------------------------------------------------------------------------------------
def _obs_space(geometry, variables=("wind_speed",)) -> ObsSpace:
    params = validate(ObsSpaceParameters, {
        "name": "speed", "simulated variables": list(variables),
        "generate": {"obs frequency": "PT3H", "obs density": 25, "obs error": 1.0, "locations": "random"}})
    return ObsSpace(params, TimeWindow("2009-12-31T21:00:00Z", "PT6H"), geometry, "obs space")


def test_wind_speed_tl_ad(geometry):
    obs = _obs_space(geometry)
    params = validate(WindSpeedParameters, {"name": "WindSpeed"})
    h, hl = WindSpeedObsOperator(params, obs), LinearWindSpeedObsOperator(params, obs)
    rng = generator(5, "wind")
    n = obs.nlocs
    g = GeoVaLs({"u": 20 * rng.standard_normal(n), "v": 20 * rng.standard_normal(n)})
    np.testing.assert_allclose(h.simulate_obs(g).values[0], np.hypot(g["u"], g["v"]))
    hl.set_trajectory(g)
    dg = GeoVaLs({"u": rng.standard_normal(n), "v": rng.standard_normal(n)})
    tl = hl.simulate_obs_tl(dg).values[0]
    for alpha in (1e-4, 1e-6):
        gp = GeoVaLs({k: g[k] + alpha * dg[k] for k in g})
        fd = (h.simulate_obs(gp).values[0] - h.simulate_obs(g).values[0]) / alpha
        assert np.linalg.norm(fd - tl) <= 1e-5 * np.linalg.norm(tl)
    dy = ObsVector(obs, rng.standard_normal((1, n)))
    ad = hl.simulate_obs_ad(dy)
    lhs = float(np.vdot(tl, dy.values[0]))
    rhs = float(np.vdot(dg["u"], ad["u"]) + np.vdot(dg["v"], ad["v"]))
    assert abs(lhs - rhs) <= 1e-13 * abs(lhs)


def test_wind_speed_at_rest_and_bad_configs(geometry):
    obs = _obs_space(geometry)
    params = validate(WindSpeedParameters, {"name": "WindSpeed", "wind components": ["u", "v"]})
    hl = LinearWindSpeedObsOperator(params, obs)
    zero = GeoVaLs({"u": np.zeros(obs.nlocs), "v": np.zeros(obs.nlocs)})
    hl.set_trajectory(zero)
    assert not hl.simulate_obs_tl(GeoVaLs({"u": np.ones(obs.nlocs), "v": np.ones(obs.nlocs)})).values.any()
    with pytest.raises(ConfigError, match="one variable"):
        WindSpeedObsOperator(params, _obs_space(geometry, ("u", "v")))
    with pytest.raises(ConfigError, match="wind components"):
        validate(WindSpeedParameters, {"name": "WindSpeed", "wind components": ["u"]}, "obs operator")
