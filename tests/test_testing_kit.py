"""The interface test kit passes a correct toy plugin and fails broken ones.

A small in-process model plugin ("toy": explicit-Euler Lorenz-96 tendencies on a
periodic 1-D grid, with its TL and AD written by hand) runs the whole
:class:`~pyoops.testing.InterfaceTests` suite.  Then each check of
:mod:`pyoops.testing.checks` is given a deliberately broken object (a wrong
adjoint, a TL that is not the derivative, a model that rolls the wrong axis of
a batched array, ...) and must raise :class:`AssertionError`.
"""

from __future__ import annotations

import types
from typing import Any, Literal

import numpy as np
import pytest
from pydantic import Field

from pyoops.config import DurationField, Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.generic.forecast import forecast
from pyoops.generic.grid import Axis, SparseInterpolator, StructuredGrid
from pyoops.generic.obs_error import DiagonalObsError
from pyoops.generic.obs_operators import IdentityObsOperator, LinearIdentityObsOperator
from pyoops.generic.state import GenericIncrement, GenericState
from pyoops.interface.model import LinearModel, Model
from pyoops.interface.observations import GeoVaLs
from pyoops.interface.variable_change import LinearVariableChange, VariableChange
from pyoops.registry import Registry, hookimpl
from pyoops.testing import (
    GeometryTests,
    GetValuesTests,
    IncrementTests,
    InterfaceEnvironment,
    InterfaceTestBase,
    InterfaceTests,
    StateTests,
    VariableChangeTests,
    checks,
    load_interface_parameters,
)
from pyoops.util.datetime import Duration
from pyoops.util.errors import ConfigError
from pyoops.util.random import generator
from pyoops.util.variables import Variables

TIME_UNIT = 5 * 86400.0  # OOPS Lorenz convention: PT6H is dt = 0.05


# =======================================================================================
# A toy model plugin
# =======================================================================================
class ToyGeometryParameters(Parameters):
    resol: int = Field(gt=3)


class ToyGeometry(StructuredGrid):
    Parameters = ToyGeometryParameters

    def __init__(self, params: ToyGeometryParameters):
        super().__init__([Axis.periodic_axis("x", params.resol, 1.0, dim="position")], ["x"])


class ToyState(GenericState):
    analytic_methods = ("sinusoid",)

    @classmethod
    def analytic_init(cls, geometry, config, date, path):
        n = geometry.shape[0]
        return FieldSet({"x": 8.0 + np.sin(2 * np.pi * np.arange(n) / n)})


class ToyModelParameters(Parameters):
    name: Literal["Toy", "ToyRollBug", "ToyNoisy"]
    f: float = 8.0
    tstep: DurationField = Field(Duration("PT6H"))


def tendency(x: np.ndarray, f: float) -> np.ndarray:
    return (np.roll(x, -1, -1) - np.roll(x, 2, -1)) * np.roll(x, 1, -1) - x + f


class ToyModel(Model):
    """x_{k+1} = x_k + dt * L96 tendency (explicit Euler), batched over leading axes."""

    Parameters = ToyModelParameters

    @property
    def time_resolution(self) -> Duration:
        return self.params.tstep

    @property
    def dt(self) -> float:
        return self.params.tstep.total_seconds() / TIME_UNIT

    def step(self, fields: FieldSet) -> FieldSet:
        x = fields["x"]
        return FieldSet({"x": x + self.dt * tendency(x, self.params.f)}, copy=False)


class ToyTLM(LinearModel):
    Parameters = ToyModelParameters

    @property
    def time_resolution(self) -> Duration:
        return self.params.tstep

    @property
    def dt(self) -> float:
        return self.params.tstep.total_seconds() / TIME_UNIT

    def step_tl(self, dfields: FieldSet, trajectory: FieldSet) -> FieldSet:
        x, dx = trajectory["x"], dfields["x"]
        c = np.roll(x, 1, -1)
        d = np.roll(x, -1, -1) - np.roll(x, 2, -1)
        jdx = (np.roll(dx, -1, -1) - np.roll(dx, 2, -1)) * c + d * np.roll(dx, 1, -1) - dx
        return FieldSet({"x": dx + self.dt * jdx}, copy=False)

    def step_ad(self, dfields: FieldSet, trajectory: FieldSet) -> FieldSet:
        x, w = trajectory["x"], dfields["x"]
        c = np.roll(x, 1, -1)
        d = np.roll(x, -1, -1) - np.roll(x, 2, -1)
        jtw = np.roll(w * c, 1, -1) - np.roll(w * c, -2, -1) + np.roll(w * d, -1, -1) - w
        return FieldSet({"x": w + self.dt * jtw}, copy=False)


