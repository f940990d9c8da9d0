"""``pyoops train-emulator``: train an emulator of an EDA's N-member standard deviation from M members.

Reads member archives (``cycle`` with ``output: {member archive: true}``, or ``eda`` with
``output member archive``), trains the network of :mod:`pyoops.emulators` (a
Gaussian predictive distribution of :math:`\\log\\hat\\sigma_N` at every point from
:math:`M` members) with a proper scoring rule, early stopping on the last cycles, and
writes the model (``.pt`` weights and ``.yaml`` description, together), the validation
loss curve (PNG) and a JSON report.  Needs PyTorch (``pip install 'pyoops[ml]'``)::

    model plugin: lorenz96
    geometry: {resol: 40}
    training data:
      archives: [cycle/members.nc]
      skip cycles: 50              # spin-up
      validation fraction: 0.2     # the last 20 % of every archive's cycles
    emulator:
      members: 5                   # M
      target members: 50           # N (default: all the archive has)
      predictors: [mean, gradient] # besides log stddev
      network: {width: 32, depth: 3, kernel: 5, global context: true}
    training:
      loss: gaussian nll           # or crps
      epochs: 200
      batch size: 32
      learning rate: 3.0e-3
      patience: 20
      seed: 1
      threads: 1
    output:
      model: out/emulator.pt       # and out/emulator.yaml
      directory: out               # loss_curve.png, training.json
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from pyoops.apps.base import Application, ApplicationParameters, specialise
from pyoops.config.parameters import Parameters
from pyoops.emulators import require_torch
from pyoops.registry import ModelPlugin
from pyoops.util.atomic import atomic_output
from pyoops.util.errors import ConfigError
from pyoops.util.figures import pyplot, save_figure

__all__ = ["TrainEmulatorApplication", "TrainEmulatorParameters"]

logger = logging.getLogger("pyoops")
#: The issue's (and ECMWF's) size limit of an EDA statistics emulator.
MAX_PARAMETERS = 200_000


class TrainingDataParameters(Parameters):
    archives: list[str] = Field(min_length=1, description="Member archives (netCDF), pooled in the order given.")
    skip_cycles: int = Field(0, ge=0, description="Cycles left out at the start of every archive (spin-up).")
    validation_fraction: float = Field(0.2, gt=0, lt=1, description="The last cycles of every archive, "
                                                                     "this fraction of them, for early stopping.")


class NetworkParameters(Parameters):
    width: int = Field(32, gt=0, description="Hidden channels.")
    depth: int = Field(3, ge=0, description="Residual blocks (two convolutions each).")
    kernel: int = Field(5, gt=0, description="Odd kernel size along each horizontal axis.")
    global_context: bool = Field(True, description="Add the domain mean of the hidden features at every point.")
    activation: Literal["gelu", "relu"] = Field("gelu", description="Hidden activation: the exact GELU, or the "
                                                "ReLU (cheaper in numpy inference).")

    @field_validator("kernel")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 != 1:
            raise ValueError(f"must be odd, got {value}")
        return value


class EmulatorParameters(Parameters):
    members: int = Field(5, ge=2, description="M, the members the emulator sees.")
    variables: list[str] | None = Field(None, min_length=1, description="The variables whose sigma is emulated "
                                        "(inputs and outputs; default: every variable of the geometry).")
    target_members: int | None = Field(None, ge=3, description="N, the ensemble size emulated (default: the "
                                                                "archive's).")
    predictors: list[Literal["mean", "gradient", "relative"]] = Field(
        default_factory=lambda: ["mean", "gradient"], description="Predictors besides log stddev; 'relative': the "
        "network sees log stddev relative to its domain mean (scale-equivariant emulator).")
    network: NetworkParameters = Field(default_factory=NetworkParameters, description="Architecture.")


class OptimiserParameters(Parameters):
    """What every emulator's training loop takes (:func:`pyoops.emulators.training.optimise`)."""

    epochs: int = Field(200, gt=0, description="Most epochs.")
    batch_size: int = Field(32, gt=0, description="Cycles per minibatch.")
    learning_rate: float = Field(3e-3, gt=0, description="Adam learning rate (halved on plateaus).")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay.")
    patience: int = Field(20, gt=0, description="Stop after this many epochs without a better validation loss.")
    seed: int = Field(0, ge=0, description="Seed of the weights, subsets and shuffling.")
    threads: int = Field(1, gt=0, description="PyTorch intra-op threads (results are bitwise reproducible for a "
                                              "given number).")


