"""SABER chain mechanics and the simple generic blocks (ID, StdDev, duplicate variables, write fields)."""

from __future__ import annotations

import numpy as np
import pytest

from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import read_fields, write_fields
from pyoops.generic.grid import StructuredGrid
from pyoops.registry import get_registry
from pyoops.saber import ErrorCovariance
from pyoops.util import ConfigError, DateTime
from pyoops.util.random import generator

TIME = DateTime("2010-01-01T00:00:00Z")

GRIDS = {
    "1-D periodic": lambda: StructuredGrid.periodic_1d(16, variables=["a", "b"]),
    "2-D periodic": lambda: StructuredGrid.periodic_2d(8, 6, variables=["a", "b"]),
    "2-D channel, 2 levels": lambda: StructuredGrid.channel_2d(9, 5, levels=[0, 1], variables=["a", "b"]),
}


def dense(apply, geometry, variables):
    """Dense matrix of a linear map on FieldSets, by applying it to every unit vector (tests only)."""
    template = geometry.zeros(variables)
    n = template.to_vector().size
    columns = []
    for j in range(n):
        e = np.zeros(n)
        e[j] = 1.0
        columns.append(apply(template.from_vector(e)).to_vector())
    return np.array(columns).T


def stddev_chain(sigma_a=2.0, sigma_b=0.5, **tests):
    return {
        "covariance model": "SABER",
        "saber central block": {"saber block name": "ID", "adjoint test": True, "square-root test": True},
        "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": {"a": sigma_a, "b": sigma_b}},
                                "adjoint test": True, "inverse test": True, **tests}],
    }


@pytest.mark.parametrize("grid", GRIDS)
def test_stddev_chain_is_diagonal_sigma_squared(grid):
    geometry = GRIDS[grid]()
    cov = ErrorCovariance(stddev_chain(), geometry, ["a", "b"], TIME, get_registry())
    matrix = dense(cov.chain.multiply, geometry, ["a", "b"])
    n = matrix.shape[0] // 2
    expected = np.diag(np.r_[np.full(n, 4.0), np.full(n, 0.25)])
    np.testing.assert_array_equal(matrix, expected)


@pytest.mark.parametrize("grid", GRIDS)
def test_square_root_reproduces_b(grid):
    geometry = GRIDS[grid]()
    cov = ErrorCovariance(stddev_chain(), geometry, ["a", "b"], TIME, get_registry())
    rng = generator(5)
    x, y = geometry.zeros(["a", "b"]), geometry.zeros(["a", "b"])
    for fs in (x, y):
        for arr in fs.values():
            arr[...] = rng.standard_normal(arr.shape)
    lhs = cov.chain.multiply(x.copy()).dot(y)
    rhs = float(np.vdot(cov.chain.multiply_sqrt_ad(x.copy()), cov.chain.multiply_sqrt_ad(y.copy())))
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), abs(rhs))


def test_randomization_variance_converges_at_sqrt_2_over_k():
    """Sample variance of K draws: relative error has std sqrt(2/K); check the pooled mean at 5 sigma."""
    geometry = StructuredGrid.periodic_2d(16, 16, variables=["a", "b"])
    cov = ErrorCovariance(stddev_chain(), geometry, ["a", "b"], TIME, get_registry())
    for k in (50, 800):
        draws = cov.chain.randomize(generator(11, k), (k,))
        ratio = (draws["a"] ** 2).mean(axis=0) / 4.0
        # Each point's ratio has mean 1 and std sqrt(2/K); 256 independent points.
        assert abs(ratio.mean() - 1.0) < 5 * np.sqrt(2.0 / k) / np.sqrt(ratio.size)
        assert abs(ratio.std() / np.sqrt(2.0 / k) - 1.0) < 0.2


def test_batched_apply_equals_member_by_member():
    geometry = StructuredGrid.periodic_1d(16, variables=["a", "b"])
    cov = ErrorCovariance(stddev_chain(), geometry, ["a", "b"], TIME, get_registry())
    batch = cov.chain.randomize(generator(3), (4,))
    together = cov.chain.multiply(batch.copy())
    for m in range(4):
        alone = cov.chain.multiply(batch.map(lambda a, m=m: a[m].copy()))
        for v in ("a", "b"):
            np.testing.assert_array_equal(together[v][m], alone[v])


def test_active_variables_leave_passive_variables_to_the_chain():
    """StdDev active on 'a' only: 'b' passes through the outer block unchanged (B_bb = I)."""
    geometry = StructuredGrid.periodic_1d(8, variables=["a", "b"])
    cfg = {"saber central block": {"saber block name": "ID"},
           "saber outer blocks": [{"saber block name": "StdDev", "active variables": ["a"], "read": {"value": 3.0}}]}
    cov = ErrorCovariance(cfg, geometry, ["a", "b"], TIME, get_registry())
    matrix = dense(cov.chain.multiply, geometry, ["a", "b"])
    np.testing.assert_array_equal(np.diag(matrix), np.r_[np.full(8, 9.0), np.ones(8)])


