r"""Numerics of the rotating shallow-water model: tendencies, RK4, and their TL/AD.

Equations
---------
With the surface-height anomaly :math:`h` (total depth :math:`D = H + h`), the wind
:math:`\mathbf{u} = (u, v)`, gravity :math:`g`, a constant Coriolis parameter
:math:`f` (f-plane) and optional dissipation :math:`\mathcal{D} = \nu\nabla^2 - \nu_4\nabla^4`
(Laplacian diffusion and biharmonic hyperdiffusion), the model integrates the
vector-invariant form

.. math::

    \partial_t u &= \;\;\, q\,v - \partial_x \Phi + \mathcal{D}u, \\
    \partial_t v &= -q\,u - \partial_y \Phi + \mathcal{D}v, \\
    \partial_t h &= -\partial_x(D u) - \partial_y(D v) + \mathcal{D}h,

with the absolute vorticity :math:`q = f + \zeta`, :math:`\zeta = \partial_x v - \partial_y u`,
and the Bernoulli function :math:`\Phi = g h + \tfrac12(u^2 + v^2)`.

Space: collocated (A) grid, centred differences
------------------------------------------------
Every variable sits at every grid point, and
:math:`\delta_x a_i = (a_{i+1} - a_{i-1}) / (2\Delta x)` (periodic), likewise
:math:`\delta_y`; :math:`\nabla^2` is the 5-point Laplacian and :math:`\nabla^4` its
square.  This semi-discrete scheme conserves, up to the time-stepping error,

* **mass** :math:`\sum h\,\Delta A`: the tendency of :math:`h` is a sum of
  centred differences, whose sum over a periodic grid vanishes identically
  (and :math:`\sum\mathcal{D}h = 0`), so mass is conserved to round-off by every
  Runge–Kutta stage;
* **energy** :math:`E = \sum \big(\tfrac12 D |\mathbf{u}|^2 + \tfrac12 g h^2\big)\Delta A`
  without dissipation: :math:`\mathrm{d}E/\mathrm{d}t = \sum (D\mathbf{u}\cdot\partial_t\mathbf{u}
  + \Phi\,\partial_t h)`; the vorticity term :math:`q\,\mathbf{k}\times\mathbf{u}` is
  orthogonal to :math:`D\mathbf{u}` point by point (all variables collocated), and
  :math:`-\sum D\mathbf{u}\cdot\delta\Phi - \sum \Phi\,\delta\cdot(D\mathbf{u}) = 0` because
  :math:`\delta_x` is skew-symmetric on a periodic grid.  The energy error is then that of
  RK4 alone (measured in the plugin's tests).

The known weakness of the A-grid is that :math:`\delta_x` annihilates the
:math:`2\Delta x` wave (:math:`(-1)^i`): a grid-scale checkerboard in :math:`h` exerts
no pressure force and sits still (the "computational mode"), and short gravity
waves are slow (numerical phase speed :math:`\sqrt{gH}\,\sin(k\Delta x)/(k\Delta x)`).
Smooth, well-resolved flows are unaffected, but turbulence cascades variance to
the grid scale, where it piles up as checkerboard noise within a day.  The
dissipation damps it, because the 5-point Laplacian does see the checkerboard
(eigenvalue :math:`-4/\Delta x^2 - 4/\Delta y^2`).  Hyperdiffusion is the
scale-selective choice: on the default 30×30 grid,
:math:`\nu_4 = 10^{12}\,\mathrm{m^4\,s^{-1}}` (the tutorial's value) damps the
checkerboard with an e-folding time of about 4 hours and a 450 km wave with one of
about 300 days.  An
Arakawa C-grid would avoid both, but pyoops's generic tools (interpolation to
observations, the SABER ``interpolation`` block, inner-loop resolution change,
the interface kit) assume that all variables share the grid points.

Time: classical RK4
-------------------
.. math::

    k_1 = F(X),\; k_2 = F(X + \tfrac{\Delta t}{2}k_1),\; k_3 = F(X + \tfrac{\Delta t}{2}k_2),\;
    k_4 = F(X + \Delta t\,k_3),\quad X' = X + \tfrac{\Delta t}{6}(k_1 + 2k_2 + 2k_3 + k_4).

The linearised centred scheme has purely imaginary eigenvalues
:math:`\pm i\omega`, :math:`\omega^2 = f^2 + gH(s_x^2 + s_y^2)`,
:math:`s_x = \sin(k\Delta x)/\Delta x`, whose largest value is
:math:`\omega_{\max}^2 = f^2 + gH(\Delta x^{-2} + \Delta y^{-2})`.  RK4 is stable on the
imaginary axis up to :math:`|\omega\Delta t| \le 2\sqrt2`, hence the CFL condition
checked at configuration (:func:`~pyoops_shallow_water.model.check_cfl`)

.. math::

    \sqrt{gH}\,\Delta t\,\sqrt{\Delta x^{-2} + \Delta y^{-2}} \le \sqrt{8 - (f\Delta t)^2}
    \quad(\approx 2\sqrt2;\ \text{for } \Delta x = \Delta y:\ \sqrt{gH}\,\Delta t/\Delta x \lesssim 2),

and, with dissipation, :math:`\Delta t\,(\nu\lambda + \nu_4\lambda^2) \le 2.785`,
:math:`\lambda = 4/\Delta x^2 + 4/\Delta y^2` (RK4 on the negative real axis).  Advection by the flow adds :math:`|u|/\Delta x + |v|/\Delta y` to
:math:`\omega`, which is small against :math:`\sqrt{gH}/\Delta x` in the regimes of
interest (a Froude number :math:`|u|/\sqrt{gH}` of a few per cent).

Arrays
------
A state is one stacked array ``X`` of shape ``(..., 3, ny, nx)`` holding
``(h, u, v)``; any leading axes are ensemble members, and every operation only
shifts the last two axes, so a batched step equals the member-by-member steps
bit for bit.  The tangent linear is the exact derivative of the discrete RK4
step, and the adjoint its exact transpose (dot-product test to round-off).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pyoops.generic import timestepping

__all__ = [
    "Physics",
    "courant_number",
    "ddx",
    "ddy",
    "energy",
    "geostrophic_winds",
    "laplacian",
    "mass",
    "rk4_step",
    "rk4_step_ad",
    "rk4_step_tl",
    "tendency",
    "tendency_ad",
    "tendency_tl",
]

#: RK4 stability limit on the imaginary axis, :math:`|\omega\,\Delta t| \le 2\sqrt{2}`.
RK4_IMAGINARY_LIMIT = 2.0 * math.sqrt(2.0)
#: RK4 stability limit on the negative real axis, :math:`|\lambda\,\Delta t| \le 2.785\ldots`
RK4_REAL_LIMIT = 2.785293563405282


@dataclass(frozen=True)
class Physics:
    """Constants of one model configuration."""

    depth: float  #: mean depth H (m)
    g: float  #: gravity (m s^-2)
    f: float  #: Coriolis parameter (s^-1)
    nu: float  #: Laplacian diffusion (m^2 s^-1)
    dx: float  #: grid spacing in x (m)
    dy: float  #: grid spacing in y (m)
    nu4: float = 0.0  #: biharmonic hyperdiffusion (m^4 s^-1)

    @property
    def wave_speed(self) -> float:
        r"""Gravity-wave speed :math:`\sqrt{gH}` (m/s)."""
        return math.sqrt(self.g * self.depth)


# Difference operators on the last two axes (periodic) ----------------------------------------
def ddx(a: np.ndarray, dx: float) -> np.ndarray:
    r"""Centred difference :math:`(a_{i+1} - a_{i-1}) / (2\Delta x)` along the last axis (periodic)."""
    out = np.empty_like(a)
    np.subtract(a[..., 2:], a[..., :-2], out=out[..., 1:-1])
    np.subtract(a[..., 1], a[..., -1], out=out[..., 0])
    np.subtract(a[..., 0], a[..., -2], out=out[..., -1])
    out *= 0.5 / dx
    return out


def ddy(a: np.ndarray, dy: float) -> np.ndarray:
    r"""Centred difference :math:`(a_{j+1} - a_{j-1}) / (2\Delta y)` along the second-last axis (periodic)."""
    out = np.empty_like(a)
    np.subtract(a[..., 2:, :], a[..., :-2, :], out=out[..., 1:-1, :])
    np.subtract(a[..., 1, :], a[..., -1, :], out=out[..., 0, :])
    np.subtract(a[..., 0, :], a[..., -2, :], out=out[..., -1, :])
    out *= 0.5 / dy
    return out


def _dissipation(x: np.ndarray, p: "Physics") -> np.ndarray | None:
    r""":math:`\nu\nabla^2 x - \nu_4\nabla^4 x` (symmetric in x, so its own adjoint), or None."""
    if not (p.nu or p.nu4):
        return None
    lap = laplacian(x, p.dx, p.dy)
    out = p.nu * lap if p.nu else np.zeros_like(lap)
    if p.nu4:
        out -= p.nu4 * laplacian(lap, p.dx, p.dy)
    return out


def laplacian(a: np.ndarray, dx: float, dy: float) -> np.ndarray:
    r"""5-point Laplacian on the last two axes (periodic); symmetric and negative semi-definite."""
    out = np.empty_like(a)
    ax = out  # x part first
    np.add(a[..., 2:], a[..., :-2], out=ax[..., 1:-1])
    np.add(a[..., 1], a[..., -1], out=ax[..., 0])
    np.add(a[..., 0], a[..., -2], out=ax[..., -1])
    out -= 2.0 * a
    out *= 1.0 / dx ** 2
    ay = np.empty_like(a)
    np.add(a[..., 2:, :], a[..., :-2, :], out=ay[..., 1:-1, :])
    np.add(a[..., 1, :], a[..., -1, :], out=ay[..., 0, :])
    np.add(a[..., 0, :], a[..., -2, :], out=ay[..., -1, :])
    ay -= 2.0 * a
    ay *= 1.0 / dy ** 2
    out += ay
    return out


# Tendencies ----------------------------------------------------------------------------------------
def tendency(x: np.ndarray, p: Physics) -> np.ndarray:
    """:math:`F(X)` for ``X = (h, u, v)`` stacked on axis -3."""
    h, u, v = x[..., 0, :, :], x[..., 1, :, :], x[..., 2, :, :]
    out = np.empty_like(x)
    depth = h + p.depth
    q = ddx(v, p.dx) - ddy(u, p.dy) + p.f
    phi = p.g * h + 0.5 * (u * u + v * v)
    out[..., 0, :, :] = -(ddx(depth * u, p.dx) + ddy(depth * v, p.dy))
    out[..., 1, :, :] = q * v - ddx(phi, p.dx)
    out[..., 2, :, :] = -(q * u) - ddy(phi, p.dy)
    diss = _dissipation(x, p)
    if diss is not None:
        out += diss
    return out


def tendency_tl(dx_: np.ndarray, x: np.ndarray, p: Physics) -> np.ndarray:
    r"""Jacobian product :math:`F'(X)\,\delta X`."""
    h, u, v = x[..., 0, :, :], x[..., 1, :, :], x[..., 2, :, :]
    dh, du, dv = dx_[..., 0, :, :], dx_[..., 1, :, :], dx_[..., 2, :, :]
    out = np.empty(np.broadcast_shapes(x.shape, dx_.shape))
    depth = h + p.depth
    q = ddx(v, p.dx) - ddy(u, p.dy) + p.f
    dq = ddx(dv, p.dx) - ddy(du, p.dy)
    dphi = p.g * dh + u * du + v * dv
    out[..., 0, :, :] = -(ddx(dh * u + depth * du, p.dx) + ddy(dh * v + depth * dv, p.dy))
    out[..., 1, :, :] = dq * v + q * dv - ddx(dphi, p.dx)
    out[..., 2, :, :] = -(dq * u) - q * du - ddy(dphi, p.dy)
    diss = _dissipation(dx_, p)
    if diss is not None:
        out += diss
    return out


def tendency_ad(a: np.ndarray, x: np.ndarray, p: Physics) -> np.ndarray:
    r"""Transposed Jacobian product :math:`F'(X)^\mathsf{T} a`.

    Uses :math:`\delta_x^\mathsf{T} = -\delta_x` (skew-symmetric) and
    :math:`(\nabla^2)^\mathsf{T} = \nabla^2`; each line undoes one term of
    :func:`tendency_tl`.
    """
    h, u, v = x[..., 0, :, :], x[..., 1, :, :], x[..., 2, :, :]
    ah, au, av = a[..., 0, :, :], a[..., 1, :, :], a[..., 2, :, :]
    out = np.empty(np.broadcast_shapes(x.shape, a.shape))
    depth = h + p.depth
    q = ddx(v, p.dx) - ddy(u, p.dy) + p.f
    aphi = ddx(au, p.dx) + ddy(av, p.dy)          # from -ddx(dphi), -ddy(dphi)
    aq = v * au - u * av                           # from dq * v, -dq * u
    af = ddx(ah, p.dx)                             # from -ddx(F), F = dh u + D du
    ag = ddy(ah, p.dy)                             # from -ddy(G), G = dh v + D dv
    out[..., 0, :, :] = p.g * aphi + u * af + v * ag
    out[..., 1, :, :] = u * aphi - q * av + ddy(aq, p.dy) + depth * af
    out[..., 2, :, :] = v * aphi + q * au - ddx(aq, p.dx) + depth * ag
    diss = _dissipation(a, p)
    if diss is not None:
        out += diss
    return out


# RK4 ------------------------------------------------------------------------------------------------
def rk4_step(x: np.ndarray, p: Physics, dt: float) -> np.ndarray:
    """One classical RK4 step of length ``dt`` seconds (:func:`pyoops.generic.timestepping.rk4_step`)."""
    return timestepping.rk4_step(x, lambda y: tendency(y, p), dt)


def rk4_step_tl(dx_: np.ndarray, x: np.ndarray, p: Physics, dt: float) -> np.ndarray:
    r"""Exact TL of :func:`rk4_step` about ``x`` (:func:`pyoops.generic.timestepping.rk4_step_tl`)."""
    return timestepping.rk4_step_tl(dx_, x, lambda y: tendency(y, p), lambda d, y: tendency_tl(d, y, p), dt)


def rk4_step_ad(ax: np.ndarray, x: np.ndarray, p: Physics, dt: float) -> np.ndarray:
    """Exact adjoint of :func:`rk4_step_tl` (:func:`pyoops.generic.timestepping.rk4_step_ad`)."""
    return timestepping.rk4_step_ad(ax, x, lambda y: tendency(y, p), lambda a, y: tendency_ad(a, y, p), dt)


# Diagnostics ---------------------------------------------------------------------------------------
def mass(x: np.ndarray, p: Physics) -> np.ndarray:
    r"""Total mass anomaly :math:`\sum h\,\Delta x\Delta y` (m³), per member."""
    return x[..., 0, :, :].sum(axis=(-2, -1)) * (p.dx * p.dy)


def energy(x: np.ndarray, p: Physics) -> np.ndarray:
    r"""Total energy :math:`\sum (\tfrac12 D|\mathbf{u}|^2 + \tfrac12 g h^2)\Delta x\Delta y` (per unit density), per member."""
    h, u, v = x[..., 0, :, :], x[..., 1, :, :], x[..., 2, :, :]
    e = 0.5 * (p.depth + h) * (u * u + v * v) + 0.5 * p.g * h * h
    return e.sum(axis=(-2, -1)) * (p.dx * p.dy)


def geostrophic_winds(h: np.ndarray, f: float, g: float, dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
    r"""Winds in discrete geostrophic balance with ``h``: :math:`u = -(g/f)\delta_y h`, :math:`v = (g/f)\delta_x h`.

    Such a state is an exact steady state of the linearised model (the Coriolis
    force :math:`f\mathbf{k}\times\mathbf{u}` cancels :math:`g\nabla h` point by point).
    """
    if f == 0:
        raise ValueError("geostrophic winds need a non-zero Coriolis parameter f")
    return -(g / f) * ddy(h, dy), (g / f) * ddx(h, dx)


def courant_number(p: Physics, dt: float) -> float:
    r"""Gravity-wave Courant number :math:`\sqrt{gH}\,\Delta t\,\sqrt{\Delta x^{-2} + \Delta y^{-2}}`."""
    return p.wave_speed * dt * math.sqrt(p.dx ** -2 + p.dy ** -2)
