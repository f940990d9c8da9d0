r"""``diffusion``: normalised Matérn (implicit) or Gaussian (explicit) correlations on structured grids.

Implicit variant (default)
    .. math::

        \mathbf{C} = \mathbf{N}\,\mathbf{A}^{-p}\,\mathbf{N}, \qquad
        \mathbf{A} = \mathbf{I} - \nabla\cdot(\ell^2\nabla)
        \quad(= \mathbf{I} - \ell^2\Delta \text{ for a constant } \ell),

    discretised with second differences in flux form on the horizontal axes of a
    :class:`~pyoops.generic.grid.StructuredGrid`: periodic axes wrap around,
    bounded (channel) axes have zero-flux (Neumann) walls, level axes are not
    diffused (every level is an independent 2-D problem).  With a spatially
    varying :math:`\ell(\mathbf x)` the face coefficient is the mean of
    :math:`\ell^2` of the two cells, so :math:`\mathbf{A}` is symmetric
    positive definite (identity plus a weighted graph Laplacian).  In the
    continuum :math:`\mathbf{A}^{-p}` has the Matérn correlation of smoothness
    :math:`\nu = p - d/2` (:math:`d` = number of horizontal axes; Whittle 1954,
    Mirouze & Weaver 2010, Lindgren et al. 2011; see
    :func:`~pyoops.saber.generic.spectral.matern_correlation`); in 1-D, :math:`p = 2`
    gives :math:`(1 + r/\ell)e^{-r/\ell}`.

Explicit variant
    :math:`K` steps of :math:`\mathbf{I} + \tau\Delta` (split by direction),
    :math:`\tau = \ell^2/(2K)`: the heat equation run for :math:`\kappa T = K\tau`
    gives the Gaussian :math:`\exp(-r^2/(2L^2))` with :math:`L^2 = 2\kappa T = \ell^2`.
    It is stable only if :math:`\tau/\Delta x^2 < 1/2` in every direction,
    i.e. :math:`K > \ell^2/\Delta x^2`; this is checked.  The operator is
    applied as :math:`\mathbf{C} = \mathbf{N}\mathbf{S}\mathbf{S}^\mathsf{T}\mathbf{N}`
    with :math:`\mathbf{S}` the product of :math:`K/2` steps (so :math:`K` is even
    and :math:`\mathbf{C}` is symmetric positive semi-definite even with
    varying :math:`\ell`).

Normalisation
    :math:`\mathbf{N} = \mathrm{diag}(\mathbf{A}^{-p})^{-1/2}` gives unit variance:
    ``exact`` (the operator applied to a Dirac at every horizontal point; at most
    ``max points`` points unless ``force: true``), ``analytic`` (constant
    :math:`\ell` only: the diagonal from the eigen-decomposition, see
    :meth:`~pyoops.saber.generic.spectral.SpectralBasis.diagonal` — on fully
    periodic grids every point has the same variance, the mean of the spectrum),
    or ``randomization`` (:math:`K` seeded draws :math:`\xi`,
    :math:`\mathrm{var} \approx \overline{(\mathbf{S}\xi)^2}`, relative error of
    the variance about :math:`\sqrt{2/K}` per point).  ``exact`` costs one
    application of :math:`\mathbf{S}^\mathsf{T}` per point
    (:math:`\mathrm{diag}(\mathbf{S}\mathbf{S}^\mathsf{T})_j = |\mathbf{S}^\mathsf{T} e_j|^2`),
    randomization one per sample; the default ``auto`` takes ``analytic`` for a
    constant :math:`\ell`, else ``exact`` up to :math:`\min(\text{max points},
    4K)` points, else ``randomization``.  With a sparse LU (about 5 ms per solve
    at :math:`141^2` points) exact normalisation of 20000 points takes ~1.5 min.

Square root
    :math:`\mathbf{C}^{1/2} = \mathbf{N}\mathbf{A}^{-p/2}` (implicit) or
    :math:`\mathbf{N}\mathbf{S}` (explicit), so that
    :math:`\mathbf{C} = \mathbf{C}^{1/2}\mathbf{C}^{1/2\,\mathsf{T}}`.  With a constant
    :math:`\ell` the implicit operator is applied by FFT (periodic axes) and
    orthonormal DCT-II (wall axes), which diagonalise the discrete Laplacian
    exactly: any real :math:`p > 0` works and :math:`\mathbf{A}^{-p/2}` is just
    the square root of the spectrum.  With a spatially varying :math:`\ell` the
    sparse :math:`\mathbf{A}` is factorised once (:func:`scipy.sparse.linalg.splu`)
    and :math:`p` must be an integer; the square root exists for even :math:`p`
    only (odd :math:`p`: ``has_sqrt`` is False, so no randomization either).

Calibration
    ``calibration: {length scale: {fit: true}, output: FILE}`` fits a constant
    :math:`\ell` per variable to the ensemble: the sample correlation as a
    function of separation (homogeneity assumed; averaged over points, levels and
    directions with FFT autocorrelations, :class:`EnsembleCorrelation`) is fitted
    by least squares with the block's own analytic correlation (Matérn
    :math:`\nu = p - d/2` for the implicit variant, Gaussian for the explicit
    one), periodised along periodic axes as the block's correlation is, over
    separations where the sample correlation exceeds ``min correlation``
    (0.1).  The discrete operator differs from the continuum model by
    :math:`O((\Delta x/\ell)^2)`, so resolve :math:`\ell` by a few grid
    lengths.  ``FILE`` (netCDF: one :math:`\ell` field per variable, the
    exponent in global attributes ``diffusion_exponent`` or
    ``diffusion_iterations``) is what ``read: {filename: FILE}`` loads back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import hashlib
import os
from typing import Any, Literal

import numpy as np
import scipy.fft as sfft
import scipy.sparse as sp
from pydantic import Field, model_validator
from scipy.sparse.linalg import splu

from pyoops.config.parameters import Parameters, validate
from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import read_fields, write_fields
from pyoops.saber.blocks import BlockContext, SaberBlockParameters, SaberCentralBlock
from pyoops.saber.generic.spectral import (
    HorizontalLayout,
    LengthScale,
    SpectralBasis,
    gaussian_correlation,
    join_control,
    length_scales_for,
    matern_correlation,
    split_control,
)
from pyoops.util.datetime import DateTime
from pyoops.util.errors import ConfigError, InputFileError, join_path
from pyoops.util.random import generator
from pyoops.util.atomic import input_path

__all__ = [
    "Diffusion",
    "DiffusionCalibration",
    "DiffusionNormalization",
    "DiffusionParameters",
    "DiffusionRead",
    "LengthScaleFit",
    "EnsembleCorrelation",
    "correlation_by_separation",
    "flux_laplacian",
]


# Parameters -------------------------------------------------------------------------------
class DiffusionNormalization(Parameters):
    """``normalization:`` of ``diffusion``: how the unit-variance factor N is computed."""

    method: Literal["auto", "exact", "analytic", "randomization"] = Field(
        "auto", description="exact (Dirac at every point), analytic (constant length scale), randomization, "
                            "or auto: analytic if possible, else exact up to min(max points, 4 samples) points "
                            "(or without a square root), else randomization.")
    samples: int = Field(1000, ge=2, description="Randomization: number of draws K (relative error ~ sqrt(2/K)).")
    seed: int = Field(0, ge=0, description="Randomization: seed of the pyoops.util.random generator.")
    max_points: int = Field(20000, ge=1, description="Exact: largest number of horizontal points allowed.")
    force: bool = Field(False, description="Exact: allow more than 'max points' points (cost ~ n^2).")


class LengthScaleFit(Parameters):
    """``calibration.length scale``: fit ℓ to the ensemble correlations."""

    fit: bool = Field(True, description="Fit the horizontal length scale (false: keep the configured one).")
    max_separation: float | None = Field(
        None, gt=0, description="Fit separations up to this distance (default: until the sample correlation "
                                "drops below 'min correlation').")
    min_correlation: float = Field(0.1, gt=0, lt=1, description="Default fit range: correlations above this.")


class DiffusionCalibration(Parameters):
    """``calibration:`` of ``diffusion``."""

    length_scale: LengthScaleFit = Field(default_factory=LengthScaleFit, description="Length-scale fit.")
    output: str | None = Field(None, description="netCDF file for the calibrated parameters (read: filename).")


class DiffusionRead(Parameters):
    """``read:`` of ``diffusion``: parameters written by a calibration."""

    filename: str = Field(description="netCDF file with one length-scale field per variable.")


class DiffusionParameters(SaberBlockParameters):
    """Keys of ``diffusion`` (``length scale`` is accepted for ``horizontal length scale``)."""

    saber_block_name: Literal["diffusion"]
    horizontal_length_scale: LengthScale | None = Field(
        None, description="Length scale l > 0 in domain units (or {variable: l}); also accepted as 'length scale'.")
    horizontal_length_scale_file: str | None = Field(
        None, description="netCDF file with a spatially varying l field per variable (grid layout).")
    smoothness: float | None = Field(
        None, gt=0, description="Implicit: Matérn smoothness nu; the exponent is p = nu + d/2 (d horizontal axes).")
    iterations: int | None = Field(
        None, ge=1, description="Implicit: the exponent p of (I - l^2 Laplacian)^-p (default 2). Explicit: the "
                                "number K of explicit steps in C (even; default: smallest even K with "
                                "tau/dx^2 <= 1/4).")
    variant: Literal["implicit", "explicit"] = Field("implicit", description="Implicit (Matérn) or explicit "
                                                                             "(Gaussian) diffusion.")
    solver: Literal["auto", "spectral", "sparse"] = Field(
        "auto", description="Implicit: FFT/DCT (constant l, any p) or sparse LU (any l, integer p); auto picks "
                            "spectral when l is constant.")
    normalization: DiffusionNormalization = Field(
        default_factory=DiffusionNormalization, description="Unit-variance normalisation.")

    @model_validator(mode="before")
    @classmethod
    def _length_scale_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "length scale" in data:
            if "horizontal length scale" in data or "horizontal_length_scale" in data:
                raise ValueError("give 'horizontal length scale' or 'length scale', not both")
            data = dict(data)
            data["horizontal length scale"] = data.pop("length scale")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "DiffusionParameters":
        if self.horizontal_length_scale is not None and self.horizontal_length_scale_file is not None:
            raise ValueError("give 'horizontal length scale' or 'horizontal length scale file', not both")
        if self.smoothness is not None and self.iterations is not None:
            raise ValueError("give 'smoothness' (nu) or 'iterations' (p = nu + d/2), not both")
        if self.variant == "explicit":
            if self.smoothness is not None:
                raise ValueError("'smoothness' applies to variant: implicit (explicit diffusion is Gaussian)")
            if self.solver != "auto":
                raise ValueError("'solver' applies to variant: implicit")
            if self.iterations is not None and self.iterations % 2:
                raise ValueError(f"'iterations' of explicit diffusion must be even (C = S S^T with K/2 steps "
                                 f"in S), got {self.iterations}")
        configured = self.horizontal_length_scale is not None or self.horizontal_length_scale_file is not None
        fitting = False
        if self.calibration is not None:
            ls = self.calibration.get("length scale", {})
            fitting = not (isinstance(ls, dict) and ls.get("fit", True) is False)
        if self.read is not None and configured:
            raise ValueError("'read' loads the length scale: remove 'horizontal length scale' (file)")
        if fitting and configured:
            raise ValueError("'calibration' fits the length scale: remove 'horizontal length scale' (file) or "
                             "set 'calibration.length scale.fit: false'")
        if self.read is None and not fitting and not configured:
            raise ValueError("needs 'horizontal length scale' (or 'length scale'), 'horizontal length scale file', "
                             "'read' or 'calibration'")
        return self


# Sparse operators ---------------------------------------------------------------------------
def flux_laplacian(haxes: tuple[Any, ...], coefficient: Any, axes: list[int] | None = None) -> sp.csr_matrix:
    r"""The weighted graph Laplacian :math:`\mathbf{L} = -\nabla\cdot(\kappa\nabla)` on the horizontal grid.

    For each face between neighbouring cells :math:`i, j` along axis :math:`a`
    (wrapping on periodic axes; none through walls, i.e. zero flux), the weight
    is :math:`w = \tfrac12(\kappa_i + \kappa_j)/\Delta_a^2` and
    :math:`\mathbf{L} = \sum_{\text{faces}} w\,(e_i - e_j)(e_i - e_j)^\mathsf{T}`:
    symmetric, positive semi-definite, and equal to minus the usual
    second-difference Laplacian times :math:`\kappa` for constant
    :math:`\kappa`.

    Parameters
    ----------
    haxes:
        The horizontal axes, in grid order.
    coefficient:
        :math:`\kappa` (a number or an array of the horizontal shape).
    axes:
        Indices of the axes to include (default: all).
    """
    hshape = tuple(a.n for a in haxes)
    n = int(np.prod(hshape))
    kappa = np.broadcast_to(np.asarray(coefficient, dtype=np.float64), hshape).ravel()
    idx = np.arange(n).reshape(hshape)
    rows, cols, vals = [], [], []
    for ax in (range(len(haxes)) if axes is None else axes):
        a = haxes[ax]
        if a.n < 2:
            continue
        if a.periodic:
            i, j = idx, np.roll(idx, -1, axis=ax)
        else:
            i = np.take(idx, np.arange(a.n - 1), axis=ax)
            j = np.take(idx, np.arange(1, a.n), axis=ax)
        i, j = i.ravel(), j.ravel()
        w = 0.5 * (kappa[i] + kappa[j]) / a.spacing ** 2
        rows += [i, j, i, j]
        cols += [i, j, j, i]
        vals += [w, w, -w, -w]
    if not rows:
        return sp.csr_matrix((n, n))
    return sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n, n)).tocsr()


def _max_face_ratio(haxes: tuple[Any, ...], coefficient: Any, ax: int) -> float:
    """Largest face-averaged ``coefficient / Δ²`` along axis ``ax``."""
    a = haxes[ax]
    if a.n < 2:
        return 0.0
    hshape = tuple(x.n for x in haxes)
    kappa = np.broadcast_to(np.asarray(coefficient, dtype=np.float64), hshape)
    if a.periodic:
        face = 0.5 * (kappa + np.roll(kappa, -1, axis=ax))
    else:
        face = 0.5 * (np.take(kappa, np.arange(a.n - 1), axis=ax) + np.take(kappa, np.arange(1, a.n), axis=ax))
    return float(face.max()) / a.spacing ** 2


class _Operator(ABC):
    """An unnormalised correlation operator ``M = S Sᵀ`` on stacks ``(m, *hshape)``."""

    has_sqrt = True
    spectrum: np.ndarray | None = None

    @abstractmethod
    def full(self, y: np.ndarray) -> np.ndarray:
        """:math:`\\mathbf{M} y`."""

    @abstractmethod
    def sqrt(self, y: np.ndarray) -> np.ndarray:
        """:math:`\\mathbf{S} y`."""

    @abstractmethod
    def sqrt_t(self, y: np.ndarray) -> np.ndarray:
        """:math:`\\mathbf{S}^\\mathsf{T} y`."""


class _SpectralOperator(_Operator):
    """:math:`\\mathbf{M}` given by its spectrum in the FFT/DCT basis (constant ℓ)."""

    def __init__(self, basis: SpectralBasis, spectrum: np.ndarray):
        self.basis = basis
        self.spectrum = spectrum
        self._half = basis.half(spectrum)
        self._half_sqrt = np.sqrt(self._half)

    def full(self, y: np.ndarray) -> np.ndarray:
        return self.basis.apply(y, self._half)

    def sqrt(self, y: np.ndarray) -> np.ndarray:
        return self.basis.apply(y, self._half_sqrt)

    sqrt_t = sqrt


def _columns(y: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    return y.reshape(y.shape[0], -1).T, y.shape


class _SparseImplicitOperator(_Operator):
    """:math:`\\mathbf{A}^{-p}` with :math:`\\mathbf{A}` factorised once by SuperLU."""

    def __init__(self, matrix: sp.spmatrix, exponent: int):
        # A is symmetric and strictly diagonally dominant: no pivoting, symmetric fill-reducing ordering.
        self.lu = splu(sp.csc_matrix(matrix), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                       options={"SymmetricMode": True})
        self.p = int(exponent)
        self.has_sqrt = self.p % 2 == 0

    def _power(self, y: np.ndarray, k: int) -> np.ndarray:
        # One right-hand side at a time: SuperLU's multi-RHS solve is ~2x slower per column.
        rows = np.array(y.reshape(y.shape[0], -1), dtype=np.float64, order="C")
        for j in range(rows.shape[0]):
            col = rows[j]
            for _ in range(k):
                col = self.lu.solve(col)
            rows[j] = col
        return rows.reshape(y.shape)

    def full(self, y: np.ndarray) -> np.ndarray:
        return self._power(y, self.p)

    def sqrt(self, y: np.ndarray) -> np.ndarray:
        return self._power(y, self.p // 2)

    sqrt_t = sqrt


class _ExplicitOperator(_Operator):
    """:math:`\\mathbf{S}\\mathbf{S}^\\mathsf{T}`, :math:`\\mathbf{S} = (\\mathbf{E}_d\\cdots\\mathbf{E}_1)^{K/2}`."""

    def __init__(self, steps: list[sp.csr_matrix], iterations: int, spectrum: np.ndarray | None):
        self.steps = steps
        self.steps_t = list(reversed(steps))
        self.half_steps = iterations // 2
        self.spectrum = spectrum

    def _run(self, y: np.ndarray, steps: list[sp.csr_matrix]) -> np.ndarray:
        x, shape = _columns(y)
        for _ in range(self.half_steps):
            for e in steps:
                x = e @ x
        return np.ascontiguousarray(x.T).reshape(shape)

    def sqrt(self, y: np.ndarray) -> np.ndarray:
        return self._run(y, self.steps)

    def sqrt_t(self, y: np.ndarray) -> np.ndarray:
        return self._run(y, self.steps_t)

    def full(self, y: np.ndarray) -> np.ndarray:
        return self.sqrt(self.sqrt_t(y))


# Calibration helpers ----------------------------------------------------------------------------
class EnsembleCorrelation:
    r"""Homogeneous sample correlation of an ensemble as a function of the horizontal separation.

    Each member is standardised point by point with the sample standard
    deviation (:math:`N - 1`); for every separation vector
    :math:`\boldsymbol\delta` the sample correlations
    :math:`\hat\rho(\mathbf x, \mathbf x + \boldsymbol\delta)` are averaged over
    all pairs of points (and levels) with FFT autocorrelations, cost
    :math:`O(N n\log n)`: periodic axes wrap around (minimum-image
    separations), bounded axes are zero-padded to twice their length and the
    sums divided by the number of pairs that fit.  :meth:`binned` then averages
    over directions in bins of width :math:`\min_a\Delta_a` (pair-count
    weighted).

    Parameters
    ----------
    members:
        Perturbations, shape ``(N, *grid shape)`` (the mean is removed again).
    layout:
        The grid layout.

    Attributes
    ----------
    lags:
        Separation vectors, shape ``(d, L)`` (domain units), every lag with pairs.
    rho, pairs, r:
        Mean sample correlation, number of point pairs and length :math:`|\boldsymbol\delta|` of each lag.
    """

    def __init__(self, members: np.ndarray, layout: HorizontalLayout, chunk: int = 32):
        members = np.asarray(members, dtype=np.float64)
        nmem = members.shape[0]
        if nmem < 3:
            raise ValueError(f"need at least 3 members to estimate correlations, got {nmem}")
        self.layout = layout
        self.nmembers = nmem
        pert = members - members.mean(axis=0, keepdims=True)
        sigma = np.sqrt((pert ** 2).sum(axis=0) / (nmem - 1))
        sigma[sigma == 0] = np.inf
        stack, _ = layout.to_stack(pert / sigma)  # (N, nlev, *hshape)
        d = layout.d
        pshape = tuple(a.n if a.periodic else 2 * a.n for a in layout.haxes)
        axes = tuple(range(-d, 0))
        flat = stack.reshape((-1,) + layout.hshape)
        acc = np.zeros(pshape)
        for start in range(0, flat.shape[0], chunk):
            f = sfft.rfftn(flat[start:start + chunk], s=pshape, axes=axes)
            acc += sfft.irfftn((f * f.conj()).real.sum(axis=0), s=pshape, axes=axes)
        mask = sfft.rfftn(np.ones(layout.hshape), s=pshape, axes=axes)
        pairs = np.rint(sfft.irfftn((mask * mask.conj()).real, s=pshape, axes=axes))
        ok = pairs > 0
        # Standardised with N - 1: the sum over members divided by N - 1 is the sample correlation.
        self.rho = acc[ok] / ((nmem - 1) * layout.nlev * pairs[ok])
        self.pairs = pairs[ok]
        grids = np.meshgrid(*[np.fft.fftfreq(m) * m * a.spacing for m, a in zip(pshape, layout.haxes)],
                            indexing="ij")
        self.lags = np.stack([g[ok] for g in grids]) if d else np.zeros((0, int(ok.sum())))
        self.r = np.sqrt((self.lags ** 2).sum(axis=0))
        self.width = min(a.spacing for a in layout.haxes)
        self.bins = np.rint(self.r / self.width).astype(np.int64)

    def _bin(self, values: np.ndarray, select: np.ndarray) -> np.ndarray:
        nb = int(self.bins.max()) + 1
        w = np.bincount(self.bins[select], self.pairs[select], nb)
        out = np.bincount(self.bins[select], (self.pairs * values)[select], nb)
        keep = w > 0
        return out[keep] / w[keep]

    def binned(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(r, rho, pairs)`` per separation bin, pair-weighted, starting with r = 0, rho = 1."""
        every = np.ones(self.r.size, dtype=bool)
        nb = int(self.bins.max()) + 1
        w = np.bincount(self.bins, self.pairs, nb)
        return self._bin(self.r, every), self._bin(self.rho, every), w[w > 0]

    def model(self, correlation: Any, length_scale: float, select: np.ndarray) -> np.ndarray:
        r"""Binned model correlation :math:`c(|\boldsymbol\delta|/\ell)`, periodised along periodic axes.

        The block's correlation on a periodic axis of period :math:`P` is the
        sum over images, normalised at 0:
        :math:`\sum_{\mathbf m} c(|\boldsymbol\delta + \mathbf m P|/\ell) /
        \sum_{\mathbf m} c(|\mathbf m P|/\ell)` (images :math:`m \in \{-1, 0, 1\}`).
        ``correlation`` is a function of :math:`x = r/\ell`.
        """
        shifts = [(-1, 0, 1) if a.periodic else (0,) for a in self.layout.haxes]
        periods = [a.upper - a.lower for a in self.layout.haxes]
        lags = self.lags[:, select]
        total = np.zeros(lags.shape[1])
        at_zero = 0.0
        for combo in np.array(np.meshgrid(*shifts, indexing="ij")).reshape(len(shifts), -1).T:
            offset = (combo * np.asarray(periods))[:, None]
            total += correlation(np.sqrt(((lags + offset) ** 2).sum(axis=0)) / length_scale)
            at_zero += float(correlation(np.sqrt(((combo * np.asarray(periods)) ** 2).sum()) / length_scale))
        values = np.zeros(self.r.size)
        values[select] = total / at_zero
        return self._bin(values, select)

    def fit(self, correlation: Any, max_separation: float, bounds: tuple[float, float]) -> float:
        r"""Least-squares length scale over the bins with :math:`0 < r_b \le r_{max}`.

        Minimises :math:`\sum_b (\hat\rho_b - c_b(\ell))^2` (:meth:`model`): a
        log-spaced search over ``bounds`` then a bounded Brent refinement in
        :math:`\log\ell`.
        """
        select = (self.r > 0) & (self.r <= max_separation)
        if not select.any():  # at least the nearest neighbours
            select = (self.r > 0) & (self.r <= self.r[self.r > 0].min() * (1 + 1e-9))
        target = self._bin(self.rho, select)

        def cost(log_ell: float) -> float:
            return float(((target - self.model(correlation, float(np.exp(log_ell)), select)) ** 2).sum())

        grid = np.linspace(np.log(bounds[0]), np.log(bounds[1]), 61)
        k = int(np.argmin([cost(g) for g in grid]))
        lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
        from scipy.optimize import minimize_scalar   # here: scipy.optimize costs 55 ms to import

        res = minimize_scalar(cost, bounds=(lo, hi), method="bounded", options={"xatol": 1e-9})
        return float(np.exp(res.x))


