r"""The grid layout of an emulator and its predictors (numpy only).

Layout
------
A field of a structured grid (:class:`~pyoops.generic.grid.StructuredGrid`) has axes in
file order, e.g. ``(position,)`` for Lorenz-96, ``(z, y, x)`` for QG, ``(y, x)`` for
shallow water.  The emulator convolves along the *horizontal* axes (periodic: wrap-around
padding; bounded, like QG's channel walls in :math:`y`: edge padding) and treats every
other axis (levels) as channels: the network input is ``(batch, C, *horizontal)`` with
:math:`C = n_\mathrm{variables} \times n_\mathrm{levels}` channels per predictor.

Predictors from :math:`M` members :math:`x^{(1..M)}` at every point
-------------------------------------------------------------------
``log stddev``
    :math:`\log\hat\sigma_M`, :math:`\hat\sigma_M^2 = \frac{1}{M-1}\sum_m (x^{(m)} - \bar x_M)^2`
    (always; it is also the base the network's mean is a correction of);
``mean``
    :math:`\bar x_M` (the flow);
``gradient``
    :math:`\partial \bar x_M / \partial \xi` along every horizontal axis :math:`\xi`:
    centred differences :math:`(\bar x_{i+1} - \bar x_{i-1}) / (2\Delta\xi)`, wrapping on
    periodic axes, one-sided at walls;
``relative`` (a flag, no channels of its own)
    the network sees :math:`\log\hat\sigma_M - \langle\log\hat\sigma_M\rangle` (the domain mean of
    each channel removed: :func:`network_predictors`) instead of :math:`\log\hat\sigma_M`, while the
    base its mean corrects stays :math:`\log\hat\sigma_M`.  The emulator is then *scale equivariant*:
    members :math:`c\,x` give :math:`\mu + \log c` (the flow predictors aside), so a system whose spread
    level moves away from the training data's is not pulled back to the training climatology.

The target is :math:`\log\hat\sigma_N` of all :math:`N` members, same layout as
``log stddev``.

Point-major layout
------------------
Inference (:class:`PointPredictors`, :mod:`.inference`) holds the same values point-major,
``(B, n, C)`` with :math:`n` the horizontal points flattened row-major: every layer of the
network is then one matrix product over the channel axis, and a centred difference is a
gather of two precomputed neighbour rows.  :func:`predictors` is that computation put back
channel-major, so training and inference share one definition of the predictors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from pyoops.util.errors import ConfigError

__all__ = ["FEATURES", "GridLayout", "PointPredictors", "log_stddev", "network_predictors", "predictors"]

FEATURES = ("log stddev", "mean", "gradient", "relative")
#: Floor of the standard deviations whose logarithm is taken (a member copy would give log 0).
STDDEV_FLOOR = 1e-12


@dataclass(frozen=True)
class GridLayout:
    """Where the emulator's channels and convolution axes come from.

    Attributes
    ----------
    variables:
        Variables, in channel order.
    shape:
        Shape of one field (every variable has it).
    horizontal:
        Indices in ``shape`` of the axes convolved along, in order.
    periodic:
        Whether each horizontal axis is periodic.
    spacing:
        Grid spacing of each horizontal axis (for gradients).
    """

    variables: tuple[str, ...]
    shape: tuple[int, ...]
    horizontal: tuple[int, ...]
    periodic: tuple[bool, ...]
    spacing: tuple[float, ...]

    @classmethod
    def from_geometry(cls, geometry: Any, variables: Sequence[str], path: str = "geometry") -> "GridLayout":
        """The layout of a structured grid (axes with ``horizontal`` and ``periodic`` flags) for ``variables``, which
        the geometry must hold (a ConfigError at ``path`` names the others)."""
        known = list(geometry.variables)
        unknown = [v for v in variables if v not in known]
        if unknown:
            raise ConfigError(f"the geometry has no variable(s) {unknown}; it has {known}", path)
        axes = getattr(geometry, "axes", None)
        if axes is None:
            raise ConfigError(f"an emulator needs a structured grid (a geometry with axes); {type(geometry).__name__} "
                              "has none", path)
        shapes = {tuple(geometry.field_shape(v)) for v in variables}
        if len(shapes) != 1 or next(iter(shapes)) != tuple(a.n for a in axes):
            raise ConfigError(f"an emulator needs every variable on the full grid, got shapes {sorted(shapes)}", path)
        horizontal = tuple(i for i, a in enumerate(axes) if a.horizontal)
        if not 1 <= len(horizontal) <= 2:
            raise ConfigError(f"an emulator convolves along 1 or 2 horizontal axes, the grid has {len(horizontal)}",
                              path)
        return cls(tuple(variables), tuple(a.n for a in axes), horizontal,
                   tuple(bool(axes[i].periodic) for i in horizontal), tuple(float(axes[i].spacing) for i in horizontal))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GridLayout":
        return cls(tuple(data["variables"]), tuple(data["shape"]), tuple(data["horizontal"]),
                   tuple(bool(p) for p in data["periodic"]), tuple(float(s) for s in data["spacing"]))

    def to_dict(self) -> dict[str, Any]:
        return {"variables": list(self.variables), "shape": list(self.shape), "horizontal": list(self.horizontal),
                "periodic": list(self.periodic), "spacing": list(self.spacing)}

    # The derived shapes are cached: inference asks for them at every prediction.
    @cached_property
    def levels(self) -> tuple[int, ...]:
        """Indices of the axes folded into channels."""
        return tuple(i for i in range(len(self.shape)) if i not in self.horizontal)

    @cached_property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[i] for i in self.horizontal)

    @cached_property
    def channels(self) -> int:
        """The number of channels per predictor (variables times levels)."""
        return len(self.variables) * math.prod(self.shape[i] for i in self.levels)

    @cached_property
    def points(self) -> int:
        """The number of horizontal points :math:`n`."""
        return math.prod(self.spatial_shape)

    @cached_property
    def _point_axes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """The field axes in point-major order (horizontal, then levels), its inverse permutation, and the shape
        in that order."""
        order = self.horizontal + self.levels
        return order, tuple(int(i) for i in np.argsort(order)), tuple(self.shape[i] for i in order)

    def to_channels(self, fields: Mapping[str, np.ndarray]) -> np.ndarray:
        """``{variable: (B, *shape)}`` -> ``(B, C, *horizontal)`` (variable-major, then levels)."""
        if not self.levels:  # every axis horizontal: one channel per variable
            return np.stack([np.asarray(fields[v]) for v in self.variables], axis=1)
        order = [i + 1 for i in self.levels] + [i + 1 for i in self.horizontal]
        parts = []
        for v in self.variables:
            a = np.asarray(fields[v])
            b = a.shape[0]
            parts.append(np.transpose(a, [0] + order).reshape((b, -1) + self.spatial_shape))
        return np.concatenate(parts, axis=1)

    def from_channels(self, array: np.ndarray) -> dict[str, np.ndarray]:
        """The inverse of :meth:`to_channels`: ``(B, C, *horizontal)`` -> ``{variable: (B, *shape)}``."""
        array = np.asarray(array)
        if not self.levels:
            return {v: array[:, k] for k, v in enumerate(self.variables)}
        b = array.shape[0]
        per_var = self.channels // len(self.variables)
        level_shape = tuple(self.shape[i] for i in self.levels)
        order = [i + 1 for i in self.levels] + [i + 1 for i in self.horizontal]
        inverse = np.argsort([0] + order)
        out = {}
        for k, v in enumerate(self.variables):
            a = array[:, k * per_var:(k + 1) * per_var].reshape((b,) + level_shape + self.spatial_shape)
            out[v] = np.transpose(a, inverse)
        return out

    def to_points(self, fields: Mapping[str, np.ndarray]) -> np.ndarray:
        """``{variable: (..., *shape)}`` -> ``(..., n, C)``: :meth:`to_channels` with the channels last and the
        horizontal points flattened (row-major); any number of leading axes."""
        order = self._point_axes[0]
        blocks = []
        for v in self.variables:
            a = np.asarray(fields[v])
            lead = a.ndim - len(self.shape)
            if order != tuple(range(len(order))):   # levels first in the file: move them after the horizontal axes
                a = a.transpose(tuple(range(lead)) + tuple(lead + i for i in order))
            blocks.append(a.reshape(a.shape[:lead] + (self.points, -1)))
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=-1)

    def from_points(self, array: np.ndarray) -> dict[str, np.ndarray]:
        """The inverse of :meth:`to_points`: ``(..., n, C)`` -> ``{variable: (..., *shape)}`` (views)."""
        order, inverse, folded = self._point_axes
        lead = array.ndim - 2
        per_var = self.channels // len(self.variables)
        out = {v: array[..., k * per_var:(k + 1) * per_var].reshape(array.shape[:lead] + folded)
               for k, v in enumerate(self.variables)}
        if order == tuple(range(len(order))):   # the file order is point-major already
            return out
        axes = tuple(range(lead)) + tuple(lead + i for i in inverse)
        return {v: a.transpose(axes) for v, a in out.items()}


def log_stddev(members: np.ndarray, axis: int = 1) -> np.ndarray:
    r""":math:`\log\hat\sigma` over ``axis`` (:math:`N-1` normalisation), floored at :data:`STDDEV_FLOOR`."""
    return np.log(np.maximum(np.std(members, axis=axis, ddof=1), STDDEV_FLOOR))


class PointPredictors:
    r"""The predictors of ``features`` at every point, point-major (see the module docstring).

    From :math:`M` members :math:`x^{(m)}`, ``(B, M, n, C)`` point-major, the blocks of the
    result ``(B, n, P C)`` are, in :func:`predictors`' order,

    .. math::

        \log\max(\hat\sigma_M, \sigma_\mathrm{floor}), \qquad \bar x_M, \qquad
        \frac{\bar x_{i^+_a} - \bar x_{i^-_a}}{(\xi_{i^+_a} - \xi_{i^-_a})} \quad (a = 1..A),

    with :math:`i^\pm_a` the neighbour of point :math:`i` one step along horizontal axis
    :math:`a` (wrapped on a periodic axis, clipped to the point itself at a wall).  Clipping
    turns the centred difference into the one-sided one at walls, so the :math:`A` gradients
    are one gather of precomputed index pairs divided by precomputed spacings, with the
    values of ``np.roll`` / ``np.gradient(edge_order=1)`` to the bit.  The mean and the
    variance follow ``np.mean`` / ``np.std(ddof=1)`` operation by operation (same values).
    """

    def __init__(self, layout: GridLayout, features: Sequence[str]) -> None:
        unknown = [f for f in features if f not in FEATURES]
        if unknown:
            raise ValueError(f"unknown predictor(s) {unknown}, known: {list(FEATURES)}")
        self.layout = layout
        self.mean = "mean" in features
        self.gradient = "gradient" in features
        #: Predictor blocks of C channels each.
        self.blocks = number_of_predictors(layout, features) // layout.channels
        shape = layout.spatial_shape
        grid = np.indices(shape).reshape(len(shape), -1)     # (A, n) coordinates of every point
        plus, minus, spacing = [], [], []
        for a, (n, periodic, h) in enumerate(zip(shape, layout.periodic, layout.spacing)):
            up, down = grid.copy(), grid.copy()
            up[a] = (grid[a] + 1) % n if periodic else np.minimum(grid[a] + 1, n - 1)
            down[a] = (grid[a] - 1) % n if periodic else np.maximum(grid[a] - 1, 0)
            plus.append(np.ravel_multi_index(tuple(up), shape))
            minus.append(np.ravel_multi_index(tuple(down), shape))
            # The neighbours are 2 steps apart, but for the one-sided difference at a wall.
            spacing.append((np.full(grid.shape[1], 2) if periodic else up[a] - down[a]) * h)
        #: ``(2 A n,)`` rows of the neighbours along every axis (the A n forward ones, then the A n backward ones),
        #: and the ``(A n, 1)`` distances between them.
        self.neighbours = np.concatenate(plus + minus)
        self.spacing = np.concatenate(spacing)[:, None]

    def __call__(self, members: Mapping[str, np.ndarray]) -> np.ndarray:
        """``(B, n, P C)`` predictors from ``{variable: (B, M, *shape)}`` members (float64)."""
        x = self.layout.to_points({v: np.asarray(members[v], dtype=np.float64) for v in self.layout.variables})
        b, m, n, c = x.shape
        out = np.empty((b, n, self.blocks, c))
        mean = np.add.reduce(x, axis=1)
        mean /= m
        dev = x - mean[:, None]
        dev *= dev
        var = np.add.reduce(dev, axis=1)
        var /= max(m - 1, 0)
        np.sqrt(var, out=var)
        np.log(np.maximum(var, STDDEV_FLOOR, out=var), out=out[:, :, 0])
        if self.mean:
            out[:, :, 1] = mean
        if self.gradient:
            axes = len(self.layout.horizontal)
            pairs = mean.take(self.neighbours, axis=1)
            grad = pairs[:, : axes * n] - pairs[:, axes * n:]
            grad /= self.spacing
            out[:, :, self.blocks - axes:] = grad.reshape(b, axes, n, c).transpose(0, 2, 1, 3)
        return out.reshape(b, n, self.blocks * c)


def predictors(members: Mapping[str, np.ndarray], layout: GridLayout, features: Sequence[str]) -> np.ndarray:
    """The predictors ``(B, P*C, *horizontal)`` from ``{variable: (B, M, *shape)}`` members: the
    :class:`PointPredictors` channel-major.

    ``features`` lists the predictors after ``log stddev`` (which always comes first).
    """
    x = PointPredictors(layout, features)(members)
    return np.ascontiguousarray(np.moveaxis(x, 2, 1)).reshape(x.shape[:1] + x.shape[2:] + layout.spatial_shape)


def network_predictors(x: np.ndarray, layout: GridLayout, features: Sequence[str], point_major: bool) -> np.ndarray:
    """What the network sees of the predictors ``x`` (``(B, n, P C)`` point-major or ``(B, P C, *horizontal)``
    channel-major): ``x`` itself, or with the ``relative`` flag a new array whose first ``C`` channels
    (:math:`\\log\\hat\\sigma_M`) have their mean over the horizontal points of each sample removed."""
    if "relative" not in features:
        return x
    c = layout.channels
    out = np.array(x, dtype=np.float64)
    if point_major:
        out[:, :, :c] -= out[:, :, :c].mean(axis=1, keepdims=True)
    else:
        axes = tuple(range(2, out.ndim))
        out[:, :c] -= out[:, :c].mean(axis=axes, keepdims=True)
    return out


def number_of_predictors(layout: GridLayout, features: Sequence[str]) -> int:
    """Input channels of the network for ``features``."""
    per = 1 + ("mean" in features) + (len(layout.horizontal) if "gradient" in features else 0)
    return per * layout.channels
