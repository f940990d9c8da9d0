r"""Online tuning of the observation-error amplitude per observation group, alongside inflation.

The analysis uses :math:`a_{o,g}\mathbf R_g` for every observation group :math:`g` (in ``pyoops
cycle``: each simulated variable), and :math:`a_{o,g}` is updated each cycle.

``likelihood`` (pyoops)
    The score and Fisher information of :math:`\log a_{o,g}` from the innovation likelihood of
    :mod:`~pyoops.diagnostics.tuning.spectral` over the group's observations, at the current
    inflation (domain mean), accumulated with the forgetting factor
    :math:`\rho = 1 - 1/\text{memory}` and applied as a Fisher-scoring step, as the ``likelihood``
    inflation scheme does for :math:`\log\lambda` (:mod:`~pyoops.assimilation.adaptive_inflation`).
    Run with it, inflation and :math:`a_o` are estimated simultaneously from the same prior
    innovations: their information about each other is what separates them.
``desroziers`` (Li, Kalnay & Miyoshi 2009)
    After the analysis, :math:`\hat a_{o,g} = (d^o_a)^\mathrm T d/\mathrm{tr}\,\mathbf R_g` with
    :math:`d^o_a = y - \overline{H(x_a)}` (Desroziers et al. 2005's :math:`\mathrm E[d^o_a d^\mathrm T] = \mathbf R`),
    smoothed in time: :math:`a_{o,g} \leftarrow a_{o,g} + (\hat a_{o,g} - a_{o,g})/\text{memory}`.

Failure mode (both): :math:`\lambda` and :math:`a_o` are separable only through the *shape* of
:math:`\mathbf{HP}^b\mathbf H^\mathrm T` against :math:`\mathbf R` in observation space.  When the ensemble
covariance there is close to a multiple of :math:`\mathbf R` (e.g. :math:`\mathbf H = \mathbf I`, diagonal
:math:`\mathbf R` and a short localization, or an ensemble spectrum that is nearly flat), the
innovation variance only fixes :math:`\lambda\,\sigma_b^2 + a_o\sigma_o^2` and the pair drifts along that
line; with the Desroziers form, a wrong inflation biases :math:`\hat a_o` because the analysis
weights are wrong (Ménard 2016).  :attr:`AdaptiveObsError.confounding` reports the Fisher
correlation of :math:`(\log\lambda, \log a_o)` so a run can see when that happens.

Second failure mode (``likelihood``): the joint likelihood charges every innovation outside the
span of the :math:`N - 1` ensemble perturbations to :math:`\mathbf R`, including the background error
the ensemble misses.  If :math:`a_o` adapts faster than :math:`\lambda` (a shorter ``memory``), a
regime that needs more inflation (e.g. a larger true :math:`\sigma_o`, which weakens the analysis) is
answered by :math:`a_o` instead: the inflation stays too small, the ensemble loses the truth, the
error outside its span grows and :math:`a_o` grows with it.  Measured on the Lorenz-96 twin whose
:math:`\sigma_o` doubles half-way (``benchmarks/adaptive_peers.py``, case e): with inflation memory
1000 and R memory 30, 3 twins of 10 diverged (:math:`a_o` 10-20 against the true 4, :math:`\lambda`
at its bound 1); with equal memories (100 and 100, 300 and 300) or a slower :math:`a_o` none of five did,
but (100, 100) lost one of ten further twins the same way: equal memories make the failure rarer, not
impossible.  EnKF-N inflation (whose hyperprior accounts for the ensemble's sampling error) with this R lost
none of twenty.
``pyoops cycle`` therefore refuses a global ``likelihood`` inflation with a ``likelihood`` R whose
memory is shorter than the inflation's.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

from pyoops.config.parameters import Parameters
from pyoops.diagnostics.tuning.spectral import spectral_innovations

__all__ = ["AdaptiveObsError", "AdaptiveObsErrorParameters"]


class AdaptiveObsErrorParameters(Parameters):
    """The ``adaptive.obs error`` section of ``pyoops cycle``."""

    scheme: str = Field("likelihood", description="'likelihood' (pyoops) or 'desroziers' (Li, Kalnay & Miyoshi "
                                                  "2009).")
    initial: float = Field(1.0, gt=0, description="Initial amplitude a_o of R (the analysis uses a_o R).")
    memory: float = Field(100.0, gt=1, description="Forgetting window (likelihood) or smoothing time "
                                                   "(desroziers), in cycles.")
    initial_sd: float = Field(0.5, alias="initial sd", gt=0, description="likelihood: prior sd of log a_o.")
    bounds: tuple[float, float] = Field((0.01, 100.0), description="[lower, upper] of a_o.")

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value not in ("likelihood", "desroziers"):
            raise ValueError(f"scheme must be 'likelihood' or 'desroziers', got {value!r}")
        return value

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not (0 < value[0] <= value[1]):
            raise ValueError(f"bounds must satisfy 0 < lower <= upper, got {list(value)}")
        return value


class AdaptiveObsError:
    """Amplitudes :math:`a_{o,g}` of the observation groups and their online update (restartable)."""

    def __init__(self, params: AdaptiveObsErrorParameters, groups: list[str]) -> None:
        self.params = params
        self.groups = list(groups)
        self.amplitude = np.full(len(groups), params.initial)
        self.information = np.full(len(groups), 1.0 / params.initial_sd**2)
        #: Fisher correlation of (log lambda, log a_o) at the last likelihood update, per group.
        self.confounding = np.full(len(groups), np.nan)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"amplitude": self.amplitude.copy(), "information": self.information.copy(),
                "confounding": self.confounding.copy()}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        for key, attr in (("amplitude", "amplitude"), ("information", "information"), ("confounding", "confounding")):
            a = np.asarray(arrays[key], dtype=np.float64)
            if a.shape != self.amplitude.shape:
                raise ValueError(f"adaptive obs error state '{key}' has shape {a.shape}, expected "
                                 f"{self.amplitude.shape}")
            setattr(self, attr, a.copy())

    def per_observation(self, group_of_obs: np.ndarray) -> np.ndarray:
        """:math:`a_o` of every observation (``group_of_obs``: group index per observation)."""
        return self.amplitude[np.asarray(group_of_obs)]

    def update_from_innovations(self, perturbations: np.ndarray, departures: np.ndarray,
                                inverse_variance: np.ndarray, group_of_obs: np.ndarray, inflation: float) -> None:
        """``likelihood``: one Fisher-scoring step per group from the prior innovations (before the analysis)."""
        if self.params.scheme != "likelihood":
            return
        rho = 1.0 - 1.0 / self.params.memory
        lo, hi = self.params.bounds
        for g in range(len(self.groups)):
            sel = np.flatnonzero((group_of_obs == g) & (inverse_variance > 0))
            if sel.size == 0:
                continue
            stats = spectral_innovations(perturbations[:, sel].T, departures[sel], inverse_variance[sel])
            grad, fisher = stats.score(inflation, self.amplitude[g])
            self.information[g] = rho * self.information[g] + fisher[1, 1]
            step = float(np.clip(grad[1] / self.information[g], -1.0, 1.0))
            self.amplitude[g] = float(np.clip(self.amplitude[g] * np.exp(-step), lo, hi))
            with np.errstate(invalid="ignore", divide="ignore"):
                self.confounding[g] = fisher[0, 1] / np.sqrt(fisher[0, 0] * fisher[1, 1])

    def update_from_residuals(self, departures: np.ndarray, analysis_departures: np.ndarray,
                              variance: np.ndarray, group_of_obs: np.ndarray) -> None:
        """``desroziers``: after the analysis, from O-B ``departures`` and O-A ``analysis_departures``
        (``variance``: the nominal :math:`\\sigma_o^2`, ``inf`` for unused observations)."""
        if self.params.scheme != "desroziers":
            return
        lo, hi = self.params.bounds
        for g in range(len(self.groups)):
            sel = np.flatnonzero((group_of_obs == g) & np.isfinite(variance))
            if sel.size == 0:
                continue
            estimate = float(analysis_departures[sel] @ departures[sel]) / float(variance[sel].sum())
            new = self.amplitude[g] + (estimate - self.amplitude[g]) / self.params.memory
            self.amplitude[g] = float(np.clip(new, lo, hi))
