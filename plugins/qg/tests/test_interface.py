"""The generic OOPS interface suites (pyoops.testing) on QG, and an independent check of the
reference state norm they use."""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from pyoops.testing import InterfaceTests

CONFIG = Path(__file__).with_name("interface.yaml")


class TestQgInterface(InterfaceTests):
    config_file = CONFIG


def test_state_norm_independent():
    """``state.norm`` of interface.yaml from the formulas of the analytic state, in plain Python.

    Streamfunction psi_l = -u_l (y - Ly/2) + a Ly/pi sin(pi y/Ly) w(x) with u_l = -2 + 60 z_l/H,
    z = (D1/2, D1 + D2/2); w(x) = mean over k = 1..6 of cos(2 pi k x/Lx + 2 pi k 0.618034).
    q, u, v by the centred finite differences of the model (one-sided second order for u on
    the walls, q = F-coupling + beta term on the wall rows); orography exp(-r^2/a^2) of 1000 m
    at (Lx/4, 3 Ly/4) under the lower layer.  No numpy, no plugin code.
    """
    cfg = yaml.safe_load(CONFIG.read_text())
    nx, ny = cfg["geometry"]["nx"], cfg["geometry"]["ny"]
    d1, d2 = cfg["geometry"]["depths"]
    a = cfg["state"]["analytic init"]["perturbation"]
    lx, ly = 12.0e6, 6.3e6
    dx, dy = lx / nx, ly / (ny - 1)
    f0, beta, gprime = 1.0e-4, 1.5e-11, 10.0 * 0.1
    fcoef = [f0 * f0 / (gprime * d1), f0 * f0 / (gprime * d2)]
    z = [d1 / 2, d1 + d2 / 2]
    wind = [-2.0 + 60.0 * zl / (d1 + d2) for zl in z]

    def wave(i: int) -> float:
        return sum(math.cos(2 * math.pi * k * i * dx / lx + 2 * math.pi * k * 0.618034) for k in range(1, 7)) / 6

    def prof(j: int) -> float:
        return 0.0 if j in (0, ny - 1) else math.sin(math.pi * j / (ny - 1))

    psi = [[[-wind[l] * (j * dy - ly / 2) + a * ly / math.pi * prof(j) * wave(i) for i in range(nx)]
            for j in range(ny)] for l in range(2)]

    def oro(j: int, i: int) -> float:
        ddx = abs(i * dx - lx / 4)
        ddx = min(ddx, lx - ddx)
        return 1000.0 * math.exp(-(ddx ** 2 + (j * dy - 0.75 * ly) ** 2) / 1.0e12)

    total, count = 0.0, 0
    for l in range(2):
        other = 1 - l
        for j in range(ny):
            for i in range(nx):
                p = psi[l]
                x = p[j][i]
                v = (p[j][(i + 1) % nx] - p[j][i - 1]) / (2 * dx)
                if j == 0:
                    u = -(-3 * p[0][i] + 4 * p[1][i] - p[2][i]) / (2 * dy)
                elif j == ny - 1:
                    u = -(3 * p[j][i] - 4 * p[j - 1][i] + p[j - 2][i]) / (2 * dy)
                else:
                    u = -(p[j + 1][i] - p[j - 1][i]) / (2 * dy)
                q = -fcoef[l] * (x - psi[other][j][i]) + beta * (j * dy - ly / 2)
                if 0 < j < ny - 1:
                    q += ((p[j][(i + 1) % nx] - 2 * x + p[j][i - 1]) / dx ** 2
                          + (p[j + 1][i] - 2 * x + p[j - 1][i]) / dy ** 2)
                if l == 0:
                    q += f0 * oro(j, i) / d1
                total += x * x + q * q + u * u + v * v
                count += 4
    norm = math.sqrt(total / count)
    assert abs(norm - cfg["state"]["norm"]) <= 1e-12 * norm, (norm, cfg["state"]["norm"])
