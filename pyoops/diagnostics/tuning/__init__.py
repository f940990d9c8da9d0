"""Tuning of hybrid B and R from innovations: likelihood, estimators, identifiability, pooling.

Works on observation-space arrays only (:class:`~pyoops.diagnostics.tuning.data.TuningData` of :class:`~pyoops.diagnostics.tuning.data.TuningCycle`):

* :mod:`~pyoops.diagnostics.tuning.data` — the data contract;
* :mod:`~pyoops.diagnostics.tuning.localization` — Gaspari–Cohn in observation space, distances;
* :mod:`~pyoops.diagnostics.tuning.parameters` — parameter names, log/logit scales, bounds;
* :mod:`~pyoops.diagnostics.tuning.model` — exact likelihood, analytic gradient, Fisher information;
* :mod:`~pyoops.diagnostics.tuning.priors` — priors of the MAP estimator;
* :mod:`~pyoops.diagnostics.tuning.estimators` — :func:`~pyoops.diagnostics.tuning.estimators.estimate` (ML, MAP, Desroziers, moments);
* :mod:`~pyoops.diagnostics.tuning.uncertainty` — intervals, correlations, identifiability verdicts;
* :mod:`~pyoops.diagnostics.tuning.crossval` — held-out likelihood, learning curves;
* :mod:`~pyoops.diagnostics.tuning.pooling` — hierarchical pooling across regions or obs groups;
* :mod:`~pyoops.diagnostics.tuning.simulate` — networks and innovations from known parameters.

See :doc:`/tuning` for the mathematics and the measured coverage.
"""

from pyoops.diagnostics.tuning.data import TuningCycle, TuningData
from pyoops.diagnostics.tuning.estimators import (
    METHODS,
    TuningResult,
    estimate,
    negative_log_likelihood,
)
from pyoops.diagnostics.tuning.localization import (
    euclidean_distance,
    gaspari_cohn,
    periodic_distance,
)
from pyoops.diagnostics.tuning.priors import (
    BetaPrior,
    HalfNormalLog,
    LogNormal,
    NormalInternal,
    default_priors,
)
from pyoops.diagnostics.tuning.uncertainty import ParameterEstimate

__all__ = [
    "METHODS",
    "BetaPrior",
    "HalfNormalLog",
    "LogNormal",
    "NormalInternal",
    "ParameterEstimate",
    "TuningCycle",
    "TuningData",
    "TuningResult",
    "default_priors",
    "estimate",
    "euclidean_distance",
    "gaspari_cohn",
    "negative_log_likelihood",
    "periodic_distance",
]
