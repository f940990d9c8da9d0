r"""The quadratic inner-loop problem that every minimizer solves, on flat vectors.

One outer loop of incremental variational assimilation linearises the observation
operator (and the model) about a guess :math:`\mathbf{x}^g` and minimises

.. math::

   J(\delta\mathbf{x}) = \underbrace{\tfrac12 (\delta\mathbf{x} - \delta\mathbf{x}_b)^\mathrm{T}
   \mathbf{B}^{-1} (\delta\mathbf{x} - \delta\mathbf{x}_b)}_{J_b}
   + \underbrace{\tfrac12 (\mathbf{H}\delta\mathbf{x} - \mathbf{d})^\mathrm{T}
   \mathbf{R}^{-1} (\mathbf{H}\delta\mathbf{x} - \mathbf{d})}_{J_o},

with the innovation :math:`\mathbf{d} = \mathbf{y} - \mathcal{H}(\mathbf{x}^g)` and
:math:`\delta\mathbf{x}_b = \mathbf{x}_b - \mathbf{x}^g` (zero on the first outer loop,
when the guess is the background).  Its gradient and Hessian are

.. math::

   \nabla J = \mathbf{B}^{-1}(\delta\mathbf{x} - \delta\mathbf{x}_b)
   + \mathbf{H}^\mathrm{T}\mathbf{R}^{-1}(\mathbf{H}\delta\mathbf{x} - \mathbf{d}),
   \qquad
   \mathbf{A} = \mathbf{B}^{-1} + \mathbf{H}^\mathrm{T}\mathbf{R}^{-1}\mathbf{H},

and the minimiser is the BLUE increment
:math:`\delta\mathbf{x}_b + \mathbf{B}\mathbf{H}^\mathrm{T}
(\mathbf{H}\mathbf{B}\mathbf{H}^\mathrm{T} + \mathbf{R})^{-1}(\mathbf{d} - \mathbf{H}\delta\mathbf{x}_b)`.

:class:`QuadraticProblem` is the protocol between the cost functions (which flatten
Increments and ObsVectors into 1-D ``float64`` arrays) and the minimizers of
:mod:`pyoops.assimilation.minimizers`.  :math:`\mathbf{B}^{-1}` is never applied: the
driver carries :math:`\mathbf{B}^{-1}\delta\mathbf{x}_b` (or, for the algorithms on the
control-variable transform :math:`\delta\mathbf{x} = \mathbf{V}\mathbf{v}` with
:math:`\mathbf{B} = \mathbf{V}\mathbf{V}^\mathrm{T}`, the control vector
:math:`\mathbf{v}_b` with :math:`\mathbf{V}\mathbf{v}_b = \delta\mathbf{x}_b`) from one outer
loop to the next.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pyoops.util.errors import NumericalError

__all__ = ["DenseCovariance", "QuadraticProblem", "Operator"]

#: A linear operator on flat vectors; it takes a 1-D ``float64`` array, returns a new one.
Operator = Callable[[np.ndarray], np.ndarray]


def _vector(value: object, name: str, size: int | None = None) -> np.ndarray:
    """``value`` as a 1-D finite float64 array (a copy), with an optional size check."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"QuadraticProblem.{name} must be a 1-D array of numbers: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"QuadraticProblem.{name} must be a 1-D (flat) vector, got shape {arr.shape}")
    if size is not None and arr.size != size:
        raise ValueError(f"QuadraticProblem.{name} has {arr.size} elements, expected {size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"QuadraticProblem.{name} has non-finite values")
    return arr


@dataclass(frozen=True, eq=False)
class DenseCovariance:
    r"""An explicit :math:`n \times n` background-error covariance and its square-root factor.

    For the ``DirectSolve`` minimizer (:mod:`pyoops.assimilation.minimizers`): the symmetric
    eigen-decomposition :math:`\mathbf{B} = \mathbf{U}\boldsymbol\Lambda\mathbf{U}^\mathrm{T}`
    gives :math:`\mathbf{L} = \mathbf{U}_+\boldsymbol\Lambda_+^{1/2}` (:attr:`factor`,
    :math:`n \times r`) with :math:`\mathbf{L}\mathbf{L}^\mathrm{T} = \mathbf{B}`, keeping the
    :math:`r` eigenvalues above :math:`n\,\varepsilon\,\lambda_\max` (:math:`\varepsilon` the
    machine epsilon: below it an eigenvalue is rounding noise of the :math:`n`-term sums that
    made the matrix), so a semi-definite :math:`\mathbf{B}` (a pure ensemble) is factored on its
    range.  :attr:`dual_factor` :math:`\mathbf{U}_+\boldsymbol\Lambda_+^{-1/2}` maps a control
    vector :math:`\mathbf{v}` to a :math:`\mathbf{c}` with :math:`\mathbf{B}\mathbf{c} =
    \mathbf{L}\mathbf{v}` (the :math:`\mathbf{B}^{-1}\delta\mathbf{x}` the driver carries) and
    :math:`\mathbf{L}^\mathrm{T}\mathbf{c} = \mathbf{v}`.  Both are computed on first use and kept,
    so one instance can serve every analysis that shares the covariance.

    Attributes
    ----------
    matrix:
        :math:`\mathbf{B}`, symmetric positive (semi-)definite, ``(n, n)``.
    """

    matrix: np.ndarray

    @classmethod
    def from_operator(cls, b_multiply: Operator, n: int) -> DenseCovariance:
        """:math:`\\mathbf{B}` from ``b_multiply`` applied to the ``n`` unit vectors, symmetrised."""
        columns = np.empty((n, n))
        unit = np.zeros(n)
        for j in range(n):
            unit[j] = 1.0
            columns[:, j] = b_multiply(unit)
            unit[j] = 0.0
        return cls(0.5 * (columns + columns.T))

    @functools.cached_property
    def _eigen(self) -> tuple[np.ndarray, np.ndarray]:
        values, vectors = np.linalg.eigh(self.matrix)
        n = values.size
        top = float(values[-1]) if n else 0.0
        threshold = n * np.finfo(np.float64).eps * max(top, 0.0)
        if n and float(values[0]) < -max(threshold, 1e-300):
            raise NumericalError(f"the background error covariance is not positive semi-definite (eigenvalue "
                                 f"{float(values[0]):.3e}, largest {top:.3e})")
        keep = values > threshold
        return values[keep], vectors[:, keep]

    @functools.cached_property
    def factor(self) -> np.ndarray:
        r""":math:`\mathbf{L} = \mathbf{U}_+\boldsymbol\Lambda_+^{1/2}`, ``(n, r)``."""
        values, vectors = self._eigen
        return vectors * np.sqrt(values)

    @functools.cached_property
    def dual_factor(self) -> np.ndarray:
        r""":math:`\mathbf{U}_+\boldsymbol\Lambda_+^{-1/2}`, ``(n, r)``."""
        values, vectors = self._eigen
        return vectors / np.sqrt(values)


@dataclass(eq=False)
class QuadraticProblem:
    r"""The quadratic problem of one outer loop, as callables on flat ``float64`` vectors.

    Model-space (increment) vectors have :attr:`n` elements, observation-space vectors
    :attr:`p`, control vectors (:math:`\mathbf{v}`, only with a square root of
    :math:`\mathbf{B}`) :attr:`ctl_size`.  Operators receive a 1-D array they must not
    modify and return a 1-D array of the right size (a view or the argument itself is
    fine: the minimizers copy what they keep).  Every operator must be linear.

    Attributes
    ----------
    b_multiply:
        :math:`\delta\mathbf{x} \mapsto \mathbf{B}\,\delta\mathbf{x}`, the background-error
        covariance (symmetric positive definite, or semi-definite for a pure ensemble).
    h:
        :math:`\delta\mathbf{x} \mapsto \mathbf{H}\,\delta\mathbf{x}`, the observation
        operator linearised about the guess (for 4D-Var: the linear model followed by
        the linear observation operators, all obs times concatenated).
    h_ad:
        :math:`\delta\mathbf{y} \mapsto \mathbf{H}^\mathrm{T}\delta\mathbf{y}`, its adjoint.
    r_inverse:
        :math:`\delta\mathbf{y} \mapsto \mathbf{R}^{-1}\delta\mathbf{y}`.  Diagonal in
        practice (zero for observations rejected by QC), but only ever called.
    d:
        The innovation :math:`\mathbf{d} = \mathbf{y} - \mathcal{H}(\mathbf{x}^g)`,
        :attr:`p` elements.
    dxb:
        :math:`\delta\mathbf{x}_b = \mathbf{x}_b - \mathbf{x}^g`, :attr:`n` elements; zero on
        the first outer loop.
    b_inverse_dxb:
        :math:`\mathbf{B}^{-1}\delta\mathbf{x}_b`, carried by the driver across outer loops
        (after an outer loop with increment :math:`\delta\mathbf{x}`,
        :math:`\mathbf{B}^{-1}\delta\mathbf{x}_b \leftarrow \mathbf{B}^{-1}\delta\mathbf{x}_b
        - \mathbf{B}^{-1}\delta\mathbf{x}`, the latter from
        :attr:`MinimizerResult.b_inverse_dx <pyoops.assimilation.minimizers.MinimizerResult.b_inverse_dx>`).
        ``None`` (the default) means zero, right for the first outer loop.
    r_multiply:
        :math:`\delta\mathbf{y} \mapsto \mathbf{R}\,\delta\mathbf{y}`; optional, no
        minimizer here needs it.
    b_sqrt:
        :math:`\mathbf{v} \mapsto \mathbf{V}\mathbf{v}` with
        :math:`\mathbf{B} = \mathbf{V}\mathbf{V}^\mathrm{T}` (:math:`\mathbf{B}^{1/2}`), from
        control space (:attr:`ctl_size` elements) to model space; optional, needed by
        ``PCG``, ``PLanczos`` and ``MINRES``.
    b_sqrt_ad:
        :math:`\delta\mathbf{x} \mapsto \mathbf{V}^\mathrm{T}\delta\mathbf{x}`, required
        with :attr:`b_sqrt`.
    ctl_size:
        Number of control variables (columns of :math:`\mathbf{V}`; larger than
        :attr:`n` for an ensemble or hybrid B).  Required with :attr:`b_sqrt` unless
        :attr:`vb` is given.
    vb:
        Control vector :math:`\mathbf{v}_b` with :math:`\mathbf{V}\mathbf{v}_b =
        \delta\mathbf{x}_b`, carried across outer loops by the driver for the
        square-root algorithms (:math:`\mathbf{v}_b \leftarrow \mathbf{v}_b - \mathbf{v}`).
        ``None`` (the default) means zero, right for the first outer loop.
    b_inverse:
        :math:`\delta\mathbf{x} \mapsto \mathbf{B}^{-1}\delta\mathbf{x}`; optional and never
        called by a minimizer, only by :meth:`cost` and :meth:`gradient` when they are
        not given :math:`\mathbf{B}^{-1}\delta\mathbf{x}` (tests, small problems).
    b_dense:
        :math:`\mathbf{B}` as a :class:`DenseCovariance`; optional, read only by
        ``DirectSolve``, which otherwise applies :attr:`b_multiply` to the :attr:`n` unit
        vectors.  Give it to share one factorisation between problems with the same
        :math:`\mathbf{B}`.
    h_rows:
        :math:`\mathbf{X} \mapsto \mathbf{X}\mathbf{H}^\mathrm{T}`: :attr:`h` applied to every
        row of a ``(k, n)`` array, returning ``(k, p)``; optional, read only by
        ``DirectSolve`` (one batched call instead of :math:`k` calls of :attr:`h`).
    r_inverse_diagonal:
        The diagonal of a diagonal :math:`\mathbf{R}^{-1}` (:attr:`p` elements), when
        :attr:`r_inverse` is the product by it; optional, read only by ``DirectSolve`` (one
        product with the ``(p, k)`` matrix instead of :math:`k` calls of :attr:`r_inverse`).
    h_rows_checked:
        True when :attr:`h_rows` is known to apply :attr:`h` row by row (the caller checked it
        for operators of these classes): ``DirectSolve`` then skips its check, one :attr:`h`
        on the first row compared with the batched result, and sets it to True when that
        check passes.
    """

    b_multiply: Operator
    h: Operator
    h_ad: Operator
    r_inverse: Operator
    d: np.ndarray
    dxb: np.ndarray
    b_inverse_dxb: np.ndarray | None = None
    r_multiply: Operator | None = None
    b_sqrt: Operator | None = None
    b_sqrt_ad: Operator | None = None
    ctl_size: int | None = None
    vb: np.ndarray | None = None
    b_inverse: Operator | None = None
    b_dense: DenseCovariance | None = None
    h_rows: Callable[[np.ndarray], np.ndarray] | None = None
    r_inverse_diagonal: np.ndarray | None = None
    h_rows_checked: bool = False

    def __post_init__(self) -> None:
        for name in ("b_multiply", "h", "h_ad", "r_inverse"):
            if not callable(getattr(self, name)):
                raise ValueError(f"QuadraticProblem.{name} must be callable")
        for name in ("r_multiply", "b_sqrt", "b_sqrt_ad", "b_inverse", "h_rows"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ValueError(f"QuadraticProblem.{name} must be callable or None")
        self.d = _vector(self.d, "d")
        if self.r_inverse_diagonal is not None:
            self.r_inverse_diagonal = _vector(self.r_inverse_diagonal, "r_inverse_diagonal", self.d.size)
        self.dxb = _vector(self.dxb, "dxb")
        if self.b_dense is not None and np.shape(self.b_dense.matrix) != (self.dxb.size, self.dxb.size):
            raise ValueError(f"QuadraticProblem.b_dense has shape {np.shape(self.b_dense.matrix)}, expected "
                             f"({self.dxb.size}, {self.dxb.size})")
        if self.b_inverse_dxb is None:
            self.b_inverse_dxb = np.zeros_like(self.dxb)
        else:
            self.b_inverse_dxb = _vector(self.b_inverse_dxb, "b_inverse_dxb", self.dxb.size)
        if (self.b_sqrt is None) != (self.b_sqrt_ad is None):
            raise ValueError("QuadraticProblem: give both b_sqrt (B^1/2 = V) and b_sqrt_ad (V^T), or neither")
        if self.ctl_size is not None:
            if isinstance(self.ctl_size, bool) or int(self.ctl_size) != self.ctl_size or self.ctl_size <= 0:
                raise ValueError(f"QuadraticProblem.ctl_size must be a positive integer, got {self.ctl_size!r}")
            self.ctl_size = int(self.ctl_size)
        if self.vb is not None:
            self.vb = _vector(self.vb, "vb", self.ctl_size)
            if self.ctl_size is None:
                self.ctl_size = self.vb.size
        if self.b_sqrt is not None:
            if self.ctl_size is None:
                raise ValueError("QuadraticProblem: ctl_size (the number of control variables, columns of "
                                 "B^1/2) is required with b_sqrt")
            if self.vb is None:
                self.vb = np.zeros(self.ctl_size)

    # -- sizes -----------------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Size of a model-space (increment) vector."""
        return int(self.dxb.size)

    @property
    def p(self) -> int:
        """Size of an observation-space vector."""
        return int(self.d.size)

    @property
    def has_sqrt(self) -> bool:
        r"""Whether :math:`\mathbf{B}^{1/2}` (:attr:`b_sqrt`, :attr:`b_sqrt_ad`) is available."""
        return self.b_sqrt is not None

    # -- diagnostics -----------------------------------------------------------------------
    def cost(self, x: np.ndarray, b_inv_x: np.ndarray | None = None,
             hx: np.ndarray | None = None) -> tuple[float, float, float]:
        r"""The cost :math:`(J, J_b, J_o)` at the increment ``x``.

        .. math::

           J_b = \tfrac12 (\delta\mathbf{x} - \delta\mathbf{x}_b)^\mathrm{T}
           (\mathbf{B}^{-1}\delta\mathbf{x} - \mathbf{B}^{-1}\delta\mathbf{x}_b), \qquad
           J_o = \tfrac12 (\mathbf{H}\delta\mathbf{x} - \mathbf{d})^\mathrm{T}
           \mathbf{R}^{-1}(\mathbf{H}\delta\mathbf{x} - \mathbf{d}).

        Parameters
        ----------
        x:
            The increment :math:`\delta\mathbf{x}`.
        b_inv_x:
            :math:`\mathbf{B}^{-1}\delta\mathbf{x}` as tracked by a minimizer; when
            ``None``, :attr:`b_inverse` is applied (an error if there is none).
        hx:
            :math:`\mathbf{H}\delta\mathbf{x}`; when ``None``, :attr:`h` is applied.

        Returns
        -------
        tuple of float
            ``(J, Jb, Jo)`` with ``J = Jb + Jo``.
        """
        x = _vector(x, "cost(x)", self.n)
        b_inv_x = self._b_inverse_of(x, b_inv_x)
        hx = _vector(self.h(x) if hx is None else hx, "cost(hx)", self.p)
        jb = 0.5 * float(np.dot(x - self.dxb, b_inv_x - self.b_inverse_dxb))
        jo = self._jo(hx)
        return jb + jo, jb, jo

    def cost_control(self, v: np.ndarray, hv: np.ndarray | None = None) -> tuple[float, float, float]:
        r"""The cost :math:`(J, J_b, J_o)` at the control vector ``v`` (:math:`\delta\mathbf{x} = \mathbf{V}\mathbf{v}`).

        .. math::

           J_b = \tfrac12 (\mathbf{v} - \mathbf{v}_b)^\mathrm{T}(\mathbf{v} - \mathbf{v}_b), \qquad
           J_o = \tfrac12 (\mathbf{H}\mathbf{V}\mathbf{v} - \mathbf{d})^\mathrm{T}
           \mathbf{R}^{-1}(\mathbf{H}\mathbf{V}\mathbf{v} - \mathbf{d}).

        Parameters
        ----------
        v:
            The control vector (:attr:`ctl_size` elements).
        hv:
            :math:`\mathbf{H}\mathbf{V}\mathbf{v}`; when ``None``, computed with
            :attr:`b_sqrt` and :attr:`h`.

        Returns
        -------
        tuple of float
            ``(J, Jb, Jo)``.
        """
        if self.b_sqrt is None:
            raise ValueError("QuadraticProblem.cost_control needs the square root of B (b_sqrt)")
        v = _vector(v, "cost_control(v)", self.ctl_size)
        hv = _vector(self.h(self.b_sqrt(v)) if hv is None else hv, "cost_control(hv)", self.p)
        assert self.vb is not None
        jb = 0.5 * float(np.dot(v - self.vb, v - self.vb))
        jo = self._jo(hv)
        return jb + jo, jb, jo

    def gradient(self, x: np.ndarray, b_inv_x: np.ndarray | None = None,
                 hx: np.ndarray | None = None) -> np.ndarray:
        r"""The gradient :math:`\mathbf{B}^{-1}(\delta\mathbf{x} - \delta\mathbf{x}_b) +
        \mathbf{H}^\mathrm{T}\mathbf{R}^{-1}(\mathbf{H}\delta\mathbf{x} - \mathbf{d})` at ``x``.

        Parameters
        ----------
        x, b_inv_x, hx:
            As for :meth:`cost`.

        Returns
        -------
        numpy.ndarray
            The gradient, :attr:`n` elements.
        """
        x = _vector(x, "gradient(x)", self.n)
        b_inv_x = self._b_inverse_of(x, b_inv_x)
        hx = _vector(self.h(x) if hx is None else hx, "gradient(hx)", self.p)
        obs = _vector(self.h_ad(_vector(self.r_inverse(hx - self.d), "r_inverse(y)", self.p)), "h_ad(y)", self.n)
        return b_inv_x - self.b_inverse_dxb + obs

    def _b_inverse_of(self, x: np.ndarray, b_inv_x: np.ndarray | None) -> np.ndarray:
        if b_inv_x is not None:
            return _vector(b_inv_x, "b_inv_x", self.n)
        if self.b_inverse is None:
            raise ValueError("QuadraticProblem: B^-1 x is needed but neither b_inv_x nor b_inverse was given")
        return _vector(self.b_inverse(x), "b_inverse(x)", self.n)

    def _jo(self, hx: np.ndarray) -> float:
        misfit = hx - self.d
        return 0.5 * float(np.dot(misfit, _vector(self.r_inverse(misfit), "r_inverse(y)", self.p)))