class SquareParameters(Parameters):
    variable_change_name: Literal["Square"]


class SquareChange(VariableChange):
    """x -> (x, xsq = x**2), inverse xsq... -> x."""

    Parameters = SquareParameters

    def change_var(self, fields: FieldSet, variables_out: Variables) -> FieldSet:
        all_out = {"x": fields["x"].copy(), "xsq": fields["x"] ** 2}
        return FieldSet({v: all_out[v] for v in variables_out}, copy=False)

    def change_var_inverse(self, fields: FieldSet, variables_out: Variables) -> FieldSet:
        return FieldSet({"x": fields["x"].copy()}, copy=False)


class LinearSquareChange(LinearVariableChange):
    Parameters = SquareParameters

    def set_trajectory(self, background: FieldSet) -> None:
        self.x = background["x"].copy()

    def multiply(self, dx: FieldSet, variables_out: Variables) -> FieldSet:
        return FieldSet({"x": dx["x"].copy(), "xsq": 2 * self.x * dx["x"]}, copy=False)

    def multiply_ad(self, dy: FieldSet, variables_out: Variables) -> FieldSet:
        return FieldSet({"x": dy["x"] + 2 * self.x * dy["xsq"]}, copy=False)

    def multiply_inverse(self, dy: FieldSet, variables_out: Variables) -> FieldSet:
        return FieldSet({"x": dy["x"].copy()}, copy=False)

    def multiply_inverse_ad(self, dx: FieldSet, variables_out: Variables) -> FieldSet:
        return FieldSet({"x": dx["x"].copy(), "xsq": np.zeros_like(dx["x"])}, copy=False)


@hookimpl
def _register_toy(registry: Registry) -> None:
    registry.add_model_plugin("toy", geometry=ToyGeometry, state=ToyState)
    registry.model.register("Toy", ToyModel)
    registry.linear_model.register("Toy", ToyTLM)
    registry.obs_operator.register("Identity", IdentityObsOperator)
    registry.linear_obs_operator.register("Identity", LinearIdentityObsOperator)
    registry.obs_error.register("diagonal", DiagonalObsError)
    registry.variable_change.register("Square", SquareChange)
    registry.linear_variable_change.register("Square", LinearSquareChange)


def toy_registry() -> Registry:
    """A registry holding only the toy plugin and the generic obs makers it uses."""
    registry = Registry()
    registry.register_plugin(types.SimpleNamespace(pyoops_register=_register_toy), name="toy")
    return registry


def independent_final_norm(n: int, f: float, dt: float, nsteps: int) -> float:
    """The toy forecast computed without any pyoops or test-plugin code."""
    x = [8.0 + np.sin(2 * np.pi * j / n) for j in range(n)]
    for _ in range(nsteps):
        x = [x[j] + dt * ((x[(j + 1) % n] - x[(j - 2) % n]) * x[(j - 1) % n] - x[j] + f) for j in range(n)]
    return float(np.sqrt(np.mean(np.square(x))))


