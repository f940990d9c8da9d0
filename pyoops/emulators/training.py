r"""Training an emulator on member archives (PyTorch).

Data
----
A member archive (:mod:`pyoops.ensemble.member_archive`) holds, per cycle :math:`c`, the
backgrounds of :math:`N_\mathrm{archive}` exchangeable members.  The target is
:math:`y_c = \log\hat\sigma_N` of the first :math:`N` of them; an input is made from an
:math:`M`-subset :math:`S` of those :math:`N` members.  Every epoch draws a fresh random
subset for every cycle (``generator(seed, "emulator", "subsets", epoch)``): the
:math:`\binom{N}{M}` subsets of a cycle are equally valid samples of what :math:`M` members
show, which multiplies the data without inventing any.  Validation cycles (the last
``validation fraction`` of the cycles, a contiguous block, so that serially correlated
cycles do not straddle the split) use one fixed subset per cycle.

Loss
----
With :math:`z = (y - \mu)/s` at every point, averaged over points, channels and cycles:
``gaussian nll`` :math:`\tfrac12 z^2 + \log s + \tfrac12\log 2\pi`, or ``crps`` the
Gaussian CRPS :math:`s\,(z\,\mathrm{erf}(z/\sqrt2) + 2\varphi(z) - 1/\sqrt\pi)`; both are
proper scoring rules on :math:`\log\hat\sigma_N`.

Optimisation: Adam; the learning rate halves after ``patience``/3 epochs without a better
validation loss; training stops after ``patience`` such epochs (early stopping) or at
``epochs``, and the best-validation weights are kept.

Reproducibility: the weights are initialised under ``torch.manual_seed(seed)`` (in a
forked RNG, leaving the caller's state alone), every other draw comes from seeded numpy
streams, PyTorch runs with ``use_deterministic_algorithms(True)`` and ``threads``
intra-op threads.  Two trainings with the same data, options and thread count give
bitwise the same weights on the same CPU and library versions.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pyoops.emulators.features import GridLayout, log_stddev, network_predictors, predictors
from pyoops.emulators.members import take_members
from pyoops.emulators.model import Emulator
from pyoops.util.logging import progress
from pyoops.util.random import generator

__all__ = ["TrainingOptions", "TrainingSet", "deterministic_torch", "draw_subsets", "fit_emulator", "optimise",
           "training_set"]


@dataclass
class TrainingSet:
    """Members ``{variable: (ncycles, N, *grid)}`` and the target :math:`\\log\\hat\\sigma_N` ``(ncycles, C, *h)``."""

    members: dict[str, np.ndarray]
    target: np.ndarray

    @property
    def ncycles(self) -> int:
        return int(self.target.shape[0])

    @property
    def nmembers(self) -> int:
        return int(next(iter(self.members.values())).shape[1])

    def select(self, cycles: np.ndarray) -> "TrainingSet":
        return TrainingSet({v: a[cycles] for v, a in self.members.items()}, self.target[cycles])

    def subset(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Members ``idx`` (``(ncycles, M)``) of every cycle, ``{variable: (ncycles, M, *grid)}``."""
        return {v: take_members(a, idx) for v, a in self.members.items()}


def training_set(members: Mapping[str, np.ndarray], layout: GridLayout, n: int) -> TrainingSet:
    """The first ``n`` members of every cycle and their :math:`\\log\\hat\\sigma_N`."""
    kept = {v: np.asarray(members[v][:, :n], dtype=np.float64) for v in layout.variables}
    target = layout.to_channels({v: log_stddev(a) for v, a in kept.items()})
    return TrainingSet(kept, target)


