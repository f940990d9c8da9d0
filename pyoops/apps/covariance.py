"""Covariance applications: ``dirac``, ``error-covariance-toolbox``, ``gen-ens-pert-b``.

All three build :math:`\\mathbf{B}` from a ``background error`` section
(``covariance model: SABER``) on the geometry and valid time of ``background``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from pyoops.apps.base import Application, ApplicationParameters, specialise
from pyoops.apps.plotting import plot_fields
from pyoops.assimilation.costfunction import VariableName
from pyoops.config.parameters import Parameters
from pyoops.util.sizes import check_output_files, state_bytes
from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import write_fields
from pyoops.generic.state import DiracParameters, StateParameters
from pyoops.registry import ModelPlugin
from pyoops.saber.chain import ErrorCovariance, validate_covariance
from pyoops.saber.checks import BlockTestSettings, covariance_checks
from pyoops.util.errors import ConfigError
from pyoops.util.random import generator
from pyoops.util.resources import MAX_MEMBERS, check_count
from pyoops.util.variables import Variables

__all__ = [
    "DiracApplication",
    "ErrorCovarianceToolboxApplication",
    "GenEnsPertBApplication",
]

logger = logging.getLogger("pyoops")


class FileParameters(Parameters):
    filename: str = Field(description="Output file.")


class CovarianceAppParameters(ApplicationParameters):
    """Keys shared by the covariance applications."""

    geometry: dict[str, Any] = Field(description="Geometry of the model plugin.")
    background: StateParameters = Field(description="Background state: valid time, variables, data for blocks.")
    analysis_variables: list[VariableName] | None = Field(
        None, min_length=1, description="Variables of B (default: the background's).")
    background_error: dict[str, Any] = Field(description="covariance model: SABER, saber central block, ...")


class CovarianceApplication(Application):
    """Shared set-up: geometry, background, and B."""

    def validate_plugins(self, params: Any) -> None:
        self._geometry = self.geometry(params.geometry)
        variables = Variables(params.analysis_variables or params.background.state_variables or
                              self._geometry.variables)
        unknown = variables - self._geometry.variables
        if unknown:
            raise ConfigError(f"unknown variable(s) {unknown} (geometry has {self._geometry.variables})",
                              "analysis variables")
        self._variables = variables
        validate_covariance(params.background_error, self.registry, "background error")

    def covariance(self, params: Any) -> tuple[Any, ErrorCovariance]:
        background = self.plugin.state.from_config(self._geometry, params.background, "background")
        cov = ErrorCovariance(self.covariance_config(params), self._geometry, self._variables, background.time,
                              self.registry, self.plugin, "background error")
        return background, cov

    def covariance_config(self, params: Any) -> dict[str, Any]:
        return params.background_error

    def schema_parameters(self, plugin: ModelPlugin | None) -> type[Parameters]:
        return specialise(self.Parameters, self.Parameters.__name__, geometry=self.geometry_schema_type(plugin))


def _dirac_increment(cov: ErrorCovariance, dirac: DiracParameters) -> Any:
    from pyoops.generic.state import GenericIncrement

    dx = GenericIncrement.zeros(cov.geometry, cov.variables, cov.time)
    dx.dirac(dirac)
    return dx


def _named_file(filename: str, name: str) -> str:
    """``out/dirac.nc`` → ``out/dirac.<name>.nc`` (``name`` empty: unchanged)."""
    if not name:
        return filename
    path = Path(filename)
    return str(path.with_name(f"{path.stem}.{name.replace(' ', '_')}{path.suffix}"))


def apply_dirac(cov: ErrorCovariance, dirac: DiracParameters, output: str | None, plot: str | None,
                title: str = "") -> dict[str, Any]:
    """Apply B and every nested covariance to Dirac impulses; write netCDF files and a PNG."""
    dx = _dirac_increment(cov, dirac)
    responses: dict[str, FieldSet] = {"B": cov.chain.multiply(dx.fields.copy())}
    top = cov.chain
    for name, chain in top.nested().items():
        if chain.geometry.same_as(top.central_geometry) and chain.variables == top.central_variables:
            # A chain under the central block (Hybrid component, localization): seen from the
            # model through the outer blocks of B, i.e. U B_i U^T applied to the impulses.
            inner = top._apply_outer_ad(top._reorder(dx.fields.copy()))
            responses[name] = top._reorder(top._apply_outer(chain.multiply(inner)))
        elif chain.geometry.same_as(cov.geometry):
            sub = dx.fields.subset([v for v in chain.variables if v in dx.fields])
            responses[name] = chain.multiply(sub.copy())
        else:
            logger.info("dirac: skipping nested covariance '%s' (it lives on another geometry deeper in the chain)",
                        name)
    summary: dict[str, Any] = {"outputs": []}
    for name, fields in responses.items():
        peak = max(float(np.abs(a).max()) for a in fields.values())
        summary[f"{name} max"] = peak
        if output:
            fname = _named_file(output, "" if name == "B" else name)
            write_fields(fname, cov.geometry, fields, cov.time, kind="increment",
                         attrs={"operator": name, "dirac_ixdir": list(dirac.ixdir)})
            summary["outputs"].append(fname)
    if plot:
        plot_fields(cov.geometry, responses, plot, title or "Dirac responses", marks=dirac.ixdir)
        summary["outputs"].append(plot)
    return summary


class DiracParametersApp(CovarianceAppParameters):
    """``pyoops dirac`` configuration."""

    dirac: DiracParameters = Field(description="Impulse positions (flat grid indices) and variables.")
    output_dirac: FileParameters | None = Field(
        None, description="netCDF file of B·dirac; nested covariances go to <stem>.<name>.nc.")
    output_plot: FileParameters | None = Field(None, description="PNG with one panel per operator.")


class DiracApplication(CovarianceApplication):
    """Apply B, each Hybrid component and each localization to Dirac impulses."""

    name = "dirac"
    summary = "apply B (and its components and localizations) to Dirac impulses; write netCDF and PNG"
    Parameters = DiracParametersApp

    def run(self, params: DiracParametersApp) -> dict[str, Any]:
        _, cov = self.covariance(params)
        return apply_dirac(cov, params.dirac, params.output_dirac.filename if params.output_dirac else None,
                           params.output_plot.filename if params.output_plot else None)


class RandomizationParameters(Parameters):
    size: int = Field(gt=1, description="Number of samples K.")
    seed: int = Field(0, ge=0, description="Seed of the random draws.")
    output_variance: FileParameters | None = Field(None, description="netCDF file of the sample variance.")


class ToolboxParameters(CovarianceAppParameters):
    """``pyoops error-covariance-toolbox`` configuration."""

    block_tests: bool | BlockTestSettings = Field(
        False, description="Run every block test (adjoint, square root, inverses, Dirac, randomization, batch) of "
                           "every block and of B: true, or the settings of the tests.")
    randomization: RandomizationParameters | None = Field(None, description="Sample variance of K draws from B.")
    dirac: DiracParameters | None = Field(None, description="Also apply B to Dirac impulses.")
    output_dirac: FileParameters | None = Field(None, description="netCDF file of B·dirac.")
    output_plot: FileParameters | None = Field(None, description="PNG of the Dirac responses.")
    exact_variance_max_points: int = Field(
        4096, ge=0, description="Also compute diag(B) exactly (one impulse per point) up to this grid size.")


class ErrorCovarianceToolboxApplication(CovarianceApplication):
    """Block tests, randomization statistics and Dirac responses of B."""

    name = "error-covariance-toolbox"
    summary = "block tests, variance of K random draws from B, Dirac responses"
    Parameters = ToolboxParameters

    def run(self, params: ToolboxParameters) -> dict[str, Any]:
        _, cov = self.covariance(params)
        summary: dict[str, Any] = {"outputs": []}
        if params.block_tests:
            settings = params.block_tests if isinstance(params.block_tests, BlockTestSettings) else BlockTestSettings()
            summary["block tests"] = run_block_tests(cov, settings)
        if params.randomization is not None:
            summary.update(self._randomization(cov, params))
        if params.dirac is not None:
            out = apply_dirac(cov, params.dirac, params.output_dirac.filename if params.output_dirac else None,
                              params.output_plot.filename if params.output_plot else None)
            summary["outputs"] += out.pop("outputs")
            summary.update(out)
        return summary

    def _randomization(self, cov: ErrorCovariance, params: ToolboxParameters) -> dict[str, Any]:
        r = params.randomization
        rng = generator(r.seed, "randomization")
        total = FieldSet({v: np.zeros(cov.geometry.field_shape(v)) for v in cov.variables}, copy=False)
        chunk = 64
        done = 0
        while done < r.size:
            n = min(chunk, r.size - done)
            draws = cov.chain.randomize(rng, (n,))
            for v in total:
                total[v] += (draws[v] ** 2).sum(axis=0)
            done += n
        variance = total.map(lambda a: a / r.size)
        out: dict[str, Any] = {"randomization size": r.size,
                               "sample variance mean": float(np.mean(np.concatenate(
                                   [a.ravel() for a in variance.values()])))}
        npoints = sum(int(np.prod(cov.geometry.field_shape(v))) for v in cov.variables)
        if npoints <= params.exact_variance_max_points:
            exact = exact_variance(cov)
            ratio = np.concatenate([(variance[v] / exact[v]).ravel() for v in cov.variables])
            out["exact variance mean"] = float(np.mean(np.concatenate([a.ravel() for a in exact.values()])))
            out["sample/exact variance rms deviation"] = float(np.sqrt(np.mean((ratio - 1.0) ** 2)))
            out["expected rms deviation sqrt(2/K)"] = float(np.sqrt(2.0 / r.size))
        if r.output_variance:
            write_fields(r.output_variance.filename, cov.geometry, variance, cov.time, kind="variance")
            out["outputs"] = [r.output_variance.filename]
        return out


def run_block_tests(cov: ErrorCovariance, settings: BlockTestSettings) -> dict[str, dict[str, Any]]:
    """Every block test of every block of ``cov`` and of B (:func:`pyoops.saber.checks.covariance_checks`).

    Returns ``{"<block path> <test>": {verdict, figure, tolerance | reason}}``.  A failed test
    raises a :class:`~pyoops.util.errors.ConfigError` naming the block, after every test ran
    and every figure was logged.
    """
    results = covariance_checks(cov.chain, settings)
    failed = [c for c in results if c.skipped is None and not c.passed]
    if failed:  # the summary is not printed after an error: log every figure first
        for check in results:
            logger.warning("block test %s: %s", check.where, check.message())
        more = f" ({len(failed) - 1} more failed test(s) logged above)" if len(failed) > 1 else ""
        raise ConfigError(f"{failed[0].message()}{more}", failed[0].where)
    return {f"{c.where} {c.test}": c.as_dict() for c in results}


def exact_variance(cov: ErrorCovariance, batch: int = 256) -> FieldSet:
    """diag(B) by applying B to a Dirac at every grid point (small grids only)."""
    geometry, variables = cov.geometry, cov.variables
    out = FieldSet({v: np.zeros(geometry.field_shape(v)) for v in variables}, copy=False)
    for v in variables:
        size = int(np.prod(geometry.field_shape(v)))
        for start in range(0, size, batch):
            idx = np.arange(start, min(start + batch, size))
            fs = geometry.zeros(variables, (idx.size,))
            flat = fs[v].reshape(idx.size, -1)
            flat[np.arange(idx.size), idx] = 1.0
            resp = cov.chain.multiply(fs)[v].reshape(idx.size, -1)
            out[v].reshape(-1)[idx] = resp[np.arange(idx.size), idx]
    return out


class GenEnsPertBParameters(CovarianceAppParameters):
    """``pyoops gen-ens-pert-b`` configuration (OOPS GenEnsPertB)."""

    members: int = Field(gt=0, description="Number of perturbations.")
    seed: int = Field(0, ge=0, description="Seed; member k uses its own stream, independent of the others.")
    perturbed_states: bool = Field(
        True, description="Write background + perturbation (true) or the perturbation alone (false).")
    output: FileParameters = Field(description="Output file; %mem% is replaced by the member number (1-based).")


class GenEnsPertBApplication(CovarianceApplication):
    """An ensemble of perturbations drawn from B (added to the background by default)."""

    name = "gen-ens-pert-b"
    summary = "draw an ensemble of perturbations from B (optionally added to the background)"
    Parameters = GenEnsPertBParameters

    def validate_plugins(self, params: GenEnsPertBParameters) -> None:
        super().validate_plugins(params)
        # Before anything is drawn or written: the count, then the files on the disk.
        check_count(params.members, MAX_MEMBERS, "number of members", "members")
        if params.members > 1 and "%mem%" not in params.output.filename:
            raise ConfigError("must contain %mem% when there are several members", "output.filename")
        check_output_files(params.members, state_bytes(self._geometry, self._variables), params.output.filename,
                           "members", "member files")

    def run(self, params: GenEnsPertBParameters) -> dict[str, Any]:
        background, cov = self.covariance(params)
        written = []
        spread = []
        for k in range(1, params.members + 1):
            pert = cov.chain.randomize(generator(params.seed, "gen-ens-pert-b", k))
            fields = pert
            if params.perturbed_states:
                fields = background.fields.subset(cov.variables).copy()
                fields += pert
            name = params.output.filename.replace("%mem%", str(k))
            write_fields(name, cov.geometry, fields, background.time,
                         kind="state" if params.perturbed_states else "increment")
            written.append(name)
            spread.append(pert.rms())
        return {"members": params.members, "perturbation rms mean": float(np.mean(spread)), "outputs": written}
