"""Abstract VariableChange and LinearVariableChange (OOPS method sets)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from pyoops.config.parameters import Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.util.variables import Variables

if TYPE_CHECKING:
    from pyoops.interface.geometry import Geometry

__all__ = ["LinearVariableChange", "VariableChange"]


class VariableChange(ABC):
    """Nonlinear change of variables on states, :math:`x_{out} = \\mathcal{K}(x_{in})`."""

    Parameters: ClassVar[type[Parameters]]

    def __init__(self, params: Any, geometry: "Geometry"):
        self.params = params
        self.geometry = geometry

    @abstractmethod
    def change_var(self, fields: FieldSet, variables_out: Variables) -> FieldSet:
        """Fields of ``variables_out`` computed from ``fields``."""

    def change_var_inverse(self, fields: FieldSet, variables_out: Variables) -> FieldSet:
        """Inverse change, where it exists."""
        raise TypeError(f"{type(self).__name__} has no inverse")


class LinearVariableChange(ABC):
    """Linear change of variables :math:`\\mathbf{K}` with adjoint and (left) inverse."""

    Parameters: ClassVar[type[Parameters]]

    def __init__(self, params: Any, geometry: "Geometry"):
        self.params = params
        self.geometry = geometry

    def set_trajectory(self, background: FieldSet) -> None:
        """Linearise about ``background`` (no-op for state-independent changes)."""

    @abstractmethod
    def multiply(self, dx: FieldSet, variables_out: Variables) -> FieldSet:
        """:math:`\\mathbf{K}\\,\\delta x`."""

    @abstractmethod
    def multiply_ad(self, dy: FieldSet, variables_out: Variables) -> FieldSet:
        """:math:`\\mathbf{K}^\\mathsf{T}\\delta y`."""

    def multiply_inverse(self, dy: FieldSet, variables_out: Variables) -> FieldSet:
        """:math:`\\mathbf{K}^{-1}\\delta y` (a left inverse), where it exists."""
        raise TypeError(f"{type(self).__name__} has no inverse")

    def multiply_inverse_ad(self, dx: FieldSet, variables_out: Variables) -> FieldSet:
        """Adjoint of :meth:`multiply_inverse`, where it exists."""
        raise TypeError(f"{type(self).__name__} has no inverse adjoint")
