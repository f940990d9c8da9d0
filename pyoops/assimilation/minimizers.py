r"""Minimizers of the quadratic inner-loop problem, written once on flat vectors.

Each algorithm minimises the cost of a :class:`~pyoops.assimilation.problem.QuadraticProblem`

.. math::

   J(\delta\mathbf{x}) = \tfrac12 (\delta\mathbf{x} - \delta\mathbf{x}_b)^\mathrm{T}
   \mathbf{B}^{-1} (\delta\mathbf{x} - \delta\mathbf{x}_b)
   + \tfrac12 (\mathbf{H}\delta\mathbf{x} - \mathbf{d})^\mathrm{T}
   \mathbf{R}^{-1} (\mathbf{H}\delta\mathbf{x} - \mathbf{d}),

i.e. solves :math:`\mathbf{A}\,\delta\mathbf{x} = \mathbf{b}` with the Hessian
:math:`\mathbf{A} = \mathbf{B}^{-1} + \mathbf{H}^\mathrm{T}\mathbf{R}^{-1}\mathbf{H}` and
:math:`\mathbf{b} = \mathbf{B}^{-1}\delta\mathbf{x}_b + \mathbf{H}^\mathrm{T}\mathbf{R}^{-1}\mathbf{d}`,
and none of them applies :math:`\mathbf{B}^{-1}`.  The algorithms carry JEDI OOPS's names:

``DRPCG``
    Derber–Rosati conjugate gradient: CG on :math:`\mathbf{A}` preconditioned by
    :math:`\mathbf{B}`, from :math:`\delta\mathbf{x}_0 = 0`.  Besides the search direction
    :math:`\mathbf{p}_k` it keeps :math:`\mathbf{q}_k = \mathbf{B}^{-1}\mathbf{p}_k` by the
    recurrence :math:`\mathbf{q}_{k+1} = \mathbf{r}_{k+1} + \beta_k\mathbf{q}_k` (because
    :math:`\mathbf{p}_{k+1} = \mathbf{B}\mathbf{r}_{k+1} + \beta_k\mathbf{p}_k`), so
    :math:`\mathbf{A}\mathbf{p}_k = \mathbf{q}_k + \mathbf{H}^\mathrm{T}\mathbf{R}^{-1}\mathbf{H}\mathbf{p}_k`
    costs one :math:`\mathbf{H}`, one :math:`\mathbf{H}^\mathrm{T}` and, for
    :math:`\mathbf{z} = \mathbf{B}\mathbf{r}`, one :math:`\mathbf{B}` per iteration.
    :math:`\beta_k = \mathbf{r}_{k+1}^\mathrm{T}\mathbf{z}_{k+1} / \mathbf{r}_k^\mathrm{T}\mathbf{z}_k`
    (Fletcher–Reeves).
``DRIPCG``
    The same with the Polak–Ribière (Golub–Ye inexact-preconditioner) coefficient
    :math:`\beta_k = \mathbf{r}_{k+1}^\mathrm{T}(\mathbf{z}_{k+1} - \mathbf{z}_k) /
    \mathbf{r}_k^\mathrm{T}\mathbf{z}_k`; identical iterates in exact arithmetic.
``DRPLanczos``
    Lanczos on :math:`\mathbf{B}\mathbf{A}` in the :math:`\mathbf{B}^{-1}` inner product:
    :math:`\mathbf{B}^{-1}`-orthonormal vectors :math:`\mathbf{q}_j` kept with their duals
    :math:`\mathbf{t}_j = \mathbf{B}^{-1}\mathbf{q}_j` (the residual-space vectors, so
    :math:`\mathbf{B}^{-1}` is never applied), full re-orthogonalisation (twice, classical
    Gram–Schmidt) in that metric, and the iterate
    :math:`\delta\mathbf{x}_k = \mathbf{Q}_k\mathbf{s}_k` from the tridiagonal system
    :math:`\mathbf{T}_k\mathbf{s}_k = \beta_0\mathbf{e}_1` at every iteration.  Same iterates
    as DRPCG in exact arithmetic.
``PCG``, ``PLanczos``
    CG and Lanczos (with full re-orthogonalisation) on the control-variable transform
    :math:`\delta\mathbf{x} = \mathbf{V}\mathbf{v}`, :math:`\mathbf{B} = \mathbf{V}\mathbf{V}^\mathrm{T}`:

    .. math::

       J(\mathbf{v}) = \tfrac12 (\mathbf{v} - \mathbf{v}_b)^\mathrm{T}(\mathbf{v} - \mathbf{v}_b)
       + \tfrac12 (\mathbf{H}\mathbf{V}\mathbf{v} - \mathbf{d})^\mathrm{T}\mathbf{R}^{-1}
       (\mathbf{H}\mathbf{V}\mathbf{v} - \mathbf{d}),
       \qquad
       (\mathbf{I} + \mathbf{V}^\mathrm{T}\mathbf{H}^\mathrm{T}\mathbf{R}^{-1}\mathbf{H}\mathbf{V})\,\mathbf{v}
       = \mathbf{v}_b + \mathbf{V}^\mathrm{T}\mathbf{H}^\mathrm{T}\mathbf{R}^{-1}\mathbf{d},

    from :math:`\mathbf{v}_0 = 0`, where :math:`\mathbf{V}\mathbf{v}_b = \delta\mathbf{x}_b`.
    They are DRPCG and DRPLanczos applied to the transformed problem
    (:math:`\mathbf{B} \to \mathbf{I}`, :math:`\mathbf{H} \to \mathbf{H}\mathbf{V}`,
    :math:`\delta\mathbf{x}_b, \mathbf{B}^{-1}\delta\mathbf{x}_b \to \mathbf{v}_b`); one
    :math:`\mathbf{V}`, :math:`\mathbf{H}`, :math:`\mathbf{H}^\mathrm{T}`,
    :math:`\mathbf{V}^\mathrm{T}` per iteration and :math:`\delta\mathbf{x} = \mathbf{V}\mathbf{v}`
    once at the end.  With a square invertible :math:`\mathbf{V}` the iterates
    :math:`\mathbf{V}\mathbf{v}_k` are those of DRPCG.
``RPCG``
    Restricted preconditioned CG in observation space (Gratton & Tshimanga 2009,
    Gürol et al. 2014): DRPCG started at :math:`\delta\mathbf{x}_0 = \delta\mathbf{x}_b`, where
    every iterate is :math:`\delta\mathbf{x}_b + \mathbf{B}\mathbf{H}^\mathrm{T}\boldsymbol\lambda`
    and every residual :math:`\mathbf{H}^\mathrm{T}\hat{\mathbf{r}}`, rewritten in
    :math:`\boldsymbol\lambda`, :math:`\hat{\mathbf{r}}`, :math:`\hat{\mathbf{p}}` with
    :math:`\mathbf{F} = \mathbf{H}\mathbf{B}\mathbf{H}^\mathrm{T}`:
    :math:`\hat{\mathbf{r}}_0 = \mathbf{R}^{-1}(\mathbf{d} - \mathbf{H}\delta\mathbf{x}_b)`,
    :math:`\alpha_k = \hat{\mathbf{r}}_k^\mathrm{T}\mathbf{F}\hat{\mathbf{r}}_k /
    (\mathbf{F}\hat{\mathbf{p}}_k)^\mathrm{T}(\hat{\mathbf{p}}_k + \mathbf{R}^{-1}\mathbf{F}\hat{\mathbf{p}}_k)`,
    :math:`\hat{\mathbf{r}}_{k+1} = \hat{\mathbf{r}}_k - \alpha_k(\hat{\mathbf{p}}_k +
    \mathbf{R}^{-1}\mathbf{F}\hat{\mathbf{p}}_k)`,
    :math:`\mathbf{F}\hat{\mathbf{p}}_{k+1} = \mathbf{F}\hat{\mathbf{r}}_{k+1} + \beta_k\mathbf{F}\hat{\mathbf{p}}_k`
    (one :math:`\mathbf{H}^\mathrm{T}`, :math:`\mathbf{B}`, :math:`\mathbf{H}` per iteration;
    :math:`\mathbf{B}\mathbf{H}^\mathrm{T}\hat{\mathbf{p}}` and
    :math:`\mathbf{H}^\mathrm{T}\hat{\mathbf{p}}` follow the same recurrence, which gives
    :math:`\delta\mathbf{x}` and :math:`\mathbf{B}^{-1}\delta\mathbf{x} = \mathbf{B}^{-1}\delta\mathbf{x}_b
    + \mathbf{H}^\mathrm{T}\boldsymbol\lambda` without further operator calls).
    :math:`J_b = \tfrac12\boldsymbol\lambda^\mathrm{T}\mathbf{F}\boldsymbol\lambda` and
    :math:`\mathbf{H}\delta\mathbf{x} = \mathbf{H}\delta\mathbf{x}_b + \mathbf{F}\boldsymbol\lambda`.
    Its iteration 0 is :math:`J(\delta\mathbf{x}_b)`, not :math:`J(0)`; on a first outer
    loop (:math:`\delta\mathbf{x}_b = 0`) it has the iterates of DRPCG.
``MINRES``
    Paige–Saunders MINRES on the symmetric system of PCG above, from
    :math:`\mathbf{v}_0 = 0`: Lanczos three-term recurrence, Givens rotations, and the
    iterate updated along :math:`\mathbf{w}_k = (\mathbf{u}_k - \varepsilon_k\mathbf{w}_{k-2} -
    \delta_k\mathbf{w}_{k-1})/\gamma_k`; it minimises the residual norm rather than
    :math:`J`, though :math:`J` still decreases (the system is positive definite).

``DirectSolve``
    Not iterative: the exact minimiser of a small problem (:math:`n \le`
    :data:`DIRECT_MAX_SIZE`) by one Cholesky factorisation.  With the explicit
    :math:`\mathbf{B}` (:attr:`~pyoops.assimilation.problem.QuadraticProblem.b_dense`, else
    :math:`\mathbf{B}` applied to the :math:`n` unit vectors) factored as
    :math:`\mathbf{B} = \mathbf{L}\mathbf{L}^\mathrm{T}`
    (:class:`~pyoops.assimilation.problem.DenseCovariance`, :math:`\mathbf{L}` of
    :math:`r \le n` columns), :math:`\mathbf{G} = \mathbf{H}\mathbf{L}` (one batched
    :attr:`~pyoops.assimilation.problem.QuadraticProblem.h_rows` call, checked against one
    :math:`\mathbf{H}` on the first column, else :math:`r` calls of :math:`\mathbf{H}`) and :math:`\delta\mathbf{x} = \mathbf{L}\mathbf{v}`, the cost is that of
    PCG above and its minimiser solves

    .. math::

       \mathbf{S}\mathbf{v} = \mathbf{g}, \qquad
       \mathbf{S} = \mathbf{I}_r + \mathbf{G}^\mathrm{T}\mathbf{R}^{-1}\mathbf{G}, \qquad
       \mathbf{g} = \mathbf{L}^\mathrm{T}(\mathbf{B}^{-1}\delta\mathbf{x}_b
       + \mathbf{H}^\mathrm{T}\mathbf{R}^{-1}\mathbf{d}),

    the Hessian in control space formed explicitly (:math:`\mathbf{S} \succeq \mathbf{I}`, so its
    Cholesky factorisation always exists and its condition number is at most
    :math:`1 + \|\mathbf{G}^\mathrm{T}\mathbf{R}^{-1}\mathbf{G}\|`), solved by
    ``scipy.linalg.cho_factor``/``cho_solve``.  :math:`\mathbf{g}` is :math:`\mathbf{L}^\mathrm{T}`
    times minus the gradient at :math:`\delta\mathbf{x} = 0` (one :math:`\mathbf{H}^\mathrm{T}`);
    :math:`\mathbf{B}^{-1}\delta\mathbf{x}` comes from the dual factor.  It reports one iteration,
    its gradient-norm reduction is :math:`\|\mathbf{S}\mathbf{v} - \mathbf{g}\| / \|\mathbf{g}\|`
    (rounding, about :math:`\varepsilon\,\kappa(\mathbf{S})`) and ``ninner`` and
    ``gradient_norm_reduction`` do not change the result.  Cost: :math:`r` applications of
    :math:`\mathbf{H}` (batched), one of :math:`\mathbf{H}^\mathrm{T}`, :math:`O(n^3)` for the
    factor of :math:`\mathbf{B}` (shared when ``b_dense`` is) and :math:`O(r^2 p + r^3)` for
    :math:`\mathbf{S}`: for a few tens of variables far less than the :math:`2k` operator
    applications of :math:`k` CG iterations.

Every iteration is recorded as an :class:`IterationRecord` (iteration 0 is the starting
point) from tracked quantities: with :math:`\delta\mathbf{x}` the minimizers update
:math:`\mathbf{B}^{-1}\delta\mathbf{x}`, :math:`\mathbf{H}\delta\mathbf{x}` and
:math:`\mathbf{R}^{-1}\mathbf{H}\delta\mathbf{x}` along the same directions, so

.. math::

   J_b = \tfrac12 (\delta\mathbf{x} - \delta\mathbf{x}_b)^\mathrm{T}
   (\mathbf{B}^{-1}\delta\mathbf{x} - \mathbf{B}^{-1}\delta\mathbf{x}_b), \qquad
   J_o = \tfrac12 (\mathbf{H}\delta\mathbf{x} - \mathbf{d})^\mathrm{T}
   (\mathbf{R}^{-1}\mathbf{H}\delta\mathbf{x} - \mathbf{R}^{-1}\mathbf{d})

cost two dot products.  The gradient norm is the same for every algorithm, the
:math:`\mathbf{B}`-norm :math:`\|\nabla J\|_\mathbf{B} = (\nabla J^\mathrm{T}\mathbf{B}\nabla J)^{1/2}`
(:math:`(\mathbf{r}^\mathrm{T}\mathbf{z})^{1/2}` in DRPCG, the Euclidean norm of the
gradient with respect to :math:`\mathbf{v}` for the square-root algorithms,
:math:`(\hat{\mathbf{r}}^\mathrm{T}\mathbf{F}\hat{\mathbf{r}})^{1/2}` in RPCG); an algorithm
stops when its ratio to the initial one drops below ``gradient_norm_reduction``.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg

from pyoops.assimilation.problem import DenseCovariance, QuadraticProblem
from pyoops.util.errors import NumericalError

__all__ = [
    "ALGORITHMS",
    "DIRECT_MAX_SIZE",
    "ITERATIVE_ALGORITHMS",
    "SQRT_ALGORITHMS",
    "AdjointTestResult",
    "IterationRecord",
    "MinimizerResult",
    "OnlineDiagnostics",
    "adjoint_tests",
    "minimize",
]

logger = logging.getLogger("pyoops.assimilation.minimizers")

#: The Krylov minimizers, in OOPS spelling.
ITERATIVE_ALGORITHMS: tuple[str, ...] = ("DRPCG", "DRIPCG", "DRPLanczos", "PCG", "PLanczos", "RPCG", "MINRES")

#: The algorithm names :func:`minimize` knows: the iterative ones and ``DirectSolve``.
ALGORITHMS: tuple[str, ...] = ITERATIVE_ALGORITHMS + ("DirectSolve",)

#: Largest increment size :math:`n` ``DirectSolve`` accepts: its dense :math:`n \times n`
#: matrices take :math:`8n^2` bytes (32 MB at 2000) and its factorisations :math:`O(n^3)` flops
#: (about a second at 2000), beyond which a few tens of CG iterations are cheaper.
DIRECT_MAX_SIZE: int = 2000

#: The algorithms that work on the control vector :math:`\mathbf{v}` and need :math:`\mathbf{B}^{1/2}`.
SQRT_ALGORITHMS: tuple[str, ...] = ("PCG", "PLanczos", "MINRES")

# An exhausted Krylov space: the next Lanczos coefficient is below this times the
# largest coefficient met so far.
_BREAKDOWN = 1e-14


# ----------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IterationRecord:
    r"""The cost and gradient after one inner iteration (iteration 0: the starting point).

    Attributes
    ----------
    iteration:
        Inner-iteration number, 0 for the starting point.
    j:
        :math:`J = J_b + J_o`.
    jb:
        Background term :math:`J_b`.
    jo:
        Observation term :math:`J_o`.
    gradient_norm:
        :math:`\|\nabla J\|_\mathbf{B}` (see the module documentation).
    gradient_norm_reduction:
        ``gradient_norm`` divided by its value at iteration 0 (0 when that is 0).
    """

    iteration: int
    j: float
    jb: float
    jo: float
    gradient_norm: float
    gradient_norm_reduction: float

    def as_dict(self) -> dict[str, float | int]:
        """The record with OOPS-style keys: ``iteration``, ``J``, ``Jb``, ``Jo``,
        ``gradient norm``, ``gradient norm reduction``."""
        return {
            "iteration": self.iteration,
            "J": self.j,
            "Jb": self.jb,
            "Jo": self.jo,
            "gradient norm": self.gradient_norm,
            "gradient norm reduction": self.gradient_norm_reduction,
        }


@dataclass(frozen=True)
class AdjointTestResult:
    r"""One online adjoint (or symmetry) test: :math:`\langle \mathbf{M}\mathbf{a}, \mathbf{b}\rangle`
    against :math:`\langle \mathbf{a}, \mathbf{M}^\mathrm{T}\mathbf{b}\rangle` for random vectors.

    Attributes
    ----------
    operator:
        Which operator was tested: ``"H"``, ``"B^1/2"`` or ``"B"`` (symmetry).
    lhs:
        :math:`\langle \mathbf{M}\mathbf{a}, \mathbf{b}\rangle`.
    rhs:
        :math:`\langle \mathbf{a}, \mathbf{M}^\mathrm{T}\mathbf{b}\rangle`.
    relative_error:
        :math:`|\mathrm{lhs} - \mathrm{rhs}| / \max(|\mathrm{lhs}|, |\mathrm{rhs}|)`
        (0 when both are 0).
    tolerance:
        The relative tolerance the test was held to.
    """

    operator: str
    lhs: float
    rhs: float
    relative_error: float
    tolerance: float

    @property
    def passed(self) -> bool:
        """Whether :attr:`relative_error` is within :attr:`tolerance`."""
        return bool(self.relative_error <= self.tolerance)

    def __str__(self) -> str:
        status = "passed" if self.passed else "FAILED"
        return (f"online adjoint test of {self.operator}: <Ma, b> = {self.lhs:.16e}, <a, M^T b> = "
                f"{self.rhs:.16e}, relative difference {self.relative_error:.3e} "
                f"(tolerance {self.tolerance:.1e}) {status}")


@dataclass(frozen=True)
class OnlineDiagnostics:
    """What :func:`minimize` checks once before iterating.

    Attributes
    ----------
    adjoint_test:
        Run :func:`adjoint_tests` (the YAML key ``online diagnostics: {online adj test: true}``).
    tolerance:
        Relative tolerance of each test.
    seed:
        Seed of the random test vectors.
    """

    adjoint_test: bool = False
    tolerance: float = 1e-10
    seed: int = 0

    @classmethod
    def coerce(cls, value: Any) -> "OnlineDiagnostics":
        """Build from ``None``/``False`` (nothing), ``True`` (adjoint tests), an
        :class:`OnlineDiagnostics`, or a mapping with the YAML keys ``online adj test``
        (bool), ``tolerance`` and ``seed``."""
        if value is None or value is False:
            return cls()
        if value is True:
            return cls(adjoint_test=True)
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            known = {"online adj test": "adjoint_test", "adjoint_test": "adjoint_test",
                     "tolerance": "tolerance", "seed": "seed"}
            unknown = sorted(str(k) for k in value if k not in known)
            if unknown:
                raise ValueError(f"unknown online diagnostics key(s) {', '.join(unknown)}; known: "
                                 "online adj test, tolerance, seed")
            return cls(**{known[k]: v for k, v in value.items()})
        raise ValueError(f"online diagnostics must be a bool, a mapping or OnlineDiagnostics, got {value!r}")


@dataclass
class MinimizerResult:
    r"""What one inner-loop minimisation returns to the driver.

    Attributes
    ----------
    algorithm:
        The algorithm's name.
    dx:
        The increment :math:`\delta\mathbf{x}` (:math:`\mathbf{V}\mathbf{v}` for the
        square-root algorithms), :attr:`~pyoops.assimilation.problem.QuadraticProblem.n` elements.
    b_inverse_dx:
        :math:`\mathbf{B}^{-1}\delta\mathbf{x}` for DRPCG, DRIPCG, DRPLanczos and RPCG
        (for RPCG, :math:`\mathbf{B}^{-1}\delta\mathbf{x}_b + \mathbf{H}^\mathrm{T}\boldsymbol\lambda`);
        the driver sets the next outer loop's ``b_inverse_dxb`` to
        ``b_inverse_dxb - b_inverse_dx``.  ``None`` for the square-root algorithms.
    v:
        The control vector :math:`\mathbf{v}` of PCG, PLanczos and MINRES (the driver sets
        the next ``vb`` to ``vb - v``); ``None`` for the others.
    hdx:
        :math:`\mathbf{H}\delta\mathbf{x}` with the linearised operator (tracked, no extra cost).
    iterations:
        Inner iterations done (``len(trace) - 1``).
    converged:
        True if the gradient-norm criterion was met (or the Krylov space was exhausted,
        i.e. the solution is exact) before ``ninner`` iterations ran out.
    trace:
        One :class:`IterationRecord` per iteration, iteration 0 first.
    diagnostics:
        Online adjoint tests run before iterating (:class:`AdjointTestResult`), if any.
    """

    algorithm: str
    dx: np.ndarray
    b_inverse_dx: np.ndarray | None
    v: np.ndarray | None
    hdx: np.ndarray
    iterations: int
    converged: bool
    trace: list[IterationRecord] = field(default_factory=list)
    diagnostics: list[AdjointTestResult] = field(default_factory=list)

    @property
    def j(self) -> float:
        """Final :math:`J`."""
        return self.trace[-1].j

    @property
    def jb(self) -> float:
        r"""Final :math:`J_b`."""
        return self.trace[-1].jb

    @property
    def jo(self) -> float:
        r"""Final :math:`J_o`."""
        return self.trace[-1].jo

    def trace_as_dicts(self) -> list[dict[str, float | int]]:
        """The trace as a list of :meth:`IterationRecord.as_dict` dictionaries."""
        return [rec.as_dict() for rec in self.trace]


# ----------------------------------------------------------------------------------------
# Internal linear problem: the DR algorithms see the problem itself, the square-root ones
# the transformed problem in v (B -> I, H -> HV, dxb and B^-1 dxb -> vb).
# ----------------------------------------------------------------------------------------
def _apply(func: Callable[[np.ndarray], np.ndarray], x: np.ndarray, size: int, name: str) -> np.ndarray:
    """``func(x)`` as a fresh 1-D float64 array of ``size`` elements."""
    out = np.array(func(x), dtype=np.float64)
    if out.shape != (size,):
        raise ValueError(f"QuadraticProblem.{name} returned an array of shape {out.shape}, expected ({size},)")
    return out


class _Linear:
    """The operators and vectors one of the generic cores works with."""

    def __init__(self, problem: QuadraticProblem, sqrt: bool):
        self.problem = problem
        self.sqrt = sqrt
        self.p = problem.p
        self.d = problem.d
        if sqrt:
            assert problem.vb is not None and problem.ctl_size is not None
            self.n = problem.ctl_size
            self.dxb = problem.vb
            self.binv_dxb = problem.vb
        else:
            self.n = problem.n
            self.dxb = problem.dxb
            self.binv_dxb = problem.b_inverse_dxb

    @property
    def identity_b(self) -> bool:
        return self.sqrt

    def B(self, x: np.ndarray) -> np.ndarray:
        if self.sqrt:
            return x.copy()
        return _apply(self.problem.b_multiply, x, self.n, "b_multiply")

    def H(self, x: np.ndarray) -> np.ndarray:
        pb = self.problem
        if self.sqrt:
            x = _apply(pb.b_sqrt, x, pb.n, "b_sqrt")  # type: ignore[arg-type]
        return _apply(pb.h, x, self.p, "h")

    def Ht(self, y: np.ndarray) -> np.ndarray:
        pb = self.problem
        x = _apply(pb.h_ad, y, pb.n, "h_ad")
        if self.sqrt:
            x = _apply(pb.b_sqrt_ad, x, self.n, "b_sqrt_ad")  # type: ignore[arg-type]
        return x

    def Rinv(self, y: np.ndarray) -> np.ndarray:
        return _apply(self.problem.r_inverse, y, self.p, "r_inverse")


class _Trace:
    """Records iterations, checks the stopping criterion."""

    def __init__(self, algorithm: str, ninner: int, tol: float,
                 callback: Callable[[IterationRecord], None] | None):
        self.algorithm = algorithm
        self.ninner = ninner
        self.tol = tol
        self.callback = callback
        self.records: list[IterationRecord] = []
        self.g0 = 0.0

    def record(self, k: int, jb: float, jo: float, gnorm: float) -> bool:
        """Append iteration ``k``; True when the criterion is met (stop)."""
        if k == 0:
            self.g0 = gnorm
        reduction = gnorm / self.g0 if self.g0 > 0 else 0.0
        rec = IterationRecord(k, jb + jo, jb, jo, gnorm, reduction)
        if not all(math.isfinite(v) for v in (rec.j, rec.gradient_norm)):
            raise NumericalError(f"{self.algorithm}: non-finite cost or gradient at inner iteration {k} "
                                 f"(J = {rec.j}, gradient norm = {rec.gradient_norm})")
        self.records.append(rec)
        logger.debug("%s iteration %d: J = %.16e Jb = %.16e Jo = %.16e gradient reduction = %.6e",
                     self.algorithm, k, rec.j, jb, jo, reduction)
        if self.callback is not None:
            self.callback(rec)
        return gnorm == 0.0 or reduction < self.tol

    def b_dot(self, k: int, r: np.ndarray, z: np.ndarray) -> float:
        """``r . z`` for ``z = B r`` (or ``F r``): an error if clearly negative, else clipped at 0."""
        rz = float(np.dot(r, z))
        if rz < 0.0 and -rz > 1e-10 * float(np.linalg.norm(r)) * float(np.linalg.norm(z)):
            raise self.indefinite(k, f"r^T B r = {rz:.3e} < 0")
        return max(rz, 0.0)

    def indefinite(self, k: int, what: str) -> NumericalError:
        return NumericalError(
            f"{self.algorithm}: the Hessian is not positive definite at inner iteration {k} ({what}); "
            "check that B and R^-1 are symmetric positive definite and that h_ad is the adjoint of h")


def _jb(lin: _Linear, x: np.ndarray, bx: np.ndarray) -> float:
    return 0.5 * float(np.dot(x - lin.dxb, bx - lin.binv_dxb))


def _jo(lin: _Linear, hx: np.ndarray, rhx: np.ndarray, rd: np.ndarray) -> float:
    return 0.5 * float(np.dot(hx - lin.d, rhx - rd))


# ----------------------------------------------------------------------------------------
# Cores
# ----------------------------------------------------------------------------------------
def _cg(lin: _Linear, trace: _Trace, polak_ribiere: bool):
    """Derber–Rosati B-preconditioned CG (PCG when B is the identity)."""
    n, p = lin.n, lin.p
    rd = lin.Rinv(lin.d)
    x, bx = np.zeros(n), np.zeros(n)
    hx, rhx = np.zeros(p), np.zeros(p)
    r = lin.binv_dxb + lin.Ht(rd)  # minus the gradient at 0
    z = lin.B(r)
    rz = trace.b_dot(0, r, z)
    converged = trace.record(0, _jb(lin, x, bx), _jo(lin, hx, rhx, rd), math.sqrt(rz))
    pdir, qdir = z.copy(), r.copy()  # p and q = B^-1 p
    k = 0
    while not converged and k < trace.ninner:
        k += 1
        hp = lin.H(pdir)
        rhp = lin.Rinv(hp)
        ap = qdir + lin.Ht(rhp)
        pap = float(np.dot(pdir, ap))
        if not pap > 0.0:
            if trace.records[-1].gradient_norm_reduction < 1e-10:  # rounding-level residual: done
                k -= 1
                converged = True
                break
            raise trace.indefinite(k, f"p^T A p = {pap:.3e}")
        alpha = rz / pap
        x += alpha * pdir
        bx += alpha * qdir
        hx += alpha * hp
        rhx += alpha * rhp
        r -= alpha * ap
        z_old = z
        z = lin.B(r)
        rz_new = trace.b_dot(k, r, z)
        converged = trace.record(k, _jb(lin, x, bx), _jo(lin, hx, rhx, rd), math.sqrt(rz_new))
        if converged:
            break
        if polak_ribiere:
            beta = (rz_new - float(np.dot(r, z_old))) / rz
        else:
            beta = rz_new / rz
        pdir = z + beta * pdir
        qdir = r + beta * qdir
        rz = rz_new
    return x, bx, hx, k, converged


def _lanczos(lin: _Linear, trace: _Trace):
    """B-preconditioned Lanczos in the B^-1 metric with full re-orthogonalisation."""
    n, p = lin.n, lin.p
    rd = lin.Rinv(lin.d)
    r0 = lin.binv_dxb + lin.Ht(rd)
    z0 = lin.B(r0)
    beta0 = math.sqrt(trace.b_dot(0, r0, z0))
    x, bx, hx = np.zeros(n), np.zeros(n), np.zeros(p)
    converged = trace.record(0, _jb(lin, x, bx), _jo(lin, hx, np.zeros(p), rd), beta0)
    if converged:
        return x, bx, hx, 0, True
    kmax = min(trace.ninner, n)  # the Krylov space has at most n dimensions
    Q = np.empty((kmax, n))  # B^-1-orthonormal primal vectors q_j
    T = Q if lin.identity_b else np.empty((kmax, n))  # duals t_j = B^-1 q_j
    HQ = np.empty((kmax, p))
    RHQ = np.empty((kmax, p))
    Q[0] = z0 / beta0
    if T is not Q:
        T[0] = r0 / beta0
    alphas: list[float] = []
    betas: list[float] = []  # betas[j] couples vectors j and j+1
    scale = 0.0
    k = 0
    while k < kmax:
        j = k
        k += 1
        HQ[j] = lin.H(Q[j])
        RHQ[j] = lin.Rinv(HQ[j])
        w = T[j] + lin.Ht(RHQ[j])  # A q_j, a dual vector
        if j > 0:
            w -= betas[j - 1] * T[j - 1]
        alpha = float(np.dot(w, Q[j]))
        if not alpha > 0.0:
            raise trace.indefinite(k, f"q^T A q = {alpha:.3e}")
        w -= alpha * T[j]
        for _ in range(2):  # full re-orthogonalisation in the B^-1 metric
            w -= (Q[:k] @ w) @ T[:k]
        alphas.append(alpha)
        wp = lin.B(w)
        beta = math.sqrt(trace.b_dot(k, w, wp))
        scale = max(scale, alpha, beta)
        # Iterate: T_k s = beta0 e1.
        ab = np.zeros((2, k))
        ab[0, 1:] = betas
        ab[1, :] = alphas
        rhs = np.zeros(k)
        rhs[0] = beta0
        try:  # (scipy's banded solver rejects a 1 x 1 system)
            s = rhs / alphas[0] if k == 1 else scipy.linalg.solveh_banded(ab, rhs)
        except np.linalg.LinAlgError:
            raise trace.indefinite(k, "the Lanczos tridiagonal matrix is not positive definite") from None
        x = s @ Q[:k]
        bx = x if T is Q else s @ T[:k]
        hx = s @ HQ[:k]
        rhx = s @ RHQ[:k]
        converged = trace.record(k, _jb(lin, x, bx), _jo(lin, hx, rhx, rd), beta * abs(float(s[-1])))
        if beta <= _BREAKDOWN * scale or k == n:  # invariant subspace: the iterate is the solution
            converged = True
        if converged or k == kmax:
            break
        betas.append(beta)
        Q[k] = wp / beta
        if T is not Q:
            T[k] = w / beta
    return x, bx, hx, k, converged


def _minres(lin: _Linear, trace: _Trace):
    """Paige–Saunders MINRES, preconditioned by B with dual vectors (plain when B = I)."""
    n, p = lin.n, lin.p
    eps = np.finfo(np.float64).eps
    rd = lin.Rinv(lin.d)
    r1 = lin.binv_dxb + lin.Ht(rd)  # dual residual at 0
    y = lin.B(r1)
    beta1 = math.sqrt(trace.b_dot(0, r1, y))
    x, bx, hx, rhx = np.zeros(n), np.zeros(n), np.zeros(p), np.zeros(p)
    converged = trace.record(0, _jb(lin, x, bx), _jo(lin, hx, rhx, rd), beta1)
    # Directions w_k and their images B^-1 w, H w, R^-1 H w (two previous ones kept).
    w, w2 = np.zeros(n), np.zeros(n)
    bw, bw2 = np.zeros(n), np.zeros(n)
    hw, hw2 = np.zeros(p), np.zeros(p)
    rhw, rhw2 = np.zeros(p), np.zeros(p)
    oldb, beta, dbar, epsln, phibar = 0.0, beta1, 0.0, 0.0, beta1
    cs, sn = -1.0, 0.0
    r2 = r1
    scale = 0.0
    k = 0
    while not converged and k < trace.ninner:
        k += 1
        s = 1.0 / beta
        u = s * y  # primal Lanczos vector
        tu = s * r2  # its dual, B^-1 u
        hu = lin.H(u)
        rhu = lin.Rinv(hu)
        y = tu + lin.Ht(rhu)  # A u
        if k >= 2:
            y -= (beta / oldb) * r1
        alfa = float(np.dot(u, y))
        if not alfa > 0.0:  # u^T A u: MINRES would run on, to a saddle point
            raise trace.indefinite(k, f"u^T A u = {alfa:.3e}")
        y -= (alfa / beta) * r2
        r1, r2 = r2, y
        y = lin.B(r2)
        oldb = beta
        beta = math.sqrt(trace.b_dot(k, r2, y))
        scale = max(scale, abs(alfa), beta)
        oldeps = epsln
        delta = cs * dbar + sn * alfa
        gbar = sn * dbar - cs * alfa
        epsln = sn * beta
        dbar = -cs * beta
        gamma = max(math.hypot(gbar, beta), eps)
        cs, sn = gbar / gamma, beta / gamma
        phi = cs * phibar
        phibar = sn * phibar
        w1, w2 = w2, w
        w = (u - oldeps * w1 - delta * w2) / gamma
        bw1, bw2 = bw2, bw
        bw = (tu - oldeps * bw1 - delta * bw2) / gamma
        hw1, hw2 = hw2, hw
        hw = (hu - oldeps * hw1 - delta * hw2) / gamma
        rhw1, rhw2 = rhw2, rhw
        rhw = (rhu - oldeps * rhw1 - delta * rhw2) / gamma
        x += phi * w
        bx += phi * bw
        hx += phi * hw
        rhx += phi * rhw
        converged = trace.record(k, _jb(lin, x, bx), _jo(lin, hx, rhx, rd), abs(phibar))
        if beta <= _BREAKDOWN * scale:
            converged = True
    return x, bx, hx, k, converged


def _rpcg(problem: QuadraticProblem, trace: _Trace):
    """Restricted PCG in observation space, started at dxb."""
    n, p = problem.n, problem.p
    lin = _Linear(problem, sqrt=False)
    hdxb = lin.H(problem.dxb)
    e = problem.d - hdxb
    rhat = lin.Rinv(e)
    rhat0 = rhat.copy()
    lam, flam, rflam = np.zeros(p), np.zeros(p), np.zeros(p)  # lambda, F lambda, R^-1 F lambda
    x = problem.dxb.copy()
    htlam = np.zeros(n)  # H^T lambda = B^-1 (dx - dxb)
    htr = lin.Ht(rhat)
    bhtr = lin.B(htr)
    fr = lin.H(bhtr)
    rz = trace.b_dot(0, rhat, fr)

    def jb_jo() -> tuple[float, float]:
        return 0.5 * float(np.dot(lam, flam)), 0.5 * float(np.dot(flam - e, rflam - rhat0))

    converged = trace.record(0, *jb_jo(), math.sqrt(rz))
    phat, fp, bhtp, htp = rhat.copy(), fr, bhtr, htr
    k = 0
    while not converged and k < trace.ninner:
        k += 1
        rfp = lin.Rinv(fp)
        apv = phat + rfp
        denom = float(np.dot(fp, apv))
        if not denom > 0.0:
            if trace.records[-1].gradient_norm_reduction < 1e-10:
                k -= 1
                converged = True
                break
            raise trace.indefinite(k, f"(F p)^T (p + R^-1 F p) = {denom:.3e}")
        alpha = rz / denom
        lam += alpha * phat
        flam += alpha * fp
        rflam += alpha * rfp
        x += alpha * bhtp
        htlam += alpha * htp
        rhat -= alpha * apv
        htr = lin.Ht(rhat)
        bhtr = lin.B(htr)
        fr = lin.H(bhtr)
        rz_new = trace.b_dot(k, rhat, fr)
        converged = trace.record(k, *jb_jo(), math.sqrt(rz_new))
        if converged:
            break
        beta = rz_new / rz
        phat = rhat + beta * phat
        fp = fr + beta * fp
        bhtp = bhtr + beta * bhtp
        htp = htr + beta * htp
        rz = rz_new
    return x, problem.b_inverse_dxb + htlam, hdxb + flam, k, converged


#: Relative agreement asked of ``h_rows`` with ``h`` on the first column (the same sums in
#: another order: rounding, far above it a plugin whose linear operators mix the batch axis).
_BATCH_TOLERANCE = 1e-10


def _h_columns(problem: QuadraticProblem, lin: _Linear, L: np.ndarray) -> np.ndarray:
    """:math:`\\mathbf{G} = \\mathbf{H}\\mathbf{L}`, ``(p, r)``: one ``h_rows`` call when the problem has
    it and it agrees with ``h`` on the first column (checked unless ``h_rows_checked``; a passed check sets
    it), else ``h`` column by column."""
    p, r = lin.p, L.shape[1]
    if problem.h_rows is not None and r > 0:
        try:
            G = np.array(problem.h_rows(L.T), dtype=np.float64).T
        except (ValueError, IndexError) as exc:  # numpy's broadcasting errors: operators without batch axes
            logger.warning("DirectSolve: the batched H (h_rows) failed (%s); applying H column by column", exc)
        else:
            if G.shape != (p, r):
                raise ValueError(f"QuadraticProblem.h_rows returned shape {G.T.shape}, expected ({r}, {p})")
            if problem.h_rows_checked:
                return G
            first = lin.H(np.ascontiguousarray(L[:, 0]))
            error = float(np.linalg.norm(G[:, 0] - first)) / max(float(np.linalg.norm(first)), 1e-300)
            if error <= _BATCH_TOLERANCE:
                problem.h_rows_checked = True
                return G
            logger.warning("DirectSolve: the batched H (h_rows) differs from H on a single vector (relative "
                           "%.3e); applying H column by column", error)
    G = np.empty((p, r))
    for j in range(r):
        G[:, j] = lin.H(np.ascontiguousarray(L[:, j]))
    return G


def _r_inverse_columns(problem: QuadraticProblem, lin: _Linear, G: np.ndarray) -> np.ndarray:
    r""":math:`\mathbf{R}^{-1}\mathbf{G}`: one product with the diagonal of :math:`\mathbf{R}^{-1}` when
    the problem has it, else ``r_inverse`` column by column."""
    if problem.r_inverse_diagonal is not None:
        return G * problem.r_inverse_diagonal[:, None]
    RG = np.empty_like(G)
    for j in range(G.shape[1]):
        RG[:, j] = lin.Rinv(np.ascontiguousarray(G[:, j]))
    return RG


def _control_hessian(G: np.ndarray, RG: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, bool]]:
    r""":math:`\mathbf{S} = \mathbf{I} + \mathbf{G}^\mathrm{T}\mathbf{R}^{-1}\mathbf{G}` (symmetrised) and its
    lower Cholesky factor; raises ``numpy.linalg.LinAlgError`` or ``ValueError`` if S is not positive definite."""
    S = G.T @ RG
    S = 0.5 * (S + S.T)
    S[np.diag_indices_from(S)] += 1.0
    return S, scipy.linalg.cho_factor(S, lower=True, check_finite=True)


def _dense_factor(problem: QuadraticProblem, lin: _Linear) -> DenseCovariance:
    if problem.b_dense is not None:
        return problem.b_dense
    return DenseCovariance.from_operator(lambda x: _apply(problem.b_multiply, x, lin.n, "b_multiply"), lin.n)


def _direct(problem: QuadraticProblem, trace: _Trace
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, bool]:
    """The exact minimiser by a Cholesky solve in the control space of B = L L^T."""
    lin = _Linear(problem, sqrt=False)
    n, p = lin.n, lin.p
    dense = _dense_factor(problem, lin)
    L = dense.factor  # (n, r)
    rd = lin.Rinv(lin.d)
    g = L.T @ (lin.binv_dxb + lin.Ht(rd))  # L^T times minus the gradient at 0
    x, bx, hx = np.zeros(n), np.zeros(n), np.zeros(p)
    g0 = float(np.linalg.norm(g))
    trace.record(0, _jb(lin, x, bx), _jo(lin, hx, np.zeros(p), rd), g0)
    if g0 == 0.0:  # already at the minimum
        return x, bx, hx, 0, True
    G = _h_columns(problem, lin, L)
    RG = _r_inverse_columns(problem, lin, G)
    try:
        S, chol = _control_hessian(G, RG)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise trace.indefinite(1, f"Cholesky factorisation of I + G^T R^-1 G failed: {exc}") from None
    v = scipy.linalg.cho_solve(chol, g)
    x, bx, hx = L @ v, dense.dual_factor @ v, G @ v
    gnorm = float(np.linalg.norm(S @ v - g))
    trace.record(1, _jb(lin, x, bx), _jo(lin, hx, RG @ v, rd), gnorm)
    return x, bx, hx, 1, True


def exact_gain(problem: QuadraticProblem) -> np.ndarray:
    r"""The gain :math:`\mathbf{K}` (``(n, p)``) of the first outer loop of ``problem``, in the form
    ``DirectSolve`` uses:

    .. math::

        \mathbf{K} = \mathbf{L}\,(\mathbf{I} + \mathbf{G}^\mathrm{T}\mathbf{R}^{-1}\mathbf{G})^{-1}
        \mathbf{G}^\mathrm{T}\mathbf{R}^{-1}
        = \mathbf{B}\mathbf{H}^\mathrm{T}(\mathbf{H}\mathbf{B}\mathbf{H}^\mathrm{T} + \mathbf{R})^{-1},
        \qquad \mathbf{B} = \mathbf{L}\mathbf{L}^\mathrm{T},\ \mathbf{G} = \mathbf{H}\mathbf{L}.

    With :math:`\delta\mathbf{x}_b = 0` (the first outer loop) ``DirectSolve``'s increment is
    :math:`\mathbf{K}\mathbf{d}` for the innovation :math:`\mathbf{d}` of the problem (the same
    factorisation; the products in another order, so equal to rounding).  A cycle whose
    :math:`\mathbf{H}`, :math:`\mathbf{R}` and :math:`\mathbf{B}` do not change reuses it
    (:mod:`pyoops.ensemble.static_gain`).  ``problem.d`` and ``dxb`` are not read.
    """
    lin = _Linear(problem, sqrt=False)
    L = _dense_factor(problem, lin).factor
    G = _h_columns(problem, lin, L)
    RG = _r_inverse_columns(problem, lin, G)
    try:
        _, chol = _control_hessian(G, RG)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise ValueError(f"exact gain: Cholesky factorisation of I + G^T R^-1 G failed: {exc}") from None
    return L @ scipy.linalg.cho_solve(chol, np.ascontiguousarray(RG.T))


# ----------------------------------------------------------------------------------------
# Diagnostics and entry point
# ----------------------------------------------------------------------------------------
def _relative(a: float, b: float) -> float:
    scale = max(abs(a), abs(b))
    return abs(a - b) / scale if scale > 0 else 0.0


def adjoint_tests(problem: QuadraticProblem, tolerance: float = 1e-10, seed: int = 0,
                  b_symmetry: bool = True) -> list[AdjointTestResult]:
    r"""Online adjoint tests of the operators of ``problem`` with random Gaussian vectors.

    Checks :math:`\langle \mathbf{H}\mathbf{x}, \mathbf{y}\rangle = \langle \mathbf{x},
    \mathbf{H}^\mathrm{T}\mathbf{y}\rangle`, :math:`\langle \mathbf{V}\mathbf{v}, \mathbf{x}\rangle
    = \langle \mathbf{v}, \mathbf{V}^\mathrm{T}\mathbf{x}\rangle` when the problem has
    :math:`\mathbf{B}^{1/2} = \mathbf{V}`, and (with ``b_symmetry``)
    :math:`\langle \mathbf{B}\mathbf{x}, \mathbf{x}'\rangle = \langle \mathbf{x}, \mathbf{B}\mathbf{x}'\rangle`.
    Results are logged (a warning for each failure) and returned; nothing is raised.

    Parameters
    ----------
    problem:
        The problem whose operators are tested.
    tolerance:
        Relative tolerance of each test.
    seed:
        Seed of the random vectors.
    b_symmetry:
        Also test the symmetry of :math:`\mathbf{B}` (two applications of ``b_multiply``).

    Returns
    -------
    list of AdjointTestResult
    """
    rng = np.random.default_rng(seed)
    n, p = problem.n, problem.p
    results = []
    x = rng.standard_normal(n)
    y = rng.standard_normal(p)
    lhs = float(np.dot(_apply(problem.h, x, p, "h"), y))
    rhs = float(np.dot(x, _apply(problem.h_ad, y, n, "h_ad")))
    results.append(AdjointTestResult("H", lhs, rhs, _relative(lhs, rhs), tolerance))
    if problem.b_sqrt is not None and problem.b_sqrt_ad is not None and problem.ctl_size is not None:
        v = rng.standard_normal(problem.ctl_size)
        x2 = rng.standard_normal(n)
        lhs = float(np.dot(_apply(problem.b_sqrt, v, n, "b_sqrt"), x2))
        rhs = float(np.dot(v, _apply(problem.b_sqrt_ad, x2, problem.ctl_size, "b_sqrt_ad")))
        results.append(AdjointTestResult("B^1/2", lhs, rhs, _relative(lhs, rhs), tolerance))
    if b_symmetry:
        x1, x2 = rng.standard_normal(n), rng.standard_normal(n)
        lhs = float(np.dot(_apply(problem.b_multiply, x1, n, "b_multiply"), x2))
        rhs = float(np.dot(x1, _apply(problem.b_multiply, x2, n, "b_multiply")))
        results.append(AdjointTestResult("B", lhs, rhs, _relative(lhs, rhs), tolerance))
    for res in results:
        (logger.info if res.passed else logger.warning)("%s", res)
    return results


def _check_algorithm(algorithm: object) -> str:
    if isinstance(algorithm, str) and algorithm in ALGORITHMS:
        return algorithm
    hint = ""
    if isinstance(algorithm, str):
        close = difflib.get_close_matches(algorithm, ALGORITHMS, n=1, cutoff=0.6)
        if not close:
            close = [a for a in ALGORITHMS if a.lower() == algorithm.lower()]
        if close:
            hint = f" (did you mean {close[0]}?)"
    raise ValueError(f"unknown minimizer algorithm {algorithm!r}{hint}; known: {', '.join(ALGORITHMS)}")


def minimize(problem: QuadraticProblem, algorithm: str, ninner: int, gradient_norm_reduction: float,
             online_diagnostics: Any = None,
             callback: Callable[[IterationRecord], None] | None = None) -> MinimizerResult:
    r"""Minimise the quadratic cost of ``problem`` with one of :data:`ALGORITHMS`.

    DRPCG, DRIPCG, DRPLanczos, PCG, PLanczos and MINRES start from
    :math:`\delta\mathbf{x} = 0` (:math:`\mathbf{v} = 0`), RPCG from
    :math:`\delta\mathbf{x} = \delta\mathbf{x}_b`.  Iteration stops after ``ninner``
    iterations, when the gradient-norm reduction drops below ``gradient_norm_reduction``,
    or when the Krylov space is exhausted.

    Parameters
    ----------
    problem:
        The quadratic problem of this outer loop.
    algorithm:
        ``DRPCG``, ``DRIPCG``, ``DRPLanczos``, ``PCG``, ``PLanczos``, ``RPCG``, ``MINRES`` or
        ``DirectSolve`` (the exact solution of a problem with :math:`n \le`
        :data:`DIRECT_MAX_SIZE` in one step; see the module documentation).  PCG, PLanczos and MINRES need
        :attr:`~pyoops.assimilation.problem.QuadraticProblem.b_sqrt`.
    ninner:
        Maximum number of inner iterations, at least 1.
    gradient_norm_reduction:
        Stop once :math:`\|\nabla J_k\|_\mathbf{B} / \|\nabla J_0\|_\mathbf{B}` is below this
        (0 runs all ``ninner`` iterations unless the solution is exact).
    online_diagnostics:
        Checks run once before iterating: anything :meth:`OnlineDiagnostics.coerce`
        accepts, e.g. ``True`` or ``{"online adj test": True}`` for :func:`adjoint_tests`.
    callback:
        Called with each :class:`IterationRecord` as it is made.

    Returns
    -------
    MinimizerResult

    Raises
    ------
    ValueError
        For an unknown algorithm (the message lists the known ones), ``ninner`` < 1, a
        negative or non-finite ``gradient_norm_reduction``, a square-root algorithm on a
        problem without :math:`\mathbf{B}^{1/2}`, or an operator returning the wrong size.
    pyoops.util.errors.NumericalError
        If the cost becomes non-finite or the Hessian is found not positive definite.
    """
    algorithm = _check_algorithm(algorithm)
    if isinstance(ninner, bool) or not isinstance(ninner, (int, np.integer)) or ninner < 1:
        raise ValueError(f"ninner must be a positive integer, got {ninner!r}")
    ninner = int(ninner)
    try:
        tol = float(gradient_norm_reduction)
    except (TypeError, ValueError):
        raise ValueError(f"gradient norm reduction must be a number, got {gradient_norm_reduction!r}") from None
    if not (math.isfinite(tol) and tol >= 0.0):
        raise ValueError(f"gradient norm reduction must be finite and >= 0, got {gradient_norm_reduction!r}")
    sqrt = algorithm in SQRT_ALGORITHMS
    if algorithm == "DirectSolve" and problem.n > DIRECT_MAX_SIZE:
        raise ValueError(f"minimizer DirectSolve forms dense n x n matrices and accepts n <= {DIRECT_MAX_SIZE}; "
                         f"this problem has n = {problem.n}: use an iterative minimizer such as DRPCG")
    if sqrt and not problem.has_sqrt:
        raise ValueError(f"minimizer {algorithm} works on the control variable v with dx = B^1/2 v and needs "
                         "the square root of B (B^1/2), which this background error covariance does not "
                         "provide; use DRPCG, DRIPCG, DRPLanczos or RPCG")
    diag = OnlineDiagnostics.coerce(online_diagnostics)
    diagnostics = (adjoint_tests(problem, diag.tolerance, diag.seed, b_symmetry=not sqrt)
                   if diag.adjoint_test else [])

    trace = _Trace(algorithm, ninner, tol, callback)
    lin = _Linear(problem, sqrt=sqrt)
    v: np.ndarray | None = None
    b_inverse_dx: np.ndarray | None
    if algorithm == "RPCG":
        dx, b_inverse_dx, hdx, k, converged = _rpcg(problem, trace)
    elif algorithm == "DirectSolve":
        dx, b_inverse_dx, hdx, k, converged = _direct(problem, trace)
    else:
        if algorithm in ("DRPCG", "DRIPCG", "PCG"):
            x, bx, hx, k, converged = _cg(lin, trace, polak_ribiere=algorithm == "DRIPCG")
        elif algorithm in ("DRPLanczos", "PLanczos"):
            x, bx, hx, k, converged = _lanczos(lin, trace)
        else:
            x, bx, hx, k, converged = _minres(lin, trace)
        hdx = hx
        if sqrt:
            v = x
            dx = _apply(problem.b_sqrt, v, problem.n, "b_sqrt")  # type: ignore[arg-type]
            b_inverse_dx = None
        else:
            dx, b_inverse_dx = x, bx
    final = trace.records[-1]
    logger.info("%s: %d inner iterations%s, J %.10e -> %.10e (Jb %.10e, Jo %.10e), gradient reduction %.3e",
                algorithm, k, "" if converged else " (not converged)", trace.records[0].j, final.j,
                final.jb, final.jo, final.gradient_norm_reduction)
    return MinimizerResult(algorithm=algorithm, dx=dx, b_inverse_dx=b_inverse_dx, v=v, hdx=hdx,
                           iterations=k, converged=converged, trace=trace.records, diagnostics=diagnostics)
