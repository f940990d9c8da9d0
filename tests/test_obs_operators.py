"""Identity obs operator: nonlinear = linear, TL/AD dot-product test, QC-masked adjoint."""

import numpy as np
import pytest

from pyoops.config import validate
from pyoops.fields.fieldset import FieldSet
from pyoops.generic.grid import StructuredGrid
from pyoops.generic.obs_operators import IdentityObsOperator, IdentityParameters, LinearIdentityObsOperator
from pyoops.generic.obs_space import ObsSpace, ObsSpaceParameters, ObsVector
from pyoops.interface.observations import GeoVaLs
from pyoops.util import ConfigError, TimeWindow, Variables
from pyoops.util.random import generator

WINDOW = TimeWindow(begin="2010-01-01T21:00:00Z", length="PT6H")


def _obs_space(variables=("h", "u"), missing=()):
    grid = StructuredGrid.channel_2d(10, 8, lx=2.0, ly=1.0, variables=["h", "u", "v"], levels=[0, 1])
    params = validate(ObsSpaceParameters, {
        "name": "multi", "simulated variables": list(variables),
        "generate": {"obs frequency": "PT3H", "obs density": 10, "obs error": 1.0, "locations": "random"}})
    obs = ObsSpace(params, WINDOW, grid, "obs space")
    for i, v in enumerate(variables):
        values = np.ones(obs.nlocs)
        values[[m for m in missing if m % len(variables) == i]] = np.nan
        obs.put_db("ObsValue", v, values)
    return grid, obs


def _params(**kw):
    return validate(IdentityParameters, {"name": "Identity", **kw}, "obs operator")


def _geovals(variables, nlocs, seed, batch=()):
    rng = generator(seed, "geovals")
    return GeoVaLs({v: rng.standard_normal(batch + (nlocs,)) for v in variables})


def test_identity_copies_geovals():
    _, obs = _obs_space()
    H = IdentityObsOperator(_params(), obs)
    assert H.required_variables == Variables(["h", "u"])
    g = _geovals(["u", "h", "v"], obs.nlocs, 1)
    y = H.simulate_obs(g)
    assert y.values.shape == (2, obs.nlocs)
    np.testing.assert_array_equal(y["h"], g["h"])
    np.testing.assert_array_equal(y["u"], g["u"])


def test_identity_with_renamed_variables():
    _, obs = _obs_space()
    H = IdentityObsOperator(_params(variables=["v", "u"]), obs)
    assert list(H.required_variables) == ["v", "u"]
    g = _geovals(["u", "v"], obs.nlocs, 2)
    np.testing.assert_array_equal(H.simulate_obs(g)["h"], g["v"])
    with pytest.raises(ConfigError, match="obs operator.variables"):
        IdentityObsOperator(_params(variables=["v"]), obs)


def test_linear_equals_nonlinear_and_tl_is_linear():
    _, obs = _obs_space()
    H = IdentityObsOperator(_params(), obs)
    Hl = LinearIdentityObsOperator(_params(), obs)
    g = _geovals(["h", "u"], obs.nlocs, 3)
    Hl.set_trajectory(g)
    np.testing.assert_array_equal(Hl.simulate_obs_tl(g).values, H.simulate_obs(g).values)
    zero = g.zeros_like()
    assert not Hl.simulate_obs_tl(zero).values.any()
    g2 = _geovals(["h", "u"], obs.nlocs, 4)
    lhs = Hl.simulate_obs_tl(g.copy().axpy(2.0, g2)).values
    rhs = Hl.simulate_obs_tl(g).values + 2.0 * Hl.simulate_obs_tl(g2).values
    np.testing.assert_allclose(lhs, rhs, rtol=1e-15)


@pytest.mark.parametrize("missing", [(), (0, 3, 7, 12)])
@pytest.mark.parametrize("batch", [(), (3,)])
def test_adjoint_dot_product(missing, batch):
    """<H dg, dy> = <dg, Hᵀ dy> with the ObsVector inner product (which skips unused obs)."""
    _, obs = _obs_space(missing=missing)
    Hl = LinearIdentityObsOperator(_params(), obs)
    dg = _geovals(["h", "u"], obs.nlocs, 5, batch)
    Hl.set_trajectory(dg)
    hdg = Hl.simulate_obs_tl(dg)
    # dy correlated with H dg so that the inner products do not nearly cancel
    dy = ObsVector(obs, generator(6, "dy").standard_normal(batch + (2, obs.nlocs)) + hdg.values)
    assert hdg.values.shape == batch + (2, obs.nlocs)
    htdy = Hl.simulate_obs_ad(dy)
    assert isinstance(htdy, FieldSet) and list(htdy) == ["h", "u"]
    assert htdy["h"].shape == batch + (obs.nlocs,)
    lhs, rhs = hdg.dot_product_with(dy), dg.dot(htdy)
    # relative to the Cauchy-Schwarz scale (a random dot product may nearly cancel)
    scale = np.sqrt(hdg.dot_product_with(hdg) * dy.dot_product_with(dy))
    assert abs(lhs - rhs) <= 1e-14 * scale
    assert abs(lhs) > 1e-3 * scale  # not a trivially cancelling test
    assert obs.obs_values().nobs() == 2 * obs.nlocs - len(missing)


def test_adjoint_does_not_alias_the_obs_vector():
    _, obs = _obs_space()
    Hl = LinearIdentityObsOperator(_params(), obs)
    dy = ObsVector(obs, np.ones((2, obs.nlocs)))
    g = Hl.simulate_obs_ad(dy)
    g["h"][...] = 5.0
    assert (dy.values == 1.0).all()


def test_through_registry():
    from pyoops.registry import get_registry

    reg = get_registry()
    _, obs = _obs_space()
    maker = reg.obs_operator.maker_for({"name": "Identity"}, "obs operator")
    assert maker is IdentityObsOperator
    with pytest.raises(ConfigError, match="did you mean 'Identity'"):
        reg.obs_operator.maker_for({"name": "identity"}, "obs operator")
    with pytest.raises(ConfigError, match="obs operator.variabels"):
        reg.obs_operator.parameters({"name": "Identity", "variabels": ["x"]}, "obs operator")
