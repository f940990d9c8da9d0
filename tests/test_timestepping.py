"""pyoops.generic.timestepping: the shared RK4 with exact TL and adjoint, and the tstep parameters."""

from __future__ import annotations

import numpy as np
import pytest

from pyoops.config.parameters import validate
from pyoops.generic.timestepping import TimeSteppingParameters, rk4_step, rk4_step_ad, rk4_step_tl
from pyoops.util.datetime import Duration
from pyoops.util.errors import ConfigError

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0


def lorenz63(x: np.ndarray) -> np.ndarray:
    """Lorenz (1963) on the last axis (batched)."""
    a, b, c = x[..., 0], x[..., 1], x[..., 2]
    return np.stack([SIGMA * (b - a), a * (RHO - c) - b, a * b - BETA * c], axis=-1)


def lorenz63_tl(d: np.ndarray, x: np.ndarray) -> np.ndarray:
    a, b, c = x[..., 0], x[..., 1], x[..., 2]
    da, db, dc = d[..., 0], d[..., 1], d[..., 2]
    return np.stack([SIGMA * (db - da), da * (RHO - c) - a * dc - db, da * b + a * db - BETA * dc], axis=-1)


def lorenz63_ad(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    a, b, c = x[..., 0], x[..., 1], x[..., 2]
    g0, g1, g2 = g[..., 0], g[..., 1], g[..., 2]
    return np.stack([-SIGMA * g0 + (RHO - c) * g1 + b * g2, SIGMA * g0 - g1 + a * g2, -a * g1 - BETA * g2], axis=-1)


X = np.array([[1.0, 2.0, 20.0], [-3.0, 0.5, 25.0]])  # two members
H = 0.01


def test_step_is_the_textbook_formula_bit_for_bit():
    """The memory-lean step equals x + h/6 (k1 + 2 (k2 + k3) + k4) exactly (the Lorenz-96 plugin relies on it)."""
    k1 = lorenz63(X)
    k2 = lorenz63(X + 0.5 * H * k1)
    k3 = lorenz63(X + 0.5 * H * k2)
    k4 = lorenz63(X + H * k3)
    assert np.array_equal(rk4_step(X, lorenz63, H), X + (H / 6.0) * (k1 + 2.0 * (k2 + k3) + k4))


def test_tangent_linear_matches_finite_differences():
    """||M(x + a dx) - M(x) - a M'dx|| / ||a M'dx|| falls like a until round-off: best below 1e-7."""
    rng = np.random.default_rng(1)
    dx = rng.standard_normal(X.shape)
    tl = rk4_step_tl(dx, X, lorenz63, lorenz63_tl, H)
    errors = [np.linalg.norm(rk4_step(X + a * dx, lorenz63, H) - rk4_step(X, lorenz63, H) - a * tl)
              / np.linalg.norm(a * tl) for a in 10.0 ** -np.arange(1, 9)]
    assert min(errors) < 1e-7 and errors[1] < 0.2 * errors[0]


def test_adjoint_passes_the_dot_product_test():
    """<M'dx, y> = <dx, M'^T y> to 1e-13 relative (a sum of a few products per member)."""
    rng = np.random.default_rng(2)
    dx, y = rng.standard_normal(X.shape), rng.standard_normal(X.shape)
    lhs = float(np.vdot(rk4_step_tl(dx, X, lorenz63, lorenz63_tl, H), y))
    rhs = float(np.vdot(dx, rk4_step_ad(y, X, lorenz63, lorenz63_ad, H)))
    assert abs(lhs - rhs) <= 1e-13 * max(abs(lhs), abs(rhs))


def test_batched_members_equal_single_steps_bit_for_bit():
    for k in range(2):
        assert np.array_equal(rk4_step(X, lorenz63, H)[k], rk4_step(X[k], lorenz63, H))


def test_tstep_must_be_positive_and_converts_to_model_units():
    params = validate(TimeSteppingParameters, {"tstep": "PT6H"}, "model")
    assert params.time_step() == 21600.0 and params.time_step(Duration("P5D")) == 0.05
    for bad in ("PT0S", "-PT1H"):
        with pytest.raises(ConfigError, match=r"^model\.tstep: must be positive"):
            validate(TimeSteppingParameters, {"tstep": bad}, "model")
