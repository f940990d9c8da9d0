r"""``geostrophic balance``: a SABER outer block from (ψ, χ, h_u) to (h, u, v).

The block multiplies control variables, the streamfunction ``psi`` (ψ, m²/s),
the velocity potential ``chi`` (χ, m²/s) and the unbalanced height ``hu``
(:math:`h_u`, m), into the model variables:

.. math::

    u = -\delta_y\psi + \delta_x\chi, \qquad
    v = \delta_x\psi + \delta_y\chi, \qquad
    h = h_u + \frac{f}{g}\,\psi ,

with the model's centred differences :math:`\delta_x, \delta_y` (see
:mod:`pyoops_shallow_water.numerics`).  The rotational wind and the balanced height
:math:`h_b = (f/g)\psi` then satisfy the *discrete* geostrophic relation exactly,
:math:`f\mathbf{k}\times\mathbf{u}_\psi = -g\nabla h_b`, so a covariance
:math:`\mathbf{U}\mathbf{C}\mathbf{U}^\mathsf{T}` with this block makes wind and height
increments geostrophically coupled, and its (ψ, h) part is an exact steady state
of the model linearised about rest.

Null modes
----------
On a doubly periodic grid, centred differences annihilate the domain mean and, for an
even number of points, the :math:`2\Delta` waves :math:`(-1)^i`, :math:`(-1)^j`,
:math:`(-1)^{i+j}` (at most four "null modes").  No ψ or χ can produce those
components of :math:`u` and :math:`v` (a uniform wind has no periodic
streamfunction), and ψ's null part would add to :math:`h` exactly like
:math:`h_u`.  To keep the block invertible the null-mode components, written
:math:`P\psi` and :math:`P\chi` with :math:`P` the orthogonal projector onto the
null modes, are given this documented role:

.. math::

    u = -\delta_y\psi + \delta_x\chi - \kappa P\psi, \qquad
    v = \delta_x\psi + \delta_y\chi + \kappa P\chi, \qquad
    h = h_u + \frac{f}{g}(\psi - P\psi),

with :math:`\kappa = 2\pi/\max(L_x, L_y)`: the null part of ψ carries the uniform
(and 2Δ) eastward wind, that of χ the northward wind, and only :math:`h_u` feeds
the mean height.  The block is then a bijection, and

* :meth:`~GeostrophicBalance.multiply_ad` is the exact transpose (:math:`\delta^\mathsf{T} = -\delta`,
  :math:`P^\mathsf{T} = P`);
* :meth:`~GeostrophicBalance.left_inverse_multiply` is the exact inverse, computed spectrally with real
  FFTs: for every non-null wavenumber, with the symbols
  :math:`s_x = \sin(k_x\Delta x)/\Delta x`, :math:`s_y = \sin(k_y\Delta y)/\Delta y`,

  .. math::

      \hat\psi = \frac{-\mathrm{i}(s_x\hat v - s_y\hat u)}{s_x^2 + s_y^2},\qquad
      \hat\chi = \frac{-\mathrm{i}(s_x\hat u + s_y\hat v)}{s_x^2 + s_y^2},

  :math:`\hat\psi = -\hat u/\kappa`, :math:`\hat\chi = \hat v/\kappa` on the null modes,
  and :math:`h_u = h - (f/g)(\psi - P\psi)`.  Both :math:`\mathbf{U}^{-1}\mathbf{U} = \mathbf{I}`
  and :math:`\mathbf{U}\mathbf{U}^{-1} = \mathbf{I}` hold to round-off.

Because :math:`(I - P)` is applied to ψ before it reaches :math:`h`, a height
impulse sends no null-mode component into ψ (:math:`\mathbf{U}^\mathsf{T} e_h` has
:math:`P\psi = 0`), and a translation-invariant central block keeps it so: the
Dirac response of such a B has no spurious uniform wind.

YAML::

    saber outer blocks:            # from the central block outwards
    - saber block name: StdDev
      read: {value: {psi: 1.0e6, chi: 2.0e5, hu: 0.3}}
    - saber block name: geostrophic balance
      f: 1.0e-4
      g: 9.81

The outer (model-side) variables must be ``h``, ``u`` and ``v``; the inner ones are
``psi``, ``chi`` and ``hu``.  Fields may carry leading batch (member) axes.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import scipy.fft as sfft
from pydantic import Field

from pyoops.fields.fieldset import FieldSet
from pyoops.saber.blocks import BlockContext, SaberBlockParameters, SaberOuterBlock
from pyoops.util.errors import ConfigError
from pyoops.util.variables import Variables

from pyoops_shallow_water.numerics import ddx, ddy

__all__ = ["CONTROL_VARIABLES", "GeostrophicBalance", "GeostrophicBalanceParameters"]

#: The inner (control) variables of the block (streamfunction, velocity potential, unbalanced height).
CONTROL_VARIABLES = ("psi", "chi", "hu")
_MODEL_VARIABLES = ("h", "u", "v")


class GeostrophicBalanceParameters(SaberBlockParameters):
    """Keys of the ``geostrophic balance`` block."""

    saber_block_name: Literal["geostrophic balance"]
    f: float = Field(1.0e-4, allow_inf_nan=False, description="Coriolis parameter f (s^-1), as in the model.")
    g: float = Field(9.81, gt=0, allow_inf_nan=False, description="Gravity g (m s^-2), as in the model.")


class GeostrophicBalance(SaberOuterBlock):
    """``geostrophic balance``: (psi, chi, hu) → (h, u, v); see the module documentation."""

    Parameters = GeostrophicBalanceParameters

    def __init__(self, params: GeostrophicBalanceParameters, context: BlockContext):
        super().__init__(params, context)
        if sorted(self.variables) != sorted(_MODEL_VARIABLES):
            raise ConfigError(f"the geostrophic balance block acts on the variables h, u, v together, got "
                              f"{list(self.variables)} (set 'active variables: [h, u, v]')", context.path)
        geometry = self.geometry
        try:
            ax, ay = geometry.axis("x"), geometry.axis("y")
        except (AttributeError, KeyError):
            raise ConfigError(f"the geostrophic balance block needs a doubly periodic grid with axes x and y, got "
                              f"{type(geometry).__name__}", context.path) from None
        if not (ax.periodic and ay.periodic) or tuple(geometry.shape[-2:]) != (ay.n, ax.n):
            raise ConfigError("the geostrophic balance block needs a doubly periodic (y, x) grid", context.path)
        self.ny, self.nx = ay.n, ax.n
        self.dx, self.dy = ax.spacing, ay.spacing
        self.fg = float(params.f) / float(params.g)
        self.kappa = 2.0 * math.pi / max(ax.upper - ax.lower, ay.upper - ay.lower)
        # Null-mode basis: constant and (if n is even) the alternating vector, per axis.
        self._null_x = [np.ones(self.nx)] + ([(-1.0) ** np.arange(self.nx)] if self.nx % 2 == 0 else [])
        self._null_y = [np.ones(self.ny)] + ([(-1.0) ** np.arange(self.ny)] if self.ny % 2 == 0 else [])
        # Spectral symbols on the rfft2 grid (exactly zero on the null wavenumbers).
        mx = np.arange(self.nx // 2 + 1)
        my = np.fft.fftfreq(self.ny, 1.0 / self.ny)
        sx = np.sin(2 * np.pi * mx / self.nx) / self.dx
        sy = np.sin(2 * np.pi * my / self.ny) / self.dy
        null_x = (mx == 0) | (2 * mx == self.nx)
        null_y = (my == 0) | (2 * np.abs(my) == self.ny)
        sx[null_x] = 0.0
        sy[null_y] = 0.0
        self._sx = sx[None, :]
        self._sy = sy[:, None]
        self._null = null_y[:, None] & null_x[None, :]
        den = self._sx ** 2 + self._sy ** 2
        self._inv_den = np.where(self._null, 0.0, 1.0 / np.where(self._null, 1.0, den))

    @property
    def inner_variables(self) -> Variables:
        """``psi``, ``chi``, ``hu``."""
        return Variables(CONTROL_VARIABLES)

    # Helpers ------------------------------------------------------------------------------------
    def null_projection(self, a: np.ndarray) -> np.ndarray:
        """:math:`P a`: the null-mode (mean and 2Δ-wave) part of ``a`` on the last two axes."""
        out = np.zeros_like(a)
        n = self.nx * self.ny
        for py in self._null_y:
            for px in self._null_x:
                c = np.einsum("...ji,j,i->...", a, py, px) / n
                out += c[..., None, None] * np.multiply.outer(py, px)
        return out

    # Operators ----------------------------------------------------------------------------------
    def multiply(self, fields: FieldSet) -> FieldSet:
        """(psi, chi, hu) → (h, u, v)."""
        psi, chi, hu = fields["psi"], fields["chi"], fields["hu"]
        ppsi, pchi = self.null_projection(psi), self.null_projection(chi)
        u = ddx(chi, self.dx) - ddy(psi, self.dy) - self.kappa * ppsi
        v = ddx(psi, self.dx) + ddy(chi, self.dy) + self.kappa * pchi
        h = hu + self.fg * (psi - ppsi)
        return FieldSet({"h": h, "u": u, "v": v}, copy=False)

    def multiply_ad(self, fields: FieldSet) -> FieldSet:
        """(h, u, v) → (psi, chi, hu), the exact transpose of :meth:`multiply`."""
        h, u, v = fields["h"], fields["u"], fields["v"]
        psi = ddy(u, self.dy) - ddx(v, self.dx) + self.fg * (h - self.null_projection(h)) \
            - self.kappa * self.null_projection(u)
        chi = -ddx(u, self.dx) - ddy(v, self.dy) + self.kappa * self.null_projection(v)
        return FieldSet({"psi": psi, "chi": chi, "hu": np.array(h, dtype=np.float64, copy=True)}, copy=False)

    def left_inverse_multiply(self, fields: FieldSet) -> FieldSet:
        """(h, u, v) → (psi, chi, hu), the exact inverse of :meth:`multiply` (spectral)."""
        h, u, v = fields["h"], fields["u"], fields["v"]
        shape = (self.ny, self.nx)
        uh = sfft.rfft2(u, axes=(-2, -1))
        vh = sfft.rfft2(v, axes=(-2, -1))
        sx, sy = self._sx, self._sy
        psih = -1j * (sx * vh - sy * uh) * self._inv_den
        chih = -1j * (sx * uh + sy * vh) * self._inv_den
        balanced = sfft.irfft2(psih, s=shape, axes=(-2, -1))  # psi without its null part
        psih = np.where(self._null, -uh / self.kappa, psih)
        chih = np.where(self._null, vh / self.kappa, chih)
        psi = sfft.irfft2(psih, s=shape, axes=(-2, -1))
        chi = sfft.irfft2(chih, s=shape, axes=(-2, -1))
        hu = h - self.fg * balanced
        return FieldSet({"psi": psi, "chi": chi, "hu": hu}, copy=False)
