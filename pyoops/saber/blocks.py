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
    "SaberBlock",
    "SaberBlockParameters",
    "SaberCentralBlock",
    "SaberOuterBlock",
    "call_batched",
    "overrides",
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

    def without_ensemble(self) -> "BlockContext":
        """This context with its ensemble released (what a built chain leaves its blocks: see
        :class:`~pyoops.saber.chain.SaberBlockChain`)."""
        extras = {**self.extras, "ensemble released": self.ensemble is not None}
        return replace(self, ensemble=None, extras=extras)

    def ensemble_perturbations(self) -> FieldSet:
        """Members minus their mean (or the perturbations as given); an error if there is no ensemble."""
        if self.ensemble is None:
            if self.extras.get("ensemble released"):
                raise RuntimeError(f"{self.path}: the ensemble was released when the chain was built; a block uses "
                                   "it in its constructor, read or direct_calibration and keeps what it needs")
            dropped = self.extras.get("ensemble dropped at")
            if dropped:
                raise ConfigError(f"this block needs an ensemble, but the ensemble could not be brought inwards "
                                  f"through the outer block {dropped}", self.path)
            raise ConfigError("this block needs an ensemble: give 'ensemble' (or 'ensemble pert') in the "
                              "covariance section", self.path)
        if self.ensemble_is_perturbations:
            return self.ensemble
        return self.ensemble.map(lambda a: a - a.mean(axis=0, keepdims=True))


def call_batched(func: Any, block: Any, fields: FieldSet) -> FieldSet:
    """``func(fields)``, looping over the leading member axes when ``block.supports_batch`` is False.

    This is how the chain calls every block method that takes FieldSets.
    """
    if getattr(block, "supports_batch", True) or not len(fields):
        return func(fields)
    geometry = getattr(block, "geometry", None)
    shapes = {v: geometry.field_shape(v) for v in fields} if geometry is not None else {}
    try:
        batch = fields.batch_shape(shapes)
    except KeyError:
        batch = ()
    if not batch:
        return func(fields)
    flat = fields.map(lambda a: a.reshape((-1,) + a.shape[len(batch):]))
    results = [func(flat.map(lambda a, i=i: a[i])) for i in range(int(np.prod(batch)))]
    return FieldSet({k: np.stack([r[k] for r in results]).reshape(batch + results[0][k].shape)
                     for k in results[0]}, copy=False)


def overrides(cls: type, base: type, name: str) -> bool:
    """True when ``cls`` defines ``name`` itself or inherits it from a class below ``base``."""
    for klass in cls.__mro__:
        if klass is base:
            return False
        if name in klass.__dict__:
            return True
    return False


