r"""The persistence model :math:`x_{k+1} = x_k` on any geometry (OOPS's generic ``IdentityModel``).

A model plugin's geometry and state with no dynamics: :math:`\mathcal{M} = \mathbf{M} =
\mathbf{M}^\mathrm{T} = \mathbf{I}` at every step of length ``tstep``.  Uses:

* a **linear-Gaussian twin**: a random-walk truth :math:`x^t_{k+1} = x^t_k + \eta_k`,
  :math:`\eta_k \sim N(0, \mathbf{Q})`, assimilated with the persistence model, has a
  steady-state forecast-error covariance that solves a discrete algebraic Riccati
  equation (:mod:`pyoops.testing.linear_gaussian`); innovation statistics can then be
  checked against exact expectations;
* 3D-Var/4D-Var of a static field (all observations of a window describe one state);
* a model-free baseline in cycling experiments.

YAML: ``model: {name: Identity, tstep: PT6H}`` and, for 4D-Var,
``linear model: {name: Identity, tstep: PT6H}``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pyoops.config.parameters import Parameters, PositiveDurationField
from pyoops.fields.fieldset import FieldSet
from pyoops.interface.model import LinearModel, Model
from pyoops.util.datetime import Duration

__all__ = ["IdentityLinearModel", "IdentityLinearModelParameters", "IdentityModel", "IdentityModelParameters"]


class IdentityModelParameters(Parameters):
    """``model: {name: Identity, tstep: PT6H}``."""

    name: Literal["Identity"] = "Identity"
    tstep: PositiveDurationField = Field(Duration("PT6H"), description="Time step (ISO-8601).")


class IdentityLinearModelParameters(IdentityModelParameters):
    """``linear model: {name: Identity, tstep: PT6H}``."""


class IdentityModel(Model):
    r"""Persistence: :math:`\mathcal{M}(x) = x` every ``tstep``."""

    Parameters = IdentityModelParameters

    @property
    def time_resolution(self) -> Duration:
        return self.params.tstep

    def step(self, fields: FieldSet) -> FieldSet:
        """Return ``fields`` unchanged (a copy: the caller owns the result)."""
        return fields.copy()


class IdentityLinearModel(LinearModel):
    r"""Tangent linear and adjoint of persistence: :math:`\mathbf{M} = \mathbf{M}^\mathrm{T} = \mathbf{I}`."""

    Parameters = IdentityLinearModelParameters

    @property
    def time_resolution(self) -> Duration:
        return self.params.tstep

    def trajectory_fields(self, fields: FieldSet) -> FieldSet:
        """Persistence needs nothing of the trajectory."""
        return FieldSet({})

    def step_tl(self, dfields: FieldSet, trajectory: FieldSet) -> FieldSet:
        return dfields.copy()

    def step_ad(self, dfields: FieldSet, trajectory: FieldSet) -> FieldSet:
        return dfields.copy()
