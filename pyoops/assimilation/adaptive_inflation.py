r"""Online adaptive multiplicative (prior) inflation: one interface, five schemes.

Every scheme keeps an inflation field :math:`\lambda_g` (one value per grid point; the same value
everywhere when ``spatial: global``) that multiplies the background-error covariance of the
ensemble, :math:`\mathbf P^b \leftarrow \lambda\,\mathbf P^b` (the LETKF's ``mult``; the EnKF's
and EDA's member perturbations times :math:`\sqrt{\lambda_g}`).  At each cycle, before the
analysis:

1. damping (DART): :math:`\lambda \leftarrow 1 + \delta(\lambda - 1)`;
2. the scheme updates :math:`\lambda` from this cycle's innovations of the *uninflated*
   background ensemble (:class:`ObsSpaceEnsemble`): globally from every observation, or at every
   grid point from its local observations with their localization weights (``spatial: local``);
3. bounds, and EnKF-C's cap :math:`\lambda \le 1 + r(\sigma_f/\sigma_a - 1)` (``cap: r``, with the
   spread ratio of the previous analysis at that point);
4. the analysis uses the updated :math:`\lambda` (update-then-analyse: the inflation of a cycle
   already knows that cycle's observations, as the EnKF-N does by construction).

Schemes (``scheme``):

``likelihood`` (pyoops)
    Recursive maximum likelihood with a forgetting window.  The innovation likelihood of
    :mod:`~pyoops.diagnostics.tuning.spectral` (the tuning likelihood in ensemble-space form,
    tempered by the localization weights at each point) gives per cycle the score
    :math:`g_t` and Fisher information :math:`F_t` in :math:`\phi = \log\lambda`; the
    information is accumulated with forgetting factor :math:`\rho = 1 - 1/\text{memory}`,
    :math:`I_t = \rho I_{t-1} + F_t`, and :math:`\phi` takes one Fisher-scoring step
    :math:`\phi \leftarrow \phi - g_t/I_t`: the update weight is the inverse of the Fisher
    variance of the estimate, and the fixed point is the maximum of the exponentially weighted
    likelihood of the last ~``memory`` cycles.  :math:`I_0 = 1/\sigma_0^2` (``initial sd``, on the
    log scale) keeps the first steps short.
    ``likelihood form: marginal`` uses the product of the observations' own likelihoods
    (:func:`~pyoops.diagnostics.tuning.spectral.marginal_innovations`) instead of the joint one, so
    that the innovation variance outside the ensemble's span counts too; ``per cycle: k`` gives the
    analysis the cycle's posterior mode about the running estimate (:func:`cycle_posterior_mode`),
    the running estimate being worth ``k`` cycles of data.
``miyoshi`` (Miyoshi 2011)
    With :math:`T = \mathrm{tr}(\mathbf R_w^{-1}\mathbf{HP}^b\mathbf H^\mathrm T)`, :math:`p_\text{eff} = \sum w_i`,
    the observed :math:`\lambda_o = (d^\mathrm T\mathbf R_w^{-1}d - p_\text{eff})/T` with variance
    :math:`v_o = \frac{2}{p_\text{eff}}\big(\frac{\bar\lambda T + p_\text{eff}}{T}\big)^2`, and the Kalman-filter update
    :math:`\lambda \leftarrow \bar\lambda + \frac{\sigma_b^2}{\sigma_b^2 + v_o}(\lambda_o - \bar\lambda)`, :math:`\sigma_b`
    fixed (``initial sd``, 0.04).
``anderson`` (DART, Anderson 2009) and ``el gharamti`` (DART, El Gharamti 2018)
    Each observation in turn updates :math:`(\bar\lambda, \sigma_\lambda)` at every grid point
    it reaches (``global``: one value, every observation with :math:`\gamma = 1`; ``local``:
    :math:`\gamma` = localization weight × the ensemble correlation between the observation
    prior and the point's state, root mean square over the point's variables).  Likelihood
    :math:`d \sim N(0, \theta^2(\lambda))`,
    :math:`\theta^2 = c_N(1 + \gamma(\sqrt\lambda - 1))^2\sigma_p^2 + \sigma_o^2`, with
    :math:`c_N = 1` (``anderson``) or the finite-ensemble factor :math:`c_N = 1 + 1/N` (``el gharamti``:
    the ensemble mean's own sampling error; derived here for exchangeable members).  Prior
    Gaussian (``anderson``) or inverse gamma (``el gharamti``) whose mode is :math:`\bar\lambda` and whose
    standard deviation is :math:`\sigma_\lambda` (:func:`inverse_gamma_shape`; matching the mode, not the mean, keeps
    the posterior mode at :math:`\bar\lambda` when the observation says nothing, as with the Gaussian).  The new mean is the
    mode of the exact posterior (Newton; DART linearises :math:`\theta^2` to get a quadratic or
    cubic, which this does not need); the new sd from the density ratio
    :math:`\sigma^2 = -\sigma_\text{prior}^2/(2\log[p(\hat\lambda + \sigma_\text{prior})/p(\hat\lambda)])`, never larger
    than before (Gaussian) or by at most 5 % per cycle (inverse gamma), and at least
    ``sd lower bound`` (DART's documented setting: initial sd 0.6, sd lower bound 0.6,
    damping 0.9, bounds [1, 100]; the observations are used in one batch, not after each
    other's update as in DART's sequential filter).
``enkf-n`` (Bocquet 2011; Bocquet, Raanes & Hannart 2015)
    No memory: :math:`\lambda = \ell_1^2` minimises the dual cost
    :math:`J(\ell_1) = \sum_i \frac{q_i}{(N-1)(1 + \ell_1^2\gamma_i)} + \frac{e_N}{\ell_1^2} + c_L\log\ell_1^2`
    (:math:`\gamma_i, q_i` as in :mod:`~pyoops.diagnostics.tuning.spectral`) with
    :math:`e_N = (N+1)/N`, :math:`c_L = (N+g)/(N-1)`, the mode correction of Bocquet et al.
    2015 (:math:`e_N/m_c`, :math:`c_L m_c`, :math:`m_c = (e_N/c_L)^{\kappa/2}`,
    :math:`\kappa = \overline{1/(1 + \gamma_i)}` over :math:`N` eigenvalues) and ``xN`` multiplying both.
    Unbounded by default (:math:`\lambda < 1` is allowed, as in the original).

Cost: every scheme works on the selection rows of the LETKF (one row when global), from the
observation-space ensemble the analysis computes anyway; ``anderson``/``el gharamti`` loop over
the observations of a row (vectorised over points).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from pyoops.config.parameters import Parameters
from pyoops.diagnostics.tuning.spectral import SpectralInnovations, marginal_innovations, spectral_innovations

__all__ = [
    "AdaptiveInflation",
    "AdaptiveInflationParameters",
    "ObsSpaceEnsemble",
    "SCHEMES",
    "cycle_posterior_mode",
    "fisher_scoring_step",
    "member_perturbations",
    "point_spread",
    "read_inflation_file",
    "write_inflation_file",
]

SCHEMES = ("likelihood", "miyoshi", "anderson", "el gharamti", "enkf-n")
_DEFAULT_SD = {"likelihood": 0.5, "miyoshi": 0.04, "anderson": 0.6, "el gharamti": 0.6, "enkf-n": 0.0}


class AdaptiveInflationParameters(Parameters):
    """The ``adaptive.inflation`` section of ``pyoops cycle``."""

    scheme: Literal["likelihood", "miyoshi", "anderson", "el gharamti", "enkf-n"] = Field(
        description="likelihood (pyoops: recursive ML with forgetting), miyoshi (Miyoshi 2011), anderson (DART "
                    "2009, Gaussian prior), el gharamti (DART 2018, inverse-gamma prior), enkf-n (Bocquet 2011).")
    spatial: Literal["global", "local"] = Field(
        "global", description="One inflation for the domain, or one per grid point from its local observations.")
    initial: float = Field(1.0, gt=0, description="Initial inflation (ignored by enkf-n).")
    initial_sd: float | None = Field(
        None, alias="initial sd", gt=0,
        description="Prior sd: likelihood 0.5 (of log inflation), miyoshi 0.04 (fixed), anderson/el gharamti 0.6.")
    sd_lower_bound: float | None = Field(
        None, alias="sd lower bound", gt=0,
        description="anderson/el gharamti: the sd never falls below it (default: the initial sd, i.e. fixed sd).")
    memory: float = Field(100.0, gt=1, description="likelihood: forgetting window in cycles (rho = 1 - 1/memory).")
    damping: float = Field(1.0, ge=0, le=1, description="lambda <- 1 + damping (lambda - 1) at each cycle "
                                                        "(DART's inf_damping; 1: none).")
    bounds: tuple[float, float] | None = Field(
        None, description="[lower, upper] of the inflation (default [1, 100]; enkf-n: unbounded).")
    cap: float | None = Field(None, gt=0, description="EnKF-C cap r: lambda <= 1 + r (sigma_f/sigma_a - 1), with "
                                                      "the previous analysis's spread ratio at each point.")
    xN: float = Field(1.0, gt=0, description="enkf-n: hyperprior strength (DAPPER's xN).")
    likelihood_form: Literal["joint", "marginal"] = Field(
        "joint", alias="likelihood form",
        description="likelihood: 'joint', the innovations' joint likelihood, in which lambda explains the part of "
                    "d in the ensemble's span; 'marginal', the product of each observation's own likelihood, in "
                    "which every observation's whole innovation variance counts (as DART's schemes).")
    per_cycle: float | None = Field(
        None, alias="per cycle", gt=0,
        description="likelihood: the analysis uses this cycle's posterior mode of log lambda, the running estimate "
                    "its prior worth this many cycles' Fisher information (default: the running estimate).")

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not (0 < value[0] <= value[1]):
            raise ValueError(f"bounds must satisfy 0 < lower <= upper, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _scheme_options(self) -> AdaptiveInflationParameters:
        if self.scheme == "enkf-n" and ("initial_sd" in self.model_fields_set or self.damping != 1.0):
            raise ValueError("enkf-n has no memory: 'initial sd' and 'damping' do not apply")
        if self.per_cycle is not None and self.scheme != "likelihood":
            raise ValueError("'per cycle' is an option of the likelihood scheme")
        if self.likelihood_form != "joint" and self.scheme != "likelihood":
            raise ValueError("'likelihood form' is an option of the likelihood scheme")
        return self

    @property
    def sd0(self) -> float:
        return self.initial_sd if self.initial_sd is not None else _DEFAULT_SD[self.scheme]

    @property
    def needs_state_perturbations(self) -> bool:
        """The local DART schemes weight each observation by its ensemble correlation with the point's state."""
        return self.spatial == "local" and self.scheme in ("anderson", "el gharamti")

    @property
    def limits(self) -> tuple[float, float]:
        if self.bounds is not None:
            return self.bounds
        return (0.0, math.inf) if self.scheme == "enkf-n" else (1.0, 100.0)


