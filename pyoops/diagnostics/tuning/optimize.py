r"""Bound-constrained minimisation of :math:`-\log L` by L-BFGS-B with a first step that stays near the start.

With every parameter bounded, L-BFGS-B's first trial point is the start minus the whole gradient,
projected onto the box.  For the innovation likelihood that point is often a corner (inflation at
its upper bound, :math:`a_o` at its lower one, say) where :math:`\mathbf{S}` is not positive definite
and :math:`-\log L` is infinite; the line search then comes back to the start and L-BFGS-B reports
convergence there, the parameters unmoved.  Scaling the objective so that its gradient at the
start is at most 1 in every internal coordinate keeps that first step within a factor
:math:`e` of the start on the log scales; the gradient tolerance is divided by the same scale, so
the stopping rule on the true gradient is L-BFGS-B's default.  Used by the ML/MAP fits
(:func:`~pyoops.diagnostics.tuning.estimators.estimate`) and by every re-optimisation of a
profile (:func:`~pyoops.diagnostics.tuning.uncertainty.profile_interval`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.optimize

__all__ = ["GRADIENT_TOLERANCE", "minimize_scaled"]

#: L-BFGS-B's projected-gradient tolerance (SciPy's default), on the unscaled objective.
GRADIENT_TOLERANCE = 1e-5

Objective = Callable[[np.ndarray], tuple[float, np.ndarray]]


def minimize_scaled(objective: Objective, x0: np.ndarray, bounds: Sequence[tuple[float, float]],
                    max_iterations: int = 200, at_start: tuple[float, np.ndarray] | None = None,
                    line_search: int | None = None, gradient_tolerance: float | None = GRADIENT_TOLERANCE
                    ) -> Any:
    """L-BFGS-B on ``objective / s``, :math:`s = \\max(1, \\max_i |g_i(x_0)|)`; returns SciPy's result
    with ``fun`` and ``jac`` those of ``objective`` itself (the scaled values times :math:`s`) and
    ``scale`` (:math:`s`) added.

    ``at_start``: ``objective(x0)`` if already evaluated (it is not evaluated again);
    ``line_search``: L-BFGS-B's ``maxls``; ``gradient_tolerance``: on the unscaled gradient (None:
    SciPy's default on the scaled one).
    """
    x0 = np.asarray(x0, dtype=np.float64)
    start = objective(x0) if at_start is None else at_start
    scale = max(1.0, float(np.abs(start[1]).max())) if x0.size else 1.0

    def scaled(x: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = start if np.array_equal(x, x0) else objective(x)
        return f / scale, np.asarray(g) / scale

    options: dict[str, Any] = {"maxiter": max_iterations}
    if line_search is not None:
        options["maxls"] = line_search
    if gradient_tolerance is not None:
        options["gtol"] = gradient_tolerance / scale
    res = scipy.optimize.minimize(scaled, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
    res.fun, res.jac, res.scale = float(res.fun) * scale, np.asarray(res.jac) * scale, scale
    return res
