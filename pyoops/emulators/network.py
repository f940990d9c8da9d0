r"""The emulator network: residual convolutions that respect the grid (PyTorch).

One architecture for every structured grid, parameterised by the horizontal axes of the
:class:`~pyoops.emulators.features.GridLayout`: 1-D convolutions for a 1-D
grid (Lorenz-96), 2-D for a 2-D one (QG, shallow water).  Before every convolution of
kernel :math:`k` the fields are padded by :math:`(k-1)/2` points on each side of each
horizontal axis, *circularly* on a periodic axis and by repeating the edge value on a
bounded one (QG's channel walls), so that the network is equivariant to translations
along periodic axes and never sees a fictitious boundary.

With input predictors :math:`u` (normalised, ``P*C`` channels) and the raw
:math:`b = \log\hat\sigma_M` (``C`` channels),

.. math::

    h_0 &= \mathrm{GELU}(W_\mathrm{in} u), \qquad
    h_{l} = h_{l-1} + W_{l,2} * \mathrm{GELU}(W_{l,1} * h_{l-1}) \quad (l = 1..L),\\
    h &= h_L + W_\mathrm{ctx}\,\langle h_L\rangle \quad (\text{optional domain-mean context}),\\
    \mu &= b + \beta + (W_\mu h), \qquad \log s = \gamma + (W_s h),

with :math:`*` the padded convolutions, :math:`W_\mathrm{in}, W_\mu, W_s, W_\mathrm{ctx}`
pointwise (kernel 1), :math:`\beta, \gamma` per-channel constants.  The heads
:math:`W_\mu, W_s` start at zero: before training the network is the naive estimate
:math:`\log\hat\sigma_M + \beta` with a constant spread.  The predictive distribution of
:math:`\log\hat\sigma_N` at every point is :math:`\mathcal N(\mu, s^2)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GridConvNet", "GridPad", "GridTrunk", "parameter_count"]


class GridPad(nn.Module):
    """Pad the horizontal axes by ``width`` points: circular where periodic, edge values elsewhere."""

    def __init__(self, periodic: Sequence[bool], width: int) -> None:
        super().__init__()
        self.periodic = tuple(bool(p) for p in periodic)
        self.width = int(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad ``x`` by ``width`` on every spatial axis: periodic wrap or zeros (channel walls)."""
        if self.width == 0:
            return x
        ndim = len(self.periodic)
        for axis, periodic in enumerate(self.periodic):
            pad = [0, 0] * ndim
            slot = ndim - 1 - axis          # F.pad lists the last axis first
            pad[2 * slot] = pad[2 * slot + 1] = self.width
            x = F.pad(x, pad, mode="circular" if periodic else "replicate")
        return x


#: The activations :math:`a` a trunk may use: the exact GELU :math:`x\,\Phi(x)` (default) or the ReLU
#: :math:`\max(x, 0)` (one cheap operation in numpy inference, where the GELU's normal CDF is a third of a small
#: network's time).
ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


class _Residual(nn.Module):
    def __init__(self, conv: type, width: int, kernel: int, periodic: Sequence[bool], activation: str) -> None:
        super().__init__()
        self.pad = GridPad(periodic, (kernel - 1) // 2)
        self.conv1 = conv(width, width, kernel)
        self.conv2 = conv(width, width, kernel)
        self.act = ACTIVATIONS[activation]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        r"""The residual block: :math:`h + W_2 * a(W_1 * h)` (padded convolutions)."""
        return h + self.conv2(self.pad(self.act(self.conv1(self.pad(h)))))


class GridTrunk(nn.Module):
    r"""The residual trunk shared by the emulators: :math:`\mathrm{out} = W_\mathrm{head}\,h` with

    .. math::

        h_0 = a(W_\mathrm{in} u),\quad
        h_l = h_{l-1} + W_{l,2} * a(W_{l,1} * h_{l-1}),\quad
        h = h_L + W_\mathrm{ctx}\langle h_L\rangle \ (\text{optional}),

    padded convolutions along the horizontal axes, pointwise :math:`W_\mathrm{in}, W_\mathrm{ctx},
    W_\mathrm{head}`, the activation :math:`a` of :data:`ACTIVATIONS`; the head starts at zero, so an
    untrained trunk outputs zero.

    Parameters
    ----------
    in_channels, out_channels:
        Input and output channels.
    periodic:
        Periodicity of each horizontal axis (1 or 2 axes).
    width, depth, kernel:
        Hidden channels, residual blocks (two convolutions each), odd kernel size.
    global_context:
        Add the domain mean of the hidden features back at every point.
    activation:
        A name in :data:`ACTIVATIONS`.
    """

    def __init__(self, in_channels: int, out_channels: int, periodic: Sequence[bool], width: int = 32,
                 depth: int = 3, kernel: int = 5, global_context: bool = True, activation: str = "gelu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"the activation is one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if kernel % 2 != 1:
            raise ValueError(f"the kernel size must be odd, got {kernel}")
        ndim = len(periodic)
        if ndim not in (1, 2):
            raise ValueError(f"1 or 2 horizontal axes, got {ndim}")
        conv = nn.Conv1d if ndim == 1 else nn.Conv2d
        self.ndim = ndim
        self.inp = conv(in_channels, width, 1)
        self.act = ACTIVATIONS[activation]
        self.blocks = nn.ModuleList(_Residual(conv, width, kernel, periodic, activation) for _ in range(depth))
        self.context = conv(width, width, 1) if global_context else None
        self.head = conv(width, out_channels, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def trunk(self, u: torch.Tensor) -> torch.Tensor:
        """The head's output ``(B, out_channels, *horizontal)`` from the inputs ``(B, in_channels, *horizontal)``."""
        h = self.act(self.inp(u))
        for block in self.blocks:
            h = block(h)
        if self.context is not None:
            h = h + self.context(h.mean(dim=tuple(range(2, 2 + self.ndim)), keepdim=True))
        return self.head(h)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """:meth:`trunk`."""
        return self.trunk(u)


class GridConvNet(GridTrunk):
    """The emulator network (see the module docstring): a :class:`GridTrunk` from ``in_channels`` = ``P*C``
    predictor channels to the two heads of ``channels`` = ``C`` target channels each (variables times levels),
    and the per-channel offsets ``beta``, ``gamma``; the other parameters are the trunk's."""

    def __init__(self, in_channels: int, channels: int, periodic: Sequence[bool], width: int = 32, depth: int = 3,
                 kernel: int = 5, global_context: bool = True, activation: str = "gelu") -> None:
        super().__init__(in_channels, 2 * channels, periodic, width, depth, kernel, global_context, activation)
        self.channels = int(channels)
        self.beta = nn.Parameter(torch.zeros(channels))
        self.gamma = nn.Parameter(torch.zeros(channels))

    def forward(self, predictors: torch.Tensor, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_s)`` of :math:`\\log\\hat\\sigma_N`, each ``(B, C, *horizontal)``."""
        out = self.trunk(predictors)
        shape = (1, self.channels) + (1,) * self.ndim
        mu = base + self.beta.view(shape) + out[:, : self.channels]
        log_s = self.gamma.view(shape) + out[:, self.channels:]
        return mu, log_s


def parameter_count(net: nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters()))
