"""Tuning of hybrid B and R from innovations: likelihood, estimators, identifiability, pooling.

Works on observation-space arrays only (:class:`~pyoops.diagnostics.tuning.data.TuningData` of
:class:`~pyoops.diagnostics.tuning.data.TuningCycle`):

* :mod:`~pyoops.diagnostics.tuning.data` — the data contract;
* :mod:`~pyoops.diagnostics.tuning.localization` — Gaspari–Cohn in observation space, distances;
* :mod:`~pyoops.diagnostics.tuning.parameters` — parameter names, log/logit scales, bounds;
* :mod:`~pyoops.diagnostics.tuning.model` — exact likelihood, analytic gradient, Fisher information;
* :mod:`~pyoops.diagnostics.tuning.matrix_free` — the same without dense matrices, for large observation counts;
* :mod:`~pyoops.diagnostics.tuning.priors` — priors of the MAP estimator;
* :mod:`~pyoops.diagnostics.tuning.estimators` — :func:`~pyoops.diagnostics.tuning.estimators.estimate`
  (ML, MAP, Desroziers, moments);
* :mod:`~pyoops.diagnostics.tuning.uncertainty` — intervals, correlations, identifiability verdicts;
* :mod:`~pyoops.diagnostics.tuning.crossval` — held-out likelihood, learning curves;
* :mod:`~pyoops.diagnostics.tuning.pooling` — hierarchical pooling across regions or obs groups;
* :mod:`~pyoops.diagnostics.tuning.simulate` — networks and innovations from known parameters.

See :doc:`/tuning` for the mathematics and the measured coverage.
"""

from pyoops.util.lazy import lazy_exports

# Lazy (PEP 562): importing one submodule (e.g. the spectral likelihood the cycling uses) does not import
# the estimators and with them scipy.optimize and scipy.stats.
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "TuningCycle": "pyoops.diagnostics.tuning.data",
    "TuningData": "pyoops.diagnostics.tuning.data",
    "METHODS": "pyoops.diagnostics.tuning.estimators",
    "TuningResult": "pyoops.diagnostics.tuning.estimators",
    "estimate": "pyoops.diagnostics.tuning.estimators",
    "negative_log_likelihood": "pyoops.diagnostics.tuning.estimators",
    "euclidean_distance": "pyoops.diagnostics.tuning.localization",
    "gaspari_cohn": "pyoops.diagnostics.tuning.localization",
    "periodic_distance": "pyoops.diagnostics.tuning.localization",
    "BetaPrior": "pyoops.diagnostics.tuning.priors",
    "HalfNormalLog": "pyoops.diagnostics.tuning.priors",
    "LogNormal": "pyoops.diagnostics.tuning.priors",
    "NormalInternal": "pyoops.diagnostics.tuning.priors",
    "default_priors": "pyoops.diagnostics.tuning.priors",
    "ParameterEstimate": "pyoops.diagnostics.tuning.uncertainty",
})
