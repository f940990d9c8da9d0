"""SABER block chains and the ErrorCovariance built from them.

``covariance model: SABER`` with ``saber central block`` and ``saber outer
blocks`` builds a :class:`SaberBlockChain`; :class:`ErrorCovariance` wraps it
for Increments.  Construction-time tests (``adjoint test``, ``square-root
test``, ``inverse test``) run here, as in SABER, with seeded random vectors.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from pydantic import Field

from pyoops.config.parameters import Parameters, validate
from pyoops.fields.fieldset import FieldSet
from pyoops.generic.ensemble import EnsembleSourceParameters, read_ensemble
from pyoops.saber.blocks import (
    BlockContext,
    SaberBlockParameters,
    SaberCentralBlock,
    SaberOuterBlock,
    call_batched,
)
from pyoops.saber.checks import (
    BlockCheck,
    adjoint_check,
    inverse_check,
    left_inverse_check,
    square_root_check,
    symmetry_check,
)
from pyoops.util.errors import ConfigError, join_path
from pyoops.util.random import generator
from pyoops.util.variables import Variables

logger = logging.getLogger("pyoops")

__all__ = [
    "ErrorCovariance",
    "SaberBlockChain",
    "SaberCovarianceParameters",
    "build_covariance",
    "validate_covariance",
]


class SaberCovarianceParameters(Parameters):
    """A ``background error`` (or Hybrid component / localization) section."""

    covariance_model: Literal["SABER"] = Field("SABER", description="Only 'SABER' chains are supported.")
    saber_central_block: dict[str, Any] = Field(description="The central block {saber block name: ..., ...}.")
    saber_outer_blocks: list[dict[str, Any]] = Field(
        default_factory=list, description="Outer blocks, from the central block outwards (last touches the model).")
    ensemble: EnsembleSourceParameters | None = Field(None, description="Ensemble members (states).")
    ensemble_pert: EnsembleSourceParameters | None = Field(None, description="Ensemble perturbations.")


class SaberBlockChain:
    """A central block and its outer blocks, applied as :math:`\\mathbf{U}\\mathbf{C}\\mathbf{U}^\\mathsf{T}`.

    The ensemble (read from the section's ``ensemble``, or handed in by ``context``) is brought
    inwards through the outer blocks' left inverses for the blocks to read and calibrate from while
    they are built; the built chain then releases it from every block's context
    (:meth:`~pyoops.saber.blocks.BlockContext.without_ensemble`): the chain holds only what its
    blocks keep (the ``Ensemble`` block: its scaled perturbations, one copy of the members).

    Parameters
    ----------
    config:
        The covariance section (a mapping or :class:`SaberCovarianceParameters`).
    context:
        Context on the *model* side: geometry and variables the chain acts on.
    path:
        YAML path of the section.
    """

    def __init__(self, config: Any, context: BlockContext, path: str = "background error"):
        params = config if isinstance(config, SaberCovarianceParameters) else validate(
            SaberCovarianceParameters, config, path)
        self.params = params
        self.path = path
        #: The construction-time tests that ran (``adjoint test: true``, ...), in order.
        self.test_results: list[BlockCheck] = []
        self.geometry = context.geometry
        self.variables = Variables(context.variables)
        registry = context.registry
        factory = registry.saber_block

        ensemble, is_pert = context.ensemble, context.ensemble_is_perturbations
        if params.ensemble is not None and params.ensemble_pert is not None:
            raise ConfigError("give either 'ensemble' or 'ensemble pert', not both", path)
        source = params.ensemble or params.ensemble_pert
        if source is not None:
            key = "ensemble" if params.ensemble is not None else "ensemble pert"
            ensemble = read_ensemble(source, context.geometry, self.variables, context.time, join_path(path, key))
            is_pert = params.ensemble_pert is not None

        # Outer blocks, built from the model inwards: the last listed touches the model.
        self.outer: list[tuple[SaberOuterBlock, Variables]] = []  # (block, passive variables), model side first
        ctx = BlockContext(context.geometry, self.variables, context.time, registry, context.model_plugin,
                           ensemble, is_pert, path, dict(context.extras))
        for i in reversed(range(len(params.saber_outer_blocks))):
            cfg = params.saber_outer_blocks[i]
            bpath = join_path(path, "saber outer blocks", i)
            cls = factory.maker_for(cfg, bpath)
            if not issubclass(cls, SaberOuterBlock):
                raise ConfigError(f"'{cls.__name__}' is a central block, it cannot be an outer block",
                                  join_path(bpath, "saber block name"))
            bparams = factory.parameters(cfg, bpath)
            active, passive = self._split(bparams, ctx.variables, bpath)
            block_ctx = ctx.inner(ctx.geometry, active, _subset(ctx.ensemble, active), bpath)
            block = cls(bparams, block_ctx)
            inner_vars = Variables(block.inner_variables) + passive
            if passive and not block.inner_geometry.same_as(ctx.geometry):
                raise ConfigError("'active variables' must cover every variable when the block changes the "
                                  "geometry", join_path(bpath, "active variables"))
            inner_ensemble = None
            if ctx.ensemble is not None and block.has_inverse and not bparams.skip_inverse:
                inner_ensemble = _merge(block.left_inverse_multiply(_subset(ctx.ensemble, active)),
                                        _subset(ctx.ensemble, passive))
            elif ctx.ensemble is not None:
                inner_ensemble = None
                why = "'skip inverse' is set" if bparams.skip_inverse else "it has no left inverse"
                ctx.extras["ensemble dropped at"] = f"{bpath} ('{bparams.saber_block_name}': {why})"
            self._run_outer_tests(block, bparams, bpath)
            self.outer.append((block, passive))
            ctx = ctx.inner(block.inner_geometry, inner_vars, inner_ensemble, path)

        cpath = join_path(path, "saber central block")
        cls = factory.maker_for(params.saber_central_block, cpath)
        if not issubclass(cls, SaberCentralBlock):
            raise ConfigError(f"'{cls.__name__}' is an outer block, it cannot be the central block",
                              join_path(cpath, "saber block name"))
        cparams = factory.parameters(params.saber_central_block, cpath)
        active, passive = self._split(cparams, ctx.variables, cpath)
        self.central_passive = passive
        self.central_geometry = ctx.geometry
        self.central_variables = ctx.variables
        self.central = cls(cparams, ctx.inner(ctx.geometry, active, _subset(ctx.ensemble, active), cpath))
        self._run_central_tests(self.central, cparams, cpath)
        # Built: the blocks have read and calibrated from the ensemble; the members as given, and their
        # copies brought through the outer blocks' inverses, are released (what a block needs it keeps,
        # e.g. the Ensemble block's scaled perturbations).
        for block in [b for b, _ in self.outer] + [self.central]:
            if isinstance(getattr(block, "context", None), BlockContext):
                block.context = block.context.without_ensemble()

    @staticmethod
    def _split(params: SaberBlockParameters, variables: Variables, path: str) -> tuple[Variables, Variables]:
        if params.active_variables is None:
            return Variables(variables), Variables()
        active = Variables(params.active_variables)
        unknown = active - variables
        if unknown:
            raise ConfigError(f"active variables {unknown} do not reach this block (available: {variables})",
                              join_path(path, "active variables"))
        return active, variables - active

    # Application ----------------------------------------------------------------------------
    def _apply_outer_ad(self, fields: FieldSet) -> FieldSet:
        for block, passive in self.outer:  # model side first
            active = fields.subset(Variables(fields.variables) - passive)
            fields = _merge(call_batched(block.multiply_ad, block, active), fields.subset(passive))
        return fields

    def _apply_outer(self, fields: FieldSet) -> FieldSet:
        for block, passive in reversed(self.outer):  # central side first
            active = fields.subset(Variables(fields.variables) - passive)
            fields = _merge(call_batched(block.multiply, block, active), fields.subset(passive))
        return fields

    def _apply_central(self, fields: FieldSet) -> FieldSet:
        active = fields.subset(Variables(fields.variables) - self.central_passive)
        out = call_batched(self.central.multiply, self.central, active)
        return _merge(out, fields.subset(self.central_passive).zeros_like())

    def multiply(self, fields: FieldSet) -> FieldSet:
        """:math:`\\mathbf{B} x` on the model side (leading batch axes allowed)."""
        fields = self._reorder(fields)
        return self._reorder(self._apply_outer(self._apply_central(self._apply_outer_ad(fields))))

    def multiply_4d(self, fields: FieldSet) -> FieldSet:
        """:math:`\\mathbf{B}` on 4-D increments ``(*batch, time, *grid)`` (4D-Ens-Var).

        A central block with 4-D ensemble members (attribute ``ntimes``: ``Ensemble`` with
        ``states`` per member, or a ``Hybrid`` holding one) couples the times; any other
        covariance is time-constant, :math:`(\\mathbf{B}x)_t = \\mathbf{B}\\sum_s x_s`.
        """
        fields = self._reorder(fields)
        axis = {a.ndim - len(self.geometry.field_shape(v)) - 1 for v, a in fields.items()}.pop()
        nt = {a.shape[axis] for a in fields.values()}.pop()
        ntimes = getattr(self.central, "ntimes", None)
        if ntimes is not None:
            if nt != ntimes:
                raise ConfigError(f"the 4-D ensemble has {ntimes} times, the increment {nt}", self.path)
            return self.multiply(fields)
        out = self.multiply(fields.map(lambda a: a.sum(axis=axis)))
        return out.map(lambda a: np.broadcast_to(np.expand_dims(a, axis), a.shape[:axis] + (nt,) +
                                                 a.shape[axis:]).copy())

    def _reorder(self, fields: FieldSet) -> FieldSet:
        return fields.subset([v for v in self.variables if v in fields] +
                             [v for v in fields if v not in self.variables])

    def sqrt_unavailable(self) -> str | None:
        """Why :math:`\\mathbf{B}` has no square root here, or ``None``."""
        if self.central_passive:
            return (f"variables {self.central_passive} are passive at the central block (their covariance is zero), "
                    "so B has no square root")
        return self.central.sqrt_unavailable()

    @property
    def has_sqrt(self) -> bool:
        """True when :meth:`multiply_sqrt` can be used: the central block has a square root, nothing is passive."""
        return self.sqrt_unavailable() is None

    def randomize_unavailable(self) -> str | None:
        """Why :meth:`randomize` cannot draw, or ``None``."""
        return self.central.randomize_unavailable()

    @property
    def ctl_vec_size(self) -> int:
        return self.central.ctl_vec_size

    def multiply_sqrt(self, ctl: np.ndarray) -> FieldSet:
        """:math:`\\mathbf{B}^{1/2} v = \\mathbf{U}\\mathbf{C}^{1/2} v`."""
        if not self.has_sqrt:
            raise ConfigError(f"this covariance has no square root: {self.sqrt_unavailable()}", self.path)
        return self._apply_outer(self.central.multiply_sqrt(np.asarray(ctl, dtype=np.float64)))

    def multiply_sqrt_ad(self, fields: FieldSet) -> np.ndarray:
        """:math:`\\mathbf{B}^{1/2\\,\\mathsf{T}} x = \\mathbf{C}^{1/2\\,\\mathsf{T}}\\mathbf{U}^\\mathsf{T} x`."""
        if not self.has_sqrt:
            raise ConfigError(f"this covariance has no square root: {self.sqrt_unavailable()}", self.path)
        return self.central.multiply_sqrt_ad(self._apply_outer_ad(self._reorder(fields)))

    def nested(self, prefix: str = "") -> dict[str, "SaberBlockChain"]:
        """Every nested chain below this one (Hybrid components, localizations), by dotted name."""
        out: dict[str, SaberBlockChain] = {}
        for name, chain in self.central.nested_covariances().items():
            full = f"{prefix}.{name}" if prefix else name
            out[full] = chain
            out.update(chain.nested(full))
        return out

    def randomize(self, rng: np.random.Generator, batch_shape: tuple[int, ...] = ()) -> FieldSet:
        """Draws from :math:`\\mathcal{N}(0, \\mathbf{B})` with leading ``batch_shape``."""
        inner = self.central.randomize(rng, batch_shape)
        if self.central_passive:
            inner = _merge(inner, self.central_geometry.zeros(self.central_passive, batch_shape))
        return self._reorder(self._apply_outer(inner))

    # Construction-time tests --------------------------------------------------------------------
    def _require(self, check: BlockCheck, key: str) -> BlockCheck:
        """``check`` as the answer to ``key: true``: an error when it failed or could not run."""
        if check.skipped is not None:
            raise ConfigError(f"'{key}: true' asks for a test this block cannot run: {check.skipped}",
                              join_path(check.where, key))
        if not check.passed:
            raise ConfigError(check.message(), check.where)
        logger.info("%s: %s", check.where, check.message())
        self.test_results.append(check)
        return check

    def _run_outer_tests(self, block: SaberOuterBlock, params: SaberBlockParameters, path: str) -> None:
        rng = generator(0, "saber block test", path)
        if params.adjoint_test:
            self._require(adjoint_check(block, rng, params.adjoint_tolerance, path), "adjoint test")
        if params.inverse_test:
            if params.skip_inverse:
                raise ConfigError("'inverse test: true' and 'skip inverse: true' contradict each other",
                                  join_path(path, "inverse test"))
            self._require(left_inverse_check(block, rng, params.inner_inverse_tolerance, path), "inverse test")
            two_sided = inverse_check(block, rng, params.outer_inverse_tolerance, path)
            if two_sided.skipped is None:  # U is square: U U^-1 = I must hold as well
                self._require(two_sided, "inverse test")
        if params.square_root_test:
            raise ConfigError("an outer block has no square root to test (only central blocks do)",
                              join_path(path, "square-root test"))

    def _run_central_tests(self, block: SaberCentralBlock, params: SaberBlockParameters, path: str) -> None:
        rng = generator(0, "saber block test", path)
        if params.adjoint_test:
            self._require(symmetry_check(block, rng, params.adjoint_tolerance, path), "adjoint test")
        if params.square_root_test:
            self._require(square_root_check(block, rng, params.square_root_tolerance, path), "square-root test")
        if params.inverse_test:
            raise ConfigError("a central block has no left inverse to test (inverse tests are for outer blocks)",
                              join_path(path, "inverse test"))

    # Blocks -----------------------------------------------------------------------------------
    def blocks(self, nested: bool = True) -> list[tuple[str, Any]]:
        """``[(YAML path, block), ...]``: outer blocks from the model inwards, then the central block.

        With ``nested``, the blocks of nested chains (Hybrid components, localizations)
        follow the central block that holds them.
        """
        out: list[tuple[str, Any]] = [(b.context.path, b) for b, _ in self.outer]
        out.append((self.central.context.path, self.central))
        if nested:
            for chain in self.central.nested_covariances().values():
                out += chain.blocks(nested=True)
        return out


def _subset(fields: FieldSet | None, variables: Variables) -> FieldSet | None:
    if fields is None:
        return None
    return fields.subset([v for v in variables if v in fields])


def _merge(a: FieldSet | None, b: FieldSet | None) -> FieldSet:
    out = FieldSet(copy=False) if a is None else FieldSet(a, copy=False)
    if b is not None:
        for k, v in b.items():
            out[k] = v
    return out


class ErrorCovariance:
    """:math:`\\mathbf{B}` on Increments, built from a SABER chain.

    Parameters
    ----------
    config:
        The ``background error`` section with ``covariance model: SABER``.
    geometry, variables, time:
        Where the increments live.
    registry, model_plugin:
        For block factories and inner geometries.
    """

    def __init__(self, config: Any, geometry: Any, variables: Any, time: Any, registry: Any,
                 model_plugin: Any = None, path: str = "background error", ensemble: FieldSet | None = None,
                 ensemble_is_perturbations: bool = False):
        # ``ensemble``: members (or perturbations) held in memory, stacked on a leading axis, handed to
        # every block that has no 'ensemble' of its own (a cycling EDA feeds its members this way).
        context = BlockContext(geometry, Variables(variables), time, registry, model_plugin, ensemble,
                               ensemble_is_perturbations, path=path)
        self.chain = SaberBlockChain(config, context, path)
        self.geometry = geometry
        self.variables = Variables(variables)
        self.time = time

    def _increment(self, fields: FieldSet, like: Any = None) -> Any:
        from pyoops.generic.state import GenericIncrement

        cls = type(like) if like is not None else GenericIncrement
        time = like.time if like is not None else self.time
        if time is None:
            raise ValueError("this ErrorCovariance was built without a valid time: pass time= to make increments")
        return cls(self.geometry, fields, time)

    def multiply(self, dx: Any) -> Any:
        """:math:`\\mathbf{B}\\,\\delta x` (a new Increment)."""
        return self._increment(self.chain.multiply(dx.fields.copy()), dx)

    def randomize(self, rng: np.random.Generator, nmembers: int | None = None) -> Any:
        """One draw (or ``nmembers`` stacked draws) from :math:`\\mathcal{N}(0, \\mathbf{B})`."""
        batch = () if nmembers is None else (int(nmembers),)
        return self._increment(self.chain.randomize(rng, batch))

    @property
    def ctl_vec_size(self) -> int:
        return self.chain.ctl_vec_size

    def multiply_sqrt(self, ctl: np.ndarray) -> Any:
        """:math:`\\mathbf{B}^{1/2} v`."""
        return self._increment(self.chain.multiply_sqrt(ctl))

    def multiply_sqrt_ad(self, dx: Any) -> np.ndarray:
        """:math:`\\mathbf{B}^{1/2\\,\\mathsf{T}}\\delta x`."""
        return self.chain.multiply_sqrt_ad(dx.fields.copy())


def validate_covariance(config: Any, registry: Any, path: str = "background error") -> SaberCovarianceParameters:
    """Validate a covariance section and the parameters of its blocks, without building anything."""
    params = validate(SaberCovarianceParameters, config, path)
    factory = registry.saber_block
    cpath = join_path(path, "saber central block")
    factory.parameters(params.saber_central_block, cpath)
    for i, cfg in enumerate(params.saber_outer_blocks):
        factory.parameters(cfg, join_path(path, "saber outer blocks", i))
    return params


def build_covariance(config: Any, context: BlockContext, path: str) -> SaberBlockChain:
    """A chain for a nested covariance section (Hybrid component, localization)."""
    return SaberBlockChain(config, context, path)
