r"""The estimators behind one interface, :func:`estimate`.

``method``:

* ``"ml"`` — maximum likelihood: minimise :math:`f(\phi) = -\log L` with L-BFGS-B, analytic
  gradient, bounds on the internal scale; uncertainty from the Fisher information at
  :math:`\hat\phi`, profile intervals optional.  ``likelihood="exact"``: Cholesky
  (:mod:`~pyoops.diagnostics.tuning.model`); ``"matrix-free"``: factored covariances, exact
  low-rank algebra without localization and stochastic traces and log-determinants with it
  (:mod:`~pyoops.diagnostics.tuning.matrix_free`); ``"auto"`` (default): exact while the dense
  matrices are affordable (:func:`resolve_likelihood`: every cycle has at most
  ``AUTO_EXACT_MAX_OBS`` = 2000 observations and their peak memory stays within
  ``AUTO_EXACT_MAX_BYTES`` = 4 GiB), matrix-free otherwise.  On the stochastic path the estimate
  is the root of the estimated score equations within the bounds (damped, bound-constrained Fisher
  scoring from the L-BFGS-B result, ``_solve_score_equations``).
* ``"map"`` — the same with :math:`f = -\log L - \sum_i\log p_i(\phi_i)` (priors of
  :mod:`~pyoops.diagnostics.tuning.priors`; defaults :func:`~pyoops.diagnostics.tuning.priors.default_priors`);
  the regularisation.  Information = Fisher + the priors' curvature (Laplace approximation).
* ``"desroziers"`` — the fixed point of Desroziers et al. (2005) for the amplitude of
  :math:`\mathbf{HBH}^\mathrm{T}` (``inflation``, the :math:`a_b` of the literature) and of
  :math:`\mathbf R` (``a_o`` or per obs group ``a_o[g]``):
  with the current :math:`\mathbf S = \mathbf B' + \mathbf R'` (:math:`\mathbf B' = \mathbf{HB_hH}^\mathrm{T}`
  scaled, :math:`\mathbf R'` scaled) the analysis in observation space gives
  :math:`d^o_a = \mathbf R'\mathbf S^{-1}d` and :math:`d^a_b = \mathbf B'\mathbf S^{-1}d`, and

  .. math::

      s_{o,g}^2 = \frac{\sum_k (d^o_a)_g^\mathrm{T} d_g}{\sum_k\mathrm{tr}\,\mathbf R'_g},\qquad
      s_b^2 = \frac{\sum_k (d^a_b)^\mathrm{T} d}{\sum_k\mathrm{tr}\,\mathbf B'},\qquad
      a_{o,g} \leftarrow s_{o,g}^2\,a_{o,g},\quad \lambda \leftarrow s_b^2\,\lambda,

  iterated until every :math:`|\log s^2| <` ``tolerance``; the number of iterations is
  reported.  This is the fixed point *on a fixed set of innovations*: in a cycled system the
  background error itself changes with the assumed :math:`\mathbf B`, so the cycled fixed
  point needs the cycle re-run with each update.  Its uncertainty is the sandwich
  (Godambe) covariance of the estimating equations
  :math:`\psi_j = \sum_k[d_k^\mathrm{T}\mathbf S_k^{-1}\mathbf X_j d_k - \mathrm{tr}\,\mathbf X_j]`
  (:math:`\mathbf X_j \in \{\mathbf B', \mathbf R'_g\}`): under the model
  :math:`\partial E[\psi_j]/\partial\phi_l = -\sum_k\mathrm{tr}(\mathbf X_l\mathbf S^{-1}\mathbf X_j)` and
  :math:`\mathrm{Cov}(\psi_j,\psi_l) = \sum_k[\mathrm{tr}(\mathbf X_j\mathbf X_l)
  + \mathrm{tr}(\mathbf S^{-1}\mathbf X_j\mathbf S\mathbf X_l)]`.
* ``"moments"`` — method of moments: least squares between the empirical and modelled
  second moments, whitened by :math:`\mathbf R^{-1/2}`,

  .. math::

      Q(\theta) = \sum_k\sum_{(i,j)} \frac{(d_{k,i}d_{k,j} - S_{k,ij}(\theta))^2}{\sigma_{o,i}^2\sigma_{o,j}^2}

  over all components (``components="all"``) or the variances only (``"variances"``).
  :math:`\mathbf S` is linear in the basis coefficients :math:`c = (c_s, c_e, r_g)`, so
  :math:`Q = c^\mathrm{T}\mathbf Gc - 2h^\mathrm{T}c + \mathrm{const}` with the Gram matrix
  :math:`\mathbf G` of the bases and :math:`h_a = \sum_k d_k^\mathrm{T}\tilde{\mathbf A}_a d_k` computed once
  (the 2×2 normal equations of SABER/BUMP's hybrid weights when the free parameters are
  :math:`(\beta, \lambda)`); ``length`` cannot be free (it enters non-linearly).  Sandwich
  covariance with :math:`\mathbf A = \mathbf J\mathbf G\mathbf J^\mathrm{T}` and
  :math:`\mathrm{Cov}(h_a, h_b) = 2\sum_k\mathrm{tr}(\tilde{\mathbf A}_a\mathbf S\tilde{\mathbf A}_b\mathbf S)`.

For the two estimating-equation methods the intervals rely on the Gaussian model at the
estimate (the plug-in :math:`\mathbf S(\hat\theta)`) and no profile is available; they always
use the dense model (``likelihood="matrix-free"`` is refused for them).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.optimize

from pyoops.diagnostics.tuning.data import TuningData
from pyoops.diagnostics.tuning.matrix_free import (
    DEFAULT_MAX_PAIRS,
    DEFAULT_PROBES,
    MatrixFreeCovarianceModel,
)
from pyoops.diagnostics.tuning.model import HybridCovarianceModel
from pyoops.diagnostics.tuning.optimize import minimize_scaled
from pyoops.diagnostics.tuning.parameters import Parametrization, is_group_amplitude
from pyoops.diagnostics.tuning.priors import Prior, default_priors, prior_terms
from pyoops.diagnostics.tuning.uncertainty import (
    ParameterEstimate,
    correlation_matrix,
    covariance_from_information,
    explain,
    parameter_estimates,
    profile_interval,
)

__all__ = ["AUTO_EXACT_MAX_BYTES", "AUTO_EXACT_MAX_OBS", "DENSE_BYTES_PER_ENTRY", "LIKELIHOODS", "LIKELIHOOD_KEYWORDS",
           "METHODS", "TuningResult", "build_model", "dense_bytes", "estimate", "likelihood_settings",
           "negative_log_likelihood", "resolve_likelihood"]

METHODS = ("ml", "map", "desroziers", "moments")
LIKELIHOODS = ("auto", "exact", "matrix-free")
#: The keyword arguments of :func:`estimate` (and :func:`build_model`, :func:`negative_log_likelihood`) that choose
#: the likelihood, passed on unchanged by the functions that fit or score on its behalf.
LIKELIHOOD_KEYWORDS = ("likelihood", "probes", "probe_seed", "max_pairs")
AUTO_EXACT_MAX_OBS = 2000          # likelihood="auto": dense Cholesky while every cycle has at most this many obs ...
AUTO_EXACT_MAX_BYTES = 4 * 2**30   # ... and the dense model's peak memory (dense_bytes) stays within 4 GiB
DENSE_BYTES_PER_ENTRY = 88         # peak bytes of the dense model per entry of a cycle's p x p matrices (measured)
_SEPARATION_SAMPLE = 2000          # observations per cycle used for the separation scales of the length bounds
_STOCHASTIC_LINE_SEARCH = 5        # L-BFGS-B line-search evaluations at most on the stochastic likelihood
_SCORE_TOLERANCE = 1e-3            # the score equations are solved when a step moves every parameter < 1e-3 sd
_TRUST_RADIUS = 1.0                # a Fisher-scoring step moves each internal parameter by at most 1 (a factor e)


@dataclass
class TuningResult:
    """An estimate with its uncertainty and identifiability (see :func:`estimate`).

    ``values`` holds every parameter of the model (free and fixed, natural scale);
    ``estimates`` the free ones with intervals and verdicts; ``information`` the information
    matrix of the free internal parameters (kind in ``information_kind``), ``correlation``
    their correlation, ``eigenvalues``/``eigenvectors`` its spectrum (ascending); ``notes``
    the identifiability explanations; ``nll`` :math:`-\\log L` at the estimate.
    """

    method: str
    form: str
    free: tuple[str, ...]
    values: dict[str, float]
    estimates: dict[str, ParameterEstimate]
    information: np.ndarray
    information_kind: str
    correlation: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    notes: list[str]
    nll: float
    nobs: int
    ncycles: int
    level: float
    converged: bool
    iterations: int
    message: str
    seconds: float
    priors: dict[str, str] = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    @property
    def internal(self) -> np.ndarray:
        """Internal (log/logit) values of the free parameters."""
        from pyoops.diagnostics.tuning.parameters import to_internal

        return np.array([to_internal(n, self.values[n]) for n in self.free])

    def natural_covariance(self) -> np.ndarray:
        r"""Covariance of the free parameters on the natural scale (delta method,
        :math:`\mathbf D\mathcal I^{-1}\mathbf D`, :math:`\mathbf D = \mathrm{diag}(d\theta/d\phi)`)."""
        from pyoops.diagnostics.tuning.uncertainty import transform_covariance

        return transform_covariance(self.free, self.internal, covariance_from_information(self.information)[0])

    def natural_information(self) -> np.ndarray:
        r"""Information of the natural parameters, :math:`\mathbf D^{-1}\mathcal I\mathbf D^{-1}`."""
        from pyoops.diagnostics.tuning.parameters import natural_derivative

        d = np.array([natural_derivative(n, self.values[n]) for n in self.free])
        return self.information / d[:, None] / d[None, :]

    def verdict(self, name: str) -> str:
        """The verdict of a free parameter."""
        return self.estimates[name].verdict

    def to_dict(self) -> dict:
        """JSON-compatible summary."""
        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {"method": self.method, "form": self.form, "level": self.level,
                "values": {k: num(v) for k, v in self.values.items()},
                "estimates": {k: e.to_dict() for k, e in self.estimates.items()},
                "information kind": self.information_kind,
                "information": self.information.tolist(), "correlation": self.correlation.tolist(),
                "eigenvalues": self.eigenvalues.tolist(), "eigenvectors": self.eigenvectors.tolist(),
                "notes": list(self.notes), "negative log-likelihood": num(self.nll), "observations": self.nobs,
                "cycles": self.ncycles, "converged": self.converged, "iterations": self.iterations,
                "message": self.message, "seconds": self.seconds, "priors": dict(self.priors),
                "details": self.details}

    def summary(self) -> str:
        """A printable table, one line per free parameter, then the notes."""
        head = (f"{self.method} ({self.form} form): {self.nobs} observations in {self.ncycles} cycles, "
                f"{100 * self.level:g} % intervals ({self.information_kind}); -log L = {self.nll:.6g}; "
                f"{'converged' if self.converged else 'NOT converged'} in {self.iterations} iterations")
        lines = [head]
        for name, e in self.estimates.items():
            lo, hi = e.interval
            kind = "profile" if e.profile_interval is not None else "Wald"
            lines.append(f"  {name:<12} {e.value:10.4g}  [{lo:.4g}, {hi:.4g}] ({kind})  {e.verdict}: {e.reason}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _length_scales(data: TuningData, max_cycles: int = 20) -> tuple[float, float, float]:
    """(smallest positive, median positive, largest) observation separation over the first cycles; a cycle with
    more than ``_SEPARATION_SAMPLE`` = 2000 observations contributes a random subset of 2000 (generator seeded
    with 0; no :math:`p\\times p` matrix), whatever the likelihood."""
    pos = []
    rng = np.random.default_rng(0)
    for c in data.cycles[:max_cycles]:
        if c.nobs > _SEPARATION_SAMPLE:
            c = c.subset(np.sort(rng.choice(c.nobs, _SEPARATION_SAMPLE, replace=False)))
        r = data.distances(c)
        r = r[np.triu_indices(c.nobs, 1)]
        pos.append(r[r > 0])
    allr = np.concatenate(pos) if pos else np.zeros(0)
    if allr.size == 0:
        raise ValueError("no pair of distinct observation locations: the localization length has nothing to act on")
    return float(allr.min()), float(np.median(allr)), float(allr.max())


def dense_bytes(data: TuningData) -> int:
    r"""Peak memory of the dense (Cholesky) model of ``data``: ``DENSE_BYTES_PER_ENTRY`` :math:`\times\sum_kp_k^2`
    (it holds :math:`\mathbf C_s`, :math:`\mathbf C_e` and the distances, 3 :math:`p_k^2` doubles per cycle, and
    an evaluation with the Fisher information peaks at 11, measured with ``tracemalloc``)."""
    return DENSE_BYTES_PER_ENTRY * sum(c.nobs ** 2 for c in data.cycles)


def resolve_likelihood(data: TuningData, likelihood: str, method: str = "ml") -> str:
    """``"exact"`` or ``"matrix-free"`` for ``likelihood``; the Desroziers and moment methods always take the
    dense model.

    ``"auto"`` is exact while the dense model is affordable: every cycle has at most ``AUTO_EXACT_MAX_OBS`` = 2000
    observations (one evaluation with the Fisher information then takes about 1 s per cycle) *and*
    :func:`dense_bytes` is at most ``AUTO_EXACT_MAX_BYTES`` = 4 GiB (e.g. 12 cycles of 2000 observations, 48 of
    1000); matrix-free otherwise, whatever the static factor's rank :math:`K` (a :math:`K > p/2` gets a
    randomised low-rank preconditioner, :mod:`~pyoops.diagnostics.tuning.matrix_free`).
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    if method not in ("ml", "map"):
        if likelihood == "matrix-free":
            raise ValueError(f"likelihood='matrix-free' serves methods 'ml' and 'map' only; {method!r} needs the "
                             "dense covariances (use likelihood 'exact' or 'auto')")
        return "exact"
    if likelihood == "auto":
        affordable = (max(c.nobs for c in data.cycles) <= AUTO_EXACT_MAX_OBS
                      and dense_bytes(data) <= AUTO_EXACT_MAX_BYTES)
        return "exact" if affordable else "matrix-free"
    return likelihood