class TrainingParameters(OptimiserParameters):
    loss: Literal["gaussian nll", "crps"] = Field("gaussian nll", description="Proper score on log sigma_N.")


class TrainEmulatorOutputParameters(Parameters):
    model: str = Field(description="Model file (.pt); its description is the .yaml of the same stem.")
    directory: str | None = Field(None, description="Directory of loss_curve.png and training.json.")


class TrainEmulatorParameters(ApplicationParameters):
    geometry: dict[str, Any] = Field(description="Geometry of the archives (the emulator's grid).")
    training_data: TrainingDataParameters = Field(description="Member archives and the validation split.")
    emulator: EmulatorParameters = Field(default_factory=EmulatorParameters, description="M, N, predictors, "
                                                                                         "network.")
    training: TrainingParameters = Field(default_factory=TrainingParameters, description="Loss and optimisation.")
    output: TrainEmulatorOutputParameters = Field(description="Model file and report directory.")


class TrainEmulatorApplication(Application):
    """Train an EDA standard-deviation emulator on member archives."""

    name = "train-emulator"
    summary = "train an emulator of the N-member EDA standard deviation from M members (needs pyoops[ml])"
    Parameters = TrainEmulatorParameters

    def validate_plugins(self, params: TrainEmulatorParameters) -> None:
        require_torch("pyoops train-emulator")
        from pyoops.emulators.features import GridLayout, number_of_predictors

        self._geometry = self.geometry(params.geometry)
        self.layout = GridLayout.from_geometry(self._geometry,
                                               params.emulator.variables or list(self._geometry.variables),
                                               "emulator.variables")
        from pyoops.emulators.network import GridConvNet, parameter_count

        e = params.emulator
        net = GridConvNet(number_of_predictors(self.layout, e.predictors), self.layout.channels, self.layout.periodic,
                          e.network.width, e.network.depth, e.network.kernel, e.network.global_context,
                          e.network.activation)
        count = parameter_count(net)
        if count >= MAX_PARAMETERS:
            raise ConfigError(f"this network has {count} parameters, the limit is {MAX_PARAMETERS}: reduce width, "
                              "depth or kernel", "emulator.network")
        if e.target_members is not None and e.members >= e.target_members:
            raise ConfigError(f"members ({e.members}) must be fewer than target members ({e.target_members})",
                              "emulator.members")

    def _read(self, params: TrainEmulatorParameters) -> tuple[dict[str, np.ndarray], int, list[int]]:
        from pyoops.ensemble.member_archive import read_member_archive

        d = params.training_data
        parts, sizes = [], set()
        for name in d.archives:
            archive = read_member_archive(name, geometry=self._geometry, variables=self.layout.variables)
            if archive.ncycles <= d.skip_cycles:
                raise ConfigError(f"{name} has {archive.ncycles} cycles, not more than the {d.skip_cycles} skipped",
                                  "training data.skip cycles")
            parts.append(archive.select_cycles(np.arange(d.skip_cycles, archive.ncycles)))
            sizes.add(archive.nmembers)
        n = min(sizes)
        e = params.emulator
        target = e.target_members or n
        if target > n:
            raise ConfigError(f"target members {target} but the archives have {n} members",
                              "emulator.target members")
        if e.members >= target:
            raise ConfigError(f"members ({e.members}) must be fewer than the target members ({target})",
                              "emulator.members")
        members = {v: np.concatenate([p.members[v][:, :target] for p in parts]) for v in self.layout.variables}
        return members, target, [p.ncycles for p in parts]

    def run(self, params: TrainEmulatorParameters, show_progress: bool | None = None) -> dict[str, Any]:
        from pyoops.emulators.training import TrainingOptions, fit_emulator, training_set

        members, n, lengths = self._read(params)
        data = training_set(members, self.layout, n)
        # The last cycles of every archive validate (each archive may be another system or period).
        keep, check, start = [], [], 0
        for length in lengths:
            nval = max(1, int(round(params.training_data.validation_fraction * length)))
            if length - nval < 1:
                raise ConfigError(f"an archive of {length} cycles (after the skipped) leaves none for training",
                                  "training data.validation fraction")
            keep.append(np.arange(start, start + length - nval))
            check.append(np.arange(start + length - nval, start + length))
            start += length
        train, validation = data.select(np.concatenate(keep)), data.select(np.concatenate(check))
        e, t = params.emulator, params.training
        options = TrainingOptions(t.loss, t.epochs, t.batch_size, t.learning_rate, t.weight_decay, t.patience,
                                  t.seed, t.threads)
        logger.info("train-emulator: M=%d -> N=%d, %d training and %d validation cycles, %s", e.members, n,
                    train.ncycles, validation.ncycles, self.layout.spatial_shape)
        started = time.perf_counter()
        emulator, history = fit_emulator(self.layout, e.members, e.predictors,
                                         e.network.model_dump(by_alias=True), train, validation, options,
                                         self._geometry.describe(), show_progress)
        seconds = time.perf_counter() - started
        outputs = emulator.save(params.output.model)
        report = {"members": e.members, "target members": n, "parameters": emulator.parameters,
                  "training seconds": seconds, **{k: v for k, v in emulator.training.items() if k != "seconds"},
                  "validation": _validation_scores(emulator, validation, options.seed), "history": history}
        if params.output.directory is not None:
            directory = Path(params.output.directory)
            outputs.append(plot_history(history, directory / "loss_curve.png", f"{t.loss} of log sigma_N",
                                        "train-emulator loss"))
            name = directory / "training.json"
            with atomic_output(name, ".json") as tmp:
                tmp.write_text(json.dumps(report, indent=1) + "\n")
            outputs.append(str(name))
        v = report["validation"]
        logger.info("train-emulator: %d parameters, %d epochs in %.1f s; validation RMSE of log sigma %.4f "
                    "(naive %.4f), 90%% coverage %.3f", emulator.parameters, len(history), seconds,
                    v["rmse emulator"], v["rmse naive"], v["coverage 90"])
        return {"parameters": emulator.parameters, "epochs": len(history), "training seconds": seconds,
                "best validation loss": emulator.training["best validation loss"], **v, "outputs": outputs}

    def schema_parameters(self, plugin: ModelPlugin | None) -> type[Parameters]:
        return specialise(TrainEmulatorParameters, "TrainEmulatorParameters",
                          geometry=self.geometry_schema_type(plugin))


