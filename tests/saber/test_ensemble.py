"""The ``Ensemble`` central block: sample covariance, localization, inflation, square root,
randomization, bad configurations, and the sampling-optimal localization-length calibration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import yaml

from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import read_fields, write_fields
from pyoops.generic.grid import StructuredGrid
from pyoops.saber import BlockContext, ErrorCovariance
from pyoops.saber.chain import SaberBlockChain
from pyoops.saber.generic.ensemble import (
    calibrate_localization_length,
    fit_localization_function,
    gaspari_cohn,
    homogeneous_correlation,
    optimal_localization,
    read_localization_length,
)
from pyoops.util import ConfigError, DateTime
from pyoops.util.errors import PyoopsError
from pyoops.util.random import generator
from pyoops.util.variables import Variables

TIME = DateTime("2010-01-01T00:00:00Z")
VARS = ["a", "b"]


def _members(geometry, nmem, seed, variables=VARS, scale=None):
    rng = generator(seed, "members")
    out = {}
    for i, v in enumerate(variables):
        base = rng.standard_normal((nmem,) + geometry.shape)
        # correlated members (smooth along the last axis) with different amplitudes per variable
        out[v] = (base + 0.7 * np.roll(base, 1, axis=-1)) * (scale or (1.0 + i)) + 3.0
    return FieldSet(out, copy=False)


def _flat(fields, variables=VARS):
    n = next(iter(fields.values())).shape[0]
    return np.concatenate([fields[v].reshape(n, -1) for v in variables], axis=1)


def _write_template(tmp_path, geometry, members):
    n = next(iter(members.values())).shape[0]
    for k in range(n):
        write_fields(tmp_path / f"ens.{k + 1:03d}.nc", geometry, FieldSet({v: a[k] for v, a in members.items()}), TIME)
    return {"members from template": {"template": {"filename": str(tmp_path / "ens.%mem%.nc")},
                                      "pattern": "%mem%", "nmembers": n, "zero padding": 3}}


def _ensemble_cov(registry, geometry, source, central=None, key="ensemble", outer=None, variables=VARS):
    cfg = {key: source, "saber central block": {"saber block name": "Ensemble", **(central or {})}}
    if outer:
        cfg["saber outer blocks"] = outer
    return ErrorCovariance(cfg, geometry, variables, TIME, registry)


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


GRIDS = {
    "1-D periodic 12": lambda: StructuredGrid.periodic_1d(12, variables=VARS),
    "2-D periodic 4x3": lambda: StructuredGrid.periodic_2d(4, 3, variables=VARS),
    "2-D channel 5x3 (non-square)": lambda: StructuredGrid.channel_2d(5, 3, variables=VARS),
}


# Sample covariance -------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", GRIDS)
def test_no_localization_equals_numpy_sample_covariance_full_rank(grid, registry, dense, tmp_path):
    """N - 1 >= n: B_e is the (full-rank) sample covariance, to round-off."""
    geometry = GRIDS[grid]()
    n = 2 * int(np.prod(geometry.shape))
    members = _members(geometry, n + 5, 1)
    cov = _ensemble_cov(registry, geometry, _write_template(tmp_path, geometry, members),
                        {"adjoint test": True, "square-root test": True})
    b = dense(cov.chain.multiply, geometry, VARS)
    expected = np.cov(_flat(members), rowvar=False)
    assert np.linalg.matrix_rank(expected) == n
    assert _rel(b, expected) < 1e-13


@pytest.mark.parametrize("key", ["ensemble", "ensemble pert"])
def test_rank_deficient_sample_covariance_from_one_file(key, registry, dense, tmp_path):
    """N < n, members or perturbations in one file with a member dimension."""
    geometry = StructuredGrid.channel_2d(6, 4, variables=VARS)
    members = _members(geometry, 7, 2)
    if key == "ensemble pert":
        members = members.map(lambda a: a - a.mean(axis=0))
    write_fields(tmp_path / "ens.nc", geometry, members, TIME, kind="ensemble")
    cov = _ensemble_cov(registry, geometry, {"filename": str(tmp_path / "ens.nc")}, key=key)
    b = dense(cov.chain.multiply, geometry, VARS)
    expected = np.cov(_flat(members), rowvar=False)
    assert _rel(b, expected) < 1e-13
    assert cov.chain.central.nmembers == 7 and cov.chain.ctl_vec_size == 7


def test_ensemble_pert_is_not_recentred(registry, dense, tmp_path):
    """``ensemble pert`` members are used as given: B = sum_k p_k p_k^T / (N - 1)."""
    geometry = StructuredGrid.periodic_1d(8, variables=["a"])
    pert = FieldSet({"a": generator(3).standard_normal((5, 8)) + 1.0})
    write_fields(tmp_path / "pert.nc", geometry, pert, TIME, kind="ensemble")
    cov = _ensemble_cov(registry, geometry, {"filename": str(tmp_path / "pert.nc")}, key="ensemble pert",
                        variables=["a"])
    b = dense(cov.chain.multiply, geometry, ["a"])
    assert _rel(b, pert["a"].T @ pert["a"] / 4) < 1e-14


def test_inflation_value_and_field(registry, dense, tmp_path):
    """Both multiply the perturbations: B = alpha^2 diag(f) P diag(f)."""
    geometry = StructuredGrid.periodic_2d(4, 3, variables=VARS)
    members = _members(geometry, 6, 4)
    write_fields(tmp_path / "ens.nc", geometry, members, TIME, kind="ensemble")
    f = FieldSet({v: 0.5 + generator(5, v).random(geometry.shape) for v in VARS})
    write_fields(tmp_path / "infl.nc", geometry, f, TIME, kind="inflation")
    cov = _ensemble_cov(registry, geometry, {"filename": str(tmp_path / "ens.nc")},
                        {"inflation value": 1.3, "inflation field": {"filename": str(tmp_path / "infl.nc")}})
    b = dense(cov.chain.multiply, geometry, VARS)
    fvec = np.concatenate([f[v].ravel() for v in VARS])
    expected = 1.3**2 * fvec[:, None] * np.cov(_flat(members), rowvar=False) * fvec[None, :]
    assert _rel(b, expected) < 1e-13


# Localization ------------------------------------------------------------------------------------------
LOC = {"saber central block": {"saber block name": "test gaussian correlation", "length scale": 0.15}}


def _loc_matrix(cov, nvars=2):
    """The dense localization of the test block (its eigenvalues clipped at zero: exactly S S^T)."""
    return np.kron(np.eye(nvars), cov.chain.central.localization.central.matrix)


@pytest.mark.parametrize("grid", GRIDS)
def test_localized_covariance_is_schur_product(grid, registry, dense, tmp_path):
    geometry = GRIDS[grid]()
    members = _members(geometry, 5, 6)
    write_fields(tmp_path / "ens.nc", geometry, members, TIME, kind="ensemble")
    cov = _ensemble_cov(registry, geometry, {"filename": str(tmp_path / "ens.nc")},
                        {"localization": LOC, "adjoint test": True, "square-root test": True})
    b = dense(cov.chain.multiply, geometry, VARS)
    expected = np.cov(_flat(members), rowvar=False) * _loc_matrix(cov)
    assert _rel(b, expected) < 1e-12
    # Localization with its own outer block: L = S C S.
    loc = dict(LOC, **{"saber outer blocks": [{"saber block name": "StdDev", "read": {"value": {"a": 0.5, "b": 2.0}}}]})
    cov = _ensemble_cov(registry, geometry, {"filename": str(tmp_path / "ens.nc")}, {"localization": loc})
    s = np.repeat([0.5, 2.0], int(np.prod(geometry.shape)))
    expected2 = np.cov(_flat(members), rowvar=False) * (s[:, None] * _loc_matrix(cov) * s[None, :])
    assert _rel(dense(cov.chain.multiply, geometry, VARS), expected2) < 1e-12
    assert set(cov.chain.nested()) == {"localization"}


def test_ensemble_behind_outer_blocks_and_batches(registry, dense, tmp_path):
    """StdDev outside the Ensemble block: members are divided by sigma on the way in, B = S (P/S^2) S = P."""
    geometry = StructuredGrid.periodic_1d(10, variables=VARS)
    members = _members(geometry, 4, 7)
    write_fields(tmp_path / "ens.nc", geometry, members, TIME, kind="ensemble")
    cov = _ensemble_cov(registry, geometry, {"filename": str(tmp_path / "ens.nc")}, {"localization": LOC},
                        outer=[{"saber block name": "StdDev", "read": {"value": 3.0}}])
    b = dense(cov.chain.multiply, geometry, VARS)
    assert _rel(b, np.cov(_flat(members), rowvar=False) * _loc_matrix(cov)) < 1e-12
    x = FieldSet({v: generator(8, v).standard_normal((2, 3, 10)) for v in VARS})
    batched = cov.chain.multiply(x.copy())
    for i, j in itertools.product(range(2), range(3)):
        one = cov.chain.multiply(FieldSet({v: x[v][i, j] for v in VARS}))
        for v in VARS:
            np.testing.assert_allclose(batched[v][i, j], one[v], rtol=1e-13, atol=1e-13)


# Square root and randomization ----------------------------------------------------------------------------
@pytest.mark.parametrize("localized", [False, True])
def test_square_root(localized, registry, dense, tmp_path):
    geometry = StructuredGrid.channel_2d(5, 3, variables=VARS)
    members = _members(geometry, 6, 9)
    write_fields(tmp_path / "ens.nc", geometry, members, TIME, kind="ensemble")
    central = {"localization": LOC} if localized else {}
    cov = _ensemble_cov(registry, geometry, {"filename": str(tmp_path / "ens.nc")},
                        dict(central, **{"square-root test": True}))
    chain = cov.chain
    n = 2 * 15
    assert chain.has_sqrt and chain.ctl_vec_size == (6 * n if localized else 6)
    s = chain.multiply_sqrt(np.eye(chain.ctl_vec_size))  # batched: column j = B^1/2 e_j
    smat = np.concatenate([s[v].reshape(chain.ctl_vec_size, -1) for v in VARS], axis=1).T
    b = dense(chain.multiply, geometry, VARS)
    assert _rel(smat @ smat.T, b) < 1e-12
    # adjoint of the square root, batched
    st = dense(chain.multiply_sqrt_ad, geometry, VARS)  # rows: ctl entries of B^T/2 e_j
    np.testing.assert_allclose(st, smat.T, rtol=0, atol=1e-13 * np.abs(smat).max())


def test_members_per_batch_gives_the_same_operator(registry, dense, tmp_path):
    """Localizing the member products in chunks (to bound memory) changes only the summation order."""
    geometry = StructuredGrid.periodic_2d(4, 3, variables=VARS)
    write_fields(tmp_path / "ens.nc", geometry, _members(geometry, 7, 18), TIME, kind="ensemble")
    src = {"filename": str(tmp_path / "ens.nc")}
    one = _ensemble_cov(registry, geometry, src, {"localization": LOC}).chain
    chunked = _ensemble_cov(registry, geometry, src, {"localization": LOC, "members per batch": 3}).chain
    assert _rel(dense(chunked.multiply, geometry, VARS), dense(one.multiply, geometry, VARS)) < 1e-14
    assert _rel(dense(chunked.multiply_sqrt_ad, geometry, VARS), dense(one.multiply_sqrt_ad, geometry, VARS)) < 1e-14
    v = generator(19).standard_normal((2, one.ctl_vec_size))
    assert _rel(_flat(chunked.multiply_sqrt(v)), _flat(one.multiply_sqrt(v))) < 1e-14


def test_square_root_absent_when_localization_has_none(registry, tmp_path):
    geometry = StructuredGrid.periodic_1d(8, variables=VARS)
    write_fields(tmp_path / "ens.nc", geometry, _members(geometry, 4, 10), TIME, kind="ensemble")
    loc = {"saber central block": {"saber block name": "test gaussian correlation", "length scale": 0.2,
                                   "no sqrt": True}}
    cov = _ensemble_cov(registry, geometry, {"filename": str(tmp_path / "ens.nc")}, {"localization": loc})
    assert not cov.chain.has_sqrt
    draws = cov.chain.randomize(generator(1), (3,))  # randomization does not need the square root
    assert draws["a"].shape == (3, 8)
    with pytest.raises(ConfigError, match="square root"):
        _ensemble_cov(registry, geometry, {"filename": str(tmp_path / "ens.nc")},
                      {"localization": loc, "square-root test": True})


@pytest.mark.parametrize("localized", [False, True])
def test_randomization_statistics(localized, registry, dense, tmp_path):
    """K draws: per-point sample variance / diag(B) - 1 has std sqrt(2/K) (Gaussian draws).

    With n = 32 points and K = 20000, every |z| = |ratio - 1| / sqrt(2/K) < 5 (failure probability
    < 2e-5 for independent points); the pooled mean ratio is within 5 sigma / sqrt(n) of 1, and the
    sample covariance matrix is within 10 sqrt(2/K) of B in the max norm relative to max|B|.
    """
    geometry = StructuredGrid.periodic_1d(16, variables=VARS)
    write_fields(tmp_path / "ens.nc", geometry, _members(geometry, 5, 11), TIME, kind="ensemble")
    cov = _ensemble_cov(registry, geometry, {"filename": str(tmp_path / "ens.nc")},
                        {"localization": LOC} if localized else {})
    k = 20000
    draws = cov.randomize(generator(12, str(localized)), k).fields
    x = _flat(draws)
    b = dense(cov.chain.multiply, geometry, VARS)
    ratio = (x**2).mean(axis=0) / np.diag(b)
    z = (ratio - 1.0) / np.sqrt(2.0 / k)
    assert np.abs(z).max() < 5.0
    assert abs(ratio.mean() - 1.0) < 5 * np.sqrt(2.0 / k) / np.sqrt(ratio.size) * 3  # points are correlated
    sample = x.T @ x / k
    assert np.abs(sample - b).max() < 10 * np.sqrt(2.0 / k) * np.abs(b).max()


# Bad configurations --------------------------------------------------------------------------------------
def _one_line(err, *texts):
    msg = str(err.value)
    assert "\n" not in msg, msg
    for t in texts:
        assert t in msg, msg


def test_bad_configs(registry, tmp_path):
    geometry = StructuredGrid.periodic_1d(8, variables=VARS)
    members = _members(geometry, 4, 13)
    write_fields(tmp_path / "ens.nc", geometry, members, TIME, kind="ensemble")
    src = {"filename": str(tmp_path / "ens.nc")}
    cases = [
        # (central block keys, ensemble source, expected texts)
        ({"read": {"x": 1}, "calibration": {"localization length": {}}}, src,
         ["saber central block", "'read' or 'calibration', not both"]),
        ({"localization": {"saber central block": {"saber block name": "Gaussian thing"}}}, src,
         ["saber central block.localization.saber central block.saber block name",
          "'Gaussian thing' does not exist"]),
        ({"inflation value": 0.0}, src, ["saber central block.inflation value"]),
        ({"inflation field": {"filename": str(tmp_path / "missing.nc")}}, src, ["missing.nc", "file not found"]),
        ({"read": {"filename": "x"}}, src, ["saber central block", "nothing to read"]),
        ({"calibration": {"localization lenght": {}}}, src,
         ["saber central block.calibration.localization lenght", "did you mean 'localization length'"]),
        ({}, None, ["saber central block", "needs an ensemble"]),
    ]
    for central, source, texts in cases:
        cfg = {"saber central block": {"saber block name": "Ensemble", **central}}
        if source is not None:
            cfg["ensemble"] = source
        with pytest.raises(PyoopsError) as err:  # ConfigError, or InputFileError for files
            ErrorCovariance(cfg, geometry, VARS, TIME, registry)
        _one_line(err, *texts)


def test_ensemble_of_one_member_and_missing_variable(registry, tmp_path):
    geometry = StructuredGrid.periodic_1d(8, variables=VARS)
    members = _members(geometry, 1, 14)
    source = _write_template(tmp_path, geometry, members)
    with pytest.raises(ConfigError) as err:
        _ensemble_cov(registry, geometry, source)
    _one_line(err, "background error.ensemble", "at least 2 members, got 1")
    # one member handed over programmatically (no reader involved)
    ctx = BlockContext(geometry, Variables(VARS), TIME, registry, ensemble=members, ensemble_is_perturbations=True)
    with pytest.raises(ConfigError) as err:
        SaberBlockChain({"saber central block": {"saber block name": "Ensemble"}}, ctx)
    _one_line(err, "saber central block", "at least 2 members, got 1")
    # a variable the members do not have
    members2 = _members(geometry, 3, 15, variables=["a"])
    ctx = BlockContext(geometry, Variables(VARS), TIME, registry, ensemble=members2)
    with pytest.raises(ConfigError) as err:
        SaberBlockChain({"saber central block": {"saber block name": "Ensemble"}}, ctx)
    _one_line(err, "saber central block", "no variable(s) ['b']")


# 4-D ensembles ------------------------------------------------------------------------------------------------
DATES = ["2010-01-01T21:00:00Z", "2010-01-02T00:00:00Z", "2010-01-02T03:00:00Z"]


def _write_4d(tmp_path, geometry, nmem, seed):
    """Members at 3 times, written one file per member and time; returns (members (N, T, *grid), source)."""
    members = FieldSet({v: a.reshape((nmem, 3) + geometry.shape)
                        for v, a in _members(geometry, 3 * nmem, seed).items()}, copy=False)
    for k in range(nmem):
        for t, date in enumerate(DATES):
            write_fields(tmp_path / f"ens.{k + 1}.{t}.nc", geometry,
                         FieldSet({v: a[k, t] for v, a in members.items()}), DateTime(date))
    template = {"states": [{"date": d, "filename": str(tmp_path / f"ens.%mem%.{t}.nc")} for t, d in enumerate(DATES)]}
    return members, {"members from template": {"template": template, "pattern": "%mem%", "nmembers": nmem}}


def _flat4d(members):
    n = next(iter(members.values())).shape[0]
    return np.concatenate([members[v].reshape(n, -1) for v in VARS], axis=1)  # variable, time, grid


@pytest.mark.parametrize("localized", [False, True])
def test_4d_ensemble_covariance_and_square_root(localized, registry, dense, tmp_path):
    """(B x)_t = sum_k e_k^t o L(sum_s e_k^s o x_s): the sample covariance of the 4-D member vectors, with
    the time-independent localization L_ij in every (t, s) block."""
    geometry = StructuredGrid.channel_2d(4, 3, variables=VARS)
    members, source = _write_4d(tmp_path, geometry, 5, 30)
    cov = _ensemble_cov(registry, geometry, source, {"localization": LOC} if localized else {},
                        outer=[{"saber block name": "StdDev", "read": {"value": 2.0}}])
    chain = cov.chain
    assert chain.central.ntimes == 3 and chain.central.members["a"].shape == (5, 3, 3, 4)
    b = dense(chain.multiply_4d, geometry, VARS, times=3)
    expected = np.cov(_flat4d(members), rowvar=False)
    if localized:
        loc = chain.central.localization.central.matrix
        expected = expected * np.kron(np.eye(2), np.kron(np.ones((3, 3)), loc))
    assert _rel(b, expected) < 1e-12
    assert _rel(dense(chain.multiply, geometry, VARS, times=3), b) == 0.0
    s = chain.multiply_sqrt(np.eye(chain.ctl_vec_size))
    smat = np.concatenate([s[v].reshape(chain.ctl_vec_size, -1) for v in VARS], axis=1).T
    assert _rel(smat @ smat.T, b) < 1e-12
    assert _rel(dense(chain.multiply_sqrt_ad, geometry, VARS, times=3), smat.T) < 1e-12
    draws = chain.randomize(generator(31), (4,))
    assert draws["a"].shape == (4, 3, 3, 4)


def test_static_covariance_is_time_constant_in_4d(registry, dense):
    geometry = StructuredGrid.periodic_1d(6, variables=VARS)
    cov = ErrorCovariance({"saber central block": {"saber block name": "test gaussian correlation",
                                                   "length scale": 0.2}}, geometry, VARS, TIME, registry)
    b3 = dense(cov.chain.multiply, geometry, VARS)
    b4 = dense(cov.chain.multiply_4d, geometry, VARS, times=3)
    n = 6
    expected = np.zeros((36, 36))
    for i in range(2):
        for j in range(2):
            expected[i * 18:(i + 1) * 18, j * 18:(j + 1) * 18] = np.kron(np.ones((3, 3)), b3[i * n:(i + 1) * n,
                                                                                          j * n:(j + 1) * n])
    assert _rel(b4, expected) < 1e-14


def test_4d_ensemble_errors(registry, tmp_path):
    geometry = StructuredGrid.periodic_1d(8, variables=VARS)
    members, source = _write_4d(tmp_path, geometry, 3, 32)
    with pytest.raises(ConfigError) as err:
        _ensemble_cov(registry, geometry, source, {"adjoint test": True})
    _one_line(err, "saber central block.adjoint test", "not available for 4-D ensembles")
    with pytest.raises(ConfigError) as err:
        _ensemble_cov(registry, geometry, source, {"calibration": {"localization length": {}}})
    _one_line(err, "saber central block.calibration", "4-D ensemble")
    cov = _ensemble_cov(registry, geometry, source)
    with pytest.raises(ConfigError, match="has 3 times, the increment 2"):
        cov.chain.multiply_4d(FieldSet({v: np.zeros((2, 8)) for v in VARS}))
    # members with and without states
    mixed = {"members": [{"states": [{"filename": str(tmp_path / "ens.1.0.nc")}]},
                         {"filename": str(tmp_path / "ens.2.0.nc"), "date": DATES[0]}]}
    with pytest.raises(ConfigError) as err:
        _ensemble_cov(registry, geometry, mixed)
    _one_line(err, "background error.ensemble", "every member or none has 'states'")
    uneven = {"members": [{"states": [{"filename": str(tmp_path / "ens.1.0.nc")}]},
                          {"states": [{"filename": str(tmp_path / "ens.2.0.nc")},
                                      {"filename": str(tmp_path / "ens.2.1.nc")}]}]}
    with pytest.raises(ConfigError) as err:
        _ensemble_cov(registry, geometry, uneven)
    _one_line(err, "same number of states")
    both = {"members": [{"filename": "x.nc", "states": [{"filename": "y.nc"}]}] * 2}
    with pytest.raises(ConfigError) as err:
        _ensemble_cov(registry, geometry, both)
    _one_line(err, "background error.ensemble.members[0]", "exactly one of 'filename' and 'states'")
    # more than (members, times) leading axes, handed over programmatically
    ctx = BlockContext(geometry, Variables(["a"]), TIME, registry, ensemble=FieldSet({"a": np.zeros((4, 3, 2, 8))}))
    with pytest.raises(ConfigError) as err:
        SaberBlockChain({"saber central block": {"saber block name": "Ensemble"}}, ctx)
    _one_line(err, "leading axes (4, 3, 2)")


def test_hybrid_static_plus_4d_ensemble(registry, dense, tmp_path):
    """4-D hybrid: B = (1 - beta) 11^T (x) B_s + beta B_e,4D, and its square root."""
    geometry = StructuredGrid.periodic_1d(6, variables=VARS)
    members, source = _write_4d(tmp_path, geometry, 4, 33)
    static = {"saber central block": {"saber block name": "test gaussian correlation", "length scale": 0.2}}
    ens = {"ensemble": source, "saber central block": {"saber block name": "Ensemble", "localization": LOC}}
    cfg = {"saber central block": {"saber block name": "Hybrid",
                                   "components": [{"covariance": static, "weight": {"value": 0.4}},
                                                  {"covariance": ens, "weight": {"value": 0.6}}]}}
    cov = ErrorCovariance(cfg, geometry, VARS, TIME, registry)
    assert cov.chain.central.ntimes == 3
    b = dense(cov.chain.multiply_4d, geometry, VARS, times=3)
    b_s = dense(ErrorCovariance(static, geometry, VARS, TIME, registry).chain.multiply_4d, geometry, VARS, times=3)
    b_e = dense(ErrorCovariance(ens, geometry, VARS, TIME, registry).chain.multiply_4d, geometry, VARS, times=3)
    assert _rel(b, 0.4 * b_s + 0.6 * b_e) < 1e-13
    chain = cov.chain
    s = chain.multiply_sqrt(np.eye(chain.ctl_vec_size))
    smat = np.concatenate([s[v].reshape(chain.ctl_vec_size, -1) for v in VARS], axis=1).T
    assert _rel(smat @ smat.T, b) < 1e-12
    assert _rel(dense(chain.multiply_sqrt_ad, geometry, VARS, times=3), smat.T) < 1e-12
    assert cov.chain.randomize(generator(34), (2,))["b"].shape == (2, 3, 6)


def test_outer_block_inner_variables_must_match(registry, tmp_path):
    """Outer blocks change the variables: the Ensemble block's active variables must exist inside."""
    geometry = StructuredGrid.periodic_1d(8, variables=VARS)
    write_fields(tmp_path / "ens.nc", geometry, _members(geometry, 4, 16), TIME, kind="ensemble")
    cfg = {"ensemble": {"filename": str(tmp_path / "ens.nc")},
           "saber central block": {"saber block name": "Ensemble", "active variables": ["a"]},
           "saber outer blocks": [{"saber block name": "duplicate variables",
                                   "variable groupings": [{"group variable name": "psi",
                                                           "group components": ["a", "b"]}]}]}
    with pytest.raises(ConfigError) as err:
        ErrorCovariance(cfg, geometry, VARS, TIME, registry)
    _one_line(err, "saber central block.active variables", "do not reach this block", "psi")


