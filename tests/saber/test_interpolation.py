"""The ``interpolation`` outer block: adjoint, left inverse, batches, chains, ensembles, bad configurations."""

from __future__ import annotations

import numpy as np
import pytest

from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import write_fields
from pyoops.generic.grid import StructuredGrid
from pyoops.saber import BlockContext, ErrorCovariance
from pyoops.saber.chain import SaberBlockChain
from pyoops.util import ConfigError, DateTime
from pyoops.util.random import generator
from pyoops.util.variables import Variables

TIME = DateTime("2010-01-01T00:00:00Z")

# (outer grid YAML, inner grid YAML) of the test geometry plugin
CASES = {
    "1-D periodic 40 <- 20": ({"kind": "periodic 1d", "nx": 40}, {"kind": "periodic 1d", "nx": 20}),
    "1-D periodic 40 <- 13": ({"kind": "periodic 1d", "nx": 40}, {"kind": "periodic 1d", "nx": 13}),
    "2-D periodic 16x12 <- 8x5": ({"kind": "periodic 2d", "nx": 16, "ny": 12},
                                  {"kind": "periodic 2d", "nx": 8, "ny": 5}),
    "2-D channel 24x10 <- 9x4 (non-square)": ({"kind": "channel 2d", "nx": 24, "ny": 10, "ly": 0.5},
                                             {"kind": "channel 2d", "nx": 9, "ny": 4, "ly": 0.5}),
}


def _random(geometry, variables, rng, batch=()):
    fs = geometry.zeros(Variables(variables), batch)
    for arr in fs.values():
        arr[...] = rng.standard_normal(arr.shape)
    return fs


def _block(registry, testgrid, outer_cfg, inner_cfg, **keys):
    make, plugin = testgrid
    outer = make(**outer_cfg)
    cfg = {"saber central block": {"saber block name": "ID"},
           "saber outer blocks": [{"saber block name": "interpolation", "inner geometry": inner_cfg, **keys}]}
    cov = ErrorCovariance(cfg, outer, ["a", "b"], TIME, registry, plugin)
    return cov, cov.chain.outer[0][0]


@pytest.mark.parametrize("case", CASES)
def test_adjoint_and_left_inverse(case, registry, testgrid):
    outer_cfg, inner_cfg = CASES[case]
    _, block = _block(registry, testgrid, outer_cfg, inner_cfg,
                      **{"adjoint test": True, "inverse test": True})  # the construction-time tests pass
    assert block.has_inverse
    rng = generator(1, case)
    worst_adj, worst_inv = 0.0, 0.0
    for _ in range(5):
        x = _random(block.inner_geometry, ["a", "b"], rng)
        y = _random(block.geometry, ["a", "b"], rng)
        a, b = block.multiply(x.copy()).dot(y), x.dot(block.multiply_ad(y.copy()))
        worst_adj = max(worst_adj, abs(a - b) / max(abs(a), abs(b)))
        back = block.left_inverse_multiply(block.multiply(x.copy()))
        worst_inv = max(worst_inv, (back - x).norm() / x.norm())
    assert worst_adj <= 1e-12
    assert worst_inv <= 1e-12


