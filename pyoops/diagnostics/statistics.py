r"""Observation-space statistics of innovations, with confidence intervals for cycled data.

Everything here works on numpy arrays (no files, no models).  Notation, per observation
:math:`i` of cycle :math:`c`:

* :math:`d_i = y_i - H(x_b)_i` (O−B), :math:`d^a_i = y_i - H(x_a)_i` (O−A),
  :math:`\delta_i = H(x_a)_i - H(x_b)_i = d_i - d^a_i` (A−B);
* :math:`\sigma_{o,i}^2` the assumed observation-error variance,
  :math:`\sigma_{b,i}^2 = (\mathbf{HBH}^\mathrm{T})_{ii}` the assumed background-error
  variance in observation space, :math:`v_i` the ensemble variance of :math:`H(x_b)`
  (:math:`N` members).

Statistics (each a ratio of sums over the observations of a subset)
-------------------------------------------------------------------
=================================== ============================================================= =============================
name                                definition                                                    expectation
=================================== ============================================================= =============================
``O-B mean``, ``O-B rms``           :math:`\overline{d}`, :math:`(\overline{d^2})^{1/2}`
``O-A ...``, ``A-B ...``            the same for :math:`d^a`, :math:`\delta`
``chi2``                            :math:`\overline{d^2/(\sigma_b^2+\sigma_o^2)}`                1
``obs error variance``              :math:`\overline{d^a d}` (Desroziers)                         :math:`\overline{\sigma_o^2}`
``obs error variance ratio``        :math:`\sum d^a d / \sum \sigma_o^2`                          1
``background error variance``       :math:`\overline{\delta d}` (Desroziers)                      :math:`\overline{\sigma_b^2}`
``background error variance ratio`` :math:`\sum \delta d / \sum \sigma_b^2`                       1
``spread-skill ratio``              :math:`\sum d^2 / \sum \big((1+\tfrac1N) v + \sigma_o^2\big)` 1
``2J/p``                            :math:`\sum_c 2J_c(x_a) / \sum_c p_c` (whole cycles)          1
=================================== ============================================================= =============================

Expectations are for the BLUE computed with the true :math:`\mathbf{B}` and
:math:`\mathbf{R}`, for which :math:`E[d d^\mathrm{T}] = \mathbf{HBH}^\mathrm{T} + \mathbf{R}`,
:math:`E[d^a d^\mathrm{T}] = \mathbf{R}` and :math:`E[\delta d^\mathrm{T}] = \mathbf{HBH}^\mathrm{T}`
(Desroziers et al. 2005), whatever the correlations; only diagonals are used here, so
each holds observation by observation.  :math:`E[2J(x_a)] = p` for the optimal linear
analysis (Talagrand 1999).  Every ratio reads "what the data say / what the system
assumed": **a ratio above 1 means the system assumed too little variance**.  With
several error sources wrong at once, the single-pass Desroziers ratios mix them (in the
scalar case both equal :math:`(b+r)/(b'+r')`); they separate them only as far as
:math:`\mathbf{HBH}^\mathrm{T}` and :math:`\mathbf{R}` differ in structure (spatial
correlation, Ménard 2016).  For the spread–skill ratio the ensemble mean's own error is
accounted for: :math:`E[d^2] = (1+1/N)\,v + \sigma_o^2` for a statistically consistent
ensemble of :math:`N` members.

Confidence intervals
--------------------
In a cycled system the statistics of consecutive cycles are correlated (a background
error persists for several cycles), so observations are not independent samples and
neither are cycles.  Every statistic is :math:`\hat\theta = \sum_c F_c / \sum_c G_c`
with per-cycle sums :math:`F_c, G_c`; two intervals are computed from the per-cycle
sums of the :math:`C` cycles where the subset has observations, in time order:

* **Moving-block bootstrap** (Künsch 1989; the default): resample :math:`\lceil C/\ell\rceil`
  blocks of :math:`\ell` consecutive cycles with replacement (start uniform on
  :math:`0..C-\ell`), concatenate, truncate to :math:`C` cycles, recompute
  :math:`\hat\theta^*`; percentile interval.  Default block length
  :math:`\ell = \mathrm{round}(C^{1/3})`, the rate that minimises the error of the
  bootstrap variance (Hall, Horowitz & Jing 1995).  It is the default because it needs
  no model of the serial correlation beyond its decay within :math:`\sim\ell` cycles, and
  its percentile interval follows the skewness of ratio statistics.  Draws come from a
  seeded :class:`numpy.random.Generator`.
* **Analytic** (delta method with an AR(1) effective sample size): linearised per-cycle
  residuals :math:`u_c = (F_c - \hat\theta G_c)/\bar G`, their lag-1 autocorrelation
  :math:`\rho` (clipped to :math:`[0, 0.99]`: never more optimistic than independence),
  :math:`C_\mathrm{eff} = C(1-\rho)/(1+\rho)`, :math:`\mathrm{se} = s_u/\sqrt{C_\mathrm{eff}}`,
  interval :math:`\hat\theta \pm z_{1-\alpha/2}\,\mathrm{se}`.  Exact for AR(1) per-cycle
  statistics, too narrow when the correlation decays more slowly; cheap, a cross-check.

RMS values get the square roots of the intervals of the mean squares.

Rank histograms
---------------
The rank of :math:`y_i` among :math:`H(x_b^k)_i + \varepsilon_{k,i}`,
:math:`\varepsilon_{k,i} \sim \mathcal N(0, \sigma_{o,i}^2)` (seeded generator).  The
observation error must be added: :math:`y = Hx_t + \varepsilon_o` carries an
observation error the members' :math:`H(x^k)` do not, so even a perfect ensemble would
put :math:`y` too often outside the members (a U-shaped histogram; Hamill 2001).  With
it, :math:`y` and the perturbed members are exchangeable for a consistent ensemble and
every rank :math:`0..N` is equally likely.  Flatness: Pearson's
:math:`X^2 = \sum_r (n_r - n/(N+1))^2/(n/(N+1))` against :math:`\chi^2_N`; ranks of
correlated observations are not independent, so its p-value is then too small.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Estimate",
    "RankFlatness",
    "block_bootstrap_ratios",
    "cost_check",
    "default_block_length",
    "departures",
    "innovation_statistics",
    "per_cycle_series",
    "per_cycle_sums",
    "rank_flatness",
    "rank_histogram",
    "ratio_estimates",
    "observation_ranks",
]


@dataclass(frozen=True)
class Estimate:
    r"""A statistic :math:`\hat\theta = \sum_c F_c/\sum_c G_c` with its confidence intervals.

    ``bootstrap`` is None when no bootstrap was asked for (``samples = 0``);
    ``effective_cycles`` is :math:`C_\mathrm{eff}` of the analytic interval, ``lag1`` its
    (unclipped) :math:`\rho`.
    """

    value: float
    analytic: tuple[float, float]
    bootstrap: tuple[float, float] | None
    cycles: int
    effective_cycles: float
    lag1: float

    def interval(self, method: str = "bootstrap") -> tuple[float, float]:
        """The ``"bootstrap"`` interval (falling back to the analytic one if absent) or ``"analytic"``."""
        if method == "bootstrap" and self.bootstrap is not None:
            return self.bootstrap
        return self.analytic

    def sqrt(self) -> "Estimate":
        """The estimate of the square root (RMS from a mean square): monotone, so endpoints map."""

        def root(pair: tuple[float, float] | None) -> tuple[float, float] | None:
            return None if pair is None else (_sqrt(pair[0]), _sqrt(pair[1]))

        return Estimate(_sqrt(self.value), root(self.analytic), root(self.bootstrap), self.cycles,
                        self.effective_cycles, self.lag1)  # type: ignore[arg-type]


def _sqrt(x: float) -> float:
    """Square root of a mean square or of an interval end (a negative analytic lower end gives 0)."""
    return math.nan if math.isnan(x) else math.sqrt(max(x, 0.0))


def departures(obs_value: np.ndarray, hofx_background: np.ndarray, hofx_analysis: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""O−B :math:`d = y - H(x_b)`, O−A :math:`d^a = y - H(x_a)`, A−B :math:`\delta = H(x_a) - H(x_b)`."""
    y = np.asarray(obs_value, dtype=np.float64)
    hb = np.asarray(hofx_background, dtype=np.float64)
    ha = np.asarray(hofx_analysis, dtype=np.float64)
    return y - hb, y - ha, ha - hb