def likelihood_settings(result: TuningResult) -> dict[str, Any]:
    """The likelihood keywords of :func:`build_model` / :func:`estimate` that ``result`` was computed with (from
    ``result.details["likelihood"]``; exact when absent, as for Desroziers and moments)."""
    info = result.details.get("likelihood", {})
    if info.get("likelihood") != "matrix-free":
        return {"likelihood": "exact"}
    return {"likelihood": "matrix-free", "probes": int(info.get("probes", DEFAULT_PROBES)),
            "probe_seed": int(info.get("probe seed", 0)), "max_pairs": info.get("max pairs", DEFAULT_MAX_PAIRS)}


def build_model(data: TuningData, parameters: Sequence[str] = (), fixed: Mapping[str, float] | None = None, *,
                form: str = "hybrid", bounds: Mapping[str, tuple[float, float]] | None = None,
                likelihood: str = "exact", probes: int = DEFAULT_PROBES, probe_seed: int = 0,
                max_pairs: int | None = DEFAULT_MAX_PAIRS,
                length_scales: tuple[float, float, float] | None = None
                ) -> tuple[HybridCovarianceModel | MatrixFreeCovarianceModel, Parametrization]:
    """The model and parametrization used by :func:`estimate` (default length bounds from the data:
    a quarter of the smallest to ten times the largest observation separation, ``length_scales`` if given,
    else ``_length_scales(data)``; for the matrix-free model the upper bound is also at most the longest length
    whose supports hold ``max_pairs`` pairs summed over all cycles and at most a fifth of each cycle's :math:`p^2`
    (``matrix_free.MAX_PAIR_FILL``), recorded as the model's ``length_cap``).

    ``likelihood`` ``"exact"`` (:class:`~pyoops.diagnostics.tuning.model.HybridCovarianceModel`) or
    ``"matrix-free"`` (:class:`~pyoops.diagnostics.tuning.matrix_free.MatrixFreeCovarianceModel` with ``probes``
    probes from ``probe_seed`` and the neighbour-pair budget ``max_pairs``); ``"auto"`` as
    :func:`resolve_likelihood` for ML.
    """
    likelihood = resolve_likelihood(data, likelihood)
    length_bounds = (1e-3, 1e3)
    if "length" in parameters:
        dmin, _, dmax = length_scales or _length_scales(data)
        length_bounds = (0.25 * dmin, 10.0 * dmax)

    def create(length_bounds: tuple[float, float]) -> Parametrization:
        return Parametrization.create(parameters, fixed, form=form, groups=data.obs_groups(),
                                      has_ensemble=data.has_ensemble, bounds=bounds, length_bounds=length_bounds)

    par = create(length_bounds)
    if likelihood == "exact":
        return HybridCovarianceModel(data, par), par
    model = MatrixFreeCovarianceModel(data, par, probes=probes, seed=probe_seed, max_pairs=max_pairs)
    if "length" in par.free and not (bounds and "length" in bounds):
        lo, hi = par.bounds["length"]
        cap = model.longest_length(np.geomspace(lo, hi, 200))
        if cap < hi:              # the pairs and their memory are created lazily: a new model costs nothing
            par = create((lo, max(cap, lo * (1 + 1e-9))))
            model = MatrixFreeCovarianceModel(data, par, probes=probes, seed=probe_seed, max_pairs=max_pairs)
            model.length_cap = par.bounds["length"][1]
    return model, par