@dataclass
class ObsSpaceEnsemble:
    r"""The background ensemble in observation space, as one analysis sees it.

    ``perturbations`` :math:`\mathbf Y` ``(N, p)`` (uninflated), ``departures`` :math:`d = y - \overline{H(x)}`
    ``(p,)``, ``inverse_variance`` :math:`1/\sigma_o^2` ``(p,)`` (0: not used) of the assumed :math:`\mathbf R`;
    ``index``/``weight`` ``(rows, m)`` the local observations of each selection row (padding weight 0)
    and ``point_row`` ``(npoints,)`` the row of each grid point; ``state_perturbations``
    ``(N, npoints, nvars)`` are needed by ``anderson``/``el gharamti`` with ``spatial: local``.
    """

    perturbations: np.ndarray
    departures: np.ndarray
    inverse_variance: np.ndarray
    index: np.ndarray
    weight: np.ndarray
    point_row: np.ndarray
    state_perturbations: np.ndarray | None = None

    @property
    def members(self) -> int:
        return int(self.perturbations.shape[0])

    @classmethod
    def from_hofx(cls, hofx: np.ndarray, y: np.ndarray, obs_variance: np.ndarray, npoints: int,
                  selection: Any = None, state_perturbations: np.ndarray | None = None
                  ) -> tuple[ObsSpaceEnsemble, np.ndarray]:
        r"""From :math:`H(x_k)` ``(N, p)``, ``y`` and the variances ``(p,)`` of the assumed :math:`\mathbf R`; the
        observations of each row from ``selection`` (a
        :class:`~pyoops.assimilation.letkf.LocalObsSelection`; None: one row of every observation).
        Returns the ensemble and the mask of usable observations (finite values and H(x), positive variance)."""
        hx = np.asarray(hofx, dtype=np.float64)
        mean = hx.mean(axis=0)
        yp = hx - mean
        d = np.asarray(y, dtype=np.float64) - mean
        var = np.asarray(obs_variance, dtype=np.float64)
        ok = np.isfinite(d) & np.isfinite(var) & (var > 0) & np.isfinite(yp).all(axis=0)
        rinv = np.where(ok, 1.0 / np.where(ok, var, 1.0), 0.0)
        if selection is None:
            index, weight, point_row = _single_row(d.size, npoints)
        else:
            index, weight, point_row = selection.index, selection.weight, selection.point_row
        return cls(np.where(ok, yp, 0.0), np.where(ok, d, 0.0), rinv, index, weight, point_row,
                   state_perturbations), ok

    def spectral(self, marginal: bool = False) -> SpectralInnovations:
        """Statistics of every row (localization-weighted); ``marginal``: of the observations' marginal
        likelihoods (:func:`~pyoops.diagnostics.tuning.spectral.marginal_innovations`)."""
        yt = self.perturbations.T[self.index]                        # (rows, m, N)
        form = marginal_innovations if marginal else spectral_innovations
        return form(yt, self.departures[self.index], self.inverse_variance[self.index], self.weight)


