"""The ``Hybrid`` central block: weighted sums of covariance chains, square root, randomization, errors."""

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
VARS = ["a", "b"]

GRIDS = {
    "1-D periodic 10": lambda: StructuredGrid.periodic_1d(10, variables=VARS),
    "2-D periodic 4x3": lambda: StructuredGrid.periodic_2d(4, 3, variables=VARS),
    "2-D channel 5x3 (non-square)": lambda: StructuredGrid.channel_2d(5, 3, variables=VARS),
}


def _members(geometry, nmem, seed):
    rng = generator(seed, "hybrid members")
    return FieldSet({v: rng.standard_normal((nmem,) + geometry.shape) * (1 + i) + 2.0
                     for i, v in enumerate(VARS)}, copy=False)


def _flat(fields):
    n = next(iter(fields.values())).shape[0]
    return np.concatenate([fields[v].reshape(n, -1) for v in VARS], axis=1)


STATIC = {"saber central block": {"saber block name": "test gaussian correlation", "length scale": 0.2},
          "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": {"a": 0.6, "b": 1.5}}}]}


def _ensemble_section(path, localized=True):
    central = {"saber block name": "Ensemble"}
    if localized:
        central["localization"] = {"saber central block": {"saber block name": "test gaussian correlation",
                                                           "length scale": 0.3}}
    return {"ensemble": {"filename": str(path)}, "saber central block": central}


def _setup(tmp_path, geometry, nmem=5, seed=1):
    members = _members(geometry, nmem, seed)
    write_fields(tmp_path / "ens.nc", geometry, members, TIME, kind="ensemble")
    return members


def _hybrid(registry, geometry, components, outer=None, ensemble=None, **central):
    cfg = {"saber central block": {"saber block name": "Hybrid", "components": components, **central}}
    if outer:
        cfg["saber outer blocks"] = outer
    if ensemble:
        cfg["ensemble"] = ensemble
    return ErrorCovariance(cfg, geometry, VARS, TIME, registry)


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_two_components_equal_dense_weighted_sum(grid, beta, registry, dense, tmp_path):
    """B_h = (1 - beta) B_s + beta B_e, both B_s and B_e assembled densely from their own chains."""
    geometry = GRIDS[grid]()
    _setup(tmp_path, geometry)
    ens = _ensemble_section(tmp_path / "ens.nc")
    cov = _hybrid(registry, geometry, [{"covariance": STATIC, "weight": {"value": 1 - beta}},
                                       {"covariance": ens, "weight": {"value": beta}}],
                  **{"adjoint test": True, "square-root test": True})
    b_s = dense(ErrorCovariance(STATIC, geometry, VARS, TIME, registry).chain.multiply, geometry, VARS)
    b_e = dense(ErrorCovariance(ens, geometry, VARS, TIME, registry).chain.multiply, geometry, VARS)
    b_h = dense(cov.chain.multiply, geometry, VARS)
    assert _rel(b_h, (1 - beta) * b_s + beta * b_e) < 1e-13
    assert set(cov.chain.nested()) == {"component_0", "component_1", "component_1.localization"}


def test_field_weights_three_components_and_common_outer_blocks(registry, dense, tmp_path):
    """B = S (sum_i W_i^1/2 B_i W_i^1/2) S with weight fields, a scalar x field weight, and a common StdDev."""
    geometry = StructuredGrid.channel_2d(5, 3, variables=VARS)
    members = _setup(tmp_path, geometry, nmem=4)
    w1 = FieldSet({v: generator(2, v).random(geometry.shape) for v in VARS})
    w2 = FieldSet({v: 0.2 + generator(3, v).random(geometry.shape) for v in VARS})
    write_fields(tmp_path / "w1.nc", geometry, w1, TIME, kind="weight")
    write_fields(tmp_path / "w2.nc", geometry, w2, TIME, kind="weight")
    components = [
        {"covariance": STATIC, "weight": {"file": str(tmp_path / "w1.nc")}},
        {"covariance": _ensemble_section(tmp_path / "ens.nc", localized=False),
         "weight": {"value": 0.5, "file": {"filename": str(tmp_path / "w2.nc"), "date": str(TIME)}}},
        {"covariance": {"saber central block": {"saber block name": "ID"}}, "weight": {"value": 0.1}},
    ]
    outer = [{"saber block name": "StdDev", "read": {"value": 2.0}}]
    cov = _hybrid(registry, geometry, components, outer=outer)
    b = dense(cov.chain.multiply, geometry, VARS)
    b_s = dense(ErrorCovariance(STATIC, geometry, VARS, TIME, registry).chain.multiply, geometry, VARS)
    b_e = np.cov(_flat(members), rowvar=False)
    n = b.shape[0]
    r1 = np.sqrt(np.concatenate([w1[v].ravel() for v in VARS]))
    r2 = np.sqrt(0.5 * np.concatenate([w2[v].ravel() for v in VARS]))
    inner = r1[:, None] * b_s * r1[None, :] + r2[:, None] * b_e * r2[None, :] + 0.1 * np.eye(n)
    assert _rel(b, 4.0 * inner) < 1e-13


