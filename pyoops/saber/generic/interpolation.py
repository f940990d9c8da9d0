r"""``interpolation``: an outer block between two structured grids of different resolution.

The block maps fields on an *inner* (usually coarser) geometry to the block's
*outer* geometry (the one nearer the model) by the sparse linear (bilinear in
2-D) interpolation of :meth:`pyoops.generic.grid.StructuredGrid.interpolation_matrix`:

.. math::

    \mathbf{U} = \mathbf{W} \in \mathbb{R}^{n_\mathrm{outer} \times n_\mathrm{inner}},
    \qquad
    \mathbf{W}_{ij} = \text{weight of inner point } j \text{ at outer grid point } i .

The adjoint is the exact sparse transpose :math:`\mathbf{W}^\mathsf{T}`, and the
left inverse is the least-squares fit

.. math::

    \mathbf{U}^{-1} = (\mathbf{W}^\mathsf{T}\mathbf{W})^{-1}\mathbf{W}^\mathsf{T},
    \qquad \mathbf{U}^{-1}\mathbf{U} = \mathbf{I}_\mathrm{inner},

solved with a sparse LU factorisation of the small, sparse, symmetric positive
definite :math:`\mathbf{W}^\mathsf{T}\mathbf{W}` (it is SPD whenever
:math:`\mathbf{W}` has full column rank, e.g. when the inner grid is coarser).
It is a *left* inverse: :math:`\mathbf{U}\mathbf{U}^{-1}` is only the orthogonal
projection onto the range of :math:`\mathbf{U}`.  When :math:`\mathbf{W}^\mathsf{T}\mathbf{W}`
is singular (inner grid finer than the outer one) the block has no left inverse:
ensembles cannot be brought inwards through it.

YAML (Lorenz-96 at 40 points, covariance built at 20 points)::

    saber outer blocks:
    - saber block name: interpolation
      inner geometry: {resol: 20}

The ``inner geometry`` mapping is the model plugin's geometry section; it is
built with ``model_plugin.geometry`` (the class registered by ``model plugin:``).
Without a model plugin (Python use, tests), ``inner geometry`` may be an
already-built :class:`~pyoops.interface.geometry.Geometry`, or the block context
may carry a builder in ``context.extras["geometry factory"]`` (a callable
``(config, path) -> Geometry``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from pydantic import Field

from pyoops.config.parameters import validate
from pyoops.fields.fieldset import FieldSet
from pyoops.interface.geometry import Geometry
from pyoops.saber.blocks import BlockContext, SaberBlockParameters, SaberOuterBlock
from pyoops.util.errors import ConfigError, join_path
from pyoops.util.variables import Variables

__all__ = ["Interpolation", "InterpolationParameters", "build_geometry"]


class InterpolationParameters(SaberBlockParameters):
    """Keys of the ``interpolation`` block."""

    saber_block_name: Literal["interpolation"]
    inner_geometry: Any = Field(
        description="Geometry of the inner (central-side) grid: the model plugin's geometry section, e.g. "
                    "{resol: 20} for Lorenz-96 (or a Geometry object in Python).")


def build_geometry(config: Any, context: BlockContext, path: str) -> Geometry:
    """Build a geometry from a YAML section, as the model plugin would.

    Parameters
    ----------
    config:
        The geometry section (a mapping), or an already-built
        :class:`~pyoops.interface.geometry.Geometry` (returned as is).
    context:
        The block context: ``context.model_plugin.geometry`` is the geometry class;
        without a model plugin, ``context.extras["geometry factory"]`` (a callable
        ``(config, path) -> Geometry``) is used if present.
    path:
        YAML path of the section, for error messages.
    """
    if isinstance(config, Geometry):
        return config
    if not isinstance(config, dict):
        raise ConfigError(f"expected a geometry section (a mapping), got {config!r}", path)
    plugin = context.model_plugin
    if plugin is not None and getattr(plugin, "geometry", None) is not None:
        cls = plugin.geometry
        params_cls = getattr(cls, "Parameters", None)
        if params_cls is None:
            raise ConfigError(f"the geometry class {cls.__name__} of model plugin "
                              f"'{getattr(plugin, 'name', '?')}' declares no Parameters", path)
        return cls(validate(params_cls, config, path))
    factory = context.extras.get("geometry factory")
    if factory is not None:
        return factory(config, path)
    raise ConfigError("cannot build this geometry: no model plugin is known (give the top-level key "
                      "'model plugin:'), and no Geometry object was given", path)


def _axes_signature(geometry: Any) -> dict[str, tuple[float, float, bool, bool]]:
    return {a.name: (float(a.lower), float(a.upper), bool(a.periodic), bool(a.horizontal)) for a in geometry.axes}


class Interpolation(SaberOuterBlock):
    r"""``interpolation``: :math:`\mathbf{U} = \mathbf{W}` from the inner grid to the outer grid.

    Parameters
    ----------
    params:
        Validated :class:`InterpolationParameters`.
    context:
        Block context; :attr:`~pyoops.saber.blocks.BlockContext.geometry` is the outer geometry.

    Notes
    -----
    * :meth:`multiply`: :math:`y = \mathbf{W}x` (inner → outer), sparse, cost
      :math:`O(2^d\, n_\mathrm{outer})` per field.
    * :meth:`multiply_ad`: :math:`x = \mathbf{W}^\mathsf{T} y`, the exact adjoint.
    * :meth:`left_inverse_multiply`: :math:`x = (\mathbf{W}^\mathsf{T}\mathbf{W})^{-1}
      \mathbf{W}^\mathsf{T} y`, with :math:`\mathbf{U}^{-1}\mathbf{U} = \mathbf{I}`.

    Leading batch (member) axes are carried through every method.  Both grids must
    be :class:`~pyoops.generic.grid.StructuredGrid` geometries with the same axes
    (names, domain bounds, periodicity) and identical level axes: only the number
    of horizontal points differs.
    """

    Parameters = InterpolationParameters

    def __init__(self, params: InterpolationParameters, context: BlockContext):
        super().__init__(params, context)
        path = join_path(context.path, "inner geometry")
        self._inner = build_geometry(params.inner_geometry, context, path)
        outer = self.geometry
        for name, g in (("outer", outer), ("inner", self._inner)):
            if not hasattr(g, "interpolation_matrix") or not hasattr(g, "axes"):
                raise ConfigError(f"the {name} geometry {type(g).__name__} is not a structured grid "
                                  "(no interpolation_matrix)", path)
        sig_out, sig_in = _axes_signature(outer), _axes_signature(self._inner)
        if set(sig_out) != set(sig_in):
            raise ConfigError(f"inner geometry mismatch: the inner grid has axes {sorted(sig_in)}, the outer grid "
                              f"{sorted(sig_out)}; they must have the same axes", path)
        for name in sig_out:
            if sig_out[name] != sig_in[name]:
                lo, hi, per, _ = sig_in[name]
                olo, ohi, oper, _ = sig_out[name]
                raise ConfigError(f"inner geometry mismatch on axis '{name}': inner domain [{lo}, {hi}] "
                                  f"(periodic: {per}), outer domain [{olo}, {ohi}] (periodic: {oper})", path)
            if not sig_out[name][3]:
                pin, pout = self._inner.axis(name).points, outer.axis(name).points
                if pin.shape != pout.shape or not np.array_equal(pin, pout):
                    raise ConfigError(f"inner geometry mismatch: level axis '{name}' must be identical on both "
                                      "grids (no vertical interpolation)", path)
        for v in self.variables:
            if outer.field_shape(v) != tuple(outer.shape) or self._inner.field_shape(v) != tuple(self._inner.shape):
                raise ConfigError(f"variable '{v}' is not a full-grid field; interpolation supports grid fields "
                                  "only", path)
        self._outer_shape = tuple(outer.shape)
        self._inner_shape = tuple(self._inner.shape)
        self.matrix: sp.csr_matrix = self._inner.interpolation_matrix(outer.grid_locations()).tocsr()
        self.matrix_t: sp.csr_matrix = self.matrix.T.tocsr()
        self._lu: Any = None
        normal = (self.matrix_t @ self.matrix).tocsc()
        if self.matrix.shape[0] >= self.matrix.shape[1]:
            try:
                lu = spla.splu(normal)
                pivots = np.abs(lu.U.diagonal())
                if pivots.min() > 1e-10 * pivots.max():
                    self._lu = lu
            except RuntimeError:  # exactly singular
                self._lu = None

    def inverse_unavailable(self) -> str | None:
        r"""No left inverse when :math:`\mathbf{W}^\mathsf{T}\mathbf{W}` is singular (inner grid finer than outer)."""
        if self._lu is None:
            return "interpolation has no left inverse: W^T W is singular (the inner grid is finer than the outer one)"
        return super().inverse_unavailable()

    # Geometry --------------------------------------------------------------------------------
    @property
    def inner_geometry(self) -> Geometry:
        """The inner (central-side) geometry."""
        return self._inner

    @property
    def inner_variables(self) -> Variables:
        """The same variables as on the outer side."""
        return Variables(self.variables)

    # Operators -------------------------------------------------------------------------------
    @staticmethod
    def _apply(matrix: sp.csr_matrix, arr: np.ndarray, src: tuple[int, ...], dst: tuple[int, ...]) -> np.ndarray:
        if arr.shape[arr.ndim - len(src):] != src:
            raise ValueError(f"field of shape {arr.shape} does not end with the grid shape {src}")
        batch = arr.shape[: arr.ndim - len(src)]
        flat = arr.reshape((-1, int(np.prod(src))))
        return np.asarray(matrix @ flat.T).T.reshape(batch + dst)

    def multiply(self, fields: FieldSet) -> FieldSet:
        r""":math:`\mathbf{W}x`: inner grid → outer grid."""
        return FieldSet({v: self._apply(self.matrix, a, self._inner_shape, self._outer_shape)
                         for v, a in fields.items()}, copy=False)

    def multiply_ad(self, fields: FieldSet) -> FieldSet:
        r""":math:`\mathbf{W}^\mathsf{T} y`: outer grid → inner grid (exact adjoint)."""
        return FieldSet({v: self._apply(self.matrix_t, a, self._outer_shape, self._inner_shape)
                         for v, a in fields.items()}, copy=False)

    def left_inverse_multiply(self, fields: FieldSet) -> FieldSet:
        r""":math:`(\mathbf{W}^\mathsf{T}\mathbf{W})^{-1}\mathbf{W}^\mathsf{T} y`: least squares on the inner grid."""
        if self._lu is None:
            raise ConfigError(self.inverse_unavailable(), self.context.path)
        out = {}
        n_in = int(np.prod(self._inner_shape))
        for v, a in fields.items():
            rhs = self._apply(self.matrix_t, a, self._outer_shape, self._inner_shape)
            batch = rhs.shape[: rhs.ndim - len(self._inner_shape)]
            flat = np.asfortranarray(rhs.reshape((-1, n_in)).T)
            out[v] = self._lu.solve(flat).T.reshape(batch + self._inner_shape)
        return FieldSet(out, copy=False)