N = 12
TOY_CONFIG: dict[str, Any] = {
    "model plugin": "toy",
    "geometry": {"resol": N},
    "geometry test": {"other geometry": {"resol": N + 2}},
    # mean over a period of (8 + sin)^2 is 64 + 1/2: an analytic reference norm.
    "state": {"date": "2010-01-01T00:00:00Z", "analytic init": {"method": "sinusoid"},
              "norm": float(np.sqrt(64.5)), "norm tolerance": 1.0e-14},
    "increment test": {"tolerance": 1.0e-12},
    "model": {"name": "Toy", "f": 8.0, "tstep": "PT6H"},
    "model test": {"forecast length": "P1D", "final norm": independent_final_norm(N, 8.0, 0.05, 4),
                   "tolerance": 1.0e-13, "ensemble tolerance": 0.0},
    "linear model": {"name": "Toy", "f": 8.0, "tstep": "PT6H"},
    "linear model test": {"forecast length": "P1D", "tolerance TL": 1.0e-7, "tolerance AD": 1.0e-13},
    "observations test": {
        "time window": {"begin": "2009-12-31T21:00:00Z", "length": "PT6H"},
        "observers": [{
            "obs space": {"name": "x grid", "simulated variables": ["x"],
                          "generate": {"obs frequency": "PT3H", "obs density": 6, "obs error": 0.5,
                                       "locations": "random", "random seed": 3}},
            "obs operator": {"name": "Identity"},
            "obs error": {"covariance model": "diagonal"},
        }],
    },
    "variable change test": {
        "variable change": {"variable change name": "Square"},
        "linear variable change": {"variable change name": "Square"},
        "output variables": ["x", "xsq"],
        "test inverse": True,
    },
}


# =======================================================================================
# The whole kit on the correct toy plugin
# =======================================================================================
class TestToyInterface(InterfaceTests):
    """Every suite passes (nothing skipped: every optional section is configured)."""

    config = TOY_CONFIG

    @classmethod
    def make_registry(cls) -> Registry:
        return toy_registry()


class TestToyPartialSuites(GeometryTests, VariableChangeTests):
    """A plugin may compose the suites it supports; the optional variable-change suite skips."""

    config = {k: v for k, v in TOY_CONFIG.items() if k != "variable change test"}

    @classmethod
    def make_registry(cls) -> Registry:
        return toy_registry()


@pytest.fixture(scope="module")
def env() -> InterfaceEnvironment:
    return InterfaceEnvironment.from_file(TOY_CONFIG, registry=toy_registry())


def rng(*labels: Any) -> np.random.Generator:
    return generator(2024, "test_testing_kit", *labels)


def test_independent_reference_matches_toy_model(env):
    """The regression value above comes from plain Python, not from ToyModel."""
    x = forecast(env.model, env.initial_state(), Duration("P1D"), show_progress=False)
    assert x.norm() == pytest.approx(TOY_CONFIG["model test"]["final norm"], rel=1e-13)


# =======================================================================================
# Comparisons
# =======================================================================================
def test_relative_difference_is_symmetric_and_scale_free():
    assert checks.relative_difference(1.0, 1.0) == 0.0
    assert checks.relative_difference(0.0, 0.0) == 0.0
    assert checks.relative_difference(2.0, 1.0) == checks.relative_difference(1.0, 2.0) == 0.5
    assert checks.relative_difference(2e10, 1e10) == 0.5
    assert np.isnan(checks.relative_difference(np.nan, 1.0))
    with pytest.raises(AssertionError, match="tolerance"):
        checks.assert_relative(np.nan, 1.0, 1.0, "NaN")
    assert checks.assert_relative(1.0, 1.0 + 1e-13, 1e-12, "close") < 1e-12


def test_check_functions_return_measured_errors(env):
    model, tlm, x = env.model, env.linear_model, env.initial_state()
    checks.run_trajectory(model, tlm, x, Duration("P1D"))
    ad = checks.check_linear_model_adjoint(tlm, env.increment(), Duration("P1D"), rng("ad"), 1e-13)
    assert 0.0 <= ad < 1e-13
    tl = checks.check_linear_model_tl(model, tlm, x, env.increment(), Duration("P1D"), rng("tl"), 1.0, 12, 1e-7)
    assert 0.0 < tl < 1e-7


# =======================================================================================
# Broken objects make the checks fail
# =======================================================================================
class WrongAdjointTLM(ToyTLM):
    """step_ad off by a factor 1 + 1e-6."""

    def step_ad(self, dfields, trajectory):
        out = super().step_ad(dfields, trajectory)
        return FieldSet({"x": out["x"] * (1 + 1e-6)}, copy=False)