@pytest.mark.parametrize("case", CASES)
def test_left_inverse_is_least_squares_and_batched(case, registry, testgrid, dense):
    outer_cfg, inner_cfg = CASES[case]
    _, block = _block(registry, testgrid, outer_cfg, inner_cfg)
    w = dense(block.multiply, block.inner_geometry, ["a"])
    assert w.shape == (np.prod(block.geometry.shape), np.prod(block.inner_geometry.shape))
    # Rows of W are interpolation weights: non-negative, summing to one.
    assert (w >= 0).all() and np.allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    rng = generator(2, case)
    y = _random(block.geometry, ["a", "b"], rng, batch=(2, 3))
    got = block.left_inverse_multiply(y.copy())
    for v in ("a", "b"):
        flat = y[v].reshape((6, -1))
        expected = np.linalg.lstsq(w, flat.T, rcond=None)[0].T.reshape(got[v].shape)
        np.testing.assert_allclose(got[v], expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    # Batched forward and adjoint agree with member-by-member application.
    x = _random(block.inner_geometry, ["a", "b"], rng, batch=(2, 3))
    fx, ay = block.multiply(x.copy()), block.multiply_ad(y.copy())
    for i in range(2):
        for j in range(3):
            one = FieldSet({v: x[v][i, j] for v in x})
            np.testing.assert_array_equal(fx["a"][i, j], block.multiply(one)["a"])
            one = FieldSet({v: y[v][i, j] for v in y})
            np.testing.assert_allclose(ay["b"][i, j], block.multiply_ad(one)["b"], rtol=1e-15, atol=1e-15)


def test_interpolation_values_1d(registry, testgrid):
    """40 <- 20 on the unit ring: even outer points copy the inner values, odd ones average neighbours."""
    _, block = _block(registry, testgrid, *CASES["1-D periodic 40 <- 20"])
    x = block.inner_geometry.zeros(Variables(["a"]))
    x["a"][...] = np.arange(20.0) ** 2
    y = block.multiply(x)["a"]
    np.testing.assert_array_equal(y[0::2], x["a"])
    np.testing.assert_allclose(y[1::2], 0.5 * (x["a"] + np.roll(x["a"], -1)), rtol=1e-15)


def test_chain_b_is_w_wt(registry, testgrid, dense):
    cov, block = _block(registry, testgrid, *CASES["2-D channel 24x10 <- 9x4 (non-square)"])
    b = dense(cov.chain.multiply, cov.geometry, ["a", "b"])
    w = dense(block.multiply, block.inner_geometry, ["a"])
    n = w.shape[0]
    np.testing.assert_allclose(b[:n, :n], w @ w.T, rtol=0, atol=1e-14)
    np.testing.assert_allclose(b[n:, n:], w @ w.T, rtol=0, atol=1e-14)
    assert np.abs(b[:n, n:]).max() == 0.0
    # Square root through the chain: B = B^1/2 B^T/2.
    assert cov.chain.has_sqrt and cov.chain.ctl_vec_size == 2 * 36
    s = np.stack([cov.chain.multiply_sqrt(e).to_vector() for e in np.eye(cov.chain.ctl_vec_size)], axis=1)
    np.testing.assert_allclose(s @ s.T, b, rtol=0, atol=1e-14)


def test_lorenz96_inner_geometry_from_model_plugin(registry):
    pytest.importorskip("pyoops_lorenz96")
    plugin = registry.model_plugin("lorenz96")
    outer = plugin.geometry({"resol": 40})
    cfg = {"saber central block": {"saber block name": "ID"},
           "saber outer blocks": [{"saber block name": "interpolation", "inner geometry": {"resol": 20},
                                   "adjoint test": True, "inverse test": True}]}
    cov = ErrorCovariance(cfg, outer, ["x"], TIME, registry, plugin)
    block = cov.chain.outer[0][0]
    assert type(block.inner_geometry) is plugin.geometry and block.inner_geometry.shape == (20,)


def test_geometry_object_without_model_plugin(registry):
    outer = StructuredGrid.periodic_1d(40, variables=["a"])
    inner = StructuredGrid.periodic_1d(20, variables=["a"])
    cfg = {"saber central block": {"saber block name": "ID"},
           "saber outer blocks": [{"saber block name": "interpolation", "inner geometry": inner,
                                   "adjoint test": True, "inverse test": True}]}
    cov = ErrorCovariance(cfg, outer, ["a"], TIME, registry)
    assert cov.chain.outer[0][0].inner_geometry is inner
    # ... or a geometry factory in the context extras
    ctx = BlockContext(outer, Variables(["a"]), TIME, registry,
                       extras={"geometry factory": lambda c, p: StructuredGrid.periodic_1d(c["n"], variables=["a"])})
    cfg["saber outer blocks"][0]["inner geometry"] = {"n": 10}
    chain = SaberBlockChain(cfg, ctx)
    assert chain.central_geometry.shape == (10,)


def test_ensemble_is_brought_inwards_by_least_squares(registry, testgrid, dense, tmp_path):
    """An Ensemble central block on the coarse grid sees U^-1 of the members read on the fine grid."""
    make, plugin = testgrid
    outer_cfg, inner_cfg = CASES["2-D periodic 16x12 <- 8x5"]
    outer = make(**outer_cfg)
    rng = generator(3)
    members = _random(outer, ["a", "b"], rng, batch=(6,))
    write_fields(tmp_path / "ens.nc", outer, members, TIME, kind="ensemble")
    cfg = {"ensemble": {"filename": str(tmp_path / "ens.nc")},
           "saber central block": {"saber block name": "Ensemble"},
           "saber outer blocks": [{"saber block name": "interpolation", "inner geometry": inner_cfg}]}
    cov = ErrorCovariance(cfg, outer, ["a", "b"], TIME, registry, plugin)
    block = cov.chain.outer[0][0]
    inner = block.left_inverse_multiply(members.copy())
    x = np.concatenate([inner[v].reshape(6, -1) for v in ("a", "b")], axis=1)
    w = dense(block.multiply, block.inner_geometry, ["a"])
    u = np.kron(np.eye(2), w)
    expected = u @ np.cov(x, rowvar=False) @ u.T
    got = dense(cov.chain.multiply, outer, ["a", "b"])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13 * np.abs(expected).max())