def test_stddev_from_file_and_calibration_round_trip(tmp_path):
    geometry = StructuredGrid.periodic_1d(12, variables=["a"])
    rng = generator(4)
    sigma = 0.5 + rng.random(12)
    members = sigma * rng.standard_normal((400, 12)) + 7.0
    for k, m in enumerate(members, start=1):
        write_fields(tmp_path / f"mem.{k}.nc", geometry, FieldSet({"a": m}), TIME)
    cfg = {"ensemble": {"members from template": {"template": {"filename": str(tmp_path / "mem.%mem%.nc")},
                                                  "nmembers": 400}},
           "saber central block": {"saber block name": "ID"},
           "saber outer blocks": [{"saber block name": "StdDev",
                                   "calibration": {"output": str(tmp_path / "sigma.nc")}}]}
    cov = ErrorCovariance(cfg, geometry, ["a"], TIME, get_registry())
    calibrated, _ = read_fields(tmp_path / "sigma.nc", geometry, ["a"], TIME)
    np.testing.assert_allclose(calibrated["a"], members.std(axis=0, ddof=1), rtol=1e-12)
    # 400 members: relative sampling error of sigma ~ 1/sqrt(2*399) = 3.5 %; 5 sigma bound.
    assert np.all(np.abs(calibrated["a"] / sigma - 1) < 5 / np.sqrt(2 * 399))
    reread = ErrorCovariance({"saber central block": {"saber block name": "ID"},
                              "saber outer blocks": [{"saber block name": "StdDev",
                                                      "read": {"filename": str(tmp_path / "sigma.nc")}}]},
                             geometry, ["a"], TIME, get_registry())
    x = geometry.zeros(["a"])
    x["a"][:] = 1.0
    np.testing.assert_allclose(reread.chain.multiply(x.copy())["a"], cov.chain.multiply(x.copy())["a"], rtol=1e-14)


def test_duplicate_variables_adjoint_and_inverse():
    geometry = StructuredGrid.periodic_1d(10, variables=["u", "v", "psi"])
    cfg = {"saber central block": {"saber block name": "ID", "active variables": ["psi"]},
           "saber outer blocks": [{"saber block name": "duplicate variables", "adjoint test": True,
                                   "inverse test": True, "active variables": ["u", "v"],
                                   "variable groupings": [{"group variable name": "psi",
                                                           "group components": ["u", "v"]}]}]}
    cov = ErrorCovariance(cfg, geometry, ["u", "v"], TIME, get_registry())
    matrix = dense(cov.chain.multiply, geometry, ["u", "v"])
    # B = [[I, I], [I, I]]: u and v are the same random field.
    np.testing.assert_array_equal(matrix, np.kron(np.ones((2, 2)), np.eye(10)))


def test_write_fields_block_writes_what_passes(tmp_path):
    geometry = StructuredGrid.periodic_1d(6, variables=["a"])
    cfg = {"saber central block": {"saber block name": "ID"},
           "saber outer blocks": [{"saber block name": "write fields",
                                   "output file": str(tmp_path / "pass.%count%.nc")}]}
    cov = ErrorCovariance(cfg, geometry, ["a"], TIME, get_registry())
    x = geometry.zeros(["a"])
    x["a"][:] = np.arange(6.0)
    cov.chain.multiply(x.copy())
    written, _ = read_fields(tmp_path / "pass.1.nc", geometry, ["a"], TIME)
    np.testing.assert_array_equal(written["a"], np.arange(6.0))


def test_failing_adjoint_test_is_reported_with_the_block_path():
    """A block whose adjoint is wrong must fail the construction-time adjoint test."""
    from typing import Literal

    from pyoops.registry import Registry
    from pyoops.saber.blocks import SaberBlockParameters, SaberOuterBlock

    class BadParams(SaberBlockParameters):
        saber_block_name: Literal["bad"]

    class Bad(SaberOuterBlock):
        Parameters = BadParams

        def multiply(self, fields):
            return fields.map(lambda a: 2.0 * a)

        def multiply_ad(self, fields):
            return fields.map(lambda a: 2.0 * a + 1e-6 * np.roll(a, 1, axis=-1))

    registry = Registry()
    registry.load_entry_points()
    registry.saber_block.register("bad", Bad, plugin="test")
    geometry = StructuredGrid.periodic_1d(8, variables=["a"])
    cfg = {"saber central block": {"saber block name": "ID"},
           "saber outer blocks": [{"saber block name": "bad", "adjoint test": True}]}
    with pytest.raises(ConfigError, match=r"saber outer blocks\[0\].*adjoint test failed"):
        ErrorCovariance(cfg, geometry, ["a"], TIME, registry)
    cfg["saber outer blocks"][0]["adjoint tolerance"] = 1e-3
    ErrorCovariance(cfg, geometry, ["a"], TIME, registry)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["saber outer blocks"][0].update({"calibration": {}}), r"saber outer blocks\[0\]: give either 'read' or 'calibration'"),
        (lambda c: c["saber outer blocks"][0].update({"saber block name": "StdDevv"}), r"saber block name: saber block 'StdDevv' does not exist.*did you mean 'StdDev'"),
        (lambda c: c["saber central block"].update({"active variables": ["psi"]}), r"saber central block.active variables: active variables psi do not reach"),
        (lambda c: c.update({"saber central block": {"saber block name": "StdDev", "read": {"value": 1.0}}}), r"saber central block.saber block name: 'StdDev' is an outer block"),
        (lambda c: c["saber outer blocks"][0].pop("read"), r"saber outer blocks\[0\]: StdDev needs 'read'"),
        (lambda c: c["saber outer blocks"][0].update({"read": {"value": -1.0}}), r"saber outer blocks\[0\].read: standard deviations of 'a' must be positive"),
        (lambda c: c["saber outer blocks"][0].update({"adjoint tolernce": 1e-3}), r"unknown key 'adjoint tolernce'; did you mean 'adjoint tolerance'"),
    ],
)
def test_bad_configs_fail_with_one_line_naming_the_key(mutate, message):
    geometry = StructuredGrid.periodic_1d(8, variables=["a", "b"])
    cfg = stddev_chain()
    mutate(cfg)
    with pytest.raises(ConfigError, match=message) as info:
        ErrorCovariance(cfg, geometry, ["a", "b"], TIME, get_registry())
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("background error")
