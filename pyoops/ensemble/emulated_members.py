r"""Cycling with emulated members: :math:`M` real analyses, the other :math:`N - M` produced by a generator.

A hybrid ensemble (ECMWF's hybrid 4D-Var/ML EDA) keeps the analyses of the *real* members
:math:`1..M` and replaces those of members :math:`M+1..N` by draws from a generator fed with
their backgrounds, the real pairs and all :math:`N` backgrounds; all :math:`N` members are then
forecast to the next cycle, so the next background covariance has :math:`N` members again.
In an EDA only the :math:`M` real 4D-Vars are run (their :math:`\mathbf B_e` still comes from
all :math:`N` backgrounds).  In the ETKF/LETKF the transform is computed from all :math:`N`
backgrounds and applied to the real members only (for that filter there is no saving: it is the
testbed of the method, as in the slides' Lorenz-96 experiment).

Generators (``emulated members: generator:``)
---------------------------------------------
``flow``
    The trained stochastic flow of :mod:`pyoops.emulators.member_model` (``model:`` its file;
    needs ``pyoops[ml]``).
``linear``
    A non-learned emulator (``baseline``): the covariance regression
    (:func:`pyoops.emulators.members.linear_endpoint`, the default): the member's
    background plus the real members' mean increment plus :math:`\kappa_S\odot\mathbf P^b(u_0 - \bar u^b_S)`,
    the covariance of all :math:`N` backgrounds applied to its deviation and scaled point by point by
    the regression of the real increments on the same term; or the spread ratio
    (:func:`pyoops.emulators.members.ratio_endpoint`): the member's deviation from the real
    backgrounds' mean scaled by the real members' ratio of analysis to background spread, around
    the real analyses' mean.  Each is the untrained starting point of a flow generator with that
    baseline.
``resample``
    Controls without information: Gaussian draws with the real analyses' mean and covariance,
    :math:`\bar x^a_S + \frac{1}{\sqrt{M-1}}\sum_{i\in S}\omega_i (x^a_i - \bar x^a_S)`,
    :math:`\omega\sim\mathcal N(0, \mathbf I_M)` — they add no direction outside the real span
    (such members leave an ETKF analysis unchanged).
``static B``
    Non-learned information: :math:`\bar x^a_S + \alpha\,\eta`, :math:`\eta\sim\mathcal N(0, \mathbf B_s)`
    with ``background error`` the static B (a SABER section); with ``match real spread`` (default)
    :math:`\alpha` makes the draws' mean variance equal to the real analyses' (the best case of
    this control), else :math:`\alpha = 1`.

Emulated variables
------------------
A generator may emulate some of the members' variables only (``flow``: those of its file;
``linear``: ``variables``), e.g. the QG streamfunction, from which the model recomputes the
potential vorticity and winds at its first step.  The members' other variables then follow
from the emulated ones through the model plugin's nonlinear ``variable change`` (OOPS's
VariableChange, e.g. ``{variable change name: QG}``), member by member, so every emulated
analysis is a consistent state.

Shadow analyses (``shadow analyses: true``)
-------------------------------------------
Training pairs from the hybrid's own cycles: every member is also analysed for real (its
observation perturbations are those it has in the full EDA: each member draws from its own
stream), the member archive keeps those real analyses with the hybrid's backgrounds, and the
cycle goes on with the emulated ones exactly as without the option.  A generator trained on
the full EDA's cycles meets, in the hybrid, backgrounds forecast from its own emulated
analyses; archives of shadow runs added to its training data show it those backgrounds with
their true analyses (the dataset aggregation of imitation learning).  The shadow analyses cost
what the full EDA's do: this is a way to make training data, not to cycle cheaply.

Every draw comes from the stream ``generator(seed, "emulated members", k)`` of cycle :math:`k`:
a run and its restart after a kill draw the same members.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from pyoops.config.parameters import Parameters
from pyoops.emulators.features import GridLayout
from pyoops.emulators.members import BASELINES
from pyoops.fields.fieldset import FieldSet
from pyoops.util.errors import ConfigError
from pyoops.util.random import generator
from pyoops.util.variables import Variables

__all__ = ["EmulatedMembers", "EmulatedMembersParameters"]

logger = logging.getLogger("pyoops")

GENERATORS = ("flow", "linear", "resample", "static B")


class EmulatedMembersParameters(Parameters):
    """The ``emulated members`` section of ``cycle``."""

    generator: Literal["flow", "linear", "resample", "static B"] = Field(
        "flow", description="flow (a trained generator, 'model'), linear (local regression on the real pairs), "
                            "resample (Gaussian with the real analyses' mean and covariance: no information), "
                            "static B (real mean plus static-B draws).")
    model: str | None = Field(None, description="flow: the generator (.pt or .yaml of pyoops "
                                                "train-member-generator).")
    real: int = Field(ge=2, description="M, the members analysed for real (members 1..M).")
    emulated: int = Field(ge=1, description="N - M, the members whose analyses are emulated (members M+1..N).")
    steps: int | None = Field(None, ge=1, description="flow: sampler steps (default: the generator's).")
    background_error: dict[str, Any] | None = Field(
        None, alias="background error", description="static B: the static covariance (SABER section).")
    match_real_spread: bool = Field(True, description="static B: scale the draws to the real analyses' mean variance.")
    baseline: Literal[BASELINES] = Field(  # type: ignore[valid-type]
        "covariance regression", description="linear: the covariance regression or the spread ratio "
                                             "(pyoops.emulators.members).")
    variables: list[str] | None = Field(
        None, min_length=1, description="linear: the variables emulated (default: all the members'); the others "
                                        "follow through 'variable change'. A flow generator emulates those of its "
                                        "file.")
    shadow_analyses: bool = Field(
        False, alias="shadow analyses",
        description="Also analyse the emulated members for real, for the member archive only: the archive pairs "
                    "every member's background in the hybrid cycle with its real analysis (training data on the "
                    "hybrid's own backgrounds), while the cycle goes on with the emulated ones. An EDA then costs "
                    "what the full one does. Needs 'output: {member archive: true, member archive analyses: true}'.")
    variable_change: dict[str, Any] | None = Field(
        None, alias="variable change",
        description="The model plugin's nonlinear variable change ({variable change name: ...}) giving the members' "
                    "other variables from the emulated ones, when the generator emulates only some of them.")

    @model_validator(mode="after")
    def _options_of_generator(self) -> "EmulatedMembersParameters":
        if (self.generator == "flow") != (self.model is not None):
            raise ValueError("'model' names the generator of 'flow', and only of it")
        if (self.generator == "static B") != (self.background_error is not None):
            raise ValueError("'background error' is the static B of 'static B', and only of it")
        if "baseline" in self.model_fields_set and self.generator != "linear":
            raise ValueError("'baseline' chooses the 'linear' emulator (a flow generator has its own in its file)")
        if self.variables is not None and self.generator != "linear":
            raise ValueError("'variables' chooses what 'linear' emulates (a flow generator emulates the variables of "
                             "its file; resample and static B draw every variable)")
        return self


class EmulatedMembers:
    """The generator of a cycling run (see the module docstring).

    Parameters
    ----------
    params:
        The ``emulated members`` section.
    geometry, variables, time, registry, plugin:
        Where the members live (the static B is built on them).
    seed:
        The experiment's seed.
    """

    def __init__(self, params: EmulatedMembersParameters, geometry: Any, variables: list[str], time: Any,
                 registry: Any, plugin: Any, seed: int) -> None:
        self.params = params
        self.kind = params.generator
        self.real = int(params.real)
        self.emulated = int(params.emulated)
        self.variables = list(variables)
        self.seed = int(seed)
        #: Whether every member is also analysed for real, for the member archive only.
        self.shadow = bool(params.shadow_analyses)
        self.model: Any = None
        self.covariance: Any = None
        #: The variables the generator draws (the others follow through the variable change).
        self.emulated_variables = list(params.variables or self.variables)
        if self.kind == "flow":
            from pyoops.emulators import require_torch

            require_torch("emulated members with generator 'flow'")
            from pyoops.emulators.member_model import load_member_generator
            from pyoops.emulators.model import cached_emulator

            self.model = cached_emulator(params.model, load_member_generator)
            if self.model.real != self.real:
                raise ConfigError(f"the generator {params.model} was trained with {self.model.real} real members, "
                                  f"not {self.real}", "emulated members.real")
            self.emulated_variables = list(self.model.layout.variables)
            self._check_variables("emulated members.model")
            layout = GridLayout.from_geometry(geometry, self.emulated_variables, "emulated members")
            if self.model.layout.shape != layout.shape:
                raise ConfigError(f"the generator {params.model} emulates {self.emulated_variables} on a grid of "
                                  f"shape {self.model.layout.shape}, the members have them on {layout.shape}",
                                  "emulated members.model")
            if self.model.members != self.members:
                logger.warning("the generator %s was trained on a %d-member ensemble, this one has %d: its inputs "
                               "(the spread and covariance of all members) come from another ensemble size",
                               params.model, self.model.members, self.members)
        elif self.kind == "linear":
            self._check_variables("emulated members.variables")
            self.layout = GridLayout.from_geometry(geometry, self.emulated_variables, "emulated members.variables")
        elif self.kind == "static B":
            from pyoops.saber.chain import ErrorCovariance

            self.covariance = ErrorCovariance(params.background_error, geometry, self.variables, time, registry,
                                              plugin, path="emulated members.background error")

        #: The members' variables not emulated, and the variable change that gives them.
        self.derived = [v for v in self.variables if v not in self.emulated_variables]
        self.change: Any = None
        if params.variable_change is not None:
            if not self.derived:
                raise ConfigError(f"the generator emulates every variable of the members ({self.variables}): there "
                                  "is nothing for 'variable change' to give", "emulated members.variable change")
            path = "emulated members.variable change"
            factory = registry.variable_change
            self.change = factory.maker_for(params.variable_change, path)(
                factory.parameters(params.variable_change, path), geometry)
        elif self.derived:
            raise ConfigError(f"the generator emulates {self.emulated_variables} only, the members also have "
                              f"{self.derived}: give 'variable change' (the model plugin's, e.g. {{variable change "
                              "name: ...}) to compute them from the emulated ones", "emulated members")

    def _check_variables(self, path: str) -> None:
        unknown = [v for v in self.emulated_variables if v not in self.variables]
        if unknown:
            raise ConfigError(f"the generator emulates {unknown}, which the members do not have (they have "
                              f"{self.variables})", path)

    @property
    def members(self) -> int:
        return self.real + self.emulated

    def complete(self, k: int, backgrounds: dict[str, np.ndarray], analyses: dict[str, np.ndarray]
                 ) -> dict[str, np.ndarray]:
        """The hybrid ensemble of cycle ``k``: the real analyses (the first :math:`M` of ``analyses``; later
        ones are ignored) followed by the emulated ones, ``{variable: (N, *grid)}``."""
        m = self.real
        real = {v: np.asarray(analyses[v][:m], dtype=np.float64) for v in self.variables}
        rng = generator(self.seed, "emulated members", k)
        emulated = self._emulate(backgrounds, real, rng)
        if self.derived:
            emulated.update(self._derive(emulated))
        return {v: np.concatenate([real[v], emulated[v]]) for v in self.variables}

    def _derive(self, emulated: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The members' variables not emulated, from the emulated ones through the variable change (member by
        member: a variable change acts on one state)."""
        wanted = Variables(self.derived)
        states = [self.change.change_var(FieldSet({v: emulated[v][j] for v in self.emulated_variables}), wanted)
                  for j in range(self.emulated)]
        return {v: np.stack([np.asarray(s[v], dtype=np.float64) for s in states]) for v in self.derived}

    def _emulate(self, backgrounds: dict[str, np.ndarray], real: dict[str, np.ndarray], rng: np.random.Generator
                 ) -> dict[str, np.ndarray]:
        m, e = self.real, self.emulated
        if self.kind == "flow":
            return self.model.sample(backgrounds, real, range(m), range(m, m + e), rng, self.params.steps)
        if self.kind == "linear":
            return self._linear(backgrounds, real)
        mean = {v: a.mean(axis=0) for v, a in real.items()}
        if self.kind == "resample":
            omega = rng.standard_normal((e, m)) / np.sqrt(m - 1)
            return {v: mean[v] + np.tensordot(omega, real[v] - mean[v], axes=1) for v in self.variables}
        draws = self.covariance.randomize(rng, e).fields
        alpha = 1.0
        if self.params.match_real_spread:
            real_var = np.mean([np.var(real[v], axis=0, ddof=1).mean() for v in self.variables])
            draw_var = np.mean([np.mean(np.asarray(draws[v]) ** 2) for v in self.variables])
            alpha = float(np.sqrt(real_var / draw_var)) if draw_var > 0 else 1.0
        return {v: mean[v] + alpha * np.asarray(draws[v]) for v in self.variables}

    def _linear(self, backgrounds: dict[str, np.ndarray], real: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from pyoops.emulators.members import emulation_cycle

        m, e = self.real, self.emulated
        cyc = emulation_cycle(self.layout, backgrounds, real, range(m), range(m, m + e),
                              baseline=self.params.baseline)
        return cyc.physical(self.layout, cyc.linear)
