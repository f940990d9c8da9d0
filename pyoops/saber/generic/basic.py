"""Simple generic blocks: ``ID``, ``StdDev``, ``duplicate variables``, ``write fields``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BeforeValidator, Field, model_validator

from pyoops.config.parameters import Parameters, per_variable_number, validate
from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import read_fields, write_fields
from pyoops.saber.blocks import BlockContext, SaberBlockParameters, SaberCentralBlock, SaberOuterBlock
from pyoops.util.errors import ConfigError, InputFileError, join_path
from pyoops.util.variables import Variables

__all__ = ["DuplicateVariables", "IdentityBlock", "StdDev", "WriteFields"]


class IdentityParameters(SaberBlockParameters):
    saber_block_name: Literal["ID"]


class IdentityBlock(SaberCentralBlock):
    """``ID``: :math:`\\mathbf{C} = \\mathbf{I}` (square root :math:`\\mathbf{I}` on the flattened fields)."""

    Parameters = IdentityParameters

    def multiply(self, fields: FieldSet) -> FieldSet:
        return fields.copy()

    @property
    def ctl_vec_size(self) -> int:
        return sum(int(np.prod(self.geometry.field_shape(v))) for v in self.variables)

    def multiply_sqrt(self, ctl: np.ndarray) -> FieldSet:
        ctl = np.asarray(ctl, dtype=np.float64)
        batch = ctl.shape[:-1]
        out, start = {}, 0
        for v in self.variables:
            shape = self.geometry.field_shape(v)
            size = int(np.prod(shape))
            out[v] = ctl[..., start:start + size].reshape(batch + shape).copy()
            start += size
        return FieldSet(out, copy=False)

    def multiply_sqrt_ad(self, fields: FieldSet) -> np.ndarray:
        parts = []
        for v in self.variables:
            a = fields[v]
            shape = self.geometry.field_shape(v)
            parts.append(a.reshape(a.shape[: a.ndim - len(shape)] + (-1,)))
        return np.concatenate(parts, axis=-1)


#: ``read.value`` of StdDev: a finite number or ``{variable: finite number}`` (that the values are
#: positive is checked when the block is built, naming the variable).
_check_stddev = per_variable_number("standard deviations", positive=False)


StdDevValue = Annotated[float | dict[str, float], BeforeValidator(_check_stddev)]


class StdDevRead(Parameters):
    """``read:`` of StdDev: a value (one for all, or one per variable) or a file."""

    value: StdDevValue | None = Field(None, description="σ > 0 for every point (per variable if a mapping).")
    filename: str | None = Field(None, description="netCDF file with one σ field per variable.")

    @model_validator(mode="after")
    def _one(self) -> "StdDevRead":
        if (self.value is None) == (self.filename is None):
            raise ValueError("give exactly one of 'value' and 'filename'")
        return self



class StdDevCalibration(Parameters):
    """``calibration:`` of StdDev: σ is the ensemble standard deviation (N − 1 normalisation)."""

    output: str | None = Field(None, description="File to write the calibrated σ to (readable by read.filename).")


class EmulatedStdDevParameters(Parameters):
    """``emulated stddev:`` of StdDev: σ from an emulator of the N-member EDA stddev (``pyoops train-emulator``)."""

    model: str = Field(description="The emulator (its .pt or .yaml file).")
    members: int = Field(ge=2, description="Members given to the emulator: the first of the ensemble; must be the "
                                           "emulator's M.")
    statistic: Literal["median", "mean", "variance"] = Field(
        "variance", description="σ = exp(μ + s²) (default: the square root of the predictive mean of σ², the "
                                "best estimate of the variance B takes, as the ensemble's unbiased variance is), "
                                "exp(μ + s²/2) (predictive mean of σ) or exp(μ) (predictive median).")


class StdDevParameters(SaberBlockParameters):
    saber_block_name: Literal["StdDev"]
    read: StdDevRead | None = Field(None, description="{value: σ} (one for all, or one per variable) or {filename}.")
    emulated_stddev: EmulatedStdDevParameters | None = Field(
        None, description="σ emulated from the first 'members' members of the ensemble (needs pyoops[ml]).")

    @model_validator(mode="after")
    def _source(self) -> "StdDevParameters":
        given = [k for k, v in (("read", self.read), ("calibration", self.calibration),
                                ("emulated stddev", self.emulated_stddev)) if v is not None]
        if len(given) != 1:
            raise ValueError("StdDev needs 'read' (value or filename), 'calibration' or 'emulated stddev', exactly "
                             f"one{f'; got {given}' if given else ''}")
        return self


class StdDev(SaberOuterBlock):
    r"""``StdDev``: :math:`\mathbf{U} = \mathrm{diag}(\sigma)`, left inverse :math:`\mathrm{diag}(1/\sigma)`.

    σ is read (``read``), the ensemble's standard deviation (``calibration``), or emulated
    (``emulated stddev: {model: FILE, members: M}``): the emulator of
    :mod:`pyoops.emulators` maps the first :math:`M` members of the ensemble to a
    log-normal predictive distribution of the :math:`N`-member EDA standard deviation
    :math:`\hat\sigma_N` at every point, and σ is its median :math:`e^\mu` (or mean
    :math:`e^{\mu + s^2/2}`).
    """

    Parameters = StdDevParameters

    def __init__(self, params: Any, context: BlockContext):
        super().__init__(params, context)
        if params.emulated_stddev is not None:
            self._emulate(params.emulated_stddev)

    def _emulate(self, params: EmulatedStdDevParameters) -> None:
        from pyoops.emulators import require_torch

        path = join_path(self.context.path, "emulated stddev")
        require_torch(f"{path}")
        from pyoops.emulators.model import cached_emulator

        emulator = cached_emulator(params.model)
        if params.members != emulator.members:
            raise ConfigError(f"the emulator {params.model} takes {emulator.members} members, not {params.members}",
                              join_path(path, "members"))
        if tuple(self.geometry.field_shape(self.variables[0])) != emulator.layout.shape:
            raise ConfigError(f"the emulator {params.model} is for fields of shape {emulator.layout.shape}; this "
                              f"block's are {self.geometry.field_shape(self.variables[0])}", join_path(path, "model"))
        extra = [v for v in self.variables if v not in emulator.layout.variables]
        if extra:
            raise ConfigError(f"the emulator {params.model} gives no σ for {extra} (it emulates "
                              f"{list(emulator.layout.variables)})", join_path(path, "model"))
        ensemble = self.context.ensemble
        if ensemble is None:
            raise ConfigError("needs an ensemble (its first members are the emulator's input): give 'ensemble' in "
                              "the covariance section, or run inside an EDA", path)
        if self.context.ensemble_is_perturbations and emulator.features:
            raise ConfigError(f"the emulator uses the members' {', '.join(emulator.features)}, which perturbations "
                              "('ensemble pert') do not carry", path)
        # The emulator's input is every variable it was trained on (it may emulate more than this block uses,
        # e.g. a QG emulator of x, q, u and v feeding a StdDev of x): the ensemble must carry them all.
        absent = [v for v in emulator.layout.variables if v not in ensemble]
        if absent:
            raise ConfigError(f"the emulator {params.model} reads the members' {list(emulator.layout.variables)}; "
                              f"the ensemble has no {absent}", join_path(path, "model"))
        n = next(iter(ensemble.values())).shape[0]
        if n < params.members:
            raise ConfigError(f"the ensemble has {n} members, fewer than {params.members}", join_path(path, "members"))
        sigma = emulator.stddev({v: np.asarray(ensemble[v])[: params.members] for v in emulator.layout.variables},
                                params.statistic)
        self.sigma = FieldSet({v: sigma[v] for v in self.variables}, copy=False)
        self._check(path)

    def read(self, config: dict[str, Any]) -> None:
        path = join_path(self.context.path, "read")
        params = validate(StdDevRead, config, path)
        if params.filename is not None:
            fields, _ = read_fields(params.filename, self.geometry, self.variables, self.context.time)
            self.sigma = fields
        else:
            values = params.value if isinstance(params.value, dict) else {v: params.value for v in self.variables}
            missing = [v for v in self.variables if v not in values]
            if missing:
                raise ConfigError(f"no value for variable(s) {missing}", join_path(path, "value"))
            self.sigma = FieldSet({v: np.full(self.geometry.field_shape(v), float(values[v])) for v in self.variables})
        self._check(path)

    def direct_calibration(self, config: dict[str, Any]) -> None:
        path = join_path(self.context.path, "calibration")
        params = validate(StdDevCalibration, config, path)
        pert = self.context.ensemble_perturbations()
        n = next(iter(pert.values())).shape[0]
        self.sigma = FieldSet({v: np.sqrt((pert[v] ** 2).sum(axis=0) / (n - 1)) for v in self.variables}, copy=False)
        self._check(path)
        if params.output:
            self.write(params.output)

    def _check(self, path: str) -> None:
        for v, s in self.sigma.items():
            if not (np.isfinite(s).all() and (s > 0).all()):
                raise ConfigError(f"standard deviations of '{v}' must be positive and finite", path)

    def write(self, filename: str) -> list[str]:
        write_fields(filename, self.geometry, self.sigma, self.context.time, kind="stddev")
        return [filename]

    def multiply(self, fields: FieldSet) -> FieldSet:
        return FieldSet({v: fields[v] * self.sigma[v] for v in fields}, copy=False)

    multiply_ad = multiply

    def left_inverse_multiply(self, fields: FieldSet) -> FieldSet:
        return FieldSet({v: fields[v] / self.sigma[v] for v in fields}, copy=False)


class DuplicateVariablesParameters(SaberBlockParameters):
    saber_block_name: Literal["duplicate variables"]
    variable_groupings: list[dict[str, Any]] = Field(
        min_length=1, description="[{group variable name: psi, group components: [a, b]}, ...]")


class _Grouping(Parameters):
    group_variable_name: str
    group_components: list[str] = Field(min_length=1)


class DuplicateVariables(SaberOuterBlock):
    """``duplicate variables``: one inner variable copied into several outer variables.

    :math:`\\mathbf{U}` copies; :math:`\\mathbf{U}^\\mathsf{T}` sums the copies; the left
    inverse averages them.
    """

    Parameters = DuplicateVariablesParameters

    def __init__(self, params: Any, context: BlockContext):
        super().__init__(params, context)
        path = join_path(context.path, "variable groupings")
        self.groups = [validate(_Grouping, g, join_path(path, i)) for i, g in enumerate(params.variable_groupings)]
        covered = [c for g in self.groups for c in g.group_components]
        if sorted(covered) != sorted(self.variables):
            raise ConfigError(f"group components {covered} must be exactly the outer variables {self.variables}", path)

    @property
    def inner_variables(self) -> Variables:
        return Variables(g.group_variable_name for g in self.groups)

    def multiply(self, fields: FieldSet) -> FieldSet:
        return FieldSet({c: fields[g.group_variable_name].copy() for g in self.groups for c in g.group_components},
                        copy=False)

    def multiply_ad(self, fields: FieldSet) -> FieldSet:
        return FieldSet({g.group_variable_name: sum(fields[c] for c in g.group_components) for g in self.groups},
                        copy=False)

    def left_inverse_multiply(self, fields: FieldSet) -> FieldSet:
        return FieldSet({g.group_variable_name: sum(fields[c] for c in g.group_components) / len(g.group_components)
                         for g in self.groups}, copy=False)


class WriteFieldsParameters(SaberBlockParameters):
    saber_block_name: Literal["write fields"]
    output_file: str = Field(description="netCDF file; %count% is replaced by the call number.")


class WriteFields(SaberOuterBlock):
    """``write fields``: the identity, writing the fields that pass outwards (a diagnostic)."""

    Parameters = WriteFieldsParameters
    supports_batch = False

    def __init__(self, params: Any, context: BlockContext):
        super().__init__(params, context)
        self.count = 0
        self.written: list[str] = []

    def multiply(self, fields: FieldSet) -> FieldSet:
        self.count += 1
        name = self.params.output_file.replace("%count%", str(self.count))
        try:
            write_fields(name, self.geometry, fields, self.context.time, kind="increment")
        except OSError as exc:
            raise InputFileError(name, f"cannot be written ({exc.strerror or exc})") from None
        self.written.append(name)
        return fields.copy()

    def multiply_ad(self, fields: FieldSet) -> FieldSet:
        return fields.copy()

    def left_inverse_multiply(self, fields: FieldSet) -> FieldSet:
        return fields.copy()