def test_finer_inner_grid_has_no_left_inverse(registry, testgrid, tmp_path):
    make, plugin = testgrid
    _, block = _block(registry, testgrid, {"kind": "periodic 1d", "nx": 10}, {"kind": "periodic 1d", "nx": 30},
                      **{"adjoint test": True})
    assert not block.has_inverse
    with pytest.raises(ConfigError, match="no left inverse"):
        block.left_inverse_multiply(block.geometry.zeros(Variables(["a"])))
    # An ensemble cannot pass it: the Ensemble block says where it was lost.
    outer = make(kind="periodic 1d", nx=10)
    write_fields(tmp_path / "ens.nc", outer, _random(outer, ["a", "b"], generator(4), batch=(3,)), TIME,
                 kind="ensemble")
    cfg = {"ensemble": {"filename": str(tmp_path / "ens.nc")},
           "saber central block": {"saber block name": "Ensemble"},
           "saber outer blocks": [{"saber block name": "interpolation", "inner geometry": {"nx": 30}}]}
    with pytest.raises(ConfigError) as err:
        ErrorCovariance(cfg, outer, ["a", "b"], TIME, registry, plugin)
    msg = str(err.value)
    assert "\n" not in msg and "saber outer blocks[0]" in msg and "no left inverse" in msg


BAD_INNER = {
    "1-D inner for a 2-D outer grid": ({"kind": "periodic 2d", "nx": 8, "ny": 8}, {"kind": "periodic 1d", "nx": 4},
                                       "same axes"),
    "channel inner for a periodic outer": ({"kind": "periodic 2d", "nx": 8, "ny": 8},
                                           {"kind": "channel 2d", "nx": 4, "ny": 4}, "periodic"),
    "other domain length": ({"kind": "periodic 1d", "nx": 8}, {"kind": "periodic 1d", "nx": 4, "lx": 2.0},
                            "domain"),
    "bad geometry key": ({"kind": "periodic 1d", "nx": 8}, {"kind": "periodic 1d", "nn": 4}, "unknown key 'nn'"),
}


@pytest.mark.parametrize("case", BAD_INNER)
def test_inner_geometry_mismatch_is_one_clear_line(case, registry, testgrid):
    outer_cfg, inner_cfg, text = BAD_INNER[case]
    with pytest.raises(ConfigError) as err:
        _block(registry, testgrid, outer_cfg, inner_cfg)
    msg = str(err.value)
    assert "\n" not in msg
    assert "background error.saber outer blocks[0].inner geometry" in msg
    assert text in msg


def test_inner_geometry_without_model_plugin_is_a_clear_error(registry):
    outer = StructuredGrid.periodic_1d(8, variables=["a"])
    cfg = {"saber central block": {"saber block name": "ID"},
           "saber outer blocks": [{"saber block name": "interpolation", "inner geometry": {"resol": 4}}]}
    with pytest.raises(ConfigError, match=r"saber outer blocks\[0\]\.inner geometry: .*model plugin"):
        ErrorCovariance(cfg, outer, ["a"], TIME, registry)
    cfg["saber outer blocks"][0].pop("inner geometry")
    with pytest.raises(ConfigError, match=r"saber outer blocks\[0\]\.inner geometry: required key is missing"):
        ErrorCovariance(cfg, outer, ["a"], TIME, registry)
