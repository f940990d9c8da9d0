r"""Uncertainty and identifiability of the estimates: intervals, correlations, verdicts.

Given the information matrix :math:`\mathcal I` of the free internal parameters :math:`\phi`
(Fisher information for ML, Fisher plus the priors' curvature for MAP — the Laplace
approximation —, the Godambe (sandwich) information :math:`\mathbf A^\mathrm{T}\mathbf V^{-1}\mathbf A`
for the moment and Desroziers estimating equations):

* eigen-decomposition :math:`\mathcal I = \mathbf V\mathrm{diag}(\mu)\mathbf V^\mathrm{T}`; eigenvalues
  below :math:`10^{-12}\mu_\max` are set to that floor, so the covariance
  :math:`\mathcal I^{-1}` stays finite and is huge along unconstrained directions;
* internal standard deviations :math:`s_i = [\mathcal I^{-1}]_{ii}^{1/2}`, correlation matrix;
* Wald interval :math:`\phi_i \pm z_{1-\alpha/2}s_i` on the internal scale, clipped to the
  bounds and transformed back (so a scale parameter's interval is multiplicative and a
  :math:`\beta` interval stays in :math:`(0, 1)`); natural standard error by the delta method
  :math:`|d\theta/d\phi|\,s_i`;
* profile-likelihood interval :math:`\{\phi_i : 2[\min_{\phi_{-i}}f(\phi) - f(\hat\phi)] \le
  \chi^2_{1,1-\alpha}\}` (:func:`profile_interval`), :math:`f` the negative log-likelihood (or
  log-posterior), each end found by doubling steps from :math:`\hat\phi_i` then Brent's
  method; an end that reaches the parameter's bound is *open*.

Verdict per parameter (thresholds are module constants):

* ``not identifiable`` — without profile: :math:`s_i >` :data:`NOT_IDENTIFIABLE_SD` (= 3 on the
  log/logit scale: a 95 % interval wider than a factor :math:`e^{2\cdot1.96\cdot3}\approx 10^5`,
  or :math:`\beta` from 0.003 to 0.997 around 0.5); with a profile (global, so it takes
  precedence over the local curvature): an interval open at both ends.  The directions
  along which the information is that small are reported, with the structural reason when
  one is recognised (:func:`explain`);
* ``weakly identified`` — the interval (profile if computed, else Wald) spans more than a
  factor :data:`WEAK_SCALE_FACTOR` (= 2) for a scale parameter, is wider than
  :data:`WEAK_BETA_WIDTH` (= 0.5) for :math:`\beta`, or is open at one end;
* ``identified`` — otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.optimize
from scipy.stats import chi2, norm

from pyoops.diagnostics.tuning.optimize import minimize_scaled
from pyoops.diagnostics.tuning.parameters import (
    natural_derivative,
    to_internal,
    to_natural,
    transform_of,
)

__all__ = [
    "NOT_IDENTIFIABLE_SD",
    "WEAK_BETA_WIDTH",
    "WEAK_SCALE_FACTOR",
    "ParameterEstimate",
    "covariance_from_information",
    "explain",
    "parameter_estimates",
    "profile_interval",
]

NOT_IDENTIFIABLE_SD = 3.0
"""Internal (log/logit) standard deviation above which a parameter is not identifiable."""
WEAK_SCALE_FACTOR = 2.0
"""Upper/lower ratio of a scale parameter's interval above which it is weakly identified."""
WEAK_BETA_WIDTH = 0.5
"""Width of a β interval above which it is weakly identified."""
_EIGEN_FLOOR = 1e-12
_ABSOLUTE_FLOOR = 1e-200

_SYMBOL = {"beta": "logit β", "inflation": "log λ", "length": "log ℓ", "a_s": "log a_s", "a_e": "log a_e",
           "a_o": "log a_o", "w_s": "log w_s", "w_e": "log w_e"}


def symbol(name: str) -> str:
    """Internal-scale symbol of a parameter for messages."""
    return _SYMBOL.get(name, f"log {name}")