def _single_row(nobs: int, npoints: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index, weight and point_row of one row holding every observation at weight 1, shared by every point."""
    return np.arange(nobs)[None, :], np.ones((1, nobs)), np.zeros(npoints, dtype=np.intp)


def _global_rows(ens: ObsSpaceEnsemble) -> ObsSpaceEnsemble:
    """The same ensemble with a single row holding every observation at weight 1."""
    return replace(ens, **dict(zip(("index", "weight", "point_row"),
                                   _single_row(ens.departures.size, ens.point_row.size))))


def member_perturbations(fields: Any) -> np.ndarray:
    """Perturbations about the ensemble mean, ``(N, npoints, nvars)``, from members ``{variable: (N, *grid)}``."""
    arrays = [np.asarray(a) for a in fields.values()]
    n = arrays[0].shape[0]
    return np.stack([(a - a.mean(axis=0)).reshape(n, -1) for a in arrays], axis=-1)


def point_spread(fields: Any) -> np.ndarray:
    """Ensemble standard deviation per grid point (:math:`N-1`), root mean square over the variables ``(npoints,)``."""
    arrays = [np.asarray(a) for a in fields.values()]
    n = arrays[0].shape[0]
    return np.sqrt(np.mean([a.reshape(n, -1).var(axis=0, ddof=1) for a in arrays], axis=0))


class AdaptiveInflation:
    """The inflation field and its update; the state is restartable
    (:meth:`~pyoops.assimilation.adaptive_inflation.AdaptiveInflation.state_arrays`)."""

    def __init__(self, params: AdaptiveInflationParameters, npoints: int) -> None:
        self.params = params
        self.npoints = int(npoints)
        size = 1 if params.spatial == "global" else self.npoints
        self.mean = np.full(size, params.initial if params.scheme != "enkf-n" else 1.0)
        self.sd = np.full(size, params.sd0)
        #: The accumulated Fisher information of log lambda (the likelihood scheme).
        self.information = np.full(size, 1.0 / params.sd0**2 if params.scheme == "likelihood" else 0.0)
        #: The spread ratio sigma_f/sigma_a of the previous analysis for the EnKF-C cap, NaN before the first.
        self.spread_ratio = np.full(size, np.nan)
        #: ``per cycle``: this cycle's posterior mode, which the analysis uses (None: ``mean``).
        self.cycle_mean: np.ndarray | None = None

    # -- state ------------------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Copies of the arrays that define the scheme's state (for the cycle checkpoint)."""
        return {"mean": self.mean.copy(), "sd": self.sd.copy(), "information": self.information.copy(),
                "spread ratio": self.spread_ratio.copy()}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore the state saved by :meth:`~pyoops.assimilation.adaptive_inflation.AdaptiveInflation.state_arrays`."""
        for key, attr in (("mean", "mean"), ("sd", "sd"), ("information", "information"),
                          ("spread ratio", "spread_ratio")):
            a = np.asarray(arrays[key], dtype=np.float64)
            if a.shape != self.mean.shape:
                raise ValueError(f"adaptive inflation state '{key}' has shape {a.shape}, expected {self.mean.shape}")
            setattr(self, attr, a.copy())

    # -- the field ----------------------------------------------------------------------------------
    def field(self) -> np.ndarray:
        """:math:`\\lambda` at every grid point ``(npoints,)`` (this cycle's, with ``per cycle``)."""
        value = self.mean if self.cycle_mean is None else self.cycle_mean
        return np.broadcast_to(value, (self.npoints,)).copy()

    # -- update ------------------------------------------------------------------------------------
    def update(self, ens: ObsSpaceEnsemble) -> np.ndarray:
        """Damp, update from this cycle's innovations, bound and cap; returns the field to use now.

        ``ens.inverse_variance`` is that of :math:`\\mathbf R` as the analysis will use it (with online R
        tuning: :math:`a_o\\mathbf R`).
        """
        p = self.params
        self.cycle_mean = None            # this cycle's, set below with ``per cycle``
        if p.damping != 1.0:
            self.mean = 1.0 + p.damping * (self.mean - 1.0)
        if p.spatial == "global":
            ens = _global_rows(ens)
        rows = ens.point_row if p.spatial == "local" else np.zeros(1, dtype=np.intp)
        scheme = p.scheme
        if scheme in ("anderson", "el gharamti"):
            self._dart(ens, rows)
        else:
            stats = ens.spectral(marginal=p.likelihood_form == "marginal")
            gamma, q, dd, peff = (stats.gamma[rows], stats.q[rows], stats.dd[rows], stats.p_eff[rows])
            if scheme == "likelihood":
                cycle_stats = SpectralInnovations(gamma, q, dd, peff, stats.nobs[rows], stats.members)
                self._likelihood(cycle_stats)
            elif scheme == "miyoshi":
                self._miyoshi(gamma.sum(axis=-1), dd, peff)
            else:
                self.mean = enkf_n_inflation(gamma, q, stats.members, p.xN)
        field = self.limit()
        if scheme == "likelihood" and p.per_cycle is not None:
            # The running estimate is worth ``per cycle`` cycles of this cycle's Fisher information.
            _, fisher = cycle_stats.score(self.mean, np.ones(self.mean.shape))
            precision = p.per_cycle * fisher[..., 0, 0]
            self.cycle_mean = self._limited(cycle_posterior_mode(cycle_stats, self.mean, precision))
            field = self.field()
        return field

    def limit(self) -> np.ndarray:
        """Apply the bounds and the EnKF-C cap to the running estimate; returns the field to use now."""
        self.mean = self._limited(self.mean)
        return self.field()

    def _limited(self, values: np.ndarray) -> np.ndarray:
        """``values`` within the bounds and under the EnKF-C cap."""
        p = self.params
        lo, hi = p.limits
        values = np.clip(values, lo, hi)
        if p.cap is not None:
            ok = np.isfinite(self.spread_ratio)
            values = np.where(ok, np.minimum(values, 1.0 + p.cap * (np.where(ok, self.spread_ratio, 1.0) - 1.0)),
                              values)
            values = np.maximum(values, lo)
        return values

    def record_spread_ratio(self, forecast_spread: np.ndarray, analysis_spread: np.ndarray) -> None:
        """After the analysis: :math:`\\sigma_f/\\sigma_a` per point ``(npoints,)`` (global: domain means), for the cap."""
        if self.params.cap is None:
            return
        sf, sa = np.asarray(forecast_spread, dtype=np.float64), np.asarray(analysis_spread, dtype=np.float64)
        if self.params.spatial == "global":
            sf, sa = np.atleast_1d(np.sqrt(np.mean(sf**2))), np.atleast_1d(np.sqrt(np.mean(sa**2)))
        with np.errstate(divide="ignore", invalid="ignore"):
            self.spread_ratio = np.where(sa > 0, sf / sa, np.nan)

    def _likelihood(self, stats: SpectralInnovations) -> None:
        lam = self.mean
        grad, fisher = stats.score(lam, np.ones(lam.shape))
        has = stats.gamma.sum(axis=-1) > 0
        # A Fisher-scoring step on log lambda, limited to a factor e per cycle.
        step, self.information = fisher_scoring_step(self.information, grad[..., 0], fisher[..., 0, 0],
                                                     self.params.memory, has)
        self.mean = lam * np.exp(-step)
        self.sd = 1.0 / np.sqrt(np.maximum(self.information, np.finfo(np.float64).tiny))

    def _miyoshi(self, trace: np.ndarray, dd: np.ndarray, peff: np.ndarray) -> None:
        has = (trace > 0) & (peff > 0)
        t = np.where(has, trace, 1.0)
        pe = np.where(has, peff, 1.0)
        lam_o = (dd - pe) / t
        v_o = (2.0 / pe) * ((self.mean * t + pe) / t) ** 2
        sb2 = self.sd**2
        self.mean = np.where(has, self.mean + sb2 / (sb2 + v_o) * (lam_o - self.mean), self.mean)

    def _dart(self, ens: ObsSpaceEnsemble, rows: np.ndarray) -> None:
        p = self.params
        n = ens.members
        cn = 1.0 + 1.0 / n if p.scheme == "el gharamti" else 1.0
        gaussian = p.scheme == "anderson"
        sd_floor = p.sd_lower_bound if p.sd_lower_bound is not None else p.sd0
        var_p = (ens.perturbations**2).sum(axis=0) / (n - 1)                 # (p,)
        idx, w = ens.index[rows], ens.weight[rows]                              # (points|1, m)
        if p.spatial == "local":
            corr = _obs_state_correlation(ens, idx)                             # (points, m)
            gam = w * corr
        else:
            gam = w
        sd_start = self.sd.copy()
        lam, sd = self.mean.copy(), self.sd.copy()
        obs_var = 1.0 / np.where(ens.inverse_variance > 0, ens.inverse_variance, np.inf)
        for c in range(idx.shape[1]):
            j = idx[:, c]
            g = gam[:, c]
            active = (g > 0) & (ens.inverse_variance[j] > 0) & (var_p[j] > 0)
            if not active.any():
                continue
            lam, sd = _dart_observation(lam, sd, ens.departures[j], var_p[j], obs_var[j], g, cn, gaussian, active,
                                        p.limits)
        sd = np.minimum(sd, sd_start * (1.0 if gaussian else 1.05))   # El Gharamti: at most +5 % per cycle
        self.mean, self.sd = lam, np.maximum(sd, sd_floor)


def fisher_scoring_step(information: np.ndarray, gradient: np.ndarray, fisher: np.ndarray, memory: float,
                        active: bool | np.ndarray = True, max_step: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    r"""One step of recursive maximum likelihood with forgetting, on an internal parameter :math:`\phi`.

    With the forgetting factor :math:`\rho = 1 - 1/\text{memory}`, this cycle's score
    :math:`g_t = \partial_\phi(-\log L_t)` and Fisher information :math:`F_t`:

    .. math::

        I_t = \rho I_{t-1} + F_t,\qquad \phi_t = \phi_{t-1} - \mathrm{clip}(g_t/I_t, \pm s_\max),

    whose fixed point maximises the exponentially weighted likelihood of the last ~``memory``
    cycles; the clip (``max_step`` :math:`s_\max`, one unit of :math:`\phi`) bounds the first
    steps, where the quadratic model is poor.  Returns ``(step, I_t)``, the step to *subtract*
    from :math:`\phi` (0 where not ``active``).  Shared by the ``likelihood`` schemes of the
    inflation (:math:`\phi = \log\lambda`) and of the hybrid weight
    (:math:`\phi = \mathrm{logit}\,\beta`, :mod:`pyoops.assimilation.adaptive_hybrid`).
    """
    rho = 1.0 - 1.0 / memory
    information = rho * np.asarray(information, dtype=np.float64) + fisher
    step = np.where(active, gradient / np.maximum(information, np.finfo(np.float64).tiny), 0.0)
    return np.clip(step, -max_step, max_step), information


#: Doublings of the step from the prior's centre when bracketing the cycle's mode (up to |phi - phi_bar| = 512).
_BRACKET_DOUBLINGS = 10


def cycle_posterior_mode(stats: SpectralInnovations, running: np.ndarray, precision: np.ndarray,
                         tolerance: float = 1e-12, max_iterations: int = 200) -> np.ndarray:
    r"""This cycle's posterior mode of :math:`\phi = \log\lambda`, the running estimate its Gaussian prior.

    Minimises :math:`h(\phi) = -\log L_t(\phi) + \tfrac{\kappa}{2}(\phi - \bar\phi)^2` with
    :math:`\bar\phi = \log\bar\lambda` (``running``) and prior precision :math:`\kappa` (``precision``;
    :math:`kF_t(\bar\phi)` for ``per cycle: k``, :math:`F_t` this cycle's Fisher information;
    :math:`\infty` returns :math:`\bar\lambda`): the analysis reacts to this cycle's innovations about a
    centre that the forgetting likelihood keeps consistent.

    :math:`h` need not be convex, but :math:`h'(\phi) = g_t(\phi) + \kappa(\phi - \bar\phi)` is negative
    for :math:`\phi \to -\infty` and positive for :math:`\phi \to \infty` (the score :math:`g_t` is
    bounded), so a bracket :math:`h'(\phi_-) < 0 < h'(\phi_+)` is found by doubling steps from
    :math:`\bar\phi`, and safeguarded Newton (on the observed curvature; bisection wherever a step leaves
    the bracket or the curvature is not positive) keeps it until it is narrower than ``tolerance``: the
    result is a local minimum where :math:`h'` changes sign from negative to positive.  Rows without information (no observation, or
    :math:`\kappa = \infty`) return ``running`` unchanged; a mode not bracketed within
    :math:`|\phi - \bar\phi| \le 512` returns the farthest trial (the bounds then apply).
    """
    running = np.asarray(running, dtype=np.float64)
    phi_bar = np.log(running)
    kappa = np.broadcast_to(np.asarray(precision, dtype=np.float64), phi_bar.shape)
    free = np.isfinite(kappa) & (stats.gamma.sum(axis=-1) > 0)
    kappa = np.where(free, kappa, 0.0)
    ones = np.ones(phi_bar.shape)

    def slope(phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        grad, _ = stats.score(np.exp(phi), ones)
        return grad[..., 0] + kappa * (phi - phi_bar), stats.observed_curvature(np.exp(phi)) + kappa

    g0, _ = slope(phi_bar)
    below = g0 > 0                       # h' > 0 at the prior's centre: the minimum lies below it
    lo = np.where(below, -np.inf, phi_bar)
    hi = np.where(below, phi_bar, np.inf)
    moves = free & (g0 != 0)             # rows whose mode is not the prior's centre
    searching = moves
    step = 1.0
    for _ in range(_BRACKET_DOUBLINGS):  # a bracket h'(lo) < 0 < h'(hi), moving the open end outwards
        if not searching.any():
            break
        trial = np.where(below, phi_bar - step, phi_bar + step)
        gt, _ = slope(trial)
        down, up = searching & below, searching & ~below
        lo = np.where((down & (gt < 0)) | (up & (gt <= 0)), trial, lo)
        hi = np.where((up & (gt > 0)) | (down & (gt >= 0)), trial, hi)
        searching = searching & ~((down & (gt < 0)) | (up & (gt > 0)))
        step *= 2.0
    # Not bracketed within |phi - phi_bar| <= 512: the mode is beyond any bound; the farthest trial stands for it.
    phi = np.where(searching, np.where(below, hi, lo), phi_bar)
    active = moves & ~searching
    phi = np.where(active, 0.5 * (lo + hi), phi)
    for _ in range(max_iterations):     # safeguarded Newton inside the bracket
        if not active.any():
            break
        g, curvature = slope(phi)
        lo = np.where(active & (g < 0), phi, lo)
        hi = np.where(active & (g > 0), phi, hi)
        newton = phi - g / np.where(curvature > 0, curvature, np.inf)
        new = np.where((newton > lo) & (newton < hi), newton, 0.5 * (lo + hi))
        done = (g == 0) | (hi - lo <= tolerance) | (np.abs(new - phi) <= tolerance)
        phi = np.where(active & (g != 0), new, phi)
        active = active & ~done
    return np.where(moves, np.exp(phi), running)


def _obs_state_correlation(ens: ObsSpaceEnsemble, idx: np.ndarray) -> np.ndarray:
    """Ensemble correlation between each point's state (rms over its variables) and its local obs priors."""
    if ens.state_perturbations is None:
        raise ValueError("local anderson/el gharamti inflation needs the state perturbations")
    x = ens.state_perturbations                                   # (N, npoints, nv)
    y = ens.perturbations                                         # (N, p)
    sx = np.sqrt((x**2).sum(axis=0))                               # (npoints, nv)
    sy = np.sqrt((y**2).sum(axis=0))                               # (p,)
    cov = np.einsum("kgv,kgm->gmv", x, y[:, idx])                  # (npoints, m, nv)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / (sx[:, None, :] * sy[idx][..., None])
    corr = np.where(np.isfinite(corr), corr, 0.0)
    return np.sqrt(np.mean(corr**2, axis=-1))


def _dart_log_posterior(lam: np.ndarray, mean: np.ndarray, sd: np.ndarray, d: np.ndarray, var_p: np.ndarray,
                        var_o: np.ndarray, gam: np.ndarray, cn: float, gaussian: bool,
                        shape: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Log posterior of lambda for one observation (up to a constant); ``shape``: the inverse gamma's
    (alpha, beta) if already computed from (mean, sd)."""
    theta2 = cn * (1.0 + gam * (np.sqrt(lam) - 1.0)) ** 2 * var_p + var_o
    loglik = -0.5 * np.log(theta2) - 0.5 * d * d / theta2
    if gaussian:
        return loglik - 0.5 * ((lam - mean) / sd) ** 2
    alpha, beta = shape if shape is not None else inverse_gamma_shape(mean, sd)
    return loglik - (alpha + 1.0) * np.log(lam) - beta / lam


def inverse_gamma_shape(mode: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Shape :math:`\alpha > 2` and scale :math:`\beta` of the inverse gamma with this mode and standard deviation:
    :math:`\beta = m(\alpha + 1)` and :math:`\sigma^2 = m^2(\alpha+1)^2/((\alpha-1)^2(\alpha-2))`, whose right side
    decreases from :math:`\infty` to 0 on :math:`\alpha \in (2, \infty)` (solved by bisection on :math:`\log(\alpha-2)`)."""
    m, v = np.asarray(mode, dtype=np.float64), np.asarray(sd, dtype=np.float64) ** 2
    lo, hi = np.full(np.broadcast(m, v).shape, -30.0), np.full(np.broadcast(m, v).shape, 30.0)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        a = 2.0 + np.exp(mid)
        too_wide = m**2 * (a + 1.0) ** 2 / ((a - 1.0) ** 2 * (a - 2.0)) > v
        lo, hi = np.where(too_wide, mid, lo), np.where(too_wide, hi, mid)
    alpha = 2.0 + np.exp(0.5 * (lo + hi))
    return alpha, m * (alpha + 1.0)


def _dart_observation(lam: np.ndarray, sd: np.ndarray, d: np.ndarray, var_p: np.ndarray, var_o: np.ndarray,
                      gam: np.ndarray, cn: float, gaussian: bool, active: np.ndarray,
                      limits: tuple[float, float] = (1.0, 100.0)) -> tuple[np.ndarray, np.ndarray]:
    """One observation's update of (mean, sd) at the points where ``active`` (vectorised); the mean stays
    within ``limits`` (as DART bounds each observation's update) and a Gaussian sd never grows."""
    mean = lam
    lo, hi = max(limits[0], 1e-6), limits[1]
    shape = None if gaussian else inverse_gamma_shape(mean, sd)

    def f(x: np.ndarray) -> np.ndarray:
        return _dart_log_posterior(x, mean, sd, d, var_p, var_o, gam, cn, gaussian, shape)

    x = mean.copy()
    for _ in range(30):   # Newton on the log posterior (finite-difference derivatives), with backtracking
        h = 1e-5 * np.maximum(x, 1e-2)
        f0, fp, fm = f(x), f(x + h), f(np.maximum(x - h, 0.5 * x))
        hm = x - np.maximum(x - h, 0.5 * x)
        d1 = (fp - fm) / (h + hm)
        d2 = 2.0 * (hm * fp - (h + hm) * f0 + h * fm) / (h * hm * (h + hm))
        step = np.where(d2 < 0, -d1 / np.where(d2 < 0, d2, -1.0), np.sign(d1) * 0.1 * np.maximum(x, 0.1))
        step = np.clip(step, -0.5 * x, 0.5 * np.maximum(x, 0.1))
        t = np.ones_like(x)
        for _ in range(12):
            worse = f(x + t * step) < f0
            if not worse.any():
                break
            t = np.where(worse, 0.5 * t, t)
        x = np.clip(x + t * step, lo, hi)
        if np.all(np.abs(t * step) <= 1e-9 * np.maximum(x, 1.0)):
            break
    ratio = f(x + sd) - f(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        new_sd = np.where(ratio < 0, np.sqrt(-sd**2 / (2.0 * ratio)), sd)
    new_sd = np.where(np.isfinite(new_sd), new_sd, sd)
    if gaussian:
        new_sd = np.minimum(new_sd, sd)
    return np.where(active, x, lam), np.where(active, new_sd, sd)


def enkf_n_inflation(gamma: np.ndarray, q: np.ndarray, members: int, xN: float = 1.0, g: int = 0) -> np.ndarray:
    r"""EnKF-N's :math:`\lambda = \ell_1^2` per row (the module docstring), ``gamma``/``q`` ``(rows, K)``."""
    n = members
    n1 = n - 1
    e_n = (n + 1) / n
    c_l = (n + g) / n1
    # Mode correction (Bocquet et al. 2015): kappa = mean over the N eigenvalues (zeros padded) of 1/(1+gamma).
    k = gamma.shape[-1]
    kappa = ((1.0 / (1.0 + gamma)).sum(axis=-1) + max(n - k, 0)) / n if k <= n else (1.0 / (1.0 + gamma)).mean(-1)
    mc = np.sqrt((e_n / c_l) ** kappa)
    e_n, c_l = xN * e_n / mc, xN * c_l * mc

    def derivatives(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # J as a function of u = l1^2: sum q/(N1 (1 + u gamma)) + eN/u + cL log u.
        den = 1.0 + u[..., None] * gamma
        j1 = -(q * gamma / den**2).sum(axis=-1) / n1 - e_n / u**2 + c_l / u
        j2 = 2.0 * (q * gamma**2 / den**3).sum(axis=-1) / n1 + 2.0 * e_n / u**3 - c_l / u**2
        return j1, j2

    # Newton in log u from u = 1, with a bracketing fallback (J'(u) < 0 near 0, J'(u) > 0 for large u).
    lo, hi = np.full(gamma.shape[:-1], 1e-6), np.full(gamma.shape[:-1], 1e6)
    u = np.ones(gamma.shape[:-1])
    for _ in range(60):
        j1, j2 = derivatives(u)
        lo = np.where(j1 < 0, u, lo)
        hi = np.where(j1 > 0, u, hi)
        newton = u - j1 / np.where(j2 > 0, j2, np.nan)
        inside = np.isfinite(newton) & (newton > lo) & (newton < hi)
        new = np.where(inside, newton, np.sqrt(lo * hi))
        if np.all(np.abs(new - u) <= 1e-12 * u):
            u = new
            break
        u = new
    return u



# Inflation files (restart of a single-analysis application, as DART's inflation files) -------------
INFLATION_FILE_VERSION = 1


def write_inflation_file(filename: str, inflation: AdaptiveInflation) -> str:
    """Write the scheme's state and its field to netCDF ``filename`` (atomically).

    Variables ``inflation`` (the field, ``point``), and the state arrays ``mean``, ``sd``,
    ``information``, ``spread_ratio`` (``value``: 1 for a global scheme, else the grid points);
    attributes ``scheme``, ``spatial``, ``version``.
    """
    import netCDF4

    from pyoops.util.atomic import atomic_output

    with atomic_output(filename, ".nc") as tmp:
        with netCDF4.Dataset(os.path.abspath(tmp), "w") as ds:
            ds.scheme = inflation.params.scheme
            ds.spatial = inflation.params.spatial
            ds.version = INFLATION_FILE_VERSION
            ds.createDimension("point", inflation.npoints)
            ds.createDimension("value", inflation.mean.size)
            field = ds.createVariable("inflation", "f8", ("point",))
            field.long_name = "multiplicative prior inflation of the background-error covariance"
            field[:] = inflation.field()
            for key, values in inflation.state_arrays().items():
                ds.createVariable(key.replace(" ", "_"), "f8", ("value",))[:] = values
    return str(filename)


def read_inflation_file(filename: str, inflation: AdaptiveInflation, path: str) -> None:
    """Restore ``inflation``'s state from a file of :func:`write_inflation_file` (one-line errors naming the file)."""
    import netCDF4

    from pyoops.util.atomic import readable_path
    from pyoops.util.errors import InputFileError

    try:
        with netCDF4.Dataset(os.path.abspath(readable_path(filename))) as ds:
            meta = {k: getattr(ds, k, None) for k in ("scheme", "spatial", "version")}
            arrays = {k: np.array(ds[k.replace(" ", "_")][:], dtype=np.float64)
                      for k in ("mean", "sd", "information", "spread ratio")}
            npoints = ds.dimensions["point"].size
    except (OSError, KeyError, IndexError) as exc:
        raise InputFileError(filename, f"is not an inflation file ({exc}) [{path}]") from None
    expected = {"scheme": inflation.params.scheme, "spatial": inflation.params.spatial,
                "version": INFLATION_FILE_VERSION}
    for key, value in expected.items():
        if meta[key] != value:
            raise InputFileError(filename, f"has {key} {meta[key]!r}, expected {value!r} [{path}]")
    if npoints != inflation.npoints:
        raise InputFileError(filename, f"has {npoints} grid points, the geometry {inflation.npoints} [{path}]")
    inflation.load_state(arrays)