class NotTheDerivativeTLM(ToyTLM):
    """A consistent TL/AD pair that forgets the -x damping term: adjoint fine, TL wrong."""

    def step_tl(self, dfields, trajectory):
        return FieldSet({"x": super().step_tl(dfields, trajectory)["x"] + self.dt * dfields["x"]}, copy=False)

    def step_ad(self, dfields, trajectory):
        return FieldSet({"x": super().step_ad(dfields, trajectory)["x"] + self.dt * dfields["x"]}, copy=False)


def _params(env: InterfaceEnvironment, section: str, cls: Any) -> Any:
    return cls.Parameters.model_validate(TOY_CONFIG[section])


def test_wrong_adjoint_fails_the_adjoint_check(env):
    tlm = WrongAdjointTLM(_params(env, "linear model", ToyTLM), env.geometry)
    checks.run_trajectory(env.model, tlm, env.initial_state(), Duration("P1D"))
    with pytest.raises(AssertionError, match="adjoint test failed"):
        checks.check_linear_model_adjoint(tlm, env.increment(), Duration("P1D"), rng("wrong ad"), 1e-12)
    # ... while its TL is still the true derivative.
    checks.check_linear_model_tl(env.model, tlm, env.initial_state(), env.increment(), Duration("P1D"),
                                 rng("wrong ad tl"), 1.0, 12, 1e-7)


def test_tl_that_is_not_the_derivative_fails_the_fd_check(env):
    tlm = NotTheDerivativeTLM(_params(env, "linear model", ToyTLM), env.geometry)
    checks.run_trajectory(env.model, tlm, env.initial_state(), Duration("P1D"))
    # TL and AD agree with each other, so the dot-product test cannot see the bug ...
    checks.check_linear_model_adjoint(tlm, env.increment(), Duration("P1D"), rng("nd ad"), 1e-13)
    checks.check_linear_model_linearity(tlm, env.increment(), Duration("P1D"), rng("nd lin"), 1e-12)
    # ... the finite-difference test does.
    with pytest.raises(AssertionError, match="does not match finite differences"):
        checks.check_linear_model_tl(env.model, tlm, env.initial_state(), env.increment(), Duration("P1D"),
                                     rng("nd tl"), 1.0, 12, 1e-7)


def test_affine_tl_fails_zero_and_linearity(env):
    class AffineTLM(ToyTLM):
        def step_tl(self, dfields, trajectory):
            return FieldSet({"x": super().step_tl(dfields, trajectory)["x"] + 1e-9}, copy=False)

    tlm = AffineTLM(_params(env, "linear model", ToyTLM), env.geometry)
    checks.run_trajectory(env.model, tlm, env.initial_state(), Duration("P1D"))
    with pytest.raises(AssertionError, match="TL of a zero increment"):
        checks.check_linear_model_zero(tlm, env.increment(), Duration("P1D"))
    with pytest.raises(AssertionError, match="linearity"):
        checks.check_linear_model_linearity(tlm, env.increment(), Duration("P1D"), rng("affine"), 1e-12)


def test_linear_model_with_another_time_step_is_rejected(env):
    params = ToyTLM.Parameters.model_validate({"name": "Toy", "tstep": "PT3H"})
    with pytest.raises(AssertionError, match="time step"):
        checks.run_trajectory(env.model, ToyTLM(params, env.geometry), env.initial_state(), Duration("P1D"))


class RollBugModel(ToyModel):
    """np.roll without axis: right for one state, wrong for a batch of members."""

    def step(self, fields):
        x = fields["x"]
        t = (np.roll(x, -1) - np.roll(x, 2)) * np.roll(x, 1) - x + self.params.f
        return FieldSet({"x": x + self.dt * t}, copy=False)


