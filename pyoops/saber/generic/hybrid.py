r"""``Hybrid``: a weighted sum of covariance chains.

.. math::

    \mathbf{B} = \sum_{i=1}^{M} w_i^{1/2} \circ \mathbf{B}_i\big(w_i^{1/2} \circ x\big),

where every component :math:`\mathbf{B}_i` is a full covariance section (its own
``saber central block``, optional ``saber outer blocks`` and optional
``ensemble``/``ensemble pert``), built on the Hybrid block's geometry and
variables, and every weight :math:`w_i \ge 0` is a scalar (``value``), a field
(``file``: one field per variable) or their product.  The classic hybrid
:math:`(1-\beta)\mathbf{B}_s + \beta\mathbf{B}_e` is the two-component case.

Outer blocks common to all components are the outer blocks of the chain that
holds the Hybrid block; they are applied once, outside the sum:

.. code-block:: yaml

    background error:
      covariance model: SABER
      saber central block:
        saber block name: Hybrid
        components:
        - covariance:
            saber central block: {saber block name: spectral correlation, length scale: 0.1}
          weight: {value: 0.3}
        - covariance:
            ensemble pert: {filename: data/ens_pert_normalized.nc}
            saber central block:
              saber block name: Ensemble
              localization:
                saber central block: {saber block name: spectral correlation, length scale: 0.2}
          weight: {file: {filename: data/hybrid_weight.nc}}
      saber outer blocks:                 # common to both components: B = S (B_1 + B_2) S
      - saber block name: StdDev
        read: {value: 0.6}

An ensemble given in the parent chain (``ensemble:`` next to ``saber central
block: {saber block name: Hybrid}``) is brought inwards through the common outer
blocks and handed to every component that has no ensemble of its own.

4-D (4D-Ens-Var): when a component is an Ensemble with 4-D members (``ntimes``
times), the Hybrid acts on 4-D increments ``(..., time, *grid)``; the other
components are time-constant, :math:`(\mathbf{B}_i x)_t = \mathbf{B}_i \sum_s x_s`
(the static increment is the same at every time), i.e.
:math:`\mathbf{1}\mathbf{1}^\mathsf{T} \otimes \mathbf{B}_i`, with square root
:math:`\mathbf{1} \otimes \mathbf{B}_i^{1/2}`.

Square root: the control vector is the concatenation of the components' control
vectors, :math:`v = (v_1, \dots, v_M)` and
:math:`\mathbf{B}^{1/2} v = \sum_i w_i^{1/2} \circ \mathbf{B}_i^{1/2} v_i`; it exists
when every component has one.  Randomization sums independent draws
:math:`w_i^{1/2} \circ \xi_i` with :math:`\xi_i \sim \mathcal{N}(0, \mathbf{B}_i)`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from pyoops.config.parameters import DateTimeField, Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.fields.netcdf import read_fields
from pyoops.saber.blocks import BlockContext, SaberBlockParameters, SaberCentralBlock
from pyoops.util.errors import ConfigError, join_path

__all__ = ["HybridBlock", "HybridComponentParameters", "HybridParameters", "HybridWeightParameters",
           "WeightFileParameters"]


class WeightFileParameters(Parameters):
    """A weight field file: one field per variable, in the gridded-field netCDF layout."""

    filename: str = Field(description="netCDF file with one weight field per variable.")
    date: DateTimeField | None = Field(None, description="Valid time of the file (default: the covariance time).")


class HybridWeightParameters(Parameters):
    """``weight`` of a Hybrid component: a value, a field file, or both (their product)."""

    value: float | None = Field(None, ge=0, description="Scalar weight w >= 0.")
    file: str | WeightFileParameters | None = Field(
        None, description="Weight field file (a filename, or {filename, date}); one field per variable, >= 0.")

    @model_validator(mode="after")
    def _something(self) -> "HybridWeightParameters":
        if self.value is None and self.file is None:
            raise ValueError("give 'value' or 'file' (or both)")
        return self


class HybridComponentParameters(Parameters):
    """One Hybrid component."""

    covariance: dict[str, Any] = Field(
        description="A full covariance section: saber central block, optional saber outer blocks, optional "
                    "ensemble / ensemble pert.")
    weight: HybridWeightParameters = Field(description="{value: w} or {file: F}; B_i is weighted by w^1/2 B_i w^1/2.")


class HybridParameters(SaberBlockParameters):
    """Keys of the ``Hybrid`` central block."""

    saber_block_name: Literal["Hybrid"]
    components: list[HybridComponentParameters] = Field(
        min_length=1, description="Components [{covariance: {...}, weight: {...}}, ...] (at least one).")


class HybridBlock(SaberCentralBlock):
    r"""``Hybrid``: :math:`\mathbf{B} = \sum_i w_i^{1/2}\mathbf{B}_i w_i^{1/2}`.

    Parameters
    ----------
    params:
        Validated :class:`HybridParameters`.
    context:
        Block context; each component chain is built with it (same geometry, variables,
        time, registry, model plugin and inherited ensemble) under the path
        ``<path>.components[i].covariance``.

    Attributes
    ----------
    components:
        The component :class:`~pyoops.saber.chain.SaberBlockChain` objects.
    weights_sqrt:
        Per component, :math:`w_i^{1/2}`: a float, or a FieldSet of pointwise values.
    """

    Parameters = HybridParameters

    def __init__(self, params: HybridParameters, context: BlockContext):
        super().__init__(params, context)
        from pyoops.saber.chain import build_covariance

        self.components: list[Any] = []
        self.weights_sqrt: list[float | FieldSet] = []
        for i, comp in enumerate(params.components):
            cpath = join_path(context.path, "components", i)
            self.weights_sqrt.append(self._weight(comp.weight, join_path(cpath, "weight")))
            ctx = context.inner(self.geometry, self.variables, context.ensemble, join_path(cpath, "covariance"))
            self.components.append(build_covariance(comp.covariance, ctx, join_path(cpath, "covariance")))
        times = {getattr(c.central, "ntimes", None) for c in self.components} - {None}
        if len(times) > 1:
            raise ConfigError(f"4-D components have different numbers of times: {sorted(times)}",
                              join_path(context.path, "components"))
        #: Number of times of the 4-D components (None when every component is 3-D).
        self.ntimes: int | None = times.pop() if times else None
        self._is_4d = [getattr(c.central, "ntimes", None) is not None for c in self.components]

    def nested_covariances(self) -> dict[str, Any]:
        """``{"component_0": chain, "component_1": ...}`` (numbered as ``components[i]``), for ``dirac``."""
        return {f"component_{i}": chain for i, chain in enumerate(self.components)}

    def _weight(self, params: HybridWeightParameters, path: str) -> float | FieldSet:
        scalar = 1.0 if params.value is None else float(params.value)
        if params.file is None:
            return float(np.sqrt(scalar))
        cfg = params.file if isinstance(params.file, WeightFileParameters) else WeightFileParameters(
            filename=params.file)
        fields, _ = read_fields(cfg.filename, self.geometry, self.variables, cfg.date or self.context.time)
        out = {}
        for v in self.variables:
            w = fields[v] * scalar
            if (w < 0).any():
                raise ConfigError(f"{cfg.filename}: weight field '{v}' has negative values", join_path(path, "file"))
            out[v] = np.sqrt(w)
        return FieldSet(out, copy=False)

    # Helpers ---------------------------------------------------------------------------------
    def _scale(self, fields: FieldSet, w: float | FieldSet) -> FieldSet:
        if isinstance(w, FieldSet):
            return FieldSet({v: fields[v] * w[v] for v in fields}, copy=False)
        return FieldSet({v: fields[v] * w for v in fields}, copy=False)

    def _accumulate(self, total: dict[str, np.ndarray] | None, part: FieldSet) -> dict[str, np.ndarray]:
        if total is None:
            return {v: np.array(part[v], dtype=np.float64) for v in self.variables}
        for v in self.variables:
            total[v] += part[v]
        return total

    def _time_axis(self, fields: FieldSet) -> int:
        v = self.variables[0]
        return fields[v].ndim - len(self.geometry.field_shape(v)) - 1

    @staticmethod
    def _collapse(fields: FieldSet, axis: int) -> FieldSet:
        """:math:`\\sum_t x_t` (adjoint of :meth:`_spread`)."""
        return fields.map(lambda a: a.sum(axis=axis))

    def _spread(self, fields: FieldSet, axis: int) -> FieldSet:
        """The same fields at each of the :attr:`ntimes` times."""
        def spread(a: np.ndarray) -> np.ndarray:
            shape = a.shape[:axis] + (self.ntimes,) + a.shape[axis:]
            return np.broadcast_to(np.expand_dims(a, axis), shape).copy()
        return fields.map(spread)

    def _component_multiply(self, i: int, x: FieldSet) -> FieldSet:
        chain = self.components[i]
        if self.ntimes is None or self._is_4d[i]:
            return chain.multiply(x)
        axis = self._time_axis(x)  # a 3-D component in a 4-D Hybrid: time-constant
        return self._spread(chain.multiply(self._collapse(x, axis)), axis)

    # Operators -------------------------------------------------------------------------------
    def multiply(self, fields: FieldSet) -> FieldSet:
        r""":math:`\sum_i w_i^{1/2} \circ \mathbf{B}_i (w_i^{1/2} \circ x)`.

        When some component is a 4-D ensemble covariance (:attr:`ntimes` times), ``fields``
        are 4-D increments ``(..., time, *grid)`` and every 3-D component acts as a
        time-constant covariance, :math:`(\mathbf{B}_i x)_t = \mathbf{B}_i \sum_s x_s`.
        """
        x = fields.subset(self.variables)
        total = None
        for i, w in enumerate(self.weights_sqrt):
            total = self._accumulate(total, self._scale(self._component_multiply(i, self._scale(x, w)), w))
        return FieldSet(total, copy=False)

    def sqrt_unavailable(self) -> str | None:
        """A square root exists when every component has one."""
        bad = [i for i, c in enumerate(self.components) if not c.has_sqrt]
        if bad:
            return f"Hybrid has no square root: component(s) {bad} have none"
        return super().sqrt_unavailable()

    @property
    def ctl_vec_sizes(self) -> list[int]:
        """Control-vector length of each component."""
        return [int(chain.ctl_vec_size) for chain in self.components]

    @property
    def ctl_vec_size(self) -> int:
        """Sum of the components' control-vector lengths."""
        return int(sum(self.ctl_vec_sizes))

    def _require_sqrt(self) -> None:
        if not self.has_sqrt:
            raise self._no_sqrt()

    def multiply_sqrt(self, ctl: np.ndarray) -> FieldSet:
        r""":math:`\sum_i w_i^{1/2} \circ \mathbf{B}_i^{1/2} v_i` with :math:`v = (v_1, \dots, v_M)`."""
        self._require_sqrt()
        ctl = np.asarray(ctl, dtype=np.float64)
        if ctl.shape[-1] != self.ctl_vec_size:
            raise ValueError(f"control vector has {ctl.shape[-1]} entries, expected {self.ctl_vec_size}")
        total, start = None, 0
        for i, (chain, w, size) in enumerate(zip(self.components, self.weights_sqrt, self.ctl_vec_sizes)):
            part = chain.multiply_sqrt(ctl[..., start:start + size])
            if self.ntimes is not None and not self._is_4d[i]:
                part = self._spread(part, ctl.ndim - 1)
            total = self._accumulate(total, self._scale(part, w))
            start += size
        return FieldSet(total, copy=False)

    def multiply_sqrt_ad(self, fields: FieldSet) -> np.ndarray:
        r""":math:`(\mathbf{B}_i^{1/2\,\mathsf{T}}(w_i^{1/2} \circ x))_i`, concatenated."""
        self._require_sqrt()
        x = fields.subset(self.variables)
        parts = []
        for i, (chain, w) in enumerate(zip(self.components, self.weights_sqrt)):
            xw = self._scale(x, w)
            if self.ntimes is not None and not self._is_4d[i]:
                xw = self._collapse(xw, self._time_axis(xw))
            parts.append(np.asarray(chain.multiply_sqrt_ad(xw)))
        return np.concatenate(parts, axis=-1)

    def randomize(self, rng: np.random.Generator, batch_shape: tuple[int, ...] = ()) -> FieldSet:
        r""":math:`\sum_i w_i^{1/2} \circ \xi_i`, independent :math:`\xi_i \sim \mathcal{N}(0, \mathbf{B}_i)`."""
        total = None
        for i, (chain, w) in enumerate(zip(self.components, self.weights_sqrt)):
            draw = chain.randomize(rng, tuple(batch_shape))
            if self.ntimes is not None and not self._is_4d[i]:
                draw = self._spread(draw, len(batch_shape))
            total = self._accumulate(total, self._scale(draw, w))
        return FieldSet(total, copy=False)
