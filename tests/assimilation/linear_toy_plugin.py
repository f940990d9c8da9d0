r"""A small *linear* model plugin for the variational integration tests (tests only).

``model plugin: lineartoy`` has

* the geometry ``{resol: N, variables: [x]}``: :math:`N` points :math:`x_j = j/N` on a
  periodic unit circle (coordinate ``x``, file dimension ``position``), variables ``x``
  (default) or any list;
* the model ``LinearToy`` and its linear model ``LinearToyTLM``, both
  ``{a0, a1, a2, tstep}``: one step is the circulant (banded, periodic) map

  .. math::

      (\mathbf{A}x)_j = a_0 x_j + a_1 x_{j-1} + a_2 x_{j+1},

  e.g. upwind advection with damping for :math:`a_0 + a_1 + a_2 < 1`.  The model is
  linear, so the tangent linear is :math:`\mathbf{A}` itself (the trajectory is not
  used) and the adjoint is :math:`\mathbf{A}^\mathsf{T}`
  (:math:`(\mathbf{A}^\mathsf{T}y)_j = a_0 y_j + a_1 y_{j+1} + a_2 y_{j-1}`).
  Every array may carry leading batch axes.

:func:`register` adds the plugin to the process-wide registry (idempotent), :func:`unregister`
removes it again, and
:func:`dense_step_matrix` builds :math:`\mathbf{A}` densely, independently of the model
class, for the tests' exact BLUE.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field

from pyoops.config.parameters import DurationField, Parameters, as_parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.generic.grid import Axis, StructuredGrid
from pyoops.generic.state import GenericState
from pyoops.interface.model import LinearModel, Model
from pyoops.registry import get_registry, hookimpl
from pyoops.util.datetime import Duration

PLUGIN_NAME = "lineartoy"


class LinearToyGeometryParameters(Parameters):
    resol: int = Field(ge=3, description="Number of grid points.")
    variables: list[str] = Field(["x"], min_length=1, description="Model variables (each advanced by A).")


class LinearToyGeometry(StructuredGrid):
    """``resol`` points on the periodic unit circle, variables ``x`` (default) or those listed."""

    Parameters = LinearToyGeometryParameters

    def __init__(self, params: LinearToyGeometryParameters | Mapping[str, Any]):
        params = as_parameters(LinearToyGeometryParameters, params, "geometry")
        self.params = params
        super().__init__([Axis.periodic_axis("x", params.resol, 1.0, dim="position")], variables=params.variables)


class _Coefficients(Parameters):
    a0: float = Field(0.7, description="Weight of x_j.")
    a1: float = Field(0.2, description="Weight of x_{j-1} (upwind).")
    a2: float = Field(0.05, description="Weight of x_{j+1}.")
    tstep: DurationField = Field(Duration("PT1H"), description="Time step.")


class LinearToyParameters(_Coefficients):
    name: Literal["LinearToy"] = "LinearToy"


class LinearToyTLMParameters(_Coefficients):
    name: Literal["LinearToyTLM"] = "LinearToyTLM"
    adjoint_error: float = Field(0.0, description="Tests only: step_ad applies (A + e I)^T, a wrong adjoint.")


def step_matrix_apply(x: np.ndarray, a0: float, a1: float, a2: float) -> np.ndarray:
    """:math:`\\mathbf{A}x` along the last axis."""
    return a0 * x + a1 * np.roll(x, 1, axis=-1) + a2 * np.roll(x, -1, axis=-1)


def step_matrix_apply_ad(y: np.ndarray, a0: float, a1: float, a2: float) -> np.ndarray:
    """:math:`\\mathbf{A}^\\mathsf{T}y` along the last axis."""
    return a0 * y + a1 * np.roll(y, -1, axis=-1) + a2 * np.roll(y, 1, axis=-1)


def dense_step_matrix(n: int, a0: float = 0.7, a1: float = 0.2, a2: float = 0.05) -> np.ndarray:
    """The dense :math:`n \\times n` matrix :math:`\\mathbf{A}` (tests only)."""
    a = np.zeros((n, n))
    for j in range(n):
        a[j, j] += a0
        a[j, (j - 1) % n] += a1
        a[j, (j + 1) % n] += a2
    return a


class LinearToyModel(Model):
    """``{name: LinearToy, a0, a1, a2, tstep}``: :math:`x_{k+1} = \\mathbf{A}x_k`."""

    Parameters = LinearToyParameters

    def __init__(self, params: Any, geometry: Any):
        params = as_parameters(LinearToyParameters, params, "model")
        super().__init__(params, geometry)

    @property
    def time_resolution(self) -> Duration:
        return self.params.tstep

    def step(self, fields: FieldSet) -> FieldSet:
        p = self.params
        return FieldSet({v: step_matrix_apply(a, p.a0, p.a1, p.a2) for v, a in fields.items()}, copy=False)


class LinearToyTLM(LinearModel):
    """``{name: LinearToyTLM, a0, a1, a2, tstep}``: TL :math:`\\mathbf{A}`, AD :math:`\\mathbf{A}^\\mathsf{T}`."""

    Parameters = LinearToyTLMParameters

    def __init__(self, params: Any, geometry: Any):
        params = as_parameters(LinearToyTLMParameters, params, "linear model")
        super().__init__(params, geometry)

    @property
    def time_resolution(self) -> Duration:
        return self.params.tstep

    def step_tl(self, dfields: FieldSet, trajectory: FieldSet) -> FieldSet:
        p = self.params
        return FieldSet({v: step_matrix_apply(a, p.a0, p.a1, p.a2) for v, a in dfields.items()}, copy=False)

    def step_ad(self, dfields: FieldSet, trajectory: FieldSet) -> FieldSet:
        p = self.params
        return FieldSet({v: step_matrix_apply_ad(a, p.a0 + p.adjoint_error, p.a1, p.a2) for v, a in dfields.items()},
                        copy=False)


class LinearToyState(GenericState):
    """The generic state (states come from files in the tests)."""


@hookimpl
def pyoops_register(registry: Any) -> None:
    registry.add_model_plugin(PLUGIN_NAME, geometry=LinearToyGeometry, state=LinearToyState,
                              description="linear banded advection-damping model on a periodic circle (tests)")
    registry.model.register("LinearToy", LinearToyModel)
    registry.linear_model.register("LinearToyTLM", LinearToyTLM)


class _Plugin:
    """The hook implementation as an object, so that the registry sees one plugin per process."""

    pyoops_register = staticmethod(pyoops_register)


_PLUGIN = _Plugin()


def register() -> Any:
    """Register ``model plugin: lineartoy`` with the process-wide registry (idempotent)."""
    registry = get_registry()
    if PLUGIN_NAME not in registry.model_plugins:
        registry.register_plugin(_PLUGIN, name="lineartoy-tests")
    return registry


def unregister() -> None:
    """Remove what :func:`register` added, so that other tests see the installed plugins only."""
    registry = get_registry()
    registry.model_plugins.pop(PLUGIN_NAME, None)
    for kind, name in (("geometry", PLUGIN_NAME), ("model", "LinearToy"), ("linear model", "LinearToyTLM")):
        registry.factory(kind)._entries.pop(name, None)
    if registry.plugin_manager.is_registered(_PLUGIN):
        registry.plugin_manager.unregister(_PLUGIN)