def test_unbatched_model_fails_the_batched_forecast_check(env):
    model = RollBugModel(_params(env, "model", ToyModel), env.geometry)
    checks.check_model_reproducible(model, env.initial_state(), Duration("P1D"))
    checks.check_model_final_norm(model, env.initial_state(), Duration("P1D"),
                                  TOY_CONFIG["model test"]["final norm"], 1e-13)
    with pytest.raises(AssertionError, match="batched forecast, member"):
        checks.check_model_batched(model, env.initial_state(), Duration("P1D"), 3, 1e-3, rng("batch"), 1e-14)


def test_non_reproducible_model_fails(env):
    class NoisyModel(ToyModel):
        _stream = np.random.default_rng()

        def step(self, fields):
            out = super().step(fields)
            return FieldSet({"x": out["x"] + 1e-12 * self._stream.standard_normal(out["x"].shape)}, copy=False)

    with pytest.raises(AssertionError, match="two forecasts from the same state"):
        checks.check_model_reproducible(NoisyModel(_params(env, "model", ToyModel), env.geometry),
                                        env.initial_state(), Duration("P1D"))


def test_model_whose_initialize_touches_the_state_fails_zero_length(env):
    class TouchyModel(ToyModel):
        def initialize(self, state):
            state.fields["x"] = state.fields["x"] * (1 + 1e-15)

    with pytest.raises(AssertionError, match="zero-length forecast"):
        checks.check_model_zero_length(TouchyModel(_params(env, "model", ToyModel), env.geometry),
                                       env.initial_state())


def test_wrong_final_norm_fails(env):
    with pytest.raises(AssertionError, match="final norm"):
        checks.check_model_final_norm(env.model, env.initial_state(), Duration("P1D"),
                                      TOY_CONFIG["model test"]["final norm"] * (1 + 1e-9), 1e-12)


def test_wrong_state_norm_fails(env):
    with pytest.raises(AssertionError, match="state norm"):
        checks.check_state_norm(env.initial_state(), 8.0, 1e-12)


# Increments -------------------------------------------------------------------------------
class ReversedDiffIncrement(GenericIncrement):
    def diff(self, x1, x2):
        super().diff(x2, x1)


class SharedCopyIncrement(GenericIncrement):
    def copy(self):
        return type(self)(self.geometry, FieldSet(self.fields, copy=False), self.time)


class ScrambledSerializeIncrement(GenericIncrement):
    def deserialize(self, vector):
        super().deserialize(np.asarray(vector)[::-1])


class OffByOneDiracIncrement(GenericIncrement):
    def dirac(self, config):
        super().dirac({**config, "ixdir": [i + 1 for i in config["ixdir"]]})


def _as(env: InterfaceEnvironment, cls: Any, batch_shape: tuple[int, ...] = ()) -> Any:
    return cls.zeros(env.geometry, env.variables, env.time, batch_shape)


def test_reversed_diff_fails(env):
    checks.check_increment_diff_sign(_as(env, GenericIncrement), env.initial_state(), rng("diff ok"), 1e-12)
    with pytest.raises(AssertionError):
        checks.check_increment_diff_sign(_as(env, ReversedDiffIncrement), env.initial_state(), rng("diff"), 1e-12)


def test_copy_sharing_arrays_fails(env):
    with pytest.raises(AssertionError, match="copy"):
        checks.check_increment_copy(_as(env, SharedCopyIncrement), rng("copy"))


def test_scrambled_serialize_fails(env):
    with pytest.raises(AssertionError, match="serialize"):
        checks.check_increment_serialize(_as(env, ScrambledSerializeIncrement), rng("ser"), 1e-8)


def test_dirac_at_the_wrong_point_fails(env):
    checks.check_increment_dirac(_as(env, GenericIncrement), {"ixdir": [0, N - 1]}, rng("dirac ok"))
    with pytest.raises(AssertionError, match="expected"):
        checks.check_increment_dirac(_as(env, OffByOneDiracIncrement), {"ixdir": [0, 3]}, rng("dirac"))


