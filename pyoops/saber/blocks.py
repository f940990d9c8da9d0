"""SABER block interfaces: central and outer blocks, their parameters and context.

A background-error covariance is a chain

.. math::

    \\mathbf{B} = \\mathbf{U}_N \\cdots \\mathbf{U}_1\\, \\mathbf{C}\\,
                 \\mathbf{U}_1^\\mathsf{T} \\cdots \\mathbf{U}_N^\\mathsf{T}

of one *central* block :math:`\\mathbf{C}` (symmetric) and *outer* blocks
:math:`\\mathbf{U}_i` (e.g. standard deviations, balance, interpolation).
``saber outer blocks`` lists the outer blocks from the central block outwards:
the last one touches the model.  Every block acts on
:class:`~pyoops.fields.fieldset.FieldSet` objects, which may carry leading
batch (member) axes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, model_validator

from pyoops.config.parameters import Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.interface.geometry import Geometry
from pyoops.util.datetime import DateTime
from pyoops.util.errors import ConfigError
from pyoops.util.variables import Variables

__all__ = [
    "BlockContext",
    "SaberBlockParameters",
    "SaberCentralBlock",
    "SaberOuterBlock",
]


class SaberBlockParameters(Parameters):
    """Keys every SABER block accepts (block classes add their own)."""

    saber_block_name: str = Field(description="Name of the block in the SABER block factory.")
    active_variables: list[str] | None = Field(
        None, description="Variables the block acts on (default: all variables reaching it).")
    read: dict[str, Any] | None = Field(None, description="Read the block's data (mutually exclusive with calibration).")
    calibration: dict[str, Any] | None = Field(
        None, description="Calibrate the block from the ensemble (mutually exclusive with read).")
    skip_inverse: bool = Field(False, description="Do not apply the inverse in inverse tests / left inverses.")
    adjoint_test: bool = Field(False, description="Run the adjoint test at construction.")
    adjoint_tolerance: float = Field(1e-12, gt=0, description="Relative tolerance of the adjoint test.")
    square_root_test: bool = Field(
        False, alias="square-root test", description="Central blocks: check C = C^1/2 (C^1/2)^T at construction.")
    square_root_tolerance: float = Field(
        1e-12, gt=0, alias="square-root tolerance", description="Relative tolerance of the square-root test.")
    inverse_test: bool = Field(False, description="Outer blocks: check the left inverse at construction.")
    inner_inverse_tolerance: float = Field(1e-12, gt=0, description="Tolerance of U^-1 U x = x.")
    outer_inverse_tolerance: float = Field(1e-12, gt=0, description="Tolerance of U U^-1 y = y (if U is invertible).")

    @model_validator(mode="after")
    def _read_xor_calibration(self) -> "SaberBlockParameters":
        if self.read is not None and self.calibration is not None:
            raise ValueError("give either 'read' or 'calibration', not both")
        return self


@dataclass
class BlockContext:
    """What a block is built with: where it sits in the chain and the data it may use.

    Attributes
    ----------
    geometry:
        The block's *outer* geometry (for a central block: the geometry it acts on).
    variables:
        The block's outer variables (the active variables reaching it).
    time:
        Valid time of the increments the block acts on.
    registry:
        The plugin registry (for nested chains and model-plugin geometries).
    model_plugin:
        The model plugin (to build inner geometries from YAML).
    ensemble:
        Ensemble members on :attr:`geometry` with :attr:`variables`, as a FieldSet with
        a leading member axis, already brought through the outer blocks' left inverses;
        ``None`` when the covariance has no ensemble.
    ensemble_is_perturbations:
        True when the members are perturbations (``ensemble pert``), not states.
    path:
        YAML path of the block, for messages.
    """

    geometry: Geometry
    variables: Variables
    time: DateTime | None = None
    registry: Any = None
    model_plugin: Any = None
    ensemble: FieldSet | None = None
    ensemble_is_perturbations: bool = False
    path: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    def inner(self, geometry: Geometry, variables: Variables, ensemble: FieldSet | None, path: str) -> "BlockContext":
        """The context of the next block inwards."""
        return replace(self, geometry=geometry, variables=Variables(variables), ensemble=ensemble, path=path)

    def ensemble_perturbations(self) -> FieldSet:
        """Members minus their mean (or the perturbations as given); an error if there is no ensemble."""
        if self.ensemble is None:
            dropped = self.extras.get("ensemble dropped at")
            if dropped:
                raise ConfigError(f"this block needs an ensemble, but the ensemble could not be brought inwards "
                                  f"through the outer block {dropped}", self.path)
            raise ConfigError("this block needs an ensemble: give 'ensemble' (or 'ensemble pert') in the "
                              "covariance section", self.path)
        if self.ensemble_is_perturbations:
            return self.ensemble
        return self.ensemble.map(lambda a: a - a.mean(axis=0, keepdims=True))


class _Block:
    Parameters: ClassVar[type[SaberBlockParameters]] = SaberBlockParameters

    #: Whether :meth:`multiply` and friends accept leading batch axes; if False the
    #: chain loops over members.
    supports_batch: ClassVar[bool] = True

    def __init__(self, params: Any, context: BlockContext):
        self.params = params
        self.context = context
        self.geometry = context.geometry
        self.variables = context.variables
        if params.read is not None:
            self.read(params.read)
        elif params.calibration is not None:
            self.direct_calibration(params.calibration)

    @property
    def name(self) -> str:
        return self.params.saber_block_name

    # Data --------------------------------------------------------------------------------
    def read(self, config: dict[str, Any]) -> None:
        """Read the block's data from ``read:``."""
        raise ConfigError(f"block '{self.name}' has nothing to read; remove 'read'", self.context.path)

    def direct_calibration(self, config: dict[str, Any]) -> None:
        """Calibrate from the ensemble in the context (``calibration:``)."""
        raise ConfigError(f"block '{self.name}' has no calibration; remove 'calibration'", self.context.path)

    def iterative_calibration_init(self, config: dict[str, Any]) -> None:
        """Start a calibration fed one member at a time."""
        raise ConfigError(f"block '{self.name}' has no iterative calibration", self.context.path)

    def iterative_calibration_update(self, member: FieldSet) -> None:
        """Feed one member."""
        raise ConfigError(f"block '{self.name}' has no iterative calibration", self.context.path)

    def iterative_calibration_final(self) -> None:
        """Finish the iterative calibration."""
        raise ConfigError(f"block '{self.name}' has no iterative calibration", self.context.path)

    def write(self, filename: str) -> list[str]:
        """Write calibrated data; returns the files written."""
        return []

    # Helpers --------------------------------------------------------------------------------
    def zeros(self, variables: Variables | None = None, batch_shape: tuple[int, ...] = (),
              geometry: Geometry | None = None) -> FieldSet:
        geometry = geometry or self.geometry
        return geometry.zeros(Variables(variables if variables is not None else self.variables), batch_shape)


