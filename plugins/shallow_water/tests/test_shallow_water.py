"""Shallow-water-specific tests: conservation, balance, wave speed, CFL, analytic states, registration.

The generic OOPS suites (increment algebra, TL/AD, obs operators, ...) are in test_interface.py.
Tolerances are stated in each test and in docs/tutorials/shallow_water.rst.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyoops.fields.fieldset import FieldSet
from pyoops.generic.forecast import TrajectorySaver, forecast, forecast_ad, forecast_tl
from pyoops.generic.state import GenericIncrement
from pyoops.util.datetime import DateTime, Duration
from pyoops.util.errors import ConfigError
from pyoops.util.random import generator
from pyoops_shallow_water import ShallowWaterGeometry, ShallowWaterModel, ShallowWaterState, ShallowWaterTLM
from pyoops_shallow_water import numerics as N
from pyoops_shallow_water.model import check_cfl, stack

DATE = DateTime("2010-01-01T00:00:00Z")


@pytest.fixture(scope="module")
def geometry() -> ShallowWaterGeometry:
    return ShallowWaterGeometry({"nx": 30, "ny": 30})


def make_state(geometry, method: str, **keys) -> ShallowWaterState:
    return ShallowWaterState.from_config(geometry, {"date": str(DATE), "analytic init": {"method": method, **keys}})


def integrate(model: ShallowWaterModel, x: np.ndarray, length: str) -> np.ndarray:
    for _ in range(int(Duration(length) / model.time_resolution)):
        x = N.rk4_step(x, model.physics, model.dt)
    return x


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# Geometry ----------------------------------------------------------------------------------------
def test_default_geometry_is_the_950_km_box(geometry):
    assert geometry.shape == (30, 30)
    assert geometry.lx == geometry.ly == 950_000.0
    assert geometry.dx == pytest.approx(950_000.0 / 30, rel=1e-15)
    coarse = ShallowWaterGeometry({"nx": 15, "ny": 15})
    assert coarse.lx == geometry.lx and coarse.axis("x").upper == geometry.axis("x").upper
    other = ShallowWaterGeometry({"nx": 20, "ny": 10, "dx": 5000.0, "dy": 10000.0})
    assert (other.lx, other.ly, other.shape) == (100_000.0, 100_000.0, (10, 20))
    assert geometry.dims == ("y", "x") and geometry.location_names == ("x", "y")


# Conservation --------------------------------------------------------------------------------------
def test_mass_is_conserved_to_round_off(geometry):
    """Total mass sum(h) dA over 1 day of balanced turbulence (and with diffusion): change <= 1e-13 of sum|h| dA."""
    x0 = stack(make_state(geometry, "turbulence", seed=3).fields)
    for diffusion in (0.0, 500.0):
        model = ShallowWaterModel({"tstep": "PT10M", "diffusion": diffusion}, geometry)
        x = integrate(model, x0, "P1D")
        scale = float(np.abs(x0[0]).sum() * geometry.dx * geometry.dy)
        assert abs(N.mass(x, model.physics) - N.mass(x0, model.physics)) <= 1e-13 * scale


def test_energy_is_conserved_without_diffusion(geometry):
    """Total energy of the balanced vortex (A = 2 m, Rossby number ~0.08) over 2 days without diffusion:
    relative change < 2e-5 at PT10M (measured 1.1e-5) and < 3e-6 at PT5M (measured 1.6e-6): the RK4
    time error, since the centred A-grid scheme conserves energy exactly in space.  Diffusion
    dissipates it."""
    x0 = stack(make_state(geometry, "vortex", amplitude=2.0).fields)
    errors = {}
    for tstep in ("PT10M", "PT5M"):
        model = ShallowWaterModel({"tstep": tstep}, geometry)
        e0 = N.energy(x0, model.physics)
        errors[tstep] = abs(N.energy(integrate(model, x0, "P2D"), model.physics) - e0) / e0
    assert errors["PT10M"] < 2e-5 and errors["PT5M"] < 3e-6, errors
    # The semi-discrete energy tendency vanishes to round-off for any state (here: turbulence):
    x = stack(make_state(geometry, "turbulence", seed=4, amplitude=1.0).fields)
    p = ShallowWaterModel({}, geometry).physics
    h, u, v = x
    t = N.tendency(x, p)
    phi = p.g * h + 0.5 * (u ** 2 + v ** 2)
    de = np.sum((p.depth + h) * (u * t[1] + v * t[2]) + phi * t[0])
    scale = np.sum(np.abs((p.depth + h) * (u * t[1] + v * t[2]))) + np.sum(np.abs(phi * t[0]))
    assert abs(de) <= 1e-13 * scale
    damped = ShallowWaterModel({"tstep": "PT10M", "diffusion": 2000.0}, geometry)
    assert N.energy(integrate(damped, x0, "P1D"), damped.physics) < 0.99 * N.energy(x0, damped.physics)


# Balance and waves ----------------------------------------------------------------------------------
def test_balanced_vortex_is_near_steady(geometry):
    """A geostrophically balanced vortex after 1 day (PT10M): ||h(t) - h(0)|| / ||h(0)|| < 0.06 and the
    wind change < 0.02 for A = 2 m (Rossby number ~0.08; measured 0.052 and 0.016).  The change is
    proportional to the amplitude (measured ratio 0.1000 for A = 0.2 m): the discrete geostrophic state
    is an exact steady state of the linearised model, only the nonlinear (gradient-wind) imbalance
    adjusts."""
    model = ShallowWaterModel({"tstep": "PT10M"}, geometry)
    changes = {}
    for amplitude in (2.0, 0.2):
        x0 = stack(make_state(geometry, "vortex", amplitude=amplitude).fields)
        x = integrate(model, x0, "P1D")
        changes[amplitude] = (rel(x[0], x0[0]), rel(x[1:], x0[1:]))
    assert changes[2.0][0] < 0.06 and changes[2.0][1] < 0.02, changes
    assert changes[0.2][0] / changes[2.0][0] == pytest.approx(0.1, rel=0.01)
    # The zonal jet pair (u = u(y), v = 0) is steady up to the O(dy^2) difference between
    # d(u^2/2)/dy and u du/dy: change < 2e-3 in 2 days (measured 7.6e-4).
    x0 = stack(make_state(geometry, "jet").fields)
    x = integrate(model, x0, "P2D")
    assert rel(x[0], x0[0]) < 2e-3 and rel(x[1:], x0[1:]) < 2e-3


def _pulse_speed(nx: int, dx: float, length: float = 5000.0, f: float = 1e-4) -> float:
    geometry = ShallowWaterGeometry({"nx": nx, "ny": 4, "dx": dx, "dy": dx})
    x = stack(make_state(geometry, "gravity wave pulse", shape="line", width=50e3, amplitude=0.1).fields)
    model = ShallowWaterModel({"tstep": "PT50S", "f": f}, geometry)
    x = integrate(model, x, f"PT{int(length)}S")
    h = x[0, 0]
    i = int(np.argmax(np.where(np.arange(nx) * dx > geometry.lx / 2, h, -np.inf)))
    a, b, c = h[i - 1], h[i], h[i + 1]
    peak = (i + 0.5 * (a - c) / (a - 2 * b + c)) * dx  # parabolic fit of the right-going crest
    return (peak - geometry.lx / 2) / length


def test_gravity_wave_pulse_travels_at_sqrt_gh():
    """A line pulse (w = 50 km) splits into two crests moving at sqrt(gH) = 99.05 m/s: after 5000 s the
    measured speed is within 1% of sqrt(gH) at dx = 5 km (measured -0.39%), and the error is second
    order in dx (the A-grid group velocity sqrt(gH) cos(k dx)): halving dx divides it by more than 3."""
    c = math.sqrt(9.81 * 1000.0)
    fine = _pulse_speed(400, 5000.0) / c - 1
    coarse = _pulse_speed(200, 10000.0) / c - 1
    assert abs(fine) < 0.01, fine
    assert abs(coarse) > 3 * abs(fine)


# CFL --------------------------------------------------------------------------------------------------
def test_cfl_violation_fails_at_configuration_with_one_line(geometry):
    # dx = 31.7 km, sqrt(gH) = 99 m/s: the RK4 limit 2 sqrt(2) is reached at dt = 639.7 s.
    ShallowWaterModel({"tstep": "PT10M"}, geometry)
    for cls, key in ((ShallowWaterModel, "model.tstep"), (ShallowWaterTLM, "linear model.tstep")):
        with pytest.raises(ConfigError) as info:
            cls({"tstep": "PT11M"}, geometry)
        message = str(info.value)
        assert "\n" not in message and message.startswith(key)
        assert "CFL" in message and "2.92 > 2.83" in message and "PT10M39S" in message
    with pytest.raises(ConfigError, match=r"sqrt\(g H\) = 313.2 m/s"):
        ShallowWaterModel({"tstep": "PT5M", "mean depth": 10000.0}, geometry)
    with pytest.raises(ConfigError, match="diffusion stability"):
        ShallowWaterModel({"tstep": "PT5M", "diffusion": 1.5e6}, geometry)
    p = N.Physics(1000.0, 9.81, 1e-4, 0.0, 1000.0, 1000.0)
    check_cfl(p, Duration("PT20S"))  # sqrt(gH) dt sqrt(2)/dx = 2.80 < 2.83
    with pytest.raises(ConfigError, match="2.87 > 2.83"):
        check_cfl(p, Duration("PT20.5S"))


def test_cfl_violation_through_the_command_line_is_one_line(tmp_path, capsys):
    """``pyoops forecast`` and ``--validate-only`` on a config whose tstep breaks the CFL condition: exit code 2
    and exactly one line on stderr, naming the key, the Courant number, the limit and the file:line."""
    from pyoops.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text("model plugin: shallow_water\ngeometry: {nx: 30, ny: 30}\n"
                      "model: {name: ShallowWater, tstep: PT15M}\n"
                      "initial condition: {date: 2010-01-01T00:00:00Z, analytic init: {method: vortex}}\n"
                      f"forecast length: PT6H\noutput: {{filename: {tmp_path}/fc.nc}}\n")
    for extra in ([], ["--validate-only"]):
        capsys.readouterr()
        assert main(["forecast", str(config), "--quiet", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert "model.tstep" in err and "3.98 > 2.83" in err and "PT10M39S" in err and "bad.yaml:3" in err
    assert not (tmp_path / "fc.nc").exists()


def test_cfl_limit_is_the_real_stability_limit():
    """Just below the limit a grid-scale gravity wave stays bounded; just above it grows."""
    geometry = ShallowWaterGeometry({"nx": 8, "ny": 8, "dx": 1000.0, "dy": 1000.0})
    p = N.Physics(1000.0, 9.81, 0.0, 0.0, 1000.0, 1000.0)
    dt_max = 2 * math.sqrt(2) / (p.wave_speed * math.sqrt(2) / 1000.0)
    i = np.arange(8)
    h = 1e-6 * np.cos(np.pi * i / 2)[:, None] * np.cos(np.pi * i / 2)[None, :]  # k dx = pi/2: sin(k dx) = 1
    x0 = np.stack([h, np.zeros_like(h), np.zeros_like(h)])
    for factor, bounded in ((0.99, True), (1.01, False)):
        x = x0.copy()
        for _ in range(200):  # amplification per step: 0.93 at 0.99 dt_max, 1.07 at 1.01 dt_max
            x = N.rk4_step(x, p, factor * dt_max)
        assert (np.abs(x).max() < 1e-6) == bounded
    assert geometry.shape == (8, 8)


# Analytic states ---------------------------------------------------------------------------------------
def test_analytic_states(geometry):
    x = make_state(geometry, "vortex", amplitude=3.0, x0=0.0, y0=0.0).fields
    assert x["h"][0, 0] == 3.0 and x["h"].max() == 3.0
    ug, vg = N.geostrophic_winds(x["h"], 1e-4, 9.81, geometry.dx, geometry.dy)
    assert np.array_equal(x["u"], ug) and np.array_equal(x["v"], vg)
    a = make_state(geometry, "turbulence", seed=5, amplitude=0.7).fields
    b = make_state(geometry, "turbulence", seed=5, amplitude=0.7).fields
    c = make_state(geometry, "turbulence", seed=6, amplitude=0.7).fields
    assert np.array_equal(a["h"], b["h"]) and not np.array_equal(a["h"], c["h"])
    assert np.sqrt(np.mean(a["h"] ** 2)) == pytest.approx(0.7, rel=1e-12) and abs(a["h"].mean()) < 1e-14
    jet = make_state(geometry, "jet", amplitude=2.0).fields
    assert np.all(jet["v"] == 0) and jet["u"][7].mean() > 0.5 and jet["u"][22].mean() < -0.5
    pulse = make_state(geometry, "gravity wave pulse").fields
    assert np.all(pulse["u"] == 0) and pulse["h"][15, 15] == 1.0
    rest = make_state(geometry, "rest").fields
    assert all(np.all(rest[v] == 0) for v in "huv")


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: ShallowWaterGeometry({"nx": 3}), "nx"),
        (lambda: ShallowWaterGeometry({"nx": 8, "dx": -1.0}), "dx"),
        (lambda: ShallowWaterModel({"tstep": "PT0S"}, ShallowWaterGeometry({})), "tstep"),
        (lambda: ShallowWaterModel({"mean depth": 0.0}, ShallowWaterGeometry({})), "mean depth"),
        (lambda: ShallowWaterTLM({"gravity": 9.8}, ShallowWaterGeometry({})), "gravity"),
        (lambda: make_state(ShallowWaterGeometry({}), "tornado"), "method"),
        (lambda: make_state(ShallowWaterGeometry({}), "turbulence"), "seed"),
        (lambda: make_state(ShallowWaterGeometry({}), "vortex", f=0.0), "f"),
    ],
)
def test_bad_parameters(build, key):
    with pytest.raises(ConfigError) as info:
        build()
    assert key in str(info.value)
    if key == "method":
        assert all(m in str(info.value) for m in ShallowWaterState.analytic_methods)


# Linear model ------------------------------------------------------------------------------------------
def test_tl_ad_with_diffusion_and_batched_trajectory(geometry):
    """The interface kit runs without diffusion; here: with diffusion, over 1 hour of turbulence, and with
    a batched trajectory (members of the trajectory and of the increment paired)."""
    params = {"tstep": "PT10M", "diffusion": 1000.0}
    model, tlm = ShallowWaterModel(params, geometry), ShallowWaterTLM(params, geometry)
    x0 = make_state(geometry, "turbulence", seed=8)
    rng = generator(3, "members")
    x0.fields = FieldSet({v: a + 0.1 * rng.standard_normal((2,) + a.shape) for v, a in x0.fields.items()})
    length = Duration("PT1H")
    base = forecast(model, x0.copy(), length, post=[TrajectorySaver(tlm)])
    dx = GenericIncrement.zeros(geometry, geometry.variables, DATE, (2,))
    dx.random(generator(4, "dx"))
    tl = forecast_tl(tlm, dx.copy(), length)
    errors = []
    for alpha in (1e-3, 1e-4, 1e-5, 1e-6):
        xp = x0.copy()
        step = dx.copy()
        step *= alpha
        xp += step
        xp = forecast(model, xp, length)
        fd = np.concatenate([(xp.fields[v] - base.fields[v]).ravel() / alpha for v in "huv"])
        ref = np.concatenate([tl.fields[v].ravel() for v in "huv"])
        errors.append(np.linalg.norm(fd - ref) / np.linalg.norm(ref))
    assert min(errors) < 1e-7, errors
    dy = GenericIncrement.zeros(geometry, geometry.variables, DATE + length, (2,))
    dy.random(generator(5, "dy"))
    lhs = tl.dot_product_with(dy)
    rhs = dx.dot_product_with(forecast_ad(tlm, dy.copy(), length))
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), abs(rhs))


# Registration --------------------------------------------------------------------------------------------
def test_entry_point_registration():
    from pyoops.registry import get_registry, reset_registry
    from pyoops_shallow_water import GeostrophicBalance, ShallowWaterModel as Model

    reset_registry()
    registry = get_registry()
    plugin = registry.model_plugin("shallow_water")
    assert plugin.geometry is ShallowWaterGeometry and plugin.state is ShallowWaterState
    assert registry.model.get("ShallowWater") is Model
    assert registry.linear_model.get("ShallowWaterTLM") is ShallowWaterTLM
    assert registry.saber_block.get("geostrophic balance") is GeostrophicBalance