def correlation_by_separation(members: np.ndarray, layout: HorizontalLayout) -> tuple[np.ndarray, np.ndarray,
                                                                                        np.ndarray]:
    """``(r, rho, pairs)``: the binned homogeneous sample correlation (see :class:`EnsembleCorrelation`)."""
    return EnsembleCorrelation(members, layout).binned()


def tabulated(function: Any, xmax: float = 60.0, npoints: int = 60001) -> Any:
    """A fast piecewise-linear table of ``function(x)`` on ``[0, xmax]`` (0 beyond); error ~1e-7 for Matérn."""
    xs = np.linspace(0.0, xmax, npoints)
    ys = function(xs)
    return lambda x: np.interp(x, xs, ys, right=0.0)


def _read_static_fields(filename: str, geometry: Any, variables: Any) -> tuple[FieldSet, dict[str, Any]]:
    """Fields and global attributes of a parameter file; its ``date`` (if any) is not checked."""
    import netCDF4

    attrs: dict[str, Any] = {}
    date = None
    if os.path.isfile(filename):
        try:
            with netCDF4.Dataset(input_path(filename), "r") as ds:
                attrs = {k: ds.getncattr(k) for k in ds.ncattrs()}
        except OSError:
            pass  # read_fields reports it
        if "date" not in attrs:
            date = DateTime("1970-01-01T00:00:00Z")  # any date: the file has none to compare with
    fields, _ = read_fields(filename, geometry, variables, date)
    return fields, attrs


