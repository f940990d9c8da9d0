"""``pyoops forecast``: run the model from an initial condition and write states."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import Field, model_validator

from pyoops.apps.base import Application, ApplicationParameters, specialise, union_of_parameters
from pyoops.config.parameters import DurationField, Parameters, PositiveDurationField
from pyoops.util.sizes import check_output_files, end_date, state_bytes
from pyoops.generic.forecast import PostProcessor, forecast, number_of_steps
from pyoops.generic.state import StateParameters
from pyoops.registry import ModelPlugin
from pyoops.util.datetime import DateTime, Duration
from pyoops.util.errors import ConfigError

__all__ = ["ForecastApplication", "ForecastParameters", "OutputParameters", "StateWriter", "check_output_times"]

logger = logging.getLogger("pyoops")


class OutputParameters(Parameters):
    """Where and when to write states.

    ``%date%`` in ``filename`` is replaced by the valid time (ISO-8601); with
    ``frequency`` it is required, since several states are written.
    """

    filename: str = Field(description="Output file; may contain %date%.")
    frequency: PositiveDurationField | None = Field(None, description="Write every this often (default: final state only).")
    first: DurationField = Field(Duration("PT0S"), description="Offset of the first output from the initial time.")

    @model_validator(mode="after")
    def _template(self) -> "OutputParameters":
        if self.frequency is not None and "%date%" not in self.filename:
            raise ValueError("with 'frequency', 'filename' must contain %date% (one file per output time)")
        return self

    def filename_at(self, time: DateTime) -> str:
        return self.filename.replace("%date%", str(time))

    def count(self, length: Duration) -> int:
        """Number of output times of a forecast of ``length``."""
        if self.frequency is None:
            return 1
        if self.first > length:
            return 0
        return int((length - self.first) / self.frequency) + 1


def check_output_times(output: OutputParameters, length: Duration, step: Duration, path: str,
                       files_per_time: int = 1, bytes_each: float = 0.0) -> int:
    """Refuse output times the forecast never reaches or that are not model times; check the file count.

    Returns the number of output times.  ``files_per_time`` files of ``bytes_each`` are
    written at each of them (members of an ensemble); their number and size are
    checked against :data:`~pyoops.util.resources.MAX_OUTPUT_FILES` and the disk.
    """
    if output.frequency is None:
        if "first" in output.model_fields_set:
            raise ConfigError("'first' only applies with 'frequency' (without it the final state is written)",
                              f"{path}.first")
    else:
        for key in ("first", "frequency"):
            value = getattr(output, key)
            if value % step:
                raise ConfigError(f"{value} is not a multiple of the model time step {step}: no state would be "
                                  "written at those times", f"{path}.{key}")
        if output.first < Duration(0) or output.first > length:
            raise ConfigError(f"must lie between PT0S and the forecast length {length}, got {output.first}",
                              f"{path}.first")
    count = output.count(length)
    check_output_files(count * files_per_time, bytes_each, output.filename, f"{path}.filename")
    return count


class StateWriter(PostProcessor):
    """Write the state at the requested output times."""

    def __init__(self, output: OutputParameters):
        self.output = output
        self.written: list[str] = []

    def initialize(self, state: Any, end: DateTime, step: Duration) -> None:
        self._start = state.time
        self._end = end

    def _due(self, time: DateTime) -> bool:
        if self.output.frequency is None:
            return False
        offset = time - self._start
        return offset >= self.output.first and not ((offset - self.output.first) % self.output.frequency)

    def process(self, state: Any) -> None:
        if self._due(state.time):
            self._write(state)

    def finalize(self, state: Any) -> None:
        if self.output.frequency is None:
            self._write(state)

    def _write(self, state: Any) -> None:
        name = self.output.filename_at(state.time)
        state.write(name)
        self.written.append(name)


class ForecastParameters(ApplicationParameters):
    """``pyoops forecast`` configuration (OOPS Forecast application)."""

    geometry: dict[str, Any] = Field(description="Geometry of the model plugin.")
    model: dict[str, Any] = Field(description="Model: {name: ..., tstep: ..., ...}.")
    initial_condition: StateParameters = Field(description="Initial state: {date, filename | analytic init}.")
    forecast_length: DurationField = Field(description="Length of the forecast (ISO-8601 duration).")
    output: OutputParameters | None = Field(None, description="Where to write states.")


class ForecastApplication(Application):
    """Run the nonlinear model: ``initial condition`` → ``forecast length`` → ``output``."""

    name = "forecast"
    summary = "run the model from an initial condition and write states"
    Parameters = ForecastParameters

    def validate_plugins(self, params: ForecastParameters) -> None:
        geometry = self.geometry(params.geometry)
        model = self.make("model", params.model, "model", geometry)
        try:
            number_of_steps(params.forecast_length, model.time_resolution)
        except ConfigError as exc:
            raise ConfigError(exc.message, "forecast length") from None
        end_date(params.initial_condition.date, params.forecast_length, "forecast length")
        if params.output is not None:
            check_output_times(params.output, params.forecast_length, model.time_resolution, "output",
                               bytes_each=state_bytes(geometry))
        self._geometry, self._model = geometry, model

    def run(self, params: ForecastParameters) -> dict[str, Any]:
        geometry, model = self._geometry, self._model
        state = self.plugin.state.from_config(geometry, params.initial_condition, "initial condition")
        logger.info("Initial state: %s norm %.12g", state.time, state.norm())
        writer = StateWriter(params.output) if params.output else None
        initial_norm = state.norm()
        forecast(model, state, params.forecast_length, [writer] if writer else [])
        logger.info("Final state: %s norm %.12g", state.time, state.norm())
        return {
            "initial norm": initial_norm,
            "final norm": state.norm(),
            "final date": str(state.time),
            "outputs": writer.written if writer else [],
            "state": state,
        }

    def schema_parameters(self, plugin: ModelPlugin | None) -> type[Parameters]:
        return specialise(ForecastParameters, "ForecastParameters",
                          geometry=self.geometry_schema_type(plugin),
                          model=union_of_parameters(self.registry.model, plugin))