def draw_subsets(ncycles: int, n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """One random :math:`M`-subset of :math:`0..N-1` per cycle, ``(ncycles, M)`` (sorted rows)."""
    return np.sort(np.argsort(rng.random((ncycles, n)), axis=1)[:, :m], axis=1)


@dataclass
class TrainingOptions:
    loss: str = "gaussian nll"
    epochs: int = 200
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    patience: int = 20
    seed: int = 0
    threads: int = 1


@contextlib.contextmanager
def deterministic_torch(threads: int) -> Iterator[None]:
    """PyTorch with ``threads`` intra-op threads and deterministic algorithms, restored afterwards."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


def loss_terms(kind: str, mu: torch.Tensor, log_s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pointwise loss (see the module docstring)."""
    z = (y - mu) * torch.exp(-log_s)
    if kind == "gaussian nll":
        return 0.5 * z * z + log_s + 0.5 * math.log(2.0 * math.pi)
    if kind == "crps":
        s = torch.exp(log_s)
        pdf = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        return s * (z * torch.erf(z / math.sqrt(2.0)) + 2.0 * pdf - 1.0 / math.sqrt(math.pi))
    raise ValueError(f"loss must be 'gaussian nll' or 'crps', got {kind!r}")


def optimise(net: torch.nn.Module, epoch_losses: Callable[[int], Iterable[tuple[torch.Tensor, int]]],
             validation_loss: Callable[[], float], options: Any, desc: str, show_progress: bool | None = None
             ) -> tuple[list[dict[str, float]], float]:
    """The training loop of the emulators (see the module docstring): Adam, the learning rate halved after
    ``patience``/3 epochs without a better validation loss, early stopping after ``patience``, the best weights
    kept (loaded into ``net`` on return).

    ``epoch_losses(epoch)`` yields ``(loss, examples)`` for every minibatch of an epoch (the loss of the
    current weights; each is followed by one optimiser step); ``validation_loss()`` is evaluated without
    gradients after every epoch.  ``options`` has ``epochs``, ``learning_rate``, ``weight_decay`` and
    ``patience``.  Returns the history (one dict per epoch: ``epoch``, ``train loss``, ``validation loss``,
    ``learning rate``, ``seconds``) and the best validation loss.
    """
    optimiser = torch.optim.Adam(net.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5,
                                                           patience=max(1, options.patience // 3))
    history: list[dict[str, float]] = []
    best, best_state, since_best = math.inf, copy.deepcopy(net.state_dict()), 0
    bar = progress(range(options.epochs), total=options.epochs, desc=desc, enabled=show_progress)
    for epoch in bar:
        t0 = time.perf_counter()
        net.train()
        total, count = 0.0, 0
        for loss, examples in epoch_losses(epoch):
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * examples
            count += examples
        net.eval()
        with torch.no_grad():
            val = float(validation_loss())
        scheduler.step(val)
        train_loss = total / max(count, 1)
        history.append({"epoch": epoch + 1, "train loss": train_loss, "validation loss": val,
                        "learning rate": float(optimiser.param_groups[0]["lr"]), "seconds": time.perf_counter() - t0})
        if hasattr(bar, "set_postfix"):
            bar.set_postfix({"train": f"{train_loss:.4f}", "val": f"{val:.4f}"})
        if val < best:
            best, best_state, since_best = val, copy.deepcopy(net.state_dict()), 0
        else:
            since_best += 1
            if since_best >= options.patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    return history, best


def _normalisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes)
    std = x.std(axis=axes)
    return mean, np.where(std > 0, std, 1.0)


def fit_emulator(layout: GridLayout, members: int, features: Sequence[str], network: Mapping[str, Any],
                 train: TrainingSet, validation: TrainingSet, options: TrainingOptions, geometry: Any = None,
                 show_progress: bool | None = None) -> tuple[Emulator, list[dict[str, float]]]:
    """Train an emulator of :math:`\\log\\hat\\sigma_N` (:math:`N` = ``train.nmembers``) from ``members`` = :math:`M`.

    Returns the emulator with the best validation weights and the history (one dict per
    epoch: ``epoch``, ``train loss``, ``validation loss``, ``learning rate``, ``seconds``).
    """
    n, m, seed = train.nmembers, int(members), int(options.seed)
    if not 2 <= m < n:
        raise ValueError(f"need 2 <= members < target members, got {m} and {n}")
    started = time.perf_counter()
    with deterministic_torch(options.threads):
        # Normalisation and the initial offsets from one subset draw of the training cycles.
        first = train.subset(draw_subsets(train.ncycles, n, m, generator(seed, "emulator", "normalisation")))
        x0 = predictors(first, layout, features)
        mean, std = _normalisation(network_predictors(x0, layout, features, point_major=False))
        residual = train.target - x0[:, : layout.channels]
        emulator = Emulator(layout, m, n, list(features), network, mean, std, geometry)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            emulator.net = emulator.build_network()
        net = emulator.net
        axes = (0,) + tuple(range(2, residual.ndim))
        with torch.no_grad():
            net.beta.copy_(torch.from_numpy(residual.mean(axis=axes).astype(np.float32)))
            net.gamma.copy_(torch.from_numpy(np.log(residual.std(axis=axes)).astype(np.float32)))
        val_x, val_base = emulator.inputs(validation.subset(
            draw_subsets(validation.ncycles, n, m, generator(seed, "emulator", "validation"))))
        val_y = torch.from_numpy(validation.target.astype(np.float32))
        train_y = torch.from_numpy(train.target.astype(np.float32))
        def epoch_losses(epoch: int) -> Iterator[tuple[torch.Tensor, int]]:
            idx = draw_subsets(train.ncycles, n, m, generator(seed, "emulator", "subsets", epoch))
            x, base = emulator.inputs(train.subset(idx))
            order = generator(seed, "emulator", "shuffle", epoch).permutation(train.ncycles)
            for start in range(0, train.ncycles, options.batch_size):
                b = torch.from_numpy(order[start:start + options.batch_size])
                mu, log_s = net(x[b], base[b])
                yield loss_terms(options.loss, mu, log_s, train_y[b]).mean(), len(b)

        def validation_loss() -> float:
            vmu, vlog_s = net(val_x, val_base)
            return float(loss_terms(options.loss, vmu, vlog_s, val_y).mean())

        history, best = optimise(net, epoch_losses, validation_loss, options, "train-emulator", show_progress)
    best_epoch = int(np.argmin([h["validation loss"] for h in history])) + 1
    emulator.training = {"seed": seed, "loss": options.loss, "epochs run": len(history), "best epoch": best_epoch,
                         "best validation loss": best, "training cycles": train.ncycles,
                         "validation cycles": validation.ncycles, "threads": int(options.threads),
                         "seconds": time.perf_counter() - started, "torch": str(torch.__version__),
                         "naive offset": [float(b) for b in residual.mean(axis=axes)]}
    return emulator, history
