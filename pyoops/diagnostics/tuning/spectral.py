r"""The innovation likelihood of an ensemble covariance in its ensemble-space (spectral) form.

For an ensemble filter the observation-space covariance of the innovations is low rank plus
diagonal, and the likelihood of :mod:`~pyoops.diagnostics.tuning.model` (for the form
``inflation`` :math:`\lambda` and ``a_o`` free, :math:`\beta = 1`, no static part) has a closed
form in the eigen-decomposition the ensemble transform computes anyway.  With the whitened
(and, per grid point, localization-weighted) quantities

.. math::

    \tilde{\mathbf Y} = \mathbf R_w^{-1/2}\mathbf Y/\sqrt{N-1}\ (m\times N),\qquad
    \tilde d = \mathbf R_w^{-1/2} d,\qquad \mathbf R_w^{-1} = \mathrm{diag}(w_i/\sigma_{o,i}^2),

the innovation covariance is :math:`\mathbf S = \mathbf R_w^{1/2}(\lambda\tilde{\mathbf Y}\tilde{\mathbf Y}^\mathrm{T}
+ a_o\mathbf I)\mathbf R_w^{1/2}`.  With :math:`\tilde{\mathbf Y}^\mathrm{T}\tilde{\mathbf Y} = \mathbf C\Gamma\mathbf C^\mathrm{T}`
(eigenvalues :math:`\gamma_i > 0`, rank :math:`r`) and the squared projections of
:math:`\tilde d` on the observation-space singular vectors,
:math:`q_i = (c_i^\mathrm{T}\tilde{\mathbf Y}^\mathrm{T}\tilde d)^2/\gamma_i`,

.. math::

    -2\log L(\lambda, a_o) = \sum_{i\le r}\Big[\log(a_o + \lambda\gamma_i) + \frac{q_i}{a_o + \lambda\gamma_i}\Big]
    + (m - r)\log a_o + \frac{\|\tilde d\|^2 - \sum_i q_i}{a_o} + \text{const},

whose score and expected (Fisher) information in :math:`\phi = (\log\lambda, \log a_o)` follow from
:math:`\partial_\lambda S_i = \gamma_i`, :math:`\partial_{a_o} S_i = 1` on each eigen-direction
(:math:`S_i = a_o + \lambda\gamma_i`) and :math:`\mathcal I = \tfrac12\sum_i \partial S_i\,\partial S_i/S_i^2`
plus the :math:`m - r` directions where :math:`S = a_o`.  This is the same likelihood as
:class:`~pyoops.diagnostics.tuning.model.HybridCovarianceModel` (``tests`` check the two
agree), evaluated in :math:`O(N^3)` per local problem instead of :math:`O(m^3)`, so it can run
at every grid point of every cycle.

Localization weights :math:`w_i \in (0, 1]` make it the tempered likelihood of the local
analysis (the observation errors the LETKF uses at that point); then :math:`m` is replaced by
the effective number :math:`p_\text{eff} = \sum_i w_i` in the :math:`a_o` terms, so that an
observation at the edge of the localization counts only as much as its weight.

Batched: every array has leading batch dimensions (e.g. one problem per selection row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SpectralInnovations", "marginal_innovations", "spectral_innovations"]


@dataclass
class SpectralInnovations:
    r"""Sufficient statistics of one or a batch of innovation vectors for :math:`\lambda` and :math:`a_o`.

    ``gamma`` and ``q`` ``(..., K)`` (zeros padding the rank deficiency), ``dd`` :math:`\|\tilde d\|^2`,
    ``p_eff`` :math:`\sum_i w_i` and ``nobs`` (observations used) ``(...)``.
    """

    gamma: np.ndarray
    q: np.ndarray
    dd: np.ndarray
    p_eff: np.ndarray
    nobs: np.ndarray
    members: int

    @property
    def trace(self) -> np.ndarray:
        r""":math:`T = \mathrm{tr}(\mathbf R_w^{-1}\mathbf{HPH}^\mathrm{T}) = \sum_i\gamma_i`."""
        return self.gamma.sum(axis=-1)

    def _parts(self, inflation: np.ndarray, a_o: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lam = np.asarray(inflation, dtype=np.float64)[..., None]
        ao = np.asarray(a_o, dtype=np.float64)
        s = ao[..., None] + lam * self.gamma
        used = self.gamma > 0
        rest = np.maximum(self.p_eff - used.sum(axis=-1), 0.0)   # directions where S = a_o (weighted count)
        return s, used, rest

    def negative_log_likelihood(self, inflation: float | np.ndarray = 1.0,
                                a_o: float | np.ndarray = 1.0) -> np.ndarray:
        r""":math:`-\log L` up to a constant independent of :math:`(\lambda, a_o)`, per batch entry."""
        s, used, rest = self._parts(inflation, a_o)
        ao = np.asarray(a_o, dtype=np.float64)
        terms = np.where(used, np.log(np.where(used, s, 1.0)) + self.q / np.where(used, s, 1.0), 0.0).sum(axis=-1)
        resid = self.dd - self.q.sum(axis=-1)
        return 0.5 * (terms + rest * np.log(ao) + resid / ao)

    def score(self, inflation: float | np.ndarray = 1.0, a_o: float | np.ndarray = 1.0
              ) -> tuple[np.ndarray, np.ndarray]:
        r"""Gradient of :math:`-\log L` and the Fisher information in :math:`(\log\lambda, \log a_o)`.

        Returns ``(gradient (..., 2), fisher (..., 2, 2))``.
        """
        s, used, rest = self._parts(inflation, a_o)
        lam = np.asarray(inflation, dtype=np.float64)
        ao = np.asarray(a_o, dtype=np.float64)
        safe = np.where(used, s, 1.0)
        inv = np.where(used, 1.0 / safe, 0.0)
        g_l = 0.5 * (self.gamma * inv - self.q * self.gamma * inv**2).sum(axis=-1)
        resid = self.dd - self.q.sum(axis=-1)
        g_a = 0.5 * ((inv - self.q * inv**2).sum(axis=-1) + rest / ao - resid / ao**2)
        f_ll = 0.5 * (self.gamma**2 * inv**2).sum(axis=-1)
        f_la = 0.5 * (self.gamma * inv**2).sum(axis=-1)
        f_aa = 0.5 * ((inv**2).sum(axis=-1) + rest / ao**2)
        grad = np.stack([lam * g_l, ao * g_a], axis=-1)
        fisher = np.stack([np.stack([lam**2 * f_ll, lam * ao * f_la], axis=-1),
                           np.stack([lam * ao * f_la, ao**2 * f_aa], axis=-1)], axis=-2)
        return grad, fisher

    def observed_curvature(self, inflation: float | np.ndarray = 1.0, a_o: float | np.ndarray = 1.0) -> np.ndarray:
        r"""The observed information in :math:`\phi = \log\lambda`, :math:`\partial^2_\phi(-\log L)`, per batch entry.

        With :math:`u_i = \lambda\gamma_i/S_i`: :math:`\tfrac12\sum_i[u_i(1 - q_i/S_i) - u_i^2(1 - 2q_i/S_i)]`
        (its expectation is the Fisher information :math:`\tfrac12\sum_i u_i^2`; unlike it, it can be
        negative away from the maximum).
        """
        s, used, _ = self._parts(inflation, a_o)
        lam = np.asarray(inflation, dtype=np.float64)[..., None]
        safe = np.where(used, s, 1.0)
        u = np.where(used, lam * self.gamma / safe, 0.0)
        r = np.where(used, self.q / safe, 0.0)
        return 0.5 * (u * (1.0 - r) - u * u * (1.0 - 2.0 * r)).sum(axis=-1)


def _checked_inputs(perturbations: np.ndarray, inverse_variance: np.ndarray, weights: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(Y, 1/sigma_o^2, w)`` as float arrays, ``w`` broadcast and zero where the observation is not used."""
    y = np.asarray(perturbations, dtype=np.float64)
    if y.shape[-1] < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {y.shape[-1]}")
    rinv = np.asarray(inverse_variance, dtype=np.float64)
    w = np.ones_like(rinv) if weights is None else np.broadcast_to(np.asarray(weights, dtype=np.float64), rinv.shape)
    return y, rinv, np.where(rinv > 0, w, 0.0)


