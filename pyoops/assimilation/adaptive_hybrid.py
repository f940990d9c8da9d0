r"""Online adaptive hybrid weight :math:`\beta` of :math:`\mathbf B_h = (1-\beta)\mathbf B_s + \beta\mathbf B_e`.

Each cycle, before the analysis, :math:`\beta` is updated from this cycle's innovations
:math:`d = y - H(\bar x_b)` and the observation-space covariances of the two components,
:math:`\mathbf C_s = \mathbf{HB}_s\mathbf H^\mathrm T` (the static chain of the ``Hybrid`` block) and
:math:`\mathbf C_e = \mathbf{HP}_e\mathbf H^\mathrm T` (the ensemble chain: the members'
:math:`H(x_b)` perturbations, localized when the Ensemble block is), with
:math:`\mathbf R = \mathrm{diag}(\sigma_o^2)` (:class:`HybridInnovations`).  The analysis then uses
the weights :math:`(1-\beta, \beta)`.

Schemes (``scheme``):

``likelihood`` (pyoops)
    Recursive maximum likelihood with forgetting, on :math:`\phi = \mathrm{logit}\,\beta`.  The
    innovation likelihood of :mod:`pyoops.diagnostics.tuning` for this one cycle,
    :math:`d \sim N(0, (1-\beta)\mathbf C_s + \beta\mathbf C_e + \mathbf R)`
    (:class:`~pyoops.diagnostics.tuning.model.HybridCovarianceModel`, ``form: hybrid``, :math:`\beta` free,
    inflation and amplitudes fixed at 1), gives the score :math:`g_t` and Fisher information

    .. math::

        F_t = \tfrac12\,[\beta(1-\beta)]^2\,\mathrm{tr}\big(\mathbf S^{-1}(\mathbf C_e - \mathbf C_s)
        \mathbf S^{-1}(\mathbf C_e - \mathbf C_s)\big);

    :math:`I_t = \rho I_{t-1} + F_t`, :math:`\rho = 1 - 1/\text{memory}`, and one Fisher-scoring step
    :math:`\phi \leftarrow \phi - g_t/I_t` (at most 1 in logit) — the same step as the ``likelihood``
    inflation scheme (:func:`~pyoops.assimilation.adaptive_inflation.fisher_scoring_step`).  Its fixed
    point maximises the exponentially weighted likelihood of the last ~``memory`` cycles;
    :math:`I_0 = 1/\sigma_0^2` (``initial sd``, logit scale).

``el gharamti`` (DART, El Gharamti et al. 2021)
    Per observation, :math:`d_i \sim N(0, Y_i + wZ_i)` with :math:`Y_i = \sigma_{s,i}^2 + \sigma_{o,i}^2`,
    :math:`Z_i = \rho_e(\sigma_{e,i}^2 - \sigma_{s,i}^2)` (:math:`\sigma^2` the diagonals of
    :math:`\mathbf C_s, \mathbf C_e`; :math:`\rho_e = 1`: the members are inflated before), Gaussian prior
    :math:`w \sim N(\bar w, \sigma_w^2)` with fixed :math:`\sigma_w` (``initial sd``); the observations are
    used one after another, each MAP becoming the next prior mean.  The MAP maximises
    :math:`-\tfrac12\log\theta^2 - \tfrac12 d^2/\theta^2 - \tfrac12(w - \bar w)^2/\sigma_w^2`,
    :math:`\theta^2 = Y + wZ`; its stationarity condition is the cubic
    :math:`2\theta^4(w - \bar w) + \sigma_w^2 Z(\theta^2 - d^2) = 0`, whose real roots and the ends
    of :math:`[0, 1]` are compared (:func:`el_gharamti_map`): the constrained MAP, i.e. the MAP clipped
    to :math:`[0, 1]`.

Identifiability guards (no update of :math:`\beta` in a cycle where they hold):

* ``likelihood``: :math:`\beta` is not identifiable when :math:`\mathbf C_e \propto \mathbf C_s` in
  expectation — then :math:`(1-\beta)\mathbf C_s + \beta\mathbf C_e = (1 - \beta + \beta\kappa)\mathbf C_s`
  and :math:`\beta` is confounded with the amplitude of :math:`\mathbf B` (the inflation's job).  A
  per-cycle criterion cannot see this: with few members :math:`\mathbf C_e` differs from
  :math:`\mathbf C_s` by its sampling noise every cycle, so this cycle's Fisher information stays of
  order one and its whitened cosine far from 1 even when the members are draws from
  :math:`\mathbf B_s`, and the likelihood then drives :math:`\beta` towards 0 only to remove sampling
  noise.  The guard is therefore the *debiased, pooled* whitened cosine

  .. math::

      c_t = \frac{\sum_k\rho^{t-k}\,\langle\tilde{\mathbf C}_{s,k}, \tilde{\mathbf C}_{e,k}\rangle}
      {\big(\sum_k\rho^{t-k}\|\tilde{\mathbf C}_{s,k}\|^2\big)^{1/2}
       \big(\sum_k\rho^{t-k}\widehat{\|\mathbf\Sigma_{e,k}\|^2}\big)^{1/2}},\qquad
      \tilde{\mathbf X} = \mathbf R^{-1/2}\mathbf X\mathbf R^{-1/2},

  where, for an unlocalized sample covariance with :math:`\nu = N - 1` degrees of freedom,
  :math:`\widehat{\|\mathbf\Sigma\|^2} = \nu(\nu\|\tilde{\mathbf C}_e\|^2 - (\mathrm{tr}\,\tilde{\mathbf C}_e)^2)/((\nu+2)(\nu-1))`
  is the unbiased estimate of the squared Frobenius norm of its expectation (Wishart moments:
  :math:`E\,\mathrm{tr}\hat{\mathbf\Sigma}^2 = (1 + 1/\nu)\mathrm{tr}\mathbf\Sigma^2 + (\mathrm{tr}\mathbf\Sigma)^2/\nu`,
  :math:`E(\mathrm{tr}\hat{\mathbf\Sigma})^2 = (\mathrm{tr}\mathbf\Sigma)^2 + 2\,\mathrm{tr}\mathbf\Sigma^2/\nu`;
  a localized :math:`\mathbf C_e` is used as it is).  Members drawn from :math:`\mathbf B_s` give
  :math:`c_t \to 1`; a flow-dependent ensemble gives :math:`c_t < 1` even when its time mean equals
  :math:`\mathbf C_s` (the numerator sees the mean, the denominator the mean square).  No update while
  :math:`c_t \ge` ``guard cosine`` or during the first ``guard cycles`` cycles (the pooled statistic
  is still noisy); the information is not accumulated either.
* ``el gharamti``: DART's guard, an observation with :math:`|\sigma_{e,i}^2 - \sigma_{s,i}^2| \le
  \epsilon\,\sigma_{o,i}^2` (``epsilon``) is skipped.  It is a per-observation, per-cycle test and does not
  stop the drift caused by sampling noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from pyoops.assimilation.adaptive_inflation import fisher_scoring_step
from pyoops.config.parameters import Parameters

__all__ = ["AdaptiveHybridWeight", "AdaptiveHybridWeightParameters", "HybridInnovations", "el_gharamti_map",
           "hybrid_weight_score", "unbiased_squared_norm"]

_DEFAULT_SD = {"likelihood": 1.0, "el gharamti": 0.1}


class AdaptiveHybridWeightParameters(Parameters):
    """The ``adaptive.hybrid weight`` section of ``pyoops cycle``."""

    scheme: Literal["likelihood", "el gharamti"] = Field(
        description="likelihood (pyoops: recursive ML of logit beta with forgetting) or el gharamti (DART, El "
                    "Gharamti 2021: per-observation MAP, Gaussian prior of fixed sd).")
    initial: float = Field(0.5, gt=0, lt=1, description="Initial beta (ensemble weight; the static one is 1 - beta).")
    memory: float = Field(100.0, gt=1, description="likelihood: forgetting factor rho = 1 - 1/memory (cycles).")
    initial_sd: float | None = Field(None, gt=0, description="likelihood: prior sd of logit beta, I_0 = 1/sd^2 "
                                                             "(default 1); el gharamti: the fixed prior sd of w "
                                                             "(default 0.1).")
    bounds: tuple[float, float] | None = Field(None, description="Bounds of beta: likelihood 0 < lower < upper < 1 "
                                                                "(default [0.01, 0.99]), el gharamti default [0, 1].")
    guard_cosine: float = Field(0.9, gt=0, description="likelihood: no update while the debiased, pooled "
                                                       "whitened cosine of C_s and C_e is at least this (it may "
                                                       "exceed 1: it is debiased).")
    guard: bool = Field(True, description="likelihood: the identifiability guard (false: update every cycle).")
    guard_cycles: int = Field(10, ge=0, description="likelihood: no update in the first cycles (the pooled guard "
                                                    "statistic is still noisy).")
    epsilon: float = Field(1e-3, ge=0, description="el gharamti: skip an observation where |sigma_e^2 - sigma_s^2| "
                                                   "<= epsilon sigma_o^2.")

    @model_validator(mode="after")
    def _bounds(self) -> "AdaptiveHybridWeightParameters":
        lo, hi = self.limits
        if not (0.0 <= lo < hi <= 1.0) or (self.scheme == "likelihood" and (lo <= 0.0 or hi >= 1.0)):
            raise ValueError(f"bounds must satisfy 0 {'<' if self.scheme == 'likelihood' else '<='} lower < upper "
                             f"{'<' if self.scheme == 'likelihood' else '<='} 1, got {self.bounds}")
        if not lo <= self.initial <= hi:
            raise ValueError(f"initial {self.initial} is outside the bounds {list(self.limits)}")
        return self

    @property
    def limits(self) -> tuple[float, float]:
        """The bounds of beta (given, or the scheme's default)."""
        if self.bounds is not None:
            return (float(self.bounds[0]), float(self.bounds[1]))
        return (0.01, 0.99) if self.scheme == "likelihood" else (0.0, 1.0)

    @property
    def sd0(self) -> float:
        return self.initial_sd if self.initial_sd is not None else _DEFAULT_SD[self.scheme]


@dataclass
class HybridInnovations:
    r"""One cycle in observation space: :math:`d` ``(p,)``, :math:`\sigma_o^2` ``(p,)``,
    :math:`\mathbf C_s` ``(p, p)``, :math:`\mathbf C_e` ``(p, p)`` and the degrees of freedom :math:`\nu = N - 1` of
    an unlocalized sample :math:`\mathbf C_e` (None when localized: no sampling-noise correction)."""

    departures: np.ndarray
    obs_variance: np.ndarray
    static: np.ndarray
    ensemble: np.ndarray
    dof: int | None = None

    @classmethod
    def from_members(cls, departures: np.ndarray, obs_variance: np.ndarray, static: np.ndarray,
                     perturbations: np.ndarray) -> "HybridInnovations":
        """:math:`\\mathbf C_e = \\mathbf Y^\\mathrm T\\mathbf Y/(N-1)` from ``perturbations`` :math:`\\mathbf Y` ``(N, p)``."""
        y = np.asarray(perturbations, dtype=np.float64)
        n = y.shape[0]
        return cls(np.asarray(departures, dtype=np.float64), np.asarray(obs_variance, dtype=np.float64),
                   np.asarray(static, dtype=np.float64), (y.T @ y) / (n - 1), n - 1)

    def whitened(self) -> tuple[np.ndarray, np.ndarray]:
        r""":math:`(\tilde{\mathbf C}_s, \tilde{\mathbf C}_e)`, :math:`\tilde{\mathbf X} = \mathbf R^{-1/2}\mathbf X\mathbf R^{-1/2}`."""
        w = 1.0 / np.sqrt(self.obs_variance)
        ww = w[:, None] * w[None, :]
        return self.static * ww, self.ensemble * ww


def unbiased_squared_norm(c: np.ndarray, dof: int | None) -> float:
    r"""Unbiased :math:`\|E\hat{\mathbf\Sigma}\|_F^2` from a sample covariance with ``dof`` :math:`\nu` degrees of
    freedom: :math:`\nu(\nu\|\hat{\mathbf\Sigma}\|^2 - (\mathrm{tr}\hat{\mathbf\Sigma})^2)/((\nu+2)(\nu-1))`
    (the module docstring); ``dof`` None or below 2: :math:`\|\hat{\mathbf\Sigma}\|^2` as it is."""
    a = float(np.sum(c * c))
    if dof is None or dof < 2:
        return a
    b = float(np.trace(c)) ** 2
    return dof * (dof * a - b) / ((dof + 2.0) * (dof - 1.0))


def hybrid_weight_score(cycle: HybridInnovations, beta: float) -> tuple[float, float]:
    r"""Score :math:`\partial_\phi(-\log L)` and Fisher information of :math:`\phi = \mathrm{logit}\,\beta` for one cycle.

    The tuning likelihood (:func:`~pyoops.diagnostics.tuning.estimators.build_model`, form ``hybrid``,
    :math:`\beta` free, every other parameter at 1) on a one-cycle
    :class:`~pyoops.diagnostics.tuning.data.TuningData` whose static factor and ensemble perturbations
    are symmetric square roots of :math:`\mathbf C_s` and :math:`\mathbf C_e` (eigen-decomposition; the
    perturbations scaled by :math:`\sqrt{K-1}` so that :math:`\mathbf Y\mathbf Y^\mathrm T/(K-1) = \mathbf C_e`).
    """
    from pyoops.diagnostics.tuning.data import TuningCycle, TuningData
    from pyoops.diagnostics.tuning.estimators import build_model
    from pyoops.diagnostics.tuning.parameters import to_internal

    def factor(c: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(c)
        return v * np.sqrt(np.maximum(w, 0.0))

    gs, ge = factor(cycle.static), factor(cycle.ensemble)
    data = TuningData((TuningCycle(cycle.departures, np.sqrt(cycle.obs_variance), gs, 1.0,
                                   ge * math.sqrt(ge.shape[1] - 1)),))
    model, _ = build_model(data, ("beta",), {"inflation": 1.0})
    ev = model.evaluate(np.array([to_internal("beta", beta)]), gradient=True, fisher=True)
    return float(ev.gradient[0]), float(ev.fisher[0, 0])


def el_gharamti_log_posterior(w: np.ndarray, mean: float, sd: float, d: float, y: float, z: float) -> np.ndarray:
    r""":math:`-\tfrac12\log\theta^2 - \tfrac12 d^2/\theta^2 - \tfrac12(w-\bar w)^2/\sigma_w^2`, :math:`\theta^2 = Y + wZ`
    (:math:`-\infty` where :math:`\theta^2 \le 0`)."""
    w = np.asarray(w, dtype=np.float64)
    theta2 = y + w * z
    ok = theta2 > 0
    t = np.where(ok, theta2, 1.0)
    return np.where(ok, -0.5 * np.log(t) - 0.5 * d * d / t - 0.5 * ((w - mean) / sd) ** 2, -np.inf)


def el_gharamti_map(mean: float, sd: float, d: float, y: float, z: float, bounds: tuple[float, float] = (0.0, 1.0)
                    ) -> float:
    r"""The MAP of :math:`w` on ``bounds`` for one observation (module docstring): the real roots of the cubic
    :math:`2(Y + wZ)^2(w - \bar w) + \sigma_w^2 Z(Y + wZ - d^2) = 0` inside the bounds and the bounds themselves,
    the one with the largest log posterior."""
    lo, hi = bounds
    # 2 (Y + wZ)^2 (w - m) + v Z (Y + wZ - d^2), expanded in powers of w.
    v = sd * sd
    c3 = 2.0 * z * z
    c2 = 4.0 * y * z - 2.0 * z * z * mean
    c1 = 2.0 * y * y - 4.0 * y * z * mean + v * z * z
    c0 = -2.0 * y * y * mean + v * z * (y - d * d)
    roots = np.roots([c3, c2, c1, c0]) if z != 0.0 else np.array([mean])
    real = roots[np.abs(roots.imag) <= 1e-10 * np.maximum(1.0, np.abs(roots.real))].real
    candidates = np.concatenate([real[(real > lo) & (real < hi)], [lo, hi]])
    return float(candidates[np.argmax(el_gharamti_log_posterior(candidates, mean, sd, d, y, z))])


class AdaptiveHybridWeight:
    """The hybrid weight :math:`\\beta` and its update; the state is restartable (``state_arrays``)."""

    def __init__(self, params: AdaptiveHybridWeightParameters) -> None:
        self.params = params
        self.beta = float(params.initial)
        #: Accumulated Fisher information of logit beta (scheme likelihood).
        self.information = 1.0 / params.sd0**2 if params.scheme == "likelihood" else 0.0
        #: The guard's pooled sums (forgetting factor rho) of <C_s, C_e>, the squared norm of C_s and the unbiased
        #: squared norm of E C_e (whitened), and the number of cycles seen.
        self.pooled = np.zeros(3)
        self.cycles = 0
        #: The guard's cosine and whether the last cycle updated beta (diagnostics).
        self.cosine = math.nan
        self.updated = False

    # -- state ------------------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"beta": np.array([self.beta]), "information": np.array([self.information]),
                "pooled": self.pooled.copy(), "cycles": np.array([float(self.cycles)]),
                "cosine": np.array([self.cosine]), "updated": np.array([float(self.updated)])}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.beta = float(np.asarray(arrays["beta"])[0])
        self.information = float(np.asarray(arrays["information"])[0])
        self.pooled = np.array(arrays["pooled"], dtype=np.float64)
        self.cycles = int(np.asarray(arrays["cycles"])[0])
        self.cosine = float(np.asarray(arrays["cosine"])[0])
        self.updated = bool(np.asarray(arrays["updated"])[0])

    # -- the guard ----------------------------------------------------------------------------------
    def guard_cosine(self, cycle: HybridInnovations) -> float:
        """Accumulate this cycle into the pooled, debiased whitened cosine and return it (module docstring)."""
        rho = 1.0 - 1.0 / self.params.memory
        cs, ce = cycle.whitened()
        this = np.array([float(np.sum(cs * ce)), float(np.sum(cs * cs)), unbiased_squared_norm(ce, cycle.dof)])
        self.pooled = rho * self.pooled + this
        self.cycles += 1
        se, ss, ee = self.pooled
        return se / math.sqrt(ss * ee) if ss > 0 and ee > 0 else math.inf

    # -- update ------------------------------------------------------------------------------------
    def update(self, cycle: HybridInnovations) -> float:
        """Update from this cycle (before its analysis); returns the :math:`\\beta` the analysis uses."""
        p = self.params
        lo, hi = p.limits
        self.updated = False
        if p.scheme == "likelihood":
            self.cosine = self.guard_cosine(cycle)
            if p.guard and (self.cycles <= p.guard_cycles or not self.cosine < p.guard_cosine):
                return self.beta
            g, f = hybrid_weight_score(cycle, self.beta)
            step, info = fisher_scoring_step(np.array(self.information), np.array(g), np.array(f), p.memory)
            self.information = float(info)
            phi = math.log(self.beta) - math.log1p(-self.beta) - float(step)
            self.beta = min(max(1.0 / (1.0 + math.exp(-phi)), lo), hi)
            self.updated = True
            return self.beta
        var_s, var_e, var_o = np.diag(cycle.static), np.diag(cycle.ensemble), cycle.obs_variance
        y, z = var_s + var_o, var_e - var_s
        w = self.beta
        for i in np.flatnonzero(np.abs(z) > p.epsilon * var_o):
            w = el_gharamti_map(w, p.sd0, float(cycle.departures[i]), float(y[i]), float(z[i]), (lo, hi))
            self.updated = True
        self.beta = w
        return self.beta