def _validation_scores(emulator: Any, validation: Any, seed: int) -> dict[str, float]:
    """RMSE of log sigma_N on the validation cycles: emulator median against naive log sigma_M plus the offset
    fitted in training, and the coverage of the 90 % interval (one fixed subset per cycle)."""
    from pyoops.emulators.scores import coverage, rmse
    from pyoops.emulators.training import draw_subsets
    from pyoops.util.random import generator

    idx = draw_subsets(validation.ncycles, validation.nmembers, emulator.members,
                       generator(seed, "emulator", "validation"))
    members = validation.subset(idx)
    mu, s = emulator.predict(members)
    mu_c, s_c = emulator.layout.to_channels(mu), emulator.layout.to_channels(s)
    y = validation.target
    offset = np.asarray(emulator.training["naive offset"]).reshape((1, -1) + (1,) * (y.ndim - 2))
    naive = emulator.inputs(members)[1].double().numpy() + offset
    return {"rmse emulator": rmse(mu_c, y), "rmse naive": rmse(naive, y), "coverage 90": coverage(mu_c, s_c, y)}


def plot_history(history: list[dict[str, float]], filename: Path, ylabel: str, title: str) -> str:
    """The training and validation loss per epoch, the best epoch marked (PNG written atomically)."""
    plt = pyplot()

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    ax.plot(epochs, [h["train loss"] for h in history], "C0-", label="training")
    ax.plot(epochs, [h["validation loss"] for h in history], "C3-", label="validation")
    best = int(np.argmin([h["validation loss"] for h in history]))
    ax.axvline(epochs[best], color="0.6", ls="--", lw=0.8, label=f"best (epoch {epochs[best]})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, filename)