def negative_log_likelihood(data: TuningData, values: Mapping[str, float], form: str = "hybrid", *,
                            likelihood: str = "exact", probes: int = DEFAULT_PROBES, probe_seed: int = 0,
                            max_pairs: int | None = DEFAULT_MAX_PAIRS) -> float:
    """:math:`-\\log L` of ``data`` at natural ``values`` (every other parameter at its default), with the
    likelihood of :func:`build_model` (the matrix-free stochastic path gives an estimate, probe error as
    :class:`~pyoops.diagnostics.tuning.matrix_free.MatrixFreeEvaluation`)."""
    groups = data.obs_groups()
    vals = {k: v for k, v in values.items() if not is_group_amplitude(k) or k[4:-1] in groups}
    model, _ = build_model(data, (), vals, form=form, likelihood=likelihood, probes=probes, probe_seed=probe_seed,
                           max_pairs=max_pairs)
    return model.evaluate(np.zeros(0), gradient=False).nll


def estimate(data: TuningData, method: str = "ml", parameters: Sequence[str] = ("beta", "inflation"),
             fixed: Mapping[str, float] | None = None, prior: Mapping[str, Prior] | None = None, *,
             form: str = "hybrid", bounds: Mapping[str, tuple[float, float]] | None = None,
             start: Mapping[str, float] | None = None, level: float = 0.95, profile: bool = False,
             components: str = "all", tolerance: float = 1e-6, max_iterations: int = 200,
             likelihood: str = "auto", probes: int = DEFAULT_PROBES, probe_seed: int = 0,
             max_pairs: int | None = DEFAULT_MAX_PAIRS) -> TuningResult:
    """Estimate ``parameters`` (natural names, see :mod:`~pyoops.diagnostics.tuning.parameters`) from ``data``.

    Parameters
    ----------
    method:
        ``"ml"``, ``"map"``, ``"desroziers"`` or ``"moments"`` (module docstring).
    fixed:
        Natural values of parameters held fixed (others take the defaults).
    prior:
        For ``"map"``: name → prior; missing names get :func:`~pyoops.diagnostics.tuning.priors.default_priors`.
    form:
        ``"hybrid"`` (β) or ``"weights"`` (:math:`w_s, w_e`).
    bounds:
        Natural bounds per parameter (defaults in :mod:`~pyoops.diagnostics.tuning.parameters`).
    start:
        Natural starting values (ML/MAP/moments/Desroziers); default 1 for scale parameters,
        0.5 for β and, for ℓ, the median observation separation (exact likelihood) or the smaller of it and
        the geometric mean of ℓ's bounds (matrix-free: the centre of the log-scale search interval, where the
        neighbour pairs are a small fraction of those at the budget cap, so the first evaluations are cheap).
    profile:
        Compute profile-likelihood intervals (ML and MAP only); they replace Wald intervals in
        the verdicts.
    components:
        ``"all"`` or ``"variances"`` (method of moments).
    tolerance, max_iterations:
        Desroziers: stop when every :math:`|\\log s^2| <` ``tolerance``; ML/MAP: L-BFGS-B iterations.
    likelihood:
        ML/MAP: ``"exact"`` (dense Cholesky), ``"matrix-free"``
        (:mod:`~pyoops.diagnostics.tuning.matrix_free`) or ``"auto"`` (exact while the dense model is
        affordable, :func:`resolve_likelihood`).  Desroziers and moments use the dense model; they refuse
        ``"matrix-free"``.
    probes, probe_seed:
        Matrix-free stochastic path: Rademacher probes per cycle (2 to 4096) and their seed (fixed across
        evaluations).
    max_pairs:
        Matrix-free localization: neighbour pairs held at most, summed over all cycles (about 40 bytes each); a
        free length's default upper bound is lowered to fit it (a computational bound: an estimate on it gets a
        note and a verdict that say so).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if profile and method not in ("ml", "map"):
        raise ValueError(f"profile intervals need a likelihood (method 'ml' or 'map'), not {method!r}")
    kind_of_likelihood = resolve_likelihood(data, likelihood, method)
    t0 = time.perf_counter()
    parameters = tuple(parameters)
    scales = _length_scales(data) if "length" in parameters else None
    model, par = build_model(data, parameters, fixed, form=form, bounds=bounds, likelihood=kind_of_likelihood,
                             probes=probes, probe_seed=probe_seed, max_pairs=max_pairs, length_scales=scales)
    matrix_free = isinstance(model, MatrixFreeCovarianceModel)
    start_values = dict(start or {})
    if "length" in par.free and "length" not in start_values:
        start_values["length"] = scales[1]
        if matrix_free:
            start_values["length"] = min(scales[1], math.sqrt(math.prod(par.bounds["length"])))
    phi0 = par.internal(start_values)
    ibounds = par.internal_bounds()
    priors: dict[str, Prior] = {}
    if method == "map":
        typical = scales[1] if "length" in par.free else None
        priors = {**default_priors([n for n in par.free if n not in (prior or {})], typical), **dict(prior or {})}
        unknown = set(priors) - set(par.free)
        if unknown:
            raise ValueError(f"priors given for parameters that are not free: {sorted(unknown)}")
    elif prior:
        raise ValueError("priors are used by method='map' only")

    details: dict = {}
    profiles = None
    if method in ("ml", "map"):
        def objective(phi: np.ndarray) -> tuple[float, np.ndarray]:
            ev = model.evaluate(phi)
            if not math.isfinite(ev.nll):
                return 1e300, np.zeros_like(phi)
            lp, g, _ = prior_terms(priors, par.free, phi)
            return ev.nll - lp, ev.gradient - np.asarray(g)

        # The objective scaled so that L-BFGS-B's first step stays near the start (:mod:`.optimize`).
        at_start = objective(phi0) if par.size else None   # L-BFGS-B's first evaluation too
        if par.size and matrix_free and model.stochastic(par.natural(phi0)):
            # L-BFGS-B brings the estimate near (line searches kept short, since the gradient is an estimate),
            # then the stochastic score equations are solved by bound-constrained Fisher scoring
            res = minimize_scaled(objective, phi0, ibounds, max_iterations, at_start=at_start,
                                  line_search=_STOCHASTIC_LINE_SEARCH, gradient_tolerance=None)
            score = _solve_score_equations(model, priors, res.x, ibounds)
            phi_hat, converged = score.phi, score.solved
            iterations = int(res.nit) + score.steps
            lbfgsb = str(res.message)
            if not res.success:      # e.g. "ABNORMAL: " (line search failed)
                lbfgsb += ("; expected near the optimum: the stochastic gradient is not the exact derivative of the "
                           "estimated -log L, so the line search cannot always decrease both; the scoring "
                           "below does not rely on it")
            held = [par.free[i] for i in score.held]
            message = (f"L-BFGS-B {int(res.nit)} iterations ({lbfgsb}), then the stochastic score equations "
                       f"{'solved' if converged else 'NOT solved'} in {score.steps} Fisher-scoring steps"
                       + (f" (held at a bound by their score: {', '.join(held)})" if held else ""))
        elif par.size:
            res = minimize_scaled(objective, phi0, ibounds, max_iterations, at_start=at_start)
            phi_hat, converged, iterations, message = res.x, bool(res.success), int(res.nit), str(res.message)
        else:
            phi_hat, converged, iterations, message = phi0, True, 0, "nothing to estimate"
        ev = model.evaluate(phi_hat, gradient=False, fisher=True)
        if matrix_free:
            se = getattr(ev, "fisher_standard_error", None)
            details["likelihood"] = {**model.describe(par.natural(phi_hat)),
                                     "nll standard error": ev.nll_standard_error,
                                     "information standard error": None if se is None else se.tolist()}
        else:
            details["likelihood"] = {"likelihood": "exact"}
        info = ev.fisher
        kind = "Fisher information"
        if info is None:       # S not positive definite at the estimate (or CG broke down): no information
            info = np.zeros((par.size, par.size))
            converged = False
            message += "; the evaluation at the estimate failed (S not positive definite): no information"
            kind = "none (the evaluation at the estimate failed)"
        if priors:
            _, _, curv = prior_terms(priors, par.free, phi_hat)
            info = info + np.diag(curv)
            kind = "Laplace: Fisher information + prior curvature"
        nll = ev.nll
        f_hat = objective(phi_hat)[0]
        if profile and par.size:
            cov0, _, _ = covariance_from_information(info)
            profiles = {}
            for i, name in enumerate(par.free):
                profiles[name] = profile_interval(objective, phi_hat, f_hat, i, ibounds,
                                                  math.sqrt(max(cov0[i, i], 0.0)), level)
            kind += "; profile intervals"
    elif method == "desroziers":
        phi_hat, info, converged, iterations, history = _desroziers(model, par, phi0, ibounds, tolerance,
                                                                    max_iterations)
        details["ratios"] = history
        message = "converged" if converged else f"not converged after {iterations} iterations"
        kind = "Godambe (sandwich) information of the Desroziers equations"
        nll = model.evaluate(phi_hat, gradient=False).nll
    else:
        phi_hat, info, converged, iterations, message = _moments(model, par, phi0, ibounds, components)
        kind = f"Godambe (sandwich) information of the moment equations ({components})"
        nll = model.evaluate(phi_hat, gradient=False).nll

    cov, mu, vec = covariance_from_information(info) if par.size else (np.zeros((0, 0)), np.zeros(0), np.zeros((0, 0)))
    estimates = parameter_estimates(par.free, phi_hat, cov, ibounds, level, profiles)
    values = par.natural(phi_hat)
    notes = explain(par.free, values, mu, vec, estimates, model.whitened_cosines(values), form) if par.size else []
    if matrix_free and model.length_cap is not None and "length" in estimates:
        _mark_computational_cap(estimates, notes, model.length_cap, model.max_pairs)
    return TuningResult(method, form, par.free, values, estimates, info, kind,
                        correlation_matrix(cov) if par.size else cov, mu, vec, notes, float(nll), data.nobs,
                        len(data.cycles), level, converged, iterations, message, time.perf_counter() - t0,
                        {k: p.describe() for k, p in priors.items()}, details)


def _mark_computational_cap(estimates: dict[str, ParameterEstimate], notes: list[str], cap: float,
                            max_pairs: int | None) -> None:
    """When the length's estimate or interval reaches ``cap`` — the upper bound the neighbour-pair budget set,
    not the data — say so in its verdict's reason and in a note (the verdict is at best "weakly identified")."""
    e = estimates["length"]
    if e.interval[1] < cap * (1.0 - 1e-6):
        return
    on_cap = e.value >= cap * (1.0 - 1e-6)
    what = "the estimate sits on" if on_cap else "the interval reaches"
    reason = (f"{what} the upper bound {cap:.4g}, set by the neighbour-pair budget (max_pairs = {max_pairs} over "
              "all cycles, at most a fifth of a cycle's pairs), a computational limit, not the data's: the "
              "interval's upper end is that bound, not a confidence limit")
    verdict = e.verdict if e.verdict != "identified" else "weakly identified"
    estimates["length"] = dataclasses.replace(e, verdict=verdict, reason=reason)
    notes.append(f"length: {reason}; the likelihood may {'still fall' if on_cap else 'stay high'} beyond it -- "
                 "raise max_pairs (more memory), give explicit bounds on 'length', or fit likelihood='exact' on a "
                 "subset to see where it goes")


