"""Online tangent-linear test of the linearised observation operator (``online tlm test``).

At the start of an outer loop, for a random increment :math:`\\delta x` (seeded), compare the
linearised :math:`\\mathbf{H}\\delta x` (through the linear model in 4D-Var) with finite
differences of the nonlinear :math:`\\mathcal{H}`:

.. math::

    e(\\alpha) = \\frac{\\| \\mathcal{H}(x + \\alpha\\delta x) - \\mathcal{H}(x) - \\alpha\\mathbf{H}\\delta x \\|}
                      {\\| \\alpha\\mathbf{H}\\delta x \\|},
    \\qquad \\alpha = 10^{0}, 10^{-1}, \\dots

For a correct tangent linear :math:`e(\\alpha)` falls like :math:`\\alpha` until round-off;
the smallest :math:`e` is reported and compared with the tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pyoops.util.random import generator

__all__ = ["online_tlm_test"]


def online_tlm_test(nonlinear_hofx: Callable[[list[np.ndarray]], np.ndarray], h: Callable[[np.ndarray], np.ndarray],
                    size: int, scale: float, unflatten: Callable[[np.ndarray], list[Any]], seed: int = 0,
                    steps: int = 8, tolerance: float = 1e-4) -> dict[str, Any]:
    """Finite-difference check of ``h`` against ``nonlinear_hofx``.

    Parameters
    ----------
    nonlinear_hofx:
        ``increments -> flat H(x + increments)`` (masked observations set to 0); called with
        zero increments for the reference.
    h:
        The linearised operator on flat control vectors.
    size:
        Length of a control vector.
    scale:
        Standard deviation of the random increment (e.g. a fraction of the background error).
    unflatten:
        Flat control vector -> list of increment FieldSets.
    """
    rng = generator(seed, "online tlm test")
    dx = scale * rng.standard_normal(size)
    hdx = h(dx)
    reference = nonlinear_hofx(unflatten(np.zeros(size)))
    errors = []
    for k in range(steps):
        alpha = 10.0 ** (-k)
        perturbed = nonlinear_hofx(unflatten(alpha * dx))
        linear = alpha * hdx
        norm = float(np.linalg.norm(linear))
        errors.append(float(np.linalg.norm(perturbed - reference - linear) / norm) if norm > 0 else 0.0)
    best = min(errors)
    return {"operator": "H (tangent linear vs finite differences)", "relative error": best,
            "errors by alpha": errors, "tolerance": tolerance, "passed": bool(best <= tolerance)}
