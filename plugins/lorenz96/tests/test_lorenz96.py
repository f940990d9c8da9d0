"""Lorenz-96-specific tests (the generic OOPS suites live in test_interface.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pyoops.fields.fieldset import FieldSet
from pyoops.generic.forecast import TrajectorySaver, forecast, forecast_ad, forecast_tl
from pyoops.generic.state import GenericIncrement
from pyoops.util.datetime import DateTime, Duration
from pyoops.util.errors import ConfigError
from pyoops.util.random import generator
from pyoops_lorenz96 import Lorenz96Geometry, Lorenz96Model, Lorenz96State, Lorenz96TLM

DATE = DateTime("2010-01-01T00:00:00Z")


@pytest.fixture(scope="module")
def geometry() -> Lorenz96Geometry:
    return Lorenz96Geometry({"resol": 40})


def make_state(geometry: Lorenz96Geometry, method: str = "rest-perturbed", **keys) -> Lorenz96State:
    return Lorenz96State.from_config(geometry, {"date": str(DATE), "analytic init": {"method": method, **keys}})


@pytest.fixture(scope="module")
def attractor_state(geometry) -> Lorenz96State:
    """A state on the attractor: 1000 steps (250 days) from the perturbed rest state."""
    return forecast(Lorenz96Model({}, geometry), make_state(geometry), Duration("P250D"))


def run(model: Lorenz96Model, state: Lorenz96State, length: "str | Duration") -> np.ndarray:
    return forecast(model, state.copy(), Duration(length)).fields["x"]


def test_time_step_convention(geometry):
    assert Lorenz96Model({"tstep": "PT6H"}, geometry).dt == pytest.approx(0.05, rel=1e-15)
    assert Lorenz96Model({"tstep": "P5D"}, geometry).dt == 1.0


def test_rk4_is_fourth_order(geometry, attractor_state):
    # Over 2.5 days (0.5 time units), halving the step must divide the error by 2^4.
    ref = run(Lorenz96Model({"tstep": "PT5M"}, geometry), attractor_state, "P2DT12H")
    errors = [np.abs(run(Lorenz96Model({"tstep": step}, geometry), attractor_state, "P2DT12H") - ref).max()
              for step in ("PT6H", "PT3H")]
    assert 12.0 <= errors[0] / errors[1] <= 20.0


def test_batched_step_equals_member_steps(geometry):
    model = Lorenz96Model({}, geometry)
    ens = 8.0 + generator(11, "ensemble").standard_normal((7, 40))
    batched = model.step(FieldSet({"x": ens}))["x"]
    assert batched.shape == (7, 40)
    for m in range(7):
        assert np.array_equal(batched[m], model.step(FieldSet({"x": ens[m]}))["x"])


def test_batched_tl_ad_equal_member_tl_ad(geometry, attractor_state):
    tlm = Lorenz96TLM({}, geometry)
    traj = attractor_state.fields
    dx = generator(12, "dx").standard_normal((5, 40))
    tl = tlm.step_tl(FieldSet({"x": dx}), traj)["x"]
    ad = tlm.step_ad(FieldSet({"x": dx}), traj)["x"]
    batched_traj = FieldSet({"x": np.broadcast_to(traj["x"], (5, 40))})
    assert np.array_equal(tlm.step_tl(FieldSet({"x": dx}), batched_traj)["x"], tl)
    for m in range(5):
        assert np.array_equal(tl[m], tlm.step_tl(FieldSet({"x": dx[m]}), traj)["x"])
        assert np.array_equal(ad[m], tlm.step_ad(FieldSet({"x": dx[m]}), traj)["x"])


def test_climatology(geometry, attractor_state):
    # F = 8, N = 40: the long-run mean of x is about 2.33 and its standard deviation
    # about 3.64 (the 3.6 "climatology RMSE" of Sakov & Oke 2008).
    model, state = Lorenz96Model({}, geometry), attractor_state.copy()
    samples = []
    for _ in range(1000):
        state = forecast(model, state, Duration("PT6H"))
        samples.append(state.fields["x"].copy())
    samples = np.array(samples)
    assert samples.mean() == pytest.approx(2.3, abs=0.3)
    assert samples.std() == pytest.approx(3.6, abs=0.3)


def linearised(geometry, x0: Lorenz96State, nsteps: int) -> tuple[Lorenz96Model, Lorenz96TLM, Duration]:
    model, tlm = Lorenz96Model({}, geometry), Lorenz96TLM({}, geometry)
    length = model.time_resolution * nsteps
    forecast(model, x0.copy(), length, post=[TrajectorySaver(tlm)])
    return model, tlm, length


def increment(geometry, seed: int) -> GenericIncrement:
    dx = GenericIncrement.zeros(geometry, geometry.variables, DATE)
    dx.random(generator(seed, "increment"))
    return dx


def test_tangent_linear_against_finite_differences(geometry, attractor_state):
    x0 = attractor_state.copy()
    x0.time = DATE
    model, tlm, length = linearised(geometry, x0, 5)
    dx = increment(geometry, 1)
    tl = forecast_tl(tlm, dx.copy(), length).fields["x"]
    base = run(model, x0, length)
    errors = []
    for k in range(12):
        alpha = 10.0 ** -k
        xp = x0.copy()
        xp.fields["x"] = xp.fields["x"] + alpha * dx.fields["x"]
        fd = (run(model, xp, length) - base) / alpha
        errors.append(np.linalg.norm(fd - tl) / np.linalg.norm(tl))
    # Truncation error ~ alpha until round-off takes over.
    assert all(errors[k + 1] < 0.5 * errors[k] for k in range(4)), errors
    assert min(errors) < 1e-7, errors


def test_adjoint_dot_product(geometry, attractor_state):
    x0 = attractor_state.copy()
    x0.time = DATE
    _, tlm, length = linearised(geometry, x0, 10)
    dx, dy = increment(geometry, 2), increment(geometry, 3)
    dy.time = DATE + length
    mdx = forecast_tl(tlm, dx.copy(), length)
    mtdy = forecast_ad(tlm, dy.copy(), length)
    assert mtdy.time == DATE
    lhs, rhs = mdx.dot_product_with(dy), dx.dot_product_with(mtdy)
    assert abs(lhs - rhs) <= 1e-14 * max(abs(lhs), abs(rhs))


def test_analytic_states(geometry):
    x = make_state(geometry, "rest-perturbed", perturbation=0.5, index=3).fields["x"]
    assert x[3] == 8.5 and np.all(np.delete(x, 3) == 8.0)
    x = make_state(geometry, "sinusoid", amplitude=2.0, wavenumber=3, f=1.0).fields["x"]
    assert x[0] == 1.0 and x.max() == pytest.approx(3.0, abs=0.02) and x.mean() == pytest.approx(1.0)
    a, b = (make_state(geometry, "random", seed=5, std=0.1).fields["x"] for _ in range(2))
    assert np.array_equal(a, b) and not np.array_equal(a, make_state(geometry, "random", seed=6).fields["x"])


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: Lorenz96Geometry({"resol": 2}), "resol"),
        (lambda: Lorenz96Model({"tstep": "PT0S"}, Lorenz96Geometry({"resol": 8})), "tstep"),
        (lambda: Lorenz96TLM({"tstep": "-PT6H"}, Lorenz96Geometry({"resol": 8})), "tstep"),
        (lambda: make_state(Lorenz96Geometry({"resol": 8}), "chaos"), "method"),
        (lambda: make_state(Lorenz96Geometry({"resol": 8}), "random"), "seed"),
        (lambda: make_state(Lorenz96Geometry({"resol": 8}), "rest-perturbed", index=8), "index"),
    ],
)
def test_bad_parameters(build, key):
    with pytest.raises(ConfigError) as info:
        build()
    assert key in str(info.value)
    if key == "method":
        assert all(m in str(info.value) for m in Lorenz96State.analytic_methods)


def test_entry_point_registration():
    from pyoops.registry import get_registry, reset_registry

    reset_registry()
    registry = get_registry()
    plugin = registry.model_plugin("lorenz96")
    assert plugin.geometry is Lorenz96Geometry and plugin.state is Lorenz96State
    assert registry.model.get("Lorenz96") is Lorenz96Model
    assert registry.linear_model.get("Lorenz96TLM") is Lorenz96TLM
    assert "Lorenz96" in registry.model and "lorenz96" in registry.geometry
