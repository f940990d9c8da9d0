"""Generic forecast loops (nonlinear, tangent linear, adjoint) with post-processors.

As in OOPS, the loop lives in the core: ``initialize → step until the end
time → finalize``, calling every :class:`PostProcessor` at the initial time
and after each step.  Models only advance FieldSets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pyoops.interface.model import LinearModel, Model
from pyoops.interface.state import Increment, State
from pyoops.util.datetime import DateTime, Duration
from pyoops.util.errors import ConfigError, NumericalError
from pyoops.util.logging import progress

__all__ = [
    "PostProcessor",
    "StateRecorder",
    "TrajectorySaver",
    "c_ordered_copy",
    "forecast",
    "forecast_ad",
    "forecast_tl",
    "number_of_steps",
]


class PostProcessor:
    """Something that looks at the state during a forecast (output, H(x), trajectory)."""

    def initialize(self, state: Any, end: DateTime, step: Duration) -> None:
        """Before the first step; ``state`` is at the initial time."""

    def process(self, state: Any) -> None:
        """At the initial time and after every step."""

    def finalize(self, state: Any) -> None:
        """After the last step."""


class TrajectorySaver(PostProcessor):
    """Give the linear model the nonlinear trajectory at every step (OOPS's ``set_trajectory``)."""

    def __init__(self, linear_model: LinearModel):
        self.linear_model = linear_model

    def process(self, state: State) -> None:
        self.linear_model.set_trajectory(state)


def c_ordered_copy(fields: Any) -> dict[str, np.ndarray]:
    """C-ordered float64 copies of ``{variable: array}``.

    The memory order is part of the result: NumPy's reductions over the member axis
    (``mean(axis=0)``: pairwise with eight partial sums along a contiguous axis, row by
    row otherwise) and BLAS products sum in a different order for C- and F-ordered
    arrays.  The LETKF returns its analysis as a transposed view and a model keeps the
    order of its input, while the chunks of a parallel forecast come back C-ordered:
    every copy is made C-ordered so that serial and parallel runs agree bitwise.
    """
    return {v: np.array(a, dtype=np.float64, order="C") for v, a in fields.items()}


class StateRecorder(PostProcessor):
    """:func:`c_ordered_copy` of the state's fields at given times during a forecast, in ``states[time]``."""

    def __init__(self, times: Any):
        self.times = set(times)
        self.states: dict[DateTime, dict[str, np.ndarray]] = {}

    def process(self, state: Any) -> None:
        if state.time in self.times:
            self.states[state.time] = c_ordered_copy(state.fields)


def number_of_steps(length: Duration, step: Duration, what: str = "forecast length") -> int:
    """``length / step`` as an integer, or a ConfigError if it is not a multiple."""
    if step <= Duration(0):
        raise ConfigError(f"model time step must be positive, got {step}")
    if length < Duration(0):
        raise ConfigError(f"{what} must not be negative, got {length}")
    if length % step:
        raise ConfigError(f"{what} {length} is not a multiple of the model time step {step}")
    return int(round(length / step))


def forecast(model: Model, state: State, length: Duration, post: Sequence[PostProcessor] = (),
             show_progress: bool | None = None) -> State:
    """Advance ``state`` in place by ``length`` and return it.

    Raises :class:`~pyoops.util.errors.NumericalError` if the fields become
    non-finite (the model blew up), naming the time.
    """
    step = model.time_resolution
    nsteps = number_of_steps(Duration(length), step)
    end = state.time + Duration(length)
    model.initialize(state)
    for pp in post:
        pp.initialize(state, end, step)
    for pp in post:
        pp.process(state)
    for _ in progress(range(nsteps), total=nsteps, desc="forecast", enabled=show_progress):
        # A blow-up is reported below as one NumericalError, not as numpy warnings.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            state.fields = model.step(state.fields)
        state.time = state.time + step
        if not state.fields.is_finite():
            raise NumericalError(f"the forecast became non-finite at {state.time}: the model blew up "
                                 "(time step too long or unstable initial state?)")
        for pp in post:
            pp.process(state)
    model.finalize(state)
    for pp in post:
        pp.finalize(state)
    return state


def forecast_tl(linear_model: LinearModel, increment: Increment, length: Duration,
                post: Sequence[PostProcessor] = ()) -> Increment:
    """Propagate ``increment`` forward in place with the tangent-linear model."""
    step = linear_model.time_resolution
    nsteps = number_of_steps(Duration(length), step)
    end = increment.time + Duration(length)
    linear_model.initialize_tl(increment)
    for pp in post:
        pp.initialize(increment, end, step)
    for pp in post:
        pp.process(increment)
    for _ in range(nsteps):
        traj = linear_model.trajectory_at(increment.time)
        increment.fields = linear_model.step_tl(increment.fields, traj)
        increment.time = increment.time + step
        for pp in post:
            pp.process(increment)
    linear_model.finalize_tl(increment)
    for pp in post:
        pp.finalize(increment)
    return increment


def forecast_ad(linear_model: LinearModel, increment: Increment, length: Duration,
                post: Sequence[PostProcessor] = ()) -> Increment:
    """Propagate ``increment`` backward in place with the adjoint model (time decreases).

    Post-processors are called after each backward step, at the new (earlier) time,
    so an adjoint observer can add its forcing before the next step.
    """
    step = linear_model.time_resolution
    nsteps = number_of_steps(Duration(length), step)
    end = increment.time - Duration(length)
    linear_model.initialize_ad(increment)
    for pp in post:
        pp.initialize(increment, end, -step)
    for pp in post:
        pp.process(increment)
    for _ in range(nsteps):
        start = increment.time - step
        traj = linear_model.trajectory_at(start)
        increment.fields = linear_model.step_ad(increment.fields, traj)
        increment.time = start
        for pp in post:
            pp.process(increment)
    linear_model.finalize_ad(increment)
    for pp in post:
        pp.finalize(increment)
    return increment