def spectral_innovations(perturbations: np.ndarray, departures: np.ndarray, inverse_variance: np.ndarray,
                         weights: np.ndarray | None = None) -> SpectralInnovations:
    r"""The statistics of :class:`SpectralInnovations` from observation-space arrays.

    Parameters
    ----------
    perturbations:
        :math:`\mathbf Y`, ``(..., m, N)``: :math:`\mathcal H(x_k) - \overline{\mathcal H(x)}` of the
        (uninflated) background members at the observations.
    departures:
        :math:`d = y - \overline{\mathcal H(x)}`, ``(..., m)``.
    inverse_variance:
        :math:`1/\sigma_{o,i}^2` ``(..., m)``; 0 for padding or unused observations.
    weights:
        Localization weights :math:`w_i \in [0, 1]` ``(..., m)`` (default 1).
    """
    y, rinv, w = _checked_inputs(perturbations, inverse_variance, weights)
    n = y.shape[-1]
    sw = np.sqrt(w * rinv)
    yt = y * (sw / np.sqrt(n - 1))[..., None]
    dt = np.asarray(departures, dtype=np.float64) * sw
    gram = np.swapaxes(yt, -1, -2) @ yt                        # (..., N, N)
    gamma, c = np.linalg.eigh(gram)
    proj = (np.swapaxes(c, -1, -2) @ (np.swapaxes(yt, -1, -2) @ dt[..., None]))[..., 0]
    # Eigenvalues at round-off level of the largest are the rank deficiency (the removed mean: at least one).
    tol = 1e3 * np.finfo(np.float64).eps * np.maximum(gamma[..., -1:], np.finfo(np.float64).tiny)
    used = gamma > tol
    gamma = np.where(used, gamma, 0.0)
    q = np.where(used, proj**2 / np.where(used, gamma, 1.0), 0.0)
    return SpectralInnovations(gamma, q, (dt * dt).sum(axis=-1), w.sum(axis=-1), (w > 0).sum(axis=-1), n)


