"""The incremental variational driver: outer loops that re-linearise, inner loops that minimise.

For outer loop :math:`k = 0, 1, \\dots`:

1. run :math:`\\mathcal{H}(x_k)` (with the nonlinear model through the window for
   4D-Var and FGAT) and fix :math:`d_k = y - \\mathcal{H}(x_k)`;
2. build the quadratic problem on the loop's inner geometry (B, linear H, R);
3. minimise with the chosen algorithm;
4. interpolate the increment to the outer geometry (the documented
   :func:`~pyoops.assimilation.costfunction.change_resolution`) and update
   :math:`x_{k+1} = x_k + \\delta x_k`.

:math:`\\mathbf{B}^{-1}\\delta x_b` is carried from loop to loop, since no
algorithm applies :math:`\\mathbf{B}^{-1}`: :math:`\\mathbf{B}^{-1}\\delta x_b^{k+1} =
\\mathbf{B}^{-1}\\delta x_b^{k} - \\mathbf{B}^{-1}\\delta x_k` (likewise
:math:`v_b` for the :math:`\\mathbf{B}^{1/2}` algorithms).  When the inner geometry
changes between loops and :math:`\\delta x_b \\ne 0`, :math:`\\mathbf{B}^{-1}\\delta x_b` is
recomputed by conjugate gradients on :math:`\\mathbf{B}`.
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from pyoops.assimilation.costfunction import CostFunction, change_resolution
from pyoops.assimilation.minimizers import (
    ALGORITHMS,
    DIRECT_MAX_SIZE,
    SQRT_ALGORITHMS,
    exact_gain,
    minimize,
)
from pyoops.assimilation.online import online_tlm_test
from pyoops.assimilation.problem import DenseCovariance, QuadraticProblem
from pyoops.config.parameters import Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.util.errors import ConfigError, join_path
from pyoops.util.random import generator

__all__ = ["IterationParameters", "MAX_INNER_ITERATIONS", "VariationalResult", "VariationalSection",
           "check_minimizer_memory", "run_incremental"]

logger = logging.getLogger("pyoops")

#: Largest ``ninner`` of one outer loop.  Every inner iteration costs applications of B, H and
#: H^T and keeps a record in the cost trace; CG-type minimizers converge in far fewer
#: iterations than the control vector has elements, and OOPS configurations use tens.
MAX_INNER_ITERATIONS = 100_000
#: Minimizers that store a Krylov basis (one vector of the control size and one of the
#: observation size, with its R^-1 image, per iteration, up to the control size).
KRYLOV_ALGORITHMS = ("DRPLanczos", "PLanczos")


class OnlineDiagnostics(Parameters):
    online_adj_test: bool = Field(False, description="Check <Hx, y> = <x, H^T y>, B symmetry or B^1/2 at the start.")
    online_tlm_test: bool = Field(
        False, description="Check the linearised H (with the linear model) against finite differences of H.")
    tolerance: float = Field(1e-10, gt=0, description="Relative tolerance of the online adjoint tests.")
    tlm_tolerance: float = Field(1e-4, gt=0, description="Relative tolerance of the online TL test.")


class IterationParameters(Parameters):
    """One entry of ``variational.iterations`` (one outer loop)."""

    ninner: int = Field(gt=0, le=MAX_INNER_ITERATIONS,
                        description=f"Maximum number of inner iterations (1 to {MAX_INNER_ITERATIONS}).")
    gradient_norm_reduction: float = Field(1e-10, gt=0, description="Stop when the gradient norm fell by this factor.")
    geometry: dict[str, Any] | None = Field(None, description="Inner-loop geometry (default: the outer one).")
    linear_model: dict[str, Any] | None = Field(None, description="Linear model of this outer loop (4D-Var).")
    online_diagnostics: OnlineDiagnostics | None = Field(None, description="Online adjoint / TL tests.")


class MinimizerParameters(Parameters):
    algorithm: str = Field(description=f"One of {', '.join(ALGORITHMS)}.")

    @field_validator("algorithm")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ALGORITHMS:
            import difflib

            close = difflib.get_close_matches(value, ALGORITHMS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown minimizer '{value}'{hint} (known: {', '.join(ALGORITHMS)})")
        return value


class VariationalSection(Parameters):
    """The ``variational`` section."""

    minimizer: MinimizerParameters = Field(description="{algorithm: DRPCG | ...}.")
    iterations: list[IterationParameters] = Field(min_length=1, description="One entry per outer loop.")


def _increment_size(cost: CostFunction, inner: Any) -> int:
    """Size of the flat increment on ``inner``: every analysis variable at every increment time."""
    return len(cost.increment_times) * sum(int(np.prod(inner.field_shape(v))) for v in cost.variables)


def check_minimizer_memory(cost: CostFunction, section: VariationalSection, path: str = "variational") -> None:
    """Refuse, before any work, outer loops whose Krylov basis cannot fit in memory, and
    ``DirectSolve`` on an increment of more than
    :data:`~pyoops.assimilation.minimizers.DIRECT_MAX_SIZE` values.

    DRPLanczos and PLanczos keep ``min(ninner, n)`` vectors of the control size ``n``
    (and their B^-1 images) for the re-orthogonalisation; the other iterative minimizers
    keep a fixed handful of vectors; DirectSolve dense ``n x n`` matrices.
    """
    from pyoops.util.resources import format_bytes, require_memory

    algorithm = section.minimizer.algorithm
    if algorithm not in KRYLOV_ALGORITHMS and algorithm != "DirectSolve":
        return
    for k, it in enumerate(section.iterations):
        inner = cost.geometry
        if it.geometry is not None:
            inner = cost.plugin.make_geometry(it.geometry, join_path(path, "iterations", k, "geometry"))
        n = _increment_size(cost, inner)
        if algorithm == "DirectSolve":
            _check_direct_size(n, path)
            continue
        kmax = min(it.ninner, n)
        require_memory(2 * 8.0 * kmax * n, f"{section.minimizer.algorithm} with ninner {it.ninner} ({kmax} Krylov "
                       f"vectors of {n} values, {format_bytes(8.0 * n)} each, and their B^-1 images)",
                       join_path(path, "iterations", k, "ninner"))


def _check_direct_size(n: int, path: str) -> None:
    if n > DIRECT_MAX_SIZE:
        raise ConfigError(f"DirectSolve forms dense n x n matrices and accepts increments of at most {DIRECT_MAX_SIZE} "
                          f"values, this one has {n}: use an iterative minimizer (e.g. DRPCG)",
                          join_path(path, "minimizer"))


@dataclass
class VariationalResult:
    """What a variational run produced."""

    background: list[Any]
    analysis: list[Any]
    hofx_background: list[Any]
    hofx_analysis: list[Any] | None
    observers: Any
    trace: list[dict[str, Any]] = field(default_factory=list)
    online_diagnostics: list[dict[str, Any]] = field(default_factory=list)
    timings: list[dict[str, Any]] = field(default_factory=list)
    #: diag(HBH^T) at the first outer loop (flat, observation order), when asked for.
    background_error_variance: np.ndarray | None = None


def _flatteners(geometry: Any, variables: Any, nslots: int) -> tuple[Any, Any, list[FieldSet]]:
    template = [geometry.zeros(variables) for _ in range(nslots)]
    sizes = [t.to_vector().size for t in template]

    def flatten(fields: list[FieldSet]) -> np.ndarray:
        return np.concatenate([f.subset(variables).to_vector() for f in fields])

    def unflatten(x: np.ndarray) -> list[FieldSet]:
        """One FieldSet per slot from a flat vector, or with a leading batch axis from the rows of ``(k, n)``."""
        out, start = [], 0
        for t, n in zip(template, sizes):
            if x.ndim == 1:
                out.append(t.from_vector(x[start:start + n]))
            else:
                fields, offset = {}, start
                for v in t:
                    fields[v] = x[:, offset:offset + t[v].size].reshape((x.shape[0],) + t[v].shape)
                    offset += t[v].size
                out.append(FieldSet(fields, copy=False))
            start += n
        return out

    return flatten, unflatten, template


def _cg_solve(apply: Any, rhs: np.ndarray, tol: float = 1e-12, maxiter: int = 10000) -> np.ndarray:
    """Solve ``apply(x) = rhs`` for SPD ``apply`` by conjugate gradients."""
    from scipy.sparse.linalg import LinearOperator, cg

    op = LinearOperator((rhs.size, rhs.size), matvec=apply, dtype=float)
    x, info = cg(op, rhs, rtol=tol, atol=0.0, maxiter=maxiter)
    if info != 0:
        raise RuntimeError(f"CG for B^-1 dx_b did not converge (info {info})")
    return x


def run_incremental(cost: CostFunction, section: VariationalSection, path: str = "variational", *,
                    background: list[Any] | None = None, observers: Any = None,
                    covariance: Any = None, hbht: Any = None, final_hofx: bool = True) -> VariationalResult:
    r"""Run every outer loop and return background, analysis, H(x) and the cost trace.

    The in-memory entry point (used by cycling and the EDA) may replace what the
    configuration would read: ``background`` (the list of States
    :meth:`~pyoops.assimilation.costfunction.CostFunction.read_background` would return), ``observers`` (an
    :class:`~pyoops.generic.observers.Observers` with its ObsValue filled) and
    ``covariance`` (a callable ``inner_geometry -> ErrorCovariance``, e.g. to use an
    in-memory ensemble or to reuse one B for several analyses).  ``hbht``: ``(options,
    labels)`` with :class:`~pyoops.diagnostics.hbht.BackgroundVarianceParameters` to also
    compute :math:`\mathrm{diag}(\mathbf{HBH}^\mathrm{T})` with the linearisation of the
    first outer loop (:func:`~pyoops.diagnostics.hbht.diag_hbht`).  ``final_hofx=False`` skips
    :math:`\mathcal{H}(x_a)` after the last outer loop (``hofx_analysis`` is then None), for callers
    that do not read it: it changes nothing else.
    """
    if background is None:
        background = cost.read_background()
    guess = [b.copy() for b in background]
    if observers is None:
        observers = cost.observers()
    make_covariance = covariance if covariance is not None else cost.covariance
    nslots = len(cost.increment_times)
    variables = cost.variables
    carried_b_inv: np.ndarray | None = None
    carried_vb: np.ndarray | None = None
    carried_geometry = None
    trace: list[dict[str, Any]] = []
    online: list[dict[str, Any]] = []
    timings: list[dict[str, Any]] = []
    hofx_background = None
    background_error_variance = None
    for k, it in enumerate(section.iterations):
        ipath = join_path(path, "iterations", k)
        inner = cost.geometry
        if it.geometry is not None:
            inner = cost.plugin.make_geometry(it.geometry, join_path(ipath, "geometry"))
        cov = make_covariance(inner)
        linear_model = cost.linear_model(it.linear_model, inner, join_path(ipath, "linear model"))
        flat = FlatLinearisation.build(cost, guess, observers, inner, linear_model, cov, nslots)
        lin, flatten, unflatten, b_multiply = flat.lin, flat.flatten, flat.unflatten, flat.b_multiply
        h, h_ad, h_rows = flat.h, flat.h_ad, flat.h_rows
        r_inverse, r_multiply, r_inverse_diagonal = cost.r_operators(lin, observers)
        if k == 0:
            hofx_background = [y.copy() for y in lin.hofx]
        dxb = flatten([change_resolution((b.fields.subset(variables) - g.fields.subset(variables)), cost.geometry,
                                         inner) for b, g in zip(background, guess)])

        has_sqrt = cov.chain.has_sqrt and nslots == 1
        same_inner = carried_geometry is not None and carried_geometry.same_as(inner)
        uses_sqrt = section.minimizer.algorithm in SQRT_ALGORITHMS
        direct = section.minimizer.algorithm == "DirectSolve"
        if k == 0 or not np.any(dxb):
            b_inv_dxb = np.zeros_like(dxb)
        elif same_inner and carried_b_inv is not None:
            b_inv_dxb = carried_b_inv
        elif uses_sqrt and same_inner and carried_vb is not None:
            b_inv_dxb = np.zeros_like(dxb)  # not read by the B^1/2 algorithms
        else:
            b_inv_dxb = _cg_solve(b_multiply, dxb)
        # vb is read by the B^1/2 algorithms only (and the online adjoint test checks B^1/2): another
        # algorithm's later outer loops skip the V^T B^-1 dxb it costs.
        sqrt_pieces = has_sqrt and (k == 0 or uses_sqrt or it.online_diagnostics is not None)
        vb = None
        if sqrt_pieces:
            if k == 0 or not np.any(dxb):
                vb = np.zeros(cov.ctl_vec_size)
            elif carried_vb is not None and same_inner:
                vb = carried_vb
            else:
                vb = cov.chain.multiply_sqrt_ad(unflatten(b_inv_dxb)[0])
        problem = QuadraticProblem(
            b_multiply=b_multiply, h=h, h_ad=h_ad, r_inverse=r_inverse, r_multiply=r_multiply,
            d=lin.innovation, dxb=dxb, b_inverse_dxb=b_inv_dxb,
            b_sqrt=(lambda v: flatten([cov.chain.multiply_sqrt(v)])) if sqrt_pieces else None,
            b_sqrt_ad=(lambda x: cov.chain.multiply_sqrt_ad(unflatten(x)[0])) if sqrt_pieces else None,
            ctl_size=cov.ctl_vec_size if sqrt_pieces else None, vb=vb,
            b_dense=_dense_covariance(cov, b_multiply, dxb.size, path) if direct else None,
            h_rows=h_rows if direct else None, r_inverse_diagonal=r_inverse_diagonal if direct else None,
            h_rows_checked=direct and _operator_classes(inner, linear_model, lin) in _batched_h_checked)
        if k == 0 and hbht is not None:
            from pyoops.diagnostics.hbht import diag_hbht

            background_error_variance = diag_hbht(
                h, h_ad, b_multiply, lin.innovation.size, dxb.size, hbht[0], tuple(hbht[1]),
                b_sqrt=problem.b_sqrt, sqrt_size=problem.ctl_size)
        diagnostics = None
        if it.online_diagnostics is not None:
            diagnostics = {"online adj test": it.online_diagnostics.online_adj_test,
                           "tolerance": it.online_diagnostics.tolerance}
        if section.minimizer.algorithm in SQRT_ALGORITHMS and not problem.has_sqrt:
            raise ConfigError(f"{section.minimizer.algorithm} minimises over v with dx = B^1/2 v, but this background "
                              "error has no square root (or it is a 4-D covariance); use DRPCG, DRIPCG, DRPLanczos "
                              "or RPCG", join_path(path, "minimizer.algorithm"))
        if it.online_diagnostics is not None and it.online_diagnostics.online_tlm_test:
            online.append({"outer iteration": k, **_online_tlm(cost, guess, observers, inner, lin, h, unflatten,
                                                               dxb.size, cov, it.online_diagnostics.tlm_tolerance)})
        started = time.perf_counter()
        result = minimize(problem, section.minimizer.algorithm, it.ninner, it.gradient_norm_reduction,
                          online_diagnostics=diagnostics)
        if problem.h_rows_checked:
            _batched_h_checked.add(_operator_classes(inner, linear_model, lin))
        timings.append({"outer iteration": k, "inner iterations": result.iterations,
                        "minimizer seconds": time.perf_counter() - started})
        for record in result.trace_as_dicts():
            trace.append({"outer iteration": k, **record})
        for test in result.diagnostics:
            online.append({"outer iteration": k, "operator": test.operator, "relative error": test.relative_error,
                           "tolerance": test.tolerance, "passed": test.passed})
        logger.info("outer loop %d (%s, inner grid %s): J %.10g -> %.10g (Jb %.6g, Jo %.6g) in %d inner iterations",
                    k, section.minimizer.algorithm, inner.shape, result.trace[0].j, result.j, result.jb, result.jo,
                    result.iterations)
        increments = unflatten(result.dx)
        for state, dx in zip(guess, increments):
            full = change_resolution(dx, inner, cost.geometry)
            for v in variables:
                state.fields[v] = state.fields[v] + full[v]
        carried_b_inv = b_inv_dxb - result.b_inverse_dx if result.b_inverse_dx is not None else None
        carried_vb = vb - result.v if (vb is not None and result.v is not None) else None
        carried_geometry = inner
    hofx_analysis = cost.linearise(guess, observers, cost.geometry, None).hofx if final_hofx else None
    return VariationalResult(background, guess, hofx_background, hofx_analysis, observers, trace, online, timings,
                             background_error_variance)


@dataclass
class AnalysisGain:
    r"""The 3D-Var gain :math:`\mathbf{K} = \mathbf{B}\mathbf{H}^\mathrm{T}(\mathbf{H}\mathbf{B}
    \mathbf{H}^\mathrm{T} + \mathbf{R})^{-1}` of one analysis (:func:`analysis_gain`).

    ``matrix`` is ``(n, p)``: ``n`` the flat analysis variables of the cost function's geometry
    (:meth:`increment` returns them as a FieldSet), ``p`` the observations in the observers'
    order (variable-major); unused observations (QC) have zero columns.
    """

    matrix: np.ndarray
    unflatten: Any

    def increment(self, innovation: np.ndarray) -> FieldSet:
        r""":math:`\delta\mathbf{x} = \mathbf{K}\mathbf{d}` for a flat innovation
        :math:`\mathbf{d} = \mathbf{y} - \mathcal{H}(\mathbf{x}_b)` (0 where unused)."""
        return self.unflatten(self.matrix @ innovation)[0]


@dataclass
class FlatLinearisation:
    r"""One outer loop's linearisation on flat vectors: the
    :class:`~pyoops.assimilation.costfunction.Linearisation` ``lin`` about a
    guess on the ``inner`` geometry, the flatteners of its ``nslots`` increments, the linear
    :math:`\mathbf{H}` (``h``, ``h_ad``, batched ``h_rows``; with the linear model for 4D-Var) and
    :math:`\mathbf{B}` of ``cov`` as a flat product ``b_multiply`` -- what :func:`run_incremental`'s
    outer loops, :func:`analysis_gain` and the cycle's :math:`\mathbf{HBH}^\mathrm{T}` all start from.
    """

    lin: Any
    flatten: Any
    unflatten: Any
    size: int
    h: Any
    h_ad: Any
    h_rows: Any
    b_multiply: Any

    @classmethod
    def build(cls, cost: CostFunction, guess: list[Any], observers: Any, inner: Any, linear_model: Any, cov: Any,
              nslots: int) -> FlatLinearisation:
        """Linearise ``cost`` about ``guess`` on ``inner`` (``cov``: that geometry's ErrorCovariance)."""
        lin = cost.linearise(guess, observers, inner, linear_model)
        flatten, unflatten, template = _flatteners(inner, cost.variables, nslots)
        h, h_ad, h_rows = cost.linear_h(lin, observers, inner, linear_model, unflatten, flatten, with_rows=True)

        def b_multiply(x: np.ndarray) -> np.ndarray:
            return flatten(_apply_b(cov, unflatten(x)))

        size = sum(t.to_vector().size for t in template)
        return cls(lin, flatten, unflatten, size, h, h_ad, h_rows, b_multiply)


def analysis_gain(cost: CostFunction, background: list[Any], observers: Any, covariance: Any = None,
                  path: str = "variational") -> AnalysisGain:
    r"""The gain of a 3D-Var analysis, with ``DirectSolve``'s factorisation
    (:func:`~pyoops.assimilation.minimizers.exact_gain`) of the problem :func:`run_incremental` builds
    for the first outer loop, linearised about ``background`` (``covariance`` as there: a callable
    ``geometry -> ErrorCovariance``, default the cost function's).

    For an observation operator linear in the state (``ObsOperator.linear``) the increment of
    ``DirectSolve`` from ``background`` is :math:`\mathbf{K}\mathbf{d}` whatever the background,
    and so is every later outer loop's (zero, to rounding): a cycle with the same B, H and R
    each cycle applies :math:`\mathbf{K}` instead of building and solving the problem again.
    """
    if cost.cost_type != "3D-Var":
        raise ValueError(f"analysis_gain: a {cost.cost_type} gain depends on the trajectory; 3D-Var only")
    inner = cost.geometry
    cov = (covariance if covariance is not None else cost.covariance)(inner)
    flat = FlatLinearisation.build(cost, background, observers, inner, None, cov, 1)
    r_inverse, r_multiply, r_inverse_diagonal = cost.r_operators(flat.lin, observers)
    n = flat.size
    problem = QuadraticProblem(
        b_multiply=flat.b_multiply, h=flat.h, h_ad=flat.h_ad, r_inverse=r_inverse, r_multiply=r_multiply,
        d=flat.lin.innovation, dxb=np.zeros(n), b_inverse_dxb=np.zeros(n),
        b_dense=_dense_covariance(cov, flat.b_multiply, n, path), h_rows=flat.h_rows,
        r_inverse_diagonal=r_inverse_diagonal)
    return AnalysisGain(exact_gain(problem), flat.unflatten)


#: Operator classes whose batched H (``h_rows``) ``DirectSolve`` found equal to H applied row by row
#: (:attr:`~pyoops.assimilation.problem.QuadraticProblem.h_rows_checked`): whether a plugin's linear
#: operators treat a leading axis as a batch is a property of their code, so it is checked once per
#: process and set of classes, not in every outer loop of every cycle.
_batched_h_checked: set[tuple[Any, ...]] = set()


def _operator_classes(inner: Any, linear_model: Any, lin: Any) -> tuple[Any, ...]:
    """The classes that make up the batched H of a linearisation: geometry (its interpolation),
    linear model, interpolators and linear observation operators."""
    return (type(inner), type(linear_model), tuple(type(op) for op in lin.linear_obs_operators),
            tuple(type(interp) for per_slot in lin.interpolators for _, _, interp in per_slot))


#: The explicit B of each covariance object, built once per object and increment size.  The
#: covariances of an analysis are immutable once built (the EDA shares one between members and,
#: when it reads no in-memory ensemble, between the cycles of a run); a new B (new ensemble,
#: configuration or run) is a new object, and an entry goes with its object.
_dense_covariances: weakref.WeakKeyDictionary[Any, dict[int, DenseCovariance]] = weakref.WeakKeyDictionary()


def _dense_covariance(cov: Any, b_multiply: Any, n: int, path: str) -> DenseCovariance:
    """:math:`\\mathbf{B}` of ``cov`` as a :class:`~pyoops.assimilation.problem.DenseCovariance` (cached)."""
    _check_direct_size(n, path)
    try:
        per_size = _dense_covariances.setdefault(cov, {})
    except TypeError:  # not weakly referenceable: no caching
        return DenseCovariance.from_operator(b_multiply, n)
    if n not in per_size:
        per_size[n] = DenseCovariance.from_operator(b_multiply, n)
    return per_size[n]


def _online_tlm(cost: CostFunction, guess: list[Any], observers: Any, inner: Any, lin: Any, h: Any,
                unflatten: Any, size: int, cov: Any, tolerance: float) -> dict[str, Any]:
    """The online TL test of this outer loop (see :mod:`pyoops.assimilation.online`).

    The random increment has the RMS of a draw from B where B can be randomized, so that
    the finite differences probe increments of the size the minimisation explores.
    """
    def nonlinear(increments: list[FieldSet]) -> np.ndarray:
        states = []
        for state, dx in zip(guess, increments):
            moved = state.copy()
            full = change_resolution(dx, inner, cost.geometry)
            for v in cost.variables:
                moved.fields[v] = moved.fields[v] + full[v]
            states.append(moved)
        return cost.nonlinear_hofx(states, observers, lin.masks)

    try:
        scale = cov.chain.randomize(generator(0, "online tlm scale")).rms() or 1.0
    except ConfigError:  # a covariance that cannot be randomized: unit increments
        scale = 1.0
    return online_tlm_test(nonlinear, h, size, scale, unflatten, tolerance=tolerance)


def _apply_b(cov: Any, fields: list[FieldSet]) -> list[FieldSet]:
    """B on each increment (one slot; 4-D ensemble covariances are applied jointly)."""
    if len(fields) == 1:
        return [cov.chain.multiply(fields[0].copy())]
    multiply_4d = getattr(cov.chain, "multiply_4d", None)
    if multiply_4d is None:
        raise ConfigError("this background error has no 4-D form for 4D-Ens-Var", "cost function.background error")
    stacked = FieldSet({v: np.stack([f[v] for f in fields]) for v in fields[0]}, copy=False)
    out = multiply_4d(stacked)
    return [out.map(lambda a, t=t: a[t]) for t in range(len(fields))]