@dataclass(frozen=True)
class ParameterEstimate:
    """One parameter's estimate, uncertainty and verdict (natural scale unless said)."""

    name: str
    value: float
    standard_error: float
    internal_sd: float
    wald_interval: tuple[float, float]
    profile_interval: tuple[float, float] | None
    interval: tuple[float, float]
    verdict: str
    reason: str

    def to_dict(self) -> dict:
        """JSON-compatible dict (infinite or NaN numbers as None)."""
        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {"value": num(self.value), "standard error": num(self.standard_error),
                "internal sd": num(self.internal_sd), "wald interval": [num(v) for v in self.wald_interval],
                "profile interval": None if self.profile_interval is None else [num(v) for v in self.profile_interval],
                "interval": [num(v) for v in self.interval], "verdict": self.verdict, "reason": self.reason}


def covariance_from_information(information: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""``(covariance, eigenvalues, eigenvectors)`` of a symmetric information matrix (eigenvalues
    ascending, floored at :math:`10^{-12}\mu_\max` for the inverse)."""
    info = 0.5 * (information + information.T)
    mu, v = np.linalg.eigh(info)
    top = float(mu[-1]) if mu.size else 0.0
    floored = np.maximum(mu, max(_EIGEN_FLOOR * top, _ABSOLUTE_FLOOR))
    cov = (v / floored) @ v.T
    return cov, mu, v


def profile_interval(objective: Callable[[np.ndarray], tuple[float, np.ndarray]], phi_hat: np.ndarray,
                     f_hat: float, index: int, bounds: Sequence[tuple[float, float]], step: float,
                     level: float = 0.95) -> tuple[float, float, bool, bool]:
    r"""Profile interval of internal parameter ``index``: ``(lower, upper, lower_open, upper_open)``.

    ``objective(phi) -> (f, gradient)``; the other parameters are re-optimised at every trial value
    (L-BFGS-B with its first step kept near the start, :func:`~pyoops.diagnostics.tuning.optimize.minimize_scaled`,
    from the previous trial's solution and from the estimate, the lower kept); ``step`` is the first trial
    distance (e.g. the Wald standard deviation, clipped to [0.05, 2]).
    """
    m = phi_hat.size
    threshold = 0.5 * chi2.ppf(level, 1)
    others = [j for j in range(m) if j != index]
    other_bounds = [bounds[j] for j in others]
    warm = {1: phi_hat[others].copy(), -1: phi_hat[others].copy()}
    cache: dict[tuple[float, int], float] = {}

    def excess(t: float, side: int) -> float:
        # the bracket ends are not re-evaluated: a re-optimisation from another warm start could
        # land elsewhere by a hair and flip the sign Brent's method relies on
        if (t, side) not in cache:
            cache[(t, side)] = _excess(t, side)
        return cache[(t, side)]

    def _excess(t: float, side: int) -> float:
        if not others:
            return objective(np.array([t]))[0] - f_hat - threshold

        def inner(x: np.ndarray) -> tuple[float, np.ndarray]:
            full = phi_hat.copy()
            full[others] = x
            full[index] = t
            f, g = objective(full)
            return f, g[others]

        # From the last trial's solution and from the estimate, the lower kept: a warm start alone can carry
        # a solution at a bound where the others no longer move (beta -> 0 on its logit scale, where the
        # length drops out of the likelihood) to every later trial, which then all read too high.
        best = None
        for start in (warm[side], phi_hat[others]) if not np.array_equal(warm[side], phi_hat[others]) \
                else (warm[side],):
            res = minimize_scaled(inner, start, other_bounds, 200)
            if best is None or res.fun < best[0]:
                best = (res.fun, res.x)
        if np.all(np.isfinite(best[1])):
            warm[side] = best[1]
        return best[0] - f_hat - threshold

    step = float(min(max(step, 0.05), 2.0)) if math.isfinite(step) else 2.0
    ends, opens = [], []
    for side in (-1, 1):
        limit = bounds[index][0] if side < 0 else bounds[index][1]
        inside = float(phi_hat[index])
        dist = step
        found = False
        while True:
            t = inside + side * dist
            if (side < 0 and t <= limit) or (side > 0 and t >= limit):
                t = limit
            e = excess(t, side)
            if e > 0:
                found = True
                break
            if t == limit:
                break
            inside, dist = t, dist * 2
        if not found:
            ends.append(limit)
            opens.append(True)
            continue
        lo, hi = (t, inside) if side < 0 else (inside, t)
        root = scipy.optimize.brentq(lambda x, s=side: excess(x, s), lo, hi, xtol=1e-3)
        ends.append(root)
        opens.append(False)
    return ends[0], ends[1], opens[0], opens[1]


def _verdict(name: str, sd: float, interval: tuple[float, float], opens: tuple[bool, bool],
             profiled: bool) -> tuple[str, str]:
    lo, hi = interval
    if profiled:
        # the profile is global: it overrides the local curvature (a likelihood flat at the estimate
        # may still exclude part of the range)
        if all(opens):
            return "not identifiable", "the profile likelihood stays within the threshold over the whole range"
    elif sd > NOT_IDENTIFIABLE_SD:
        return "not identifiable", f"sd of {symbol(name)} {sd:.3g} > {NOT_IDENTIFIABLE_SD:g}"
    if any(opens):
        side = "lower" if opens[0] else "upper"
        return "weakly identified", f"the interval reaches the {side} bound of the parameter's range"
    if transform_of(name) == "logit":
        if hi - lo > WEAK_BETA_WIDTH:
            return "weakly identified", f"interval width {hi - lo:.3g} > {WEAK_BETA_WIDTH:g}"
        return "identified", f"interval width {hi - lo:.3g} <= {WEAK_BETA_WIDTH:g}"
    ratio = hi / lo if lo > 0 else math.inf
    if ratio > WEAK_SCALE_FACTOR:
        return "weakly identified", f"interval spans a factor {ratio:.3g} > {WEAK_SCALE_FACTOR:g}"
    return "identified", f"interval spans a factor {ratio:.3g} <= {WEAK_SCALE_FACTOR:g}"


def parameter_estimates(free: Sequence[str], phi_hat: np.ndarray, covariance: np.ndarray,
                        bounds: Sequence[tuple[float, float]], level: float = 0.95,
                        profiles: Mapping[str, tuple[float, float, bool, bool]] | None = None
                        ) -> dict[str, ParameterEstimate]:
    """:class:`ParameterEstimate` of every free parameter from internal estimates and covariance."""
    z = norm.ppf(0.5 + level / 2)
    out = {}
    for i, name in enumerate(free):
        sd = math.sqrt(max(float(covariance[i, i]), 0.0))
        value = to_natural(name, float(phi_hat[i]))
        lo_b, hi_b = bounds[i]
        wl, wh = max(phi_hat[i] - z * sd, lo_b), min(phi_hat[i] + z * sd, hi_b)
        wald = (to_natural(name, float(wl)), to_natural(name, float(wh)))
        opens = (bool(phi_hat[i] - z * sd <= lo_b), bool(phi_hat[i] + z * sd >= hi_b))
        prof = None
        interval = wald
        if profiles and name in profiles:
            pl, ph, ol, oh = profiles[name]
            prof = (to_natural(name, pl), to_natural(name, ph))
            interval, opens = prof, (ol, oh)
        verdict, reason = _verdict(name, sd, interval, opens, prof is not None)
        se = natural_derivative(name, value) * sd
        out[name] = ParameterEstimate(name, value, se, sd, wald, prof, interval, verdict, reason)
    return out


def _combination(free: Sequence[str], vector: np.ndarray) -> str:
    terms = [(abs(c), c, n) for c, n in zip(vector, free) if abs(c) >= 0.1]
    terms.sort(reverse=True)
    if terms and terms[0][1] < 0:
        terms = [(a, -c, n) for a, c, n in terms]
    return " ".join(f"{'+' if c >= 0 else '−'} {abs(c):.2f}·{symbol(n)}" for _, c, n in terms).lstrip("+ ")


def explain(free: Sequence[str], values: Mapping[str, float], eigenvalues: np.ndarray, eigenvectors: np.ndarray,
            estimates: Mapping[str, ParameterEstimate], cosines: Mapping[str, float], form: str) -> list[str]:
    """Sentences naming the unconstrained directions and, when recognised, what *is* identified."""
    notes: list[str] = []
    top = float(eigenvalues[-1]) if eigenvalues.size else 0.0
    for mu, vec in zip(eigenvalues, eigenvectors.T):
        sd = 1.0 / math.sqrt(max(float(mu), _EIGEN_FLOOR * top, _ABSOLUTE_FLOOR))
        if sd > NOT_IDENTIFIABLE_SD:
            notes.append(f"unconstrained direction (sd {sd:.3g} on the internal scale): {_combination(free, vec)}")
    if eigenvalues.size:
        v = eigenvectors[:, -1]
        notes.append(f"best-determined combination (sd {1 / math.sqrt(max(top, _ABSOLUTE_FLOOR)):.3g}): "
                     f"{_combination(free, v)}")
    bad = {n for n, e in estimates.items() if e.verdict == "not identifiable"}
    amp = [n for n in free if n in ("inflation", "beta", "a_s", "a_e", "w_s", "w_e")]
    if len(amp) > 2 and bad & set(amp):
        cs, ce = ("λ(1−β)·a_s", "λβ·a_e") if form == "hybrid" else ("λ·w_s·a_s", "λ·w_e·a_e")
        notes.append(f"{', '.join(amp)}: S depends on them only through the static amplitude {cs} and the "
                     f"ensemble amplitude {ce}; estimate those two, not {len(amp)} parameters")
    cos_se = cosines.get("static-ensemble", math.nan)
    weight = "beta" if form == "hybrid" else "w_e"
    if (bad & {weight, "w_s", "a_e", "a_s"}) and math.isfinite(cos_se) and cos_se > 0.95:
        kappa = cosines["ensemble/static ratio"]
        if form == "hybrid":
            total = values["inflation"] * ((1 - values["beta"]) * values["a_s"] + values["beta"] * values["a_e"] * kappa)
            notes.append(f"β: C_e ∝ C_s in observation space (cosine {cos_se:.4f}, L∘C_e ≈ {kappa:.3g}·C_s): only "
                         f"the total background amplitude λ[(1−β)a_s + {kappa:.3g}·β·a_e] = {total:.4g} is "
                         f"identified, not how it splits between static and ensemble parts")
        else:
            total = values["inflation"] * (values["w_s"] * values["a_s"] + kappa * values["w_e"] * values["a_e"])
            notes.append(f"w_s, w_e: C_e ∝ C_s in observation space (cosine {cos_se:.4f}): only "
                         f"λ(w_s·a_s + {kappa:.3g}·w_e·a_e) = {total:.4g} is identified")
    cos_bi = cosines.get("background-identity", math.nan)
    if (bad & {"a_o"} or any(n.startswith("a_o[") for n in bad)) and math.isfinite(cos_bi) and cos_bi > 0.95:
        notes.append(f"a_o: HBHᵀ is nearly as white as R in observation space (cosine with the identity "
                     f"{cos_bi:.4f}): only the total innovation variance is identified, not its split between B and R")
    if "length" in bad:
        notes.append("length: the data do not constrain the localization length (too few observation pairs within "
                     "its range, or an ensemble part with little weight)")
    return notes


def transform_covariance(free: Sequence[str], phi_hat: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    r"""Covariance of the natural parameters by the delta method, :math:`\mathbf D\Sigma\mathbf D`,
    :math:`\mathbf D = \mathrm{diag}(d\theta/d\phi)`."""
    d = np.array([natural_derivative(n, to_natural(n, float(x))) for n, x in zip(free, phi_hat)])
    return covariance * d[:, None] * d[None, :]


def correlation_matrix(covariance: np.ndarray) -> np.ndarray:
    """Correlation matrix of a covariance matrix."""
    sd = np.sqrt(np.clip(np.diag(covariance), 1e-300, None))
    return covariance / sd[:, None] / sd[None, :]


def internal_bounds(free: Sequence[str], bounds: Mapping[str, tuple[float, float]]) -> list[tuple[float, float]]:
    """Internal-scale bounds."""
    return [(to_internal(n, bounds[n][0]), to_internal(n, bounds[n][1])) for n in free]
