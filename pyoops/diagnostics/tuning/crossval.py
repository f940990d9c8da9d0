r"""Overfitting control: held-out likelihood by k-fold cross-validation, and learning curves.

Two partitions:

* ``scheme="time"`` — :math:`k` blocks of contiguous cycles; fold :math:`f` is fitted on the
  other blocks and scored on block :math:`f`.  Contiguous blocks keep serially correlated
  cycles together, so the score is not flattered by neighbours of the training cycles.
* ``scheme="observations"`` — every cycle's observations are split at random (seeded) into
  :math:`k` parts; fold :math:`f` is fitted on the other parts of all cycles and scored on part
  :math:`f`.  Held-out score: ``heldout="conditional"`` (default) is the predictive density of
  the held-out innovations *given* the training innovations of the same cycle,
  :math:`-\log p(d_\mathrm{te}\mid d_\mathrm{tr};\hat\theta)
  = [-\log p(d;\hat\theta)] - [-\log p(d_\mathrm{tr};\hat\theta)]`
  (the conditional Gaussian, computed as a difference of two likelihoods); it scores the
  cross-covariances between held-out and training observations, i.e. the spatial structure
  being tuned.  ``heldout="marginal"`` scores the held-out subset alone,
  :math:`-\log p(d_\mathrm{te};\hat\theta)`, which ignores those cross-covariances.

The fits and the held-out likelihoods use the likelihood settings in ``estimate_kwargs``
(``likelihood``, ``probes``, ``probe_seed``, ``max_pairs`` of
:func:`~pyoops.diagnostics.tuning.estimators.estimate`; default ``"auto"``), so large cycles
need no :math:`p\times p` matrix.  On the matrix-free stochastic path each likelihood is an
estimate with its probe standard error (:mod:`~pyoops.diagnostics.tuning.matrix_free`); the
conditional score is the difference of two of them, on different probes (their errors do not cancel).
Before reading a small difference in score between models, compare it with the probe standard
errors of :math:`-\log L` (``details["likelihood"]["nll standard error"]`` of the fits), or
raise ``probes``.

Scores are negative log-likelihoods *per observation* (lower is better), in-sample on the
training data and out-of-sample on the held-out data; the fitted parameters are kept per fold.
A learning curve refits on the first :math:`n` cycles for increasing :math:`n`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pyoops.diagnostics.tuning.data import TuningData
from pyoops.diagnostics.tuning.estimators import (
    LIKELIHOOD_KEYWORDS,
    TuningResult,
    estimate,
    negative_log_likelihood,
)

__all__ = ["CrossValidation", "FoldScore", "LearningPoint", "cross_validate", "learning_curve"]


@dataclass(frozen=True)
class FoldScore:
    """One fold: observation counts, per-observation scores and the fitted natural values."""

    fold: int
    train_nobs: int
    test_nobs: int
    in_sample: float
    out_of_sample: float
    values: Mapping[str, float]


@dataclass(frozen=True)
class CrossValidation:
    """All folds and their observation-weighted means (per-observation negative log-likelihoods)."""

    scheme: str
    heldout: str
    folds: tuple[FoldScore, ...]

    @property
    def in_sample(self) -> float:
        """Mean in-sample score, weighted by training observations."""
        w = np.array([f.train_nobs for f in self.folds], dtype=float)
        return float(np.dot(w, [f.in_sample for f in self.folds]) / w.sum())

    @property
    def out_of_sample(self) -> float:
        """Mean out-of-sample score, weighted by held-out observations."""
        w = np.array([f.test_nobs for f in self.folds], dtype=float)
        return float(np.dot(w, [f.out_of_sample for f in self.folds]) / w.sum())

    @property
    def gap(self) -> float:
        """Out-of-sample minus in-sample score (overfitting shows as a positive gap)."""
        return self.out_of_sample - self.in_sample

    def to_dict(self) -> dict:
        """JSON-compatible summary (infinite values, e.g. an unlocalized length, as None)."""
        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {"scheme": self.scheme, "heldout": self.heldout, "in-sample": self.in_sample,
                "out-of-sample": self.out_of_sample, "gap": self.gap,
                "folds": [{"fold": f.fold, "train observations": f.train_nobs, "test observations": f.test_nobs,
                           "in-sample": f.in_sample, "out-of-sample": f.out_of_sample,
                           "values": {k: num(v) for k, v in f.values.items()}}
                          for f in self.folds]}


def _time_folds(ncycles: int, k: int) -> list[np.ndarray]:
    edges = np.linspace(0, ncycles, k + 1).round().astype(int)
    return [np.arange(edges[i], edges[i + 1]) for i in range(k)]


def cross_validate(data: TuningData, k: int = 5, scheme: str = "time", *, heldout: str = "conditional",
                   seed: int = 0, form: str = "hybrid", **estimate_kwargs) -> CrossValidation:
    """k-fold cross-validation of :func:`~pyoops.diagnostics.tuning.estimators.estimate` (its keyword
    arguments in ``estimate_kwargs``: method, parameters, fixed, prior, bounds, likelihood, probes ...; the
    likelihood settings also serve the held-out scores)."""
    if scheme not in ("time", "observations"):
        raise ValueError(f"scheme must be 'time' or 'observations', got {scheme!r}")
    if heldout not in ("conditional", "marginal"):
        raise ValueError(f"heldout must be 'conditional' or 'marginal', got {heldout!r}")
    if k < 2:
        raise ValueError("k must be at least 2")
    estimate_kwargs = {**estimate_kwargs, "form": form}
    settings = {k: estimate_kwargs[k] for k in LIKELIHOOD_KEYWORDS if k in estimate_kwargs}
    folds = []
    if scheme == "time":
        if k > len(data.cycles):
            raise ValueError(f"{k} time folds need at least {k} cycles, got {len(data.cycles)}")
        blocks = _time_folds(len(data.cycles), k)
        for f, test_idx in enumerate(blocks):
            held = set(test_idx.tolist())
            train = data.take([i for i in range(len(data.cycles)) if i not in held])
            test = data.take(test_idx)
            res = estimate(train, **estimate_kwargs)
            folds.append(FoldScore(f, train.nobs, test.nobs, res.nll / train.nobs,
                                   negative_log_likelihood(test, res.values, form, **settings) / test.nobs,
                                   res.values))
    else:
        rng = np.random.default_rng(seed)
        labels = [rng.permutation(c.nobs) % k for c in data.cycles]
        for f in range(k):
            try:
                train = data.subset_observations([lab != f for lab in labels])
                test = data.subset_observations([lab == f for lab in labels])
            except ValueError as exc:
                raise ValueError(f"fold {f} is empty: cycles have too few observations for {k} folds") from exc
            res = estimate(train, **estimate_kwargs)
            if heldout == "marginal":
                out = negative_log_likelihood(test, res.values, form, **settings)
            else:
                out = negative_log_likelihood(data, res.values, form, **settings) - res.nll
            folds.append(FoldScore(f, train.nobs, test.nobs, res.nll / train.nobs, out / test.nobs, res.values))
    return CrossValidation(scheme, heldout if scheme == "observations" else "marginal", tuple(folds))


@dataclass(frozen=True)
class LearningPoint:
    """The estimate from the first ``ncycles`` cycles."""

    ncycles: int
    nobs: int
    result: TuningResult


def learning_curve(data: TuningData, sizes: Sequence[int], **estimate_kwargs) -> list[LearningPoint]:
    """Estimates (with intervals and verdicts) from the first ``n`` cycles for each ``n`` in ``sizes``."""
    out = []
    for n in sizes:
        if not 1 <= n <= len(data.cycles):
            raise ValueError(f"learning-curve size {n} outside 1..{len(data.cycles)}")
        part = data.head(n)
        out.append(LearningPoint(n, part.nobs, estimate(part, **estimate_kwargs)))
    return out
