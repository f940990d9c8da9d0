r"""Inference of a trained :class:`~pyoops.emulators.network.GridConvNet` in numpy.

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

A prediction is a few dozen small array operations, so their fixed cost matters as much
as the arithmetic: the fields are kept point-major, ``(B n, C)`` rows of channels (see
:mod:`.features`), where every layer is one matrix product with a matrix arranged once
when the weights are read, a convolution's :math:`k^d` neighbours are one row gather, and
everything affine that follows or precedes an affine map is folded into it at load time:

* the input normalisation :math:`u = (x - m)/s` into the input layer,
  :math:`W_\mathrm{in} u + b = (W_\mathrm{in} S^{-1}) x + (b - W_\mathrm{in} S^{-1} m)`;
* the domain-mean context into the head (nothing but the head reads :math:`h` after it),
  :math:`W_\mathrm{head}(h + W_\mathrm{ctx}\langle h\rangle + b_\mathrm{ctx}) + b_\mathrm{head}
  = W_\mathrm{head} h + \langle (W_\mathrm{head} W_\mathrm{ctx}) h\rangle
  + (W_\mathrm{head} b_\mathrm{ctx} + b_\mathrm{head})`, both products of :math:`h` in one;
* the heads' constants :math:`\beta, \gamma` into the head's bias;
* the second convolution's bias :math:`b_{l,2}` of every residual block into the layers
  after it: the stream is kept as :math:`h_l - c_l` with the constant
  :math:`c_l = \sum_{m \le l} b_{m,2}`, which a padded convolution maps to the constant
  :math:`\sum_j W_{\cdot,\cdot,j}\, c_l` (wrapped or edge-padded, a constant field stays
  constant), added to the next block's first bias, and the head to
  :math:`(W_\mathrm{head} + W_\mathrm{head} W_\mathrm{ctx}) c_L`, added to the head's bias.

These, and :math:`\Phi` from scipy's ``ndtr`` rather than from ``erf``, change the float64
rounding only (relative differences of order :math:`10^{-15}` in :math:`\mu` and :math:`s`,
far below the float32 rounding of the network's training).  The hidden layers run in float64
by default, or in float32 (``dtype``; :meth:`Emulator.numpy_network
<pyoops.emulators.model.Emulator.numpy_network>` does), the precision of the weights and of
PyTorch's evaluation, for half the cost of the matrix products; the predictors, the input
layer (its GELU rounds to ``dtype``), the head's output and the base :math:`\log\hat\sigma_M`
stay float64.

The matrix products run on **one BLAS thread** (``threadpoolctl``, for the duration of each
forward pass): they are a few hundred thousand multiply-adds each, too small for a second
thread to pay for its start and its wait.  With two threads OpenBLAS's workers spin between the
products, so an emulated-member cycle of the QG benchmark spent ~10 % more CPU than wall time
for the same wall time alone, and with both cores busy with other runs one member generator
sample took 0.18 s instead of 0.08 s (benchmarks/emulated_members_qg.py, 2 cores).
OpenBLAS splits a product by rows and columns, not along the sum, so the result is the same to
the bit either way (tested).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import ndtr

__all__ = ["NumpyGridConvNet", "NumpyGridTrunk", "one_blas_thread"]

_blas_controller: Any = None


def one_blas_thread() -> Any:
    """A context manager limiting the loaded BLAS libraries to one thread (module docstring); the
    libraries are looked up once, on the first call (~1 ms), entering costs ~20 µs."""
    global _blas_controller
    if _blas_controller is None:
        from threadpoolctl import ThreadpoolController

        _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")


def _gelu(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    r"""The exact GELU :math:`x\,\Phi(x)` in a new ``dtype`` array, with scipy's normal CDF :math:`\Phi`
    (``ndtr``: :math:`\tfrac12(1 + \mathrm{erf}(x/\sqrt2))`, through :math:`\mathrm{erfc}` where that
    is more accurate); two array operations instead of the five of the erf formula."""
    phi = ndtr(x)
    if phi.dtype != dtype:
        return np.multiply(x, phi, out=np.empty(x.shape, dtype))
    phi *= x
    return phi


def _relu(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    r"""The ReLU :math:`\max(x, 0)` in a new ``dtype`` array."""
    return np.maximum(x, 0.0, out=np.empty(x.shape, dtype))


#: The numpy twin of each activation of :data:`pyoops.emulators.network.ACTIVATIONS`.
ACTIVATIONS = {"gelu": _gelu, "relu": _relu}


class NumpyGridTrunk:
    r"""The forward pass of a :class:`~pyoops.emulators.network.GridTrunk` from its parameters, in float64
    (or float32: ``dtype``).

    The fields are handled point-major, ``(B, n, C)`` with :math:`n` the horizontal points
    flattened row-major; the :math:`k^d` neighbours of every point (wrapped or clipped at the
    edges, which is the padding) are one precomputed index array per batch size and horizontal
    shape, and each convolution is one matrix product of the :math:`(Bn, k^d C)` gathered rows
    with the :math:`(k^d C, C_\mathrm{out})` weights.

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
    normalisation:
        ``(mean, std)`` of the input channels, folded into the input layer: the trunk then takes the raw inputs
        :math:`x` for :math:`u = (x - m)/s` (default: the inputs are :math:`u`).
    dtype:
        The floating type of the hidden layers (weights folded in float64, then rounded to it); the input
        layer and the head's output are float64 either way.  ``np.float32`` halves the cost of the matrix
        products and evaluates the network in the precision it was trained and is run in by PyTorch.
    """

    def __init__(self, state: Mapping[str, np.ndarray], periodic: Sequence[bool], kernel: int, depth: int,
                 global_context: bool, prefix: str = "",
                 normalisation: tuple[np.ndarray, np.ndarray] | None = None,
                 dtype: type[np.floating] = np.float64, activation: str = "gelu") -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"the activation is one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.act = ACTIVATIONS[activation]
        w = {k[len(prefix):]: np.asarray(v, dtype=np.float64) for k, v in state.items() if k.startswith(prefix)}
        self.periodic = tuple(bool(p) for p in periodic)
        self.ndim = len(self.periodic)
        self.kernel = int(kernel)
        self.depth = int(depth)
        self.global_context = bool(global_context)
        self.dtype = np.dtype(dtype)

        def pointwise(name: str) -> tuple[np.ndarray, np.ndarray]:  # (in, out) matrix, (out,) bias
            weight = w[f"{name}.weight"]
            return weight.reshape(weight.shape[:2]).T, w[f"{name}.bias"]

        inp, inp_bias = pointwise("inp")
        if normalisation is not None:
            mean, std = (np.asarray(a, dtype=np.float64) for a in normalisation)
            inp = inp / std[:, None]
            inp_bias = inp_bias - mean @ inp
        #: The input layer ``(C_in, width)`` and its bias, float64 like the inputs (its GELU rounds to ``dtype``).
        self.inp = (np.ascontiguousarray(inp), inp_bias)
        #: Per residual block, the first convolution as a ``(k^d C, C)`` matrix (rows neighbour-major, then
        #: channel, matching the gathered rows) and its bias (with the residual stream's constant folded in),
        #: and the second convolution's matrix (its bias is in the stream's constant).
        self.blocks = []
        stream = np.zeros(w["inp.bias"].shape)       # the constant left out of the residual stream so far
        for i in range(self.depth):
            taps = []                                 # (k^d, in, out) for each convolution
            for j in (1, 2):
                weight = w[f"blocks.{i}.conv{j}.weight"]
                taps.append(weight.reshape(weight.shape[0], weight.shape[1], -1).transpose(2, 1, 0))
            bias1 = w[f"blocks.{i}.conv1.bias"] + stream @ taps[0].sum(axis=0)
            conv1, conv2 = (self._cast(t.reshape(-1, t.shape[2])) for t in taps)
            self.blocks.append((conv1, self._cast(bias1), conv2))
            stream = stream + w[f"blocks.{i}.conv2.bias"]
        head, head_bias = pointwise("head")
        if self.global_context:
            context, context_bias = pointwise("context")
            context = context @ head
            head_bias = head_bias + context_bias @ head + stream @ context
            head = np.concatenate([head, context], axis=1)
        #: The head ``(width, C_out)``, with the context through the head beside it (``(width, 2 C_out)``: the
        #: domain mean of the second half of the product is the context's term), and the float64 bias (every
        #: constant added to the head's output folded in).
        self.head = (self._cast(head), head_bias + stream @ head[:, : head_bias.shape[0]])
        self._neighbours: dict[tuple[int, ...], np.ndarray] = {}
        self._rows: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}

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

    def rows(self, batch: int, shape: tuple[int, ...]) -> np.ndarray:
        """``(B n k^d,)`` rows of the ``(B n, C)`` fields gathered by a convolution: :meth:`neighbours` for every
        member of the batch (kept for the last few batch sizes and shapes)."""
        key = (batch, shape)
        if key not in self._rows:
            if len(self._rows) >= 8:
                self._rows.clear()
            idx = self.neighbours(shape)
            self._rows[key] = (np.arange(batch)[:, None] * idx.shape[0] + idx.reshape(1, -1)).ravel()
        return self._rows[key]

    def _cast(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array, dtype=self.dtype)

    def points(self, inputs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The head's output ``(B, n, C_out)`` from point-major inputs ``(B, n, C_in)`` on the horizontal
        ``shape``."""
        with one_blas_thread():
            return self._points(inputs, shape)

    def _points(self, inputs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        b, n = inputs.shape[:2]
        rows = self.rows(b, tuple(shape))
        matrix, bias = self.inp
        z = inputs.reshape(b * n, -1) @ matrix
        z += bias
        h = self.act(z, self.dtype)
        for conv1, bias1, conv2 in self.blocks:
            z = h.take(rows, axis=0, mode="clip").reshape(b * n, -1) @ conv1
            z += bias1
            inner = self.act(z, self.dtype)
            h += inner.take(rows, axis=0, mode="clip").reshape(b * n, -1) @ conv2
        matrix, bias = self.head
        out = (h @ matrix).reshape(b, n, -1)
        if self.global_context:
            c = bias.shape[0]
            context = np.add.reduce(out[:, :, c:], axis=1)
            context /= n
            return out[:, :, :c] + (context + bias)[:, None]      # float64
        return out + bias

    def trunk(self, inputs: np.ndarray) -> np.ndarray:
        """The head's output ``(B, C_out, *horizontal)`` from ``(B, C_in, *horizontal)`` inputs."""
        x = np.asarray(inputs, dtype=np.float64)
        b, c, shape = x.shape[0], x.shape[1], x.shape[2:]
        out = self.points(np.moveaxis(x.reshape(b, c, -1), 1, 2), shape)
        return np.moveaxis(out, 2, 1).reshape((b, -1) + shape)


class NumpyGridConvNet(NumpyGridTrunk):
    r"""The forward pass of a ``GridConvNet`` from its ``state_dict`` (arrays): the trunk
    (:class:`NumpyGridTrunk`, whose ``normalisation`` and ``dtype`` it takes) and the heads
    :math:`\mu = b + \beta + \mathrm{out}_{:C}`, :math:`\log s = \gamma + \mathrm{out}_{C:}`
    (:math:`\beta, \gamma` folded into the head's bias)."""

    def __init__(self, state: Mapping[str, np.ndarray], periodic: Sequence[bool], kernel: int, depth: int,
                 global_context: bool, normalisation: tuple[np.ndarray, np.ndarray] | None = None,
                 dtype: type[np.floating] = np.float64, activation: str = "gelu") -> None:
        super().__init__(state, periodic, kernel, depth, global_context, normalisation=normalisation, dtype=dtype,
                         activation=activation)
        beta, gamma = (np.asarray(state[k], dtype=np.float64) for k in ("beta", "gamma"))
        self.channels = beta.shape[0]
        self.head = (self.head[0], self.head[1] + np.concatenate([beta, gamma]))

    def heads(self, predictors: np.ndarray, base: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        r"""``(B, n, 2C)``: :math:`\mu` (``[..., :C]``) and :math:`\log s` (``[..., C:]``) from the point-major
        predictors ``(B, n, C_in)`` and base ``(B, n, C)`` on the horizontal ``shape``."""
        out = self.points(predictors, shape)
        out[:, :, : self.channels] += base
        return out

    def __call__(self, predictors: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, log_s)``, each ``(B, C, *horizontal)``, as ``GridConvNet.forward``."""
        x = np.asarray(predictors, dtype=np.float64)
        b, shape = x.shape[0], x.shape[2:]

        def points(a: np.ndarray) -> np.ndarray:
            return np.moveaxis(a.reshape(b, a.shape[1], -1), 1, 2)

        out = self.heads(points(x), points(np.asarray(base, dtype=np.float64)), shape)
        out = np.moveaxis(out, 2, 1).reshape((b, -1) + shape)
        return out[:, : self.channels], out[:, self.channels:]
