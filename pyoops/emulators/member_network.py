r"""The generator's network: a set encoder of the real members and the bridge drift (PyTorch).

With the notation of :mod:`.members` (fields in units of the backgrounds' spread, channels
``C``, horizontal axes convolved with the padding of :class:`~pyoops.emulators.network.GridPad`):

*Set encoder* (DeepSets): every real pair gives :math:`e_i = E_\phi([u^b_i, u^a_i - u^b_i])`
(a :class:`~pyoops.emulators.network.GridTrunk`), pooled by the mean
:math:`\bar e = \frac1M\sum_{i\in S} e_i` — invariant to the order of the real members and
defined for any :math:`M`.

*Endpoint* (the bridge's drift through :math:`D_\theta`):

.. math::

    D_\theta(U_t, t \mid u_0, C) = \underbrace{u_0 + \bar\delta_S + \kappa_S \odot q}_{\text{covariance
    regression}} + T_\theta\big([U_t, u_0, q, t, C, \bar e]\big), \qquad q = \mathbf P^b(u_0 - \bar u^b_S),

(or, with ``baseline: spread ratio``, the spread-ratio emulator of :mod:`.members` in place of the
covariance regression),

:math:`T_\theta` a :class:`~pyoops.emulators.network.GridTrunk` whose head starts at zero:
before training the generator is the covariance-regression emulator, training learns what
the pointwise regression on :math:`M` real pairs misses (its sampling noise, the higher
orders of the transform, the non-local and nonlinear parts of the analysis).  The mean-field
term :math:`q` (the covariance of all :math:`N` backgrounds applied to the member) is what
lets a local network act like a square-root filter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyoops.emulators.members import (
    BASELINES,
    CONTEXT_FEATURES,
    HEADS,
    baseline_endpoint,
    gain_endpoint,
    gain_inputs,
)
from pyoops.emulators.network import GridTrunk

__all__ = ["MemberFlowNet", "drift_inputs"]


def drift_inputs(u: torch.Tensor, u0: torch.Tensor, q: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                 pooled: torch.Tensor) -> torch.Tensor:
    r"""The trunk's input ``(B K, 3C + 1 + 6C + E, *h)`` from ``u, u0, q`` ``(B, K, C, *h)``, ``t`` ``(B, K)``,
    ``context`` ``(B, 6C, *h)`` and ``pooled`` ``(B, E, *h)`` (as :func:`.members.drift_inputs` in numpy)."""
    b, k = u.shape[:2]
    spatial = tuple(u.shape[3:])
    tfield = t.reshape(b, k, 1, *([1] * len(spatial))).expand(b, k, 1, *spatial)
    x = torch.cat([u, u0, q, tfield, context[:, None].expand(b, k, *context.shape[1:]),
                   pooled[:, None].expand(b, k, *pooled.shape[1:])], 2)
    return x.reshape(b * k, x.shape[2], *spatial)


class MemberFlowNet(nn.Module):
    """The generator network of the module docstring.

    Parameters
    ----------
    channels:
        ``C``, variables times levels.
    periodic:
        Periodicity of each horizontal axis.
    width, depth, kernel, global_context:
        The drift trunk.
    set_width, set_channels:
        The set encoder's hidden width and its output channels ``E``.
    baseline:
        The non-learned endpoint the drift corrects (:data:`.members.BASELINES`).
    head:
        ``additive`` (the trunk's output added to the baseline) or ``linear gain``
        (:func:`.members.gain_endpoint`: the trunk sees only the real members and the time, and
        sets a gain, a shift and the bridge state's weight, so the endpoint is linear in the
        member's own deviation).
    """

    def __init__(self, channels: int, periodic: Sequence[bool], width: int = 32, depth: int = 3, kernel: int = 5,
                 global_context: bool = True, set_width: int = 16, set_channels: int = 8,
                 baseline: str = "covariance regression", head: str = "additive") -> None:
        super().__init__()
        c = int(channels)
        self.channels = c
        self.baseline = str(baseline)
        self.head = str(head)
        if self.baseline not in BASELINES:
            raise ValueError(f"unknown baseline {baseline!r} (known: {', '.join(BASELINES)})")
        if self.head not in HEADS:
            raise ValueError(f"unknown head {head!r} (known: {', '.join(HEADS)})")
        if self.head == "linear gain" and self.baseline != "spread ratio":
            raise ValueError("the linear-gain head corrects the spread ratio: baseline 'spread ratio'")
        self.encoder = GridTrunk(2 * c, set_channels, periodic, set_width, 1, kernel, False)
        if self.head == "linear gain":
            self.drift = GridTrunk(len(CONTEXT_FEATURES) * c + 1 + set_channels, 3 * c, periodic, width, depth,
                                   kernel, global_context)
        else:
            self.drift = GridTrunk((3 + len(CONTEXT_FEATURES)) * c + 1 + set_channels, c, periodic, width, depth,
                                   kernel, global_context)

    def encode(self, ub_real: torch.Tensor, ua_real: torch.Tensor) -> torch.Tensor:
        """The pooled set encoding ``(B, E, *h)`` of the real pairs ``(B, M, C, *h)``."""
        b, m = ub_real.shape[:2]
        pairs = torch.cat([ub_real, ua_real - ub_real], 2).reshape(b * m, 2 * self.channels, *ub_real.shape[3:])
        e = self.encoder(pairs)
        return e.reshape(b, m, *e.shape[1:]).mean(dim=1)

    def forward(self, u: torch.Tensor, u0: torch.Tensor, q: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                pooled: torch.Tensor) -> torch.Tensor:
        r""":math:`D_\theta(U_t, t \mid u_0, C)`, ``(B, K, C, *h)``."""
        if self.head == "linear gain":
            b, k = u.shape[:2]
            out = self.drift(gain_inputs(t, context, pooled, k))
            return gain_endpoint(u, u0, t, context, out.reshape(b, k, *out.shape[1:]), self.channels)
        out = self.drift(drift_inputs(u, u0, q, t, context, pooled))
        return baseline_endpoint(self.baseline, u0, q, context, self.channels) + out.reshape(u.shape)