def marginal_innovations(perturbations: np.ndarray, departures: np.ndarray, inverse_variance: np.ndarray,
                         weights: np.ndarray | None = None) -> SpectralInnovations:
    r"""The product of the observations' *marginal* likelihoods, in the form of :class:`SpectralInnovations`.

    Each innovation alone, :math:`d_i \sim N(0, \lambda s_i + a_o\sigma_{o,i}^2/w_i)` with
    :math:`s_i = \sum_k Y_{ik}^2/(N-1)` the ensemble variance at observation :math:`i`: the same sum as the
    spectral form with the observations as the directions, :math:`\gamma_i = w_i s_i/\sigma_{o,i}^2` and
    :math:`q_i = w_i d_i^2/\sigma_{o,i}^2`.  Unlike the joint likelihood, which lets :math:`\lambda` explain only
    the part of :math:`d` in the span of the ensemble, every observation's whole innovation variance counts
    (the likelihood DART's adaptive schemes use, one observation at a time); the correlations between the
    innovations are ignored, so the Fisher information of this composite likelihood overstates what the data
    hold.  Arguments as :func:`spectral_innovations`; only the :math:`\lambda` parts are meant to be used (the
    :math:`a_o` parts count every observation once).
    """
    y, rinv, w = _checked_inputs(perturbations, inverse_variance, weights)
    n = y.shape[-1]
    gamma = w * rinv * (y * y).sum(axis=-1) / (n - 1)
    used = gamma > 0
    gamma = np.where(used, gamma, 0.0)
    q = np.where(used, w * rinv * np.asarray(departures, dtype=np.float64) ** 2, 0.0)
    return SpectralInnovations(gamma, q, q.sum(axis=-1), w.sum(axis=-1), (w > 0).sum(axis=-1), n)
