r"""Adaptive inflation and observation error inside ``pyoops cycle`` (the ``adaptive`` section).

.. code-block:: yaml

    adaptive:
      inflation: {scheme: likelihood, spatial: local, memory: 100}
      obs error: {scheme: likelihood, memory: 200}
      hybrid weight: {scheme: likelihood, initial: 0.5, memory: 100}

The hybrid weight (methods ``hybrid``, ``EDA-hybrid``, ``LETKF-hybrid``) is updated by
:meth:`CycleAdaptation.update_hybrid_weight` from the cycle's observation-space static and
ensemble covariances (:mod:`pyoops.assimilation.adaptive_hybrid`); its state is part of the checkpoint,
its series ``hybrid weight`` of the cycle log and of ``adaptive.nc`` (plot ``hybrid_weight.png``).

:class:`CycleAdaptation` sits between a cycle's observation-space ensemble and its analysis:
:meth:`CycleAdaptation.before_analysis` updates the schemes from the uninflated background
ensemble's innovations and returns the inflation field and the observation-error variances
the analysis must use; :meth:`CycleAdaptation.after_analysis` gives the schemes that need it
the analysis (EnKF-C cap, Desroziers R).  Its state — the schemes' arrays and the running sum of
the inflation field, all of the size of the grid or of the groups (:meth:`CycleAdaptation.state_arrays`)
— is saved in the cycle checkpoint; the per-cycle series (:meth:`CycleAdaptation.series_row`) are
appended to the cycle log ``statistics.nc.log`` (:mod:`pyoops.ensemble.cycle_log`) and restored from it
(:meth:`CycleAdaptation.restore_series`), so a resumed run continues bitwise and a checkpoint costs the
same at every cycle.  At the end, ``adaptive.nc`` holds the series (inflation mean, minimum,
maximum, :math:`a_o` per group), the last and the time-mean inflation fields, and
``inflation.png`` plots them.

Which methods take which part: the LETKF (and the ETKF, an LETKF without localization) uses the
field as its per-point ``mult``; the EnKF and the EDA members have their background
perturbations multiplied by :math:`\sqrt{\lambda_g}` before the analysis (prior inflation;
``spatial: local`` needs ``observations.obs localizations`` to define the local observations);
the observation-error amplitude scales :math:`\mathbf R` of the LETKF and EnKF analyses.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from pyoops.assimilation.adaptive_hybrid import (
    AdaptiveHybridWeight,
    AdaptiveHybridWeightParameters,
    HybridInnovations,
)
from pyoops.assimilation.adaptive_inflation import (
    AdaptiveInflation,
    AdaptiveInflationParameters,
    ObsSpaceEnsemble,
)
from pyoops.assimilation.adaptive_obs_error import AdaptiveObsError, AdaptiveObsErrorParameters
from pyoops.config.parameters import Parameters
from pyoops.util.atomic import atomic_output
from pyoops.util.figures import pyplot, save_figure

__all__ = ["AdaptiveParameters", "CycleAdaptation", "plot_adaptive", "write_adaptive"]

#: Output file of the adaptive schemes in the cycle's output directory.
ADAPTIVE_NAME = "adaptive.nc"


class AdaptiveParameters(Parameters):
    """The ``adaptive`` section of ``pyoops cycle``."""

    inflation: AdaptiveInflationParameters | None = Field(None, description="Online adaptive multiplicative "
                                                                            "inflation.")
    obs_error: AdaptiveObsErrorParameters | None = Field(None, alias="obs error",
                                                         description="Online R amplitude per observation group.")
    hybrid_weight: AdaptiveHybridWeightParameters | None = Field(
        None, alias="hybrid weight",
        description="Online hybrid weight beta (methods hybrid, EDA-hybrid, LETKF-hybrid).")

    @property
    def likelihood_pair(self) -> bool:
        """Global ``likelihood`` inflation with ``likelihood`` R tuning: estimated jointly, from the joint
        likelihood (:class:`CycleAdaptation`, with one observation group)."""
        infl, obs = self.inflation, self.obs_error
        return (infl is not None and obs is not None and infl.scheme == "likelihood" and obs.scheme == "likelihood"
                and infl.spatial == "global")

    @model_validator(mode="after")
    def _something(self) -> AdaptiveParameters:
        if self.inflation is None and self.obs_error is None and self.hybrid_weight is None:
            raise ValueError("give 'inflation', 'obs error' and/or 'hybrid weight'")
        if self.likelihood_pair and (self.inflation.per_cycle is not None
                                     or self.inflation.likelihood_form != "joint"):
            raise ValueError("'inflation.per cycle' and 'inflation.likelihood form: marginal' are not available with "
                             "global likelihood inflation and 'obs error: {scheme: likelihood}' (lambda and a_o are "
                             "then estimated jointly, from the joint likelihood, without a per-cycle mode)")
        if self.likelihood_pair and self.obs_error.memory < self.inflation.memory:
            # Measured (docs/adaptive.rst, case e): with inflation memory 1000 and R memory 30, 3 twins of 10 lost
            # the truth; with equal memories (or a slower a_o) it became rarer (1 of 10 new twins).
            raise ValueError(f"'obs error.memory' ({self.obs_error.memory:g}) must be at least 'inflation.memory' "
                             f"({self.inflation.memory:g}) when both are 'likelihood' and the inflation is global: a "
                             "faster a_o takes the background error outside the ensemble's span for observation "
                             "error, keeps the inflation too small and can make the filter diverge")
        return self


class CycleAdaptation:
    """The adaptive schemes of one experiment and their history.

    Parameters
    ----------
    params:
        The ``adaptive`` section.
    npoints:
        Grid points of the geometry (the inflation field's size).
    groups:
        Names of the observation groups (the simulated variables).
    """

    def __init__(self, params: AdaptiveParameters, npoints: int, groups: list[str]) -> None:
        self.params = params
        self.npoints = npoints
        self.groups = list(groups)
        self.inflation = AdaptiveInflation(params.inflation, npoints) if params.inflation is not None else None
        self.obs_error = AdaptiveObsError(params.obs_error, groups) if params.obs_error is not None else None
        #: Inflation and R amplitude estimated together (both ``likelihood``, global, one observation group):
        #: one Fisher-scoring step on (log lambda, log a_o) with their joint information.
        self.joint = params.likelihood_pair and len(self.groups) == 1
        self.joint_information = (np.diag([1.0 / params.inflation.sd0**2, 1.0 / params.obs_error.initial_sd**2])
                                  if self.joint else np.zeros((2, 2)))
        self.hybrid_weight = (AdaptiveHybridWeight(params.hybrid_weight) if params.hybrid_weight is not None
                              else None)
        self.series: dict[str, list[float]] = {name: [] for name in self.series_names()}
        self.field_sum = np.zeros(npoints)
        self.last_field = np.ones(npoints)
        self._lam = np.ones(npoints)

    def series_names(self) -> list[str]:
        """The names of the per-cycle series of the schemes in use (the keys of ``series``)."""
        names = []
        if self.inflation is not None:
            names += ["inflation mean", "inflation min", "inflation max"]
        if self.obs_error is not None:
            names += [f"obs error amplitude {g}" for g in self.groups]
        if self.hybrid_weight is not None:
            names += ["hybrid weight", "hybrid weight guard cosine", "hybrid weight updated"]
        return names

    # -- restart ------------------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The schemes' state for the checkpoint: arrays of the size of the grid or of the groups, not the
        per-cycle series (those go to the cycle log, :meth:`series_row`)."""
        out = {"field sum": self.field_sum.copy()}
        out["joint information"] = self.joint_information.copy()
        out["last field"] = self.last_field.copy()
        if self.inflation is not None:
            out.update({f"inflation/{k}": v for k, v in self.inflation.state_arrays().items()})
        if self.obs_error is not None:
            out.update({f"obs error/{k}": v for k, v in self.obs_error.state_arrays().items()})
        if self.hybrid_weight is not None:
            out.update({f"hybrid weight/{k}": v for k, v in self.hybrid_weight.state_arrays().items()})
        return out

    def series_row(self, ncycles: int) -> list[float]:
        """The values of cycle ``ncycles - 1`` of every series, in the order of :meth:`series_names`
        (the adaptive part of the cycle log's row).

        Raises
        ------
        RuntimeError
            A series does not hold one value per cycle (a method that skipped the scheme's recording).
        """
        row = []
        for name in self.series_names():
            values = self.series[name]
            if len(values) != ncycles:
                raise RuntimeError(f"adaptive series {name!r} holds {len(values)} values after {ncycles} cycles")
            row.append(values[-1])
        return row

    def restore_series(self, series: dict[str, np.ndarray]) -> None:
        """Set every series from the cycle log (``{name: (cycles,)}``, the names of :meth:`series_names`)."""
        self.series = {k: list(np.asarray(series[k], dtype=np.float64)) for k in self.series_names()}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore the schemes' state from :meth:`state_arrays` (the series: :meth:`restore_series`)."""
        self.field_sum = np.array(arrays["field sum"], dtype=np.float64)
        self.last_field = np.array(arrays["last field"], dtype=np.float64)
        self.joint_information = np.array(arrays["joint information"], dtype=np.float64)
        if self.inflation is not None:
            self.inflation.load_state({k.split("/", 1)[1]: v for k, v in arrays.items()
                                       if k.startswith("inflation/")})
        if self.obs_error is not None:
            self.obs_error.load_state({k.split("/", 1)[1]: v for k, v in arrays.items()
                                       if k.startswith("obs error/")})
        if self.hybrid_weight is not None:
            self.hybrid_weight.load_state({k.split("/", 1)[1]: v for k, v in arrays.items()
                                           if k.startswith("hybrid weight/")})

    # -- one cycle ----------------------------------------------------------------------------------
    def before_analysis(self, hofx: np.ndarray, y: np.ndarray, sigma: np.ndarray, group_of_obs: np.ndarray,
                        selection: Any = None, state_perturbations: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
        r"""Update from the background ensemble; returns the inflation field ``(npoints,)`` and the
        observation-error variances ``(p,)`` (:math:`a_o\sigma_o^2`) the analysis uses.

        ``hofx`` ``(N, p)`` of the uninflated members, ``y``/``sigma`` ``(p,)``; ``selection`` the
        :class:`~pyoops.assimilation.letkf.LocalObsSelection` (needed by ``spatial: local``).
        """
        var = np.asarray(sigma, dtype=np.float64) ** 2
        local = self.inflation is not None and self.inflation.params.spatial == "local"
        if local and selection is None:
            raise ValueError("local adaptive inflation needs a local observation selection")
        ens, ok = ObsSpaceEnsemble.from_hofx(hofx, y, var, self.npoints, selection if local else None,
                                             state_perturbations)
        yp, d, rinv = ens.perturbations, ens.departures, ens.inverse_variance
        groups = np.asarray(group_of_obs)
        ao_obs = self.obs_error.per_observation(groups) if self.obs_error is not None else np.ones_like(var)
        lam = np.ones(self.npoints)
        if self.joint:
            lam = self._joint_update(yp, d, rinv)
        else:
            if self.inflation is not None:
                # The schemes see R as the analysis will use it: a_o sigma^2 per observation.
                lam = self.inflation.update(replace(ens, inverse_variance=rinv / ao_obs))
            if self.obs_error is not None:
                self.obs_error.update_from_innovations(yp, d, rinv, groups, float(np.mean(lam)))
        if self.obs_error is not None:
            ao_obs = self.obs_error.per_observation(groups)
        self._lam = lam
        self._departures = d
        return lam, np.where(ok, ao_obs * var, np.inf)

    def _joint_update(self, yp: np.ndarray, d: np.ndarray, rinv: np.ndarray) -> np.ndarray:
        r"""One Fisher-scoring step on :math:`\phi = (\log\lambda, \log a_o)` with the information
        :math:`I_t = D I_{t-1} D + F_t`, :math:`D = \mathrm{diag}(\sqrt{\rho_\lambda}, \sqrt{\rho_o})` (each
        parameter keeps its own memory), so that the innovations' excess is shared between the two by their
        joint information rather than by whichever is updated first."""
        from pyoops.diagnostics.tuning.spectral import spectral_innovations

        infl, obs = self.inflation, self.obs_error
        lam, ao = float(infl.mean[0]), float(obs.amplitude[0])
        stats = spectral_innovations(yp.T, d, rinv)
        grad, fisher = stats.score(lam, ao)
        rho = np.sqrt([1.0 - 1.0 / infl.params.memory, 1.0 - 1.0 / obs.params.memory])
        info = rho[:, None] * self.joint_information * rho[None, :] + fisher
        self.joint_information = info
        step = np.clip(np.linalg.solve(info, grad), -1.0, 1.0)
        lo, hi = obs.params.bounds
        obs.amplitude[0] = float(np.clip(ao * np.exp(-step[1]), lo, hi))
        obs.information[0] = info[1, 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            obs.confounding[0] = fisher[0, 1] / np.sqrt(fisher[0, 0] * fisher[1, 1])
        infl.mean = np.full(infl.mean.shape, lam * np.exp(-step[0]))
        infl.information = np.full(infl.mean.shape, info[0, 0])
        infl.sd = np.full(infl.mean.shape, float(np.sqrt(np.linalg.inv(info)[0, 0])))
        return infl.limit()

    def after_analysis(self, analysis_hofx_mean: np.ndarray | None, y: np.ndarray, sigma: np.ndarray,
                       group_of_obs: np.ndarray, forecast_spread: np.ndarray | None = None,
                       analysis_spread: np.ndarray | None = None) -> None:
        """Record the cycle; Desroziers R from O-A (``analysis_hofx_mean``), spread ratio for the EnKF-C cap."""
        if self.obs_error is not None and analysis_hofx_mean is not None:
            var = np.asarray(sigma, dtype=np.float64) ** 2
            da = np.asarray(y, dtype=np.float64) - np.asarray(analysis_hofx_mean, dtype=np.float64)
            ok = np.isfinite(da) & np.isfinite(var) & (var > 0)
            self.obs_error.update_from_residuals(self._departures, np.where(ok, da, 0.0), np.where(ok, var, np.inf),
                                                 np.asarray(group_of_obs))
        if self.inflation is not None and forecast_spread is not None and analysis_spread is not None:
            self.inflation.record_spread_ratio(forecast_spread, analysis_spread)
        lam = self._lam
        if self.inflation is not None:
            self.series["inflation mean"].append(float(lam.mean()))
            self.series["inflation min"].append(float(lam.min()))
            self.series["inflation max"].append(float(lam.max()))
        if self.obs_error is not None:
            for g, a in zip(self.groups, self.obs_error.amplitude):
                self.series[f"obs error amplitude {g}"].append(float(a))
        self.field_sum = self.field_sum + lam
        self.last_field = lam.copy()

    def update_hybrid_weight(self, cycle: HybridInnovations) -> float:
        """Before the analysis: update and return :math:`\\beta` (the analysis uses the weights
        :math:`(1-\\beta, \\beta)`)."""
        return self.hybrid_weight.update(cycle)

    def record_hybrid_weight(self) -> None:
        """After the analysis: the cycle's :math:`\\beta`, the guard's cosine and whether :math:`\\beta` was updated."""
        h = self.hybrid_weight
        self.series["hybrid weight"].append(h.beta)
        self.series["hybrid weight guard cosine"].append(h.cosine)
        self.series["hybrid weight updated"].append(float(h.updated))

    def needs_analysis_hofx(self) -> bool:
        return self.obs_error is not None and self.obs_error.params.scheme == "desroziers"

    def needs_state_perturbations(self) -> bool:
        return self.params.inflation is not None and self.params.inflation.needs_state_perturbations


def write_adaptive(directory: Path, adaptation: CycleAdaptation, times: list[Any], skip: int,
                   field_shape: tuple[int, ...]) -> str:
    """``adaptive.nc``: per-cycle series, the last and time-mean inflation fields (grid shape ``field_shape``)."""
    import netCDF4

    name = directory / ADAPTIVE_NAME
    ncycles = len(times)
    with atomic_output(name, ".nc") as tmp:
        with netCDF4.Dataset(os.path.abspath(tmp), "w") as ds:
            ds.createDimension("cycle", ncycles)
            t = ds.createVariable("time", "i8", ("cycle",))
            t.units = "seconds since 1970-01-01T00:00:00Z"
            t[:] = np.array([round(x.seconds_since_epoch()) for x in times], dtype=np.int64)
            for key, values in adaptation.series.items():
                var = ds.createVariable(key.replace(" ", "_"), "f8", ("cycle",))
                var.long_name = key
                var[:] = np.asarray(values, dtype=np.float64)
            if adaptation.inflation is not None:
                dims = tuple(f"grid_{i}" for i in range(len(field_shape)))
                for i, size in enumerate(field_shape):
                    ds.createDimension(dims[i], size)
                last = ds.createVariable("inflation_last", "f8", dims)
                last.long_name = "inflation field used by the last cycle"
                last[:] = adaptation.last_field.reshape(field_shape)
                mean = ds.createVariable("inflation_time_mean", "f8", dims)
                mean.long_name = "time mean of the inflation field over every cycle"
                mean[:] = (adaptation.field_sum / max(ncycles, 1)).reshape(field_shape)
                ds.scheme = adaptation.params.inflation.scheme
                ds.spatial = adaptation.params.inflation.spatial
            if adaptation.obs_error is not None:
                ds.obs_error_scheme = adaptation.params.obs_error.scheme
            if adaptation.hybrid_weight is not None:
                ds.hybrid_weight_scheme = adaptation.params.hybrid_weight.scheme
            ds.spin_up_cycles = skip
    return str(name)


def plot_adaptive(directory: Path, adaptation: CycleAdaptation, skip: int, title: str) -> list[str]:
    """``inflation.png`` (series and fields), ``obs_error.png`` (a_o series), ``hybrid_weight.png`` (β series)."""
    plt = pyplot()
    out = []
    s = {k: np.asarray(v) for k, v in adaptation.series.items()}
    if adaptation.inflation is not None and len(s["inflation mean"]):
        x = np.arange(1, len(s["inflation mean"]) + 1)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
        ax1.fill_between(x, s["inflation min"], s["inflation max"], color="C0", alpha=0.25, label="min-max")
        ax1.plot(x, s["inflation mean"], "C0-", lw=0.8, label="domain mean")
        if skip:
            ax1.axvspan(0.5, skip + 0.5, color="0.9", label="spin-up cycles")
        ax1.set_xlabel("cycle")
        ax1.set_ylabel("inflation λ")
        ax1.set_title(f"adaptive inflation ({adaptation.params.inflation.scheme}), {title}")
        ax1.legend(fontsize="small")
        n = len(x)
        ax2.plot(adaptation.field_sum / max(n, 1), "C1-", lw=1, label="time mean")
        ax2.plot(adaptation.last_field, "C2--", lw=1, label="last cycle")
        ax2.set_xlabel("grid point (flat index)")
        ax2.set_ylabel("inflation λ")
        ax2.set_title("inflation field")
        ax2.legend(fontsize="small")
        name = directory / "inflation.png"
        out.append(save_figure(fig, name))
    if adaptation.obs_error is not None:
        fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
        for g in adaptation.groups:
            v = s[f"obs error amplitude {g}"]
            ax.plot(np.arange(1, v.size + 1), np.sqrt(v), lw=0.8, label=f"{g}")
        ax.set_xlabel("cycle")
        ax.set_ylabel("σ_o factor √a_o")
        ax.set_title(f"adaptive obs error ({adaptation.params.obs_error.scheme})")
        ax.legend(fontsize="small")
        name = directory / "obs_error.png"
        out.append(save_figure(fig, name))
    if adaptation.hybrid_weight is not None and len(s["hybrid weight"]):
        beta = s["hybrid weight"]
        x = np.arange(1, beta.size + 1)
        fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
        ax.plot(x, beta, "C0-", lw=1, label="β (ensemble weight)")
        blocked = s["hybrid weight updated"] == 0
        if blocked.any():
            ax.plot(x[blocked], beta[blocked], "C3.", ms=2, label="no update (guard)")
        if skip:
            ax.axvspan(0.5, skip + 0.5, color="0.9", label="spin-up cycles")
        ax.set_ylim(0, 1)
        ax.set_xlabel("cycle")
        ax.set_ylabel("hybrid weight β")
        ax.set_title(f"adaptive hybrid weight ({adaptation.params.hybrid_weight.scheme}), {title}")
        ax.legend(fontsize="small")
        name = directory / "hybrid_weight.png"
        out.append(save_figure(fig, name))
    return out
