"""``pyoops train-member-generator``: train the generator of emulated EDA members on archived cycles.

Reads member archives written with the members' analyses (``cycle`` with ``output: {member
archive: true, member archive analyses: true}``), trains the stochastic flow of
:mod:`pyoops.emulators.member_training` (bridge matching from each member's background to its
analysis, conditioned on :math:`M` real pairs and all backgrounds), with early stopping on the
last cycles, and writes the generator (``.pt`` weights and ``.yaml`` description), the loss
curve (PNG) and a JSON report.  ``cycle`` uses it with ``emulated members: {generator: flow,
model: FILE, real: M, emulated: K}``.  Needs PyTorch (``pip install 'pyoops[ml]'``)::

    model plugin: lorenz96
    geometry: {resol: 40}
    training data:
      archives: [full/members.nc]
      skip cycles: 200             # spin-up
      validation fraction: 0.2     # the last 20 % of the cycles
    generator:
      real members: 10             # M
      variables: [x]               # default: all the geometry's
      network: {width: 32, depth: 2, kernel: 5, global context: true}
      bridge: {sigma: 0.3, steps: 10}
      baseline: covariance regression   # or spread ratio
    training:
      epochs: 40
      batch size: 32
      learning rate: 2.0e-3
      patience: 8
      seed: 1
      threads: 1
    output:
      model: out/generator.pt      # and out/generator.yaml
      directory: out               # loss_curve.png, training.json
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from pyoops.apps.base import Application, ApplicationParameters, specialise
from pyoops.apps.train_emulator import (
    MAX_PARAMETERS,
    NetworkParameters,
    OptimiserParameters,
    TrainEmulatorOutputParameters,
    TrainingDataParameters,
    plot_history,
)
from pyoops.config.parameters import Parameters
from pyoops.emulators import require_torch
from pyoops.emulators.members import BASELINES, HEADS
from pyoops.registry import ModelPlugin
from pyoops.util.atomic import atomic_output
from pyoops.util.errors import ConfigError

__all__ = ["TrainMemberGeneratorApplication", "TrainMemberGeneratorParameters"]

logger = logging.getLogger("pyoops")


class GeneratorNetworkParameters(NetworkParameters):
    depth: int = Field(2, ge=0, description="Residual blocks of the drift (two convolutions each).")
    set_width: int = Field(16, gt=0, description="Hidden channels of the encoder of the real pairs.")
    set_channels: int = Field(8, gt=0, description="Channels of the pooled encoding of the real pairs.")
    head: Literal[HEADS] = Field(  # type: ignore[valid-type]
        "additive", description="additive (a correction of the baseline from every input) or linear gain (a gain, "
                                "a shift and the bridge weight from the real members only: the emulated analysis "
                                "is linear in the member's deviation; baseline 'spread ratio').")


class BridgeParameters(Parameters):
    sigma: float = Field(0.3, ge=0, description="Noise of the Brownian bridge, in units of the backgrounds' spread.")
    steps: int = Field(10, ge=1, description="Steps of the bridge sampler.")


class GeneratorParameters(Parameters):
    real_members: int = Field(ge=2, description="M, the real members the generator is conditioned on.")
    variables: list[str] | None = Field(None, min_length=1, description="The variables emulated (default: all the "
                                        "geometry's; a cycle derives the others with its 'variable change').")
    network: GeneratorNetworkParameters = Field(default_factory=GeneratorNetworkParameters,
                                                description="Architecture.")
    bridge: BridgeParameters = Field(default_factory=BridgeParameters, description="Noise and sampler steps.")
    baseline: Literal[BASELINES] = Field(  # type: ignore[valid-type]
        "covariance regression", description="The non-learned endpoint the network corrects: the covariance "
                                             "regression (square-root filters) or the spread ratio (EDAs: "
                                             "stable when the emulated members feed the members' B).")


class GeneratorTrainingParameters(OptimiserParameters):
    epochs: int = Field(40, gt=0, description="Most epochs.")
    learning_rate: float = Field(2e-3, gt=0, description="Adam learning rate (halved on plateaus).")
    patience: int = Field(8, gt=0, description="Stop after this many epochs without a better validation loss.")


class TrainMemberGeneratorParameters(ApplicationParameters):
    geometry: dict[str, Any] = Field(description="Geometry of the archives (the generator's grid).")
    training_data: TrainingDataParameters = Field(description="Member archives with analyses, validation split.")
    generator: GeneratorParameters = Field(description="M, network and bridge.")
    training: GeneratorTrainingParameters = Field(default_factory=GeneratorTrainingParameters,
                                                  description="Optimisation.")
    output: TrainEmulatorOutputParameters = Field(description="Model file and report directory.")


class TrainMemberGeneratorApplication(Application):
    """Train the generator of emulated members on member archives with analyses."""

    name = "train-member-generator"
    summary = "train the generator of emulated EDA members from archived (background, analysis) pairs " \
              "(needs pyoops[ml])"
    Parameters = TrainMemberGeneratorParameters

    def validate_plugins(self, params: TrainMemberGeneratorParameters) -> None:
        require_torch("pyoops train-member-generator")
        from pyoops.emulators.features import GridLayout
        from pyoops.emulators.member_network import MemberFlowNet
        from pyoops.emulators.network import parameter_count

        self._geometry = self.geometry(params.geometry)
        self.layout = GridLayout.from_geometry(self._geometry,
                                               params.generator.variables or list(self._geometry.variables),
                                               "generator.variables")
        n = params.generator.network
        if n.head == "linear gain" and params.generator.baseline != "spread ratio":
            raise ConfigError("the linear-gain head corrects the spread ratio: set 'baseline: spread ratio'",
                              "generator.network.head")
        count = parameter_count(MemberFlowNet(self.layout.channels, self.layout.periodic, n.width, n.depth, n.kernel,
                                              n.global_context, n.set_width, n.set_channels,
                                              params.generator.baseline, n.head))
        if count >= MAX_PARAMETERS:
            raise ConfigError(f"this network has {count} parameters, the limit is {MAX_PARAMETERS}: reduce width, "
                              "depth or kernel", "generator.network")

    def _read(self, params: TrainMemberGeneratorParameters) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        from pyoops.ensemble.member_archive import read_member_archive

        d = params.training_data
        backgrounds: list[dict[str, np.ndarray]] = []
        analyses: list[dict[str, np.ndarray]] = []
        sizes = set()
        for name in d.archives:
            archive = read_member_archive(name, geometry=self._geometry, variables=self.layout.variables)
            if archive.analyses is None:
                raise ConfigError(f"{name} holds backgrounds only: write it with 'member archive analyses: true'",
                                  "training data.archives")
            if archive.ncycles <= d.skip_cycles:
                raise ConfigError(f"{name} has {archive.ncycles} cycles, not more than the {d.skip_cycles} skipped",
                                  "training data.skip cycles")
            kept = archive.select_cycles(np.arange(d.skip_cycles, archive.ncycles))
            backgrounds.append(kept.members)
            analyses.append(kept.analyses or {})
            sizes.add(archive.nmembers)
        if len(sizes) != 1:
            raise ConfigError(f"the archives have different ensemble sizes {sorted(sizes)}", "training data.archives")
        n = sizes.pop()
        if params.generator.real_members >= n:
            raise ConfigError(f"real members ({params.generator.real_members}) must be fewer than the archives' "
                              f"{n} members", "generator.real members")
        variables = self.layout.variables
        return ({v: np.concatenate([b[v] for b in backgrounds]) for v in variables},
                {v: np.concatenate([a[v] for a in analyses]) for v in variables})

    def run(self, params: TrainMemberGeneratorParameters, show_progress: bool | None = None) -> dict[str, Any]:
        from pyoops.emulators.member_training import MemberTrainingOptions, fit_member_generator, member_pairs

        backgrounds, analyses = self._read(params)
        pairs = member_pairs(backgrounds, analyses, self.layout)
        ncycles = pairs.ncycles
        nval = max(1, int(round(params.training_data.validation_fraction * ncycles)))
        if ncycles - nval < 1:
            raise ConfigError(f"{ncycles} cycles leave none for training", "training data.validation fraction")
        train, validation = pairs.select(np.arange(ncycles - nval)), pairs.select(np.arange(ncycles - nval, ncycles))
        g, t = params.generator, params.training
        options = MemberTrainingOptions(t.epochs, t.batch_size, t.learning_rate, t.weight_decay, t.patience, t.seed,
                                        t.threads)
        logger.info("train-member-generator: M=%d of N=%d, %d training and %d validation cycles, %s",
                    g.real_members, pairs.nmembers, train.ncycles, validation.ncycles, self.layout.spatial_shape)
        started = time.perf_counter()
        model, history = fit_member_generator(self.layout, g.real_members, g.network.model_dump(by_alias=True),
                                              g.bridge.sigma, g.bridge.steps, train, validation, options,
                                              self._geometry.describe(), show_progress, g.baseline)
        seconds = time.perf_counter() - started
        outputs = model.save(params.output.model)
        report = {"real members": g.real_members, "members": pairs.nmembers, "parameters": model.parameters,
                  "training seconds": seconds, **{k: v for k, v in model.training.items() if k != "seconds"},
                  "history": history}
        if params.output.directory is not None:
            directory = Path(params.output.directory)
            outputs.append(plot_history(history, directory / "loss_curve.png", "bridge-matching loss",
                                        "train-member-generator loss"))
            name = directory / "training.json"
            with atomic_output(name, ".json") as tmp:
                tmp.write_text(json.dumps(report, indent=1) + "\n")
            outputs.append(str(name))
        logger.info("train-member-generator: %d parameters, %d epochs in %.1f s; validation loss %.3e "
                    "(%s baseline %.3e)", model.parameters, len(history), seconds,
                    model.training["best validation loss"], model.baseline,
                    model.training["baseline validation loss"])
        return {"parameters": model.parameters, "epochs": len(history), "training seconds": seconds,
                "best validation loss": model.training["best validation loss"],
                "baseline validation loss": model.training["baseline validation loss"],
                "outputs": outputs}

    def schema_parameters(self, plugin: ModelPlugin | None) -> type[Parameters]:
        return specialise(TrainMemberGeneratorParameters, "TrainMemberGeneratorParameters",
                          geometry=self.geometry_schema_type(plugin))