# Sampling-optimal localization ------------------------------------------------------------------------------
def test_gaspari_cohn_formula():
    c = 0.3
    r = np.linspace(0, 0.7, 1401)
    g = gaspari_cohn(r, c)
    assert g[0] == 1.0 and (g[r >= 2 * c] == 0).all()
    assert abs(gaspari_cohn(c, c) - 5.0 / 24.0) < 1e-15  # value at z = 1 from both branches
    assert np.abs(np.diff(g)).max() < 2e-3  # continuous
    assert (np.diff(g) <= 1e-15).all()  # non-increasing
    # Daley length c sqrt(3/10): 1 - (5/3) z^2 near 0
    h = 1e-4
    second = (gaspari_cohn(h, c) - 1.0) * 2 / h**2
    assert abs(np.sqrt(-1 / second) / (c * np.sqrt(0.3)) - 1) < 1e-3  # O(h/c) finite-difference error


def test_optimal_localization_formula():
    p = 1.0 / 9
    np.testing.assert_allclose(optimal_localization([0.0, 0.5, 1.0], 10),
                               [0.0, 0.25 / ((1 + p) * 0.25 + p), 1 / (1 + 2 * p)], rtol=1e-15)


@pytest.mark.parametrize("grid", ["1-D periodic 7", "2-D channel 5x4", "channel 4x3 with levels"])
def test_homogeneous_correlation_matches_brute_force(grid):
    geometry = {"1-D periodic 7": lambda: StructuredGrid.periodic_1d(7),
                "2-D channel 5x4": lambda: StructuredGrid.channel_2d(5, 4, ly=0.5),
                "channel 4x3 with levels": lambda: StructuredGrid.channel_2d(4, 3, levels=[0, 1])}[grid]()
    e = generator(17).standard_normal((3,) + geometry.shape)
    sep, corr, pairs = homogeneous_correlation(e, geometry)
    hor = [i for i, a in enumerate(geometry.axes) if a.horizontal]
    acc: dict = {}
    points = list(itertools.product(*[range(n) for n in geometry.shape]))
    for i in points:
        for j in points:
            if any(i[k] != j[k] for k in range(len(geometry.axes)) if k not in hor):
                continue
            lag = tuple((j[k] - i[k]) % geometry.axes[k].n if geometry.axes[k].periodic else j[k] - i[k] for k in hor)
            s = acc.setdefault(lag, np.zeros(4))
            ei, ej = e[(slice(None),) + i], e[(slice(None),) + j]
            s += [ei @ ej, ei @ ei, ej @ ej, 1]
    expected = []
    for lag, s in acc.items():
        d = [geometry.axes[k].separation(0.0, l * geometry.axes[k].spacing) for k, l in zip(hor, lag)]
        expected.append((round(float(np.hypot.reduce(d)), 12), s[3], s[0] / np.sqrt(s[1] * s[2])))
    got = sorted(zip(np.round(sep, 12), pairs, corr))
    expected.sort()
    assert len(got) == len(expected)
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=0, atol=1e-14)


