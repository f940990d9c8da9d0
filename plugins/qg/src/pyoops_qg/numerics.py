r"""Discrete operators of the two-layer QG channel, each with its exact adjoint, and the model step.

Every function takes arrays of shape ``(..., 2, ny, nx)`` (layers, rows, columns)
with any leading batch (ensemble) axes, or the interior rows ``(..., 2, ny-2, nx)``
where said.  Row 0 and row ``ny-1`` lie on the walls (see
:mod:`pyoops_qg.geometry`).

Streamfunction → PV
    On the interior rows, :math:`q = \nabla^2\psi + \mathbf{M}\psi + c` with the
    five-point Laplacian (periodic in :math:`x`, the wall rows as Dirichlet
    data), the layer coupling
    :math:`(\mathbf{M}\psi)_1 = -F_1(\psi_1 - \psi_2)`,
    :math:`(\mathbf{M}\psi)_2 = -F_2(\psi_2 - \psi_1)` and the offset
    :math:`c = \beta(y - L_y/2) + R_s` (:attr:`~pyoops_qg.geometry.QgGeometry.pv_offset`).  On the wall
    rows :math:`q = \mathbf{M}\psi + c`: no relative vorticity (free-slip walls).
    Since the wall streamfunction is constant along a wall, the wall PV only
    changes with the wall values, as OOPS's fixed ``q_north``/``q_south``; an
    extrapolation from the interior instead feeds grid-scale noise back into the
    interior and makes long runs blow up.

Winds
    :math:`u = -\partial_y\psi`, :math:`v = \partial_x\psi`: centred differences,
    second-order one-sided differences for :math:`u` on the wall rows.

PV inversion
    Given :math:`q` on the interior rows and :math:`\psi` on the wall rows, solve
    :math:`(\nabla^2 + \mathbf{M})\psi = q - c` for the interior.  :math:`\mathbf{M}`
    has the eigenvectors :math:`(1, 1)` (barotropic, eigenvalue 0) and
    :math:`(F_1, -F_2)` (baroclinic, :math:`-(F_1 + F_2)`); in those modes the
    problem splits into a Poisson and a Helmholtz equation.  A real FFT in
    :math:`x` diagonalises the periodic second difference (eigenvalues
    :math:`-(2 - 2\cos(2\pi k/n_x))/\Delta x^2`), leaving one constant-coefficient
    tridiagonal system in :math:`y` per mode and zonal wavenumber.  All
    :math:`2(n_x/2 + 1)` systems are stacked into one block-tridiagonal matrix,
    factorised once by LAPACK ``zgttrf`` and solved for every member at once by
    ``zgttrs`` (cost :math:`O(n)` per right-hand side).  The adjoint uses
    :math:`\mathbf{A}^{-\mathsf{T}} = \mathbf{F}^{-1}\mathbf{A}^{-1}\mathbf{F}`
    with :math:`\mathbf{A} = \nabla^2 + \mathbf{M}` and
    :math:`\mathbf{F} = \mathrm{diag}(F_1, F_2)`: :math:`\mathbf{M} = \mathbf{F}\mathbf{S}`
    with :math:`\mathbf{S}` symmetric, so :math:`\mathbf{F}^{-1}\mathbf{A}` is symmetric.

Walls in a model step (:meth:`QgOperators.invert_step_linear`)
    Kelvin's theorem keeps the circulation along each wall of each layer.  With
    the wall streamfunction held fixed instead (as in OOPS), the zonal-mean flow
    next to the walls drifts and the total energy is not conserved (+25% in 20
    days of baroclinic waves).  So a step changes the four wall values (two
    layers, two walls) by the rank-4 correction that keeps the zonal-mean
    :math:`\bar\psi_1 - \bar\psi_0` of both layers at the south wall and the
    baroclinic part of the same at the north wall, and the barotropic north wall
    value (the arbitrary constant); the barotropic north circulation then follows
    from the PV integral.  The inversion is done for the PV change of the step
    (:math:`\psi^{n+1} = \psi^n + \mathcal{L}(q^{n+1} - q^n)`, the same map),
    which keeps the round-off of the large mean-flow streamfunction
    (:math:`\sim 10^8\,\mathrm{m^2 s^{-1}}`) out of it.

Semi-Lagrangian advection (:class:`Departure`, :class:`Linearisation`)
    PV is carried from the departure point of every interior point by bicubic
    Lagrange interpolation: 4 points in :math:`x` (periodic) and 4 rows in
    :math:`y`, the stencil shifted inwards next to the walls (3 rows if
    ``ny == 3``); departure points beyond a wall are moved onto it.  The departure
    point is found by a predictor–corrector (trapezoidal rule along the trajectory):
    the predictor goes back with the wind at the arrival point (OOPS's scheme),
    advects and inverts; the corrector goes back with the mean of the predicted
    wind at the arrival point and the old wind at the predictor's departure point.
    OOPS's one-stage scheme is first order in time and amplifies Rossby waves
    (+8% energy in 3 days for two barotropic vortices at ``PT1H``); the
    predictor–corrector is second order and loses 0.07% a day there.  The tangent
    linear differentiates everything, including the departure points and the
    interpolation weights: :math:`\delta q^+ = \mathbf{W}\delta q + \partial_x\tilde q\,
    \delta x_d + \partial_y\tilde q\,\delta y_d`, with :math:`\tilde q` the interpolating
    polynomial of the trajectory and :math:`\mathbf{W}` the interpolation as a sparse
    matrix, whose transpose is the adjoint.  What a trajectory step keeps (the matrices, the
    departure points they are rebuilt from, or the state only) is :class:`Linearisation`'s
    ``storage``; the numbers are the same in each.

Time-step guard (``_check_displacement``)
    The interpolation stencil is placed around each departure point, wherever it is, so
    the Courant number has no stability limit of its own: a barotropic Rossby wave carried
    by a uniform 120 m/s flow on the 40 × 20 grid stays within 0.4% of a ``PT5M`` run after
    3 days up to Courant 5.9 (``PT4H``), energy within 2e-4.  What degrades with the step is
    the departure point, estimated along a straight trajectory, whose error grows with
    :math:`\Delta t\,|\nabla\mathbf{u}|`.  Each stage still refuses a displacement beyond
    :data:`MAX_DISPLACEMENT` grid lengths: winds that large at the model's usual steps mean
    a state that is not a QG flow or a run that blew up.  The message gives the longest
    ``tstep`` for those winds and, when they form a jet along a wall, its usual cause: a
    streamfunction that varied along the wall (:meth:`QgOperators.rigid_walls`).

Rigid walls of a given field (:meth:`QgOperators.rigid_walls`)
    The model keeps every wall row constant; a field from elsewhere (a draw from B, an
    increment) may vary along a wall.  :meth:`QgOperators.project_walls`, which the step
    applies first, keeps the interior streamfunction, so a departure :math:`a` from the
    wall's mean becomes a jump over one row: a jet :math:`a/(2\Delta y)` and a vorticity
    :math:`a/\Delta y^2`, growing with the resolution.  :meth:`QgOperators.rigid_walls` keeps
    the interior PV instead and inverts it with the zonal-mean walls, which removes the
    homogeneous solution that carries :math:`a` into the interior: no jump.  The SABER block
    ``QG walls`` applies it to B.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.fft as sfft
import scipy.sparse as sp
from scipy.linalg import lapack

from pyoops.util.datetime import Duration
from pyoops.util.errors import NumericalError

__all__ = ["Departure", "Linearisation", "LinearisedStep", "PvInverter", "QgOperators", "Stage", "Storage", "lagrange_weights",
           "sparse_product"]

#: Largest displacement per step along each axis, in grid lengths (see the module docs; a guard on
#: the accuracy of the departure points, not a limit of the interpolation, whose stencil follows them).
MAX_DISPLACEMENT = 2.0
#: A failing step whose winds in the rows next to a wall exceed this many times those of the other
#: rows is reported as a jet along the wall (a state whose streamfunction varied along the wall).
WALL_JET_RATIO = 1.5


# =============================================================================================
# PV inversion
# =============================================================================================
class PvInverter:
    r"""Solve :math:`(\nabla^2 + \mathbf{M})\psi = r` on the interior rows, zero Dirichlet walls.

    Parameters
    ----------
    nx, nyi:
        Number of columns and of interior rows.
    dx, dy:
        Grid spacings (m).
    coupling:
        :math:`(F_1, F_2)` (m⁻²).
    """

    def __init__(self, nx: int, nyi: int, dx: float, dy: float, coupling: np.ndarray):
        f1, f2 = (float(f) for f in coupling)
        self.nx, self.nyi = nx, nyi
        self.coupling = np.array([f1, f2])
        # Columns of P are the eigenvectors of M: psi = P phi, phi = P^-1 psi.
        self.p = np.array([[1.0, f1], [1.0, -f2]])
        self.p_inv = np.array([[f2, f1], [1.0, -1.0]]) / (f1 + f2)
        mode_eig = np.array([0.0, -(f1 + f2)])
        k = np.arange(nx // 2 + 1)
        self.nk = k.size
        x_eig = -(2.0 - 2.0 * np.cos(2.0 * np.pi * k / nx)) / dx ** 2
        diag = -2.0 / dy ** 2 + x_eig[None, :, None] + mode_eig[:, None, None] + np.zeros((2, self.nk, nyi))
        n = diag.size
        off = np.full(n - 1, 1.0 / dy ** 2)
        off[nyi - 1::nyi] = 0.0  # no coupling between consecutive systems
        # Factorised once (as a complex matrix: the right-hand sides are Fourier coefficients).
        dl, d, du, du2, ipiv, info = lapack.zgttrf(off.astype(complex), diag.ravel().astype(complex),
                                                   off.astype(complex))
        if info != 0:  # cannot happen: every system is negative definite
            raise NumericalError(f"PV inversion: tridiagonal factorisation failed (info {info})")
        self._factor = (dl, d, du, du2, ipiv)
        self.size = n

    @staticmethod
    def _modes(a: np.ndarray, m: np.ndarray) -> np.ndarray:
        """``m`` applied along the layer axis (-3)."""
        shape = a.shape
        return np.matmul(m, a.reshape(shape[:-3] + (2, shape[-2] * shape[-1]))).reshape(shape)

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """:math:`\\mathbf{A}^{-1} r` for ``rhs`` of shape ``(..., 2, nyi, nx)``."""
        batch = rhs.shape[:-3]
        nb = int(np.prod(batch, dtype=int))
        s_hat = sfft.rfft(self._modes(rhs, self.p_inv), axis=-1).reshape(nb, 2, self.nyi, self.nk)
        # One system per (mode, k) with y contiguous: columns of a Fortran-ordered (size, nb) array.
        b = s_hat.transpose(0, 1, 3, 2).reshape(nb, self.size).T
        x, info = lapack.zgttrs(*self._factor, b, overwrite_b=1)
        if info != 0:
            raise NumericalError(f"PV inversion: tridiagonal solve failed (info {info})")
        phi_hat = x.T.reshape(nb, 2, self.nk, self.nyi).transpose(0, 1, 3, 2)
        phi = sfft.irfft(phi_hat, n=self.nx, axis=-1).reshape(batch + (2, self.nyi, self.nx))
        return self._modes(phi, self.p)

    def solve_adjoint(self, g: np.ndarray) -> np.ndarray:
        """:math:`\\mathbf{A}^{-\\mathsf{T}} g = \\mathbf{F}^{-1}\\mathbf{A}^{-1}\\mathbf{F} g`."""
        f = self.coupling[:, None, None]
        return self.solve(g * f) / f


# =============================================================================================
# Operators on fields
# =============================================================================================
def _ddx2(a: np.ndarray) -> np.ndarray:
    """Periodic second difference along the last axis (no scaling); symmetric."""
    out = np.empty_like(a)
    out[..., 1:-1] = a[..., 2:] - 2.0 * a[..., 1:-1] + a[..., :-2]
    out[..., 0] = a[..., 1] - 2.0 * a[..., 0] + a[..., -1]
    out[..., -1] = a[..., 0] - 2.0 * a[..., -1] + a[..., -2]
    return out


def _ddx1(a: np.ndarray) -> np.ndarray:
    """Periodic centred difference :math:`a_{i+1} - a_{i-1}` (no scaling); antisymmetric."""
    out = np.empty_like(a)
    out[..., 1:-1] = a[..., 2:] - a[..., :-2]
    out[..., 0] = a[..., 1] - a[..., -1]
    out[..., -1] = a[..., 0] - a[..., -2]
    return out


class QgOperators:
    """The discrete QG operators of one :class:`~pyoops_qg.geometry.QgGeometry`."""

    def __init__(self, geometry: Any):
        self.geometry = geometry
        self.nx, self.ny = geometry.nx, geometry.ny
        self.nyi = self.ny - 2
        self.dx, self.dy = geometry.dx, geometry.dy
        self.lx, self.ly = geometry.lx, geometry.ly
        self.coupling = geometry.coupling
        self.offset = geometry.pv_offset
        self.inverter = PvInverter(self.nx, self.nyi, self.dx, self.dy, self.coupling)
        mesh = geometry.mesh()
        self.x_interior = mesh["x"][:, 1:-1, :].copy()
        self.y_interior = mesh["y"][:, 1:-1, :].copy()

    # Walls -----------------------------------------------------------------------------------
    @staticmethod
    def project_walls(psi: np.ndarray) -> np.ndarray:
        """Replace each wall row by its zonal mean (rigid walls); an orthogonal projection."""
        out = psi.copy()
        out[..., 0, :] = psi[..., 0, :].mean(axis=-1, keepdims=True)
        out[..., -1, :] = psi[..., -1, :].mean(axis=-1, keepdims=True)
        return out

    @staticmethod
    def wall_anomaly(psi: np.ndarray) -> float:
        """Largest departure of a wall row from its zonal mean (m² s⁻¹): zero for a channel state."""
        rows = psi[..., [0, -1], :]
        return float(np.abs(rows - rows.mean(axis=-1, keepdims=True)).max(initial=0.0))

    def rigid_walls(self, psi: np.ndarray) -> np.ndarray:
        r"""The streamfunction with the interior PV of ``psi`` and its wall rows replaced by their zonal means.

        Linear (the PV without β and orography), idempotent, the identity on fields whose wall rows are
        constant.  Unlike :meth:`project_walls` it leaves no jump next to the walls: it subtracts the
        solution of :math:`(\nabla^2 + \mathbf{M})e = 0` that equals the walls' departure from their
        mean on the walls, which decays away from them over :math:`\min(1/k, L_R)`.
        """
        return self.invert_linear(self.pv_linear(psi)[..., 1:-1, :], self.project_walls(psi))

    def rigid_walls_ad(self, g: np.ndarray) -> np.ndarray:
        """Adjoint of :meth:`rigid_walls`."""
        q_bar, walls_bar = self.invert_linear_ad(g)
        full = np.zeros_like(g)
        full[..., 1:-1, :] = q_bar
        return self.pv_linear_ad(full) + self.project_walls(walls_bar)

    # Laplacian and layer coupling ---------------------------------------------------------------
    def laplacian(self, psi: np.ndarray) -> np.ndarray:
        """Five-point Laplacian on the interior rows (walls as Dirichlet data)."""
        inner = psi[..., 1:-1, :]
        return (_ddx2(inner) / self.dx ** 2
                + (psi[..., 2:, :] - 2.0 * inner + psi[..., :-2, :]) / self.dy ** 2)

    def laplacian_ad(self, g: np.ndarray) -> np.ndarray:
        out = np.zeros(g.shape[:-2] + (self.ny, self.nx))
        gy = g / self.dy ** 2
        out[..., 1:-1, :] += _ddx2(g) / self.dx ** 2 - 2.0 * gy
        out[..., 2:, :] += gy
        out[..., :-2, :] += gy
        return out

    def couple(self, psi: np.ndarray) -> np.ndarray:
        """:math:`\\mathbf{M}\\psi`: :math:`-F_1(\\psi_1 - \\psi_2)`, :math:`-F_2(\\psi_2 - \\psi_1)`."""
        diff = psi[..., 0, :, :] - psi[..., 1, :, :]
        f1, f2 = self.coupling
        return np.stack([-f1 * diff, f2 * diff], axis=-3)

    def couple_ad(self, g: np.ndarray) -> np.ndarray:
        f1, f2 = self.coupling
        a = -f1 * g[..., 0, :, :] + f2 * g[..., 1, :, :]
        return np.stack([a, -a], axis=-3)

    # PV -----------------------------------------------------------------------------------------
    def pv_linear(self, psi: np.ndarray) -> np.ndarray:
        """The linear part of :math:`q(\\psi)` on every row (no relative vorticity on the walls)."""
        out = np.empty(psi.shape)
        out[..., 1:-1, :] = self.laplacian(psi) + self.couple(psi[..., 1:-1, :])
        out[..., 0:1, :] = self.couple(psi[..., 0:1, :])
        out[..., -1:, :] = self.couple(psi[..., -1:, :])
        return out

    def pv_linear_ad(self, g: np.ndarray) -> np.ndarray:
        inner = g[..., 1:-1, :]
        out = self.laplacian_ad(inner)
        out[..., 1:-1, :] += self.couple_ad(inner)
        out[..., 0:1, :] += self.couple_ad(g[..., 0:1, :])
        out[..., -1:, :] += self.couple_ad(g[..., -1:, :])
        return out

    def pv(self, psi: np.ndarray) -> np.ndarray:
        """Potential vorticity :math:`q(\\psi)` on every row."""
        return self.pv_linear(psi) + self.offset

    # Winds --------------------------------------------------------------------------------------
    def ddy(self, psi: np.ndarray) -> np.ndarray:
        """:math:`\\partial_y\\psi` on every row (one-sided second order on the walls)."""
        out = np.empty_like(psi)
        h = 2.0 * self.dy
        out[..., 1:-1, :] = (psi[..., 2:, :] - psi[..., :-2, :]) / h
        out[..., 0, :] = (-3.0 * psi[..., 0, :] + 4.0 * psi[..., 1, :] - psi[..., 2, :]) / h
        out[..., -1, :] = (3.0 * psi[..., -1, :] - 4.0 * psi[..., -2, :] + psi[..., -3, :]) / h
        return out

    def ddy_ad(self, g: np.ndarray) -> np.ndarray:
        out = np.zeros_like(g)
        h = 2.0 * self.dy
        inner = g[..., 1:-1, :] / h
        out[..., 2:, :] += inner
        out[..., :-2, :] -= inner
        g0, g1 = g[..., 0, :] / h, g[..., -1, :] / h
        out[..., 0, :] -= 3.0 * g0
        out[..., 1, :] += 4.0 * g0
        out[..., 2, :] -= g0
        out[..., -1, :] += 3.0 * g1
        out[..., -2, :] -= 4.0 * g1
        out[..., -3, :] += g1
        return out

    def ddx(self, psi: np.ndarray) -> np.ndarray:
        """:math:`\\partial_x\\psi` (periodic centred difference)."""
        return _ddx1(psi) / (2.0 * self.dx)

    def ddx_ad(self, g: np.ndarray) -> np.ndarray:
        return -_ddx1(g) / (2.0 * self.dx)

    def winds(self, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:math:`(u, v) = (-\\partial_y\\psi, \\partial_x\\psi)` on every row."""
        return -self.ddy(psi), self.ddx(psi)

    def winds_ad(self, au: np.ndarray, av: np.ndarray) -> np.ndarray:
        return self.ddx_ad(av) - self.ddy_ad(au)

    def winds_interior(self, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:math:`(u, v)` on the interior rows only (centred differences)."""
        u = -(psi[..., 2:, :] - psi[..., :-2, :]) / (2.0 * self.dy)
        return u, self.ddx(psi[..., 1:-1, :])

    def winds_interior_ad(self, au: np.ndarray, av: np.ndarray) -> np.ndarray:
        out = np.zeros(au.shape[:-2] + (self.ny, self.nx))
        g = au / (2.0 * self.dy)
        out[..., 2:, :] -= g
        out[..., :-2, :] += g
        out[..., 1:-1, :] += self.ddx_ad(av)
        return out

    # Inversion ----------------------------------------------------------------------------------
    def invert_linear(self, q_interior: np.ndarray, walls: np.ndarray) -> np.ndarray:
        """:math:`\\psi` on every row from the linear part of q (interior) and the wall rows of ``walls``."""
        rhs = q_interior.copy()
        rhs[..., 0, :] -= walls[..., 0, :] / self.dy ** 2
        rhs[..., -1, :] -= walls[..., -1, :] / self.dy ** 2
        out = np.empty(q_interior.shape[:-2] + (self.ny, self.nx))
        out[..., 1:-1, :] = self.inverter.solve(rhs)
        out[..., 0, :] = walls[..., 0, :]
        out[..., -1, :] = walls[..., -1, :]
        return out

    def invert_linear_ad(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Adjoint of :meth:`invert_linear`: ``(q̄ interior, walls̄)`` (walls̄ is zero off the wall rows)."""
        lam = self.inverter.solve_adjoint(g[..., 1:-1, :])
        walls = np.zeros_like(g)
        walls[..., 0, :] = g[..., 0, :] - lam[..., 0, :] / self.dy ** 2
        walls[..., -1, :] = g[..., -1, :] - lam[..., -1, :] / self.dy ** 2
        return lam, walls

    def invert(self, q_interior: np.ndarray, walls: np.ndarray) -> np.ndarray:
        """PV inversion: :math:`\\psi` from q on the interior rows and :math:`\\psi` on the wall rows."""
        return self.invert_linear(q_interior - self.offset[..., 1:-1, :], walls)

    # Inversion in the model step: wall circulations conserved ----------------------------------
    def wall_constraints(self, psi: np.ndarray) -> np.ndarray:
        """The four quantities a model step keeps, shape ``(..., 4)``.

        Zonal means :math:`\\bar\\psi_1 - \\bar\\psi_0` of both layers at the south wall (the
        circulation of the row next to the wall), the baroclinic combination of the same at the
        north wall, and the barotropic north wall value (which fixes the arbitrary constant).
        """
        m = psi.mean(axis=-1)  # (..., 2, ny)
        s = m[..., 1] - m[..., 0]
        n = m[..., -1] - m[..., -2]
        f1, f2 = self.coupling
        bc_north = (n[..., 0] - n[..., 1]) / (f1 + f2)
        bt_wall = (f2 * m[..., 0, -1] + f1 * m[..., 1, -1]) / (f1 + f2)
        return np.stack([s[..., 0], s[..., 1], bc_north, bt_wall], axis=-1)

    def wall_constraints_ad(self, z: np.ndarray) -> np.ndarray:
        out = np.zeros(z.shape[:-1] + (2, self.ny, self.nx))
        f1, f2 = self.coupling
        w = 1.0 / self.nx
        for k in range(2):
            out[..., k, 1, :] += z[..., k, None] * w
            out[..., k, 0, :] -= z[..., k, None] * w
        for k, sign in ((0, 1.0), (1, -1.0)):
            c = sign * z[..., 2, None] * w / (f1 + f2)
            out[..., k, -1, :] += c
            out[..., k, -2, :] -= c
        out[..., 0, -1, :] += z[..., 3, None] * w * f2 / (f1 + f2)
        out[..., 1, -1, :] += z[..., 3, None] * w * f1 / (f1 + f2)
        return out

    def _wall_basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(G, H^-1, C)``: the responses to unit wall values (4, K), the inverse of their constraint
        matrix, and the constraints as a (K, 4) matrix (K = 2 ny nx)."""
        if getattr(self, "_basis", None) is None:
            k = 2 * self.ny * self.nx
            c = self.wall_constraints_ad(np.eye(4)).reshape(4, k).T
            g = np.zeros((4, 2, self.ny, self.nx))
            for j, (layer, row) in enumerate(((0, 0), (1, 0), (0, -1), (1, -1))):
                walls = np.zeros((2, self.ny, self.nx))
                walls[layer, row, :] = 1.0
                g[j] = self.invert_linear(np.zeros((2, self.nyi, self.nx)), walls)
            g = g.reshape(4, k)
            h = (g @ c).T  # h[i, j] = c_i(G_j)
            self._basis = (g, np.linalg.inv(h), c)
        return self._basis

    def invert_step_linear(self, q_interior: np.ndarray, psi_old: np.ndarray) -> np.ndarray:
        """PV inversion of a model step (linear part): the wall values of ``psi_old`` are changed so that
        :meth:`wall_constraints` keeps its value (circulation along the walls conserved)."""
        g, h_inv, c = self._wall_basis()
        psi = self.invert_linear(q_interior, psi_old)
        shape = psi.shape
        k = c.shape[0]
        delta = ((psi_old - psi).reshape(shape[:-3] + (k,)) @ c) @ h_inv.T
        return psi + (delta @ g).reshape(shape)

    def invert_step_linear_ad(self, g_new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Adjoint of :meth:`invert_step_linear`: ``(q̄ interior, ψ̄_old)``."""
        g, h_inv, c = self._wall_basis()
        shape = g_new.shape
        k = c.shape[0]
        cz = (((g_new.reshape(shape[:-3] + (k,)) @ g.T) @ h_inv) @ c.T).reshape(shape)
        q_bar, walls_bar = self.invert_linear_ad(g_new - cz)
        return q_bar, walls_bar + cz

    def invert_step(self, q_interior: np.ndarray, psi_old: np.ndarray) -> np.ndarray:
        """The model step's PV inversion from the full q on the interior rows."""
        return self.invert_step_linear(q_interior - self.offset[..., 1:-1, :], psi_old)

    # Diagnostics --------------------------------------------------------------------------------
    def diagnose(self, psi: np.ndarray, variables: Any) -> dict[str, np.ndarray]:
        """The requested variables among ``x, q, u, v`` computed from the streamfunction."""
        out: dict[str, np.ndarray] = {}
        u = v = None
        for var in variables:
            if var == "x":
                out[var] = psi
            elif var == "q":
                out[var] = self.pv(psi)
            elif var in ("u", "v"):
                if u is None:
                    u, v = self.winds(psi)
                out[var] = u if var == "u" else v
            else:
                raise KeyError(f"unknown QG variable '{var}' (known: x, q, u, v)")
        return out

    def diagnose_linear(self, dpsi: np.ndarray, variables: Any) -> dict[str, np.ndarray]:
        """Linear (increment) version of :meth:`diagnose`: no β or orography in q."""
        out: dict[str, np.ndarray] = {}
        u = v = None
        for var in variables:
            if var == "x":
                out[var] = dpsi
            elif var == "q":
                out[var] = self.pv_linear(dpsi)
            elif var in ("u", "v"):
                if u is None:
                    u, v = self.winds(dpsi)
                out[var] = u if var == "u" else v
            else:
                raise KeyError(f"unknown QG variable '{var}' (known: x, q, u, v)")
        return out

    def diagnose_linear_ad(self, fields: Any) -> np.ndarray:
        """Adjoint of :meth:`diagnose_linear`: the streamfunction sensitivity of ``{var: ȳ}``."""
        shape = next(iter(fields.values())).shape
        out = np.zeros(shape)
        if "x" in fields:
            out += fields["x"]
        if "q" in fields:
            out += self.pv_linear_ad(fields["q"])
        if "u" in fields or "v" in fields:
            zero = np.zeros(shape)
            out += self.winds_ad(fields.get("u", zero), fields.get("v", zero))
        return out


# =============================================================================================
# Semi-Lagrangian interpolation
# =============================================================================================
def lagrange_weights(t: np.ndarray, p: int, derivative: bool = True) -> tuple[list[np.ndarray], list[Any]]:
    """Lagrange basis polynomials on the nodes ``0 .. p-1`` at ``t``, and their derivatives (``p`` = 3 or 4)."""
    d = [t - n for n in range(p)]
    if p == 4:
        d01, d23 = d[0] * d[1], d[2] * d[3]
        weights = [d[1] * d23 / -6.0, d[0] * d23 / 2.0, d01 * d[3] / -2.0, d01 * d[2] / 6.0]
        if not derivative:
            return weights, [None] * 4
        derivs = [(d23 + d[1] * (d[2] + d[3])) / -6.0, (d23 + d[0] * (d[2] + d[3])) / 2.0,
                  (d01 + d[3] * (d[0] + d[1])) / -2.0, (d01 + d[2] * (d[0] + d[1])) / 6.0]
        return weights, derivs
    if p != 3:
        raise ValueError(f"stencils of 3 or 4 points only, got {p}")
    weights = [d[1] * d[2] / 2.0, -d[0] * d[2], d[0] * d[1] / 2.0]
    derivs = [(d[1] + d[2]) / 2.0, -(d[0] + d[2]), (d[0] + d[1]) / 2.0] if derivative else [None] * 3
    return weights, derivs


class Departure:
    """Bicubic Lagrange interpolation from the grid to departure points of the interior rows.

    Parameters
    ----------
    ops:
        The grid's :class:`QgOperators`.
    xd, yd:
        Departure coordinates (m), shape ``(..., 2, ny-2, nx)``: the point of layer
        ``l`` is interpolated from layer ``l``.
    """

    def __init__(self, ops: QgOperators, xd: np.ndarray, yd: np.ndarray, derivative: bool = False):
        nx, ny = ops.nx, ops.ny
        self.ops = ops
        self.points = (xd, yd)
        self.shape = xd.shape
        self.batch = xd.shape[:-3]
        sx = xd / ops.dx
        fx = np.floor(sx)
        ix0 = fx.astype(np.intp) - 1
        self.ix = [(ix0 + b) % nx for b in range(4)]
        self.wx, dwx = lagrange_weights(sx - fx + 1.0, 4, derivative)
        self.dwx = [w / ops.dx for w in dwx] if derivative else None
        self.y_active = ((yd >= 0.0) & (yd <= ops.ly)).astype(float)
        sy = np.clip(yd, 0.0, ops.ly) / ops.dy
        self.py = min(4, ny)
        iy0 = np.clip(np.floor(sy).astype(np.intp) - 1, 0, ny - self.py)
        self.wy, dwy = lagrange_weights(sy - iy0, self.py, derivative)
        self.dwy = [w / ops.dy for w in dwy] if derivative else None
        nb = int(np.prod(self.batch, dtype=int))
        block = 2 * ny * nx
        member = (np.arange(nb, dtype=np.intp) * block).reshape(self.batch + (1, 1, 1))
        layer = (np.arange(2, dtype=np.intp) * ny * nx)[:, None, None]
        self._member_offset = member
        self.rows = [layer + (iy0 + a) * nx for a in range(self.py)]  # without member offset

    def interpolate(self, fields: list[np.ndarray], gradient: bool = False) -> list[Any]:
        """Values of each of ``fields`` (same batch as the departure points) at the departure points.

        With ``gradient``, each result is ``(value, d/dx, d/dy)`` of the interpolating polynomial.
        """
        flats = []
        for f in fields:
            if f.shape[:-3] != self.batch:
                raise ValueError(f"field batch {f.shape[:-3]} differs from the departure batch {self.batch}")
            flats.append(np.ascontiguousarray(f).ravel())
        if gradient and self.dwx is None:
            raise ValueError("this Departure was built without derivative weights")
        n = len(fields)
        # Preallocated buffers: big temporaries are expensive (fresh pages on every allocation).
        out = [np.zeros(self.shape) for _ in range(n)]
        gx = [np.zeros(self.shape) for _ in range(n)] if gradient else []
        gy = [np.zeros(self.shape) for _ in range(n)] if gradient else []
        rows = [np.empty(self.shape) for _ in range(n)]
        drows = [np.empty(self.shape) for _ in range(n)] if gradient else []
        index = np.empty(self.shape, dtype=np.intp)
        vals = np.empty(self.shape)
        tmp = np.empty(self.shape)
        for a in range(self.py):
            base = self.rows[a] + self._member_offset
            for b in range(4):
                np.add(base, self.ix[b], out=index)
                for i in range(n):
                    flats[i].take(index, out=vals)
                    if b == 0:
                        np.multiply(self.wx[b], vals, out=rows[i])
                        if gradient:
                            np.multiply(self.dwx[b], vals, out=drows[i])
                    else:
                        rows[i] += np.multiply(self.wx[b], vals, out=tmp)
                        if gradient:
                            drows[i] += np.multiply(self.dwx[b], vals, out=tmp)
            for i in range(n):
                out[i] += np.multiply(self.wy[a], rows[i], out=tmp)
                if gradient:
                    gx[i] += np.multiply(self.wy[a], drows[i], out=tmp)
                    gy[i] += np.multiply(self.dwy[a], rows[i], out=tmp)
        if gradient:
            return [(out[i], gx[i], gy[i]) for i in range(n)]
        return out

    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        r"""The nonzeros of the interpolation matrix :math:`\mathbf{W}`, row by row in ascending column order.

        Row :math:`i` (an interior point of a member, flattened with the member axes) holds the
        ``4 * py`` weights :math:`w^y_a w^x_b` at the columns of its stencil (flat indices into the
        members' full grids ``(..., 2, ny, nx)``).  Returns ``(columns, weights)``, both of shape
        ``(n_rows, 4 * py)``, the columns ascending along each row as in a canonical CSR matrix:
        the rows :math:`a` of the stencil ascend, and within a row the four columns
        :math:`(m + b) \bmod n_x`, :math:`m = i_{x0} \bmod n_x`, ascend from :math:`b = 0` unless the
        stencil wraps around the periodic boundary (:math:`m > n_x - 4`), where they ascend from
        :math:`b_0 = n_x - m`, the first to wrap to 0.
        """
        nx = self.ops.nx
        n = int(np.prod(self.shape, dtype=int))
        index = self._index_dtype()
        ix = np.stack([np.broadcast_to(i, self.shape).ravel() for i in self.ix]).astype(index)  # (4, n) in [0, nx)
        wx = np.stack([w.ravel() for w in self.wx])
        wrapped = np.flatnonzero(ix[0] > nx - 4)
        order = (nx - ix[0][wrapped] + np.arange(4)[:, None]) % 4
        ix[:, wrapped] = np.take_along_axis(ix[:, wrapped], order, axis=0)
        wx[:, wrapped] = np.take_along_axis(wx[:, wrapped], order, axis=0)
        base = np.stack([np.broadcast_to(r + self._member_offset, self.shape).ravel() for r in self.rows]).astype(index)
        wy = np.stack([w.ravel() for w in self.wy])
        # Computed as (py, 4, n) and transposed in one copy: faster than writing strided columns.
        cols = (base[:, None, :] + ix[None, :, :]).reshape(4 * self.py, n).T.copy()
        vals = (wy[:, None, :] * wx[None, :, :]).reshape(4 * self.py, n).T.copy()
        return cols, vals

    def _index_dtype(self) -> type:
        """``int32`` if every column and nonzero of :meth:`matrix` can be counted in it (SciPy's own choice,
        so no conversion), else ``intp``."""
        nb = int(np.prod(self.batch, dtype=int))
        largest = max(nb * 2 * self.ops.ny * self.ops.nx, 4 * self.py * int(np.prod(self.shape, dtype=int)))
        return np.int32 if largest < np.iinfo(np.int32).max else np.intp

    def matrix(self) -> sp.csr_matrix:
        """The interpolation of all members as one block-diagonal CSR matrix, built from :meth:`entries`.

        Its rows are the interior points of the members (``n_members * 2 * (ny-2) * nx``), its columns
        the points of their full grids (``n_members * 2 * ny * nx``).  The entries are already in
        canonical order, so no sorting is needed: :math:`O(16 n)`.
        """
        cols, vals = self.entries()
        ops = self.ops
        nb = int(np.prod(self.batch, dtype=int))
        indptr = np.arange(0, cols.size + 1, cols.shape[1], dtype=cols.dtype)
        return sp.csr_matrix((vals.ravel(), cols.ravel(), indptr), shape=(cols.shape[0], nb * 2 * ops.ny * ops.nx))

    def matrices(self) -> list[sp.csr_matrix]:
        """The interpolation as one sparse matrix per member (``(2·(ny-2)·nx) × (2·ny·nx)``).

        Built from scattered triplets, as the linearisation stored them before: the reference
        definition of :meth:`apply` and :meth:`apply_transpose` (``plugins/qg/tests/test_qg.py``).
        """
        ops = self.ops
        nout = 2 * ops.nyi * ops.nx
        nin = 2 * ops.ny * ops.nx
        nb = int(np.prod(self.batch, dtype=int))
        cols, vals = self.entries()
        rows = np.repeat(np.arange(nout), cols.shape[1])
        # Per member: its rows, and its columns without the member offset.
        cols = cols.reshape(nb, -1) - (np.arange(nb) * nin)[:, None]
        vals = vals.reshape(nb, -1)
        return [sp.csr_matrix((vals[m], (rows, cols[m])), shape=(nout, nin)) for m in range(nb)]

    def apply(self, fields: list[np.ndarray]) -> list[np.ndarray]:
        r""":math:`\mathbf{W}f` for each of ``fields`` (shape ``(..., *batch, 2, ny, nx)``, any leading axes).

        The CSR product with :meth:`matrix`: each value is the sum of its row's products
        :math:`W_{ij} f_j` taken one after the other in ascending :math:`j`, the numbers of
        ``matrices()[m] @ f`` to the last bit.
        """
        return sparse_product(self.matrix(), fields, self.batch, self.ops, transpose=False)

    def apply_transpose(self, fields: list[np.ndarray]) -> list[np.ndarray]:
        r""":math:`\mathbf{W}^\mathsf{T}g` for each of ``fields`` (shape ``(..., *batch, 2, ny-2, nx)``).

        The product with the CSC matrix ``matrix().T`` (no copy), which adds the products
        :math:`W_{ij} g_i` into :math:`(\mathbf{W}^\mathsf{T}g)_j` in ascending :math:`i`, as the CSR
        product with SciPy's transpose ``matrices()[m].T.tocsr()`` does: the same numbers to the last bit.
        """
        return sparse_product(self.matrix(), fields, self.batch, self.ops, transpose=True)


def _leading(a: np.ndarray, batch: tuple[int, ...], tail: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """Number of vectors in ``a`` (shape ``(..., *batch, *tail)``) and the leading shape of the result.

    A single trajectory (one member) applies to any batch of increments, ``(..., *tail)``.
    """
    if int(np.prod(batch, dtype=int)) == 1:
        prefix = a.shape[: a.ndim - len(tail)]
        if a.shape[len(prefix):] != tail:
            raise ValueError(f"increment shape {a.shape} does not end with {tail}")
        return int(np.prod(prefix, dtype=int)), prefix
    lead = a.shape[: a.ndim - len(batch) - len(tail)]
    if a.shape[len(lead):] != batch + tail:
        raise ValueError(f"increment batch {a.shape[:a.ndim - len(tail)]} does not end with the trajectory "
                         f"batch {batch}")
    return int(np.prod(lead, dtype=int)), lead + batch


def sparse_product(w: sp.csr_matrix, fields: list[np.ndarray], batch: tuple[int, ...], ops: QgOperators,
                   transpose: bool) -> list[np.ndarray]:
    """The interpolation ``w`` of the members ``batch`` (:meth:`Departure.matrix`), or its transpose,
    applied to each of ``fields``, with one sparse product for all of them.

    ``fields`` have the shape ``(..., *batch, 2, ny, nx)`` (``(..., *batch, 2, ny-2, nx)`` with ``transpose``),
    any leading axes; a single trajectory (``batch`` of one member) applies to any batch of increments.
    """
    full, interior = (2, ops.ny, ops.nx), (2, ops.nyi, ops.nx)
    tail_in, tail_out = (interior, full) if transpose else (full, interior)
    shapes = [_leading(f, batch, tail_in) for f in fields]
    stacked = np.concatenate([np.reshape(f, (count, -1)) for f, (count, _) in zip(fields, shapes)])
    res = ((w.T if transpose else w) @ stacked.T).T
    out, start = [], 0
    for count, prefix in shapes:
        out.append(res[start:start + count].reshape(prefix + tail_out))
        start += count
    return out


# =============================================================================================
# One model step and its linearisation
# =============================================================================================
def _check_displacement(ops: QgOperators, u: np.ndarray, v: np.ndarray, dt: float) -> None:
    """Refuse a step whose departure points move more than :data:`MAX_DISPLACEMENT` grid lengths.

    ``u``, ``v`` are the winds of the interior rows.  The message says where the largest wind is,
    the longest ``tstep`` those winds allow, and, when it lies next to a wall, where such a jet comes from.
    """
    umax, vmax = float(np.abs(u).max(initial=0.0)), float(np.abs(v).max(initial=0.0))
    cx, cy = umax * dt / ops.dx, vmax * dt / ops.dy
    shift = max(cx, cy)
    if shift <= MAX_DISPLACEMENT:
        return
    head = f"QG semi-Lagrangian step: the departure point moved {shift:.2f} grid lengths in one step (limit " \
           f"{MAX_DISPLACEMENT:g})"
    if not np.isfinite(shift):
        raise NumericalError(f"{head}: the winds are not finite, the model blew up: shorten 'model.tstep'")
    name, wind = ("u", u) if cx >= cy else ("v", v)
    layer, row, col = np.unravel_index(int(np.argmax(np.abs(wind))), wind.shape)[-3:]
    limit = MAX_DISPLACEMENT * min(ops.dx / umax if umax else np.inf, ops.dy / vmax if vmax else np.inf)
    where = {0: " (the row next to the south wall)", ops.nyi - 1: " (the row next to the north wall)"}.get(int(row), "")
    message = (f"{head}: |{name}| = {float(np.abs(wind).max()):.1f} m/s in layer {layer + 1} at x = "
               f"{col * ops.dx / 1e3:.0f} km, y = {(row + 1) * ops.dy / 1e3:.0f} km{where}; these winds need "
               f"'model.tstep' <= {Duration(int(limit * (1 + 1e-9)))} ({limit:.0f} s)")
    speed = np.maximum(np.abs(u), np.abs(v))
    if ops.nyi > 2 and float(speed[..., [0, -1], :].max()) > WALL_JET_RATIO * float(speed[..., 1:-1, :].max()):
        message += ("; a jet along a wall is what a streamfunction that varies along the wall turns into (e.g. a "
                    "perturbation or increment of a B without 'QG walls'): add '- saber block name: QG walls' "
                    "before 'QG balance' in 'background error.saber outer blocks' and redraw the initial state")
    raise NumericalError(message)


class _Stages:
    """The nonlinear step, keeping what its linearisation needs."""

    def __init__(self, ops: QgOperators, psi: np.ndarray, dt: float, check: bool = True,
                 linearise: bool = False):
        psi = ops.project_walls(psi)
        q = ops.pv(psi)
        u, v = ops.winds(psi)
        ui, vi = u[..., 1:-1, :], v[..., 1:-1, :]
        if check:
            _check_displacement(ops, ui, vi, dt)
        # Predictor: departure points with the winds at the arrival point and time n.  Inversions are
        # done for the PV change, psi_new = psi + L(q_new - q) (algebraically the same as inverting
        # q_new - c with the walls of psi, since L(q - c, psi) = psi), which keeps the round-off of the
        # large mean-flow streamfunction out of the inversion.
        zero = np.zeros_like(psi)
        dep0 = Departure(ops, ops.x_interior - dt * ui, ops.y_interior - dt * vi, linearise)
        res0 = dep0.interpolate([q, u, v], gradient=linearise)
        q_star = res0[0][0] if linearise else res0[0]
        dpsi_star = ops.invert_step_linear(q_star - q[..., 1:-1, :], zero)
        du_star, dv_star = ops.winds_interior(dpsi_star)
        ud = res0[1][0] if linearise else res0[1]
        vd = res0[2][0] if linearise else res0[2]
        # Corrector: the trapezoidal rule along the trajectory, the wind of time n+1 (predicted) at the
        # arrival point and of time n at the departure point.
        ub, vb = 0.5 * (ui + du_star + ud), 0.5 * (vi + dv_star + vd)
        if check:
            _check_displacement(ops, ub, vb, dt)
        dep1 = Departure(ops, ops.x_interior - dt * ub, ops.y_interior - dt * vb, linearise)
        res1 = dep1.interpolate([q], gradient=linearise)
        q_new = res1[0][0] if linearise else res1[0]
        self.psi_new = psi + ops.invert_step_linear(q_new - q[..., 1:-1, :], zero)
        if linearise:
            self.dep0, self.dep1 = dep0, dep1
            self.grad0 = [(g[1], g[2] * dep0.y_active) for g in res0]   # (d/dx, d/dy) of q, u, v at dep0
            self.grad1 = (res1[0][1], res1[0][2] * dep1.y_active)


#: Members advanced together; about this many grid points per chunk keeps the temporaries in cache.
CHUNK_POINTS = 1 << 14


def step(ops: QgOperators, psi: np.ndarray, dt: float) -> np.ndarray:
    """One QG step of the streamfunction ``psi`` (shape ``(..., 2, ny, nx)``).

    Members are advanced in chunks of about :data:`CHUNK_POINTS` grid points: the
    arithmetic is the same member by member, so the result does not depend on the chunking.
    """
    batch = psi.shape[:-3]
    members = psi.reshape((-1,) + psi.shape[-3:])
    chunk = max(1, CHUNK_POINTS // int(np.prod(psi.shape[-3:])))
    if members.shape[0] <= chunk:
        return _Stages(ops, psi, dt).psi_new
    out = np.empty_like(members)
    for start in range(0, members.shape[0], chunk):
        out[start:start + chunk] = _Stages(ops, members[start:start + chunk], dt).psi_new
    return out.reshape(batch + psi.shape[-3:])


#: How a :class:`Linearisation` keeps its trajectory step (see its docs).
Storage = Literal["matrices", "departures", "state"]
#: One semi-Lagrangian stage of a :class:`LinearisedStep`: its interpolation matrix, or the departure points.
Stage = sp.csr_matrix | tuple[np.ndarray, np.ndarray]


def _nbytes(a: Any) -> int:
    """Bytes of an array, a tuple of arrays or a sparse matrix (its data, indices and pointers)."""
    if sp.issparse(a):
        return int(a.data.nbytes + a.indices.nbytes + a.indptr.nbytes)
    if isinstance(a, tuple):
        return sum(_nbytes(x) for x in a)
    return int(a.nbytes)


@dataclass(frozen=True)
class LinearisedStep:
    r"""The interpolations of both stages of one step and the gradients of the interpolated fields.

    ``stage0``/``stage1``: the interpolation :math:`\mathbf{W}_s` to the departure points of the
    predictor and the corrector, as a CSR matrix or as the points :math:`(x_d, y_d)` themselves, from
    which :meth:`matrices` rebuilds it; ``grad0``: :math:`(\partial_x\tilde f, \partial_y\tilde f)` of
    :math:`f = q, u, v` at the predictor's points, ``grad1`` that of :math:`q` at the corrector's
    (:math:`\partial_y` zero where the point was moved onto a wall).  Each array has the interior shape
    ``(..., 2, ny-2, nx)``.
    """

    stage0: Stage
    stage1: Stage
    grad0: list[tuple[np.ndarray, np.ndarray]]
    grad1: tuple[np.ndarray, np.ndarray]

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held."""
        return sum(_nbytes(a) for a in (self.stage0, self.stage1, self.grad1, *self.grad0))

    @staticmethod
    def _matrix(ops: QgOperators, stage: Stage) -> sp.csr_matrix:
        return stage if isinstance(stage, sp.csr_matrix) else Departure(ops, *stage).matrix()

    def matrices(self, ops: QgOperators) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """:math:`(\\mathbf{W}_0, \\mathbf{W}_1)`, stored or rebuilt from the departure points."""
        return self._matrix(ops, self.stage0), self._matrix(ops, self.stage1)


class Linearisation:
    r"""What the tangent linear and adjoint of one step need from the trajectory ``psi``.

    The TL of the step is

    .. math::

        \delta q^* = \mathbf{W}_0\delta q + \partial_x\tilde q\,\delta x_0 + \partial_y\tilde q\,\delta y_0,
        \qquad
        \delta q^{n+1} = \mathbf{W}_1\delta q + \partial_x\tilde q\,\delta x_1 + \partial_y\tilde q\,\delta y_1

    (and the same at the predictor's points for :math:`u`, :math:`v`), with :math:`\mathbf{W}_s` the
    bicubic interpolation to the departure points of stage :math:`s` (16 nonzeros per interior point and
    layer) and :math:`\delta x_s`, :math:`\delta y_s` the TL of those points; the adjoint applies
    :math:`\mathbf{W}_s^\mathsf{T}` as the CSC matrix :math:`\mathbf{W}_s` seen transposed.

    The :class:`LinearisedStep` is built on first use (the forecast stores one linearisation per model
    step but 4D-Var may use only some), and what is kept depends on ``storage``, per grid point and
    layer of the trajectory:

    ``matrices``
        :math:`\mathbf{W}_0`, :math:`\mathbf{W}_1` (CSR, 32-bit indices) and the 8 gradients: about
        460 bytes.  Each TL or AD step is two sparse products.
    ``departures``
        The departure points of both stages instead of the matrices: 96 bytes.  Each TL or AD step
        rebuilds :math:`\mathbf{W}_s` from its points (:meth:`Departure.matrix`, no sorting).
    ``state``
        The streamfunction only (8 bytes) between uses: :meth:`release` drops the
        :class:`LinearisedStep`, which the next use rebuilds (one linearised nonlinear step);
        :class:`~pyoops_qg.model.QgTLM` keeps the last few used built.

    The numbers are the same in all three, and the same as with the matrices and their SciPy
    transposes that were stored before (about 880 bytes per grid point and layer).
    """

    def __init__(self, ops: QgOperators, psi: np.ndarray, dt: float, storage: Storage = "departures"):
        if storage not in ("matrices", "departures", "state"):
            raise ValueError(f"QG linearisation storage is 'matrices', 'departures' or 'state', got {storage!r}")
        self.ops = ops
        self.dt = dt
        self.psi: np.ndarray | None = np.array(psi, dtype=float)
        self.storage = storage
        self._step: LinearisedStep | None = None

    @property
    def built(self) -> bool:
        """Whether the :class:`LinearisedStep` is held."""
        return self._step is not None

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held (the state and/or the :class:`LinearisedStep`)."""
        return (0 if self.psi is None else self.psi.nbytes) + (0 if self._step is None else self._step.nbytes)

    def build(self) -> LinearisedStep:
        """The :class:`LinearisedStep` of the trajectory (computed on first use)."""
        if self._step is None:
            if self.psi is None:  # cannot happen: the state is dropped only once the step is kept
                raise RuntimeError("QG linearisation: neither the state nor its linearisation is held")
            st = _Stages(self.ops, self.psi, self.dt, check=False, linearise=True)
            if self.storage == "matrices":
                stages = (st.dep0.matrix(), st.dep1.matrix())
            else:
                stages = (st.dep0.points, st.dep1.points)
            self._step = LinearisedStep(*stages, st.grad0, st.grad1)
            if self.storage != "state":
                self.psi = None
        return self._step

    def release(self) -> None:
        """Drop the :class:`LinearisedStep`, to be rebuilt from the state at the next use (``storage='state'``)."""
        if self.storage != "state":
            raise RuntimeError(f"QG linearisation: release() needs storage 'state' (the state is not kept with "
                               f"{self.storage!r})")
        self._step = None

    def step_tl(self, dpsi: np.ndarray) -> np.ndarray:
        """The TL of the step (see the class docs) applied to ``dpsi``, any leading axes."""
        lin = self.build()
        ops, dt = self.ops, self.dt
        dpsi = ops.project_walls(dpsi)
        dq = ops.pv_linear(dpsi)
        du, dv = ops.winds(dpsi)
        dx0 = -dt * du[..., 1:-1, :]
        dy0 = -dt * dv[..., 1:-1, :]
        w0, w1 = lin.matrices(ops)
        batch = lin.grad1[0].shape[:-3]
        interpolated = sparse_product(w0, [dq, du, dv], batch, ops, transpose=False)
        moved = [w + gx * dx0 + gy * dy0 for w, (gx, gy) in zip(interpolated, lin.grad0)]
        dpsi_star = ops.invert_step_linear(moved[0], dpsi)
        du_star, dv_star = ops.winds_interior(dpsi_star)
        dx1 = -0.5 * dt * (du_star + moved[1])
        dy1 = -0.5 * dt * (dv_star + moved[2])
        gx, gy = lin.grad1
        dq_new = sparse_product(w1, [dq], batch, ops, transpose=False)[0] + gx * dx1 + gy * dy1
        return ops.invert_step_linear(dq_new, dpsi)

    def step_ad(self, a_new: np.ndarray) -> np.ndarray:
        """The adjoint of :meth:`step_tl` applied to ``a_new``."""
        lin = self.build()
        ops, dt = self.ops, self.dt
        w0, w1 = lin.matrices(ops)
        batch = lin.grad1[0].shape[:-3]
        aq_new, apsi = ops.invert_step_linear_ad(a_new)
        gx, gy = lin.grad1
        aq = sparse_product(w1, [aq_new], batch, ops, transpose=True)[0]
        ax1, ay1 = gx * aq_new, gy * aq_new
        a_star_u, a_star_v = -0.5 * dt * ax1, -0.5 * dt * ay1   # adjoints of du*, dv* and of the moved u, v
        apsi_star = ops.winds_interior_ad(a_star_u, a_star_v)
        aq_star, apsi_p = ops.invert_step_linear_ad(apsi_star)
        apsi = apsi + apsi_p
        ax0 = np.zeros_like(aq_new)
        ay0 = np.zeros_like(aq_new)
        moved = (aq_star, a_star_u, a_star_v)
        adjoints = sparse_product(w0, list(moved), batch, ops, transpose=True)
        for a_moved, (gx0, gy0) in zip(moved, lin.grad0):
            ax0 += gx0 * a_moved
            ay0 += gy0 * a_moved
        aq = aq + adjoints[0]
        au_full, av_full = adjoints[1], adjoints[2]
        apsi += ops.winds_interior_ad(-dt * ax0, -dt * ay0)
        apsi += ops.winds_ad(au_full, av_full)
        apsi += ops.pv_linear_ad(aq)
        return ops.project_walls(apsi)
