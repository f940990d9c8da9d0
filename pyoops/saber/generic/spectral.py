r"""``spectral correlation``: homogeneous Gaussian or Matérn correlations by FFT.

On a grid whose horizontal axes are all periodic, a homogeneous (translation
invariant) correlation is a circulant operator, diagonalised by the discrete
Fourier transform :math:`\mathbf{F}`:

.. math::

    \mathbf{C} = \mathbf{F}^{-1}\,\mathrm{diag}(\hat s)\,\mathbf{F},
    \qquad
    \mathbf{C}^{1/2} = \mathbf{F}^{-1}\,\mathrm{diag}(\hat s^{1/2})\,\mathbf{F},

with a real spectrum :math:`\hat s_{\mathbf m} \ge 0` that is even in the
wavenumber (:math:`\hat s_{-\mathbf m} = \hat s_{\mathbf m}`), so that
:math:`\mathbf{C}` and :math:`\mathbf{C}^{1/2}` are real and symmetric.  The
first column of :math:`\mathbf{C}` is the inverse DFT of :math:`\hat s`, so
every diagonal element equals the *mean* of :math:`\hat s` over all
wavenumbers; dividing :math:`\hat s` by that mean makes
:math:`\mathrm{diag}(\mathbf{C}) = 1` exactly (to round-off).

The block acts on the horizontal axes of every field, independently for each
level and each variable (no vertical or cross-variable correlation).  Real
FFTs (:func:`scipy.fft.rfftn`) over the trailing horizontal axes make one
application cost :math:`O(n \log n)` and accept any leading batch (member)
axes.  No matrix is ever formed.

The module also holds the pieces the ``diffusion`` block shares:
:class:`HorizontalLayout` (moving the horizontal axes of a field to the end)
and :class:`SpectralBasis` (FFT on periodic axes, orthonormal DCT-II on axes
bounded by zero-flux walls, discrete and continuous Laplacian eigenvalues, and
the exact diagonal of an operator given by its spectrum).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import scipy.fft as sfft
from pydantic import BeforeValidator, Field, model_validator
from scipy.special import gamma, kv

from pyoops.config.parameters import per_variable_number
from pyoops.fields.fieldset import FieldSet
from pyoops.saber.blocks import BlockContext, SaberBlockParameters, SaberCentralBlock
from pyoops.util.errors import ConfigError, join_path

__all__ = [
    "HorizontalLayout",
    "LengthScale",
    "SpectralBasis",
    "SpectralCorrelation",
    "SpectralCorrelationParameters",
    "gaussian_correlation",
    "matern_correlation",
]


# Analytic correlation functions ---------------------------------------------------------------
def matern_correlation(r: Any, length_scale: float, nu: float) -> np.ndarray:
    r"""The Matérn correlation function.

    .. math::

        c(r) = \frac{2^{1-\nu}}{\Gamma(\nu)}\,
               \Big(\frac{r}{\ell}\Big)^{\nu} K_\nu\Big(\frac{r}{\ell}\Big),
        \qquad c(0) = 1,

    the correlation of the stationary solution of the SPDE
    :math:`(1 - \ell^2\Delta)^{p/2} u = \text{white noise}` in :math:`d`
    dimensions with :math:`p = \nu + d/2` (Whittle 1954; Lindgren et al. 2011).
    Its spectral density is proportional to :math:`(1 + \ell^2|k|^2)^{-p}`.
    :math:`\nu = 1/2` is the exponential :math:`e^{-r/\ell}`, :math:`\nu = 3/2`
    the SOAR-like :math:`(1 + r/\ell)e^{-r/\ell}` (in any dimension).

    Parameters
    ----------
    r:
        Separations (any shape, non-negative).
    length_scale:
        :math:`\ell > 0`.
    nu:
        Smoothness :math:`\nu > 0`.
    """
    x = np.abs(np.asarray(r, dtype=np.float64)) / float(length_scale)
    out = np.ones_like(x)
    pos = x > 0
    xp = x[pos]
    with np.errstate(under="ignore", invalid="ignore"):
        val = (2.0 ** (1.0 - nu) / gamma(nu)) * xp ** nu * kv(nu, xp)
    out[pos] = np.nan_to_num(val, nan=0.0)
    return out


def gaussian_correlation(r: Any, length_scale: float) -> np.ndarray:
    r"""The Gaussian correlation :math:`c(r) = \exp(-r^2 / (2L^2))`."""
    r = np.asarray(r, dtype=np.float64)
    return np.exp(-0.5 * (r / float(length_scale)) ** 2)


# Length-scale keys ------------------------------------------------------------------------------
#: A length scale: a positive number or ``{variable: positive number}``, in domain units.
_check_length_scale = per_variable_number("length scales", positive=True, unit=" in domain units")


LengthScale = Annotated[float | dict[str, float], BeforeValidator(_check_length_scale)]
"""A positive length scale in domain units, or one per variable (``{variable: value}``)."""


def length_scales_for(value: float | dict[str, float], variables: Any, path: str) -> dict[str, float]:
    """``{variable: length scale}`` for ``variables`` from a scalar or a per-variable mapping."""
    if isinstance(value, dict):
        missing = [v for v in variables if v not in value]
        if missing:
            raise ConfigError(f"no length scale for variable(s) {missing} (given: {sorted(value)})", path)
        return {v: float(value[v]) for v in variables}
    return {v: float(value) for v in variables}


# Grid layout ------------------------------------------------------------------------------------
class HorizontalLayout:
    """Where the horizontal axes of a :class:`~pyoops.generic.grid.StructuredGrid` field are.

    A field of shape ``batch + geometry.shape`` is viewed as a *stack*
    ``(nbatch, nlevels, *hshape)``: batch axes flattened, level (non-horizontal)
    axes flattened, horizontal axes last and in grid order.  When the
    horizontal axes already trail (the usual ``[z, y, x]``) this is a reshape
    without a copy.

    Parameters
    ----------
    geometry:
        A geometry with ``axes`` (a StructuredGrid).
    path:
        YAML path of the block, for messages.
    """

    def __init__(self, geometry: Any, path: str = ""):
        axes = getattr(geometry, "axes", None)
        if axes is None:
            raise ConfigError(f"needs a structured grid (a geometry with 'axes'), got {type(geometry).__name__}",
                              path)
        self.axes = tuple(axes)
        self.ndim = len(self.axes)
        self.hidx = [i for i, a in enumerate(self.axes) if a.horizontal]
        self.lidx = [i for i, a in enumerate(self.axes) if not a.horizontal]
        if not self.hidx:
            raise ConfigError("the geometry has no horizontal axis to correlate along", path)
        self.haxes = tuple(self.axes[i] for i in self.hidx)
        self.hshape = tuple(a.n for a in self.haxes)
        self.lshape = tuple(self.axes[i].n for i in self.lidx)
        self.nh = int(np.prod(self.hshape))
        self.nlev = int(np.prod(self.lshape)) if self.lshape else 1
        self.d = len(self.haxes)
        self._perm = self.lidx + self.hidx
        self._trivial = self._perm == list(range(self.ndim))

    def to_stack(self, arr: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        """``(stack, batch_shape)`` with ``stack`` of shape ``(nbatch, nlevels, *hshape)``."""
        batch = arr.shape[: arr.ndim - self.ndim]
        nb = len(batch)
        if not self._trivial:
            arr = arr.transpose(tuple(range(nb)) + tuple(nb + i for i in self._perm))
        return arr.reshape((-1, self.nlev) + self.hshape), batch

    def from_stack(self, stack: np.ndarray, batch: tuple[int, ...]) -> np.ndarray:
        """Inverse of :meth:`to_stack`."""
        arr = stack.reshape(batch + self.lshape + self.hshape)
        if not self._trivial:
            nb = len(batch)
            inv = np.argsort(self._perm)
            arr = arr.transpose(tuple(range(nb)) + tuple(nb + int(i) for i in inv))
        return np.ascontiguousarray(arr)

    def level_slice(self, field: np.ndarray, level: int) -> np.ndarray:
        """The horizontal slice of a grid-shaped ``field`` at flattened level index ``level``."""
        stack, _ = self.to_stack(field)
        return stack[0, level]


# Spectral basis -------------------------------------------------------------------------------
class SpectralBasis:
    r"""Orthogonal eigenbases of the discrete Laplacian on the horizontal axes.

    * periodic axis, :math:`n` points, spacing :math:`\Delta`: the DFT; mode
      :math:`m` (numpy ``fftfreq`` order) has continuous wavenumber
      :math:`k = 2\pi m / (n\Delta)` and discrete Laplacian eigenvalue
      :math:`\lambda = (4/\Delta^2)\sin^2(\pi m/n)`;
    * bounded axis (cell centres between walls, zero-flux/Neumann boundary):
      the orthonormal DCT-II, whose basis vectors
      :math:`\cos(\pi m (i + \tfrac12)/n)` are the eigenvectors of the
      cell-centred Neumann Laplacian, :math:`k = \pi m / (n\Delta)`,
      :math:`\lambda = (4/\Delta^2)\sin^2(\pi m/(2n))`.

    A spectrum is an array over the full mode grid ``hshape`` (periodic axes in
    ``fftfreq`` order); it must be even along periodic axes.  :meth:`apply`
    multiplies by it with real transforms (``rfftn`` over the periodic axes,
    ``dctn`` over the bounded ones), :meth:`diagonal` gives the exact diagonal
    of the operator it defines.
    """

    def __init__(self, haxes: tuple[Any, ...]):
        self.axes = tuple(haxes)
        self.d = len(self.axes)
        self.hshape = tuple(a.n for a in self.axes)
        self.periodic = [i for i, a in enumerate(self.axes) if a.periodic]
        self.bounded = [i for i, a in enumerate(self.axes) if not a.periodic]
        self._pneg = tuple(i - self.d for i in self.periodic)
        self._bneg = tuple(i - self.d for i in self.bounded)
        self._psizes = tuple(self.hshape[i] for i in self.periodic)

    def _mode_index(self, i: int) -> np.ndarray:
        a = self.axes[i]
        if a.periodic:
            return np.fft.fftfreq(a.n) * a.n
        return np.arange(a.n, dtype=np.float64)

    def wavenumbers(self, i: int) -> np.ndarray:
        """Continuous wavenumbers :math:`k` of the modes of horizontal axis ``i``."""
        a = self.axes[i]
        m = self._mode_index(i)
        length = a.upper - a.lower
        return (2.0 * np.pi if a.periodic else np.pi) * m / length

    def laplacian_eigenvalues(self, i: int) -> np.ndarray:
        r"""Eigenvalues :math:`\lambda \ge 0` of :math:`-\Delta_h` (second differences) along axis ``i``."""
        a = self.axes[i]
        m = self._mode_index(i)
        dx = a.spacing
        arg = np.pi * m / a.n if a.periodic else np.pi * m / (2 * a.n)
        return (4.0 / dx ** 2) * np.sin(arg) ** 2

    def expand(self, i: int, values: np.ndarray) -> np.ndarray:
        """A per-axis array reshaped to broadcast over the mode grid."""
        shape = [1] * self.d
        shape[i] = self.hshape[i]
        return np.asarray(values, dtype=np.float64).reshape(shape)

    def sum_over_axes(self, per_axis: list[np.ndarray]) -> np.ndarray:
        """:math:`\\sum_i v_i(m_i)` on the full mode grid."""
        total = np.zeros(self.hshape)
        for i, v in enumerate(per_axis):
            total = total + self.expand(i, v)
        return total

    def half(self, spectrum: np.ndarray) -> np.ndarray:
        """The part of a full spectrum used with ``rfftn`` (last periodic axis cut to ``n//2 + 1``)."""
        spectrum = np.broadcast_to(np.asarray(spectrum, dtype=np.float64), self.hshape)
        if not self.periodic:
            return np.ascontiguousarray(spectrum)
        last = self.periodic[-1]
        index = [slice(None)] * self.d
        index[last] = slice(0, self.hshape[last] // 2 + 1)
        return np.ascontiguousarray(spectrum[tuple(index)])

    def apply(self, y: np.ndarray, half_spectrum: np.ndarray) -> np.ndarray:
        """Multiply fields ``y`` of shape ``(..., *hshape)`` by the operator of a (half) spectrum."""
        z = np.asarray(y, dtype=np.float64)
        if self._bneg:
            z = sfft.dctn(z, type=2, axes=self._bneg, norm="ortho")
        if self._pneg:
            f = sfft.rfftn(z, axes=self._pneg)
            f *= half_spectrum
            z = sfft.irfftn(f, s=self._psizes, axes=self._pneg)
        else:
            z = z * half_spectrum
        if self._bneg:
            z = sfft.idctn(z, type=2, axes=self._bneg, norm="ortho")
        return z

    def diagonal(self, spectrum: np.ndarray) -> np.ndarray:
        r"""Exact diagonal of the operator with (full) ``spectrum``, shape ``hshape``.

        With orthonormal eigenvectors :math:`\phi_{\mathbf m}`,
        :math:`\mathrm{diag}_i = \sum_{\mathbf m} \hat s_{\mathbf m}\,\prod_a
        |\phi_{a, m_a}(i_a)|^2`: a periodic axis contributes the constant
        :math:`1/n` (translation invariance), a bounded axis the squared DCT-II
        basis :math:`(2 - \delta_{m0})\cos^2(\pi m (i + \frac12)/n)/n`.
        """
        out = np.broadcast_to(np.asarray(spectrum, dtype=np.float64), self.hshape)
        for i, a in enumerate(self.axes):
            if a.periodic:
                out = out.mean(axis=i, keepdims=True)
            else:
                n = a.n
                m = np.arange(n)
                phi2 = np.cos(np.pi * np.outer(np.arange(n) + 0.5, m) / n) ** 2 * (2.0 / n)
                phi2[:, 0] = 1.0 / n
                out = np.moveaxis(np.tensordot(phi2, out, axes=([1], [i])), 0, i)
        return np.broadcast_to(out, self.hshape).copy()


# Sqrt control-vector helpers ----------------------------------------------------------------
def split_control(ctl: np.ndarray, geometry: Any, variables: Any) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
    """Split a control vector ``(..., ctl_vec_size)`` into grid-shaped arrays (FieldSet order)."""
    ctl = np.asarray(ctl, dtype=np.float64)
    batch = ctl.shape[:-1]
    out, start = {}, 0
    for v in variables:
        shape = geometry.field_shape(v)
        size = int(np.prod(shape))
        out[v] = ctl[..., start:start + size].reshape(batch + shape)
        start += size
    if start != ctl.shape[-1]:
        raise ValueError(f"control vector has length {ctl.shape[-1]}, expected {start}")
    return out, batch


def join_control(arrays: dict[str, np.ndarray], geometry: Any, variables: Any) -> np.ndarray:
    """Inverse of :func:`split_control`."""
    parts = []
    for v in variables:
        a = arrays[v]
        shape = geometry.field_shape(v)
        parts.append(a.reshape(a.shape[: a.ndim - len(shape)] + (-1,)))
    return np.concatenate(parts, axis=-1)


# The block ------------------------------------------------------------------------------------
class SpectralCorrelationParameters(SaberBlockParameters):
    """Keys of ``spectral correlation``."""

    saber_block_name: Literal["spectral correlation"]
    length_scale: LengthScale = Field(
        description="Correlation length in domain units (e.g. 0.05 of the unit circle), or {variable: value}. "
                    "Gaussian: L in exp(-r^2/(2L^2)); Matérn: the scale l of (1 - l^2 Laplacian)^-p.")
    spectrum: Literal["gaussian", "matern"] = Field("gaussian", description="Correlation family.")
    smoothness: float | None = Field(
        None, gt=0, description="Matérn smoothness nu (default 1.5); the spectral exponent is p = nu + d/2 with d "
                                "the number of horizontal axes. Only with spectrum: matern.")

    @model_validator(mode="after")
    def _smoothness_for_matern(self) -> "SpectralCorrelationParameters":
        if self.smoothness is not None and self.spectrum != "matern":
            raise ValueError("'smoothness' applies to 'spectrum: matern' only (the Gaussian has none)")
        return self


class SpectralCorrelation(SaberCentralBlock):
    r"""``spectral correlation``: :math:`\mathbf{C} = \mathbf{F}^{-1}\mathrm{diag}(\hat s)\mathbf{F}`.

    Only for grids whose horizontal axes are all periodic (use ``diffusion`` on
    channels).  Per variable, with its length scale:

    ``spectrum: gaussian``
        :math:`\hat s` is the DFT of the *periodised* Gaussian
        :math:`g(\mathbf r) = \sum_{\mathbf j}\exp(-|\mathbf r + \mathbf j P|^2/(2L^2))`
        sampled at the grid separations (separable over the axes).  By Poisson
        summation this DFT is a sum of aliased copies of the positive
        continuous spectrum, hence :math:`\hat s \ge 0` (round-off negatives are
        clipped to 0).  After normalisation the Dirac response is the periodised
        Gaussian divided by :math:`g(0)`, i.e. it equals
        :math:`\exp(-r^2/(2L^2))` up to round-off plus the periodic images,
        which are below :math:`\exp(-P^2/(8L^2))` for separations
        :math:`r \le P/2` (:math:`< 10^{-80}` for :math:`L = 0.05 P`).
    ``spectrum: matern``
        :math:`\hat s(\mathbf k) = (1 + \ell^2|\mathbf k|^2)^{-p}` with the
        *continuous* Laplacian eigenvalues :math:`|\mathbf k|^2`,
        :math:`k = 2\pi m/P`, and :math:`p = \nu + d/2` (``smoothness`` is the
        Matérn :math:`\nu`, default 3/2; any :math:`p > 0` is allowed).  The
        Dirac response is the periodised Matérn correlation
        (:func:`matern_correlation`) up to the truncation of the spectrum at the
        Nyquist wavenumber, a relative error of order
        :math:`(\ell k_N)^{d - 2p}` (about :math:`10^{-6}` for :math:`\nu = 3/2`,
        :math:`\ell = 20\Delta x` in 1-D).  The ``diffusion`` block uses the
        *discrete* eigenvalues instead.

    Then :math:`\hat s \leftarrow \hat s / \overline{\hat s}` (mean over all
    wavenumbers), so :math:`\mathrm{diag}(\mathbf{C}) = 1` exactly.  The square
    root is the symmetric :math:`\mathbf{C}^{1/2} = \mathbf{F}^{-1}\mathrm{diag}
    (\hat s^{1/2})\mathbf{F}`; its control vector is the fields of the active
    variables raveled in FieldSet order (``ctl_vec_size`` = their number of grid
    values).  Cost per application: one real FFT pair per field,
    :math:`O(n\log n)`; leading batch axes are transformed together.
    """

    Parameters = SpectralCorrelationParameters

    def __init__(self, params: Any, context: BlockContext):
        super().__init__(params, context)
        self.layout = HorizontalLayout(self.geometry, context.path)
        bounded = [a.name for a in self.layout.haxes if not a.periodic]
        if bounded:
            raise ConfigError(
                f"'spectral correlation' needs periodic horizontal axes, but axis {bounded[0]!r} is bounded "
                "(channel walls); use the 'diffusion' block there", join_path(context.path, "saber block name"))
        self.basis = SpectralBasis(self.layout.haxes)
        self.length_scales = length_scales_for(params.length_scale, self.variables,
                                               join_path(context.path, "length scale"))
        self.nu = params.smoothness if params.smoothness is not None else 1.5
        self.exponent = self.nu + 0.5 * self.layout.d
        cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        self._half: dict[str, np.ndarray] = {}
        self._half_sqrt: dict[str, np.ndarray] = {}
        self.spectra: dict[str, np.ndarray] = {}
        for v, ell in self.length_scales.items():
            if ell not in cache:
                s = self._spectrum(ell)
                cache[ell] = (s, self.basis.half(s))
            self.spectra[v], self._half[v] = cache[ell]
            self._half_sqrt[v] = np.sqrt(self._half[v])

    # Spectra ---------------------------------------------------------------------------------
    def _spectrum(self, ell: float) -> np.ndarray:
        """Normalised spectrum (mean 1) on the full mode grid."""
        if self.params.spectrum == "gaussian":
            s = np.ones(self.basis.hshape)
            for i, a in enumerate(self.basis.axes):
                s = s * self.basis.expand(i, periodised_gaussian_spectrum(a, ell))
        else:
            k2 = self.basis.sum_over_axes([self.basis.wavenumbers(i) ** 2 for i in range(self.basis.d)])
            s = (1.0 + ell ** 2 * k2) ** (-self.exponent)
        return s / s.mean()

    def correlation(self, variable: str | None = None) -> np.ndarray:
        """The correlation with the first horizontal grid point (a Dirac response), shape ``hshape``."""
        v = variable or self.variables[0]
        return np.real(np.fft.ifftn(self.spectra[v]))

    # Operator -------------------------------------------------------------------------------------
    def _apply(self, arrays: dict[str, np.ndarray], half: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for v, arr in arrays.items():
            stack, batch = self.layout.to_stack(np.asarray(arr, dtype=np.float64))
            out[v] = self.layout.from_stack(self.basis.apply(stack, half[v]), batch)
        return out

    def multiply(self, fields: FieldSet) -> FieldSet:
        return FieldSet(self._apply({v: fields[v] for v in fields}, self._half), copy=False)

    @property
    def ctl_vec_size(self) -> int:
        return sum(int(np.prod(self.geometry.field_shape(v))) for v in self.variables)

    def multiply_sqrt(self, ctl: np.ndarray) -> FieldSet:
        arrays, _ = split_control(ctl, self.geometry, self.variables)
        return FieldSet(self._apply(arrays, self._half_sqrt), copy=False)

    def multiply_sqrt_ad(self, fields: FieldSet) -> np.ndarray:
        out = self._apply({v: fields[v] for v in self.variables}, self._half_sqrt)
        return join_control(out, self.geometry, self.variables)


def periodised_gaussian_spectrum(axis: Any, length_scale: float) -> np.ndarray:
    r"""DFT of the periodised Gaussian :math:`\sum_j \exp(-(x + jP)^2/(2L^2))` sampled on a periodic axis.

    Images are summed until they are below :math:`e^{-40}`; the result is
    real, even, and clipped at 0 (round-off only).  Not normalised.

    For :math:`L > P` the image sum needs :math:`O(L/P)` terms; it is then evaluated
    in its Poisson-summed form, :math:`(\sqrt{2\pi}L/P)\sum_k e^{-2\pi^2k^2L^2/P^2}
    \cos(2\pi kx/P)`, whose terms fall below :math:`e^{-40}` after a few :math:`k`
    (the same function, so any length scale costs :math:`O(n)`).
    """
    n, dx, period = axis.n, axis.spacing, axis.upper - axis.lower
    sep = np.fft.fftfreq(n) * n * dx  # minimum-image separations, fftfreq order
    if length_scale <= period:
        images = int(np.ceil(9.0 * length_scale / period)) + 1
        j = np.arange(-images, images + 1)
        g = np.exp(-0.5 * ((sep[:, None] + j[None, :] * period) / length_scale) ** 2).sum(axis=1)
    else:
        ratio = length_scale / period
        k = np.arange(0, int(np.ceil(np.sqrt(20.0) / (np.pi * ratio))) + 2)
        with np.errstate(over="ignore"):  # (k L / P)^2 may overflow to inf for absurd L: its weight is then 0
            weights = np.exp(-2.0 * (np.pi * k * ratio) ** 2) * np.where(k == 0, 1.0, 2.0)
        g = min(np.sqrt(2.0 * np.pi) * ratio, 1e300) * (np.cos(2.0 * np.pi * np.outer(sep, k) / period) @ weights)
    return np.clip(np.fft.fft(g).real, 0.0, None)
