r"""A trained emulator: its file pair (weights + YAML) and inference (PyTorch).

Files
-----
``<name>.pt``
    The network's ``state_dict`` (``torch.save``; read back with ``weights_only=True``).
``<name>.yaml``
    Everything else, readable by people: ``format`` (``"pyoops EDA stddev emulator"``),
    ``format version``, ``weights`` (the ``.pt`` file name, relative) and its ``sha256``,
    ``members`` :math:`M`, ``target members`` :math:`N`, ``predictors``, ``layout``
    (variables, field shape, horizontal axes, periodicity, spacing), ``geometry`` (the
    ``describe()`` of the training geometry), ``network`` (width, depth, kernel, global
    context, parameter count), ``normalisation`` (mean and standard deviation of every
    input channel), ``training`` (seed, epochs, losses, time, versions).

Both are written through :func:`~pyoops.util.atomic.atomic_output`; inside an application
run they appear together when the run succeeds.  ``emulated stddev: {model: X}`` names
either file of the pair.

Inference
---------
:meth:`Emulator.predict` takes :math:`M` members ``{variable: (M, *grid)}`` (or a batch
``(B, M, *grid)``) and returns :math:`\mu` and :math:`s` of the Gaussian predictive
distribution of :math:`\log\hat\sigma_N` at every point, evaluating the trained network
in numpy (:mod:`.inference`: for fields this small, PyTorch's cost per operation would be
most of the time); :meth:`Emulator.stddev` the
median :math:`e^\mu` (or the mean :math:`e^{\mu + s^2/2}`) of :math:`\hat\sigma_N`.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from pyoops.emulators.features import (GridLayout, PointPredictors, network_predictors, number_of_predictors,
                                       predictors)
from pyoops.emulators.inference import NumpyGridConvNet
from pyoops.emulators.network import GridConvNet, parameter_count
from pyoops.util.atomic import atomic_output, input_path
from pyoops.util.errors import InputFileError

__all__ = ["EMULATOR_FORMAT", "Emulator", "cached_emulator", "emulator_files", "load_emulator", "load_weights",
           "read_description", "save_network", "state_bytes"]

EMULATOR_FORMAT = "pyoops EDA stddev emulator"
EMULATOR_FORMAT_VERSION = 1


def emulator_files(name: "str | os.PathLike[str]") -> tuple[Path, Path]:
    """``(weights .pt, description .yaml)`` of an emulator named by either file (or their common stem)."""
    path = Path(name)
    stem = path.with_suffix("") if path.suffix in (".pt", ".yaml", ".yml") else path
    return stem.with_suffix(".pt"), (path if path.suffix in (".yaml", ".yml") else stem.with_suffix(".yaml"))


def state_bytes(net: torch.nn.Module) -> bytes:
    """The parameters and buffers of ``net`` as bytes (names, shapes, dtypes and values): equal iff bitwise equal."""
    out = io.BytesIO()
    for key, tensor in net.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        out.write(f"{key}:{tuple(t.shape)}:{t.dtype};".encode())
        out.write(t.numpy().tobytes())
    return out.getvalue()


class Emulator:
    """A network with its layout, predictors and normalisation (see the module docstring)."""

    def __init__(self, layout: GridLayout, members: int, target_members: int, features: list[str],
                 network: Mapping[str, Any], mean: np.ndarray, std: np.ndarray, geometry: Any = None,
                 training: Mapping[str, Any] | None = None, net: GridConvNet | None = None) -> None:
        self.layout = layout
        self.members = int(members)
        self.target_members = int(target_members)
        self.features = list(features)
        self.network = {"width": int(network.get("width", 32)), "depth": int(network.get("depth", 3)),
                        "kernel": int(network.get("kernel", 5)),
                        "global context": bool(network.get("global context", True)),
                        "activation": str(network.get("activation", "gelu"))}   # files before it: the GELU
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.geometry = geometry
        self.training = dict(training or {})
        self.net = net if net is not None else self.build_network()
        self._numpy: tuple[Any, list[Any], list[int], NumpyGridConvNet] | None = None
        self._predictors: PointPredictors | None = None

    def build_network(self) -> GridConvNet:
        n = self.network
        return GridConvNet(number_of_predictors(self.layout, self.features), self.layout.channels,
                           self.layout.periodic, n["width"], n["depth"], n["kernel"], n["global context"],
                           n["activation"])

    @property
    def parameters(self) -> int:
        return parameter_count(self.net)

    # Inference ------------------------------------------------------------------------------
    def numpy_inputs(self, members: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Normalised predictors and the raw :math:`\\log\\hat\\sigma_M` base (float64), from ``{v: (B, M, *grid)}``."""
        x = predictors(members, self.layout, self.features)
        base = x[:, : self.layout.channels].copy()
        x = network_predictors(x, self.layout, self.features, point_major=False)
        shape = (1, -1) + (1,) * len(self.layout.horizontal)
        return (x - self.mean.reshape(shape)) / self.std.reshape(shape), base

    def inputs(self, members: Mapping[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`numpy_inputs` as float32 tensors (the network's input in training)."""
        x, base = self.numpy_inputs(members)
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(base.astype(np.float32))

    def numpy_network(self) -> NumpyGridConvNet:
        """The network's forward pass in numpy (:mod:`.inference`) with the input normalisation folded in (it takes
        the raw predictors), rebuilt whenever the weights changed.

        Its hidden layers run in float32, the precision of the weights and of the network in training: the
        result differs from a float64 evaluation by float32 rounding (about 1e-7 relative, as PyTorch's own
        evaluation does), and the matrix products, most of a prediction's arithmetic, take half the time."""
        cached = self._numpy
        if cached is not None and cached[0] is self.net and [p._version for p in cached[1]] == cached[2]:
            return cached[3]
        params = list(self.net.parameters())   # their in-place version counters move with every update
        state = {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        n = self.network
        numpy_net = NumpyGridConvNet(state, self.layout.periodic, n["kernel"], n["depth"], n["global context"],
                                     normalisation=(self.mean, self.std), dtype=np.float32,
                                     activation=n["activation"])
        self._numpy = (self.net, params, [p._version for p in params], numpy_net)
        return numpy_net

    def predict(self, members: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        r""":math:`\mu` and :math:`s` of :math:`\log\hat\sigma_N`, ``{variable: ([B,] *grid)}``, from :math:`M` members
        ``{variable: ([B,] M, *grid)}`` (the first :math:`M` are used if more are given).

        Everything runs point-major (:class:`~pyoops.emulators.features.PointPredictors` and
        :meth:`NumpyGridConvNet.heads <pyoops.emulators.inference.NumpyGridConvNet.heads>`); the first :math:`C`
        predictors are the base :math:`\log\hat\sigma_M`."""
        layout = self.layout
        fields = {v: np.asarray(members[v], dtype=np.float64) for v in layout.variables}
        single = next(iter(fields.values())).ndim == len(layout.shape) + 1
        fields = {v: (a[None] if single else a)[:, : self.members] for v, a in fields.items()}
        if self._predictors is None:
            self._predictors = PointPredictors(layout, self.features)
        x = self._predictors(fields)
        c = layout.channels
        out = self.numpy_network().heads(network_predictors(x, layout, self.features, point_major=True), x[:, :, :c],
                                         layout.spatial_shape)
        np.exp(out[:, :, c:], out=out[:, :, c:])
        both = layout.from_points(out.reshape(out.shape[:2] + (2, c)).transpose(2, 0, 1, 3))   # (2, B, *grid)
        pick = 0 if single else slice(None)
        return {v: a[0, pick] for v, a in both.items()}, {v: a[1, pick] for v, a in both.items()}

    def stddev(self, members: Mapping[str, np.ndarray], statistic: str = "median") -> dict[str, np.ndarray]:
        r"""The emulated :math:`\hat\sigma_N` from the log-normal :math:`\log\hat\sigma_N \sim \mathcal N(\mu, s^2)`:
        its median :math:`e^\mu` (``median``), mean :math:`\mathbb E\hat\sigma_N = e^{\mu + s^2/2}` (``mean``), or
        root mean variance :math:`(\mathbb E\hat\sigma_N^2)^{1/2} = e^{\mu + s^2}` (``variance``: the estimate of
        the variance :math:`\hat\sigma_N^2` that is best in mean square, as a B's variance wants; the median is
        smaller by :math:`e^{-s^2}`)."""
        mu, s = self.predict(members)
        shift = {"median": 0.0, "mean": 0.5, "variance": 1.0}.get(statistic)
        if shift is None:
            raise ValueError(f"statistic must be 'median', 'mean' or 'variance', got {statistic!r}")
        return {v: np.exp(m + shift * s[v] ** 2) for v, m in mu.items()}

    # Files ----------------------------------------------------------------------------------
    def description(self, weights_name: str, sha256: str) -> dict[str, Any]:
        return {"format": EMULATOR_FORMAT, "format version": EMULATOR_FORMAT_VERSION, "weights": weights_name,
                "sha256": sha256, "members": self.members, "target members": self.target_members,
                "predictors": self.features, "layout": self.layout.to_dict(), "geometry": self.geometry,
                "network": {**self.network, "parameters": self.parameters},
                "normalisation": {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]},
                "training": self.training}

    def save(self, name: "str | os.PathLike[str]") -> list[str]:
        """Write ``<stem>.pt`` and ``<stem>.yaml`` atomically; returns their names."""
        return save_network(name, self.net, self.description)


def save_network(name: "str | os.PathLike[str]", net: torch.nn.Module,
                 description: Callable[[str, str], dict[str, Any]]) -> list[str]:
    """Write the weights ``<stem>.pt`` of ``net`` and the YAML ``description(weights name, sha256)`` as
    ``<stem>.yaml``, each atomically; returns their names."""
    weights, described = emulator_files(name)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    data = buffer.getvalue()
    with atomic_output(weights, ".pt") as tmp:
        tmp.write_bytes(data)
    text = yaml.safe_dump(description(weights.name, hashlib.sha256(data).hexdigest()), sort_keys=False)
    with atomic_output(described, ".yaml") as tmp:
        tmp.write_text(text)
    return [str(weights), str(described)]


def read_description(name: "str | os.PathLike[str]", fmt: str, version: int) -> tuple[dict[str, Any], Path]:
    """The YAML description of a saved network (either file of the pair) checked for ``format`` and
    ``format version``, and the description's path; InputFileError on any problem."""
    _, described = emulator_files(name)
    try:
        text = input_path(str(described)).read_text()
    except FileNotFoundError:
        raise InputFileError(str(described), "emulator description not found") from None
    except OSError as exc:
        raise InputFileError(str(described), f"cannot be read ({exc.strerror or exc})") from None
    try:
        spec = yaml.safe_load(text)
        if not isinstance(spec, dict) or spec.get("format") != fmt:
            raise ValueError(f"format is not {fmt!r}")
        if spec.get("format version") != version:
            raise ValueError(f"format version {spec.get('format version')}, expected {version}")
    except (ValueError, yaml.YAMLError) as exc:
        raise InputFileError(str(described), f"is not a {fmt} description ({exc})") from None
    return spec, described


def load_weights(net: torch.nn.Module, spec: Mapping[str, Any], described: Path) -> None:
    """Load the weights file named in ``spec`` (next to ``described``) into ``net``, checking its sha256."""
    weights = described.parent / spec["weights"]
    try:
        data = input_path(str(weights)).read_bytes()
    except FileNotFoundError:
        raise InputFileError(str(weights), f"emulator weights named in {described} not found") from None
    if hashlib.sha256(data).hexdigest() != spec.get("sha256"):
        raise InputFileError(str(weights), f"emulator weights do not match the sha256 in {described}")
    try:
        state = torch.load(io.BytesIO(data), weights_only=True)
        net.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, EOFError) as exc:
        raise InputFileError(str(weights), f"emulator weights do not fit the network in {described} "
                                           f"({str(exc).splitlines()[0]})") from None


def load_emulator(name: "str | os.PathLike[str]") -> Emulator:
    """Read an emulator written by :meth:`Emulator.save` (either file of the pair); InputFileError on any problem."""
    spec, described = read_description(name, EMULATOR_FORMAT, EMULATOR_FORMAT_VERSION)
    try:
        layout = GridLayout.from_dict(spec["layout"])
        norm = spec["normalisation"]
        emulator = Emulator(layout, spec["members"], spec["target members"], spec["predictors"], spec["network"],
                            norm["mean"], norm["std"], spec.get("geometry"), spec.get("training"))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputFileError(str(described), f"is not a pyoops emulator description ({exc})") from None
    load_weights(emulator.net, spec, described)
    return emulator


_cache: dict[tuple[Any, str, int, int], Any] = {}


def cached_emulator(name: "str | os.PathLike[str]", loader: Callable[[Any], Any] | None = None) -> Any:
    """``loader(name)`` (default :func:`load_emulator`), kept per file (path, size and modification time of its
    weights) in this process: a B rebuilt every cycle does not reread it."""
    loader = loader or load_emulator
    weights, described = emulator_files(name)
    try:
        stat = os.stat(weights)
        key = (loader, os.path.abspath(described), stat.st_size, stat.st_mtime_ns)
    except OSError:
        return loader(name)  # names the missing file
    if key not in _cache:
        if len(_cache) > 8:
            _cache.clear()
        _cache[key] = loader(name)
    return _cache[key]