def test_batched_increment_with_global_operation_fails(env):
    class GlobalScaleIncrement(GenericIncrement):
        def axpy(self, a, other, check=True):  # scales by the whole batch: not member-wise
            super().axpy(a * float(np.abs(other.fields["x"]).max()), other, check)

    batched, single = _as(env, GlobalScaleIncrement, (3,)), _as(env, GlobalScaleIncrement)
    with pytest.raises(AssertionError, match="batched axpy"):
        checks.check_batched_increments(batched, single, rng("batched"), 1e-12)
    checks.check_batched_increments(_as(env, GenericIncrement, (3,)), _as(env, GenericIncrement), rng("b"), 1e-14)


# GetValues --------------------------------------------------------------------------------
class WrongAdjointGeometry(ToyGeometry):
    def interpolator(self, locations):
        interp = super().interpolator(locations)

        class Wrong(SparseInterpolator):
            def apply_ad(self, geovals, fields):
                super().apply_ad(GeoVaLs({v: 1.001 * g for v, g in geovals.items()}), fields)

        return Wrong(interp.matrix, interp.field_shape)


def test_interpolator_with_wrong_adjoint_fails(env):
    geometry = WrongAdjointGeometry(ToyGeometryParameters(resol=N))
    locations = checks.random_locations(geometry, 20, rng("locs"))
    checks.check_interpolator_grid_points(geometry, ["x"], rng("grid"), 1e-12)
    with pytest.raises(AssertionError, match="adjoint test failed"):
        checks.check_interpolator_adjoint(geometry, locations, ["x"], rng("getvalues"), 1e-12)


# Observations -----------------------------------------------------------------------------
def _observer(env: InterfaceEnvironment) -> Any:
    return env.observers[0]


def _geovals(env: InterfaceEnvironment) -> GeoVaLs:
    ob = _observer(env)
    return ob.interpolator.apply(env.initial_state().fields, Variables(["x"]))


def test_linear_obs_operator_with_wrong_adjoint_fails(env):
    class WrongAD(LinearIdentityObsOperator):
        def simulate_obs_ad(self, dy):
            return GeoVaLs({v: 2.0 * a for v, a in super().simulate_obs_ad(dy).items()})

    ob = _observer(env)
    linear = WrongAD(ob.linear_obs_operator().params, ob.obs_space)
    checks.check_linear_obs_operator_tl(ob.obs_operator, linear, _geovals(env), rng("h tl"), 1.0, 12, 1e-6)
    with pytest.raises(AssertionError, match="adjoint test failed"):
        checks.check_linear_obs_operator_adjoint(linear, _geovals(env), rng("h ad"), 1e-12)


def test_linear_obs_operator_that_is_not_the_derivative_fails(env):
    class Doubled(LinearIdentityObsOperator):
        def simulate_obs_tl(self, dgeovals):
            return super().simulate_obs_tl(GeoVaLs({v: 2.0 * a for v, a in dgeovals.items()}))

        def simulate_obs_ad(self, dy):
            return GeoVaLs({v: 2.0 * a for v, a in super().simulate_obs_ad(dy).items()})

    ob = _observer(env)
    linear = Doubled(ob.linear_obs_operator().params, ob.obs_space)
    checks.check_linear_obs_operator_adjoint(linear, _geovals(env), rng("d ad"), 1e-12)
    checks.check_linear_obs_operator_linearity(linear, _geovals(env), rng("d lin"), 1e-12)
    with pytest.raises(AssertionError, match="does not match finite differences"):
        checks.check_linear_obs_operator_tl(ob.obs_operator, linear, _geovals(env), rng("d tl"), 1.0, 12, 1e-6)


def test_declared_linear_obs_operator(env):
    """Identity declares linear = True and passes (H(g) = H g to rounding, whatever the trajectory); an
    operator that declares it but is affine (H(g) = g + 1) fails; one that does not declare it is not
    checked."""
    from pyoops.generic.obs_operators import IdentityObsOperator

    ob = _observer(env)
    assert IdentityObsOperator.linear
    assert checks.check_declared_linear_obs_operator(ob.obs_operator, ob.linear_obs_operator(), _geovals(env),
                                                     rng("lin"), 1e-12) <= 1e-15

    class Affine(IdentityObsOperator):
        def simulate_obs(self, geovals):
            y = super().simulate_obs(geovals)
            y.values = y.values + 1.0
            return y

    affine = Affine(ob.obs_operator.params, ob.obs_space)
    with pytest.raises(AssertionError, match="declares linear = True"):
        checks.check_declared_linear_obs_operator(affine, ob.linear_obs_operator(), _geovals(env), rng("aff"), 1e-6)

    class Undeclared(Affine):
        linear = False

    undeclared = Undeclared(ob.obs_operator.params, ob.obs_space)
    assert checks.check_declared_linear_obs_operator(undeclared, ob.linear_obs_operator(), _geovals(env),
                                                     rng("und"), 1e-6) == 0.0


