"""Parameters of an interface-test YAML file (see :mod:`pyoops.testing`).

Each section of the file has a :class:`~pyoops.config.parameters.Parameters` class, so a
misspelt key fails with the YAML path and the closest valid key, exactly as an
application configuration does.  The sections that describe objects (``geometry``,
``state``, ``model``, ``linear model``, the observers, the variable changes) are
validated later against the Parameters class of the maker they name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from pyoops.config.parameters import DurationField, Parameters, TimeWindowParameters, validate
from pyoops.config.yaml_io import load_config
from pyoops.util.datetime import Duration
from pyoops.util.errors import ConfigError

__all__ = [
    "GeometryTestParameters",
    "GetValuesTestParameters",
    "IncrementTestParameters",
    "InterfaceTestParameters",
    "LinearModelTestParameters",
    "ModelTestParameters",
    "ObservationsTestParameters",
    "VariableChangeTestParameters",
    "load_interface_parameters",
]


class GeometryTestParameters(Parameters):
    """``geometry test``: optional extras of the Geometry suite."""

    other_geometry: dict[str, Any] | None = Field(
        None, description="A different geometry of the same plugin: it must not compare equal (same_as).")


class IncrementTestParameters(Parameters):
    """``increment test``: tolerances and settings of the Increment suite."""

    tolerance: float = Field(1.0e-8, gt=0, description="Relative tolerance of algebraic identities and of the "
                                                        "serialize round trip (OOPS: 1e-8).")
    seed: int = Field(7, description="Seed of the random increments.")
    dirac: dict[str, Any] | None = Field(
        None, description="Dirac configuration given to Increment.dirac (default: first and last grid "
                          "point of the first variable, {ixdir: [0, n-1]}).")
    batch_size: int = Field(3, ge=2, description="Members of the batched-increment test.")


class GetValuesTestParameters(Parameters):
    """``get values test``: interpolation to random locations and its adjoint."""

    nlocs: int = Field(50, gt=0, description="Number of random locations.")
    seed: int = Field(11, description="Seed of the locations and fields.")
    locations: dict[str, list[float]] | None = Field(
        None, description="Explicit locations {coordinate: [values]} instead of random ones.")
    tolerance_AD: float = Field(1.0e-12, gt=0, description="Relative tolerance of the adjoint test.")
    tolerance: float = Field(1.0e-12, gt=0, description="Tolerance of the interpolation at grid points, "
                                                        "relative to the largest field value.")


class ModelTestParameters(Parameters):
    """``model test``: the nonlinear-model suite."""

    forecast_length: DurationField = Field(description="Length of the test forecasts.")
    final_norm: float | None = Field(None, description="Reference norm of the forecast at its end (regression).")
    tolerance: float = Field(1.0e-12, gt=0, description="Relative tolerance on the final norm.")
    ensemble_size: int = Field(3, ge=2, description="Members of the batched-forecast test.")
    ensemble_perturbation: float = Field(1.0e-3, gt=0, description="Standard deviation of the member perturbations.")
    ensemble_tolerance: float = Field(1.0e-14, ge=0, description="Relative tolerance between a batched member "
                                                                 "and its own forecast (0: bitwise).")
    seed: int = Field(13, description="Seed of the member perturbations.")


class LinearModelTestParameters(Parameters):
    """``linear model test``: the tangent-linear/adjoint suite (OOPS ``test::LinearModel``)."""

    forecast_length: DurationField = Field(description="Length of the trajectory and TL/AD runs.")
    first_multiplier_TL: float = Field(1.0, gt=0, description="Largest perturbation multiplier alpha of the "
                                                              "finite-difference test.")
    iterations_TL: int = Field(12, ge=1, description="Number of multipliers alpha = first * 10^-k, k = 0..n-1.")
    tolerance_TL: float = Field(1.0e-6, gt=0, description="Best relative TL error must be below this.")
    tolerance_AD: float = Field(1.0e-12, gt=0, description="Relative tolerance of the dot-product test.")
    tolerance_linearity: float = Field(1.0e-12, gt=0, description="Relative tolerance of M(a dx) = a M dx.")
    seed: int = Field(17, description="Seed of the random increments.")


class ObservationsTestParameters(Parameters):
    """``observations test``: obs operators (with their linear operators) and obs errors."""

    time_window: TimeWindowParameters = Field(description="Window of the observations.")
    observers: list[dict[str, Any]] = Field(min_length=1, description="Observers as in ``observations.observers``.")
    first_multiplier_TL: float = Field(1.0, gt=0, description="Largest multiplier of the GeoVaLs FD test.")
    iterations_TL: int = Field(12, ge=1, description="Number of multipliers alpha = first * 10^-k.")
    tolerance_TL: float = Field(1.0e-6, gt=0, description="Best relative TL error must be below this.")
    tolerance_AD: float = Field(1.0e-12, gt=0, description="Relative tolerance of the dot-product tests.")
    tolerance: float = Field(1.0e-12, gt=0, description="Relative tolerance of linearity and R R^-1 = I.")
    randomize_samples: int = Field(200, ge=10, description="Draws used to check the variance of ObsError.randomize.")
    seed: int = Field(19, description="Seed of the random GeoVaLs and obs vectors.")


class VariableChangeTestParameters(Parameters):
    """``variable change test``: a (linear) variable change, its adjoint and inverse."""

    variable_change: dict[str, Any] | None = Field(
        None, description="Nonlinear change: {variable change name: ..., ...}.")
    linear_variable_change: dict[str, Any] | None = Field(
        None, description="Linear change: {variable change name: ..., ...}.")
    input_variables: list[str] | None = Field(None, description="Variables in (default: the state's).")
    output_variables: list[str] = Field(min_length=1, description="Variables out.")
    test_inverse: bool = Field(False, description="Also check the (left) inverses.")
    first_multiplier_TL: float = Field(1.0, gt=0, description="Largest multiplier of the FD test.")
    iterations_TL: int = Field(12, ge=1, description="Number of multipliers alpha = first * 10^-k.")
    tolerance_TL: float = Field(1.0e-6, gt=0, description="Best relative TL error must be below this.")
    tolerance_AD: float = Field(1.0e-12, gt=0, description="Relative tolerance of the adjoint test.")
    tolerance_inverse: float = Field(1.0e-12, gt=0, description="Relative tolerance of the inverse tests.")
    seed: int = Field(23, description="Seed of the random fields.")

    @model_validator(mode="after")
    def _something_to_test(self) -> "VariableChangeTestParameters":
        if self.variable_change is None and self.linear_variable_change is None:
            raise ValueError("give 'variable change', 'linear variable change' or both")
        return self


class InterfaceTestParameters(Parameters):
    """The whole interface-test file (layout in :mod:`pyoops.testing`)."""

    model_plugin: str = Field(description="Name of the model plugin under test.")
    geometry: dict[str, Any] = Field(default_factory=dict, description="Geometry of the plugin.")
    geometry_test: GeometryTestParameters = Field(default_factory=GeometryTestParameters,
                                                  description="Geometry suite settings.")
    state: dict[str, Any] = Field(description="State config {date, filename | analytic init}, plus the "
                                              "test keys 'norm' (reference) and 'norm tolerance'.")
    increment_test: IncrementTestParameters = Field(default_factory=IncrementTestParameters,
                                                    description="Increment suite settings.")
    get_values_test: GetValuesTestParameters = Field(default_factory=GetValuesTestParameters,
                                                     description="GetValues suite settings.")
    model: dict[str, Any] | None = Field(None, description="Model config {name: ..., ...}.")
    model_test: ModelTestParameters | None = Field(None, description="Model suite settings.")
    linear_model: dict[str, Any] | None = Field(None, description="Linear model config {name: ..., ...}.")
    linear_model_test: LinearModelTestParameters | None = Field(None, description="LinearModel suite settings.")
    observations_test: ObservationsTestParameters | None = Field(None, description="ObsOperator/ObsError suites.")
    variable_change_test: VariableChangeTestParameters | None = Field(None, description="VariableChange suite.")

    @model_validator(mode="after")
    def _pairs(self) -> "InterfaceTestParameters":
        if self.model_test is not None and self.model is None:
            raise ValueError("'model test' needs a 'model' section")
        if self.linear_model_test is not None:
            if self.linear_model is None:
                raise ValueError("'linear model test' needs a 'linear model' section")
            if self.model is None:
                raise ValueError("'linear model test' needs a 'model' section (it makes the trajectory)")
        for key, test in (("model test", self.model_test), ("linear model test", self.linear_model_test)):
            if test is not None and test.forecast_length < Duration(0):
                raise ValueError(f"'{key}.forecast length' must not be negative, got {test.forecast_length}")
        if "norm" in self.state and not isinstance(self.state["norm"], (int, float)):
            raise ValueError(f"'state.norm' must be a number, got {self.state['norm']!r}")
        if "norm tolerance" in self.state and not isinstance(self.state["norm tolerance"], (int, float)):
            raise ValueError(f"'state.norm tolerance' must be a number, got {self.state['norm tolerance']!r}")
        return self

    # Convenience ------------------------------------------------------------------------
    def state_config(self) -> dict[str, Any]:
        """The ``state`` section without the test-only keys ``norm`` and ``norm tolerance``."""
        return {k: v for k, v in self.state.items() if k not in ("norm", "norm tolerance")}

    @property
    def state_norm(self) -> float | None:
        """Reference norm of the initial state, if given."""
        value = self.state.get("norm")
        return None if value is None else float(value)

    @property
    def state_norm_tolerance(self) -> float:
        """Relative tolerance of the initial-state norm (default 1e-12)."""
        return float(self.state.get("norm tolerance", 1.0e-12))


def load_interface_parameters(source: "str | Path | dict[str, Any]") -> tuple[InterfaceTestParameters, Path]:
    """Load and validate an interface-test YAML file.

    Parameters
    ----------
    source
        File name, or an already-parsed mapping (then relative file names are
        taken relative to the current directory).

    Returns
    -------
    tuple
        The validated :class:`InterfaceTestParameters` and the directory that
        relative file names in the YAML refer to.
    """
    doc = load_config(source if isinstance(source, dict) else Path(source))
    try:
        params = validate(InterfaceTestParameters, doc.data)
    except ConfigError as exc:
        if doc.filename is None:
            raise
        path = exc.path or str(exc).split(": ", 1)[0]
        raise ConfigError(f"{doc.where(path)}: {exc}") from None
    return params, doc.directory
