r"""The ``SOAR correlation`` central block: :math:`\rho(d) = (1 + d/L)\,e^{-d/L}` on a periodic axis.

On a grid of :math:`n` points with one periodic horizontal axis the correlation matrix is
circulant, so it is diagonal in the discrete Fourier basis:

.. math::

    \mathbf{C} = \mathbf{F}^{-1}\,\mathrm{diag}(\hat s)\,\mathbf{F}, \qquad
    \hat s = \max(\mathrm{DFT}(r), 0) / \overline{\max(\mathrm{DFT}(r), 0)},

with :math:`r_j = \rho(d_j)` the first row (:math:`d_j` the periodic distance of point
:math:`j` from point 0).  Negative DFT values, which the periodic wrap-around of a
correlation that is not periodic can leave, are set to zero so that :math:`\mathbf{C}` is
positive semi-definite; dividing by their mean makes the diagonal exactly 1.  The square
root :math:`\mathbf{C}^{1/2} = \mathbf{F}^{-1}\mathrm{diag}(\hat s^{1/2})\mathbf{F}` is
symmetric, so ``multiply_sqrt_ad`` applies the same filter.  Cost :math:`O(n\log n)`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from pyoops.fields.fieldset import FieldSet
from pyoops.saber import BlockContext, SaberBlockParameters, SaberCentralBlock
from pyoops.util.errors import ConfigError


class SoarParameters(SaberBlockParameters):
    """YAML keys of ``SOAR correlation`` (the common keys come from SaberBlockParameters)."""

    saber_block_name: Literal["SOAR correlation"]
    length_scale: float = Field(gt=0, description="SOAR length L, in the units of the periodic axis.")


class SoarCorrelation(SaberCentralBlock):
    """``SOAR correlation``: a homogeneous SOAR correlation along the grid's one periodic axis."""

    Parameters = SoarParameters

    def __init__(self, params: SoarParameters, context: BlockContext):
        super().__init__(params, context)  # stores params, context, geometry, variables
        axes = [a for a in getattr(self.geometry, "axes", ()) if a.horizontal]
        if len(axes) != 1 or not axes[0].periodic:
            raise ConfigError("SOAR correlation needs a grid with exactly one horizontal axis, periodic",
                              context.path)
        axis = axes[0]
        self.n = axis.n
        period = axis.upper - axis.lower
        d = np.arange(self.n) * (period / self.n)
        d = np.minimum(d, period - d) / params.length_scale
        spectrum = np.clip(np.fft.rfft((1.0 + d) * np.exp(-d)).real, 0.0, None)
        full_mean = (spectrum[0] + 2 * spectrum[1:(self.n + 1) // 2].sum()
                     + (spectrum[-1] if self.n % 2 == 0 else 0.0)) / self.n
        self.spectrum = spectrum / full_mean
        self.root = np.sqrt(self.spectrum)
        for v in self.variables:
            if self.geometry.field_shape(v)[-1:] != (self.n,):
                raise ConfigError(f"variable '{v}' does not end with the periodic axis", context.path)

    def _filter(self, arr: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Multiply the DFT of ``arr`` along its last axis by ``weights`` (batch axes carried along)."""
        return np.fft.irfft(np.fft.rfft(arr, axis=-1) * weights, n=self.n, axis=-1)

    def multiply(self, fields: FieldSet) -> FieldSet:
        """:math:`\\mathbf{C}x`."""
        return FieldSet({v: self._filter(fields[v], self.spectrum) for v in self.variables}, copy=False)

    # Square root: overriding these three methods is what gives the block a square root.
    @property
    def ctl_vec_size(self) -> int:
        """One control value per grid value of each variable."""
        return sum(int(np.prod(self.geometry.field_shape(v))) for v in self.variables)

    def multiply_sqrt(self, ctl: np.ndarray) -> FieldSet:
        """:math:`\\mathbf{C}^{1/2}v`, ``ctl`` of shape ``(..., ctl_vec_size)``."""
        ctl = np.asarray(ctl, dtype=np.float64)
        out, start = {}, 0
        for v in self.variables:
            shape = self.geometry.field_shape(v)
            size = int(np.prod(shape))
            part = ctl[..., start:start + size].reshape(ctl.shape[:-1] + shape)
            out[v] = self._filter(part, self.root)
            start += size
        return FieldSet(out, copy=False)

    def multiply_sqrt_ad(self, fields: FieldSet) -> np.ndarray:
        """:math:`\\mathbf{C}^{1/2\\,\\mathsf{T}}x = \\mathbf{C}^{1/2}x` flattened, shape ``(..., ctl_vec_size)``."""
        parts = []
        for v in self.variables:
            a = self._filter(fields[v], self.root)
            parts.append(a.reshape(a.shape[: a.ndim - len(self.geometry.field_shape(v))] + (-1,)))
        return np.concatenate(parts, axis=-1)
