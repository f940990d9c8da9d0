r"""The SABER block tests, as plain functions that measure one property each.

Every check takes a block (or a whole :class:`~pyoops.saber.chain.SaberBlockChain`, which
answers like a central block for :math:`\mathbf{B}`), seeded random data and a tolerance,
and returns a :class:`BlockCheck`: the measured *figure*, the *tolerance* it is held to,
the quantities compared, or the reason the test cannot run on this block (it lacks the
capability).  Who calls a check decides what a failure is: the chain's construction-time
tests raise a :class:`~pyoops.util.errors.ConfigError`, :class:`pyoops.testing.blocks.BlockTests`
an :class:`AssertionError`, the ``error-covariance-toolbox`` prints every figure.

Relative comparisons follow SABER and OOPS: two inner products :math:`a, b` agree when
:math:`|a - b| \le \mathrm{tol}\cdot\max(|a|, |b|)`, two vectors when
:math:`\|a - b\| \le \mathrm{tol}\cdot\|b\|`.  The default tolerances, and why:

* ``1e-12`` for adjoint, symmetry, square-root and inverse identities: each side is a
  sum of :math:`n` products, whose round-off is :math:`O(n\,\epsilon)` with
  :math:`\epsilon = 2.2\times10^{-16}`, i.e. below :math:`10^{-12}` up to
  :math:`n \approx 10^4` even with the worst-case :math:`\sqrt{n}` growth of a
  random-sign sum; a wrong adjoint is wrong at :math:`O(1)`.
* ``1e-12`` for batched members against one-by-one calls: batched BLAS (``gemm``) and
  single calls (``gemv``), or FFTs of stacks, may sum in a different order.
* the randomization tests are statistical: a correct block fails them with probability
  at most ``significance`` (default :math:`10^{-6}`) for a random seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from pyoops.config.parameters import Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.saber.blocks import SaberBlockParameters, SaberOuterBlock, call_batched
from pyoops.util.random import generator
from pyoops.util.variables import Variables

__all__ = [
    "DEFAULT_TOLERANCE",
    "BlockCheck",
    "BlockTestSettings",
    "adjoint_check",
    "batch_check",
    "block_checks",
    "covariance_checks",
    "dense_matrix",
    "dirac_check",
    "inverse_check",
    "left_inverse_check",
    "randomization_checks",
    "relative_difference",
    "square_root_check",
    "symmetry_check",
]

#: Default tolerance of the algebraic identities (see the module docstring for why).
DEFAULT_TOLERANCE = 1e-12


@dataclass
class BlockCheck:
    """The outcome of one block test.

    Attributes
    ----------
    test:
        Name of the test (``adjoint``, ``square root``, ...).
    where:
        YAML path of the block (``B`` for the whole covariance).
    figure:
        The measured figure (a relative error, or a z-score for the statistical tests);
        ``None`` when the test did not run.
    tolerance:
        The bound the figure must not exceed.
    detail:
        The quantities compared, for the message.
    skipped:
        Why the test could not run on this block (it lacks the capability), else ``None``.
    """

    test: str
    where: str
    figure: float | None = None
    tolerance: float | None = None
    detail: str = ""
    skipped: str | None = None
    measure: str = "relative error"

    @property
    def passed(self) -> bool:
        """True when the test ran and its figure is within the tolerance (NaN fails)."""
        return self.skipped is None and self.figure is not None and bool(self.figure <= self.tolerance)

    @property
    def verdict(self) -> str:
        """``passed``, ``failed`` or ``not run``."""
        if self.skipped is not None:
            return "not run"
        return "passed" if self.passed else "failed"

    def message(self) -> str:
        """One line: the test, its figure against the tolerance, the compared quantities."""
        if self.skipped is not None:
            return f"{self.test} test not run: {self.skipped}"
        op = "<=" if self.passed else ">"
        text = f"{self.test} test {self.verdict}: {self.measure} {self.figure:.3e} {op} tolerance {self.tolerance:.3g}"
        return f"{text} ({self.detail})" if self.detail else text

    def as_dict(self) -> dict[str, Any]:
        """The figures as a mapping (for JSON and the toolbox summary)."""
        out: dict[str, Any] = {"verdict": self.verdict}
        if self.skipped is not None:
            out["reason"] = self.skipped
        else:
            out["figure"] = float(self.figure)
            out["tolerance"] = float(self.tolerance)
        return out


def relative_difference(a: float, b: float) -> float:
    r""":math:`|a - b| / \max(|a|, |b|)`, 0 when both are 0."""
    scale = max(abs(a), abs(b))
    return abs(a - b) / scale if scale > 0 else 0.0


def _vector_error(a: FieldSet, b: FieldSet) -> float:
    r""":math:`\|a - b\| / \|b\|` over the variables of ``b`` (0 when both are 0)."""
    num = float(np.sqrt(sum(float(np.sum((np.asarray(a[v]) - np.asarray(b[v])) ** 2)) for v in b)))
    den = float(np.sqrt(sum(float(np.sum(np.asarray(b[v]) ** 2)) for v in b)))
    return num / den if den > 0 else num


def _where(block: Any) -> str:
    context = getattr(block, "context", None)
    return getattr(context, "path", "") or getattr(block, "path", "") or "block"


def _inner_space(block: Any) -> tuple[Any, Variables]:
    if isinstance(block, SaberOuterBlock):
        return block.inner_geometry, Variables(block.inner_variables)
    return block.geometry, Variables(block.variables)


# Outer blocks ---------------------------------------------------------------------------------
def adjoint_check(block: SaberOuterBlock, rng: np.random.Generator, tolerance: float = DEFAULT_TOLERANCE,
                  where: str | None = None) -> BlockCheck:
    r"""Dot-product test of an outer block: :math:`\langle \mathbf{U}x, y\rangle = \langle x, \mathbf{U}^\mathsf{T}y\rangle`.

    :math:`x` (inner space) and :math:`y` (outer space) are standard normal; the figure is
    their relative difference.
    """
    where = where or _where(block)
    x = block.inner_geometry.random(Variables(block.inner_variables), rng)
    y = block.geometry.random(Variables(block.variables), rng)
    a = call_batched(block.multiply, block, x.copy()).dot(y)
    b = x.dot(call_batched(block.multiply_ad, block, y.copy()))
    return BlockCheck("adjoint", where, relative_difference(a, b), tolerance,
                      f"<Ux, y> = {a!r}, <x, U^T y> = {b!r}")


def _inverse_reason(block: SaberOuterBlock) -> str | None:
    reason = block.inverse_unavailable()
    if reason is None and getattr(block.params, "skip_inverse", False):
        reason = "'skip inverse: true' is set"
    return reason


def left_inverse_check(block: SaberOuterBlock, rng: np.random.Generator, tolerance: float = DEFAULT_TOLERANCE,
                       where: str | None = None) -> BlockCheck:
    r"""Left inverse of an outer block: :math:`\|\mathbf{U}^{-1}\mathbf{U}x - x\| / \|x\|` for a random inner :math:`x`."""
    where = where or _where(block)
    reason = _inverse_reason(block)
    if reason is not None:
        return BlockCheck("left inverse", where, skipped=reason)
    x = block.inner_geometry.random(Variables(block.inner_variables), rng)
    back = call_batched(block.left_inverse_multiply, block, call_batched(block.multiply, block, x.copy()))
    err = _vector_error(back, x)
    return BlockCheck("left inverse", where, err, tolerance, f"||U^-1 U x - x|| / ||x|| = {err:.3e}")


def _size(geometry: Any, variables: Iterable[str]) -> int:
    return sum(int(np.prod(geometry.field_shape(v))) for v in variables)


def inverse_check(block: SaberOuterBlock, rng: np.random.Generator, tolerance: float = DEFAULT_TOLERANCE,
                  where: str | None = None) -> BlockCheck:
    r"""Two-sided inverse of a square outer block: :math:`\|\mathbf{U}\mathbf{U}^{-1}y - y\| / \|y\|`.

    Runs when :math:`\mathbf{U}` is square (as many inner as outer values): a left inverse
    of a square matrix is then its inverse, and :math:`\mathbf{U}\mathbf{U}^{-1} = \mathbf{I}`
    must hold too.  A rectangular :math:`\mathbf{U}` (interpolation to a finer grid,
    duplicated variables) has a left inverse only; the test says so and does not run.
    """
    where = where or _where(block)
    reason = _inverse_reason(block)
    if reason is None:
        n_in = _size(block.inner_geometry, block.inner_variables)
        n_out = _size(block.geometry, block.variables)
        if n_in != n_out:
            reason = (f"U maps {n_in} inner values to {n_out} outer values: it has a left inverse only "
                      "(U U^-1 = I cannot hold)")
    if reason is not None:
        return BlockCheck("inverse", where, skipped=reason)
    y = block.geometry.random(Variables(block.variables), rng)
    back = call_batched(block.multiply, block, call_batched(block.left_inverse_multiply, block, y.copy()))
    err = _vector_error(back, y)
    return BlockCheck("inverse", where, err, tolerance, f"||U U^-1 y - y|| / ||y|| = {err:.3e}")


# Central blocks (and whole chains) -----------------------------------------------------------------
def symmetry_check(block: Any, rng: np.random.Generator, tolerance: float = DEFAULT_TOLERANCE,
                   where: str | None = None) -> BlockCheck:
    r"""Self-adjointness of a central block: :math:`\langle \mathbf{C}x, y\rangle = \langle x, \mathbf{C}y\rangle`."""
    where = where or _where(block)
    x = block.geometry.random(Variables(block.variables), rng)
    y = block.geometry.random(Variables(block.variables), rng)
    a = call_batched(block.multiply, block, x.copy()).dot(y)
    b = x.dot(call_batched(block.multiply, block, y.copy()))
    return BlockCheck("adjoint", where, relative_difference(a, b), tolerance,
                      f"symmetry: <Cx, y> = {a!r}, <x, Cy> = {b!r}")


def square_root_check(block: Any, rng: np.random.Generator, tolerance: float = DEFAULT_TOLERANCE,
                      where: str | None = None) -> BlockCheck:
    r"""Square root :math:`\mathbf{C} = \mathbf{S}\mathbf{S}^\mathsf{T}` of a central block.

    Two identities, for random fields :math:`x, y` and a random control vector :math:`v`:
    :math:`\langle \mathbf{S}^\mathsf{T}x, \mathbf{S}^\mathsf{T}y\rangle = \langle x, \mathbf{C}y\rangle`
    (the square root reproduces :math:`\mathbf{C}`) and
    :math:`\langle \mathbf{S}v, x\rangle = \langle v, \mathbf{S}^\mathsf{T}x\rangle`
    (``multiply_sqrt_ad`` is the adjoint of ``multiply_sqrt``).  The figure is the larger
    of the two relative differences.
    """
    where = where or _where(block)
    reason = block.sqrt_unavailable()
    if reason is not None:
        return BlockCheck("square root", where, skipped=reason)
    x = block.geometry.random(Variables(block.variables), rng)
    y = block.geometry.random(Variables(block.variables), rng)
    a = x.dot(call_batched(block.multiply, block, y.copy()))
    b = float(np.vdot(block.multiply_sqrt_ad(x.copy()), block.multiply_sqrt_ad(y.copy())))
    v = rng.standard_normal(int(block.ctl_vec_size))
    c = block.multiply_sqrt(v.copy()).dot(x)
    d = float(np.vdot(v, block.multiply_sqrt_ad(x.copy())))
    err = max(relative_difference(a, b), relative_difference(c, d))
    return BlockCheck("square root", where, err, tolerance,
                      f"<x, Cy> = {a!r} vs <S^T x, S^T y> = {b!r}; <Sv, x> = {c!r} vs <v, S^T x> = {d!r}")


def dense_matrix(apply: Callable[[FieldSet], FieldSet], geometry: Any, variables: Iterable[str],
                 columns: Sequence[int] | None = None, chunk: int = 256) -> np.ndarray:
    """Columns of the matrix of a linear ``FieldSet -> FieldSet`` map, in :meth:`~pyoops.fields.fieldset.FieldSet.to_vector` order.

    ``columns`` (flat indices, default all) are the unit vectors sent through ``apply``,
    ``chunk`` of them per batched call.  Dense matrices are for tests on small grids only.
    """
    variables = Variables(variables)
    template = geometry.zeros(variables)
    n = template.to_vector().size
    cols = np.arange(n) if columns is None else np.asarray(columns, dtype=int)
    offsets, start = {}, 0
    for v in variables:
        offsets[v] = (start, start + template[v].size)
        start += template[v].size
    out = np.empty((n, cols.size))
    for lo in range(0, cols.size, chunk):
        part = cols[lo:lo + chunk]
        batch = geometry.zeros(variables, (part.size,))
        for v in variables:
            a, b = offsets[v]
            inside = (part >= a) & (part < b)
            batch[v].reshape(part.size, -1)[np.flatnonzero(inside), part[inside] - a] = 1.0
        resp = apply(batch)
        out[:, lo:lo + part.size] = np.concatenate([resp[v].reshape(part.size, -1) for v in variables], axis=1).T
    return out


def _dirac_points(block: Any, points: Sequence[int] | None) -> np.ndarray:
    geometry, variables = block.geometry, Variables(block.variables)
    if points is not None:
        return np.asarray(points, dtype=int)
    chosen, start = [], 0
    for v in variables:
        n = int(np.prod(geometry.field_shape(v)))
        chosen += sorted({start, start + n // 3, start + n // 2, start + n - 1})
        start += n
    return np.asarray(chosen, dtype=int)


def dirac_check(block: Any, points: Sequence[int] | None = None, tolerance: float = DEFAULT_TOLERANCE,
                where: str | None = None) -> BlockCheck:
    r"""Dirac symmetry and positivity: :math:`\mathbf{S} = \mathbf{E}^\mathsf{T}\mathbf{C}\mathbf{E}` is symmetric PSD.

    :math:`\mathbf{E}` holds unit impulses at ``points`` (flat indices in
    :meth:`~pyoops.fields.fieldset.FieldSet.to_vector` order; default: the first, a third,
    the middle and the last point of each variable), so :math:`S_{ij}` is the response at
    point :math:`i` to the impulse at :math:`j`.  A covariance has
    :math:`S_{ij} = S_{ji}` and :math:`\mathbf{S} \succeq 0` (in particular
    :math:`S_{ii} \ge 0` and :math:`|S_{ij}| \le \sqrt{S_{ii}S_{jj}}`).  The figure is the
    larger of :math:`\max|S - S^\mathsf{T}| / \max|S|` and
    :math:`\max(0, -\lambda_\min) / \lambda_\max`.
    """
    where = where or _where(block)
    idx = _dirac_points(block, points)
    cols = dense_matrix(lambda f: call_batched(block.multiply, block, f), block.geometry, block.variables, idx)
    s = cols[idx, :]
    scale = float(np.abs(s).max())
    if scale == 0.0:
        return BlockCheck("dirac", where, float("inf"), tolerance, "every Dirac response is zero at the impulses")
    asym = float(np.abs(s - s.T).max()) / scale
    lam = np.linalg.eigvalsh(0.5 * (s + s.T))
    negative = max(0.0, -float(lam[0])) / float(lam[-1]) if lam[-1] > 0 else float("inf")
    return BlockCheck("dirac", where, max(asym, negative), tolerance,
                      f"{idx.size} impulses: asymmetry {asym:.3e}, lowest/highest eigenvalue "
                      f"{float(lam[0]):.3e}/{float(lam[-1]):.3e}, smallest diagonal {float(np.diag(s).min()):.3e}")


def randomization_checks(block: Any, seed: int, size: int = 2000, significance: float = 1e-6,
                         max_points: int = 4096, where: str | None = None,
                         stream: Sequence[str | int] = ()) -> list[BlockCheck]:
    r"""Variance of ``size`` random draws :math:`\xi_k` against :math:`\mathrm{diag}(\mathbf{C})`.

    With :math:`K` independent draws :math:`\xi_k \sim \mathcal{N}(0, \mathbf{C})` and
    :math:`m_i = \frac1K\sum_k \xi_{k,i}^2`, :math:`K m_i / C_{ii} \sim \chi^2_K` exactly.
    Two tests, each failing a correct block with probability at most ``significance``:

    * **mean** (``randomization mean``): :math:`T = \frac1n\sum_i m_i/C_{ii}` has mean 1 and
      variance :math:`\frac{2}{K n^2}\sum_{ij}\rho_{ij}^2` (:math:`\rho` the correlations
      of :math:`\mathbf{C}`); the figure is :math:`|z| = |T - 1|/\mathrm{sd}(T)`, held to the
      two-sided normal quantile of ``significance`` (:math:`T` is a mean of :math:`K`
      independent terms: normal for large :math:`K`).  Sensitive to a wrong overall scale.
    * **pointwise** (``randomization pointwise``): the worst point's two-sided
      :math:`\chi^2_K` tail probability, expressed as a normal z-score, held to the
      Bonferroni bound (``significance`` / number of points; valid however the points are
      correlated).  Sensitive to a wrong variance at a few points.

    Points with :math:`C_{ii} = 0` (below :math:`10^{-20}` of their variable's largest
    variance) must draw 0 to the same relative accuracy.  :math:`\mathrm{diag}(\mathbf{C})` and
    :math:`\rho` come from the dense matrix (one impulse per point), so the tests run on
    grids of at most ``max_points`` values and say why not otherwise.  The draws come from
    :func:`pyoops.util.random.generator` ``(seed, *stream)``.
    """
    from scipy import stats

    where = where or _where(block)
    names = ("randomization mean", "randomization pointwise")
    reason = block.randomize_unavailable()
    n = _size(block.geometry, block.variables)
    if reason is None and n > max_points:
        reason = (f"{n} grid values > max points {max_points}: diag(C) by one impulse per point would be "
                  "too costly")
    if reason is not None:
        return [BlockCheck(name, where, skipped=reason) for name in names]
    rng = generator(seed, *stream)
    variables = Variables(block.variables)
    c = dense_matrix(lambda f: call_batched(block.multiply, block, f), block.geometry, variables)
    c = 0.5 * (c + c.T)
    diag = np.diag(c).copy()
    total = np.zeros(n)
    done = 0
    while done < size:
        k = min(100, size - done)
        draws = block.randomize(rng, (k,))
        flat = np.concatenate([np.asarray(draws[v]).reshape(k, -1) for v in variables], axis=1)
        total += (flat ** 2).sum(axis=0)
        done += k
    m = total / size
    # Scale of each variable's variances: a point whose exact variance is below 1e-20 of it (an
    # amplitude ratio of 1e-10) counts as zero, and its draws must stay below that too; round-off
    # in the operators (differences of large numbers, as in derived winds at walls) stays far below.
    sizes = [int(np.prod(block.geometry.field_shape(v))) for v in variables]
    scale = np.repeat([part.max() for part in np.split(diag, np.cumsum(sizes)[:-1])], sizes)
    zero = diag <= 1e-20 * scale
    if diag.max() <= 0:
        return [BlockCheck(name, where, float("inf"), 0.0, "diag(C) is zero everywhere", measure="|z|")
                for name in names]
    leak = float((m[zero] / np.maximum(scale[zero], np.finfo(float).tiny)).max()) if zero.any() else 0.0
    leak = leak if leak > 1e-20 else 0.0
    live = ~zero
    ratio = m[live] / diag[live]
    d = np.sqrt(diag[live])
    rho = c[np.ix_(live, live)] / np.outer(d, d)
    sd = float(np.sqrt(2.0 * np.mean(rho ** 2) / size))
    z_mean = abs(float(ratio.mean()) - 1.0) / sd
    crit_mean = float(stats.norm.isf(significance / 2))
    chi = size * ratio
    tail = 2.0 * np.minimum(stats.chi2.cdf(chi, size), stats.chi2.sf(chi, size))
    worst = int(np.argmin(tail))
    z_point = float(stats.norm.isf(max(float(tail[worst]), 1e-300) / 2))
    crit_point = float(stats.norm.isf(significance / (2 * live.sum())))
    if leak > 0:
        z_point = float("inf")
    detail = f"K = {size} draws, seed {seed}"
    return [
        BlockCheck(names[0], where, z_mean, crit_mean, measure="|z|", detail=
                   f"mean sample/exact variance {float(ratio.mean()):.4f}, sd {sd:.2e}; {detail}, "
                   f"significance {significance:g}"),
        BlockCheck(names[1], where, z_point, crit_point, measure="|z|", detail=
                   f"worst point {int(np.flatnonzero(live)[worst])}: sample/exact variance {float(ratio[worst]):.4f}"
                   + (f"; draws of variance {leak:.3e} (relative) where diag(C) = 0" if leak > 0 else "")
                   + f"; {detail}, significance {significance:g} over {int(live.sum())} points (Bonferroni)"),
    ]


def batch_check(block: Any, rng: np.random.Generator, nmembers: int = 3, tolerance: float = DEFAULT_TOLERANCE,
                where: str | None = None) -> BlockCheck:
    r"""Batched members equal one-by-one calls, for every operation the block has.

    Outer blocks: ``multiply``, ``multiply_ad`` and the left inverse; central
    blocks: ``multiply`` and the square root (both directions).  The figure is the
    largest :math:`\|f(X)_k - f(X_k)\| / \|f(X_k)\|` over members :math:`k` and operations.
    A block with ``supports_batch = False`` is looped over by the chain: nothing to test.
    """
    where = where or _where(block)
    if not getattr(block, "supports_batch", True):
        return BlockCheck("batch", where, skipped="the block sets supports_batch = False: the chain calls it "
                                                   "one member at a time")
    inner_geometry, inner_vars = _inner_space(block)
    ops: list[tuple[str, Callable[[Any], Any], Callable[[tuple[int, ...]], Any]]] = []

    def fields_on(geometry: Any, variables: Variables) -> Callable[[tuple[int, ...]], FieldSet]:
        return lambda batch: geometry.random(variables, rng, batch)

    outer_vars = Variables(block.variables)
    ops.append(("multiply", block.multiply, fields_on(inner_geometry, inner_vars)))
    if isinstance(block, SaberOuterBlock):
        ops.append(("multiply_ad", block.multiply_ad, fields_on(block.geometry, outer_vars)))
        if block.has_inverse:
            ops.append(("left_inverse_multiply", block.left_inverse_multiply, fields_on(block.geometry, outer_vars)))
    elif block.has_sqrt:
        m = int(block.ctl_vec_size)
        ops.append(("multiply_sqrt", block.multiply_sqrt, lambda batch: rng.standard_normal(tuple(batch) + (m,))))
        ops.append(("multiply_sqrt_ad", block.multiply_sqrt_ad, fields_on(block.geometry, outer_vars)))
    errors: list[tuple[float, str]] = []
    for name, op, make in ops:
        x = make((nmembers,))
        together = op(x.copy())
        for k in range(nmembers):
            xk = x[k] if isinstance(x, np.ndarray) else x.map(lambda a, k=k: a[k].copy())
            alone = op(xk)
            if isinstance(alone, np.ndarray):
                num = float(np.linalg.norm(np.asarray(together)[k] - alone))
                den = float(np.linalg.norm(alone))
            else:
                member = FieldSet({v: np.asarray(together[v])[k] for v in alone}, copy=False)
                num, den = _vector_error(member, alone), 1.0
            errors.append((num / den if den > 0 else num, f"{name}, member {k}"))
    figures = np.array([e for e, _ in errors])
    worst = int(np.argmax(np.where(np.isnan(figures), np.inf, figures)))
    return BlockCheck("batch", where, float(figures[worst]), tolerance,
                      f"{nmembers} members; largest difference in {errors[worst][1]}: {figures[worst]:.3e}")


class BlockTestSettings(Parameters):
    """Settings of the block tests (``block tests:`` of the toolbox, ``block tests:`` of a BlockTests file).

    Each block's own tolerances (``adjoint tolerance``, ``square-root tolerance``,
    ``inner inverse tolerance``, ``outer inverse tolerance``) apply to its tests; the
    keys below set what has no per-block key.
    """

    seed: int = Field(0, ge=0, description="Seed of every random vector and draw (one stream per block and test).")
    tolerance: float = Field(DEFAULT_TOLERANCE, gt=0, description="Tolerance of the tests of B as a whole and of "
                                                                  "the batch tests (round-off, see pyoops.saber.checks).")
    batch_size: int = Field(3, ge=2, description="Members of the batched-versus-one-by-one test.")
    dirac_points: list[int] | None = Field(
        None, description="Flat indices (to_vector order) of the Dirac impulses (default: first, a third, middle "
                          "and last point of each variable).")
    randomization_size: int = Field(2000, ge=10, description="Number K of random draws of the variance tests.")
    significance: float = Field(1e-6, gt=0, lt=1, description="Probability that a correct block fails a "
                                                              "randomization test (for a random seed).")
    max_points: int = Field(1024, ge=0, description="Largest grid (values) on which diag(C) is computed exactly "
                                                    "for the randomization tests.")
    nested: bool = Field(True, description="Also test the blocks of nested chains (Hybrid components, "
                                           "localizations).")


def block_checks(block: Any, settings: BlockTestSettings, where: str | None = None) -> list[BlockCheck]:
    """Every test of one block (or of a chain, as a central operator), each with its own random stream.

    Outer blocks: adjoint, left inverse, inverse, batch.  Central blocks and chains:
    adjoint (symmetry), square root, Dirac, the two randomization tests, batch.
    """
    where = where or _where(block)

    def rng(test: str) -> np.random.Generator:
        return generator(settings.seed, "block tests", where, test)

    params = getattr(block, "params", None)
    tol = {key: float(getattr(params, key, settings.tolerance)) for key in
           ("adjoint_tolerance", "square_root_tolerance", "inner_inverse_tolerance", "outer_inverse_tolerance")}
    if not isinstance(params, SaberBlockParameters):  # a chain: B as a whole
        tol = dict.fromkeys(tol, settings.tolerance)
    if isinstance(block, SaberOuterBlock):
        return [adjoint_check(block, rng("adjoint"), tol["adjoint_tolerance"], where),
                left_inverse_check(block, rng("left inverse"), tol["inner_inverse_tolerance"], where),
                inverse_check(block, rng("inverse"), tol["outer_inverse_tolerance"], where),
                batch_check(block, rng("batch"), settings.batch_size, settings.tolerance, where)]
    return [symmetry_check(block, rng("adjoint"), tol["adjoint_tolerance"], where),
            square_root_check(block, rng("square root"), tol["square_root_tolerance"], where),
            dirac_check(block, settings.dirac_points if where == "B" else None, tol["adjoint_tolerance"], where),
            *randomization_checks(block, settings.seed, settings.randomization_size, settings.significance,
                                  settings.max_points, where, ("block tests", where, "randomization")),
            batch_check(block, rng("batch"), settings.batch_size, settings.tolerance, where)]


def covariance_checks(chain: Any, settings: BlockTestSettings) -> list[BlockCheck]:
    """:func:`block_checks` of every block of ``chain`` (nested ones with ``nested``), then of B (``where='B'``)."""
    out: list[BlockCheck] = []
    for where, block in chain.blocks(nested=settings.nested):
        out += block_checks(block, settings, where)
    return out + block_checks(chain, settings, "B")