def _draw_homogeneous(geometry, length, nmem, seed):
    """Members drawn exactly from a periodic Gaussian correlation (circulant, by FFT)."""
    d2 = 0.0
    for k, a in enumerate(geometry.axes):
        shape = [1] * len(geometry.axes)
        shape[k] = -1
        d2 = d2 + a.separation(a.points[0], a.points).reshape(shape) ** 2
    lam = np.clip(np.fft.fftn(np.exp(-0.5 * d2 / length**2)).real, 0.0, None)
    axes = tuple(range(1, len(geometry.shape) + 1))
    z = generator(seed, "draw").standard_normal((nmem,) + geometry.shape)
    return np.fft.ifftn(np.sqrt(lam) * np.fft.fftn(z, axes=axes), axes=axes).real


TOLERANCE = 0.15  # measured worst |est/theory - 1| on 64x64: 0.08 over 25 draws (N = 5..80, 5 seeds)


@pytest.mark.parametrize("function", ["gaspari-cohn", "gaussian"])
def test_calibrated_length_is_sensible_and_decreases_with_n(function):
    """64 x 64 periodic, Gaussian correlation with length 0.05 (3.2 grid points).

    The fitted length is compared with the fit of the same function to the *theoretical* optimal
    localization C^2 / ((1 + P) C^2 + P) of the true correlation, within 15 %, and must grow with N.
    """
    geometry = StructuredGrid.periodic_2d(64, 64, variables=["a"])
    lengths = []
    for nmem in (5, 10, 20, 40, 80):
        x = _draw_homogeneous(geometry, 0.05, nmem, seed=nmem)
        res = calibrate_localization_length(FieldSet({"a": x - x.mean(axis=0)}), geometry, function)
        r = res.separation
        theory = fit_localization_function(r, optimal_localization(np.exp(-0.5 * (r / 0.05) ** 2), nmem), function)
        theory *= np.sqrt(0.3) if function == "gaspari-cohn" else 1.0
        assert abs(res.length_scale / theory - 1.0) < TOLERANCE, (nmem, res.length_scale, theory)
        assert res.nmembers == nmem
        lengths.append(res.length_scale)
    assert all(b > a for a, b in zip(lengths, lengths[1:])), lengths
    # Localization is narrower than the correlation itself, and approaches it from below.
    assert lengths[-1] < 2.5 * 0.05 and lengths[0] > 0.3 * 0.05