@dataclass
class _ScoreSolution:
    """Result of :func:`_solve_score_equations`: the estimate, the scoring steps taken, whether the bound-aware
    (KKT) conditions were met, and the indices of the parameters held at a bound by their score."""

    phi: np.ndarray
    steps: int
    solved: bool
    held: list[int]


def _scoring_step(information: np.ndarray, score: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    r"""The Fisher-scoring step within a box: :math:`\arg\min_\delta\ \tfrac12\delta^\mathrm T\mathcal I\delta +
    g^\mathrm T\delta` subject to ``lower`` :math:`\le\delta\le` ``upper`` (``lower`` :math:`\le 0 \le`
    ``upper``).

    With :math:`\mathcal I = \mathbf V\mathrm{diag}(\mu)\mathbf V^\mathrm T` (:math:`\mu` floored at
    :math:`10^{-12}\mu_\max`) and :math:`\mathbf R = \mathrm{diag}(\sqrt\mu)\mathbf V^\mathrm T`, the objective is
    :math:`\tfrac12\|\mathbf R\delta - t\|^2 + \text{const}`, :math:`t = -\mathrm{diag}(\mu^{-1/2})\mathbf
    V^\mathrm Tg`: a bounded least-squares problem, solved exactly by BVLS (:func:`scipy.optimize.lsq_linear`).
    A parameter on a bound whose score pushes outward stays there; the others take the Newton step of the
    reduced problem.  Parameters with ``lower == upper`` do not move.
    """
    step = np.zeros_like(score)
    movable = upper > lower
    if not np.any(movable):
        return step
    mu, vec = np.linalg.eigh(0.5 * (information + information.T))
    mu = np.maximum(mu, 1e-12 * max(float(mu.max()), 1e-300))
    root = np.sqrt(mu)[:, None] * vec.T
    target = -(vec.T @ score) / np.sqrt(mu)
    fit = scipy.optimize.lsq_linear(root[:, movable], target, bounds=(lower[movable], upper[movable]), method="bvls")
    step[movable] = fit.x
    return step


def _kkt_residual(score: np.ndarray, phi: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The score projected onto the bounds: zero where a parameter on a bound is pushed outward (held)."""
    out = score.copy()
    out[(phi <= lo) & (score > 0)] = 0.0
    out[(phi >= hi) & (score < 0)] = 0.0
    return out


def _solve_score_equations(model: MatrixFreeCovarianceModel, priors: Mapping[str, Prior], phi: np.ndarray,
                           ibounds: Sequence[tuple[float, float]], max_steps: int = 100,
                           tolerance: float = _SCORE_TOLERANCE) -> _ScoreSolution:
    r"""The ML/MAP estimate of the stochastic likelihood within the bounds: the point where its estimated score
    meets the bound-constrained (Karush–Kuhn–Tucker) conditions, by damped Fisher scoring from ``phi`` (an
    L-BFGS-B result).

    The stochastic path's gradient :math:`\hat g` is an unbiased estimate of the score, not the exact derivative
    of its quadrature estimate of :math:`-\log L` (they differ by about a probe standard error), so a line search
    on the two together (L-BFGS-B) can stop anywhere within that noise.  The estimate is instead the solution of
    the estimating equations :math:`G(\phi) = \hat g(\phi) - \nabla\log p(\phi)` with the probes fixed (Stein,
    Chen & Anitescu 2013), under the bounds :math:`l \le \phi \le u`: :math:`G_i = 0` for a parameter strictly
    inside, :math:`G_i \ge 0` at its lower and :math:`G_i \le 0` at its upper bound (where its score pushes
    outward it is *held*).  :math:`r` is :math:`G` with the held components set to 0 (:func:`_kkt_residual`).

    Each step minimises the local quadratic model :math:`\tfrac12\delta^\mathrm T\mathcal I\delta + G^\mathrm
    T\delta` (:math:`\mathcal I = \hat{\mathcal I} + \mathrm{curv}`) over :math:`\max(l - \phi, -\rho) \le \delta
    \le \min(u - \phi, \rho)` (:func:`_scoring_step`; trust radius :math:`\rho \le 1` on the internal scale, a
    factor :math:`e`).  A step is accepted when it lowers the merit :math:`r^\mathrm T\mathcal I^{-1}r` (the squared
    Newton decrement, in the metric of the information that made the step); otherwise :math:`\rho` is halved
    below the rejected step (also when :math:`\mathbf S` is not positive definite there), and doubled again
    (up to 1) after a full accepted step.  This damping matters where the estimated information misjudges the
    score's slope (a weakly identified parameter): undamped, the steps can cycle between two points.  The
    equations are solved when :math:`(r^\mathrm T\mathcal I^{-1}r)^{1/2} <` ``tolerance`` (the remaining Newton
    step, in standard deviations), and given up when :math:`\rho < 10^{-6}` or after ``max_steps`` evaluations
    (``steps`` in the result counts the evaluations after the first).
    The information is re-estimated while a step moves some parameter by more than 0.1 sd
    :math:`[\mathcal I^{-1}]_{ii}^{1/2}` or shrinks by less than half from the previous one, and kept otherwise
    (each re-estimate costs one more solve per free parameter and probe).
    """
    lo = np.array([b[0] for b in ibounds])
    hi = np.array([b[1] for b in ibounds])
    phi = np.clip(phi, lo, hi)

    def equations(ev: Any, at: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(G, r, prior curvature) at ``at`` from the evaluation ``ev`` there."""
        _, g_prior, curvature = prior_terms(priors, model.par.free, at)
        score = ev.gradient - np.asarray(g_prior)
        return score, _kkt_residual(score, at, lo, hi), np.asarray(curvature)

    ev = model.evaluate(phi, gradient=True, fisher=True)
    if not math.isfinite(ev.nll):
        return _ScoreSolution(phi, 0, False, [])
    score, r, curvature = equations(ev, phi)
    information = inverse = None
    fresh, previous, radius = True, math.inf, _TRUST_RADIUS
    for evaluations in range(max_steps + 1):
        if fresh:
            information = ev.fisher + np.diag(curvature)
            inverse = np.linalg.pinv(information)
        merit = float(r @ inverse @ r)
        if math.sqrt(max(merit, 0.0)) < tolerance:
            held = np.flatnonzero((r == 0.0) & ((phi <= lo) | (phi >= hi)))
            return _ScoreSolution(phi, evaluations, True, held.tolist())
        if radius < 1e-6 or evaluations == max_steps:
            return _ScoreSolution(phi, evaluations, False, [])
        delta = _scoring_step(information, score, np.maximum(lo - phi, -radius), np.minimum(hi - phi, radius))
        new = np.clip(phi + delta, lo, hi)
        new = np.where(np.abs(new - lo) < 1e-12, lo, np.where(np.abs(new - hi) < 1e-12, hi, new))  # on a bound
        moved = np.abs(new - phi) / np.sqrt(np.clip(np.diag(inverse), 1e-300, None))
        wants_fisher = bool(np.any(moved > 0.1)) or moved.max() > 0.5 * previous
        trial = model.evaluate(new, gradient=True, fisher=wants_fisher)
        largest = float(np.abs(new - phi).max())
        if math.isfinite(trial.nll):
            trial_score, trial_r, trial_curvature = equations(trial, new)
            if float(trial_r @ inverse @ trial_r) < merit:                # accepted
                if largest >= 0.99 * radius:
                    radius = min(2.0 * radius, _TRUST_RADIUS)
                phi, ev, score, r, curvature = new, trial, trial_score, trial_r, trial_curvature
                fresh, previous = wants_fisher, float(moved.max())
                continue
        radius = 0.5 * largest if largest > 0 else 0.5 * radius          # rejected: shrink below the step
    return _ScoreSolution(phi, max_steps, False, [])


# -- Desroziers -------------------------------------------------------------------------------------
def _components(model: HybridCovarianceModel, par: Parametrization, values: Mapping[str, float], states) -> list:
    """Per block, the matrices X_j (K, p, p) of the free amplitudes: B' for inflation, R'_g for a_o."""
    c_s, c_e, r, _ = model.coefficients(values)
    out = []
    for st in states:
        blk = st.block
        k, p = blk.d.shape
        mats = []
        for name in par.free:
            if name == "inflation":
                x = c_s * blk.cs + (c_e * st.cel if st.cel is not None else 0.0)
            else:
                if name == "a_o":
                    use = np.array([f"a_o[{g}]" not in values for g in model.groups])
                else:
                    use = np.array([g == name[4:-1] for g in model.groups])
                diag = np.where(use[blk.gcode], r[blk.gcode] * blk.sig2, 0.0)
                x = np.zeros((k, p, p))
                x[:, np.arange(p), np.arange(p)] = diag
            mats.append(np.broadcast_to(x, (k, p, p)))
        out.append(mats)
    return out


def _desroziers(model: HybridCovarianceModel, par: Parametrization, phi0: np.ndarray, ibounds, tolerance: float,
                max_iterations: int):
    allowed = [n for n in par.free if n not in ("inflation", "a_o") and not is_group_amplitude(n)]
    if allowed:
        raise ValueError(f"the Desroziers fixed point estimates amplitudes only (inflation = the B scale, a_o, "
                         f"a_o[g]); not {allowed}")
    phi = phi0.copy()
    lo = np.array([b[0] for b in ibounds])
    hi = np.array([b[1] for b in ibounds])
    history = []
    converged = False
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        values = par.natural(phi)
        states = model.states(values)
        comps = _components(model, par, values, states)
        num = np.zeros(par.size)
        den = np.zeros(par.size)
        for st, mats in zip(states, comps):
            for j, x in enumerate(mats):
                num[j] += float(np.einsum("kij,kj,ki->", x, st.alpha, st.block.d))   # (X S^-1 d)^T d
                den[j] += float(np.trace(x, axis1=1, axis2=2).sum())
        ratio = num / den
        history.append({n: float(v) for n, v in zip(par.free, ratio)})
        step = np.log(np.clip(ratio, 1e-12, None))
        phi = np.clip(phi + step, lo, hi)
        if np.all(np.abs(step) < tolerance):
            converged = True
            break
    values = par.natural(phi)
    states = model.states(values)
    comps = _components(model, par, values, states)
    m = par.size
    jac = np.zeros((m, m))
    var = np.zeros((m, m))
    for st, mats in zip(states, comps):
        sx = [st.sinv @ x for x in mats]
        ssx = [st.s @ x for x in mats]
        for j in range(m):
            for k in range(m):
                jac[j, k] -= float(np.einsum("kij,kji->", mats[k], sx[j]))          # tr(X_l S^-1 X_j)
                var[j, k] += float(np.einsum("kij,kji->", mats[j], mats[k])
                                   + np.einsum("kij,kji->", sx[j], ssx[k]))
    info = jac.T @ np.linalg.pinv(var) @ jac
    return phi, info, converged, iterations, history


# -- method of moments ----------------------------------------------------------------------------
def _moments(model: HybridCovarianceModel, par: Parametrization, phi0: np.ndarray, ibounds, components: str):
    if "length" in par.free:
        raise ValueError("the method of moments does not estimate 'length' (it enters non-linearly); use ml or map")
    if components not in ("all", "variances"):
        raise ValueError(f"components must be 'all' or 'variances', got {components!r}")
    cols = [0, 1] + list(range(3, model.nbases))           # bases C_s, L o C_e, D_g (no dL)
    values0 = par.natural(phi0)
    states = model.states(values0)
    nb = len(cols)
    gram = np.zeros((nb, nb))
    h = np.zeros(nb)
    tilde_all = []
    for st in states:
        blk = st.block
        k, p = blk.d.shape
        w = 1.0 / blk.sig2
        bases = [blk.cs, st.cel if st.cel is not None else np.zeros_like(blk.cs)]
        for g in range(len(model.groups)):
            x = np.zeros((k, p, p))
            x[:, np.arange(p), np.arange(p)] = np.where(blk.gcode == g, blk.sig2, 0.0)
            bases.append(x)
        if components == "all":
            tilde = [b * w[:, :, None] * w[:, None, :] for b in bases]
        else:
            tilde = [np.diagonal(b, axis1=1, axis2=2) * w * w for b in bases]        # (K, p) diagonals
        for a in range(nb):
            if components == "all":
                h[a] += float(np.einsum("ki,kij,kj->", blk.d, tilde[a], blk.d))
                for b in range(a, nb):
                    gram[a, b] = gram[b, a] = gram[a, b] + float((tilde[a] * bases[b]).sum())
            else:
                h[a] += float((tilde[a] * blk.d ** 2).sum())
                for b in range(a, nb):
                    gram[a, b] = gram[b, a] = gram[a, b] + float(
                        (tilde[a] * np.diagonal(bases[b], axis1=1, axis2=2)).sum())
        tilde_all.append((st, tilde))

    def coefs(phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = par.natural(phi)
        c_s, c_e, r, _ = model.coefficients(values)
        return np.concatenate([[c_s, c_e], r]), model.coefficient_jacobian(values)[:, cols]

    def objective(phi: np.ndarray) -> tuple[float, np.ndarray]:
        c, jac = coefs(phi)
        return float(c @ gram @ c - 2 * h @ c), jac @ (2 * gram @ c - 2 * h)

    scale = max(abs(float(h.sum())), 1.0)
    res = scipy.optimize.minimize(lambda x: tuple(v / scale for v in objective(x)), phi0, jac=True,
                                  method="L-BFGS-B", bounds=ibounds, options={"maxiter": 500, "ftol": 1e-14,
                                                                              "gtol": 1e-10})
    phi_hat = res.x
    _, jac = coefs(phi_hat)
    # sandwich with the plug-in S(theta_hat)
    values = par.natural(phi_hat)
    states_hat = model.states(values)
    vh = np.zeros((nb, nb))
    for (st0, tilde), st in zip(tilde_all, states_hat):
        s = st.s
        if components == "all":
            ts = [t @ s for t in tilde]
            for a in range(nb):
                for b in range(a, nb):
                    vh[a, b] = vh[b, a] = vh[a, b] + 2.0 * float(np.einsum("kij,kji->", ts[a], ts[b]))
        else:
            s2 = s * s
            for a in range(nb):
                for b in range(a, nb):
                    vh[a, b] = vh[b, a] = vh[a, b] + 2.0 * float(np.einsum("ki,kij,kj->", tilde[a], s2, tilde[b]))
    a_mat = jac @ gram @ jac.T
    v_mat = jac @ vh @ jac.T
    info = a_mat @ np.linalg.pinv(v_mat) @ a_mat
    return phi_hat, info, bool(res.success), int(res.nit), str(res.message)