# The block ------------------------------------------------------------------------------------
class Diffusion(SaberCentralBlock):
    r"""``diffusion``: :math:`\mathbf{C} = \mathbf{N}\mathbf{A}^{-p}\mathbf{N}` (implicit) or Gaussian (explicit).

    See the module documentation for the maths.  Key choices:

    * ``smoothness`` is the Matérn :math:`\nu`; the exponent is
      :math:`p = \nu + d/2`.  ``iterations`` gives :math:`p` directly (implicit)
      or the number :math:`K` of explicit steps.  Default :math:`p = 2`.
    * ``horizontal length scale`` :math:`\ell` is the scale of the operator
      :math:`\mathbf{I} - \ell^2\Delta` (Matérn scale; for the explicit variant the
      Gaussian :math:`L`).
    * Constant :math:`\ell` (a value, or a file field constant on each level):
      FFT/DCT diagonalisation, cost :math:`O(n\log n)` per application, any
      :math:`p`, square root always.  Varying :math:`\ell`: sparse LU factorised
      once per distinct field (variable/level), :math:`p` solves per application,
      square root for even :math:`p`.
    * Leading batch axes are solved together (multiple right-hand sides).
    """

    Parameters = DiffusionParameters

    def __init__(self, params: Any, context: BlockContext):
        self.layout = HorizontalLayout(context.geometry, context.path)
        self.basis = SpectralBasis(self.layout.haxes)
        self._lengths: dict[str, Any] | None = None
        self._file_attrs: dict[str, Any] = {}
        super().__init__(params, context)  # read / calibration may set the length scales
        path = context.path
        if self._lengths is None:
            if params.horizontal_length_scale_file is not None:
                self._lengths = self._read_lengths(params.horizontal_length_scale_file,
                                                   join_path(path, "horizontal length scale file"))
            else:
                self._lengths = length_scales_for(params.horizontal_length_scale, self.variables,
                                                  join_path(path, "horizontal length scale"))
        self._resolve_steps()
        self._build()
        if getattr(self, "_pending_output", None):
            self.write(self._pending_output)

    # Exponent / steps -------------------------------------------------------------------------
    @property
    def d(self) -> int:
        """Number of horizontal (diffused) axes."""
        return self.layout.d

    def _config_exponent(self) -> float | None:
        if self.params.variant != "implicit":
            return None
        if self.params.iterations is not None:
            return float(self.params.iterations)
        if self.params.smoothness is not None:
            return float(self.params.smoothness) + 0.5 * self.d
        return None

    def _implicit_exponent(self) -> float:
        p = self._config_exponent()
        if p is None and "diffusion_exponent" in self._file_attrs:
            p = float(self._file_attrs["diffusion_exponent"])
        return 2.0 if p is None else p

    def _resolve_steps(self) -> None:
        path = self.context.path
        if self.params.variant == "implicit":
            self.exponent = self._implicit_exponent()
            self.nu = self.exponent - 0.5 * self.d
            self.iterations = None
            return
        self.exponent = None
        self.nu = None
        k = self.params.iterations
        if k is None and "diffusion_iterations" in self._file_attrs:
            k = int(self._file_attrs["diffusion_iterations"])
        ratios = {}
        for v, ell in self._lengths.items():
            for i, a in enumerate(self.layout.haxes):
                ratios[(v, a.name)] = float(np.max(ell)) ** 2 / a.spacing ** 2
        worst = max(ratios.values())
        if k is None:
            k = max(2, 2 * int(np.ceil(worst)))  # tau/dx^2 = l^2/(2K dx^2) <= 1/4
            k += k % 2
        self.iterations = int(k)
        # Stability of each split step I + tau Laplacian_a: tau/dx^2 < 1/2 (face values for varying l).
        for v, ell in self._lengths.items():
            for lev in range(self.layout.nlev):
                tau = self._level_length(ell, lev) ** 2 / (2.0 * self.iterations)
                for i, a in enumerate(self.layout.haxes):
                    ratio = _max_face_ratio(self.layout.haxes, tau, i)
                    if ratio >= 0.5:
                        need = int(np.floor(2.0 * ratio * self.iterations)) + 1
                        need += need % 2
                        raise ConfigError(
                            f"explicit diffusion is unstable: tau/dx^2 = {ratio:.4g} on axis '{a.name}' "
                            f"(variable '{v}', tau = l^2/(2K), K = {self.iterations}) must be < 1/2; use "
                            f"iterations >= {need}", join_path(path, "iterations"))

    # Length scales ----------------------------------------------------------------------------
    def _read_lengths(self, filename: str, path: str) -> dict[str, Any]:
        fields, attrs = _read_static_fields(filename, self.geometry, self.variables)
        self._file_attrs = attrs
        out = {}
        for v in self.variables:
            arr = np.asarray(fields[v], dtype=np.float64)
            if not (np.isfinite(arr).all() and (arr > 0).all()):
                raise ConfigError(f"{filename}: length scales of '{v}' must be positive and finite", path)
            out[v] = float(arr.flat[0]) if np.ptp(arr) <= 1e-12 * arr.max() else arr
        return out

    def _level_length(self, ell: Any, level: int) -> Any:
        """The length scale on one level: a float if constant there, else an ``hshape`` array."""
        if np.isscalar(ell):
            return float(ell)
        h = self.layout.level_slice(np.asarray(ell), level)
        return float(h.flat[0]) if np.ptp(h) <= 1e-12 * h.max() else np.ascontiguousarray(h)

    @property
    def length_scales(self) -> dict[str, Any]:
        """``{variable: ℓ}`` (a float, or a grid-shaped field when it varies)."""
        return dict(self._lengths)

    # Operators ----------------------------------------------------------------------------------
    def _build(self) -> None:
        self._ops: dict[Any, _Operator] = {}
        self._inv_std: dict[Any, np.ndarray] = {}
        self._groups: dict[str, list[tuple[Any, np.ndarray]]] = {}
        for v in self.variables:
            by_key: dict[Any, list[int]] = {}
            for lev in range(self.layout.nlev):
                ell = self._level_length(self._lengths[v], lev)
                key = ("c", ell) if isinstance(ell, float) else ("f", hashlib.sha1(ell.tobytes()).hexdigest())
                if key not in self._ops:
                    self._ops[key] = self._make_operator(ell)
                by_key.setdefault(key, []).append(lev)
            self._groups[v] = [(key, np.asarray(levs)) for key, levs in by_key.items()]
        #: Normalisation method used for each distinct operator (``auto`` resolved).
        self.normalization_methods: dict[Any, str] = {}
        for n, key in enumerate(self._ops):
            self._inv_std[key] = 1.0 / np.sqrt(self._variance(self._ops[key], n, key))

    def _make_operator(self, ell: Any) -> _Operator:
        path = self.context.path
        constant = isinstance(ell, float)
        if self.params.variant == "explicit":
            tau = np.asarray(ell) ** 2 / (2.0 * self.iterations)
            steps = [sp.identity(self.layout.nh, format="csr") - flux_laplacian(self.layout.haxes, tau, [i])
                     for i in range(self.d)]
            spectrum = None
            if constant:
                spectrum = np.ones(self.basis.hshape)
                for i in range(self.d):
                    factor = 1.0 - float(tau) * self.basis.laplacian_eigenvalues(i)
                    spectrum = spectrum * self.basis.expand(i, factor ** self.iterations)
            return _ExplicitOperator([s.tocsr() for s in steps], self.iterations, spectrum)
        solver = self.params.solver
        if solver == "spectral" and not constant:
            raise ConfigError("solver 'spectral' needs a constant length scale on each level; this one varies "
                              "in space (use 'sparse' or 'auto')", join_path(path, "solver"))
        if constant and solver != "sparse":
            lam = self.basis.sum_over_axes([self.basis.laplacian_eigenvalues(i) for i in range(self.d)])
            return _SpectralOperator(self.basis, (1.0 + ell ** 2 * lam) ** (-self.exponent))
        p = self.exponent
        if abs(p - round(p)) > 1e-12 or round(p) < 1:
            key = "smoothness" if self.params.smoothness is not None else "iterations"
            raise ConfigError(f"the sparse solver (spatially varying length scale or solver: sparse) needs an "
                              f"integer exponent p = nu + d/2 >= 1, got p = {p:g} (d = {self.d})",
                              join_path(path, key))
        a = sp.identity(self.layout.nh, format="csr") + flux_laplacian(self.layout.haxes, np.asarray(ell) ** 2)
        return _SparseImplicitOperator(a, int(round(p)))

    # Normalisation -------------------------------------------------------------------------------
    def _variance(self, op: _Operator, index: int, key: Any) -> np.ndarray:
        params = self.params.normalization
        path = join_path(self.context.path, "normalization")
        nh = self.layout.nh
        method = params.method
        if method == "auto":
            # Exact costs nh applications of the square root, randomization 'samples' of them.
            if op.spectrum is not None:
                method = "analytic"
            elif nh <= min(params.max_points, 4 * params.samples) or not op.has_sqrt:
                method = "exact"
            else:
                method = "randomization"
        self.normalization_methods[key] = method
        if method == "analytic":
            if op.spectrum is None:
                raise ConfigError("'analytic' normalisation needs a constant length scale (on each level); this "
                                  "one varies in space: use 'exact' or 'randomization'", join_path(path, "method"))
            var = self.basis.diagonal(op.spectrum)
        elif method == "exact":
            if nh > params.max_points and not params.force:
                raise ConfigError(f"'exact' normalisation applies the operator to a Dirac at each of the {nh} "
                                  f"horizontal points, more than max points = {params.max_points}: use "
                                  f"'analytic' or 'randomization', or set 'force: true'", join_path(path, "method"))
            # diag(S S^T)_j = |S^T e_j|^2 (half the work of C e_j when a square root exists).
            var = np.empty(nh)
            block = max(1, min(nh, (1 << 21) // nh))
            for j0 in range(0, nh, block):
                j1 = min(nh, j0 + block)
                y = np.zeros((j1 - j0, nh))
                y[np.arange(j1 - j0), np.arange(j0, j1)] = 1.0
                y = y.reshape((-1,) + self.layout.hshape)
                if op.has_sqrt:
                    var[j0:j1] = (op.sqrt_t(y).reshape(j1 - j0, nh) ** 2).sum(axis=1)
                else:
                    var[j0:j1] = op.full(y).reshape(j1 - j0, nh)[np.arange(j1 - j0), np.arange(j0, j1)]
            var = var.reshape(self.layout.hshape)
        else:
            if not op.has_sqrt:
                raise ConfigError(f"'randomization' needs a square root, which the sparse implicit operator has "
                                  f"for even p only (p = {self.exponent:g})", join_path(path, "method"))
            rng = generator(params.seed, "diffusion normalization", index)
            acc = np.zeros(nh)
            block = max(1, min(params.samples, (1 << 22) // nh))
            done = 0
            while done < params.samples:
                b = min(block, params.samples - done)
                xi = rng.standard_normal((b,) + self.layout.hshape)
                acc += (op.sqrt(xi).reshape(b, nh) ** 2).sum(axis=0)
                done += b
            var = (acc / params.samples).reshape(self.layout.hshape)
        if not (np.isfinite(var).all() and (var > 0).all()):
            raise ConfigError(f"{method} normalisation gave non-positive variances (min {np.min(var):g})", path)
        return var

    def variance(self, variable: str | None = None, level: int = 0) -> np.ndarray:
        """The unnormalised variance :math:`\\mathrm{diag}(\\mathbf{A}^{-p})` used by N (one level, ``hshape``)."""
        v = variable or self.variables[0]
        for key, levs in self._groups[v]:
            if level in levs:
                return np.broadcast_to(self._inv_std[key] ** -2.0, self.layout.hshape).copy()
        raise IndexError(level)

    # Application ---------------------------------------------------------------------------------
    def _apply(self, arrays: dict[str, np.ndarray], kind: str) -> dict[str, np.ndarray]:
        out = {}
        for v, arr in arrays.items():
            stack, batch = self.layout.to_stack(np.asarray(arr, dtype=np.float64))
            nb = stack.shape[0]
            result = np.empty_like(stack)
            for key, levs in self._groups[v]:
                op, inv = self._ops[key], self._inv_std[key]
                if len(levs) == self.layout.nlev:
                    sub = stack.reshape((-1,) + self.layout.hshape)
                else:
                    sub = stack[:, levs].reshape((-1,) + self.layout.hshape)
                if kind == "full":
                    res = inv * op.full(inv * sub)
                elif kind == "sqrt":
                    res = inv * op.sqrt(sub)
                else:
                    res = op.sqrt_t(inv * sub)
                if len(levs) == self.layout.nlev:
                    result = res.reshape(stack.shape)
                else:
                    result[:, levs] = res.reshape((nb, len(levs)) + self.layout.hshape)
            out[v] = self.layout.from_stack(result, batch)
        return out

    def multiply(self, fields: FieldSet) -> FieldSet:
        return FieldSet(self._apply({v: fields[v] for v in fields}, "full"), copy=False)

    @property
    def ctl_vec_size(self) -> int:
        return sum(int(np.prod(self.geometry.field_shape(v))) for v in self.variables)

    def sqrt_unavailable(self) -> str | None:
        """The sparse implicit solver (a varying length scale) has a square root for even :math:`p` only."""
        if all(op.has_sqrt for op in self._ops.values()):
            return super().sqrt_unavailable()
        return (f"this diffusion operator has no square root: the sparse implicit solver needs an even p "
                f"(p = {self.exponent:g})")

    def _check_sqrt(self) -> None:
        if not self.has_sqrt:
            raise self._no_sqrt()

    def multiply_sqrt(self, ctl: np.ndarray) -> FieldSet:
        self._check_sqrt()
        arrays, _ = split_control(ctl, self.geometry, self.variables)
        return FieldSet(self._apply(arrays, "sqrt"), copy=False)

    def multiply_sqrt_ad(self, fields: FieldSet) -> np.ndarray:
        self._check_sqrt()
        out = self._apply({v: fields[v] for v in self.variables}, "sqrt_t")
        return join_control(out, self.geometry, self.variables)

    # Analytic model ----------------------------------------------------------------------------
    def correlation_model(self, r: Any, length_scale: float) -> np.ndarray:
        """The block's continuum correlation at separation ``r``: Matérn ν = p − d/2, or Gaussian (explicit)."""
        if self.params.variant == "explicit":
            return gaussian_correlation(r, length_scale)
        nu = self._implicit_exponent() - 0.5 * self.d
        return matern_correlation(r, length_scale, nu)

    # Read / calibration / write -----------------------------------------------------------------
    def read(self, config: dict[str, Any]) -> None:
        path = join_path(self.context.path, "read")
        params = validate(DiffusionRead, config, path)
        self._lengths = self._read_lengths(params.filename, join_path(path, "filename"))
        variant = self._file_attrs.get("diffusion_variant")
        if variant is not None and str(variant) != self.params.variant:
            raise ConfigError(f"{params.filename} holds parameters of variant '{variant}', the block is "
                              f"'{self.params.variant}'", join_path(self.context.path, "variant"))
        mine = self._config_exponent()
        theirs = self._file_attrs.get("diffusion_exponent")
        if mine is not None and theirs is not None and abs(float(theirs) - mine) > 1e-12:
            raise ConfigError(f"{params.filename} was calibrated with p = {float(theirs):g}, the configuration "
                              f"gives p = {mine:g}; remove 'smoothness'/'iterations' or recalibrate", path)

    def direct_calibration(self, config: dict[str, Any]) -> None:
        path = join_path(self.context.path, "calibration")
        params = validate(DiffusionCalibration, config, path)
        fit = params.length_scale
        if fit.fit:
            if self.params.variant == "implicit":
                nu = self._implicit_exponent() - 0.5 * self.d
                if nu <= 0:
                    raise ConfigError(f"fitting needs a Matérn smoothness nu = p - d/2 > 0, got {nu:g}: increase "
                                      "'iterations' or 'smoothness'", join_path(path, "length scale"))
            pert = self.context.ensemble_perturbations()
            spacing = min(a.spacing for a in self.layout.haxes)
            domain = min(a.upper - a.lower for a in self.layout.haxes)
            shape = tabulated(lambda x: self.correlation_model(x, 1.0))
            self.calibration_data: dict[str, EnsembleCorrelation] = {}
            self._lengths = {}
            for v in self.variables:
                stats = EnsembleCorrelation(pert[v], self.layout)
                self.calibration_data[v] = stats
                r, rho, _ = stats.binned()
                if fit.max_separation is not None:
                    rmax = fit.max_separation
                else:
                    below = np.flatnonzero((rho < fit.min_correlation) & (r > 0))
                    rmax = r[below[0]] if below.size else r.max()
                    if (r > 0).sum() > 1:
                        rmax = max(rmax, np.sort(r[r > 0])[1])  # at least two bins
                rmax = min(rmax, 0.5 * domain)
                self._lengths[v] = stats.fit(shape, rmax, (spacing / 20.0, 2.0 * domain))
        else:
            p = self.params
            if p.horizontal_length_scale_file is not None:
                self._lengths = self._read_lengths(p.horizontal_length_scale_file,
                                                   join_path(self.context.path, "horizontal length scale file"))
            else:
                self._lengths = length_scales_for(p.horizontal_length_scale, self.variables,
                                                  join_path(self.context.path, "horizontal length scale"))
        self._pending_output = params.output  # written once the operator is built

    def write(self, filename: str) -> list[str]:
        """Write ℓ (one field per variable) and the exponent/iterations; ``read: {filename}`` loads it back."""
        fields = FieldSet({v: np.broadcast_to(np.asarray(self._lengths[v], dtype=np.float64),
                                              self.geometry.field_shape(v)) for v in self.variables})
        attrs: dict[str, Any] = {"diffusion_variant": self.params.variant}
        if self.params.variant == "implicit":
            attrs["diffusion_exponent"] = float(self._implicit_exponent())
            attrs["diffusion_smoothness"] = float(self._implicit_exponent() - 0.5 * self.d)
        elif getattr(self, "iterations", None) is not None:
            attrs["diffusion_iterations"] = int(self.iterations)
        try:
            write_fields(filename, self.geometry, fields, self.context.time, kind="diffusion parameters",
                         attrs=attrs)
        except OSError as exc:
            raise InputFileError(filename, f"cannot be written ({exc.strerror or exc})") from None
        return [filename]
