r"""Hierarchical pooling of the parameters across regions (or obs groups).

Three estimates of each region's parameters :math:`\theta_r`:

* **independent** — :func:`~pyoops.diagnostics.tuning.estimators.estimate` on the region's
  observations alone: internal estimate :math:`\tilde\phi_r` with variance :math:`v_r`
  (the diagonal of the region's inverse information);
* **global** — one estimate from all observations (every region the same value);
* **hierarchical** (empirical Bayes, partial pooling), per parameter on the internal
  (log/logit) scale: between-region variance by the DerSimonian–Laird moment estimator

  .. math::

      w_r = 1/v_r,\quad \bar\phi = \frac{\sum w_r\tilde\phi_r}{\sum w_r},\quad
      Q = \sum_r w_r(\tilde\phi_r - \bar\phi)^2,\quad
      \hat\tau^2 = \max\Big(0,\ \frac{Q - (R-1)}{\sum w_r - \sum w_r^2/\sum w_r}\Big),

  the random-effects mean :math:`\hat\mu = \sum_r\tilde\phi_r/(v_r+\hat\tau^2) \big/ \sum_r 1/(v_r+\hat\tau^2)`
  as the pool, and the shrinkage

  .. math::

      \hat\phi_r = \frac{\tilde\phi_r/v_r + \hat\mu/\hat\tau^2}{1/v_r + 1/\hat\tau^2}
      \quad(\hat\phi_r = \hat\mu \text{ when } \hat\tau^2 = 0),\qquad
      \mathrm{Var}(\hat\phi_r) \approx (1/v_r + 1/\hat\tau^2)^{-1},

  so a sparse region (large :math:`v_r`) moves toward the pool and a well-observed one keeps
  its own estimate.  The pool is the random-effects mean rather than the global fit: the
  global fit weights regions by their observations as if :math:`\tau^2 = 0`.

Optionally (``refit=True``) each region is re-estimated by MAP with the shared prior
:math:`\phi_r \sim N(\hat\mu, \max(\hat\tau, \tau_\min)^2)` on the internal scale (a joint
fit of the regions given the hyperparameters; :math:`\tau_\min` = 0.02 keeps the prior proper
when :math:`\hat\tau = 0`), which also moves the parameters held fixed in the shrinkage formula
consistently.  Marginal variances ignore the cross-parameter correlations of each region.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

from pyoops.diagnostics.tuning.data import TuningData
from pyoops.diagnostics.tuning.estimators import TuningResult, estimate
from pyoops.diagnostics.tuning.parameters import to_internal, to_natural
from pyoops.diagnostics.tuning.priors import NormalInternal
from pyoops.diagnostics.tuning.uncertainty import covariance_from_information

__all__ = ["PoolingResult", "dersimonian_laird", "pool", "shrink"]

TAU_MIN = 0.02


def dersimonian_laird(estimates: np.ndarray, variances: np.ndarray) -> tuple[float, float, float]:
    r"""``(tau2, mu, Q)``: DerSimonian–Laird :math:`\hat\tau^2` (truncated at 0), random-effects mean, Cochran's Q."""
    x = np.asarray(estimates, dtype=float)
    v = np.asarray(variances, dtype=float)
    w = 1.0 / v
    xbar = float((w * x).sum() / w.sum())
    q = float((w * (x - xbar) ** 2).sum())
    denom = float(w.sum() - (w * w).sum() / w.sum())
    tau2 = max(0.0, (q - (x.size - 1)) / denom) if denom > 0 else 0.0
    ws = 1.0 / (v + tau2)
    mu = float((ws * x).sum() / ws.sum())
    return tau2, mu, q


def shrink(estimates: np.ndarray, variances: np.ndarray, mu: float, tau2: float) -> tuple[np.ndarray, np.ndarray]:
    """Partial-pooling estimates and their variances (module docstring)."""
    x = np.asarray(estimates, dtype=float)
    v = np.asarray(variances, dtype=float)
    if tau2 <= 0:
        return np.full_like(x, mu), np.zeros_like(x)
    prec = 1.0 / v + 1.0 / tau2
    return (x / v + mu / tau2) / prec, 1.0 / prec