def test_obs_error_with_wrong_inverse_fails(env):
    class WrongInverse(DiagonalObsError):
        def inverse_multiply(self, dy):
            return self.multiply_inverse_sqrt(dy)

    ob = _observer(env)
    with pytest.raises(AssertionError, match="R R\\^-1 dy"):
        checks.check_obs_error_inverse(WrongInverse(ob.obs_error.params, ob.obs_space), rng("r"), 1e-12)


def test_obs_error_with_unseeded_or_wrongly_scaled_randomize_fails(env):
    class Unseeded(DiagonalObsError):
        def randomize(self, rng):
            return super().randomize(np.random.default_rng())

    class TooWide(DiagonalObsError):
        def randomize(self, rng):
            return super().randomize(rng) * 1.5

    ob = _observer(env)
    with pytest.raises(AssertionError, match="not reproducible"):
        checks.check_obs_error_randomize(Unseeded(ob.obs_error.params, ob.obs_space), 5, 50)
    with pytest.raises(AssertionError, match="expected 1"):
        checks.check_obs_error_randomize(TooWide(ob.obs_error.params, ob.obs_space), 5, 200)
    mean = checks.check_obs_error_randomize(ob.obs_error, 5, 200)
    assert abs(mean - 1) < 0.2


# Variable changes ---------------------------------------------------------------------------
def test_linear_variable_change_with_wrong_adjoint_fails(env):
    class WrongAD(LinearSquareChange):
        def multiply_ad(self, dy, variables_out):
            return FieldSet({"x": dy["x"] + self.x * dy["xsq"]}, copy=False)

    change = WrongAD(SquareParameters(variable_change_name="Square"), env.geometry)
    change.set_trajectory(env.initial_state().fields)
    with pytest.raises(AssertionError, match="adjoint test failed"):
        checks.check_linear_variable_change_adjoint(change, env.geometry, ["x"], ["x", "xsq"], rng("vc"), 1e-12)
    with pytest.raises(AssertionError, match="does not match finite differences"):
        checks.check_linear_variable_change_tl(
            SquareChange(SquareParameters(variable_change_name="Square"), env.geometry),
            type("WrongTL", (LinearSquareChange,), {
                "multiply": lambda self, dx, out: FieldSet({"x": dx["x"].copy(), "xsq": self.x * dx["x"]})})(
                SquareParameters(variable_change_name="Square"), env.geometry),
            env.initial_state().fields, ["x", "xsq"], rng("vc tl"), 1.0, 12, 1e-6)


# =======================================================================================
# Configuration handling
# =======================================================================================
def test_misspelt_key_names_the_key_and_the_file(tmp_path):
    import yaml

    cfg = {**TOY_CONFIG, "model test": {"forecast lenght": "P1D"}}
    path = tmp_path / "interface.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_interface_parameters(path)
    msg = str(err.value)
    assert "interface.yaml" in msg and "forecast lenght" in msg and "did you mean 'forecast length'" in msg


def test_linear_model_test_without_linear_model_is_rejected():
    cfg = {k: v for k, v in TOY_CONFIG.items() if k != "linear model"}
    with pytest.raises(ConfigError, match="needs a 'linear model' section"):
        load_interface_parameters(cfg)