class SaberCentralBlock(_Block, ABC):
    """A symmetric positive (semi-)definite operator :math:`\\mathbf{C}` on one geometry.

    Optional square root: :meth:`multiply_sqrt` maps a control vector
    :math:`v \\in \\mathbb{R}^m` (``ctl_vec_size`` = m, with leading batch axes) to
    fields, with :math:`\\mathbf{C} = \\mathbf{C}^{1/2}\\mathbf{C}^{1/2\\,\\mathsf{T}}`.
    """

    #: True when :meth:`multiply_sqrt`/:meth:`multiply_sqrt_ad` exist.
    has_sqrt: ClassVar[bool] = False

    @abstractmethod
    def multiply(self, fields: FieldSet) -> FieldSet:
        """:math:`\\mathbf{C} x`."""

    @property
    def ctl_vec_size(self) -> int:
        """Length of the control vector of :meth:`multiply_sqrt`."""
        raise ConfigError(f"block '{self.name}' has no square root", self.context.path)

    def multiply_sqrt(self, ctl: np.ndarray) -> FieldSet:
        """:math:`\\mathbf{C}^{1/2} v` for a control vector ``ctl`` of shape ``(..., ctl_vec_size)``."""
        raise ConfigError(f"block '{self.name}' has no square root", self.context.path)

    def multiply_sqrt_ad(self, fields: FieldSet) -> np.ndarray:
        """:math:`\\mathbf{C}^{1/2\\,\\mathsf{T}} x`, shape ``(..., ctl_vec_size)``."""
        raise ConfigError(f"block '{self.name}' has no square root", self.context.path)

    def nested_covariances(self) -> dict[str, Any]:
        """Named nested chains worth looking at on their own (Hybrid components, localizations).

        The ``dirac`` application applies each to the impulses; default: none.
        """
        return {}

    def randomize(self, rng: np.random.Generator, batch_shape: tuple[int, ...] = ()) -> FieldSet:
        """A draw from :math:`\\mathcal{N}(0, \\mathbf{C})` (default: through the square root)."""
        if not self.has_sqrt:
            raise ConfigError(f"block '{self.name}' cannot randomize: it has no square root", self.context.path)
        return self.multiply_sqrt(rng.standard_normal(batch_shape + (self.ctl_vec_size,)))


class SaberOuterBlock(_Block, ABC):
    """A linear map :math:`\\mathbf{U}` from the inner space (geometry, variables) to the outer one."""

    #: True when :meth:`left_inverse_multiply` exists.
    has_inverse: ClassVar[bool] = False

    @property
    def inner_geometry(self) -> Geometry:
        """Geometry on the central side (default: the outer geometry)."""
        return self.geometry

    @property
    def inner_variables(self) -> Variables:
        """Variables on the central side (default: the outer variables)."""
        return self.variables

    @abstractmethod
    def multiply(self, fields: FieldSet) -> FieldSet:
        """:math:`\\mathbf{U} x`: inner → outer."""

    @abstractmethod
    def multiply_ad(self, fields: FieldSet) -> FieldSet:
        """:math:`\\mathbf{U}^\\mathsf{T} y`: outer → inner."""

    def left_inverse_multiply(self, fields: FieldSet) -> FieldSet:
        """:math:`\\mathbf{U}^{-1} y` (a left inverse): outer → inner."""
        raise ConfigError(f"block '{self.name}' has no left inverse", self.context.path)
