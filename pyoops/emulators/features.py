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
    periodic axes, one-sided at walls.

The target is :math:`\log\hat\sigma_N` of all :math:`N` members, same layout as
``log stddev``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyoops.util.errors import ConfigError

__all__ = ["FEATURES", "GridLayout", "log_stddev", "predictors"]

FEATURES = ("log stddev", "mean", "gradient")
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
        """The layout of a structured grid (axes with ``horizontal`` and ``periodic`` flags)."""
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

    @property
    def levels(self) -> tuple[int, ...]:
        """Indices of the axes folded into channels."""
        return tuple(i for i in range(len(self.shape)) if i not in self.horizontal)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[i] for i in self.horizontal)

    @property
    def channels(self) -> int:
        """The number of channels per predictor (variables times levels)."""
        return len(self.variables) * math.prod(self.shape[i] for i in self.levels)

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

    def gradient(self, fields: np.ndarray, axis: int) -> np.ndarray:
        """Centred difference of ``(B, C, *horizontal)`` along horizontal axis ``axis`` (wrapping if periodic)."""
        ax = 2 + axis
        h = self.spacing[axis]
        if self.periodic[axis]:
            return (np.roll(fields, -1, axis=ax) - np.roll(fields, 1, axis=ax)) / (2.0 * h)
        return np.gradient(fields, h, axis=ax, edge_order=1)


def log_stddev(members: np.ndarray, axis: int = 1) -> np.ndarray:
    r""":math:`\log\hat\sigma` over ``axis`` (:math:`N-1` normalisation), floored at :data:`STDDEV_FLOOR`."""
    return np.log(np.maximum(np.std(members, axis=axis, ddof=1), STDDEV_FLOOR))


def predictors(members: Mapping[str, np.ndarray], layout: GridLayout, features: Sequence[str]) -> np.ndarray:
    """The predictors ``(B, P*C, *horizontal)`` from ``{variable: (B, M, *shape)}`` members.

    ``features`` lists the predictors after ``log stddev`` (which always comes first).
    """
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ValueError(f"unknown predictor(s) {unknown}, known: {list(FEATURES)}")
    blocks = [layout.to_channels({v: log_stddev(np.asarray(members[v], dtype=np.float64)) for v in layout.variables})]
    if "mean" in features or "gradient" in features:
        mean = layout.to_channels({v: np.asarray(members[v], dtype=np.float64).mean(axis=1)
                                   for v in layout.variables})
        if "mean" in features:
            blocks.append(mean)
        if "gradient" in features:
            blocks.extend(layout.gradient(mean, a) for a in range(len(layout.horizontal)))
    return np.concatenate(blocks, axis=1)


def number_of_predictors(layout: GridLayout, features: Sequence[str]) -> int:
    """Input channels of the network for ``features``."""
    per = 1 + ("mean" in features) + (len(layout.horizontal) if "gradient" in features else 0)
    return per * layout.channels
