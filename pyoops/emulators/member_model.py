r"""A trained generator of emulated EDA members: its file pair and its sampling (PyTorch to load, numpy to run).

Files: ``<name>.pt`` (the :class:`~pyoops.emulators.member_network.MemberFlowNet` weights) and
``<name>.yaml`` (``format: pyoops EDA member generator``, ``format version``, ``weights`` and
``sha256``, ``real members`` :math:`M`, ``members`` :math:`N` of the training EDA, ``layout``,
``geometry``, ``network``, ``bridge`` (noise :math:`\sigma` and sampler steps :math:`K`),
``baseline`` (the non-learned endpoint the network corrects; files without it: the covariance regression),
``climate`` (the normalisation of :math:`\log\sigma^b` and :math:`\bar x^b`) and ``training``),
written and read as the standard-deviation emulator's (:mod:`pyoops.emulators.model`).

Sampling (:meth:`MemberGenerator.sample`): the real members' context and set encoding are
computed once, then the bridge sampler of :mod:`.members` runs the trained network's forward
pass in numpy (:class:`~pyoops.emulators.inference.NumpyGridTrunk`) for all emulated members
together, drawing its noise from the caller's seeded generator: the draws are a deterministic
function of the inputs and the seed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pyoops.emulators.features import GridLayout
from pyoops.emulators.inference import NumpyGridTrunk
from pyoops.emulators.member_network import MemberFlowNet
from pyoops.emulators.members import (
    bridge_sample,
    drift_inputs,
    emulation_cycle,
    gain_endpoint,
    gain_inputs,
)
from pyoops.emulators.model import load_weights, read_description, save_network
from pyoops.emulators.network import parameter_count
from pyoops.util.errors import InputFileError

__all__ = ["MEMBER_GENERATOR_FORMAT", "MemberGenerator", "load_member_generator"]

MEMBER_GENERATOR_FORMAT = "pyoops EDA member generator"
MEMBER_GENERATOR_FORMAT_VERSION = 1


class MemberGenerator:
    """The network with its layout, bridge settings and normalisation (see the module docstring)."""

    def __init__(self, layout: GridLayout, real: int, members: int, network: Mapping[str, Any], sigma: float,
                 steps: int, climate: tuple[Sequence[float], Sequence[float]], geometry: Any = None,
                 training: Mapping[str, Any] | None = None, baseline: str = "covariance regression") -> None:
        self.baseline = str(baseline)
        self.layout = layout
        self.real = int(real)
        self.members = int(members)
        self.network = {"width": int(network.get("width", 32)), "depth": int(network.get("depth", 3)),
                        "kernel": int(network.get("kernel", 5)),
                        "global context": bool(network.get("global context", True)),
                        "set width": int(network.get("set width", 16)),
                        "set channels": int(network.get("set channels", 8)),
                        "head": str(network.get("head", "additive"))}
        self.sigma = float(sigma)
        self.steps = int(steps)
        self.climate = (np.asarray(climate[0], dtype=np.float64), np.asarray(climate[1], dtype=np.float64))
        self.geometry = geometry
        self.training = dict(training or {})
        self.net = self.build_network()
        self._numpy: tuple[NumpyGridTrunk, NumpyGridTrunk] | None = None

    def build_network(self) -> MemberFlowNet:
        n = self.network
        return MemberFlowNet(self.layout.channels, self.layout.periodic, n["width"], n["depth"], n["kernel"],
                             n["global context"], n["set width"], n["set channels"], self.baseline, n["head"])

    @property
    def parameters(self) -> int:
        return parameter_count(self.net)

    def numpy_network(self) -> tuple[NumpyGridTrunk, NumpyGridTrunk]:
        """The encoder's and the drift's forward passes in numpy (built once: call after training/loading)."""
        if self._numpy is None:
            state = {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
            n = self.network
            periodic = self.layout.periodic
            self._numpy = (NumpyGridTrunk(state, periodic, n["kernel"], 1, False, "encoder."),
                           NumpyGridTrunk(state, periodic, n["kernel"], n["depth"], n["global context"], "drift."))
        return self._numpy

    # Sampling -----------------------------------------------------------------------------------
    def sample(self, backgrounds: Mapping[str, np.ndarray], real_analyses: Mapping[str, np.ndarray],
               real: Sequence[int], emulated: Sequence[int], rng: np.random.Generator,
               steps: int | None = None) -> dict[str, np.ndarray]:
        r"""Emulated analyses ``{variable: (K, *grid)}`` of the ``emulated`` members.

        ``backgrounds``: all :math:`N` members' backgrounds ``{variable: (N, *grid)}``;
        ``real_analyses``: the analyses ``(M, *grid)`` of the members ``real`` (indices into the
        :math:`N`, in the same order); ``emulated``: the :math:`K` members to emulate from their
        backgrounds; ``rng``: the sampler's noise; ``steps``: sampler steps (default: the saved :math:`K`).
        """
        real = list(real)
        if len(real) != self.real:
            raise ValueError(f"this generator was trained with {self.real} real members, got {len(real)}")
        cyc = emulation_cycle(self.layout, backgrounds, real_analyses, real, emulated, self.climate, self.baseline)
        encoder, drift = self.numpy_network()
        pairs = np.concatenate([cyc.ub_real, cyc.ua_real - cyc.ub_real], axis=2)
        pooled = encoder.trunk(pairs.reshape(len(real), -1, *cyc.ub.shape[3:])).mean(axis=0)[None]

        if self.network["head"] == "linear gain":
            c = self.layout.channels

            def endpoint(u: np.ndarray, t: float) -> np.ndarray:
                out = drift.trunk(gain_inputs(t, cyc.context, pooled, 1))      # the same for every member
                return gain_endpoint(u, cyc.u0, t, cyc.context, out.reshape(1, 1, 3 * c, *u.shape[3:]), c)
        else:
            def endpoint(u: np.ndarray, t: float) -> np.ndarray:
                return cyc.linear + drift.trunk(drift_inputs(u, cyc.u0, cyc.q, t, cyc.context, pooled)
                                                ).reshape(u.shape)

        return cyc.physical(self.layout, bridge_sample(endpoint, cyc.u0, self.sigma, int(steps or self.steps), rng))

    # Files ----------------------------------------------------------------------------------------
    def description(self, weights_name: str, sha256: str) -> dict[str, Any]:
        return {"format": MEMBER_GENERATOR_FORMAT, "format version": MEMBER_GENERATOR_FORMAT_VERSION,
                "weights": weights_name, "sha256": sha256, "real members": self.real, "members": self.members,
                "layout": self.layout.to_dict(), "geometry": self.geometry,
                "network": {**self.network, "parameters": self.parameters},
                "bridge": {"sigma": self.sigma, "steps": self.steps}, "baseline": self.baseline,
                "climate": {"mean": [float(v) for v in self.climate[0]], "std": [float(v) for v in self.climate[1]]},
                "training": self.training}

    def save(self, name: "str | os.PathLike[str]") -> list[str]:
        """Write ``<stem>.pt`` and ``<stem>.yaml`` atomically; returns their names."""
        return save_network(name, self.net, self.description)


def load_member_generator(name: "str | os.PathLike[str]") -> MemberGenerator:
    """Read a generator written by :meth:`MemberGenerator.save` (either file); InputFileError on any problem."""
    spec, described = read_description(name, MEMBER_GENERATOR_FORMAT, MEMBER_GENERATOR_FORMAT_VERSION)
    try:
        generator = MemberGenerator(GridLayout.from_dict(spec["layout"]), spec["real members"], spec["members"],
                                    spec["network"], spec["bridge"]["sigma"], spec["bridge"]["steps"],
                                    (spec["climate"]["mean"], spec["climate"]["std"]), spec.get("geometry"),
                                    spec.get("training"), spec.get("baseline", "covariance regression"))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputFileError(str(described), f"is not a {MEMBER_GENERATOR_FORMAT} description ({exc})") from None
    load_weights(generator.net, spec, described)
    generator.net.eval()
    return generator

