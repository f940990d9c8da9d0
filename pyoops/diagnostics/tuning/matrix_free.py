r"""The innovation likelihood without dense :math:`p\times p` matrices, for large observation counts.

The model is that of :mod:`~pyoops.diagnostics.tuning.model`,
:math:`\mathbf S_k = c_s\mathbf C_s + c_e(L_\ell\circ\mathbf C_e) + \mathbf D`,
:math:`\mathbf D = \mathrm{diag}(r_{g(i)}\sigma_{o,i}^2)`, kept in factored form: the static factor
:math:`\mathbf C_s = s\,\mathbf G\mathbf G^\mathrm T` (:math:`p\times K`), the ensemble perturbations
:math:`\mathbf C_e = \mathbf Y\mathbf Y^\mathrm T/(N-1)`, and — with a finite :math:`\ell` — the Schur product
:math:`L_\ell\circ\mathbf C_e` as a sparse matrix on the observation pairs closer than :math:`2\ell` (Gaspari–Cohn
has compact support, :mod:`~pyoops.diagnostics.tuning.localization`), its entries
:math:`L_{ij}\,y_i^\mathrm T y_j/(N-1)` computed once per :math:`\ell`.  Memory is :math:`O(p(K + N))` plus
:math:`O(\text{pairs})` (``PAIR_BYTES`` = 40 bytes per pair held, below); a product :math:`\mathbf S v` costs
:math:`O(p(K + N))` or :math:`O(pK + \text{pairs})`.

**Preconditioner and exact low-rank path.**  Every cycle gets a diagonal-plus-low-rank matrix
:math:`\mathbf M = \mathbf\Delta^{-1} + \mathbf U\mathbf U^\mathrm T`, factored through the thin SVD
:math:`\mathbf\Delta^{1/2}\mathbf U = \mathbf Q\,\mathrm{diag}(\sigma)\,\mathbf V^\mathrm T` (:math:`O(pr^2)`):

.. math::

    \mathbf M^{-1} = \mathbf\Delta - \mathbf Z\mathbf Z^\mathrm T,\quad
    \mathbf Z = \mathbf\Delta^{1/2}\mathbf Q\,\mathrm{diag}\big(\sigma/\sqrt{1+\sigma^2}\big)\ \text{(Woodbury)},\qquad
    \log\det\mathbf M = -\textstyle\sum_i\log\Delta_i + \sum_j\log(1+\sigma_j^2)\ \text{(determinant lemma)},

and a square root :math:`\mathbf M = \mathbf F\mathbf F^\mathrm T`,
:math:`\mathbf F = \mathbf\Delta^{-1/2}\mathbf W`, where
:math:`\mathbf W = \mathbf I + \mathbf Q(\sqrt{1+\sigma^2} - 1)\mathbf Q^\mathrm T` is the symmetric square root
of :math:`\mathbf I + \mathbf Q\,\mathrm{diag}(\sigma^2)\mathbf Q^\mathrm T` (:math:`\mathbf F` itself is not
symmetric; only :math:`\mathbf F\mathbf F^\mathrm T = \mathbf M` is used).
Without localization (:math:`\ell = \infty`) :math:`\mathbf S = \mathbf D + \mathbf U\mathbf U^\mathrm T` with
:math:`\mathbf U = [\sqrt{c_s s}\,\mathbf G,\ \sqrt{c_e/(N-1)}\,\mathbf Y]` of rank :math:`r = K + N`: then
:math:`\mathbf M = \mathbf S` and the likelihood, its gradient and the Fisher information are **exact** in
:math:`O(pr^2)` (the *low-rank path*; chosen per cycle when :math:`r \le p/2`, ``LOW_RANK_FRACTION``).  With a
finite :math:`\ell` (or :math:`r > p/2`) the *stochastic path* below estimates what :math:`\mathbf M` misses;
:math:`\mathbf M` then keeps

* the static factor when :math:`K \le p/2`; otherwise a rank-:math:`q` approximation
  :math:`\hat{\mathbf G}\hat{\mathbf G}^\mathrm T \approx \mathbf G\mathbf G^\mathrm T`,
  :math:`q = \min(K, \lfloor p/4\rfloor,` ``STATIC_SKETCH_RANK`` :math:`= 512)`, from a seeded randomised SVD
  (Halko, Martinsson & Tropp 2011, two power iterations, computed once per cycle in :math:`O(pKq)`), plus the exact
  diagonal of the remainder :math:`\mathbf G\mathbf G^\mathrm T - \hat{\mathbf G}\hat{\mathbf G}^\mathrm T`;
* the ensemble factor when :math:`\ell = \infty`;
* the diagonal of everything else (Jacobi).

A product :math:`\mathbf Sv` still costs :math:`O(pK)`, so a wide static factor makes every CG iteration
expensive; the sketch keeps their number down (measured on a ring of :math:`p = 2400`, :math:`K = 1601` with a
smooth static correlation: without localization 127 CG iterations with only the static diagonal in
:math:`\mathbf M`, 15 with :math:`q = 256`, 2 with :math:`q = 512`; with localization of half-width 15, 232 and
72 at :math:`q = 512`).

**Exact terms of the preconditioner.**  For the bases :math:`\mathbf B_b` of
:mod:`~pyoops.diagnostics.tuning.model` (:math:`\mathbf C_s`, :math:`L\circ\mathbf C_e`,
:math:`(\partial_{\log\ell}L)\circ\mathbf C_e`, :math:`\mathbf D_g`):
:math:`\mathrm{tr}(\mathbf M^{-1}\mathbf B) = \sum_i\Delta_iB_{ii} - \langle\mathbf Z, \mathbf B\mathbf Z\rangle` and

.. math::

    \mathrm{tr}(\mathbf M^{-1}\mathbf B_a\mathbf M^{-1}\mathbf B_b)
    = \textstyle\sum_{ij}\Delta_i\Delta_j(B_a)_{ij}(B_b)_{ij}
    - 2\langle\mathbf B_a\mathbf Z, \mathbf\Delta\mathbf B_b\mathbf Z\rangle
    + \langle\mathbf Z^\mathrm T\mathbf B_a\mathbf Z, \mathbf Z^\mathrm T\mathbf B_b\mathbf Z\rangle,

the first sum taken over the factors, the sparse pattern or the diagonal (:func:`weighted_frobenius`).

**Stochastic path.**  With :math:`m` Rademacher probes :math:`z_i` (entries :math:`\pm 1`, drawn once from
``numpy.random.default_rng`` of a seeded :class:`~numpy.random.SeedSequence` per cycle and *fixed* across
evaluations: common random numbers, so :math:`-\log\hat L(\phi)` is a deterministic, smooth function for L-BFGS-B)
one batched conjugate-gradient run on the preconditioned :math:`\hat{\mathbf S} = \mathbf F^{-1}\mathbf S\mathbf
F^{-\mathrm T}` solves for :math:`\mathbf F^{-1}d` and every :math:`z_i`, to the relative residual ``tolerance``
(default :math:`10^{-10}`), giving :math:`\alpha = \mathbf S^{-1}d`, :math:`x_i = \mathbf S^{-1}\mathbf Fz_i` and
:math:`w_i = \mathbf F^{-\mathrm T}z_i = \mathbf M^{-1}\mathbf Fz_i`.  Then

* :math:`\log\det\mathbf S = \log\det\mathbf M + \mathrm{tr}\log\hat{\mathbf S}` with
  :math:`\mathrm{tr}\log\hat{\mathbf S} \approx \frac1m\sum_i z_i^\mathrm T\log(\hat{\mathbf S})z_i` by **stochastic
  Lanczos quadrature** (Ubaru, Chen & Saad 2017): the CG coefficients of probe :math:`i` (steps :math:`\gamma_k`,
  ratios :math:`\beta_k`) are those of the Lanczos tridiagonal :math:`\mathbf T` of :math:`\hat{\mathbf S}` started
  at :math:`z_i/\|z_i\|`, :math:`T_{11} = 1/\gamma_0`, :math:`T_{kk} = 1/\gamma_{k-1} + \beta_{k-2}/\gamma_{k-2}`,
  :math:`T_{k,k+1} = \sqrt{\beta_{k-1}}/\gamma_{k-1}` (Saad 2003, §6.7), and with
  :math:`\mathbf T = \mathbf W\mathrm{diag}(\theta)\mathbf W^\mathrm T` the Gauss quadrature is
  :math:`z^\mathrm T\log(\hat{\mathbf S})z \approx \|z\|^2\sum_k W_{1k}^2\log\theta_k`;
* :math:`\mathrm{tr}(\mathbf S^{-1}\mathbf B) = \mathrm{tr}(\mathbf M^{-1}\mathbf B) + \mathrm{tr}((\mathbf S^{-1} -
  \mathbf M^{-1})\mathbf B)`, the first exact, the second by **Hutchinson** (1990) with the same probes,
  :math:`\frac1m\sum_i(x_i - w_i)^\mathrm T\mathbf Bw_i` (unbiased: :math:`E[\mathbf Fzz^\mathrm T\mathbf F^{-1}] =
  \mathbf I`); the preconditioner is the control variate, so the probe variance is that of what
  :math:`\mathbf M` misses;
* the Fisher information :math:`\mathcal I_{jl} = \tfrac12\mathrm{tr}(\mathbf S^{-1}\partial_j\mathbf S\,
  \mathbf S^{-1}\partial_l\mathbf S)` likewise: the exact :math:`\mathbf M` term (per pair of bases, through the
  Jacobian) plus :math:`\frac1m\sum_i[(\partial_j\mathbf Sx_i)^\mathrm T\mathbf S^{-1}\partial_l\mathbf Sw_i -
  (\partial_j\mathbf Sw_i)^\mathrm T\mathbf M^{-1}\partial_l\mathbf Sw_i]` (symmetrised), with
  :math:`\partial_j\mathbf S = \sum_bJ_{jb}\mathbf B_b` formed before the solves: one more batched solve per
  *free parameter* and probe.

The gradient is the analytic one of :mod:`~pyoops.diagnostics.tuning.model`,
:math:`\tfrac12[\mathrm{tr}(\mathbf S^{-1}\mathbf B_b) - \alpha^\mathrm T\mathbf B_b\alpha]` through the same
Jacobian, with the traces estimated; it is an unbiased estimate of the gradient, not the exact derivative of
the quadrature estimate (their difference is of the order of the probe standard error, reported with every
:class:`MatrixFreeEvaluation` from the spread of the :math:`m` per-probe values).

**Memory of the localization.**  The neighbour pairs of *every* localized cycle are held at once (each
evaluation visits all cycles), against one budget over all cycles, ``max_pairs`` (default ``DEFAULT_MAX_PAIRS`` =
10 million ordered pairs, about 0.4 GB): per pair 4 bytes of column index, 8 of distance and 8 of
:math:`y_i^\mathrm Ty_j` (kept to rebuild the matrices when :math:`\ell` changes), 16 for the values of the two
sparse matrices and 4 more for their shared column indices when :math:`2\ell` is below the radius searched:
``PAIR_BYTES`` = 40 bytes at most (plus :math:`O(p)` row pointers; measured 38 on a ring of 2500 observations
with 4.8 million pairs).  While one cycle's pairs are searched (KD-tree output, sorting) its memory peaks at
about 80 bytes per pair (measured 77).  The default upper bound of a free :math:`\ell`
(:func:`~pyoops.diagnostics.tuning.estimators.build_model`) is the longest whose pairs fit ``max_pairs`` and are
at most a fifth of each cycle's :math:`p^2` (``MAX_PAIR_FILL``): beyond that fill the pairs take more memory
than a dense :math:`p\times p` matrix (8 bytes per entry), the sparse form saves nothing, and :math:`2\ell`
spans so much of the network that the length reads as "no localization".

**Threads.**  The evaluations are many small matrix products (:math:`p\times(K+N)` by :math:`(K+N)\times m`),
for which BLAS threads cost more than they gain (measured at :math:`p = 2000` on two loaded cores: 2.1 s per
localized evaluation with the default OpenBLAS threads, 0.12 s with one);
:meth:`MatrixFreeCovarianceModel.evaluate` limits BLAS to ``blas_threads`` (default 1; ``None`` leaves it alone)
with ``threadpoolctl``.

References: Hutchinson, M. F. (1990), *Commun. Stat. Simul. Comput.* 19, 433–450; Ubaru, S., Chen, J. and
Saad, Y. (2017), *SIAM J. Matrix Anal. Appl.* 38, 1075–1099; Saad, Y. (2003), *Iterative Methods for Sparse
Linear Systems*, 2nd ed., SIAM; Halko, N., Martinsson, P. G. and Tropp, J. A. (2011), *SIAM Rev.* 53, 217–288.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse
from scipy.linalg import eigh_tridiagonal

from pyoops.diagnostics.tuning.data import TuningCycle, TuningData
from pyoops.diagnostics.tuning.localization import (
    DistanceFunction,
    PairLimitExceeded,
    localization,
    localization_log_length_derivative,
    neighbour_pair_counts,
    neighbour_pairs,
)
from pyoops.diagnostics.tuning.model import (
    ENSEMBLE_BASIS,
    FIRST_GROUP_BASIS,
    LENGTH_BASIS,
    LOG_2PI,
    STATIC_BASIS,
    Coefficients,
    Evaluation,
    HybridCoefficients,
    whitened_cosine_summary,
)
from pyoops.diagnostics.tuning.parameters import Parametrization

__all__ = [
    "DEFAULT_MAX_PAIRS",
    "DEFAULT_PROBES",
    "DEFAULT_TOLERANCE",
    "LOW_RANK_FRACTION",
    "MAX_PAIR_FILL",
    "MAX_PROBES",
    "PAIR_BYTES",
    "STATIC_SKETCH_RANK",
    "DiagonalBasis",
    "DiagonalPlusLowRank",
    "KrylovSolution",
    "LocalizedEnsemble",
    "LowRankBasis",
    "MatrixFreeCovarianceModel",
    "MatrixFreeEvaluation",
    "PairBudget",
    "SparseBasis",
    "conjugate_gradients",
    "lanczos_log_quadrature",
    "truncated_factor",
    "weighted_frobenius",
]

DEFAULT_PROBES = 30
MAX_PROBES = 4096                   # probes per cycle at most: each costs a CG column and p doubles
DEFAULT_TOLERANCE = 1e-10
DEFAULT_MAX_ITERATIONS = 2000
DEFAULT_MAX_PAIRS = 10_000_000      # ordered pairs over all cycles: at PAIR_BYTES each about 0.4 GB held
PAIR_BYTES = 40                     # bytes held per pair at most (module docstring, "Memory of the localization")
MAX_PAIR_FILL = 0.2                 # default length cap: a cycle's pairs within 2 l at most this fraction of p^2
LOW_RANK_FRACTION = 0.5             # a factor of rank r <= 0.5 p goes into the Woodbury part
STATIC_SKETCH_RANK = 512            # rank of the static factor's randomised SVD in the preconditioner when K > p/2
_PAIR_CHUNK = 1 << 22               # numbers formed at once when the pairs' covariances are computed
PATHS = ("auto", "low-rank", "stochastic")


# -- the bases as operators ---------------------------------------------------------------------------
class LowRankBasis:
    r""":math:`\mathbf B = \mathbf V\mathbf V^\mathrm T` from its factor :math:`\mathbf V` (``(p, r)``)."""

    def __init__(self, factor: np.ndarray) -> None:
        self.factor = np.asarray(factor, dtype=np.float64)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """:math:`\\mathbf Bx` for ``x`` of shape ``(p, m)``."""
        return self.factor @ (self.factor.T @ x)

    def diagonal(self) -> np.ndarray:
        """:math:`B_{ii} = \\|v_i\\|^2`."""
        return np.einsum("ij,ij->i", self.factor, self.factor)


class SparseBasis:
    """:math:`\\mathbf B` stored on its sparsity pattern (a symmetric :class:`scipy.sparse.csr_array`)."""

    def __init__(self, matrix: scipy.sparse.csr_array) -> None:
        self.matrix = matrix

    def apply(self, x: np.ndarray) -> np.ndarray:
        """:math:`\\mathbf Bx` for ``x`` of shape ``(p, m)``."""
        return np.asarray(self.matrix @ x)

    def diagonal(self) -> np.ndarray:
        """:math:`B_{ii}`."""
        return np.asarray(self.matrix.diagonal())


class DiagonalBasis:
    """:math:`\\mathbf B = \\mathrm{diag}(b)`."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = np.asarray(values, dtype=np.float64)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """:math:`\\mathbf Bx` for ``x`` of shape ``(p, m)``."""
        return self.values[:, None] * x

    def diagonal(self) -> np.ndarray:
        """:math:`b`."""
        return self.values


Basis = LowRankBasis | SparseBasis | DiagonalBasis


def weighted_frobenius(a: Basis, b: Basis, weights: np.ndarray) -> float:
    r""":math:`\sum_{ij}w_iw_jA_{ij}B_{ij} = \mathrm{tr}(\mathbf W\mathbf A\mathbf W\mathbf B)`,
    :math:`\mathbf W = \mathrm{diag}(w)`, without forming either matrix.

    Diagonal: :math:`\sum_i w_i^2A_{ii}B_{ii}`; two factors: :math:`\|\mathbf V_a^\mathrm T\mathbf W\mathbf
    V_b\|_F^2`; a factor and a sparse matrix: :math:`\langle\mathbf W\mathbf V, \mathbf A\mathbf W\mathbf V\rangle`;
    two sparse matrices: the sum over their common pattern.
    """
    w = np.asarray(weights, dtype=np.float64)
    if isinstance(a, DiagonalBasis) or isinstance(b, DiagonalBasis):
        return float(np.sum(w * w * a.diagonal() * b.diagonal()))
    if isinstance(a, LowRankBasis) and isinstance(b, LowRankBasis):
        cross = a.factor.T @ (w[:, None] * b.factor)
        return float(np.sum(cross * cross))
    if isinstance(a, SparseBasis) and isinstance(b, SparseBasis):
        return float(w @ (a.matrix.multiply(b.matrix) @ w))
    low, sparse = (a, b) if isinstance(a, LowRankBasis) else (b, a)
    wv = w[:, None] * low.factor
    return float(np.sum(wv * sparse.apply(wv)))


# -- localized ensemble covariance on the neighbour pairs ----------------------------------------------
class PairBudget:
    """The neighbour pairs held by the localized cycles of one model, against ``limit`` over all of them (None: no
    limit).  Each :class:`LocalizedEnsemble` reports what it holds under its ``key``."""

    def __init__(self, limit: int | None = DEFAULT_MAX_PAIRS) -> None:
        if limit is not None and (int(limit) != limit or limit < 1):
            raise ValueError(f"max_pairs must be a positive integer or None, got {limit!r}")
        self.limit = None if limit is None else int(limit)
        self.held: dict[int, int] = {}

    @property
    def total(self) -> int:
        """Pairs held over all cycles."""
        return sum(self.held.values())

    def allowance(self, key: int) -> int | None:
        """Pairs cycle ``key`` may hold: the limit less what the other cycles hold (None: no limit)."""
        return None if self.limit is None else self.limit - (self.total - self.held.get(key, 0))

    def hold(self, key: int, count: int) -> None:
        """Record that cycle ``key`` holds ``count`` pairs."""
        self.held[key] = int(count)

    def refusal(self, key: int, exc: PairLimitExceeded) -> str:
        """The message when cycle ``key``'s search exceeded its allowance."""
        others = self.total - self.held.get(key, 0)
        return (f"cycle {key}: {exc} -- with the {others} pairs held by the other cycles this exceeds the "
                f"neighbour-pair budget max_pairs = {self.limit} over all cycles (about "
                f"{self.limit * PAIR_BYTES / 2**20:.0f} MiB at {PAIR_BYTES} bytes per pair); shorten the "
                "localization length (or lower the upper bound on 'length'), or raise the budget: "
                "estimate(..., max_pairs=...) or 'estimator: {max pairs: ...}' in pyoops tune")


