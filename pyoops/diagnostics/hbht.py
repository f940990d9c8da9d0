r"""The assumed background-error variance in observation space, :math:`\mathrm{diag}(\mathbf{HBH}^\mathrm{T})`.

Innovation diagnostics compare :math:`E[(y-H(x_b))^2]` with
:math:`\sigma_o^2 + (\mathbf{HBH}^\mathrm{T})_{ii}`; the second term is what the analysis
*assumed*.  With the linearised observation operator :math:`\mathbf{H}` (for 4D-Var
:math:`\mathbf{H}` includes the tangent-linear model over the window) and :math:`\mathbf{B}`
available only as operators, its diagonal is computed in one of two ways:

* **exact** (when :math:`p \cdot n \le` ``exact limit``, :math:`p` observations,
  :math:`n` control-vector size): :math:`p` products
  :math:`(\mathbf{HBH}^\mathrm{T})_{ii} = e_i^\mathrm{T}\mathbf{H}\mathbf{B}\mathbf{H}^\mathrm{T}e_i`,
  one column of :math:`\mathbf{H}^\mathrm{T}` at a time (cost: :math:`p` applications of
  :math:`\mathbf{H}^\mathrm{T}`, :math:`\mathbf{B}` and :math:`\mathbf{H}`);
* **randomized** (otherwise): :math:`K` = ``samples`` draws :math:`v_k \sim \mathcal{N}(0, I)`
  of the control vector of :math:`\mathbf{B} = \mathbf{U}\mathbf{U}^\mathrm{T}`, from the
  seeded stream ``generator(seed, "hbht", *labels)``, and
  :math:`\widehat{\sigma^2_{b,i}} = \frac1K\sum_k (\mathbf{H}\mathbf{U}v_k)_i^2`.  Each term is
  :math:`\sigma_{b,i}^2\chi^2_1`, so the estimate is unbiased with relative standard
  deviation :math:`\sqrt{2/K}` (14 % for :math:`K = 100`).  It needs a square root of
  :math:`\mathbf{B}` (one increment time: not 4D-Ens-Var).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from pydantic import Field

from pyoops.config.parameters import Parameters
from pyoops.util.errors import ConfigError
from pyoops.util.random import generator

__all__ = ["BackgroundVarianceParameters", "diag_hbht", "hbht_matrix"]


class BackgroundVarianceParameters(Parameters):
    """How diag(HBH^T) is computed for the innovation archive of variational methods."""

    exact_limit: int = Field(1_000_000, ge=0, alias="exact limit",
                             description="Exact (p columns of H^T through B) when p * n <= this; randomized "
                                         "otherwise.")
    samples: int = Field(100, gt=1, description="Randomized: number K of draws from B (relative noise sqrt(2/K)).")
    seed: int = Field(0, description="Randomized: seed of the draws (one stream per cycle).")

    def rule(self) -> str:
        """One-line description stored with the archive."""
        return (f"exact if p*n <= {self.exact_limit}, else randomized with {self.samples} samples "
                f"(seed {self.seed}, relative noise sqrt(2/K))")


def diag_hbht(h: Callable[[np.ndarray], np.ndarray], h_ad: Callable[[np.ndarray], np.ndarray],
              b_multiply: Callable[[np.ndarray], np.ndarray], nobs: int, nctl: int,
              options: BackgroundVarianceParameters, labels: tuple[Any, ...] = (), *,
              b_sqrt: Callable[[np.ndarray], np.ndarray] | None = None, sqrt_size: int | None = None
              ) -> np.ndarray:
    r""":math:`\mathrm{diag}(\mathbf{HBH}^\mathrm{T})`, shape ``(nobs,)``, exactly or by randomization.

    ``h``, ``h_ad``, ``b_multiply`` act on flat vectors (observation space of size ``nobs``,
    increment of size ``nctl``); ``b_sqrt`` maps a control vector of size ``sqrt_size`` to
    an increment, :math:`\mathbf{U}v` with :math:`\mathbf{UU}^\mathrm{T} = \mathbf{B}`.
    """
    out = np.empty(nobs)
    if nobs * nctl <= options.exact_limit:
        for i, column in enumerate(_hbht_columns(h, h_ad, b_multiply, nobs)):
            out[i] = column[i]
        return np.maximum(out, 0.0)
    if b_sqrt is None or sqrt_size is None:
        raise ConfigError(f"p * n = {nobs * nctl} exceeds 'exact limit' and this background error has no square "
                          "root to randomize; raise 'exact limit'", "output.background error variance")
    rng = generator(options.seed, "hbht", *labels)
    out[:] = 0.0
    for _ in range(options.samples):
        out += h(b_sqrt(rng.standard_normal(sqrt_size))) ** 2
    return out / options.samples


def _hbht_columns(h: Callable[[np.ndarray], np.ndarray], h_ad: Callable[[np.ndarray], np.ndarray],
                  b_multiply: Callable[[np.ndarray], np.ndarray], nobs: int) -> Iterator[np.ndarray]:
    r"""The columns :math:`\mathbf{HBH}^\mathrm{T}e_i`, :math:`i = 0..p-1`, one at a time."""
    e = np.zeros(nobs)
    for i in range(nobs):
        e[i] = 1.0
        yield np.asarray(h(b_multiply(h_ad(e))), dtype=np.float64)
        e[i] = 0.0


def hbht_matrix(h: Callable[[np.ndarray], np.ndarray], h_ad: Callable[[np.ndarray], np.ndarray],
                b_multiply: Callable[[np.ndarray], np.ndarray], nobs: int) -> np.ndarray:
    r"""The whole :math:`\mathbf{HBH}^\mathrm{T}` ``(nobs, nobs)`` from :math:`p` columns
    :math:`\mathbf{HBH}^\mathrm{T}e_i` (as the exact :func:`diag_hbht`), symmetrised
    :math:`\tfrac12(\mathbf M + \mathbf M^\mathrm{T})` against round-off; for small :math:`p`
    (the adaptive hybrid weight, :mod:`pyoops.assimilation.adaptive_hybrid`)."""
    m = np.stack(list(_hbht_columns(h, h_ad, b_multiply, nobs)), axis=1)
    return 0.5 * (m + m.T)
