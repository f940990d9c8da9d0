"""Abstract Model and LinearModel (the OOPS model interfaces).

A plugin writes the physics on FieldSets: :meth:`Model.step` advances a FieldSet
by one time step, with any leading batch (ensemble) axes, and
:meth:`LinearModel.step_tl`/:meth:`LinearModel.step_ad` do the same for
perturbations along a trajectory.  The generic loops in
:mod:`pyoops.generic.forecast` handle time, output and post-processing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from pyoops.config.parameters import Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.util.datetime import DateTime, Duration
from pyoops.util.variables import Variables

if TYPE_CHECKING:
    from pyoops.interface.geometry import Geometry
    from pyoops.interface.state import Increment, State

__all__ = ["LinearModel", "Model"]


class Model(ABC):
    """A nonlinear model :math:`x_{k+1} = \\mathcal{M}(x_k)`.

    Parameters
    ----------
    params:
        Validated instance of the class's ``Parameters``.
    geometry:
        The grid the model runs on.
    """

    Parameters: ClassVar[type[Parameters]]

    def __init__(self, params: Any, geometry: "Geometry"):
        self.params = params
        self.geometry = geometry

    @property
    @abstractmethod
    def time_resolution(self) -> Duration:
        """The model time step."""

    @property
    def variables(self) -> Variables:
        """Variables the model needs in a state."""
        return self.geometry.variables

    def initialize(self, state: "State") -> None:
        """Called once before the first step of a forecast."""

    @abstractmethod
    def step(self, fields: FieldSet) -> FieldSet:
        """Advance ``fields`` by :attr:`time_resolution`; leading batch axes are members."""

    def finalize(self, state: "State") -> None:
        """Called once after the last step of a forecast."""


class LinearModel(ABC):
    """Tangent-linear model :math:`\\mathbf{M}_k` and its adjoint along a trajectory.

    :meth:`set_trajectory` is called with the nonlinear state at the start of
    each nonlinear step; :meth:`step_tl` and :meth:`step_ad` then find the
    trajectory by the increment's valid time.
    """

    Parameters: ClassVar[type[Parameters]]

    def __init__(self, params: Any, geometry: "Geometry"):
        self.params = params
        self.geometry = geometry
        self._trajectory: dict[DateTime, FieldSet] = {}

    @property
    @abstractmethod
    def time_resolution(self) -> Duration:
        """The linear model time step (equal to the trajectory's model step)."""

    @property
    def variables(self) -> Variables:
        return self.geometry.variables

    # Trajectory -------------------------------------------------------------------
    def set_trajectory(self, state: "State") -> None:
        """Store what the TL/AD need from the nonlinear state valid at ``state.time``."""
        self._trajectory[state.time] = self.trajectory_fields(state.fields)

    def trajectory_fields(self, fields: FieldSet) -> FieldSet:
        """What to keep of a trajectory state (a copy of every field by default)."""
        return fields.copy()

    def trajectory_at(self, time: DateTime) -> FieldSet:
        try:
            return self._trajectory[time]
        except KeyError:
            known = ", ".join(str(t) for t in sorted(self._trajectory, key=lambda t: t.datetime)) or "none"
            raise RuntimeError(f"no linear-model trajectory at {time} (trajectory times: {known})") from None

    def clear_trajectory(self) -> None:
        self._trajectory.clear()

    # TL ---------------------------------------------------------------------------
    def initialize_tl(self, increment: "Increment") -> None:
        """Called before the first TL step."""

    @abstractmethod
    def step_tl(self, dfields: FieldSet, trajectory: FieldSet) -> FieldSet:
        """TL of one step from the time of ``trajectory``: :math:`\\delta x_{k+1} = \\mathbf{M}_k \\delta x_k`."""

    def finalize_tl(self, increment: "Increment") -> None:
        """Called after the last TL step."""

    # AD ---------------------------------------------------------------------------
    def initialize_ad(self, increment: "Increment") -> None:
        """Called before the first AD step (time runs backwards)."""

    @abstractmethod
    def step_ad(self, dfields: FieldSet, trajectory: FieldSet) -> FieldSet:
        """Adjoint of :meth:`step_tl` for the same trajectory: :math:`\\mathbf{M}_k^\\mathsf{T} \\delta x`."""

    def finalize_ad(self, increment: "Increment") -> None:
        """Called after the last AD step."""
