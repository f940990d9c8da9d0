"""Minimizers of the quadratic inner-loop problem (pyoops.assimilation.minimizers).

Dense matrices appear only here, to build the operators and the exact BLUE.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pytest

from pyoops.assimilation.minimizers import (
    ALGORITHMS,
    DIRECT_MAX_SIZE,
    ITERATIVE_ALGORITHMS,
    SQRT_ALGORITHMS,
    OnlineDiagnostics,
    _Linear,
    _minres,
    _Trace,
    adjoint_tests,
    exact_gain,
    minimize,
)
from pyoops.assimilation.problem import DenseCovariance, QuadraticProblem
from pyoops.util.errors import NumericalError

DR_FAMILY = ("DRPCG", "DRIPCG", "DRPLanczos")
CG_LANCZOS = ("DRPCG", "DRIPCG", "DRPLanczos", "PCG", "PLanczos", "RPCG")


def _forbidden(_x):
    raise AssertionError("a minimizer applied B^-1")


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300))


# ---------------------------------------------------------------------------------------
# The simplified 4-point Lorenz-96 3D-Var of REFERENCES.md
# ---------------------------------------------------------------------------------------
def _l96_problem() -> QuadraticProblem:
    xb = np.full(4, 3.0)
    y = np.array([5.0, 7.0, -9.0, -5.0])

    def ident(x):
        return x

    return QuadraticProblem(b_multiply=ident, h=ident, h_ad=ident, r_inverse=ident, r_multiply=ident,
                            b_sqrt=ident, b_sqrt_ad=ident, ctl_size=4, d=y - xb, dxb=np.zeros(4),
                            b_inverse=_forbidden)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_lorenz96_4point_3dvar(algorithm):
    res = minimize(_l96_problem(), algorithm, ninner=10, gradient_norm_reduction=1e-10)
    assert res.trace[0].j == pytest.approx(114.0, rel=1e-14)
    assert res.trace[0].jo == pytest.approx(114.0, rel=1e-14)
    assert res.trace[0].jb == 0.0
    assert res.j == pytest.approx(57.0, rel=1e-12)
    assert res.jb == pytest.approx(28.5, rel=1e-12)
    assert res.jo == pytest.approx(28.5, rel=1e-12)
    np.testing.assert_allclose(3.0 + res.dx, [4.0, 5.0, -3.0, -1.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.hdx, res.dx, rtol=0, atol=1e-12)
    assert res.converged and res.iterations == 1  # B A is a multiple of the identity
    assert len(res.trace) == res.iterations + 1


# ---------------------------------------------------------------------------------------
# Random linear-Gaussian problems
# ---------------------------------------------------------------------------------------
def _spd(rng, n, lo=0.5, hi=2.0):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (q * rng.uniform(lo, hi, n)) @ q.T


@dataclass
class Dense:
    B: np.ndarray
    V: np.ndarray
    H: np.ndarray
    R: np.ndarray
    d: np.ndarray
    dxb: np.ndarray
    vb: np.ndarray

    @property
    def blue(self) -> np.ndarray:
        B, H = self.B, self.H
        return self.dxb + B @ H.T @ np.linalg.solve(H @ B @ H.T + self.R, self.d - H @ self.dxb)

    def cost(self, dx: np.ndarray) -> float:
        e = dx - self.dxb
        m = self.H @ dx - self.d
        return 0.5 * e @ np.linalg.solve(self.B, e) + 0.5 * m @ np.linalg.solve(self.R, m)

    def gradient(self, dx: np.ndarray) -> np.ndarray:
        return np.linalg.solve(self.B, dx - self.dxb) + self.H.T @ np.linalg.solve(self.R, self.H @ dx - self.d)

    def problem(self, **changes) -> QuadraticProblem:
        B, V, H, R = self.B, self.V, self.H, self.R
        rinv = np.linalg.inv(R)
        kwargs = dict(
            b_multiply=lambda x: B @ x, h=lambda x: H @ x, h_ad=lambda y: H.T @ y,
            r_inverse=lambda y: rinv @ y, r_multiply=lambda y: R @ y,
            b_sqrt=lambda v: V @ v, b_sqrt_ad=lambda x: V.T @ x, ctl_size=V.shape[1],
            d=self.d, dxb=self.dxb, b_inverse_dxb=np.linalg.solve(B, self.dxb), vb=self.vb,
            b_inverse=_forbidden)
        kwargs.update(changes)
        return QuadraticProblem(**kwargs)


def make_dense(seed, n, p, r_kind="diagonal", sqrt_kind="cholesky", second_loop=False, ctl_factor=1):
    rng = np.random.default_rng(seed)
    if ctl_factor == 1:
        B = _spd(rng, n) * 1.7
        if sqrt_kind == "cholesky":
            V = np.linalg.cholesky(B)
        else:
            w, q = np.linalg.eigh(B)
            V = (q * np.sqrt(w)) @ q.T
    else:  # rectangular square root, as for an ensemble or hybrid B
        V = rng.standard_normal((n, ctl_factor * n)) / np.sqrt(ctl_factor * n) + np.eye(n, ctl_factor * n)
        B = V @ V.T
    H = rng.standard_normal((p, n)) / np.sqrt(n)
    R = np.diag(rng.uniform(0.5, 2.0, p)) if r_kind == "diagonal" else _spd(rng, p)
    d = rng.standard_normal(p) * 2.0
    if second_loop:
        vb = rng.standard_normal(V.shape[1])
        dxb = V @ vb
    else:
        vb = np.zeros(V.shape[1])
        dxb = np.zeros(n)
    return Dense(B, V, H, R, d, dxb, vb)


SHAPES = [(12, 5), (10, 10), (6, 15)]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("n,p", SHAPES)
@pytest.mark.parametrize("r_kind", ["diagonal", "full"])
@pytest.mark.parametrize("second_loop", [False, True])
def test_random_problem_gives_blue(algorithm, n, p, r_kind, second_loop):
    dense = make_dense(n * 100 + p, n, p, r_kind=r_kind, second_loop=second_loop,
                       sqrt_kind="cholesky" if p != n else "symmetric")
    pb = dense.problem()
    res = minimize(pb, algorithm, ninner=2 * max(n, p), gradient_norm_reduction=1e-14)
    blue = dense.blue
    assert _rel(res.dx, blue) <= 1e-8
    assert res.j == pytest.approx(dense.cost(blue), rel=1e-10)
    np.testing.assert_allclose(res.hdx, dense.H @ res.dx, rtol=0, atol=1e-9 * np.abs(res.hdx).max())
    if algorithm in SQRT_ALGORITHMS:
        assert res.b_inverse_dx is None
        assert _rel(dense.V @ res.v, res.dx) <= 1e-12
    else:
        assert res.v is None
        assert _rel(dense.B @ res.b_inverse_dx, res.dx) <= 1e-9
    assert res.converged


@pytest.mark.parametrize("algorithm", SQRT_ALGORITHMS)
@pytest.mark.parametrize("second_loop", [False, True])
def test_rectangular_square_root_gives_blue(algorithm, second_loop):
    dense = make_dense(7, 9, 6, r_kind="full", ctl_factor=3, second_loop=second_loop)
    res = minimize(dense.problem(), algorithm, ninner=40, gradient_norm_reduction=1e-14)
    assert res.v.shape == (27,)
    assert _rel(res.dx, dense.blue) <= 1e-8


def test_two_outer_loops_of_a_linear_problem_stay_at_the_blue():
    """The driver's bookkeeping (b_inverse_dxb -= b_inverse_dx, vb -= v) keeps a linear problem
    at its BLUE: the second outer loop starts at the minimum."""
    dense = make_dense(3, 8, 6, r_kind="full")
    blue = dense.blue
    for algorithm in ALGORITHMS:
        pb = dense.problem()
        first = minimize(pb, algorithm, ninner=20, gradient_norm_reduction=1e-14)
        # second outer loop: guess = xb + dx, so dxb' = dxb - dx and d' = d - H dx
        second_pb = dense.problem(
            d=dense.d - dense.H @ first.dx, dxb=dense.dxb - first.dx,
            b_inverse_dxb=(pb.b_inverse_dxb - first.b_inverse_dx) if first.b_inverse_dx is not None else None,
            vb=(pb.vb - first.v) if first.v is not None else None)
        second = minimize(second_pb, algorithm, ninner=20, gradient_norm_reduction=1e-14)
        assert _rel(first.dx, blue) <= 1e-8
        assert np.linalg.norm(second.dx) <= 1e-8 * np.linalg.norm(blue), algorithm
        assert second.j == pytest.approx(dense.cost(blue), rel=1e-10), algorithm


# ---------------------------------------------------------------------------------------
# Iterates, traces and stopping
# ---------------------------------------------------------------------------------------
def _js(res):
    return np.array([rec.j for rec in res.trace])


@pytest.mark.parametrize("second_loop", [False, True])
def test_equivalent_algorithms_have_the_same_iterates(second_loop):
    dense = make_dense(11, 20, 15, r_kind="full", second_loop=second_loop)
    runs = {a: minimize(dense.problem(), a, ninner=8, gradient_norm_reduction=0.0) for a in ITERATIVE_ALGORITHMS}
    reference = _js(runs["DRPCG"])
    assert len(reference) == 9
    # B-preconditioned CG = its Polak-Ribiere variant = B-preconditioned Lanczos, and the same
    # on the square-root control variable: equal J and gradient norm at every iteration.
    for algorithm in ("DRIPCG", "DRPLanczos", "PCG", "PLanczos"):
        np.testing.assert_allclose(_js(runs[algorithm]), reference, rtol=1e-10, atol=0, err_msg=algorithm)
        np.testing.assert_allclose([r.gradient_norm for r in runs[algorithm].trace],
                                   [r.gradient_norm for r in runs["DRPCG"].trace], rtol=1e-7, err_msg=algorithm)
    np.testing.assert_allclose(_js(runs["PLanczos"]), _js(runs["PCG"]), rtol=1e-10, atol=0)
    if not second_loop:  # RPCG starts at dxb = 0: DRPCG's iterates
        np.testing.assert_allclose(_js(runs["RPCG"]), reference, rtol=1e-10, atol=0)
    else:  # RPCG starts at dxb: not the same iterates, but the same minimum
        assert runs["RPCG"].trace[0].j == pytest.approx(dense.cost(dense.dxb), rel=1e-12)
        assert runs["RPCG"].trace[0].jb == 0.0
    # MINRES minimises another norm: a different path
    assert not np.allclose(_js(runs["MINRES"])[1:], reference[1:], rtol=1e-6)
    # every algorithm, run to convergence, gives the same final J
    final = {a: minimize(dense.problem(), a, ninner=60, gradient_norm_reduction=1e-14).j for a in ALGORITHMS}
    for algorithm, j in final.items():
        assert j == pytest.approx(final["DRPCG"], rel=1e-12), algorithm


@pytest.mark.parametrize("algorithm", ITERATIVE_ALGORITHMS)
def test_j_decreases_and_trace_is_the_true_cost(algorithm):
    dense = make_dense(5, 16, 12, r_kind="full", second_loop=True)
    res = minimize(dense.problem(), algorithm, ninner=10, gradient_norm_reduction=0.0)
    assert len(res.trace) == 11 and res.iterations == 10 and not res.converged
    assert [r.iteration for r in res.trace] == list(range(11))
    js = _js(res)
    assert np.all(np.diff(js) <= 1e-13 * js[0]), js  # monotone (MINRES too: A is positive definite)
    for rec in res.trace:
        assert rec.j == pytest.approx(rec.jb + rec.jo, rel=1e-15)
    # Each record is the cost of the iterate at that iteration: rerun with fewer iterations.
    for k in (1, 3, 10):
        part = res if k == 10 else minimize(dense.problem(), algorithm, ninner=k, gradient_norm_reduction=0.0)
        assert part.iterations == k
        rec = part.trace[-1]
        assert rec.j == pytest.approx(res.trace[k].j, rel=1e-12)
        e = part.dx - dense.dxb
        jb = 0.5 * e @ np.linalg.solve(dense.B, e)
        jo = dense.cost(part.dx) - jb
        assert rec.jb == pytest.approx(jb, rel=1e-9)
        assert rec.jo == pytest.approx(jo, rel=1e-9)
        g = dense.gradient(part.dx)
        assert rec.gradient_norm == pytest.approx(np.sqrt(g @ dense.B @ g), rel=1e-7)
    g0 = dense.gradient(dense.dxb if algorithm == "RPCG" else np.zeros(16))
    assert res.trace[0].gradient_norm == pytest.approx(np.sqrt(g0 @ dense.B @ g0), rel=1e-12)
    assert res.trace[0].gradient_norm_reduction == 1.0


@pytest.mark.parametrize("algorithm", ITERATIVE_ALGORITHMS)
def test_gradient_norm_reduction_stops_early(algorithm):
    dense = make_dense(21, 30, 25, r_kind="diagonal")
    seen = []
    res = minimize(dense.problem(), algorithm, ninner=50, gradient_norm_reduction=1e-3, callback=seen.append)
    reductions = [r.gradient_norm_reduction for r in res.trace]
    assert res.converged
    assert reductions[-1] < 1e-3
    assert all(r >= 1e-3 for r in reductions[:-1])
    assert 1 < res.iterations < 30
    assert len(res.trace) == res.iterations + 1
    assert seen == res.trace
    assert set(res.trace_as_dicts()[0]) == {
        "iteration", "J", "Jb", "Jo", "gradient norm", "gradient norm reduction"}


@pytest.mark.parametrize("algorithm", ["DRPLanczos", "PLanczos"])
def test_lanczos_reorthogonalisation_exhausts_the_krylov_space(algorithm):
    # Condition number ~1e6: without full re-orthogonalisation n iterations are far from
    # enough (DRPCG is still ~40% off); with it, the n-th iterate is the BLUE.
    n = 30
    dense = make_dense(3, n, n)
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((n, n)))
    dense.R = (q * np.geomspace(1e-6, 1.0, n)) @ q.T
    dense.H = np.eye(n)
    res = minimize(dense.problem(), algorithm, ninner=n + 5, gradient_norm_reduction=0.0)
    assert res.iterations == n and res.converged
    assert _rel(res.dx, dense.blue) <= 1e-8


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_already_at_the_minimum(algorithm):
    dense = make_dense(2, 5, 4)
    dense.d = np.zeros(4)
    res = minimize(dense.problem(), algorithm, ninner=5, gradient_norm_reduction=1e-6)
    assert res.iterations == 0 and res.converged and len(res.trace) == 1
    assert res.j == 0.0 and not np.any(res.dx)


# ---------------------------------------------------------------------------------------
# Cost of an iteration: one B, one H, one H^T; never B^-1
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ITERATIVE_ALGORITHMS)
def test_operator_applications_per_iteration(algorithm):
    dense = make_dense(4, 10, 7, second_loop=True)
    counts = dict(B=0, H=0, Ht=0, V=0, Vt=0)

    def counted(name, op):
        def apply(x):
            counts[name] += 1
            return op(x)
        return apply

    pb = dense.problem(b_multiply=counted("B", lambda x: dense.B @ x), h=counted("H", lambda x: dense.H @ x),
                       h_ad=counted("Ht", lambda y: dense.H.T @ y), b_sqrt=counted("V", lambda v: dense.V @ v),
                       b_sqrt_ad=counted("Vt", lambda x: dense.V.T @ x))
    k = 6
    res = minimize(pb, algorithm, ninner=k, gradient_norm_reduction=0.0)
    assert res.iterations == k
    expected = {
        "DRPCG": dict(B=k + 1, H=k, Ht=k + 1, V=0, Vt=0),
        "DRIPCG": dict(B=k + 1, H=k, Ht=k + 1, V=0, Vt=0),
        "DRPLanczos": dict(B=k + 1, H=k, Ht=k + 1, V=0, Vt=0),
        "RPCG": dict(B=k + 1, H=k + 2, Ht=k + 1, V=0, Vt=0),  # + H dxb
        "PCG": dict(B=0, H=k, Ht=k + 1, V=k + 1, Vt=k + 1),  # + dx = V v
        "PLanczos": dict(B=0, H=k, Ht=k + 1, V=k + 1, Vt=k + 1),
        "MINRES": dict(B=0, H=k, Ht=k + 1, V=k + 1, Vt=k + 1),
    }[algorithm]
    assert counts == expected


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_inputs_are_not_modified(algorithm):
    dense = make_dense(8, 6, 6, second_loop=True)
    pb = dense.problem()
    saved = [a.copy() for a in (pb.d, pb.dxb, pb.b_inverse_dxb, pb.vb)]
    minimize(pb, algorithm, ninner=4, gradient_norm_reduction=0.0)
    for before, after in zip(saved, (pb.d, pb.dxb, pb.b_inverse_dxb, pb.vb)):
        np.testing.assert_array_equal(before, after)


def test_identity_operators_returning_their_argument_are_safe():
    # Operators returning the very array they receive (lambda x: x) must not corrupt the state.
    dense = make_dense(9, 5, 5)
    dense.B = dense.V = dense.H = dense.R = np.eye(5)

    def ident(x):
        return x

    pb = QuadraticProblem(b_multiply=ident, h=ident, h_ad=ident, r_inverse=ident, b_sqrt=ident,
                          b_sqrt_ad=ident, ctl_size=5, d=dense.d, dxb=np.zeros(5))
    for algorithm in ALGORITHMS:
        assert _rel(minimize(pb, algorithm, 5, 1e-12).dx, dense.d / 2) < 1e-14


def test_preconditioned_minres_core_without_square_root():
    """The MINRES core is written with B as preconditioner (dual vectors, no B^-1); on the
    plain problem it converges to the BLUE too."""
    dense = make_dense(13, 10, 8, r_kind="full", second_loop=True)
    trace = _Trace("MINRES", 40, 1e-14, None)
    x, bx, hx, k, converged = _minres(_Linear(dense.problem(), sqrt=False), trace)
    assert converged and _rel(x, dense.blue) <= 1e-8 and _rel(dense.B @ bx, x) <= 1e-9


# ---------------------------------------------------------------------------------------
# Online diagnostics
# ---------------------------------------------------------------------------------------
def test_online_adjoint_test_passes_for_correct_operators():
    dense = make_dense(1, 7, 5)
    res = minimize(dense.problem(), "DRPCG", 5, 1e-6, online_diagnostics={"online adj test": True})
    assert {t.operator for t in res.diagnostics} == {"H", "B^1/2", "B"}
    assert all(t.passed and t.relative_error < 1e-13 for t in res.diagnostics)
    assert minimize(dense.problem(), "DRPCG", 5, 1e-6).diagnostics == []
    assert [t.operator for t in minimize(dense.problem(), "PCG", 5, 1e-6, online_diagnostics=True).diagnostics] == [
        "H", "B^1/2"]


def test_online_adjoint_test_flags_a_wrong_adjoint(caplog):
    dense = make_dense(1, 7, 5)
    wrong = dense.H.copy()
    wrong[2, 3] += 0.1
    pb = dense.problem(h_ad=lambda y: wrong.T @ y)
    with caplog.at_level(logging.WARNING, logger="pyoops"):
        res = minimize(pb, "DRPCG", 5, 1e-6, online_diagnostics=OnlineDiagnostics(adjoint_test=True))
    by_name = {t.operator: t for t in res.diagnostics}
    assert not by_name["H"].passed and by_name["H"].relative_error > 1e-6
    assert by_name["B"].passed and by_name["B^1/2"].passed
    assert any("adjoint test of H" in r.getMessage() and "FAILED" in r.getMessage() for r in caplog.records)
    # a wrong square-root adjoint and a non-symmetric B are flagged too
    bad_v = dense.problem(b_sqrt_ad=lambda x: (dense.V.T + 0.05) @ x,
                          b_multiply=lambda x: (dense.B + np.triu(np.ones((7, 7)), 1) * 0.1) @ x)
    flags = {t.operator: t.passed for t in adjoint_tests(bad_v)}
    assert flags == {"H": True, "B^1/2": False, "B": False}


def test_online_diagnostics_options():
    assert OnlineDiagnostics.coerce(None) == OnlineDiagnostics()
    assert OnlineDiagnostics.coerce(True).adjoint_test
    assert OnlineDiagnostics.coerce({"online adj test": True, "tolerance": 1e-8}).tolerance == 1e-8
    with pytest.raises(ValueError, match="online adj test"):
        OnlineDiagnostics.coerce({"online tl test": True})
    with pytest.raises(ValueError):
        OnlineDiagnostics.coerce("yes")


# ---------------------------------------------------------------------------------------
# DirectSolve: the exact minimiser in one step
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,p", SHAPES)
@pytest.mark.parametrize("second_loop", [False, True])
def test_direct_solve_is_the_blue_to_rounding(n, p, second_loop):
    """Well-conditioned problems (eigenvalues of B in [0.85, 3.4], R in [0.5, 2]): the explicit
    Hessian I + G^T R^-1 G has a condition number below 10, so the solve is exact to a few
    hundred epsilon; the BLUE of the test is itself computed in another order (1e-13)."""
    dense = make_dense(n * 100 + p, n, p, r_kind="full", second_loop=second_loop)
    res = minimize(dense.problem(), "DirectSolve", ninner=1, gradient_norm_reduction=1.0)
    assert _rel(res.dx, dense.blue) <= 1e-13
    assert _rel(dense.B @ res.b_inverse_dx, res.dx) <= 1e-13
    assert res.iterations == 1 and res.converged and len(res.trace) == 2 and res.v is None
    assert res.trace[-1].gradient_norm_reduction < 1e-13
    # The trace is the true cost at 0 and at the solution, the gradient norm the B-norm of the gradient.
    assert res.trace[0].j == pytest.approx(dense.cost(np.zeros(n)), rel=1e-12)
    assert res.j == pytest.approx(dense.cost(res.dx), rel=1e-12)
    assert res.jb == pytest.approx(0.5 * (res.dx - dense.dxb) @ np.linalg.solve(dense.B, res.dx - dense.dxb),
                                   rel=1e-10)
    g0 = dense.gradient(np.zeros(n))
    assert res.trace[0].gradient_norm == pytest.approx(np.sqrt(g0 @ dense.B @ g0), rel=1e-12)
    g = dense.gradient(res.dx)
    assert res.trace[1].gradient_norm <= 1e-12 * res.trace[0].gradient_norm
    assert np.sqrt(g @ dense.B @ g) <= 1e-12 * res.trace[0].gradient_norm
    np.testing.assert_allclose(res.hdx, dense.H @ res.dx, rtol=0, atol=1e-13 * np.abs(res.hdx).max())


def test_direct_solve_operator_applications():
    """Without b_dense and h_rows: B on the n unit vectors, H on the r = n columns of L, one H^T.
    With them (as the driver gives them): one batched H call, one H (its check on the first
    column) and one H^T, nothing else."""
    dense = make_dense(4, 10, 7, second_loop=True)
    counts = {"B": 0, "H": 0, "Ht": 0, "rows": 0}

    def counted(name, op):
        def apply(x):
            counts[name] += 1
            return op(x)
        return apply

    ops = {"b_multiply": counted("B", lambda x: dense.B @ x), "h": counted("H", lambda x: dense.H @ x),
           "h_ad": counted("Ht", lambda y: dense.H.T @ y)}
    plain = minimize(dense.problem(**ops), "DirectSolve", ninner=6, gradient_norm_reduction=0.0)
    assert counts == {"B": 10, "H": 10, "Ht": 1, "rows": 0}
    counts.update(B=0, H=0, Ht=0)
    shared = DenseCovariance(dense.B)
    batched = minimize(dense.problem(**ops, b_dense=shared, h_rows=counted("rows", lambda X: X @ dense.H.T)),
                       "DirectSolve", ninner=6, gradient_norm_reduction=0.0)
    assert counts == {"B": 0, "H": 1, "Ht": 1, "rows": 1}
    assert _rel(plain.dx, batched.dx) <= 1e-13 and _rel(batched.dx, dense.blue) <= 1e-13
    assert "factor" in vars(shared)  # computed once and kept for the next problem with this B
    # A problem whose batched H passed the check is marked; one known to pass skips it (no H at all).
    problem = dense.problem(**ops, b_dense=shared, h_rows=counted("rows", lambda X: X @ dense.H.T))
    counts.update(H=0, Ht=0, rows=0)
    minimize(problem, "DirectSolve", ninner=6, gradient_norm_reduction=0.0)
    assert problem.h_rows_checked and counts == {"B": 0, "H": 1, "Ht": 1, "rows": 1}
    counts.update(H=0, Ht=0, rows=0)
    trusted = minimize(dense.problem(**ops, b_dense=shared, h_rows=counted("rows", lambda X: X @ dense.H.T),
                                     h_rows_checked=True), "DirectSolve", ninner=6, gradient_norm_reduction=0.0)
    assert counts == {"B": 0, "H": 0, "Ht": 1, "rows": 1}
    np.testing.assert_array_equal(trusted.dx, batched.dx)


def test_direct_solve_with_the_diagonal_of_r_inverse():
    """With ``r_inverse_diagonal`` (as the driver gives it for a diagonal R) R^-1 is never called and the
    analysis is bitwise that of applying r_inverse column by column (the same element-wise products)."""
    dense = make_dense(5, 12, 9, r_kind="diagonal")
    diagonal = 1.0 / np.diag(dense.R)
    calls = []
    plain = minimize(dense.problem(r_inverse=lambda y: y * diagonal), "DirectSolve", 1, 1e-6)
    fast = minimize(dense.problem(r_inverse=lambda y: calls.append(1) or y * diagonal, r_inverse_diagonal=diagonal),
                    "DirectSolve", 1, 1e-6)
    np.testing.assert_array_equal(fast.dx, plain.dx)
    assert _rel(fast.dx, dense.blue) <= 1e-13
    assert len(calls) == 1     # R^-1 d only: not once per column of G
    with pytest.raises(ValueError, match="r_inverse_diagonal has 8 elements, expected 9"):
        dense.problem(r_inverse_diagonal=diagonal[:8])


def test_direct_solve_falls_back_when_the_batched_h_mixes_rows(caplog):
    """A plugin whose linear operators do not treat a leading axis as a batch: h_rows disagrees
    with h on the first column, DirectSolve warns and applies h column by column."""
    dense = make_dense(6, 8, 5)
    mixed = minimize(dense.problem(h_rows=lambda X: np.broadcast_to(X.sum(axis=0) @ dense.H.T, (X.shape[0], 5))),
                     "DirectSolve", 1, 1e-6)
    assert "differs from H on a single vector" in caplog.text
    assert _rel(mixed.dx, dense.blue) <= 1e-13

    def unbatched(X):
        if X.ndim != 1:
            raise ValueError("operands could not be broadcast together")
        return dense.H @ X

    caplog.clear()
    res = minimize(dense.problem(h_rows=unbatched), "DirectSolve", 1, 1e-6)
    assert "failed (operands could not be broadcast together); applying H column by column" in caplog.text
    assert _rel(res.dx, dense.blue) <= 1e-13


def test_direct_solve_with_a_semi_definite_b():
    """A pure-ensemble B of rank 4 on 12 points: L has 4 columns, the increment stays in the
    ensemble space and is the BLUE (whose formula needs no B^-1)."""
    rng = np.random.default_rng(5)
    n, p, m = 12, 9, 5
    X = rng.standard_normal((n, m))
    X -= X.mean(axis=1, keepdims=True)
    B = X @ X.T / (m - 1)
    H = rng.standard_normal((p, n))
    d = rng.standard_normal(p)
    pb = QuadraticProblem(b_multiply=lambda x: B @ x, h=lambda x: H @ x, h_ad=lambda y: H.T @ y,
                          r_inverse=lambda y: y, d=d, dxb=np.zeros(n), b_dense=DenseCovariance(B))
    blue = B @ H.T @ np.linalg.solve(H @ B @ H.T + np.eye(p), d)
    res = minimize(pb, "DirectSolve", 1, 1e-10)
    assert pb.b_dense.factor.shape == (n, m - 1)
    assert _rel(res.dx, blue) <= 1e-12
    assert _rel(B @ res.b_inverse_dx, res.dx) <= 1e-12
    V = X / np.sqrt(m - 1)
    pcg = minimize(QuadraticProblem(b_multiply=pb.b_multiply, h=pb.h, h_ad=pb.h_ad, r_inverse=pb.r_inverse, d=d,
                                    dxb=np.zeros(n), b_sqrt=lambda v: V @ v, b_sqrt_ad=lambda x: V.T @ x, ctl_size=m),
                   "PCG", 20, 1e-14)
    assert _rel(pcg.dx, res.dx) <= 1e-12


def test_direct_solve_size_limit_and_inputs():
    n = DIRECT_MAX_SIZE + 1
    big = QuadraticProblem(b_multiply=lambda x: x, h=lambda x: x[:2], h_ad=lambda y: np.r_[y, np.zeros(n - 2)],
                           r_inverse=lambda y: y, d=np.ones(2), dxb=np.zeros(n))
    with pytest.raises(ValueError, match=f"n <= {DIRECT_MAX_SIZE}.*n = {n}"):
        minimize(big, "DirectSolve", 1, 1e-6)
    dense = make_dense(1, 4, 3)
    with pytest.raises(ValueError, match="b_dense has shape"):
        dense.problem(b_dense=DenseCovariance(np.eye(3)))
    with pytest.raises(ValueError, match="h_rows returned shape"):
        minimize(dense.problem(h_rows=lambda X: X), "DirectSolve", 1, 1e-6)
    with pytest.raises(NumericalError, match="not positive semi-definite"):
        minimize(dense.problem(b_multiply=lambda x: -x), "DirectSolve", 1, 1e-6)


# ---------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------
def test_unknown_algorithm_lists_the_known_ones():
    pb = _l96_problem()
    with pytest.raises(ValueError) as err:
        minimize(pb, "DRPCGG", 5, 1e-3)
    message = str(err.value)
    assert "DRPCGG" in message and "did you mean DRPCG" in message
    for name in ALGORITHMS:
        assert name in message
    with pytest.raises(ValueError, match="did you mean MINRES"):
        minimize(pb, "minres", 5, 1e-3)
    with pytest.raises(ValueError, match="known: DRPCG"):
        minimize(pb, "GMRESR", 5, 1e-3)


@pytest.mark.parametrize("ninner", [0, -3, 2.5, True, "10"])
def test_bad_ninner(ninner):
    with pytest.raises(ValueError, match="ninner"):
        minimize(_l96_problem(), "DRPCG", ninner, 1e-3)


@pytest.mark.parametrize("tol", [-1e-3, float("nan"), float("inf"), "small"])
def test_bad_gradient_norm_reduction(tol):
    with pytest.raises(ValueError, match="gradient norm reduction"):
        minimize(_l96_problem(), "DRPCG", 5, tol)


@pytest.mark.parametrize("algorithm", SQRT_ALGORITHMS)
def test_square_root_algorithms_need_b_sqrt(algorithm):
    dense = make_dense(1, 4, 4)
    pb = dense.problem(b_sqrt=None, b_sqrt_ad=None, ctl_size=None, vb=None)
    with pytest.raises(ValueError, match=r"B\^1/2"):
        minimize(pb, algorithm, 5, 1e-3)
    for other in set(ALGORITHMS) - set(SQRT_ALGORITHMS):  # the others do not need it
        assert _rel(minimize(pb, other, 10, 1e-14).dx, dense.blue) < 1e-10


def test_operator_of_the_wrong_size():
    dense = make_dense(1, 4, 3)
    with pytest.raises(ValueError, match=r"QuadraticProblem.h returned .*\(3,\)"):
        minimize(dense.problem(h=lambda x: x), "DRPCG", 5, 1e-3)


def test_indefinite_hessian_is_a_numerical_error():
    dense = make_dense(1, 4, 3)
    pb = dense.problem(b_multiply=lambda x: -x)
    for algorithm in (*DR_FAMILY, "RPCG"):
        with pytest.raises(NumericalError, match="not positive definite"):
            minimize(pb, algorithm, 5, 1e-6)
    # B positive definite but R^-1 indefinite: found along the way
    rinv = np.diag([1.0, -5.0, 1.0])
    pb = dense.problem(r_inverse=lambda y: rinv @ y)
    for algorithm in ALGORITHMS:
        with pytest.raises(NumericalError, match="not positive definite"):
            minimize(pb, algorithm, 5, 1e-12)


def test_quadratic_problem_validation():
    ident = lambda x: x  # noqa: E731
    base = dict(b_multiply=ident, h=ident, h_ad=ident, r_inverse=ident, d=np.ones(3), dxb=np.zeros(3))
    with pytest.raises(ValueError, match="ctl_size"):
        QuadraticProblem(**base, b_sqrt=ident, b_sqrt_ad=ident)
    with pytest.raises(ValueError, match="b_sqrt_ad"):
        QuadraticProblem(**base, b_sqrt=ident, ctl_size=3)
    with pytest.raises(ValueError, match="b_inverse_dxb has 2 elements, expected 3"):
        QuadraticProblem(**base, b_inverse_dxb=np.zeros(2))
    with pytest.raises(ValueError, match="1-D"):
        QuadraticProblem(**{**base, "d": np.ones((3, 1))})
    with pytest.raises(ValueError, match="non-finite"):
        QuadraticProblem(**{**base, "d": np.array([1.0, np.nan, 0.0])})
    with pytest.raises(ValueError, match="callable"):
        QuadraticProblem(**{**base, "h": np.eye(3)})
    pb = QuadraticProblem(**base, b_sqrt=ident, b_sqrt_ad=ident, vb=np.zeros(3))
    assert pb.ctl_size == 3 and pb.n == 3 and pb.p == 3 and pb.has_sqrt
    np.testing.assert_array_equal(pb.b_inverse_dxb, np.zeros(3))


def test_quadratic_problem_cost_and_gradient():
    dense = make_dense(17, 6, 9, r_kind="full", second_loop=True)
    pb = dense.problem(b_inverse=lambda x: np.linalg.solve(dense.B, x))
    x = np.random.default_rng(0).standard_normal(6)
    j, jb, jo = pb.cost(x)
    assert j == pytest.approx(dense.cost(x), rel=1e-12) and j == pytest.approx(jb + jo)
    assert pb.cost(x, b_inv_x=np.linalg.solve(dense.B, x), hx=dense.H @ x) == pytest.approx((j, jb, jo))
    np.testing.assert_allclose(pb.gradient(x), dense.gradient(x), rtol=1e-10)
    v = np.linalg.solve(dense.V, x)
    assert pb.cost_control(v) == pytest.approx((j, jb, jo), rel=1e-10)
    with pytest.raises(ValueError, match="b_inverse"):
        dense.problem(b_inverse=None).cost(x)


@pytest.mark.parametrize("n,p", SHAPES)
@pytest.mark.parametrize("r_kind", ["diagonal", "full"])
def test_exact_gain_is_the_kalman_gain_and_gives_direct_solves_increment(n, p, r_kind):
    """K = B H^T (H B H^T + R)^-1 by numpy in observation space against exact_gain's control-space form:
    the same well-conditioned problems as the DirectSolve tests (condition numbers below 10), so
    both are exact to a few hundred epsilon.  K d is DirectSolve's first-loop increment for any d."""
    dense = make_dense(n * 10 + p + 7, n, p, r_kind=r_kind)
    K = exact_gain(dense.problem())
    expected = dense.B @ dense.H.T @ np.linalg.inv(dense.H @ dense.B @ dense.H.T + dense.R)
    assert K.shape == (n, p)
    assert _rel(K, expected) <= 1e-13
    for seed in range(3):
        d = np.random.default_rng(seed).standard_normal(p)
        res = minimize(dense.problem(d=d), "DirectSolve", ninner=1, gradient_norm_reduction=1.0)
        assert _rel(K @ d, res.dx) <= 1e-13


def test_exact_gain_reports_a_hessian_that_is_not_positive_definite():
    dense = make_dense(3, 6, 4)
    with pytest.raises(ValueError, match="exact gain: Cholesky factorisation"):
        exact_gain(dense.problem(r_inverse=lambda y: -100.0 * y))
