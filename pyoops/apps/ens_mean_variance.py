"""``pyoops ens-mean-variance``: ensemble mean, variance and standard deviation."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from pyoops.apps.base import Application, ApplicationParameters, specialise
from pyoops.assimilation.costfunction import VariableName
from pyoops.config.parameters import DateTimeField, Parameters
from pyoops.fields.netcdf import write_fields
from pyoops.generic.ensemble import EnsembleSourceParameters, read_ensemble
from pyoops.registry import ModelPlugin
from pyoops.util.errors import ConfigError
from pyoops.util.variables import Variables

__all__ = ["EnsMeanVarianceApplication"]


class _File(Parameters):
    filename: str = Field(description="Output file.")


class EnsMeanVarianceParameters(ApplicationParameters):
    """``pyoops ens-mean-variance`` configuration."""

    geometry: dict[str, Any] = Field(description="Geometry of the model plugin.")
    date: DateTimeField = Field(description="Valid time of the members.")
    variables: list[VariableName] | None = Field(
        None, min_length=1, description="Variables (default: the geometry's).")
    ensemble: EnsembleSourceParameters = Field(description="Members: list, template or one ensemble file.")
    output_mean: _File | None = Field(None, description="netCDF file of the ensemble mean.")
    output_variance: _File | None = Field(None, description="netCDF file of the variance (N − 1 normalisation).")
    output_stddev: _File | None = Field(None, description="netCDF file of the standard deviation.")


class EnsMeanVarianceApplication(Application):
    r"""Mean :math:`\bar x = \frac1N\sum_k x_k` and variance :math:`\frac{1}{N-1}\sum_k (x_k-\bar x)^2`."""

    name = "ens-mean-variance"
    summary = "ensemble mean, variance and standard deviation"
    Parameters = EnsMeanVarianceParameters

    def validate_plugins(self, params: EnsMeanVarianceParameters) -> None:
        self._geometry = self.geometry(params.geometry)
        self._variables = Variables(params.variables or self._geometry.variables)
        unknown = self._variables - self._geometry.variables
        if unknown:
            raise ConfigError(f"unknown variable(s) {unknown} (geometry has {self._geometry.variables})", "variables")

    def run(self, params: EnsMeanVarianceParameters) -> dict[str, Any]:
        members = read_ensemble(params.ensemble, self._geometry, self._variables, params.date, "ensemble")
        n = next(iter(members.values())).shape[0]
        mean = members.map(lambda a: a.mean(axis=0))
        variance = members.map(lambda a: a.var(axis=0, ddof=1))
        outputs = []
        for option, fields, kind in ((params.output_mean, mean, "state"), (params.output_variance, variance, "variance"),
                                     (params.output_stddev, variance.map(np.sqrt), "stddev")):
            if option is not None:
                write_fields(option.filename, self._geometry, fields, params.date, kind=kind)
                outputs.append(option.filename)
        return {"members": n, "mean rms": mean.rms(),
                "spread (rms stddev)": float(np.sqrt(np.mean(np.concatenate([a.ravel() for a in variance.values()])))),
                "outputs": outputs}

    def schema_parameters(self, plugin: ModelPlugin | None) -> type[Parameters]:
        return specialise(EnsMeanVarianceParameters, "EnsMeanVarianceParameters",
                          geometry=self.geometry_schema_type(plugin))
