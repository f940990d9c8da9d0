r"""SABER outer blocks of the QG plugin: ``QG balance``, ``QG walls`` and ``QG vertical correlation``.

A static B for QG, as OOPS's (standard deviation, horizontal correlation,
correlation between the layers, balance), is the chain

.. math::

    \mathbf{B} = \mathbf{K}\,\mathbf{W}\,\Sigma\,\mathbf{V}\,\mathbf{C}\,\mathbf{V}^\mathsf{T}\Sigma\,
    \mathbf{W}^\mathsf{T}\mathbf{K}^\mathsf{T}

with :math:`\mathbf{C}` a horizontal correlation of the control streamfunction
(``diffusion``, each layer on its own, unit variance), :math:`\mathbf{V}` the
square root of the 2 × 2 correlation between the layers (``QG vertical
correlation``), :math:`\Sigma` the standard deviations (``StdDev``),
:math:`\mathbf{W}` the rigid walls (``QG walls``: each wall row of the
streamfunction constant, the interior PV kept) and :math:`\mathbf{K}` the
balance (``QG balance``: streamfunction → ``x, q, u, v``):

.. code-block:: yaml

    background error:
      covariance model: SABER
      saber central block: {saber block name: diffusion, horizontal length scale: 1.5e6}
      saber outer blocks:            # from the central block outwards
      - saber block name: QG vertical correlation
        correlation: 0.5
      - saber block name: StdDev
        read: {value: 3.0e6}         # m^2/s, the streamfunction
      - saber block name: QG walls   # psi constant along each wall (the model's walls)
      - saber block name: QG balance # x -> x, q, u, v (the analysis variables)

Why ``QG walls``
    The walls are streamlines: the model keeps each wall row of :math:`\psi`
    constant and, given a state whose wall rows vary, replaces them by their
    zonal means.  A correlation model such as ``diffusion`` (zero-flux walls)
    gives the wall rows the full variance, so a draw from B without
    :math:`\mathbf{W}` varies along the walls by about :math:`\sigma`, and the
    model turns that into a jump over one row: a jet of :math:`\sim\sigma/(2\Delta y)`
    and vorticity :math:`\sim\sigma/\Delta y^2` along each wall, growing with the
    resolution.  With :math:`\sigma = 3\times10^6` m² s⁻¹ and 1000 km (the tutorial's
    B) the largest perturbation wind in the rows next to the walls is 14, 24, 61 and
    105 m/s on the 40 × 20, 80 × 40, 160 × 80 and 320 × 160 grids (15, 16, 22 and
    28 m/s in the other rows), and at 320 × 160 the perturbed state cannot be run
    (``docs/qg_numerics_notes.rst``).
    :math:`\mathbf{W}` keeps the PV of the draw on the interior rows and inverts it
    with the zonal-mean walls, so the draw goes smoothly to a constant along
    each wall.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from pyoops.fields.fieldset import FieldSet
from pyoops.saber.blocks import BlockContext, SaberBlockParameters, SaberOuterBlock
from pyoops.util.errors import ConfigError, join_path
from pyoops.util.variables import Variables
from pyoops_qg.variable_changes import KNOWN, invert_fields, invert_fields_ad

__all__ = ["QgBalance", "QgBalanceParameters", "QgVerticalCorrelation", "QgVerticalCorrelationParameters", "QgWalls",
           "QgWallsParameters"]


def _qg_geometry(context: BlockContext, name: str) -> Any:
    ops = getattr(context.geometry, "operators", None)
    if ops is None or not hasattr(context.geometry, "depths"):
        raise ConfigError(f"'{name}' works on the QG geometry (model plugin qg), got {type(context.geometry).__name__}",
                          context.path)
    return ops


class QgBalanceParameters(SaberBlockParameters):
    """``{saber block name: QG balance}``."""

    saber_block_name: Literal["QG balance"]


class QgBalance(SaberOuterBlock):
    r"""``QG balance``: the control streamfunction ``x`` → the outer variables among ``x, q, u, v``.

    :math:`\mathbf{K}` is the linear variable change of :mod:`pyoops_qg.variable_changes`
    (:math:`q = (\nabla^2 + \mathbf{M})\psi`, :math:`u = -\partial_y\psi`,
    :math:`v = \partial_x\psi`), :math:`\mathbf{K}^\mathsf{T}` its adjoint; the left inverse
    is the PV inversion of ``q`` with the wall rows of ``x`` (or ``x`` itself when the
    outer variables have no ``q``).  The inner variable is ``x``.
    """

    Parameters = QgBalanceParameters

    def __init__(self, params: Any, context: BlockContext):
        super().__init__(params, context)
        self.ops = _qg_geometry(context, "QG balance")
        unknown = [v for v in self.variables if v not in KNOWN]
        if unknown:
            raise ConfigError(f"QG balance maps the streamfunction to x, q, u, v; variable(s) {unknown} reach it "
                              "(restrict it with 'active variables')", join_path(context.path, "active variables"))
        if not any(v in self.variables for v in ("x", "q")):
            raise ConfigError("QG balance needs 'x' or 'q' among its outer variables (for the left inverse), got "
                              f"{list(self.variables)}", context.path)

    @property
    def inner_variables(self) -> Variables:
        return Variables(["x"])

    def multiply(self, fields: FieldSet) -> FieldSet:
        out = self.ops.diagnose_linear(fields["x"], self.variables)
        if "x" in out:
            out["x"] = out["x"].copy()
        return FieldSet(out, copy=False)

    def multiply_ad(self, fields: FieldSet) -> FieldSet:
        return FieldSet({"x": self.ops.diagnose_linear_ad(dict(fields))}, copy=False)

    def left_inverse_multiply(self, fields: FieldSet) -> FieldSet:
        return FieldSet({"x": invert_fields(self.ops, fields, linear=True)}, copy=False)

    def left_inverse_multiply_ad(self, fields: FieldSet) -> FieldSet:
        """Adjoint of the left inverse (for tests)."""
        return invert_fields_ad(self.ops, fields["x"], self.variables)


class QgWallsParameters(SaberBlockParameters):
    """``{saber block name: QG walls}``."""

    saber_block_name: Literal["QG walls"]


class QgWalls(SaberOuterBlock):
    r"""``QG walls``: :math:`\mathbf{W}`, the streamfunction ``x`` made constant along each wall, its interior PV kept.

    :math:`\mathbf{W}\psi` has the PV :math:`(\nabla^2 + \mathbf{M})\psi` of ``psi`` on the interior
    rows and the zonal means of its wall rows on the walls
    (:meth:`pyoops_qg.numerics.QgOperators.rigid_walls`): linear, idempotent and the identity on
    fields that are already constant along the walls, as every model state is.  Place it just
    inside ``QG balance`` (it acts on ``x`` alone).  Being a projection it has no exact left
    inverse: the left inverse is the identity, exact on its range, so ensemble members (model
    states) pass through unchanged; an ``inverse test`` with random fields reports the
    wall part it removes.
    """

    Parameters = QgWallsParameters

    def __init__(self, params: Any, context: BlockContext):
        super().__init__(params, context)
        self.ops = _qg_geometry(context, "QG walls")
        if list(self.variables) != ["x"]:
            raise ConfigError(f"QG walls acts on the control streamfunction 'x' alone, got {list(self.variables)}: "
                              "place it just before 'QG balance' in 'saber outer blocks'", context.path)

    def multiply(self, fields: FieldSet) -> FieldSet:
        return FieldSet({"x": self.ops.rigid_walls(fields["x"])}, copy=False)

    def multiply_ad(self, fields: FieldSet) -> FieldSet:
        return FieldSet({"x": self.ops.rigid_walls_ad(fields["x"])}, copy=False)

    def left_inverse_multiply(self, fields: FieldSet) -> FieldSet:
        return FieldSet({"x": fields["x"].copy()}, copy=False)


class QgVerticalCorrelationParameters(SaberBlockParameters):
    """``{saber block name: QG vertical correlation, correlation: r}`` or ``vertical length scale: L``."""

    saber_block_name: Literal["QG vertical correlation"]
    correlation: float | None = Field(None, gt=-1.0, lt=1.0, description="Correlation r between the two layers.")
    vertical_length_scale: float | None = Field(
        None, gt=0.0, allow_inf_nan=False,
        description="Gaussian length L (m): r = exp(-dz^2 / (2 L^2)), dz the distance between the layer middles.")

    @model_validator(mode="after")
    def _one(self) -> "QgVerticalCorrelationParameters":
        if (self.correlation is None) == (self.vertical_length_scale is None):
            raise ValueError("give exactly one of 'correlation' and 'vertical length scale'")
        return self


class QgVerticalCorrelation(SaberOuterBlock):
    r"""``QG vertical correlation``: :math:`\mathbf{V} = \begin{pmatrix}1 & 0\\ r & \sqrt{1 - r^2}\end{pmatrix}`
    on the layer axis of every active variable.

    :math:`\mathbf{V}\mathbf{V}^\mathsf{T}` is the 2 × 2 correlation matrix with off-diagonal
    :math:`r`, so with a central block that correlates each layer on its own with
    unit variance, the two layers of :math:`\mathbf{B}` are correlated by :math:`r`
    at zero horizontal separation.  :math:`\mathbf{V}` is lower triangular and
    invertible: the left inverse is exact.
    """

    Parameters = QgVerticalCorrelationParameters

    def __init__(self, params: Any, context: BlockContext):
        super().__init__(params, context)
        _qg_geometry(context, "QG vertical correlation")
        if params.correlation is not None:
            r = float(params.correlation)
        else:
            dz = float(np.diff(context.geometry.heights)[0])
            r = float(np.exp(-0.5 * (dz / params.vertical_length_scale) ** 2))
        self.correlation = r
        self.s = float(np.sqrt(1.0 - r * r))

    def multiply(self, fields: FieldSet) -> FieldSet:
        r, s = self.correlation, self.s
        return fields.map(lambda a: np.stack([a[..., 0, :, :], r * a[..., 0, :, :] + s * a[..., 1, :, :]], axis=-3))

    def multiply_ad(self, fields: FieldSet) -> FieldSet:
        r, s = self.correlation, self.s
        return fields.map(lambda a: np.stack([a[..., 0, :, :] + r * a[..., 1, :, :], s * a[..., 1, :, :]], axis=-3))

    def left_inverse_multiply(self, fields: FieldSet) -> FieldSet:
        r, s = self.correlation, self.s
        return fields.map(lambda a: np.stack([a[..., 0, :, :], (a[..., 1, :, :] - r * a[..., 0, :, :]) / s],
                                             axis=-3))
