r"""``pyoops tune``: hybrid-B and R parameters estimated from innovation archives.

Reads innovation archives (:mod:`pyoops.diagnostics.archive`), rebuilds each cycle's
observation-space covariances — :math:`\mathbf C_s = \mathbf{HB_sH}^\mathrm T` from the static
covariance section and the archived locations, :math:`\mathbf C_e` from the archived ensemble
perturbations (:mod:`pyoops.diagnostics.tuning.from_archive`) — and estimates the parameters
of :math:`d_k \sim N(0, \lambda[(1-\beta)a_s\mathbf C_s + \beta a_e L_\ell\circ\mathbf C_e] +
a_o\mathbf R)` with the estimators of :mod:`pyoops.diagnostics.tuning` (maximum likelihood,
MAP, Desroziers fixed point, moments), their intervals and identifiability verdicts;
optionally pooled across regions or obs groups, and cross-validated over time blocks.
Outputs: a printed table, a JSON file of every number, and a YAML fragment of the tuned
hybrid weights (``Hybrid`` block components) to paste into a ``cost function``::

    model plugin: lorenz96
    geometry: {resol: 40}
    archives: [run/innovations.nc]
    skip cycles: 100
    static covariance:                      # B_s as the run assumed it
      covariance model: SABER
      saber central block: {saber block name: spectral correlation, length scale: 0.02}
      saber outer blocks: [{saber block name: StdDev, read: {value: 0.6}}]
    estimator: {method: ml, parameters: [beta, inflation]}
    output:
      json: {filename: tune.json}
      yaml: {filename: tuned.yaml}
      plots: {directory: tune-plots}

``output: plots: {directory: DIR}`` writes the plots that apply
(:mod:`pyoops.diagnostics.tuning.plots`) into ``DIR``:

* ``likelihood_surface.png`` — :math:`-\log L` over the first two free parameters around the
  estimate, with the 68 % and 95 % joint contours (two or more free parameters);
* ``profiles.png`` — :math:`-\log L` along each free parameter: a slice (the others at the
  estimate), or a true profile (the others re-minimised) when ``estimator: profile: true``;
* ``learning_curve.png`` — the estimates against the number of cycles fitted (with
  ``learning curve: {sizes: [...]}``, or ``cross validation`` — then at 1/8, 1/4, 1/2 and all of
  the cycles);
* ``shrinkage.png`` — independent, hierarchical and global estimates per region or obs group
  (with ``pooling``).

``learning curve: {sizes: [n1, n2, ...]}`` also puts the estimates from the first ``n`` cycles
in the JSON report.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from pyoops.apps.base import Application, ApplicationParameters
from pyoops.apps.obs_diagnostics import ArchiveFileParameters, archive_list
from pyoops.config.parameters import Parameters
from pyoops.util.atomic import atomic_output
from pyoops.util.errors import ConfigError

__all__ = ["TuneApplication", "TuneParameters"]


class EstimatorParameters(Parameters):
    """``estimator``: which parameters, how."""

    method: Literal["ml", "map", "desroziers", "moments"] = Field(
        "ml", description="Maximum likelihood, MAP (default priors), Desroziers fixed point or moments.")
    parameters: list[str] = Field(default_factory=lambda: ["beta", "inflation"], min_length=1,
                                  description="Free parameters: beta, inflation, length, a_s, a_e, a_o, a_o[group], "
                                              "w_s, w_e.")
    fixed: dict[str, float] = Field(default_factory=dict, description="Natural values of fixed parameters.")
    form: Literal["hybrid", "weights"] = Field("hybrid", description="beta (hybrid) or two weights w_s, w_e.")
    profile: bool = Field(False, description="Profile-likelihood intervals (ml, map).")
    confidence_level: float = Field(0.95, gt=0, lt=1, description="Level of the intervals.")
    likelihood: Literal["auto", "exact", "matrix-free"] = Field(
        "auto", description="ml, map: 'exact' (dense Cholesky), 'matrix-free' (factored covariances: exact low-rank "
                            "algebra without localization, stochastic log-determinant and traces with it) or 'auto' "
                            "(exact while every cycle has at most 2000 observations and the dense matrices need at "
                            "most 4 GiB). Desroziers and moments always use the dense model.")
    probes: int = Field(30, ge=2, le=4096, description="Matrix-free stochastic path: Rademacher probes per cycle "
                                                       "(the probe error of an estimate falls as 1/sqrt(probes)).")
    probe_seed: int = Field(0, ge=0, description="Matrix-free stochastic path: seed of the probes, fixed for the "
                                                 "whole fit (Python: estimate(..., probe_seed=...)).")
    max_pairs: int = Field(10_000_000, ge=1, description="Matrix-free localization: neighbour pairs held at most, "
                                                         "summed over all cycles (about 40 bytes each).")

    @model_validator(mode="after")
    def _likelihood_for_method(self) -> EstimatorParameters:
        if self.likelihood == "matrix-free" and self.method not in ("ml", "map"):
            raise ValueError(f"likelihood 'matrix-free' serves methods ml and map only; method {self.method} needs "
                             "the dense covariances (likelihood: exact or auto)")
        return self


class PoolingParameters(Parameters):
    """``pooling``: regional estimates shrunk toward the pool (empirical Bayes)."""

    by: Literal["region", "obs group"] = Field("region", description="Label that defines the subsets.")
    parameters: list[str] | None = Field(None, description="Pooled parameters (default: the estimator's).")


class CrossValidationParameters(Parameters):
    """``cross validation``: out-of-sample log-likelihood of the fitted model."""

    folds: int = Field(5, ge=2, description="Number of folds.")
    scheme: Literal["time", "observations"] = Field("time", description="Folds of contiguous cycles or of "
                                                                        "observations.")


class LearningCurveParameters(Parameters):
    """``learning curve``: estimates from the first cycles of the record."""

    sizes: list[int] = Field(min_length=1, description="Numbers of (leading) cycles to fit.")

    @field_validator("sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(n < 1 for n in value):
            raise ValueError("learning-curve sizes must be at least 1")
        return sorted(set(value))


class _File(Parameters):
    filename: str = Field(description="Output file.")


class _Directory(Parameters):
    directory: str = Field(description="Output directory (created if missing).")


class TuneOutputParameters(Parameters):
    """``output``: JSON, YAML fragment, table."""

    json_file: _File | None = Field(None, alias="json", description="Every estimate, interval and verdict.")
    yaml: _File | None = Field(None, description="Tuned Hybrid weights as a covariance fragment.")
    plots: _Directory | None = Field(None, description="PNG plots: likelihood surface, profiles, learning curve, "
                                                       "shrinkage (those that apply).")
    table: bool = Field(True, description="Print the estimates.")


class TuneParameters(ApplicationParameters):
    """``pyoops tune`` configuration."""

    geometry: dict[str, Any] = Field(description="Geometry of the archives' observations (the model plugin's).")
    archives: list[ArchiveFileParameters] = Field(min_length=1,
                                                  description="Innovation archives (file names or {filename}).")
    skip_cycles: int = Field(0, ge=0, description="Leave out the first cycles (spin-up).")
    static_covariance: dict[str, Any] | None = Field(
        None, description="The static B_s as the run assumed it (a SABER covariance section); none: no static part.")
    ensemble: bool = Field(True, description="Use the archives' ensemble H(x) perturbations for C_e.")
    estimator: EstimatorParameters = Field(default_factory=EstimatorParameters, description="The estimation.")
    pooling: PoolingParameters | None = Field(None, description="Partial pooling across regions or obs groups.")
    cross_validation: CrossValidationParameters | None = Field(None, description="Out-of-sample check.")
    learning_curve: LearningCurveParameters | None = Field(None, description="Estimates from the first cycles.")
    output: TuneOutputParameters = Field(default_factory=TuneOutputParameters, description="Outputs.")

    @field_validator("archives", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return archive_list(value)


class TuneApplication(Application):
    """Innovation-based tuning of the hybrid B and R (see the module docstring)."""

    name = "tune"
    summary = "estimate hybrid weight, inflation, localization and amplitudes of B and R from innovation archives"
    Parameters = TuneParameters

    def validate_plugins(self, params: TuneParameters) -> None:
        from pyoops.saber.chain import ErrorCovariance, validate_covariance

        self._geometry = self.geometry(params.geometry)
        self._covariance = None
        if params.static_covariance is not None:
            validate_covariance(params.static_covariance, self.registry, "static covariance")
            self._covariance = ErrorCovariance(params.static_covariance, self._geometry, self._geometry.variables,
                                               None, self.registry, self.plugin, path="static covariance")
        names = set(params.estimator.parameters) | set(params.estimator.fixed)
        if self._covariance is None and names & {"a_s", "w_s"}:
            raise ConfigError("a static amplitude or weight needs 'static covariance'", "estimator.parameters")

    def run(self, params: TuneParameters) -> dict[str, Any]:
        from pyoops.diagnostics.archive import read_archive
        from pyoops.diagnostics.tuning import estimate
        from pyoops.diagnostics.tuning.crossval import cross_validate, learning_curve
        from pyoops.diagnostics.tuning.estimators import LIKELIHOOD_KEYWORDS
        from pyoops.diagnostics.tuning.from_archive import (
            StaticFactor,
            geometry_distance,
            tuning_data,
        )
        from pyoops.diagnostics.tuning.pooling import pool

        data = read_archive([a.filename for a in params.archives])
        if params.skip_cycles >= data.ncycles:
            raise ConfigError(f"skips all {data.ncycles} cycles of the archives", "skip cycles")
        data = data.select_cycles(np.arange(data.ncycles) >= params.skip_cycles)
        static = (StaticFactor(self._covariance, self._geometry) if self._covariance is not None else None)
        tdata = tuning_data(data, static, geometry_distance(self._geometry), params.ensemble)
        est = params.estimator
        likelihood = {k: getattr(est, k) for k in LIKELIHOOD_KEYWORDS}
        if not tdata.has_ensemble and ("beta" in est.parameters or "a_e" in est.parameters
                                       or "length" in est.parameters):
            raise ConfigError("beta, a_e and length need ensemble perturbations in the archives (an ensemble "
                              "method's archive, and 'ensemble: true')", "estimator.parameters")
        try:
            result = estimate(tdata, est.method, est.parameters, est.fixed, form=est.form, level=est.confidence_level,
                              profile=est.profile, **likelihood)
        except ValueError as exc:        # unknown names, bounds, a method that cannot take these parameters
            raise ConfigError(str(exc), "estimator") from None
        report: dict[str, Any] = {"archives": list(data.sources), "method": data.attributes.get("method"),
                                  "cycles": len(tdata), "observations": tdata.nobs,
                                  "static factor columns": 0 if static is None else static.size,
                                  "estimate": result.to_dict()}
        pooled = None
        if params.pooling is not None:
            pooled = pool(tdata, params.pooling.parameters or est.parameters, by=params.pooling.by.replace(" ", "_"),
                          method="ml" if est.method in ("ml", "map") else est.method, fixed=est.fixed, **likelihood)
            report["pooling"] = pooled.to_dict()
        if params.cross_validation is not None:
            cv = cross_validate(tdata, params.cross_validation.folds, params.cross_validation.scheme,
                                method=est.method, parameters=est.parameters, fixed=est.fixed, form=est.form,
                                **likelihood)
            report["cross validation"] = cv.to_dict()
        out = params.output
        curve = None
        sizes = None
        if params.learning_curve is not None:
            sizes = params.learning_curve.sizes
        elif params.cross_validation is not None and out.plots is not None:
            n = len(tdata)
            sizes = sorted({max(1, round(n * f)) for f in (0.125, 0.25, 0.5)} | {n})
        if sizes is not None:
            try:
                curve = learning_curve(tdata, sizes, method=est.method, parameters=est.parameters, fixed=est.fixed,
                                       form=est.form, level=est.confidence_level, **likelihood)
            except ValueError as exc:
                raise ConfigError(str(exc), "learning curve.sizes") from None
            report["learning curve"] = [{"cycles": p.ncycles, "observations": p.nobs,
                                         "estimates": {k: e.to_dict() for k, e in p.result.estimates.items()}}
                                        for p in curve]
        outputs: list[str] = []
        if out.json_file is not None:
            with atomic_output(out.json_file.filename, ".json") as tmp:
                tmp.write_text(json.dumps(report, indent=1, allow_nan=False, default=_plain) + "\n",
                               encoding="utf-8")
            outputs.append(out.json_file.filename)
        if out.yaml is not None:
            with atomic_output(out.yaml.filename, ".yaml") as tmp:
                tmp.write_text(hybrid_fragment(result, params.static_covariance), encoding="utf-8")
            outputs.append(out.yaml.filename)
        if out.plots is not None:
            outputs += write_plots(out.plots.directory, tdata, result, pooled, curve,
                                   "profile" if est.profile else "slice")
        if out.table:
            print(result.summary(), flush=True)
        summary: dict[str, Any] = {"cycles": len(tdata), "observations": tdata.nobs}
        for name, value in result.values.items():
            if name in result.free:
                summary[name] = value
        summary["outputs"] = outputs
        return summary


def write_plots(directory: str, data: Any, result: Any, pooled: Any = None, curve: Any = None,
                kind: str = "slice") -> list[str]:
    """The plots of :mod:`pyoops.diagnostics.tuning.plots` that apply, written into ``directory``
    (likelihood surface with two or more free parameters, profiles with one or more, the learning
    curve if ``curve`` is given, shrinkage if ``pooled`` is given); their paths."""
    from pathlib import Path

    from pyoops.diagnostics.tuning import plots

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    if len(result.free) >= 2:
        written.append(plots.likelihood_surface(data, result, root / "likelihood_surface.png"))
    if result.free:
        written.append(plots.profile_plots(data, result, root / "profiles.png", kind=kind))
    if curve:
        written.append(plots.learning_curve_plot(curve, root / "learning_curve.png"))
    if pooled is not None:
        written.append(plots.shrinkage_plot(pooled, root / "shrinkage.png"))
    return written


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and arrays left in a report."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def hybrid_fragment(result: Any, static: dict[str, Any] | None) -> str:
    r"""A ``background error`` fragment with the tuned weights: static :math:`\lambda(1-\beta)a_s`,
    ensemble :math:`\lambda\beta a_e` (``weights`` form: :math:`\lambda w_s a_s`, :math:`\lambda w_e a_e`), and
    the factor :math:`\sqrt{a_o}` for the observation errors, with every estimate and verdict as comments."""
    import yaml

    v = result.values
    lam, a_s, a_e = v.get("inflation", 1.0), v.get("a_s", 1.0), v.get("a_e", 1.0)
    if result.form == "hybrid":
        beta = v.get("beta", 0.0)
        w_static, w_ens = lam * (1.0 - beta) * a_s, lam * beta * a_e
    else:
        w_static, w_ens = lam * v.get("w_s", 1.0) * a_s, lam * v.get("w_e", 0.0) * a_e
    static_section = {k: val for k, val in (static or {}).items() if k != "covariance model"}
    fragment = {"background error": {"covariance model": "SABER", "saber central block": {
        "saber block name": "Hybrid", "components": [
            {"covariance": static_section or {"saber central block": {"saber block name": "ID"}},
             "weight": {"value": float(w_static)}},
            {"covariance": {"saber central block": {"saber block name": "Ensemble"}},
             "weight": {"value": float(w_ens)}}]}}}
    lines = [(f"# pyoops tune: {result.method} ({result.form} form), {result.nobs} observations in "
              f"{result.ncycles} cycles, {100 * result.level:g} % intervals")]
    for name, e in result.estimates.items():
        lo, hi = e.interval
        lines.append(f"#   {name} = {e.value:.6g} [{lo:.6g}, {hi:.6g}]  {e.verdict}")
    lines += [f"#   note: {n}" for n in result.notes]
    a_o = v.get("a_o", 1.0)
    lines.append(f"# observation errors: multiply ObsError by sqrt(a_o) = {np.sqrt(a_o):.6g}")
    if "length" in result.values and np.isfinite(result.values["length"]):
        lines.append(f"# ensemble localization: Gaspari-Cohn half-width {result.values['length']:.6g} "
                     "(observation-space distance of the geometry)")
    return "\n".join(lines) + "\n" + yaml.safe_dump(fragment, sort_keys=False)