def test_parent_ensemble_is_inherited_by_components(registry, dense, tmp_path):
    """``ensemble`` next to the Hybrid block reaches every component without its own ensemble,
    brought inwards through the common outer blocks (StdDev: divided by sigma)."""
    geometry = StructuredGrid.periodic_1d(8, variables=VARS)
    members = _setup(tmp_path, geometry)
    components = [{"covariance": {"saber central block": {"saber block name": "Ensemble"}}, "weight": {"value": 0.25}},
                  {"covariance": {"saber central block": {"saber block name": "Ensemble"}}, "weight": {"value": 0.75}}]
    cov = _hybrid(registry, geometry, components, ensemble={"filename": str(tmp_path / "ens.nc")},
                  outer=[{"saber block name": "StdDev", "read": {"value": 3.0}}])
    b = dense(cov.chain.multiply, geometry, VARS)
    assert _rel(b, np.cov(_flat(members), rowvar=False)) < 1e-13


@pytest.mark.parametrize("grid", GRIDS)
def test_square_root(grid, registry, dense, tmp_path):
    geometry = GRIDS[grid]()
    _setup(tmp_path, geometry)
    cov = _hybrid(registry, geometry, [{"covariance": STATIC, "weight": {"value": 0.4}},
                                       {"covariance": _ensemble_section(tmp_path / "ens.nc"), "weight": {"value": 0.6}},
                                       {"covariance": _ensemble_section(tmp_path / "ens.nc", False),
                                        "weight": {"value": 0.1}}],
                  **{"square-root test": True})
    chain = cov.chain
    n = 2 * int(np.prod(geometry.shape))
    assert chain.has_sqrt
    assert chain.central.ctl_vec_sizes == [n, 5 * n, 5]
    assert chain.ctl_vec_size == n + 5 * n + 5
    s = chain.multiply_sqrt(np.eye(chain.ctl_vec_size))
    smat = np.concatenate([s[v].reshape(chain.ctl_vec_size, -1) for v in VARS], axis=1).T
    b = dense(chain.multiply, geometry, VARS)
    assert _rel(smat @ smat.T, b) < 1e-12
    st = dense(chain.multiply_sqrt_ad, geometry, VARS)
    np.testing.assert_allclose(st, smat.T, rtol=0, atol=1e-13 * np.abs(smat).max())


def test_no_square_root_if_a_component_has_none(registry, tmp_path):
    geometry = StructuredGrid.periodic_1d(8, variables=VARS)
    no_sqrt = {"saber central block": {"saber block name": "test gaussian correlation", "length scale": 0.2,
                                       "no sqrt": True}}
    cov = _hybrid(registry, geometry, [{"covariance": STATIC, "weight": {"value": 0.5}},
                                       {"covariance": no_sqrt, "weight": {"value": 0.5}}])
    assert not cov.chain.has_sqrt
    with pytest.raises(ConfigError, match="no square root"):
        cov.chain.multiply_sqrt(np.zeros(32))
    assert cov.randomize(generator(0), 2).fields["a"].shape == (2, 8)


def test_randomization_statistics(registry, dense, tmp_path):
    """Sample variance of K = 20000 draws vs diag(B): |ratio - 1| < 5 sqrt(2/K) at every one of 20 points."""
    geometry = StructuredGrid.periodic_1d(10, variables=VARS)
    _setup(tmp_path, geometry)
    cov = _hybrid(registry, geometry, [{"covariance": STATIC, "weight": {"value": 0.3}},
                                       {"covariance": _ensemble_section(tmp_path / "ens.nc"),
                                        "weight": {"value": 0.7}}])
    k = 20000
    x = _flat(cov.randomize(generator(21), k).fields)
    b = dense(cov.chain.multiply, geometry, VARS)
    ratio = (x**2).mean(axis=0) / np.diag(b)
    assert np.abs(ratio - 1).max() < 5 * np.sqrt(2.0 / k)
    assert np.abs(x.T @ x / k - b).max() < 10 * np.sqrt(2.0 / k) * np.abs(b).max()


def _one_line(err, *texts):
    msg = str(err.value)
    assert "\n" not in msg, msg
    for t in texts:
        assert t in msg, msg


