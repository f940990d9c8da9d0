"""FieldSet: ordered variable → float64 array mapping with vector algebra."""

import numpy as np
import pytest

from pyoops.fields.fieldset import FieldSet
from pyoops.util import Variables


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _fs(rng, batch=()):
    return FieldSet({"u": rng.standard_normal(batch + (4, 5)), "t": rng.standard_normal(batch + (7,))})


def test_construction_converts_to_float64_and_copies():
    src = np.arange(3)
    fs = FieldSet({"x": src})
    assert fs["x"].dtype == np.float64
    fs["x"][0] = 42.0
    assert src[0] == 0
    ref = np.zeros(3)
    shared = FieldSet({"x": ref}, copy=False)
    shared["x"][1] = 5.0
    assert ref[1] == 5.0
    assert FieldSet([("b", [1.0]), ("a", [2.0])]).variables == Variables(["b", "a"])
    assert len(FieldSet()) == 0


def test_mapping_protocol_and_order():
    fs = FieldSet({"b": [1.0], "a": [2.0]})
    fs["c"] = [3]
    assert list(fs) == ["b", "a", "c"]
    assert fs["c"].dtype == np.float64
    del fs["a"]
    assert list(fs) == ["b", "c"]
    assert "FieldSet" in repr(fs)


def test_copy_is_deep_and_zeros_like(rng):
    a = _fs(rng)
    b = a.copy()
    b["u"] += 1.0
    assert not np.allclose(a["u"], b["u"])
    z = a.zeros_like()
    assert list(z) == list(a) and z.norm() == 0.0
    assert z["u"].shape == a["u"].shape


def test_axpy_dot_norm(rng):
    a, b = _fs(rng), _fs(rng)
    expected = {k: a[k] + 2.5 * b[k] for k in a}
    c = a.copy().axpy(2.5, b)
    for k in a:
        np.testing.assert_allclose(c[k], expected[k], rtol=1e-15)
    dot = sum(float(np.sum(a[k] * b[k])) for k in a)
    assert a.dot(b) == pytest.approx(dot, rel=1e-14)
    assert a.dot(b) == pytest.approx(b.dot(a), rel=1e-15)
    assert a.norm() == pytest.approx(np.sqrt(a.dot(a)), rel=1e-14)
    n = sum(v.size for v in a.values())
    assert a.rms() == pytest.approx(a.norm() / np.sqrt(n), rel=1e-14)
    assert FieldSet().rms() == 0.0


def test_operators(rng):
    a, b = _fs(rng), _fs(rng)
    s = a + b
    d = a - b
    for k in a:
        np.testing.assert_array_equal(s[k], a[k] + b[k])
        np.testing.assert_array_equal(d[k], a[k] - b[k])
        np.testing.assert_array_equal((3.0 * a)[k], 3.0 * a[k])
        np.testing.assert_array_equal((a * 3.0)[k], 3.0 * a[k])
        np.testing.assert_array_equal((-a)[k], -a[k])
    c = a.copy()
    c += b
    c -= b
    assert c.allclose(a, rtol=1e-14, atol=1e-14)
    c *= 0.0
    assert c.norm() == 0.0


def test_schur(rng):
    a, b = _fs(rng), _fs(rng)
    expected = {k: a[k] * b[k] for k in a}
    a2 = a.copy()
    a2.schur(b)
    for k in a:
        np.testing.assert_array_equal(a2[k], expected[k])
    a3 = a.copy()
    a3 *= b
    assert a3.allclose(a2)
    ones = a.map(np.ones_like)
    assert a.copy().schur(ones).allclose(a)
    assert a.copy().schur(a.zeros_like()).norm() == 0.0


def test_schur_broadcasts_grid_field_over_members(rng):
    ens = _fs(rng, batch=(3,))
    w = _fs(rng)
    out = ens.copy().schur(w)
    for k in ens:
        np.testing.assert_array_equal(out[k], ens[k] * w[k][None])


def test_to_vector_from_vector_round_trip(rng):
    a = _fs(rng, batch=(2,))
    v = a.to_vector()
    assert v.shape == (2 * 20 + 2 * 7,)
    np.testing.assert_array_equal(v[:40], a["u"].ravel())
    b = a.from_vector(v)
    assert list(b) == list(a)
    for k in a:
        np.testing.assert_array_equal(b[k], a[k])
    v[0] = 99.0  # from_vector copies
    assert b["u"].ravel()[0] != 99.0
    assert a.dot(a) == pytest.approx(float(v[1:] @ v[1:]) + a["u"].ravel()[0] ** 2, rel=1e-13)
    with pytest.raises(ValueError, match="elements"):
        a.from_vector(np.zeros(5))
    assert FieldSet().to_vector().shape == (0,)


def test_batch_shape(rng):
    shapes = {"u": (4, 5), "t": (7,)}
    assert _fs(rng).batch_shape(shapes) == ()
    assert _fs(rng, batch=(3,)).batch_shape(shapes) == (3,)
    assert _fs(rng, batch=(2, 3)).batch_shape(shapes) == (2, 3)
    mixed = FieldSet({"u": np.zeros((3, 4, 5)), "t": np.zeros((2, 7))})
    with pytest.raises(ValueError, match="batch shapes"):
        mixed.batch_shape(shapes)
    assert FieldSet().batch_shape({}) == ()


def test_batched_algebra_is_memberwise(rng):
    a, b = _fs(rng, batch=(3,)), _fs(rng, batch=(3,))
    c = a.copy().axpy(-1.0, b)
    for m in range(3):
        np.testing.assert_allclose(c["u"][m], a["u"][m] - b["u"][m], rtol=0, atol=1e-15)
    assert a.dot(b) == pytest.approx(sum(np.vdot(a[k], b[k]) for k in a), rel=1e-14)


def test_incompatible_sets_raise(rng):
    a = _fs(rng)
    other_vars = FieldSet({"u": a["u"], "q": a["t"]})
    other_order = FieldSet({"t": a["t"], "u": a["u"]})
    for bad in (other_vars, other_order, FieldSet({"u": a["u"]})):
        with pytest.raises(ValueError, match="differ"):
            a.dot(bad)
        with pytest.raises(ValueError):
            a.copy().axpy(1.0, bad)
        with pytest.raises(ValueError):
            a + bad
        with pytest.raises(ValueError):
            a.copy().schur(bad)
    assert not a.allclose(other_order)


def test_subset_shares_arrays_and_map(rng):
    a = _fs(rng)
    s = a.subset(["t"])
    assert list(s) == ["t"]
    s["t"][0] = 123.0
    assert a["t"][0] == 123.0
    m = a.map(lambda x: 2 * x)
    np.testing.assert_array_equal(m["u"], 2 * a["u"])


def test_is_finite(rng):
    a = _fs(rng)
    assert a.is_finite()
    a["t"][3] = np.nan
    assert not a.is_finite()
    a["t"][3] = np.inf
    assert not a.is_finite()