@dataclass
class PoolingResult:
    """Independent, global and hierarchical estimates per group label (natural values).

    ``independent[label]`` and ``global_result`` are full :class:`~pyoops.diagnostics.tuning.estimators.TuningResult`; ``hierarchical[label]``
    maps each free parameter to its shrunk natural value and ``hierarchical_intervals`` to its
    interval; ``tau2``/``mean`` are the hyperparameters per parameter (internal scale),
    ``weights[name][r]`` the weight :math:`\\hat\\tau^2/(v_r + \\hat\\tau^2)` kept on the region's own estimate.
    """

    by: str
    labels: list[str]
    free: tuple[str, ...]
    independent: dict[str, TuningResult]
    global_result: TuningResult
    hierarchical: dict[str, dict[str, float]]
    hierarchical_intervals: dict[str, dict[str, tuple[float, float]]]
    tau2: dict[str, float]
    mean: dict[str, float]
    q: dict[str, float]
    weights: dict[str, list[float]]
    refit: dict[str, TuningResult] = field(default_factory=dict)

    def values(self, label: str, kind: str) -> dict[str, float]:
        """All natural values of a region under ``kind`` ``"independent"``, ``"global"``, ``"hierarchical"``
        or ``"refit"`` (fixed parameters included)."""
        if kind == "independent":
            return dict(self.independent[label].values)
        if kind == "global":
            return dict(self.global_result.values)
        if kind == "refit":
            return dict(self.refit[label].values)
        if kind == "hierarchical":
            return {**self.independent[label].values, **self.hierarchical[label]}
        raise ValueError(f"unknown kind {kind!r}")

    def to_dict(self) -> dict:
        """JSON-compatible summary."""
        return {"by": self.by, "labels": self.labels, "parameters": list(self.free),
                "independent": {k: r.to_dict() for k, r in self.independent.items()},
                "global": self.global_result.to_dict(),
                "hierarchical": self.hierarchical,
                "hierarchical intervals": {k: {n: list(v) for n, v in d.items()}
                                           for k, d in self.hierarchical_intervals.items()},
                "tau2": self.tau2, "mean": self.mean, "Q": self.q, "weights": self.weights,
                "refit": {k: r.to_dict() for k, r in self.refit.items()}}


def pool(data: TuningData, parameters: Sequence[str], by: str = "region", *, method: str = "ml",
         fixed: Mapping[str, float] | None = None, level: float = 0.95, refit: bool = False,
         **estimate_kwargs) -> PoolingResult:
    """Independent, global and empirical-Bayes pooled estimates of ``parameters`` per region or obs group
    (``by`` = ``"region"`` or ``"obs_group"``); ``method`` ``"ml"`` or ``"map"`` for the independent fits."""
    if by not in ("region", "obs_group"):
        raise ValueError(f"by must be 'region' or 'obs_group', got {by!r}")
    labels = data.regions() if by == "region" else data.obs_groups()
    if len(labels) < 2:
        raise ValueError(f"pooling needs at least two {by} labels, got {labels}")
    parameters = tuple(parameters)
    kw = dict(estimate_kwargs, fixed=fixed, level=level)
    independent = {}
    for lab in labels:
        part = data.select(region=lab) if by == "region" else data.select(obs_group=lab)
        independent[lab] = estimate(part, method, parameters, **kw)
    global_result = estimate(data, method, parameters, **kw)
    z = norm.ppf(0.5 + level / 2)
    hier: dict[str, dict[str, float]] = {lab: {} for lab in labels}
    hier_int: dict[str, dict[str, tuple[float, float]]] = {lab: {} for lab in labels}
    tau2s, means, qs, weights = {}, {}, {}, {}
    for j, name in enumerate(parameters):
        x = np.array([to_internal(name, independent[lab].values[name]) for lab in labels])
        v = np.array([covariance_from_information(independent[lab].information)[0][j, j] for lab in labels])
        tau2, mu, q = dersimonian_laird(x, v)
        shrunk, var = shrink(x, v, mu, tau2)
        tau2s[name], means[name], qs[name] = tau2, mu, q
        weights[name] = (tau2 / (v + tau2)).tolist() if tau2 > 0 else [0.0] * len(labels)
        for lab, s, sv in zip(labels, shrunk, var):
            hier[lab][name] = to_natural(name, float(s))
            sd = math.sqrt(max(float(sv), 0.0))
            hier_int[lab][name] = (to_natural(name, float(s - z * sd)), to_natural(name, float(s + z * sd)))
    out = PoolingResult(by, labels, parameters, independent, global_result, hier, hier_int, tau2s, means, qs, weights)
    if refit:
        priors = {n: NormalInternal(means[n], max(math.sqrt(tau2s[n]), TAU_MIN)) for n in parameters}
        for lab in labels:
            part = data.select(region=lab) if by == "region" else data.select(obs_group=lab)
            out.refit[lab] = estimate(part, "map", parameters, prior=priors, **kw)
    return out
