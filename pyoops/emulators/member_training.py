r"""Training the generator of emulated members on archived EDA cycles (PyTorch).

Data
----
A member archive written with the members' analyses (``output: {member archive: true,
member archive analyses: true}`` in ``cycle``) holds, per cycle, the backgrounds and analyses of
all :math:`N` members of the full system.  A training example is a cycle, a random
:math:`M`-subset :math:`S` of its members playing the real ones (fresh subsets every epoch:
the members of a cycle are exchangeable), the other :math:`K = N - M` members as targets, a
bridge time :math:`t \sim \mathcal U(0, 1)` and noise :math:`\xi` per target.  The last
``validation fraction`` of the cycles (a contiguous block) is held out with fixed draws.

Loss
----
Bridge matching (:mod:`.members`): :math:`\mathbb E\,\lVert D_\theta(U_t, t\mid u_0, C) - u_1\rVert^2`
with :math:`U_t = (1-t)u_0 + t u_1 + \sigma\sqrt{t(1-t)}\,\xi`, averaged over points, channels and
targets; its minimiser is :math:`\mathbb E[u_1 \mid U_t, u_0, C]`, the drift whose bridge sampler
draws from :math:`p(u_1\mid u_0, C)`.  The history records the same loss for the linear
emulator (the untrained network) on the validation draws, the baseline the training improves.

Optimisation and reproducibility as :mod:`.training`: Adam, learning rate halved on plateaus,
early stopping with the best validation weights kept, weights initialised under
``torch.manual_seed(seed)`` in a forked RNG, every draw from seeded numpy streams,
deterministic algorithms with a fixed thread count: bitwise the same weights for the same
data, options and threads on the same CPU and library versions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pyoops.emulators.features import GridLayout
from pyoops.emulators.member_model import MemberGenerator
from pyoops.emulators.members import member_context, member_covariance_term, normalise, take_members
from pyoops.emulators.training import deterministic_torch, optimise
from pyoops.util.random import generator

__all__ = ["MemberPairs", "MemberTrainingOptions", "fit_member_generator", "member_pairs"]


@dataclass
class MemberPairs:
    """Normalised backgrounds ``ub`` and analyses ``ua`` ``(ncycles, N, C, *h)``, with each cycle's background
    mean ``centre`` and spread ``scale`` ``(ncycles, C, *h)``."""

    ub: np.ndarray
    ua: np.ndarray
    centre: np.ndarray
    scale: np.ndarray

    @property
    def ncycles(self) -> int:
        return int(self.ub.shape[0])

    @property
    def nmembers(self) -> int:
        return int(self.ub.shape[1])

    def select(self, cycles: np.ndarray) -> "MemberPairs":
        return MemberPairs(self.ub[cycles], self.ua[cycles], self.centre[cycles], self.scale[cycles])


def member_pairs(backgrounds: Mapping[str, np.ndarray], analyses: Mapping[str, np.ndarray],
                 layout: GridLayout) -> MemberPairs:
    """The pairs of every cycle from ``{variable: (ncycles, N, *grid)}`` backgrounds and analyses."""
    def channels(fields: Mapping[str, np.ndarray]) -> np.ndarray:
        first = np.asarray(fields[layout.variables[0]])
        c, n = first.shape[:2]
        flat = layout.to_channels({v: np.asarray(fields[v], dtype=np.float64).reshape(c * n, *layout.shape)
                                   for v in layout.variables})
        return flat.reshape(c, n, *flat.shape[1:])

    xb, xa = channels(backgrounds), channels(analyses)
    centre, scale = normalise(xb)
    return MemberPairs((xb - centre[:, None]) / scale[:, None], (xa - centre[:, None]) / scale[:, None], centre, scale)


@dataclass
class MemberTrainingOptions:
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    patience: int = 10
    seed: int = 0
    threads: int = 1


def _climate(pairs: MemberPairs) -> tuple[np.ndarray, np.ndarray]:
    flow = np.concatenate([np.log(pairs.scale), pairs.centre], axis=1)
    axes = (0,) + tuple(range(2, flow.ndim))
    std = flow.std(axis=axes)
    return flow.mean(axis=axes), np.where(std > 0, std, 1.0)


class _Draws:
    """One epoch's (or the validation's) examples as tensors: context, real pairs, targets, t and noise."""

    def __init__(self, pairs: MemberPairs, real: int, climate: tuple[np.ndarray, np.ndarray], sigma: float,
                 rng: np.random.Generator) -> None:
        n = pairs.nmembers
        subsets = np.argsort(rng.random((pairs.ncycles, n)), axis=1)
        s_idx, k_idx = np.sort(subsets[:, :real], axis=1), np.sort(subsets[:, real:], axis=1)
        ub_real, ua_real = take_members(pairs.ub, s_idx), take_members(pairs.ua, s_idx)
        u0, u1 = take_members(pairs.ub, k_idx), take_members(pairs.ua, k_idx)
        t = rng.random(u0.shape[:2])
        xi = rng.standard_normal(u0.shape)
        bridge = t.reshape(t.shape + (1,) * (u0.ndim - 2))
        ut = (1 - bridge) * u0 + bridge * u1 + sigma * np.sqrt(bridge * (1 - bridge)) * xi
        context = member_context(pairs.ub, s_idx, ua_real, pairs.centre, pairs.scale, climate)
        q = member_covariance_term(pairs.ub, u0, context, pairs.ub.shape[2])
        self.tensors = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
                        for a in (ut, u0, q, t, context, ub_real, ua_real, u1)]

    def batch(self, index: "torch.Tensor | slice") -> list[torch.Tensor]:
        return [a[index] for a in self.tensors]


def _loss(net: Any, batch: list[torch.Tensor]) -> torch.Tensor:
    ut, u0, q, t, context, ub_real, ua_real, u1 = batch
    return ((net(ut, u0, q, t, context, net.encode(ub_real, ua_real)) - u1) ** 2).mean()


def fit_member_generator(layout: GridLayout, real: int, network: Mapping[str, Any], sigma: float, steps: int,
                         train: MemberPairs, validation: MemberPairs, options: MemberTrainingOptions,
                         geometry: Any = None, show_progress: bool | None = None,
                         baseline: str = "covariance regression"
                         ) -> tuple[MemberGenerator, list[dict[str, float]]]:
    """Train a generator of the analyses of ``N - real`` members (:math:`N` = ``train.nmembers``) from ``real``,
    the network correcting the non-learned ``baseline`` (:data:`.members.BASELINES`).

    Returns the generator with the best validation weights and the history (one dict per
    epoch: ``epoch``, ``train loss``, ``validation loss``, ``learning rate``, ``seconds``).
    """
    n, m, seed = train.nmembers, int(real), int(options.seed)
    if not 2 <= m < n:
        raise ValueError(f"need 2 <= real members < members, got {m} and {n}")
    started = time.perf_counter()
    climate = _climate(train)
    model = MemberGenerator(layout, m, n, network, sigma, steps, climate, geometry, baseline=baseline)
    with deterministic_torch(options.threads):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.net = model.build_network()
        net = model.net
        val = _Draws(validation, m, climate, sigma, generator(seed, "member generator", "validation"))
        with torch.no_grad():
            baseline_loss = float(_loss(net, val.batch(slice(None))))   # the zero-head network: the baseline
        def epoch_losses(epoch: int) -> Iterator[tuple[torch.Tensor, int]]:
            draws = _Draws(train, m, climate, sigma, generator(seed, "member generator", "epoch", epoch))
            order = generator(seed, "member generator", "shuffle", epoch).permutation(train.ncycles)
            for start in range(0, train.ncycles, options.batch_size):
                b = torch.from_numpy(order[start:start + options.batch_size])
                yield _loss(net, draws.batch(b)), len(b)

        history, best = optimise(net, epoch_losses, lambda: float(_loss(net, val.batch(slice(None)))), options,
                                 "train member generator", show_progress)
    model._numpy = None
    best_epoch = int(np.argmin([h["validation loss"] for h in history])) + 1
    model.training = {"seed": seed, "epochs run": len(history), "best epoch": best_epoch,
                      "best validation loss": best, "baseline validation loss": baseline_loss,
                      "training cycles": train.ncycles, "validation cycles": validation.ncycles,
                      "threads": int(options.threads), "seconds": time.perf_counter() - started,
                      "torch": str(torch.__version__)}
    return model, history
