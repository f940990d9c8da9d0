r"""Fixtures of the diagnostics tests: linear-Gaussian and ensemble toys simulated in numpy.

Linear-Gaussian toy (``toy.simulate``): a periodic 1-D grid of ``n = 20`` points, background
error covariance :math:`\mathbf B = \sigma_b^2 \exp(-\tfrac12 (r/L)^2)` with the chordal
distance :math:`r` and :math:`L = 6` grid lengths (smooth), ``p = 10`` observations of every
second point with :math:`\mathbf R = \sigma_o^2 \mathbf I` (white).  Per cycle, independently
(or with AR(1)-correlated background errors, ``phi``):
:math:`x_b = x_t + e_b`, :math:`e_b\sim\mathcal N(0,\mathbf B)`;
:math:`y = \mathbf H x_t + e_o`, :math:`e_o\sim\mathcal N(0,\mathbf R)`;
:math:`x_a = x_b + \mathbf K'(y - \mathbf H x_b)`, the BLUE with the *assumed*
:math:`\mathbf B' = b\,\mathbf B`, :math:`\mathbf R' = r\,\mathbf R`.  The archive holds the
assumed :math:`\sigma_o'` and :math:`\mathrm{diag}(\mathbf{HB'H}^\mathrm{T})`, and
:math:`J(x_a) = \tfrac12 d^\mathrm{T}(\mathbf{HB'H}^\mathrm{T}+\mathbf R')^{-1}d` (the value of the
cost function at its minimum for a linear problem; it avoids inverting the
nearly singular smooth :math:`\mathbf B`).

``toy.expected(b, r)`` gives the exact expectations of the ratios for any
mis-specification, with :math:`\mathbf S = \mathbf{HBH}^\mathrm{T}+\mathbf R` and
:math:`\mathbf S' = \mathbf{HB'H}^\mathrm{T}+\mathbf R'`:
:math:`E[d^a d^\mathrm{T}] = \mathbf R'\mathbf S'^{-1}\mathbf S`,
:math:`E[\delta d^\mathrm{T}] = \mathbf{HB'H}^\mathrm{T}\mathbf S'^{-1}\mathbf S`,
:math:`E[d_i^2] = S_{ii}`, :math:`E[2J] = \mathrm{tr}(\mathbf S'^{-1}\mathbf S)`.

Ensemble toy (``toy.ensemble``): per observation a centre :math:`\mu`, truth and members
drawn independently around it with standard deviation ``s``; :math:`y = x_t + \sigma_o\varepsilon`.
Truth and members are exchangeable, so the ensemble is statistically consistent;
``spread_factor`` shrinks or widens the members' spread to make it inconsistent.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

N_GRID, N_OBS, LENGTH = 20, 10, 6.0
T0 = 1262304000  # 2010-01-01T00:00:00Z
CYCLE_SECONDS = 21600


def toy_matrices(sigma_b: float = 1.0, sigma_o: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i = np.arange(N_GRID)
    chord = (N_GRID / np.pi) * np.sin(np.pi * np.abs(i[:, None] - i[None, :]) / N_GRID)
    B = sigma_b ** 2 * np.exp(-0.5 * (chord / LENGTH) ** 2)
    H = np.zeros((N_OBS, N_GRID))
    H[np.arange(N_OBS), np.arange(N_OBS) * (N_GRID // N_OBS)] = 1.0
    R = sigma_o ** 2 * np.eye(N_OBS)
    return B, H, R


def _sqrtm(B: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(B)
    return V * np.sqrt(np.clip(w, 0.0, None))


def simulate(seed: int, cycles: int = 2000, b_factor: float = 1.0, r_factor: float = 1.0,
             phi: float = 0.0) -> dict[str, Any]:
    """One linear-Gaussian experiment (see the module docstring); arrays flattened cycle after cycle."""
    B, H, R = toy_matrices()
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((cycles, N_GRID))
    if phi:
        from scipy.signal import lfilter

        # AR(1) in time, stationary with unit variance: z_c = phi z_{c-1} + sqrt(1-phi^2) w_c.
        z[0] /= np.sqrt(1 - phi ** 2)
        z = lfilter([np.sqrt(1 - phi ** 2)], [1.0, -phi], z, axis=0)
    eb = z @ _sqrtm(B).T
    eo = rng.standard_normal((cycles, N_OBS)) * np.sqrt(np.diag(R))
    xt = 3.0 * rng.standard_normal((cycles, N_GRID))
    xb = xt + eb
    y = xt @ H.T + eo
    Ba, Ra = b_factor * B, r_factor * R
    Sa = H @ Ba @ H.T + Ra
    K = Ba @ H.T @ np.linalg.inv(Sa)
    d = y - xb @ H.T
    xa = xb + d @ K.T
    J = 0.5 * np.einsum("ci,ij,cj->c", d, np.linalg.inv(Sa), d)
    return {"obs_value": y.ravel(), "obs_error": np.tile(np.sqrt(np.diag(Ra)), cycles),
            "hofx_background": (xb @ H.T).ravel(), "hofx_analysis": (xa @ H.T).ravel(),
            "background_error_variance": np.tile(np.diag(H @ Ba @ H.T), cycles),
            "cycle": np.repeat(np.arange(cycles), N_OBS), "cost": J, "nobs": np.full(cycles, N_OBS)}


def expected(b_factor: float = 1.0, r_factor: float = 1.0) -> dict[str, float]:
    """Exact expectations of the ratio statistics under a mis-specification (module docstring)."""
    B, H, R = toy_matrices()
    Ba, Ra = b_factor * B, r_factor * R
    HBaH = H @ Ba @ H.T
    S, Sa = H @ B @ H.T + R, HBaH + Ra
    Sai = np.linalg.inv(Sa)
    return {"obs error variance ratio": float(np.trace(Ra @ Sai @ S) / np.trace(Ra)),
            "background error variance ratio": float(np.trace(HBaH @ Sai @ S) / np.trace(HBaH)),
            "chi2": float(np.mean(np.diag(S) / np.diag(Sa))),
            "2J/p": float(np.trace(Sai @ S) / N_OBS)}


def ensemble(seed: int, cycles: int = 500, nobs: int = 8, members: int = 10, spread: float = 1.0,
             sigma_o: float = 0.7, spread_factor: float = 1.0) -> dict[str, Any]:
    """An ensemble of ``members`` whose truth is exchangeable with them (``spread_factor = 1``)."""
    rng = np.random.default_rng(seed)
    n = cycles * nobs
    centre = 5.0 * rng.standard_normal(n)
    truth = centre + spread * rng.standard_normal(n)
    hx = centre[:, None] + spread_factor * spread * rng.standard_normal((n, members))
    y = truth + sigma_o * rng.standard_normal(n)
    mean = hx.mean(axis=1)
    return {"obs_value": y, "obs_error": np.full(n, sigma_o), "hofx_background": mean,
            "hofx_analysis": mean, "background_error_variance": hx.var(axis=1, ddof=1),
            "perturbations": hx - mean[:, None], "members_hofx": hx,
            "cycle": np.repeat(np.arange(cycles), nobs), "members": members}


def write_archive(filename: Any, sim: dict[str, Any], cycles: int | None = None, first_cycle: int = 0,
                  geometry: Any = None, method: str = "BLUE", members: int = 0,
                  perturbations: np.ndarray | None = None) -> str:
    """Write a toy simulation into an archive with the public writer (groups 'west'/'east')."""
    from pyoops.diagnostics import InnovationArchiveWriter

    ncyc = int(sim["cycle"].max()) + 1 if cycles is None else cycles
    p = sim["obs_value"].size // (int(sim["cycle"].max()) + 1)
    writer = InnovationArchiveWriter(filename, ["x"], members, geometry=geometry or {"type": "toy", "n": N_GRID},
                                     application="test", method=method)
    for c in range(ncyc):
        sl = slice(c * p, (c + 1) * p)
        k = first_cycle + c
        writer.append_cycle(
            k, T0 + CYCLE_SECONDS * k, obs_value=sim["obs_value"][sl], obs_error=sim["obs_error"][sl],
            hofx_background=sim["hofx_background"][sl], hofx_analysis=sim["hofx_analysis"][sl],
            background_error_variance=sim["background_error_variance"][sl], date_time=T0 + CYCLE_SECONDS * k,
            coordinates={"x": np.arange(p) * 2.0}, variable="x",
            obs_group=np.where(np.arange(p) < p // 2, "west", "east"),
            ensemble_perturbations=None if perturbations is None else perturbations[sl],
            cost_at_analysis=sim["cost"][c] if "cost" in sim else np.nan)
    return str(writer.close())


@pytest.fixture(scope="session")
def toy() -> SimpleNamespace:
    """The toy simulators and helpers of this module."""
    return SimpleNamespace(simulate=simulate, expected=expected, ensemble=ensemble, write_archive=write_archive,
                           matrices=toy_matrices, T0=T0, CYCLE_SECONDS=CYCLE_SECONDS, N_OBS=N_OBS)