class LocalizedEnsemble:
    r""":math:`L_\ell\circ\mathbf C_e` and :math:`(\partial_{\log\ell}L_\ell)\circ\mathbf C_e` of one cycle as sparse
    matrices on the observation pairs with :math:`r_{ij} < 2\ell` (exact: GC vanishes beyond).

    The pairs come from :func:`~pyoops.diagnostics.tuning.localization.neighbour_pairs` (searched again only when
    :math:`2\ell` exceeds the radius searched so far, within what ``budget`` allows cycle ``key``) and
    :math:`(\mathbf C_e)_{ij} = y_i^\mathrm Ty_j/(N-1)` is computed on them once; they are kept row by row (row
    pointers, 32-bit column indices, distances, covariances: 20 bytes per pair) and the two matrices are rebuilt
    when :math:`\ell` changes (:math:`O(\text{pairs})`).
    """

    def __init__(self, factor: np.ndarray, coordinates: Mapping[str, np.ndarray], distance: DistanceFunction,
                 budget: PairBudget | None = None, key: int = 0) -> None:
        if not coordinates:
            raise ValueError("localization needs observation coordinates (TuningCycle.coordinates is empty)")
        self.factor = np.asarray(factor, dtype=np.float64)   # Y / sqrt(N - 1)
        self.coordinates = coordinates
        self.distance = distance
        self.budget = budget if budget is not None else PairBudget(None)
        self.key = key
        self._radius = -math.inf                              # radius searched so far
        self._indptr = self._cols = self._distance = self._covariance = None
        self._length: float | None = None
        self._bases: tuple[SparseBasis, SparseBasis] | None = None

    @property
    def size(self) -> int:
        """:math:`p`."""
        return int(self.factor.shape[0])

    @property
    def npairs(self) -> int:
        """Ordered pairs held (self-pairs included), 0 before the first :meth:`bases`."""
        return 0 if self._cols is None else int(self._cols.size)

    def _pair_covariances(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        out = np.empty(rows.size)
        step = max(1, _PAIR_CHUNK // max(self.factor.shape[1], 1))
        for start in range(0, rows.size, step):
            sl = slice(start, start + step)
            out[sl] = np.einsum("ij,ij->i", self.factor[rows[sl]], self.factor[cols[sl]])
        return out

    def _search(self, radius: float) -> None:
        """Find and keep the pairs within ``radius`` (and their covariances), within the budget."""
        self._bases = None
        self._indptr = self._cols = self._distance = self._covariance = None
        self.budget.hold(self.key, 0)
        try:
            pairs = neighbour_pairs(self.distance, self.coordinates, radius, self.budget.allowance(self.key))
        except PairLimitExceeded as exc:
            raise ValueError(self.budget.refusal(self.key, exc)) from None
        p = self.size
        index = np.int32 if max(pairs.rows.size, p) < 2**31 - 1 else np.int64
        self._covariance = self._pair_covariances(pairs.rows, pairs.cols)
        self._indptr = np.concatenate([[0], np.cumsum(np.bincount(pairs.rows, minlength=p))]).astype(index)
        self._cols = pairs.cols.astype(index)
        self._distance = pairs.distance
        self._radius = radius
        self.budget.hold(self.key, self._cols.size)

    def bases(self, length: float) -> tuple[SparseBasis, SparseBasis]:
        r"""(:math:`L_\ell\circ\mathbf C_e`, :math:`(\partial_{\log\ell}L_\ell)\circ\mathbf C_e`) at half-width
        ``length``."""
        if self._bases is not None and self._length == length:
            return self._bases
        if not (math.isfinite(length) and length > 0):
            raise ValueError(f"a sparse localization needs a finite positive length, got {length}")
        radius = 2.0 * length
        self._bases = None
        if self._cols is None or radius > self._radius:
            self._search(radius)
        indptr, cols, dist, cov = self._indptr, self._cols, self._distance, self._covariance
        inside = dist < radius
        if not inside.all():                     # pairs from a longer search: keep those within 2 l
            kept = np.concatenate([[0], np.cumsum(inside)])
            indptr, cols, dist, cov = kept[indptr].astype(cols.dtype), cols[inside], dist[inside], cov[inside]
        p = self.size

        def sparse(values: np.ndarray) -> SparseBasis:
            return SparseBasis(scipy.sparse.csr_array((values, cols, indptr), shape=(p, p)))

        self._bases = (sparse(localization(dist, length) * cov),
                       sparse(localization_log_length_derivative(dist, length) * cov))
        self._length = length
        return self._bases


# -- the preconditioner: diagonal plus low rank -------------------------------------------------------
class DiagonalPlusLowRank:
    r""":math:`\mathbf M = \mathrm{diag}(m) + \mathbf U\mathbf U^\mathrm T`: inverse (Woodbury), log-determinant
    (determinant lemma) and the square root :math:`\mathbf F` with :math:`\mathbf F\mathbf F^\mathrm T = \mathbf M`
    (module docstring; not symmetric), from the thin SVD of :math:`\mathrm{diag}(m)^{-1/2}\mathbf U`;
    :math:`O(pr^2)` to build, :math:`O(pr)` per vector."""

    def __init__(self, diagonal: np.ndarray, factor: np.ndarray | None = None) -> None:
        diagonal = np.asarray(diagonal, dtype=np.float64)
        p = diagonal.size
        self.delta = 1.0 / diagonal
        self._root_delta = np.sqrt(self.delta)
        if factor is None or factor.shape[1] == 0:
            self.q, sigma = np.zeros((p, 0)), np.zeros(0)
        else:
            self.q, sigma, _ = np.linalg.svd(self._root_delta[:, None] * factor, full_matrices=False)
        grow = np.sqrt(1.0 + sigma * sigma)
        self._root_grow = grow - 1.0            # F = diag(m)^1/2 W, W = I + Q (sqrt(1+s^2) - 1) Q^T
        self._root_shrink = 1.0 / grow - 1.0    # F^-1 = (I + Q (1/sqrt(1+s^2) - 1) Q^T) diag(m)^-1/2
        self.z = self._root_delta[:, None] * self.q * (sigma / grow)      # M^-1 = diag(delta) - Z Z^T
        self.logdet = float(np.sum(np.log(diagonal)) + np.sum(np.log1p(sigma * sigma)))

    def solve(self, x: np.ndarray) -> np.ndarray:
        """:math:`\\mathbf M^{-1}x` (``x`` of shape ``(p, m)``)."""
        return self.delta[:, None] * x - self.z @ (self.z.T @ x)

    def root(self, x: np.ndarray) -> np.ndarray:
        """:math:`\\mathbf Fx`."""
        return (x + self.q @ (self._root_grow[:, None] * (self.q.T @ x))) / self._root_delta[:, None]

    def root_inverse(self, x: np.ndarray) -> np.ndarray:
        """:math:`\\mathbf F^{-1}x`."""
        y = self._root_delta[:, None] * x
        return y + self.q @ (self._root_shrink[:, None] * (self.q.T @ y))

    def root_inverse_transpose(self, x: np.ndarray) -> np.ndarray:
        """:math:`\\mathbf F^{-\\mathrm T}x`."""
        return self._root_delta[:, None] * (x + self.q @ (self._root_shrink[:, None] * (self.q.T @ x)))

    def trace_with(self, basis: Basis, basis_z: np.ndarray) -> float:
        """:math:`\\mathrm{tr}(\\mathbf M^{-1}\\mathbf B)`, given :math:`\\mathbf B\\mathbf Z` (``basis_z``)."""
        return float(self.delta @ basis.diagonal() - np.sum(self.z * basis_z))


# -- Krylov solver with the Lanczos coefficients ---------------------------------------------------------
@dataclass
class KrylovSolution:
    """Result of :func:`conjugate_gradients` for the columns of a right-hand side."""

    solution: np.ndarray        # (p, m)
    steps: np.ndarray           # (iterations, m) CG step lengths gamma_k, NaN once a column has converged
    ratios: np.ndarray          # (iterations, m) beta_k = |r_k+1|^2 / |r_k|^2
    iterations: np.ndarray      # (m,) iterations taken per column
    converged: np.ndarray       # (m,) residual below tolerance
    positive: bool              # False if a direction with p^T A p <= 0 was met (A not positive definite)


def conjugate_gradients(apply: Callable[[np.ndarray], np.ndarray], rhs: np.ndarray, tolerance: float,
                        max_iterations: int) -> KrylovSolution:
    r"""Conjugate gradients for :math:`\mathbf Ax = b` on every column of ``rhs`` at once (:math:`x_0 = 0`).

    ``apply`` maps a ``(p, k)`` block to :math:`\mathbf A` times it (only the columns still iterating are
    passed).  A column stops when :math:`\|b - \mathbf Ax\| \le` ``tolerance`` :math:`\|b\|`.  The step lengths
    and residual ratios are kept for :func:`lanczos_log_quadrature`.
    """
    b = np.asarray(rhs, dtype=np.float64)
    m = b.shape[1]
    solution = np.zeros_like(b)
    iterations = np.zeros(m, dtype=np.int64)
    converged = np.zeros(m, dtype=bool)
    steps: list[np.ndarray] = []
    ratios: list[np.ndarray] = []
    # the columns still iterating, compacted: their indices, iterate, residual, direction and |residual|^2
    rr = np.einsum("ij,ij->j", b, b)
    threshold = tolerance * tolerance * rr
    cols = np.flatnonzero(rr > threshold)
    converged[rr <= threshold] = True
    x, r, threshold = np.zeros((b.shape[0], cols.size)), b[:, cols], threshold[cols]
    d, rr = r.copy(), rr[cols]
    positive = True
    for _ in range(max_iterations):
        if cols.size == 0:
            break
        q = apply(d)
        curvature = np.einsum("ij,ij->j", d, q)
        if np.any(curvature <= 0):
            positive = False
            break
        gamma = rr / curvature
        x += gamma * d
        r -= gamma * q
        rr_new = np.einsum("ij,ij->j", r, r)
        beta = rr_new / rr
        d *= beta
        d += r
        rr = rr_new
        step, ratio = np.full(m, np.nan), np.full(m, np.nan)
        step[cols], ratio[cols] = gamma, beta
        steps.append(step)
        ratios.append(ratio)
        iterations[cols] += 1
        done = rr <= threshold
        if np.any(done):
            solution[:, cols[done]] = x[:, done]
            converged[cols[done]] = True
            keep = ~done
            cols, x, r, d, rr, threshold = cols[keep], x[:, keep], r[:, keep], d[:, keep], rr[keep], threshold[keep]
    solution[:, cols] = x
    empty = np.zeros((0, m))
    return KrylovSolution(solution, np.array(steps) if steps else empty, np.array(ratios) if ratios else empty,
                          iterations, converged, positive)


def lanczos_log_quadrature(krylov: KrylovSolution, columns: Sequence[int] | np.ndarray,
                           norms2: np.ndarray) -> np.ndarray:
    r"""Gauss quadrature of :math:`b^\mathrm T\log(\mathbf A)b` for the given columns of a CG run.

    From the CG coefficients of column :math:`c` (:math:`n` iterations) the Lanczos tridiagonal
    :math:`T_{11} = 1/\gamma_0`, :math:`T_{kk} = 1/\gamma_{k-1} + \beta_{k-2}/\gamma_{k-2}`,
    :math:`T_{k,k+1} = \sqrt{\beta_{k-1}}/\gamma_{k-1}`; with :math:`\mathbf T = \mathbf W\mathrm{diag}(\theta)\mathbf
    W^\mathrm T`, the value is :math:`\|b\|^2\sum_k W_{1k}^2\log\theta_k` (``norms2`` :math:`= \|b\|^2` per column).
    NaN where a Ritz value is not positive.
    """
    out = np.zeros(len(columns))
    for n_out, c in enumerate(columns):
        n = int(krylov.iterations[c])
        if n == 0:
            continue
        gamma, beta = krylov.steps[:n, c], krylov.ratios[:n, c]
        diagonal = 1.0 / gamma
        diagonal[1:] += beta[:-1] / gamma[:-1]
        theta, vectors = eigh_tridiagonal(diagonal, np.sqrt(beta[:-1]) / gamma[:-1])
        if theta[0] <= 0:
            out[n_out] = np.nan
            continue
        out[n_out] = norms2[n_out] * float(vectors[0] ** 2 @ np.log(theta))
    return out


# -- the model ------------------------------------------------------------------------------------------
def truncated_factor(factor: np.ndarray, rank: int, rng: np.random.Generator, power: int = 2,
                     oversampling: int = 10) -> tuple[np.ndarray, np.ndarray]:
    r"""A rank-``rank`` factor :math:`\hat{\mathbf G}` with :math:`\hat{\mathbf G}\hat{\mathbf G}^\mathrm T \approx
    \mathbf G\mathbf G^\mathrm T`, and the diagonal of the remainder, for the preconditioner of a static factor
    :math:`\mathbf G` (``(p, K)``) too wide for the Woodbury part.

    Randomised SVD (Halko, Martinsson & Tropp 2011, algorithm 4.4): the range of
    :math:`(\mathbf G\mathbf G^\mathrm T)^q\mathbf G\mathbf\Omega` (Gaussian :math:`\mathbf\Omega` with
    ``rank + oversampling`` columns, :math:`q` = ``power``, re-orthonormalised after every product) gives an
    orthonormal :math:`\mathbf Q`; with the SVD :math:`\mathbf Q^\mathrm T\mathbf G = \tilde{\mathbf U}\Sigma
    \mathbf V^\mathrm T`, :math:`\hat{\mathbf G} = \mathbf Q\tilde{\mathbf U}_{:,:q}\Sigma_{:q}`.  Cost
    :math:`O(pK(\text{rank} + \text{oversampling})(2q + 2))`.  The remainder's diagonal
    :math:`\|g_i\|^2 - \|\hat g_i\|^2` is clipped at 0 (it is a preconditioner: any error only costs iterations).
    """
    p, width = factor.shape
    rank = int(min(rank, width, p))
    if rank <= 0:
        return np.zeros((p, 0)), np.einsum("ij,ij->i", factor, factor)
    basis, _ = np.linalg.qr(factor @ rng.standard_normal((width, min(rank + oversampling, width))))
    for _ in range(power):
        basis, _ = np.linalg.qr(factor.T @ basis)
        basis, _ = np.linalg.qr(factor @ basis)
    left, sigma, _ = np.linalg.svd(basis.T @ factor, full_matrices=False)
    sketch = basis @ (left[:, :rank] * sigma[:rank])
    rest = np.einsum("ij,ij->i", factor, factor) - np.einsum("ij,ij->i", sketch, sketch)
    return sketch, np.maximum(rest, 0.0)


@dataclass
class MatrixFreeEvaluation(Evaluation):
    r""":class:`~pyoops.diagnostics.tuning.model.Evaluation` with the probe (Monte-Carlo) uncertainty.

    ``nll_samples`` / ``gradient_samples`` (``(nfree, m)``) are the per-probe estimates whose means are ``nll`` /
    ``gradient``; the standard errors are their sample standard deviations over :math:`\sqrt m` (0 when every
    cycle took the exact low-rank path).  ``iterations``: the most CG iterations a cycle needed.
    """

    nll_standard_error: float = 0.0
    gradient_standard_error: np.ndarray | None = None
    fisher_standard_error: np.ndarray | None = None
    nll_samples: np.ndarray | None = None
    gradient_samples: np.ndarray | None = None
    iterations: int = 0


@dataclass
class _Cycle:
    """One cycle's factored arrays."""

    d: np.ndarray
    sig2: np.ndarray
    gcode: np.ndarray
    groups: np.ndarray                  # obs-group codes present
    static: LowRankBasis                # sqrt(s) G
    ensemble: LowRankBasis | None       # Y / sqrt(N - 1)
    localized: LocalizedEnsemble | None
    sketch: tuple[np.ndarray, np.ndarray] | None = None     # truncated_factor of the static factor, when K > p/2

    @property
    def p(self) -> int:
        return int(self.d.size)

    @property
    def rank(self) -> int:
        """:math:`K + N` (:math:`K` without ensemble)."""
        return self.static.factor.shape[1] + (0 if self.ensemble is None else self.ensemble.factor.shape[1])


@dataclass
class _Terms:
    """Sums over cycles: exact parts (per basis), and per-probe parts (last axis ``m``) of the stochastic cycles
    (gradient per basis, ``(nbases, m)``; Fisher information per pair of free parameters, ``(nfree, nfree, m)``)."""

    nll: float
    nll_samples: np.ndarray
    grad: np.ndarray
    grad_samples: np.ndarray
    fisher: np.ndarray
    fisher_samples: np.ndarray
    iterations: int = 0


class MatrixFreeCovarianceModel(HybridCoefficients):
    r"""The likelihood of :class:`~pyoops.diagnostics.tuning.model.HybridCovarianceModel` without dense
    :math:`p\times p` matrices (module docstring): exact low-rank path without localization, stochastic
    (SLQ + Hutchinson, fixed seeded probes) with it.  Its ``length_cap`` is the upper bound on a free length set
    by the pair budget (by :func:`~pyoops.diagnostics.tuning.estimators.build_model`; None when the budget did not
    lower the default bound).

    Parameters
    ----------
    path:
        ``"auto"`` (per cycle: low-rank when :math:`\ell = \infty` and :math:`K + N \le p/2`, else stochastic),
        ``"low-rank"`` (every cycle exact; refused with a finite or free :math:`\ell`) or ``"stochastic"``
        (every cycle, for testing).
    probes:
        Number :math:`m` of Rademacher probes per cycle (2 to ``MAX_PROBES`` = 4096).
    seed:
        Seed of the probes (a :class:`numpy.random.SeedSequence` spawns one stream per cycle; the static
        factor's sketch of cycle :math:`k` uses the stream with spawn key :math:`(k, 0)`).
    tolerance:
        Relative residual at which CG stops, per probe and for :math:`\alpha`.
    max_iterations:
        CG iterations at most (a RuntimeWarning says how many columns had not converged by then).
    max_pairs:
        Most neighbour pairs held over *all* cycles for the sparse localization (:class:`PairBudget`; ValueError
        beyond, naming the budget); None: no limit.
    blas_threads:
        BLAS threads during :meth:`evaluate` (``threadpoolctl``; module docstring, "Threads"); None: unchanged.
    """

    def __init__(self, data: TuningData, parametrization: Parametrization, *, path: str = "auto",
                 probes: int = DEFAULT_PROBES, seed: int = 0, tolerance: float = DEFAULT_TOLERANCE,
                 max_iterations: int = DEFAULT_MAX_ITERATIONS, max_pairs: int | None = DEFAULT_MAX_PAIRS,
                 blas_threads: int | None = 1) -> None:
        super().__init__(data, parametrization)
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        if int(probes) != probes or not 2 <= probes <= MAX_PROBES:
            raise ValueError(f"probes must be an integer from 2 to {MAX_PROBES}, got {probes!r}")
        if not 0 < tolerance < 1:
            raise ValueError(f"tolerance must lie in (0, 1), got {tolerance!r}")
        if blas_threads is not None and (int(blas_threads) != blas_threads or blas_threads < 1):
            raise ValueError(f"blas_threads must be a positive integer or None, got {blas_threads!r}")
        if path == "low-rank" and self.needs_length and data.has_ensemble:
            raise ValueError("the exact low-rank path needs no localization (length fixed to infinity); a finite or "
                             "free length takes path 'stochastic' or 'auto'")
        self.path = path
        self.probes = int(probes)
        self.seed = int(seed)
        self.tolerance = float(tolerance)
        self.max_iterations = int(max_iterations)
        self.budget = PairBudget(max_pairs)
        self.blas_threads = blas_threads
        self.length_cap: float | None = None
        self._streams = np.random.SeedSequence(self.seed).spawn(len(data.cycles))
        self.cycles = [self._cycle_arrays(k, c) for k, c in enumerate(data.cycles)]

    @property
    def max_pairs(self) -> int | None:
        """The neighbour-pair budget over all cycles."""
        return self.budget.limit

    def _cycle_arrays(self, k: int, c: TuningCycle) -> _Cycle:
        y = c.ensemble_perturbations
        ensemble = None if y is None else LowRankBasis(y / math.sqrt(y.shape[1] - 1))
        local = None
        if ensemble is not None and self.needs_length:
            local = LocalizedEnsemble(ensemble.factor, c.coordinates, self.data.distance, self.budget, k)
        gcode = self.group_codes(c.obs_group)
        return _Cycle(c.innovations, c.obs_error ** 2, gcode, np.unique(gcode),
                      LowRankBasis(math.sqrt(c.static_scale) * c.static_factor), ensemble, local)

    # -- probes and paths ---------------------------------------------------------------------------------
    def probe_vectors(self, k: int, p: int) -> np.ndarray:
        """The fixed Rademacher probes of cycle ``k`` (``(p, m)``, entries ±1), the same at every call."""
        rng = np.random.default_rng(self._streams[k])
        return rng.integers(0, 2, size=(p, self.probes)).astype(np.float64) * 2.0 - 1.0

    def cycle_path(self, k: int, length: float) -> str:
        """``"low-rank"`` (exact) or ``"stochastic"`` for cycle ``k`` at localization length ``length``."""
        cyc = self.cycles[k]
        if self.path == "stochastic" or (cyc.localized is not None and math.isfinite(length)):
            return "stochastic"
        if self.path == "low-rank" or cyc.rank <= LOW_RANK_FRACTION * cyc.p:
            return "low-rank"
        return "stochastic"

    def stochastic(self, values: Mapping[str, float]) -> bool:
        """Whether some cycle takes the stochastic path at ``values``."""
        length = self.coefficients(values)[3]
        return any(self.cycle_path(k, length) == "stochastic" for k in range(len(self.cycles)))

    def describe(self, values: Mapping[str, float]) -> dict[str, Any]:
        """How the likelihood is computed at ``values`` (for reports)."""
        length = self.coefficients(values)[3]
        paths = [self.cycle_path(k, length) for k in range(len(self.cycles))]
        out: dict[str, Any] = {"likelihood": "matrix-free", "low-rank cycles": paths.count("low-rank"),
                               "stochastic cycles": paths.count("stochastic"), "probes": self.probes,
                               "probe seed": self.seed, "max pairs": self.max_pairs}
        if "stochastic" in paths:
            out.update({"tolerance": self.tolerance, "neighbour pairs": self.budget.total,
                        "sketched static factors": sum(c.sketch is not None for c in self.cycles)})
        if self.length_cap is not None:
            out["length cap from max pairs"] = self.length_cap
        return out

    def pair_counts(self, lengths: Sequence[float], per_cycle: bool = False) -> np.ndarray:
        """Ordered pairs (self-pairs included) within :math:`2\\ell` for each of ``lengths`` (ascending), summed
        over the localized cycles (``per_cycle``: one row per localized cycle)."""
        lengths = np.asarray(lengths, dtype=np.float64)
        rows = [neighbour_pair_counts(c.localized.distance, c.localized.coordinates, 2.0 * lengths)
                for c in self.cycles if c.localized is not None]
        counts = np.array(rows, dtype=np.int64).reshape(len(rows), lengths.size)
        return counts if per_cycle else counts.sum(axis=0)

    def longest_length(self, candidates: Sequence[float], max_pairs: int | None = None) -> float:
        """The largest of ``candidates`` (ascending half-widths) whose supports :math:`2\\ell` hold at most
        ``max_pairs`` (default: the budget ``self.max_pairs``; None: no limit) ordered pairs summed over all
        localized cycles, and in every cycle at most ``MAX_PAIR_FILL`` = 1/5 of its :math:`p^2` pairs;
        ``candidates[0]`` if none does."""
        limit = self.max_pairs if max_pairs is None else max_pairs
        candidates = np.asarray(candidates, dtype=np.float64)
        counts = self.pair_counts(candidates, per_cycle=True)
        sizes = np.array([c.p for c in self.cycles if c.localized is not None], dtype=np.float64)
        fits = np.all(counts <= MAX_PAIR_FILL * sizes[:, None] ** 2, axis=0)
        if limit is not None:
            fits &= counts.sum(axis=0) <= limit
        index = np.flatnonzero(fits)
        return float(candidates[index[-1] if index.size else 0])

    # -- one cycle ----------------------------------------------------------------------------------------
    def _bases(self, cyc: _Cycle, length: float) -> dict[int, Basis]:
        bases: dict[int, Basis] = {STATIC_BASIS: cyc.static}
        if cyc.ensemble is not None:
            if cyc.localized is not None and math.isfinite(length):
                bases[ENSEMBLE_BASIS], bases[LENGTH_BASIS] = cyc.localized.bases(length)
            else:
                bases[ENSEMBLE_BASIS] = cyc.ensemble
        for g in cyc.groups:
            bases[FIRST_GROUP_BASIS + int(g)] = DiagonalBasis(np.where(cyc.gcode == g, cyc.sig2, 0.0))
        return bases

    def _static_sketch(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """:func:`truncated_factor` of cycle ``k``'s static factor (rank :math:`\\min(K, p/4,`
        ``STATIC_SKETCH_RANK`` :math:`)`), computed at first use."""
        cyc = self.cycles[k]
        if cyc.sketch is None:
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(k, 0)))
            cyc.sketch = truncated_factor(cyc.static.factor, min(cyc.p // 4, STATIC_SKETCH_RANK), rng)
        return cyc.sketch

    def _preconditioner(self, k: int, bases: dict[int, Basis], coefficients: Coefficients,
                        stochastic: bool) -> DiagonalPlusLowRank:
        """:math:`\\mathbf M` of cycle ``k`` (module docstring): :math:`\\mathbf S` itself on the low-rank path."""
        c_s, c_e, r, _ = coefficients
        cyc = self.cycles[k]
        diagonal, factors = r[cyc.gcode] * cyc.sig2, []
        if not stochastic or cyc.static.factor.shape[1] <= LOW_RANK_FRACTION * cyc.p:
            factors.append(math.sqrt(c_s) * cyc.static.factor)
        else:
            sketch, rest = self._static_sketch(k)
            factors.append(math.sqrt(c_s) * sketch)
            diagonal = diagonal + c_s * rest
        if ENSEMBLE_BASIS in bases:
            if LENGTH_BASIS in bases:                       # localized: its diagonal only
                diagonal = diagonal + c_e * bases[ENSEMBLE_BASIS].diagonal()
            else:
                factors.append(math.sqrt(c_e) * cyc.ensemble.factor)
        return DiagonalPlusLowRank(diagonal, np.hstack(factors) if factors else None)

    def _add_cycle(self, k: int, coefficients: Coefficients, jac: np.ndarray, terms: _Terms, gradient: bool,
                   fisher: bool) -> bool:
        """Add cycle ``k``'s terms; False if its :math:`\\mathbf S` is not positive definite."""
        c_s, c_e, r, length = coefficients
        cyc = self.cycles[k]
        p = cyc.p
        bases = self._bases(cyc, length)
        stochastic = self.cycle_path(k, length) == "stochastic"
        precond = self._preconditioner(k, bases, coefficients, stochastic)
        obs_variance = r[cyc.gcode] * cyc.sig2

        order = list(bases)
        basis_z = {b: bases[b].apply(precond.z) for b in order} if (gradient or fisher) else {}
        if not stochastic:
            alpha = precond.solve(cyc.d[:, None])[:, 0]
            terms.nll += 0.5 * (precond.logdet + cyc.d @ alpha + p * LOG_2PI)
        else:
            def covariance(x: np.ndarray) -> np.ndarray:
                out = c_s * cyc.static.apply(x) + obs_variance[:, None] * x
                return out + c_e * bases[ENSEMBLE_BASIS].apply(x) if ENSEMBLE_BASIS in bases else out

            def preconditioned(u: np.ndarray) -> np.ndarray:
                return precond.root_inverse(covariance(precond.root_inverse_transpose(u)))

            probes = self.probe_vectors(k, p)
            rhs = np.hstack([precond.root_inverse(cyc.d[:, None]), probes])
            krylov = self._solve(preconditioned, rhs, k)
            if krylov is None:
                return False
            columns = np.arange(1, self.probes + 1)
            log_quadrature = lanczos_log_quadrature(krylov, columns, np.full(self.probes, float(p)))
            if not np.all(np.isfinite(log_quadrature)):
                return False
            alpha = precond.root_inverse_transpose(krylov.solution[:, :1])[:, 0]
            solved = precond.root_inverse_transpose(krylov.solution[:, 1:])         # x_i = S^-1 F z_i
            weighted = precond.root_inverse_transpose(probes)                       # w_i = M^-1 F z_i
            terms.nll += 0.5 * (precond.logdet + cyc.d @ alpha + p * LOG_2PI)
            terms.nll_samples += 0.5 * log_quadrature
            terms.iterations = max(terms.iterations, int(krylov.iterations.max()))
        if not (gradient or fisher):
            return True

        for b in order:
            basis = bases[b]
            quadratic = float(alpha @ basis.apply(alpha[:, None])[:, 0])
            terms.grad[b] += 0.5 * (precond.trace_with(basis, basis_z[b]) - quadratic)
            if stochastic:
                terms.grad_samples[b] += 0.5 * np.einsum("ij,ij->j", solved - weighted, basis.apply(weighted))

        if fisher:
            zbz = {b: precond.z.T @ basis_z[b] for b in order}
            for ia, a in enumerate(order):
                for b in order[ia:]:
                    value = 0.5 * (weighted_frobenius(bases[a], bases[b], precond.delta)
                                   - 2.0 * np.sum(basis_z[a] * precond.delta[:, None] * basis_z[b])
                                   + np.sum(zbz[a] * zbz[b]))
                    terms.fisher[a, b] += value
                    if a != b:
                        terms.fisher[b, a] += value
            if stochastic and not self._add_fisher_correction(k, bases, order, jac, precond, preconditioned, solved,
                                                              weighted, terms):
                return False
        return True

    def _add_fisher_correction(self, k: int, bases: dict[int, Basis], order: list[int], jac: np.ndarray,
                               precond: DiagonalPlusLowRank, preconditioned: Callable[[np.ndarray], np.ndarray],
                               solved: np.ndarray, weighted: np.ndarray, terms: _Terms) -> bool:
        r"""Per probe and pair of free parameters :math:`\tfrac12[(\partial_j\mathbf Sx)^\mathrm T\mathbf S^{-1}
        \partial_l\mathbf Sw - (\partial_j\mathbf Sw)^\mathrm T\mathbf M^{-1}\partial_l\mathbf Sw]`, symmetrised in
        :math:`j, l`, with :math:`\partial_j\mathbf S = \sum_bJ_{jb}\mathbf B_b` over this cycle's bases: one batched
        solve (``preconditioned`` :math:`=\hat{\mathbf S}`) per free parameter acting on the cycle and probe."""
        derivative = jac[:, order]                                     # (nfree, bases of this cycle)
        acting = np.flatnonzero(np.any(derivative != 0.0, axis=1))
        if acting.size == 0:
            return True
        p, m, n = self.cycles[k].p, self.probes, acting.size
        derivative = derivative[acting]
        dw = np.tensordot(derivative, np.stack([bases[b].apply(weighted) for b in order]), axes=1)   # (n, p, m)
        dx = np.tensordot(derivative, np.stack([bases[b].apply(solved) for b in order]), axes=1)
        columns = dw.transpose(1, 0, 2).reshape(p, n * m)
        krylov = self._solve(preconditioned, precond.root_inverse(columns), k)
        if krylov is None:
            return False

        def by_parameter(x: np.ndarray) -> np.ndarray:                # (p, n m) -> (n, p, m)
            return x.reshape(p, n, m).transpose(1, 0, 2)

        s_inv_dw = by_parameter(precond.root_inverse_transpose(krylov.solution))
        m_inv_dw = by_parameter(precond.solve(columns))
        cross = np.einsum("jpm,lpm->jlm", dx, s_inv_dw)
        control = np.einsum("jpm,lpm->jlm", dw, m_inv_dw)
        terms.fisher_samples[np.ix_(acting, acting)] += 0.5 * (0.5 * (cross + cross.transpose(1, 0, 2)) - control)
        return True

    def _solve(self, operator: Callable[[np.ndarray], np.ndarray], rhs: np.ndarray, k: int) -> KrylovSolution | None:
        krylov = conjugate_gradients(operator, rhs, self.tolerance, self.max_iterations)
        if not krylov.positive:
            return None
        if not np.all(krylov.converged):
            warnings.warn(f"matrix-free likelihood, cycle {k}: conjugate gradients did not reach the relative "
                          f"residual {self.tolerance:g} in {self.max_iterations} iterations "
                          f"({int(np.sum(~krylov.converged))} of {rhs.shape[1]} columns)", RuntimeWarning, stacklevel=3)
        return krylov

    # -- likelihood -----------------------------------------------------------------------------------------
    def evaluate(self, phi: np.ndarray, gradient: bool = True, fisher: bool = False) -> MatrixFreeEvaluation:
        r""":math:`-\log L`, its gradient and the Fisher information at internal ``phi`` (estimates with their
        probe standard errors on the stochastic path; exact on the low-rank path), BLAS limited to
        ``blas_threads``."""
        if self.blas_threads is None:
            limit = nullcontext()
        else:
            from threadpoolctl import threadpool_limits

            limit = threadpool_limits(limits=self.blas_threads, user_api="blas")
        with limit:
            return self._evaluate(phi, gradient, fisher)

    def _evaluate(self, phi: np.ndarray, gradient: bool, fisher: bool) -> MatrixFreeEvaluation:
        values = self.par.natural(phi)
        coefficients = self.coefficients(values)
        jac = self.coefficient_jacobian(values)
        m, nb, n = self.probes, self.nbases, self.par.size
        terms = _Terms(0.0, np.zeros(m), np.zeros(nb), np.zeros((nb, m)), np.zeros((nb, nb)), np.zeros((n, n, m)))
        for k in range(len(self.cycles)):
            if not self._add_cycle(k, coefficients, jac, terms, gradient or fisher, fisher):
                return MatrixFreeEvaluation(math.inf, np.full(n, np.nan) if gradient else None)
        root_m = math.sqrt(m)
        nll_samples = terms.nll + terms.nll_samples
        ev = MatrixFreeEvaluation(float(terms.nll + terms.nll_samples.mean()),
                                  nll_standard_error=float(terms.nll_samples.std(ddof=1) / root_m),
                                  nll_samples=nll_samples, iterations=terms.iterations)
        if gradient:
            stochastic = jac @ terms.grad_samples                          # zero on the low-rank path
            ev.gradient = jac @ terms.grad + stochastic.mean(axis=1)
            ev.gradient_samples = (jac @ terms.grad)[:, None] + stochastic
            ev.gradient_standard_error = stochastic.std(axis=1, ddof=1) / root_m
        if fisher:
            ev.fisher = jac @ terms.fisher @ jac.T + terms.fisher_samples.mean(axis=2)
            ev.fisher_standard_error = terms.fisher_samples.std(axis=2, ddof=1) / root_m
        return ev

    def whitened_cosines(self, values: Mapping[str, float]) -> dict[str, float]:
        r"""The cosines of :meth:`HybridCovarianceModel.whitened_cosines
        <pyoops.diagnostics.tuning.model.HybridCovarianceModel.whitened_cosines>`, exactly, from the factors and
        the sparse localized matrices (:func:`weighted_frobenius` with :math:`w = 1/\sigma_o^2`)."""
        c_s, c_e, _, length = self.coefficients(values)
        ss = se = ee = trace_s = trace_e = 0.0
        for cyc in self.cycles:
            w = 1.0 / cyc.sig2
            bases = self._bases(cyc, length)
            static = bases[STATIC_BASIS]
            ss += weighted_frobenius(static, static, w)
            trace_s += float(w @ static.diagonal())
            if ENSEMBLE_BASIS in bases:
                ens = bases[ENSEMBLE_BASIS]
                ee += weighted_frobenius(ens, ens, w)
                se += weighted_frobenius(static, ens, w)
                trace_e += float(w @ ens.diagonal())
        return whitened_cosine_summary(ss, se, ee, trace_s, trace_e, self.nobs, c_s, c_e)