def test_calibration_on_a_channel_runs_and_is_close_to_periodic():
    """Bounded y axis (zero-padded FFT): crop a periodic draw to a channel."""
    big = StructuredGrid.periodic_2d(48, 64, variables=["a"])
    x = _draw_homogeneous(big, 0.05, 20, seed=3)[:, :32, :]
    channel = StructuredGrid.channel_2d(48, 32, lx=1.0, ly=0.5, variables=["a"])
    res = calibrate_localization_length(FieldSet({"a": x - x.mean(axis=0)}), channel)
    r = res.separation
    theory = np.sqrt(0.3) * fit_localization_function(r, optimal_localization(np.exp(-0.5 * (r / 0.05) ** 2), 20))
    assert abs(res.length_scale / theory - 1.0) < 0.2


@pytest.mark.parametrize("suffix", [".nc", ".yaml"])
def test_ensemble_calibration_writes_a_file_a_localization_reads_back(suffix, registry, dense, tmp_path):
    """calibration: {localization length: {output}} -> read: {filename} of a localization block."""
    geometry = StructuredGrid.periodic_2d(24, 24, variables=VARS)
    x = {v: _draw_homogeneous(geometry, 0.06, 10, seed=20 + i) for i, v in enumerate(VARS)}
    write_fields(tmp_path / "ens.nc", geometry, FieldSet(x), TIME, kind="ensemble")
    out = tmp_path / f"loc{suffix}"
    cov = _ensemble_cov(registry, geometry, {"filename": str(tmp_path / "ens.nc")},
                        {"calibration": {"localization length": {"output": str(out)}}})
    block = cov.chain.central
    assert block.calibrated is not None and out.is_file()
    data = read_localization_length(str(out))
    assert data["localization function"] == "gaspari-cohn"
    assert data["length scale"] == pytest.approx(block.calibrated.length_scale, rel=1e-15)
    assert data["support radius"] == pytest.approx(2 * data["gaspari-cohn half width"], rel=1e-15)
    assert data["nmembers"] == 10
    assert 0.02 < data["length scale"] < 0.1
    if suffix == ".nc":  # constant per-variable fields, readable as gridded fields
        fields, _ = read_fields(str(out), geometry, Variables(VARS), TIME)
        for v in VARS:
            assert np.all(fields[v] == block.calibrated.per_variable[v])
    else:
        raw = yaml.safe_load(out.read_text())
        assert len(raw["separation"]) == len(raw["optimal localization"]) > 5
    # Run with the calibrated localization, read back by the localization block.
    loc = {"saber central block": {"saber block name": "test gaussian correlation", "read": {"filename": str(out)}}}
    cov2 = _ensemble_cov(registry, geometry, {"filename": str(tmp_path / "ens.nc")}, {"localization": loc})
    assert cov2.chain.central.localization.central.length == pytest.approx(data["length scale"], rel=1e-15)
    if "spectral correlation" in registry.saber_block:
        loc = {"saber central block": {"saber block name": "spectral correlation",
                                       "length scale": data["length scale"]}}
        cov3 = _ensemble_cov(registry, geometry, {"filename": str(tmp_path / "ens.nc")}, {"localization": loc})
        assert cov3.chain.has_sqrt