def test_missing_required_section_fails_and_optional_section_skips():
    cfg = {k: v for k, v in TOY_CONFIG.items() if k not in ("model test", "variable change test")}
    interface = InterfaceEnvironment.from_file(cfg, registry=toy_registry())
    with pytest.raises(pytest.fail.Exception, match="section 'model test' is missing"):
        InterfaceTestBase.require(interface, "model test", "ModelTests")
    with pytest.raises(pytest.skip.Exception, match="variable change test"):
        InterfaceTestBase.require(interface, "variable change test", "VariableChangeTests", optional=True)
    assert InterfaceTestBase.require(interface, "observations test", "ObsOperatorTests") is not None


def test_suites_do_not_shadow_each_other_in_interface_tests():
    """Combining the suites by inheritance must not let one suite's method hide another's."""
    seen: dict[str, str] = {}
    for suite in InterfaceTests.__mro__[1:]:
        assert not suite.__name__.startswith("Test")
        if suite in (InterfaceTestBase, object):
            continue
        for name in vars(suite):
            if callable(vars(suite)[name]) or isinstance(vars(suite)[name], staticmethod):
                assert name not in seen, f"{suite.__name__}.{name} is shadowed by {seen.get(name)}.{name}"
                seen[name] = suite.__name__
    assert sum(n.startswith("test_") for n in seen) >= 40


# =======================================================================================
# The generic suites on a 3-D channel grid with two variables (levels, walls, periodic x)
# =======================================================================================
class ChannelGeometryParameters(Parameters):
    nx: int
    ny: int
    levels: list[float]


class ChannelGeometry(StructuredGrid):
    Parameters = ChannelGeometryParameters

    def __init__(self, params: ChannelGeometryParameters):
        super().__init__([Axis.level_axis("z", params.levels, dim="lev"), Axis.bounded_axis("y", params.ny, 2.0),
                          Axis.periodic_axis("x", params.nx, 3.0)], ["u", "v"])


class ChannelState(GenericState):
    @classmethod
    def analytic_init(cls, geometry, config, date, path):
        mesh = geometry.mesh()
        return FieldSet({"u": np.cos(mesh["x"]) * mesh["y"] + mesh["z"], "v": np.sin(mesh["y"]) - mesh["z"]})


@hookimpl
def _register_channel(registry: Registry) -> None:
    registry.add_model_plugin("channel", geometry=ChannelGeometry, state=ChannelState)


class TestChannelGenericSuites(GeometryTests, StateTests, IncrementTests, GetValuesTests):
    """Geometry, State, Increment and GetValues suites of a plugin without a model."""

    config = {
        "model plugin": "channel",
        "geometry": {"nx": 7, "ny": 5, "levels": [1.0, 2.0, 3.0]},
        "geometry test": {"other geometry": {"nx": 7, "ny": 5, "levels": [1.0, 2.0]}},
        "state": {"date": "2010-01-01T00:00:00Z", "analytic init": {"method": "any"}},
        "increment test": {"tolerance": 1.0e-12},
    }

    @classmethod
    def make_registry(cls) -> Registry:
        registry = Registry()
        registry.register_plugin(types.SimpleNamespace(pyoops_register=_register_channel), name="channel")
        return registry

    def test_default_dirac_hits_every_variable(self, interface):
        cfg = interface.dirac_config()
        assert cfg["variables"] == ["u", "u", "v"] and cfg["ixdir"] == [0, 7 * 5 * 3 - 1, 7 * 5 * 3 // 2]


def test_state_file_is_relative_to_the_yaml_file(tmp_path):
    import yaml

    env = InterfaceEnvironment.from_file(TOY_CONFIG, registry=toy_registry())
    env.initial_state().write(str(tmp_path / "data" / "x.nc"))
    cfg = {**TOY_CONFIG, "state": {"date": "2010-01-01T00:00:00Z", "filename": "data/x.nc",
                                   "norm": float(np.sqrt(64.5)), "norm tolerance": 1e-14}}
    (tmp_path / "interface.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    from_file = InterfaceEnvironment.from_file(tmp_path / "interface.yaml", registry=toy_registry())
    checks.check_state_norm(from_file.initial_state(), from_file.params.state_norm, 1e-14)
    checks.assert_fields_close(from_file.initial_state().fields, env.initial_state().fields, 0.0, "file state")
