r"""Inference of a trained :class:`~pyoops.emulators.network.GridConvNet` in numpy (float64).

The emulator's fields are small (a few thousand values), so PyTorch's fixed cost per
operation (tens of microseconds for each of the network's ~20 operations) dominates a
prediction.  This module evaluates the same network from its weights with numpy: each
convolution of kernel :math:`k` is one matrix product of the weights
:math:`W \in \mathbb R^{C_\mathrm{out} \times C_\mathrm{in} \times k^d}` with the values at
the :math:`k^d` neighbours of every point (gathered with precomputed indices),

.. math::

    (W * h)_{o,i} = b_o + \sum_{c}\sum_{j \in \{-p..p\}^d} W_{o,c,j+p}\, h_{c,i+j},
    \qquad p = (k-1)/2,

with the same padding as :class:`~pyoops.emulators.network.GridPad` (wrap-around on
periodic axes, edge values at walls) and the exact GELU
:math:`x\,\Phi(x) = \tfrac x2 (1 + \mathrm{erf}(x/\sqrt2))`.  It agrees with the PyTorch
network to float32 rounding (tested) and needs no PyTorch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.special import erf

__all__ = ["NumpyGridConvNet", "NumpyGridTrunk"]


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


class NumpyGridTrunk:
    r"""The forward pass of a :class:`~pyoops.emulators.network.GridTrunk` from its parameters, in float64.

    The fields are handled flat, shape :math:`(B, C, n)` with :math:`n` the horizontal
    points; the :math:`k^d` neighbours of every point (wrapped or clipped at the edges,
    which is the padding) are one precomputed index array per horizontal shape, and each
    convolution is one matrix product of the :math:`(Bn, Ck^d)` gathered values with the
    :math:`(Ck^d, C_\mathrm{out})` weights.

    Parameters
    ----------
    state:
        ``{name: array}`` of the network's parameters (a ``state_dict``).
    periodic:
        Periodicity of each horizontal axis.
    kernel, depth, global_context:
        The architecture the weights belong to.
    prefix:
        The trunk's name in ``state`` (e.g. ``"encoder."`` for a sub-module), empty for the whole network.
    """

    def __init__(self, state: Mapping[str, np.ndarray], periodic: Sequence[bool], kernel: int, depth: int,
                 global_context: bool, prefix: str = "") -> None:
        w = {k[len(prefix):]: np.asarray(v, dtype=np.float64) for k, v in state.items() if k.startswith(prefix)}
        self.periodic = tuple(bool(p) for p in periodic)
        self.ndim = len(self.periodic)
        self.kernel = int(kernel)
        self.depth = int(depth)
        self.global_context = bool(global_context)
        #: The pointwise layers as (out, in) matrices with (out, 1) biases, and the convolutions as (in k^d, out)
        #: matrices.
        self.point = {name: (w[f"{name}.weight"].reshape(w[f"{name}.weight"].shape[:2]), w[f"{name}.bias"][:, None])
                      for name in ("inp", "head") + (("context",) if global_context else ())}
        self.conv = {}
        for i in range(self.depth):
            for j in (1, 2):
                name = f"blocks.{i}.conv{j}"
                weight = w[f"{name}.weight"]
                self.conv[name] = (weight.reshape(weight.shape[0], -1).T.copy(), w[f"{name}.bias"])
        self._neighbours: dict[tuple[int, ...], np.ndarray] = {}

    def neighbours(self, shape: tuple[int, ...]) -> np.ndarray:
        """``(n, k^d)`` flat indices of the kernel's points around every point (wrap or clip at the edges)."""
        if shape not in self._neighbours:
            p = (self.kernel - 1) // 2
            offsets = np.arange(-p, p + 1)
            per_axis = []
            for n, periodic in zip(shape, self.periodic):
                idx = np.arange(n)[:, None] + offsets[None, :]
                per_axis.append(np.mod(idx, n) if periodic else np.clip(idx, 0, n - 1))      # (n_a, k)
            flat = per_axis[0]
            for n, idx in zip(shape[1:], per_axis[1:]):   # row-major: combine (points, offsets) axis by axis
                flat = (flat[:, None, :, None] * n + idx[None, :, None, :]).reshape(flat.shape[0] * idx.shape[0], -1)
            self._neighbours[shape] = flat
        return self._neighbours[shape]

    def _conv(self, name: str, h: np.ndarray, idx: np.ndarray) -> np.ndarray:
        matrix, bias = self.conv[name]
        b, c, n = h.shape
        cols = h[:, :, idx].transpose(0, 2, 1, 3).reshape(b * n, -1)                 # (B n, C k^d)
        return (cols @ matrix).reshape(b, n, -1).transpose(0, 2, 1) + bias[:, None]

    def _point(self, name: str, h: np.ndarray) -> np.ndarray:
        matrix, bias = self.point[name]
        return np.matmul(matrix, h) + bias

    def trunk(self, inputs: np.ndarray) -> np.ndarray:
        """The head's output ``(B, C_out, *horizontal)`` from ``(B, C_in, *horizontal)`` inputs."""
        x = np.asarray(inputs, dtype=np.float64)
        shape = x.shape[2:]
        idx = self.neighbours(shape)
        h = _gelu(self._point("inp", x.reshape(x.shape[0], x.shape[1], -1)))
        for i in range(self.depth):
            inner = _gelu(self._conv(f"blocks.{i}.conv1", h, idx))
            h = h + self._conv(f"blocks.{i}.conv2", inner, idx)
        if self.global_context:
            h = h + self._point("context", h.mean(axis=2, keepdims=True))
        out = self._point("head", h)
        return out.reshape(out.shape[:2] + shape)


class NumpyGridConvNet(NumpyGridTrunk):
    r"""The forward pass of a ``GridConvNet`` from its ``state_dict`` (arrays), in float64: the trunk
    (:class:`NumpyGridTrunk`) and the heads :math:`\mu = b + \beta + \mathrm{out}_{:C}`,
    :math:`\log s = \gamma + \mathrm{out}_{C:}`."""

    def __init__(self, state: Mapping[str, np.ndarray], periodic: Sequence[bool], kernel: int, depth: int,
                 global_context: bool) -> None:
        super().__init__(state, periodic, kernel, depth, global_context)
        self.beta = np.asarray(state["beta"], dtype=np.float64)[:, None]
        self.gamma = np.asarray(state["gamma"], dtype=np.float64)[:, None]
        self.channels = self.beta.shape[0]

    def __call__(self, predictors: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, log_s)``, each ``(B, C, *horizontal)``, as ``GridConvNet.forward``."""
        out = self.trunk(predictors)
        shape = out.shape[2:]
        out = out.reshape(out.shape[0], out.shape[1], -1)
        flat_base = np.asarray(base, dtype=np.float64).reshape(out.shape[0], self.channels, -1)
        mu = flat_base + self.beta + out[:, : self.channels]
        log_s = self.gamma + out[:, self.channels:]
        full = (out.shape[0], self.channels) + shape
        return mu.reshape(full), log_s.reshape(full)