def default_block_length(ncycles: int) -> int:
    r"""Default moving-block length :math:`\ell = \max(1, \mathrm{round}(C^{1/3}))`."""
    return max(1, int(round(ncycles ** (1.0 / 3.0)))) if ncycles > 0 else 1


def per_cycle_sums(values: np.ndarray, cycle: np.ndarray, ncycles: int) -> np.ndarray:
    """Sums of the columns of ``values`` (``(n,)`` or ``(n, m)``) per cycle position ``cycle`` in ``0..ncycles-1``.

    Returns ``(ncycles, m)``.  NaN values propagate to their cycle's sum.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    n, m = v.shape
    codes = np.asarray(cycle, dtype=np.int64)
    if codes.shape != (n,):
        raise ValueError(f"cycle has shape {codes.shape}, expected ({n},)")
    flat = (codes[:, None] * m + np.arange(m)[None, :]).ravel()
    return np.bincount(flat, weights=v.ravel(), minlength=ncycles * m).reshape(ncycles, m)


def block_bootstrap_ratios(numerators: np.ndarray, denominators: np.ndarray, rng: np.random.Generator,
                           samples: int = 1000, block_length: int | None = None, chunk: int = 2_000_000
                           ) -> np.ndarray:
    r"""Moving-block bootstrap replicates of :math:`\sum_c F_c/\sum_c G_c` (columns independent statistics).

    Parameters
    ----------
    numerators, denominators:
        Per-cycle sums :math:`F, G`, shape ``(C, m)``, cycles in time order.
    rng:
        Seeded generator; the same draws serve every column (common resampling).
    samples:
        Number of bootstrap replicates :math:`B`.
    block_length:
        :math:`\ell` (default :func:`default_block_length`), at most :math:`C`.
    chunk:
        Work in slices of at most this many gathered numbers (memory bound).

    Returns
    -------
    ndarray
        ``(samples, m)`` replicates.  A block starting at :math:`s` contributes
        :math:`S_{s+\ell} - S_s` with :math:`S` the cumulative sums, so a replicate costs
        :math:`O(C/\ell)`, not :math:`O(C)`.
    """
    F = np.atleast_2d(np.asarray(numerators, dtype=np.float64).T).T
    G = np.atleast_2d(np.asarray(denominators, dtype=np.float64).T).T
    C, m = F.shape
    if C == 0 or samples <= 0:
        return np.full((max(samples, 0), m), np.nan)
    ell = min(block_length or default_block_length(C), C)
    whole, rest = divmod(C, ell)
    nblocks = whole + (1 if rest else 0)
    SF = np.vstack([np.zeros((1, m)), np.cumsum(F, axis=0)])
    SG = np.vstack([np.zeros((1, m)), np.cumsum(G, axis=0)])
    lengths = np.full(nblocks, ell)
    if rest:
        lengths[-1] = rest
    out = np.empty((samples, m))
    per = max(1, chunk // max(1, nblocks * m))
    for lo in range(0, samples, per):
        hi = min(samples, lo + per)
        starts = rng.integers(0, C - ell + 1, size=(hi - lo, nblocks))
        ends = starts + lengths[None, :]
        num = (SF[ends] - SF[starts]).sum(axis=1)
        den = (SG[ends] - SG[starts]).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[lo:hi] = num / den
    return out


def _analytic(F: np.ndarray, G: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                    np.ndarray, np.ndarray]:
    """Delta-method intervals with the AR(1) effective number of cycles; columns independent."""
    from scipy.stats import norm

    C = F.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = F.sum(axis=0) / G.sum(axis=0)
        u = (F - theta * G) / G.mean(axis=0)
        ss = (u ** 2).sum(axis=0)
        rho = (u[1:] * u[:-1]).sum(axis=0) / ss if C > 2 else np.zeros(F.shape[1])
        rho = np.where(np.isfinite(rho), rho, 0.0) if C > 2 else rho
        clipped = np.clip(rho, 0.0, 0.99)
        neff = C * (1 - clipped) / (1 + clipped)
        var = ss / max(C - 1, 1)
        se = np.sqrt(var / neff)
    z = norm.ppf(0.5 + level / 2)
    if C < 2:
        se = np.full_like(theta, np.nan)
    return theta, theta - z * se, theta + z * se, neff, rho


def ratio_estimates(numerators: np.ndarray, denominators: np.ndarray, *, level: float = 0.95,
                    rng: np.random.Generator | None = None, samples: int = 1000,
                    block_length: int | None = None) -> list[Estimate]:
    r""":class:`Estimate` of :math:`\sum_c F_c/\sum_c G_c` for each column of the per-cycle sums.

    ``numerators``/``denominators``: ``(C, m)`` in time order.  The bootstrap interval
    needs ``rng`` and ``samples > 0``; the analytic interval is always computed.  A
    column with a NaN anywhere gives NaN throughout (a quantity that was not archived);
    intervals need at least 2 cycles (NaN otherwise) and are rough below a few tens.
    """
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    F = np.atleast_2d(np.asarray(numerators, dtype=np.float64).T).T
    G = np.atleast_2d(np.asarray(denominators, dtype=np.float64).T).T
    C, m = F.shape
    if F.shape != G.shape:
        raise ValueError(f"numerators {F.shape} and denominators {G.shape} differ in shape")
    if C == 0:
        nan = math.nan
        return [Estimate(nan, (nan, nan), None if rng is None or samples <= 0 else (nan, nan), 0, 0.0, nan)
                for _ in range(m)]
    theta, lo, hi, neff, rho = _analytic(F, G, level)
    boot = None
    if rng is not None and samples > 0:
        reps = block_bootstrap_ratios(F, G, rng, samples, block_length)
        alpha = 1 - level
        with np.errstate(invalid="ignore"):
            q = np.quantile(reps, [alpha / 2, 1 - alpha / 2], axis=0)
        bad = ~np.isfinite(reps).all(axis=0) | (C < 2)  # one cycle: no resampling variability to see
        q[:, bad] = np.nan
        boot = q
    out = []
    for j in range(m):
        out.append(Estimate(float(theta[j]), (float(lo[j]), float(hi[j])),
                            None if boot is None else (float(boot[0, j]), float(boot[1, j])),
                            int(C), float(neff[j]), float(rho[j])))
    return out


#: Ratio statistics of :func:`innovation_statistics`: name -> (numerator, denominator) names.
_RATIOS: dict[str, tuple[str, str]] = {
    "O-B mean": ("d", "1"), "O-B mean square": ("d2", "1"),
    "O-A mean": ("da", "1"), "O-A mean square": ("da2", "1"),
    "A-B mean": ("db", "1"), "A-B mean square": ("db2", "1"),
    "chi2": ("chi", "1"),
    "obs error variance": ("da_d", "1"), "obs error variance ratio": ("da_d", "so2"),
    "background error variance": ("db_d", "1"), "background error variance ratio": ("db_d", "sb2"),
    "spread-skill ratio": ("d2", "spread"),
}


def innovation_statistics(obs_value: np.ndarray, obs_error: np.ndarray, hofx_background: np.ndarray,
                          hofx_analysis: np.ndarray, background_error_variance: np.ndarray, cycle: np.ndarray,
                          *, ensemble_variance: np.ndarray | None = None, members: int = 0, level: float = 0.95,
                          rng: np.random.Generator | None = None, samples: int = 1000,
                          block_length: int | None = None) -> dict[str, object]:
    r"""Departure statistics, χ², Desroziers estimates and spread–skill of one subset.

    Parameters
    ----------
    obs_value, obs_error, hofx_background, hofx_analysis, background_error_variance:
        :math:`y, \sigma_o, H(x_b), H(x_a), \sigma_b^2` of the subset's observations.
    cycle:
        Cycle of each observation (any integers increasing with time); the intervals
        resample the distinct cycles present, in time order.
    ensemble_variance, members:
        :math:`v_i` and :math:`N` for the spread–skill ratio; without them the spread is
        :math:`\sigma_b^2 + \sigma_o^2` (the static B's own prediction).
    level, rng, samples, block_length:
        Confidence level and bootstrap settings (see :func:`ratio_estimates`).

    Returns
    -------
    dict
        ``count``, ``cycles``, the :class:`Estimate` of every statistic of the module
        table (RMS values as ``"O-B rms"`` etc.), the assumed means ``"assumed obs error
        variance"`` :math:`\overline{\sigma_o^2}`, ``"assumed background error variance"``
        :math:`\overline{\sigma_b^2}`, ``"spread"`` :math:`\overline{(1+1/N)v+\sigma_o^2}`,
        and ``"spread source"`` (``"ensemble"`` or ``"background error variance"``).
    """
    d, da, db = departures(obs_value, hofx_background, hofx_analysis)
    so2 = np.asarray(obs_error, dtype=np.float64) ** 2
    sb2 = np.asarray(background_error_variance, dtype=np.float64)
    if ensemble_variance is not None:
        if members < 2:
            raise ValueError("members >= 2 is needed with ensemble_variance")
        spread = (1.0 + 1.0 / members) * np.asarray(ensemble_variance, dtype=np.float64) + so2
        source = "ensemble"
    else:
        spread = sb2 + so2
        source = "background error variance"
    columns = {"1": np.ones_like(d), "d": d, "d2": d * d, "da": da, "da2": da * da, "db": db, "db2": db * db,
               "chi": d * d / (sb2 + so2), "da_d": da * d, "db_d": db * d, "so2": so2, "sb2": sb2,
               "spread": spread}
    names = list(columns)
    codes, positions = np.unique(np.asarray(cycle), return_inverse=True)
    sums = per_cycle_sums(np.column_stack([columns[k] for k in names]), positions, codes.size)
    index = {k: j for j, k in enumerate(names)}
    F = np.column_stack([sums[:, index[num]] for num, _ in _RATIOS.values()])
    G = np.column_stack([sums[:, index[den]] for _, den in _RATIOS.values()])
    estimates = ratio_estimates(F, G, level=level, rng=rng, samples=samples, block_length=block_length)
    out: dict[str, object] = {"count": int(d.size), "cycles": int(codes.size)}
    for name, est in zip(_RATIOS, estimates):
        if name.endswith("mean square"):
            out[name] = est
            out[name.replace("mean square", "rms")] = est.sqrt()
        else:
            out[name] = est
    n = max(d.size, 1)
    out["assumed obs error variance"] = float(so2.sum() / n) if d.size else math.nan
    out["assumed background error variance"] = float(sb2.sum() / n) if d.size else math.nan
    out["spread"] = float(spread.sum() / n) if d.size else math.nan
    out["spread source"] = source
    return out


def cost_check(cost_at_analysis: np.ndarray, nobs: np.ndarray, *, level: float = 0.95,
               rng: np.random.Generator | None = None, samples: int = 1000,
               block_length: int | None = None) -> Estimate | None:
    r""":math:`\sum_c 2J_c(x_a)/\sum_c p_c` over the cycles with a finite cost and observations (None if none).

    Expectation 1 for the optimal linear analysis with correct B and R (the whole cost,
    background term included, is a :math:`\chi^2_p` variable at the minimum).
    """
    J = np.asarray(cost_at_analysis, dtype=np.float64)
    p = np.asarray(nobs, dtype=np.float64)
    ok = np.isfinite(J) & (p > 0)
    if not ok.any():
        return None
    return ratio_estimates(2 * J[ok], p[ok], level=level, rng=rng, samples=samples, block_length=block_length)[0]


def observation_ranks(obs_value: np.ndarray, obs_error: np.ndarray, members_hofx: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    r"""Rank of each :math:`y_i` among the :math:`H(x^k)_i + \varepsilon_{k,i}`, :math:`\varepsilon_{k,i}\sim\mathcal N(0,\sigma_{o,i}^2)`.

    Parameters
    ----------
    obs_value, obs_error:
        :math:`y` and :math:`\sigma_o`, shape ``(n,)``.
    members_hofx:
        :math:`H(x^k)`, shape ``(n, N)``.
    rng:
        Seeded generator of the :math:`\varepsilon` (see the module docstring for why they
        are needed).

    Returns
    -------
    ndarray of int
        Ranks in ``0..N``: the number of perturbed members below :math:`y`.
    """
    hx = np.asarray(members_hofx, dtype=np.float64)
    y = np.asarray(obs_value, dtype=np.float64)
    sigma = np.asarray(obs_error, dtype=np.float64)
    perturbed = hx + sigma[:, None] * rng.standard_normal(hx.shape)
    return np.sum(perturbed < y[:, None], axis=1)


def rank_histogram(ranks: np.ndarray, members: int) -> np.ndarray:
    """Counts of the ranks ``0..members`` (length ``members + 1``)."""
    return np.bincount(np.asarray(ranks, dtype=np.int64), minlength=members + 1)


@dataclass(frozen=True)
class RankFlatness:
    r"""Pearson's test of a flat rank histogram: :math:`X^2`, degrees of freedom :math:`N`, p-value."""

    statistic: float
    dof: int
    pvalue: float


def rank_flatness(counts: np.ndarray) -> RankFlatness:
    r"""Pearson :math:`X^2 = \sum_r (n_r - e)^2/e`, :math:`e = n/(N+1)`, against :math:`\chi^2_{N}`."""
    from scipy.stats import chi2

    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0 or c.size < 2:
        return RankFlatness(math.nan, max(c.size - 1, 0), math.nan)
    e = total / c.size
    x2 = float(((c - e) ** 2).sum() / e)
    dof = c.size - 1
    return RankFlatness(x2, dof, float(chi2.sf(x2, dof)))


def per_cycle_series(values: Mapping[str, np.ndarray], cycle: np.ndarray, ncycles: int) -> dict[str, np.ndarray]:
    """Per-cycle means of each array of ``values`` (``cycle`` positions in ``0..ncycles-1``; NaN where empty)."""
    names = list(values)
    columns = np.column_stack([np.asarray(values[k], dtype=np.float64) for k in names] +
                              [np.ones(np.asarray(cycle).size)])
    sums = per_cycle_sums(columns, cycle, ncycles)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = sums[:, :-1] / sums[:, -1:]
    return {k: means[:, j] for j, k in enumerate(names)}
