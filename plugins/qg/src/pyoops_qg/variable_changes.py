r"""Variable changes between the streamfunction and ``q, u, v`` (``variable change name: QG``).

Both the nonlinear change (on states) and the linear change (on increments) map
the streamfunction ``x`` to any of ``x, q, u, v`` with the model's own discrete
operators (:mod:`pyoops_qg.numerics`):

* :math:`q = \nabla^2\psi + \mathbf{M}\psi + c` on the interior rows (:math:`c` = β and
  orography terms, absent from the linear change), :math:`\mathbf{M}\psi + c` on the
  wall rows;
* :math:`u = -\partial_y\psi`, :math:`v = \partial_x\psi`.

The (left) inverse is the PV inversion: the interior streamfunction solves
:math:`(\nabla^2 + \mathbf{M})\psi = q - c` with the wall rows of ``x`` as boundary
values (zero when ``x`` is not among the inputs: the homogeneous boundary
condition of increments).  Since :math:`q` does not see a constant added to both
layers, the wall values are part of the data, as OOPS's ``x_north``/``x_south``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from pyoops.config.parameters import Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.interface.variable_change import LinearVariableChange, VariableChange
from pyoops.util.errors import ConfigError
from pyoops.util.variables import Variables

__all__ = ["QgLinearVariableChange", "QgVariableChange", "QgVariableChangeParameters", "invert_fields"]

KNOWN = ("x", "q", "u", "v")


class QgVariableChangeParameters(Parameters):
    """``{variable change name: QG}``."""

    variable_change_name: Literal["QG"] = "QG"


def _check(variables: Any, what: str) -> Variables:
    variables = Variables(variables)
    unknown = [v for v in variables if v not in KNOWN]
    if unknown:
        raise ConfigError(f"QG variable change: unknown {what} variable(s) {unknown} (known: {', '.join(KNOWN)})")
    return variables


def _streamfunction(fields: FieldSet) -> np.ndarray:
    if "x" not in fields:
        raise ConfigError(f"QG variable change: the input needs the streamfunction 'x', got {list(fields)}")
    return fields["x"]


def invert_fields(ops: Any, fields: FieldSet, linear: bool) -> np.ndarray:
    """The streamfunction from ``q`` (interior rows) and the wall rows of ``x`` (zero without ``x``)."""
    if "q" not in fields:
        if "x" in fields:
            return fields["x"].copy()
        raise ConfigError(f"QG inverse variable change needs 'q' (or 'x'), got {list(fields)}")
    q = fields["q"]
    walls = fields["x"] if "x" in fields else np.zeros_like(q)
    interior = q[..., 1:-1, :] if linear else q[..., 1:-1, :] - ops.offset[..., 1:-1, :]
    return ops.invert_linear(interior, walls)


def invert_fields_ad(ops: Any, psi_bar: np.ndarray, variables_out: Variables) -> FieldSet:
    """Adjoint of the linear :func:`invert_fields` for outputs ``variables_out``."""
    out = {v: np.zeros_like(psi_bar) for v in variables_out}
    if "q" not in variables_out:
        if "x" in variables_out:
            out["x"] = psi_bar.copy()
            return FieldSet(out, copy=False)
        raise ConfigError(f"QG inverse variable change needs 'q' (or 'x'), got {list(variables_out)}")
    q_bar, walls_bar = ops.invert_linear_ad(psi_bar)
    out["q"][..., 1:-1, :] = q_bar
    if "x" in variables_out:
        out["x"] = walls_bar
    return FieldSet(out, copy=False)


class QgVariableChange(VariableChange):
    """Nonlinear ``x → (x, q, u, v)`` on states, and its inverse (PV inversion)."""

    Parameters = QgVariableChangeParameters

    def __init__(self, params: Any, geometry: Any):
        super().__init__(params, geometry)
        self.ops = geometry.operators

    def change_var(self, fields: FieldSet, variables_out: Variables) -> FieldSet:
        variables_out = _check(variables_out, "output")
        return FieldSet(self.ops.diagnose(_streamfunction(fields), variables_out))

    def change_var_inverse(self, fields: FieldSet, variables_out: Variables) -> FieldSet:
        variables_out = _check(variables_out, "output")
        psi = invert_fields(self.ops, fields, linear=False)
        return FieldSet(self.ops.diagnose(psi, variables_out), copy=False)


class QgLinearVariableChange(LinearVariableChange):
    """Linear ``δx → (δx, δq, δu, δv)`` with its adjoint; the left inverse is the PV inversion."""

    Parameters = QgVariableChangeParameters

    def __init__(self, params: Any, geometry: Any):
        super().__init__(params, geometry)
        self.ops = geometry.operators

    def multiply(self, dx: FieldSet, variables_out: Variables) -> FieldSet:
        variables_out = _check(variables_out, "output")
        return FieldSet(self.ops.diagnose_linear(_streamfunction(dx), variables_out))

    def multiply_ad(self, dy: FieldSet, variables_out: Variables) -> FieldSet:
        variables_out = _check(variables_out, "input")
        if list(variables_out) != ["x"]:
            raise ConfigError(f"QG linear variable change: the input variables must be [x], got {list(variables_out)}")
        _check(list(dy), "output")
        return FieldSet({"x": self.ops.diagnose_linear_ad(dict(dy))}, copy=False)

    def multiply_inverse(self, dy: FieldSet, variables_out: Variables) -> FieldSet:
        variables_out = _check(variables_out, "input")
        psi = invert_fields(self.ops, dy, linear=True)
        return FieldSet(self.ops.diagnose_linear(psi, variables_out), copy=False)

    def multiply_inverse_ad(self, dx: FieldSet, variables_out: Variables) -> FieldSet:
        variables_out = _check(variables_out, "output")
        psi_bar = self.ops.diagnose_linear_ad(dict(dx))
        return invert_fields_ad(self.ops, psi_bar, variables_out)
