r"""The information-theoretic bound of any :math:`M`-member estimate of :math:`\hat\sigma_N`, and the oracle floor.

Bound
-----
Let :math:`\mathcal F_M` be what :math:`M` members of a cycle tell (with everything that
all members share: the observations, the truth).  No estimator :math:`\tilde\sigma` computed
from them beats the conditional expectation in mean square:

.. math::

    \mathbb E\big[(\tilde\sigma - \hat\sigma_N)^2\big] \ \ge\
    \mathbb E\big[(\mathbb E[\hat\sigma_N \mid \mathcal F_M] - \hat\sigma_N)^2\big],

and the same holds for :math:`\log\hat\sigma_N` (the quantity emulators are scored on).
The members of one cycle are exchangeable (an EDA with a static B: independent given the
observations), so :math:`\hat\sigma_N` given the fixed members :math:`x^{(1..M)}` is
distributed as :math:`\hat\sigma_N(x^{(1..M)} \cup S)` for a random :math:`(N-M)`-subset
:math:`S` of a large pool of further members of the same cycle.  With :math:`K` subsets
:math:`S_k` drawn without replacement from a pool of :math:`P \ge N - M` members,

.. math::

    \mathbb E[g(\hat\sigma_N) \mid \mathcal F_M] \approx \frac1K\sum_{k=1}^K g\big(\hat\sigma_N(x^{(1..M)} \cup S_k)\big),

for :math:`g = \mathrm{id}` or :math:`\log`, with Monte Carlo standard error
:math:`\mathrm{sd}_k/\sqrt K` (slightly optimistic when :math:`P` is not much larger than
:math:`N - M`, as the :math:`S_k` overlap).  The :math:`K` values are also a sample of the
ideal predictive distribution, whose CRPS is the best any emulator can score.

Oracle floor
------------
Even the true :math:`\sigma` is :math:`\hat\sigma_N`'s estimate only up to its sampling noise:
for Gaussian members :math:`\mathbb E\hat\sigma_n = c_4(n)\,\sigma` with

.. math::

    c_4(n) = \sqrt{\frac{2}{n-1}}\;\frac{\Gamma(n/2)}{\Gamma((n-1)/2)}, \qquad
    \frac{\mathrm{sd}(\hat\sigma_n)}{\sigma} = \sqrt{1 - c_4(n)^2}

(0.341 for :math:`n = 5`, 0.101 for :math:`n = 50`), and :math:`\log\hat\sigma_n` has standard
deviation :math:`\sqrt{\psi'((n-1)/2)/4}` (:math:`\psi'` the trigamma function), since
:math:`(n-1)\hat\sigma_n^2/\sigma^2 \sim \chi^2_{n-1}`.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["c4", "completion_stddevs", "log_stddev_noise", "oracle_relative_sd"]


def c4(n: int) -> float:
    r""":math:`c_4(n) = \sqrt{2/(n-1)}\,\Gamma(n/2)/\Gamma((n-1)/2)`, :math:`\mathbb E\hat\sigma_n/\sigma` for Gaussian data."""
    if n < 2:
        raise ValueError(f"c4 needs n >= 2, got {n}")
    return math.sqrt(2.0 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


def oracle_relative_sd(n: int) -> float:
    r""":math:`\mathrm{sd}(\hat\sigma_n)/\sigma = \sqrt{1 - c_4(n)^2}`."""
    return math.sqrt(1.0 - c4(n) ** 2)


def log_stddev_noise(n: int) -> float:
    r"""Standard deviation of :math:`\log\hat\sigma_n` for Gaussian data: :math:`\sqrt{\psi'((n-1)/2)}/2`."""
    from scipy.special import polygamma

    return 0.5 * math.sqrt(float(polygamma(1, (n - 1) / 2)))


def completion_stddevs(fixed: np.ndarray, pool: np.ndarray, n: int, draws: int, rng: np.random.Generator
                       ) -> np.ndarray:
    r""":math:`\hat\sigma_N` of the ``fixed`` members completed by ``draws`` random :math:`(N-M)`-subsets of ``pool``.

    Parameters
    ----------
    fixed:
        The :math:`M` members, ``(M, ...)``.
    pool:
        Further members of the same cycle, ``(P, ...)`` with :math:`P \ge N - M`.
    n:
        :math:`N`.
    draws:
        :math:`K`.
    rng:
        The generator of the subsets (each drawn without replacement).

    Returns
    -------
    ``(K, ...)``: :math:`\hat\sigma_N(x^{(1..M)} \cup S_k)` (:math:`N-1` normalisation).
    """
    fixed = np.asarray(fixed, dtype=np.float64)
    pool = np.asarray(pool, dtype=np.float64)
    m, p = fixed.shape[0], pool.shape[0]
    if not 2 <= m < n or p < n - m:
        raise ValueError(f"need 2 <= M < N and a pool of at least N - M members, got M={m}, N={n}, pool {p}")
    # Sums over the members, for a numerically careful variance: centred on the fixed members' mean.
    centre = fixed.mean(axis=0)
    f = fixed - centre
    q = pool - centre
    s1_fixed, s2_fixed = f.sum(axis=0), (f * f).sum(axis=0)
    idx = np.argsort(rng.random((draws, p)), axis=1)[:, : n - m]          # (K, N-M), without replacement
    chosen = q[idx]                                                        # (K, N-M, ...)
    s1 = s1_fixed + chosen.sum(axis=1)
    s2 = s2_fixed + (chosen * chosen).sum(axis=1)
    var = (s2 - s1 * s1 / n) / (n - 1)
    return np.sqrt(np.maximum(var, 0.0))
