"""The generic OOPS interface suites (pyoops.testing) on Lorenz-96, and an independent check
of the regression value they use."""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from pyoops.testing import InterfaceTests

CONFIG = Path(__file__).with_name("interface.yaml")


class TestLorenz96Interface(InterfaceTests):
    config_file = CONFIG


def independent_rk4(n: int, forcing: float, dt: float, nsteps: int) -> list[float]:
    """Lorenz-96 from the sinusoid x_j = F + sin(2 pi j / n), RK4, written from the equations only.

    dx_j/dt = (x_{j+1} - x_{j-2}) x_{j-1} - x_j + F with periodic indices; plain
    Python floats, no numpy and no plugin code.
    """
    x = [forcing + math.sin(2 * math.pi * j / n) for j in range(n)]

    def f(v: list[float]) -> list[float]:
        return [(v[(j + 1) % n] - v[(j - 2) % n]) * v[(j - 1) % n] - v[j] + forcing for j in range(n)]

    for _ in range(nsteps):
        k1 = f(x)
        k2 = f([a + 0.5 * dt * k for a, k in zip(x, k1)])
        k3 = f([a + 0.5 * dt * k for a, k in zip(x, k2)])
        k4 = f([a + dt * k for a, k in zip(x, k3)])
        x = [a + dt / 6 * (b + 2 * c + 2 * d + e) for a, b, c, d, e in zip(x, k1, k2, k3, k4)]
    return x


def test_final_norm_against_independent_rk4():
    """The 'final norm' regression value of interface.yaml is what an independent RK4 loop gives."""
    cfg = yaml.safe_load(CONFIG.read_text())
    assert cfg["state"]["analytic init"] == {"method": "sinusoid"}
    assert cfg["model"]["tstep"] == "PT6H" and cfg["model test"]["forecast length"] == "P2D"
    x = independent_rk4(cfg["geometry"]["resol"], cfg["model"]["f"], 0.05, 8)
    norm = math.sqrt(sum(v * v for v in x) / len(x))
    assert abs(norm - cfg["model test"]["final norm"]) <= 1e-13 * norm
    assert abs(math.sqrt(64.5) - cfg["state"]["norm"]) <= 1e-15 * cfg["state"]["norm"]
