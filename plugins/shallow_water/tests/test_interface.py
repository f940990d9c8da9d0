"""The generic OOPS interface suites (pyoops.testing) on shallow water, and independent checks
of the reference values they use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from pyoops.testing import InterfaceTests

CONFIG = Path(__file__).with_name("interface.yaml")


class TestShallowWaterInterface(InterfaceTests):
    config_file = CONFIG


def independent_vortex(n: int, length: float, amplitude: float, radius: float, f: float = 1e-4,
                       g: float = 9.81) -> np.ndarray:
    """(h, u, v) of the balanced Gaussian vortex, written from the formulas with np.roll only."""
    d = length / n
    c = np.arange(n) * d - 0.5 * length
    c = (c + 0.5 * length) % length - 0.5 * length
    r2 = c[:, None] ** 2 + c[None, :] ** 2
    h = amplitude * np.exp(-r2 / (2 * radius ** 2))
    u = -(g / f) * (np.roll(h, -1, 0) - np.roll(h, 1, 0)) / (2 * d)
    v = (g / f) * (np.roll(h, -1, 1) - np.roll(h, 1, 1)) / (2 * d)
    return np.stack([h, u, v])


def independent_rk4(x: np.ndarray, dt: float, nsteps: int, d: float, depth: float = 1000.0, f: float = 1e-4,
                    g: float = 9.81) -> np.ndarray:
    """RK4 of the vector-invariant shallow-water equations with np.roll centred differences."""
    def dx(a):
        return (np.roll(a, -1, 1) - np.roll(a, 1, 1)) / (2 * d)

    def dy(a):
        return (np.roll(a, -1, 0) - np.roll(a, 1, 0)) / (2 * d)

    def rhs(s):
        h, u, v = s
        q = f + dx(v) - dy(u)
        b = g * h + 0.5 * (u ** 2 + v ** 2)
        return np.stack([-dx((depth + h) * u) - dy((depth + h) * v), q * v - dx(b), -q * u - dy(b)])

    for _ in range(nsteps):
        k1 = rhs(x)
        k2 = rhs(x + 0.5 * dt * k1)
        k3 = rhs(x + 0.5 * dt * k2)
        k4 = rhs(x + dt * k3)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def test_reference_norms_against_independent_code():
    """'state.norm' and 'model test.final norm' of interface.yaml are what independent numpy code gives."""
    cfg = yaml.safe_load(CONFIG.read_text())
    init = cfg["state"]["analytic init"]
    assert init["method"] == "vortex" and cfg["geometry"] == {"nx": 30, "ny": 30}
    assert cfg["model"]["tstep"] == "PT10M" and cfg["model test"]["forecast length"] == "PT6H"
    x0 = independent_vortex(30, 950e3, init["amplitude"], init["radius"])
    assert abs(np.sqrt(np.mean(x0 ** 2)) - cfg["state"]["norm"]) <= 1e-13 * cfg["state"]["norm"]
    x = independent_rk4(x0, 600.0, 36, 950e3 / 30)
    norm = np.sqrt(np.mean(x ** 2))
    assert abs(norm - cfg["model test"]["final norm"]) <= 1e-12 * norm