BAD = {
    "weight missing": ([{"covariance": STATIC, "weight": {"value": 1.0}}, {"covariance": STATIC}],
                       ["background error.saber central block.components[1].weight", "required key is missing"]),
    "empty weight": ([{"covariance": STATIC, "weight": {}}],
                     ["components[0].weight", "give 'value' or 'file'"]),
    "negative weight": ([{"covariance": STATIC, "weight": {"value": -0.5}}],
                        ["components[0].weight.value", "greater than or equal to 0"]),
    "no components": ([], ["saber central block.components"]),
    "unknown block name": ([{"covariance": {"saber central block": {"saber block name": "Diffusionn"}},
                             "weight": {"value": 1.0}}],
                           ["components[0].covariance.saber central block.saber block name",
                            "'Diffusionn' does not exist"]),
    "outer block whose inner variables do not match": (
        [{"covariance": {"saber central block": {"saber block name": "ID", "active variables": ["a"]},
                         "saber outer blocks": [{"saber block name": "duplicate variables",
                                                 "variable groupings": [{"group variable name": "psi",
                                                                         "group components": ["a", "b"]}]}]},
          "weight": {"value": 1.0}}],
        ["components[0].covariance.saber central block.active variables", "do not reach this block"]),
    "both read and calibration": (
        [{"covariance": {"saber central block": {"saber block name": "ID"},
                         "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": 1.0},
                                                 "calibration": {}}]},
          "weight": {"value": 1.0}}],
        ["components[0].covariance.saber outer blocks[0]", "either 'read' or 'calibration', not both"]),
    "component ensemble of one member": (
        [{"covariance": {"ensemble": {"members": [{"filename": "x.nc"}]},
                         "saber central block": {"saber block name": "Ensemble"}},
          "weight": {"value": 1.0}}],
        ["components[0].covariance.ensemble"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_configs_fail_with_one_line_naming_the_key(case, registry, tmp_path):
    geometry = StructuredGrid.periodic_1d(8, variables=VARS)
    components, texts = BAD[case]
    if case == "component ensemble of one member":
        write_fields(tmp_path / "x.nc", geometry, FieldSet({v: np.zeros(8) for v in VARS}), TIME)
        components[0]["covariance"]["ensemble"]["members"][0]["filename"] = str(tmp_path / "x.nc")
        texts = texts + ["at least 2 members, got 1"]
    with pytest.raises(ConfigError) as err:
        _hybrid(registry, geometry, components)
    _one_line(err, *texts)


def _arrays_reachable(root) -> dict[int, tuple[int, ...]]:
    """The numpy buffers reachable from ``root`` through attributes, dicts, lists and tuples: {base id: shape}."""
    import dataclasses

    seen, found, todo = set(), {}, [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, type)) or obj is None:
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            found[id(base)] = base.shape
            continue
        if isinstance(obj, FieldSet):
            todo.extend(obj.values())
        elif isinstance(obj, dict):
            todo.extend(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            todo.extend(obj)
        elif dataclasses.is_dataclass(obj):
            todo.extend(getattr(obj, f.name) for f in dataclasses.fields(obj))
        if hasattr(obj, "__dict__") and not callable(obj):
            todo.extend(vars(obj).values())
        elif hasattr(obj, "__dict__") and hasattr(obj, "__self__"):
            todo.append(obj.__self__)
    return found


def test_built_hybrid_holds_one_copy_of_the_ensemble(registry, tmp_path):
    """B = S (0.5 C + 0.5 B_e) S with the members given in memory: once built, the chain holds one copy of
    the ensemble (the Ensemble block's scaled perturbations) and no other array of the ensemble's size — not
    the members as given, not their copies divided by σ, not the raw perturbations; with the caller's own
    members, two copies in all.  A block that asks its context for the ensemble after the build is told so."""
    geometry = StructuredGrid.periodic_2d(16, 12, variables=VARS)
    members = _members(geometry, 30, 4)
    size = sum(a.nbytes for a in members.values())
    ensemble = {"saber central block": {"saber block name": "Ensemble", "localization": {
        "saber central block": {"saber block name": "test gaussian correlation", "length scale": 0.3}}}}
    cfg = {"saber outer blocks": [{"saber block name": "StdDev", "read": {"value": {"a": 0.6, "b": 1.5}}}],
           "saber central block": {"saber block name": "Hybrid", "components": [
               {"covariance": {"saber central block": STATIC["saber central block"]}, "weight": {"value": 0.5}},
               {"covariance": ensemble, "weight": {"value": 0.5}}]}}
    chain = SaberBlockChain(cfg, BlockContext(geometry, Variables(VARS), TIME, registry, ensemble=members))
    shapes = list(_arrays_reachable(chain).values())
    ensemble_sized = [shape for shape in shapes if shape[:1] == (30,) and int(np.prod(shape)) >= 30 * 16 * 12]
    assert len(ensemble_sized) == len(VARS), ensemble_sized       # one array per variable: one copy
    assert 8 * sum(int(np.prod(shape)) for shape in ensemble_sized) == size
    with pytest.raises(RuntimeError, match="released when the chain was built"):
        chain.central.context.ensemble_perturbations()