class SaberBlock:
    """What central and outer blocks share: parameters, context, data hooks, helpers.

    A block is built with its validated :attr:`Parameters` and a :class:`BlockContext`;
    the base ``__init__`` stores them and calls :meth:`read` (``read:`` given) or
    :meth:`direct_calibration` (``calibration:`` given).  Subclass
    :class:`SaberCentralBlock` or :class:`SaberOuterBlock`, not this class.

    Capabilities are derived from the methods a block overrides: a central block that
    overrides :meth:`SaberCentralBlock.multiply_sqrt` has a square root, an outer block
    that overrides :meth:`SaberOuterBlock.left_inverse_multiply` has a left inverse.  A
    block whose capability depends on its configuration (an even diffusion exponent, a
    localization with a square root) says so by overriding
    :meth:`SaberCentralBlock.sqrt_unavailable` or
    :meth:`SaberOuterBlock.inverse_unavailable`, which return the reason, or ``None``.
    """

    Parameters: ClassVar[type[SaberBlockParameters]] = SaberBlockParameters

    #: Whether ``multiply`` and friends accept leading batch axes; if False the
    #: chain loops over members.
    supports_batch: ClassVar[bool] = True

    #: Legacy capability flags (``has_sqrt``, ``has_inverse``) a subclass set to False
    #: although it overrides the method; see :meth:`__init_subclass__`.
    _disabled_by_flag: ClassVar[frozenset[str]] = frozenset()

    #: ``{flag: (method, ...)}``: the legacy flag of each capability and the methods it needs.
    _capabilities: ClassVar[dict[str, tuple[str, ...]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check the capability methods of a new block class (a plugin-definition check).

        Overriding only part of a capability (``multiply_sqrt`` without
        ``multiply_sqrt_ad``, say) is a :class:`TypeError` when the class is defined.
        The flags ``has_sqrt``/``has_inverse`` of earlier versions are still read: ``True``
        without the method is a :class:`TypeError`, ``False`` switches the capability off.
        """
        super().__init_subclass__(**kwargs)
        if "_capabilities" in cls.__dict__:  # SaberCentralBlock, SaberOuterBlock themselves
            return
        base = next((k for k in cls.__mro__ if "_capabilities" in k.__dict__), None)
        if base is None or base is SaberBlock:
            return
        disabled = set(cls._disabled_by_flag)
        for flag, methods in cls._capabilities.items():
            done = [m for m in methods if overrides(cls, base, m)]
            if done and len(done) != len(methods):
                missing = [m for m in methods if m not in done]
                raise TypeError(f"SABER block class {cls.__module__}.{cls.__qualname__} overrides {done} but not "
                                f"{missing}: a block that implements one must implement all of {list(methods)}")
            value = cls.__dict__.get(flag)
            if isinstance(value, bool):
                if value and not done:
                    raise TypeError(f"SABER block class {cls.__module__}.{cls.__qualname__} sets {flag} = True but "
                                    f"does not implement {list(methods)}; capabilities come from the methods a "
                                    f"block overrides: remove the flag and implement them")
                if value:
                    disabled.discard(flag)
                else:
                    disabled.add(flag)
                delattr(cls, flag)  # the derived property of the base class answers from now on
        cls._disabled_by_flag = frozenset(disabled)

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
        """The block's ``saber block name``."""
        return self.params.saber_block_name

    def _unavailable(self, flag: str, base: type) -> str | None:
        methods = self._capabilities[flag]
        if not overrides(type(self), base, methods[0]):
            return f"block '{self.name}' does not implement {methods[0]}"
        if flag in self._disabled_by_flag:
            return f"block '{self.name}' sets {flag} = False"
        return None

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
        """Zero fields of ``variables`` (default: the block's) on ``geometry`` (default: the outer one)."""
        geometry = geometry or self.geometry
        return geometry.zeros(Variables(variables if variables is not None else self.variables), batch_shape)


class SaberCentralBlock(SaberBlock, ABC):
    """A symmetric positive (semi-)definite operator :math:`\\mathbf{C}` on one geometry.

    Required: :meth:`multiply`.  Optional square root: :meth:`multiply_sqrt` maps a
    control vector :math:`v \\in \\mathbb{R}^m` (:attr:`ctl_vec_size` = m, with leading
    batch axes) to fields, :meth:`multiply_sqrt_ad` is its adjoint, and

    .. math::

        \\mathbf{C} = \\mathbf{C}^{1/2}\\,\\mathbf{C}^{1/2\\,\\mathsf{T}}.

    A block that overrides the three has a square root (:attr:`has_sqrt`); it can then
    be the central block of B-preconditioned minimisers, and :meth:`randomize` draws
    :math:`\\mathbf{C}^{1/2}\\xi`, :math:`\\xi \\sim \\mathcal{N}(0, \\mathbf{I}_m)`.
    """

    _capabilities: ClassVar[dict[str, tuple[str, ...]]] = {
        "has_sqrt": ("multiply_sqrt", "multiply_sqrt_ad", "ctl_vec_size")}

    @abstractmethod
    def multiply(self, fields: FieldSet) -> FieldSet:
        """:math:`\\mathbf{C} x`."""

    def sqrt_unavailable(self) -> str | None:
        """Why this block has no square root, or ``None`` when it has one.

        Default: the reason is that :meth:`multiply_sqrt` is not overridden.  Override it
        (calling ``super()``) when the square root depends on the configuration.
        """
        return self._unavailable("has_sqrt", SaberCentralBlock)

    @property
    def has_sqrt(self) -> bool:
        """True when :meth:`multiply_sqrt`, :meth:`multiply_sqrt_ad` and :attr:`ctl_vec_size` can be used."""
        return self.sqrt_unavailable() is None

    def randomize_unavailable(self) -> str | None:
        """Why :meth:`randomize` cannot draw, or ``None`` (a block overriding it can always draw)."""
        if overrides(type(self), SaberCentralBlock, "randomize"):
            return None
        reason = self.sqrt_unavailable()
        return None if reason is None else f"{reason}, and randomize draws through the square root"

    def _no_sqrt(self) -> ConfigError:
        return ConfigError(self.sqrt_unavailable() or f"block '{self.name}' has no square root", self.context.path)

    @property
    def ctl_vec_size(self) -> int:
        """Length :math:`m` of the control vector of :meth:`multiply_sqrt`."""
        raise self._no_sqrt()

    def multiply_sqrt(self, ctl: np.ndarray) -> FieldSet:
        """:math:`\\mathbf{C}^{1/2} v` for a control vector ``ctl`` of shape ``(..., ctl_vec_size)``."""
        raise self._no_sqrt()

    def multiply_sqrt_ad(self, fields: FieldSet) -> np.ndarray:
        """:math:`\\mathbf{C}^{1/2\\,\\mathsf{T}} x`, shape ``(..., ctl_vec_size)``."""
        raise self._no_sqrt()

    def nested_covariances(self) -> dict[str, Any]:
        """Named nested chains worth looking at on their own (Hybrid components, localizations).

        The ``dirac`` application applies each to the impulses; default: none.
        """
        return {}

    def randomize(self, rng: np.random.Generator, batch_shape: tuple[int, ...] = ()) -> FieldSet:
        """A draw from :math:`\\mathcal{N}(0, \\mathbf{C})` (default: :math:`\\mathbf{C}^{1/2}\\xi`)."""
        reason = self.randomize_unavailable()
        if reason is not None:
            raise ConfigError(f"cannot randomize: {reason}", self.context.path)
        return self.multiply_sqrt(rng.standard_normal(tuple(batch_shape) + (self.ctl_vec_size,)))


class SaberOuterBlock(SaberBlock, ABC):
    """A linear map :math:`\\mathbf{U}` from the inner space (geometry, variables) to the outer one.

    Required: :meth:`multiply` (inner → outer) and :meth:`multiply_ad` (its adjoint,
    outer → inner).  Optional: :meth:`left_inverse_multiply`, a left inverse
    :math:`\\mathbf{U}^{-1}` with :math:`\\mathbf{U}^{-1}\\mathbf{U} = \\mathbf{I}`; it lets
    ensembles pass inwards (:attr:`has_inverse`).  A block that changes the space
    overrides :attr:`inner_geometry` and/or :attr:`inner_variables`.
    """

    _capabilities: ClassVar[dict[str, tuple[str, ...]]] = {"has_inverse": ("left_inverse_multiply",)}

    @property
    def inner_geometry(self) -> Geometry:
        """Geometry on the central side; by default the outer geometry."""
        return self.geometry

    @property
    def inner_variables(self) -> Variables:
        """Variables on the central side; by default the outer variables."""
        return self.variables

    @abstractmethod
    def multiply(self, fields: FieldSet) -> FieldSet:
        """:math:`\\mathbf{U} x`: inner → outer."""

    @abstractmethod
    def multiply_ad(self, fields: FieldSet) -> FieldSet:
        """:math:`\\mathbf{U}^\\mathsf{T} y`: outer → inner."""

    def inverse_unavailable(self) -> str | None:
        """Why this block has no left inverse, or ``None`` when it has one.

        Default: the reason is that :meth:`left_inverse_multiply` is not overridden.
        Override it (calling ``super()``) when the inverse depends on the configuration.
        """
        return self._unavailable("has_inverse", SaberOuterBlock)

    @property
    def has_inverse(self) -> bool:
        """True when :meth:`left_inverse_multiply` can be used."""
        return self.inverse_unavailable() is None

    def left_inverse_multiply(self, fields: FieldSet) -> FieldSet:
        """:math:`\\mathbf{U}^{-1} y` (a left inverse): outer → inner."""
        raise ConfigError(self.inverse_unavailable() or f"block '{self.name}' has no left inverse", self.context.path)
