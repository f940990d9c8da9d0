"""Abstract State and Increment (the OOPS method sets).

pyoops's generic FieldSet-backed classes (:mod:`pyoops.generic.state`)
implement both; a model plugin normally subclasses those and only adds its
analytic initial conditions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pyoops.fields.fieldset import FieldSet
    from pyoops.interface.geometry import Geometry
    from pyoops.util.datetime import DateTime
    from pyoops.util.variables import Variables

__all__ = ["Increment", "State"]


class State(ABC):
    """A model state: fields on a geometry, valid at one time."""

    geometry: "Geometry"
    fields: "FieldSet"
    time: "DateTime"

    @property
    @abstractmethod
    def variables(self) -> "Variables":
        """The variables the state holds."""

    @abstractmethod
    def copy(self) -> "State":
        """A deep copy."""

    @abstractmethod
    def norm(self) -> float:
        """RMS norm of all fields (the OOPS ``norm``)."""

    @abstractmethod
    def write(self, filename: str) -> None:
        """Write to netCDF following the documented state-file layout (atomically)."""

    @abstractmethod
    def __iadd__(self, increment: "Increment") -> "State":
        """``x += dx`` (the increment must be valid at the state's time)."""


class Increment(ABC):
    """A perturbation or correction of a :class:`State`, with the OOPS algebra.

    ``time`` is the valid time; linear-model loops advance it as they step.
    """

    geometry: "Geometry"
    fields: "FieldSet"
    time: "DateTime"

    @classmethod
    @abstractmethod
    def zeros(cls, geometry: "Geometry", variables: "Variables", time: "DateTime",
              batch_shape: tuple[int, ...] = ()) -> "Increment":
        """A zero increment of ``variables`` valid at ``time`` (optional leading member axes)."""

    @property
    @abstractmethod
    def variables(self) -> "Variables":
        """The variables the increment holds."""

    @abstractmethod
    def copy(self) -> "Increment":
        """A deep copy."""

    @abstractmethod
    def zero(self) -> None:
        """Set every value to 0."""

    @abstractmethod
    def ones(self) -> None:
        """Set every value to 1."""

    @abstractmethod
    def axpy(self, a: float, other: "Increment", check: bool = True) -> None:
        """``self += a * other``."""

    @abstractmethod
    def dot_product_with(self, other: "Increment") -> float:
        """Euclidean inner product."""

    @abstractmethod
    def schur_product_with(self, other: "Increment") -> None:
        """Element-wise product in place."""

    @abstractmethod
    def random(self, rng: np.random.Generator) -> None:
        """Fill with independent standard normal values from ``rng``."""

    @abstractmethod
    def diff(self, x1: State, x2: State) -> None:
        """``self = x1 - x2``."""

    @abstractmethod
    def dirac(self, config: Any) -> None:
        """Zero everywhere but 1 at the grid points and variables given in ``config``."""

    @abstractmethod
    def norm(self) -> float:
        """RMS norm."""

    @abstractmethod
    def serialize(self) -> np.ndarray:
        """All values as one flat vector."""

    @abstractmethod
    def deserialize(self, vector: np.ndarray) -> None:
        """Fill from a vector made by :meth:`serialize`."""

    @abstractmethod
    def __iadd__(self, other: "Increment") -> "Increment": ...

    @abstractmethod
    def __isub__(self, other: "Increment") -> "Increment": ...

    @abstractmethod
    def __imul__(self, factor: float) -> "Increment": ...
