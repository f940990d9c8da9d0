r"""Scores of estimates of :math:`\log\hat\sigma_N`: RMSE, CRPS, PIT, interval coverage (numpy).

For a verifying value :math:`y` (here :math:`\log\hat\sigma_{50}`):

* a point estimate :math:`x` has CRPS :math:`|x - y|`;
* a Gaussian :math:`\mathcal N(\mu, s^2)` has, with :math:`z = (y - \mu)/s`,

  .. math:: \mathrm{CRPS} = s\Big(z\,(2\Phi(z) - 1) + 2\varphi(z) - \tfrac{1}{\sqrt\pi}\Big);

* a sample :math:`x_1..x_K` of the predictive distribution has the *fair* CRPS
  (an unbiased estimate of the CRPS of the distribution it is drawn from)

  .. math:: \frac1K\sum_i |x_i - y| - \frac{1}{2K(K-1)}\sum_{i,j}|x_i - x_j| .

PIT: :math:`\Phi(z)`, uniform on [0, 1] for a calibrated forecast; the central 90 %
interval :math:`\mu \pm 1.6449\,s` covers :math:`y` in 90 % of cases.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

__all__ = ["Z90", "coverage", "energy_score", "ensemble_crps", "gaussian_crps", "pit", "rmse"]

#: :math:`\Phi^{-1}(0.95)`: the central 90 % interval is :math:`\mu \pm Z_{90}\,s`.
Z90 = 1.6448536269514722


def rmse(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(estimate) - np.asarray(truth)) ** 2)))


def gaussian_crps(mu: np.ndarray, sd: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pointwise CRPS of :math:`\\mathcal N(\\mu, s^2)` at ``y``."""
    sd = np.asarray(sd, dtype=np.float64)
    z = (np.asarray(y) - np.asarray(mu)) / sd
    return sd * (z * (2.0 * ndtr(z) - 1.0) + 2.0 * np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi) - 1.0 / np.sqrt(np.pi))


def ensemble_crps(samples: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pointwise fair CRPS of ``samples`` (``(K, ...)``) at ``y`` (``(...)``)."""
    x = np.sort(np.asarray(samples, dtype=np.float64), axis=0)
    k = x.shape[0]
    skill = np.abs(x - np.asarray(y)[None]).mean(axis=0)
    # sum_{i,j} |x_i - x_j| = 2 sum_i (2i - K - 1) x_(i) for sorted x, i = 1..K
    weights = (2.0 * np.arange(1, k + 1) - k - 1).reshape((k,) + (1,) * (x.ndim - 1))
    spread = 2.0 * (weights * x).sum(axis=0)
    return skill - spread / (2.0 * k * (k - 1))


def energy_score(samples: np.ndarray, y: np.ndarray) -> float:
    r"""Fair energy score of ``samples`` ``(K, D)`` at ``y`` ``(D,)``:
    :math:`\frac1K\sum_i\lVert x_i - y\rVert - \frac{1}{2K(K-1)}\sum_{i\ne j}\lVert x_i - x_j\rVert`."""
    x = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    k = x.shape[0]
    skill = np.linalg.norm(x - np.asarray(y, dtype=np.float64).reshape(1, -1), axis=1).mean()
    pairs = np.linalg.norm(x[:, None] - x[None], axis=2).sum()
    return float(skill - pairs / (2.0 * k * (k - 1)))


def pit(mu: np.ndarray, sd: np.ndarray, y: np.ndarray) -> np.ndarray:
    return ndtr((np.asarray(y) - np.asarray(mu)) / np.asarray(sd))


def coverage(mu: np.ndarray, sd: np.ndarray, y: np.ndarray, z: float = Z90) -> float:
    """Fraction of ``y`` inside :math:`\\mu \\pm z s`."""
    return float(np.mean(np.abs(np.asarray(y) - np.asarray(mu)) <= z * np.asarray(sd)))
