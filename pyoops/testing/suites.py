"""pytest suites of the interface test kit.

Each suite is a class whose name does not start with ``Test``, so pytest only
collects it through a plugin's subclass that names a YAML file::

    class TestLorenz96Interface(InterfaceTests):
        config_file = Path(__file__).with_name("interface.yaml")

All suites share one class-scoped fixture, ``interface``, the
:class:`~pyoops.testing.environment.InterfaceEnvironment` of that file.  A
suite whose section is missing from the file *fails* and says which section to
add, except :class:`VariableChangeTests`, whose section is optional and which
*skips* without it.  A plugin that has no linear model (say) derives its test
class from the suites it supports instead of from :class:`InterfaceTests`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from pyoops.interface.geometry import Locations
from pyoops.testing import checks
from pyoops.testing.environment import InterfaceEnvironment
from pyoops.util.random import generator

__all__ = [
    "GeometryTests",
    "GetValuesTests",
    "IncrementTests",
    "InterfaceTestBase",
    "InterfaceTests",
    "LinearModelTests",
    "ModelTests",
    "ObsErrorTests",
    "ObsOperatorTests",
    "StateTests",
    "VariableChangeTests",
]


class InterfaceTestBase:
    """Fixtures shared by every suite.

    Attributes
    ----------
    config_file
        Path of the plugin's interface-test YAML file (set it in the subclass).
    config
        The configuration as a mapping, instead of ``config_file`` (relative file names then refer
        to the current directory).
    """

    config_file: ClassVar["str | Path | None"] = None
    config: ClassVar["dict[str, Any] | None"] = None

    @classmethod
    def make_registry(cls) -> Any:
        """The registry to build objects with (override to test an in-process plugin)."""
        from pyoops.registry import get_registry

        return get_registry()

    @pytest.fixture(scope="class")
    @classmethod
    def interface(cls_, request: pytest.FixtureRequest) -> InterfaceEnvironment:  # noqa: N804
        """The :class:`~pyoops.testing.environment.InterfaceEnvironment` of :attr:`config_file`."""
        cls = request.cls
        source = None if cls is None else (cls.config_file if cls.config_file is not None else cls.config)
        if source is None:
            pytest.fail(f"{getattr(cls, '__name__', 'test class')} must set config_file to the path of its "
                        "interface-test YAML file", pytrace=False)
        if not isinstance(source, dict):
            source = Path(source)
        return InterfaceEnvironment.from_file(source, registry=cls.make_registry())

    @staticmethod
    def require(interface: InterfaceEnvironment, section: str, suite: str, optional: bool = False) -> Any:
        """The parameters of ``section``; fail (or skip, if ``optional``) when the file lacks it."""
        value = getattr(interface.params, section.replace(" ", "_"))
        if value is None:
            if optional:
                pytest.skip(f"{interface.source}: no '{section}' section, {suite} not run")
            pytest.fail(f"{interface.source}: section '{section}' is missing, and {suite} needs it; add it, or "
                        f"derive the test class from the suites the plugin supports, leaving out {suite}",
                        pytrace=False)
        return value


# =======================================================================================
class GeometryTests(InterfaceTestBase):
    """Geometry: consistent shapes and coordinates; ``describe``/``same_as``."""

    def test_geometry_shapes(self, interface: InterfaceEnvironment) -> None:
        checks.check_geometry_shapes(interface.geometry)

    def test_geometry_describe_same_as(self, interface: InterfaceEnvironment) -> None:
        other_cfg = interface.params.geometry_test.other_geometry
        other = interface.build_geometry(other_cfg, "geometry test.other geometry") if other_cfg else None
        twin = interface.build_geometry(interface.params.geometry)
        checks.check_geometry_describe(interface.geometry, twin, other)


# =======================================================================================
class StateTests(InterfaceTestBase):
    """State: reference norm, file round trip, ``+= increment``, independent copies."""

    def test_state_norm(self, interface: InterfaceEnvironment) -> None:
        reference = interface.params.state_norm
        if reference is None:
            pytest.skip(f"{interface.source}: no reference 'state.norm' given")
        checks.check_state_norm(interface.initial_state(), reference, interface.params.state_norm_tolerance)

    def test_state_write_read(self, interface: InterfaceEnvironment, tmp_path: Path) -> None:
        x = interface.initial_state()

        def reader(filename: Any) -> Any:
            return interface.read_state({"date": str(x.time), "filename": str(filename)})

        checks.check_state_write_read(x, tmp_path / "state.nc", reader)

    def test_state_add_increment(self, interface: InterfaceEnvironment) -> None:
        rng = generator(interface.params.increment_test.seed, "state test", "add")
        checks.check_state_add_increment(interface.initial_state(), interface.increment(), rng,
                                         interface.params.increment_test.tolerance)

    def test_state_copy_independent(self, interface: InterfaceEnvironment) -> None:
        rng = generator(interface.params.increment_test.seed, "state test", "copy")
        checks.check_state_copy_independent(interface.initial_state(), interface.increment(), rng)


# =======================================================================================
class IncrementTests(InterfaceTestBase):
    """Increment: the OOPS increment algebra, Dirac, serialization and batched members."""

    @staticmethod
    def _inc_rng(interface: InterfaceEnvironment, name: str) -> np.random.Generator:
        return generator(interface.params.increment_test.seed, "increment test", name)

    def test_increment_new_is_zero(self, interface: InterfaceEnvironment) -> None:
        checks.check_increment_new_is_zero(interface.increment())

    def test_increment_ones_and_zero(self, interface: InterfaceEnvironment) -> None:
        checks.check_increment_ones(interface.increment())

    def test_increment_copy(self, interface: InterfaceEnvironment) -> None:
        checks.check_increment_copy(interface.increment(), self._inc_rng(interface, "copy"))

    def test_increment_triangle_inequality(self, interface: InterfaceEnvironment) -> None:
        checks.check_increment_triangle_inequality(interface.increment(), self._inc_rng(interface, "triangle"))

    def test_increment_two_a(self, interface: InterfaceEnvironment) -> None:
        checks.check_increment_two_a(interface.increment(), self._inc_rng(interface, "2a"),
                                     interface.params.increment_test.tolerance)

    def test_increment_dot_symmetric(self, interface: InterfaceEnvironment) -> None:
        checks.check_increment_dot_symmetric(interface.increment(), self._inc_rng(interface, "dot"),
                                             interface.params.increment_test.tolerance)

    def test_increment_axpy(self, interface: InterfaceEnvironment) -> None:
        checks.check_increment_axpy(interface.increment(), self._inc_rng(interface, "axpy"),
                                    interface.params.increment_test.tolerance)

    def test_increment_diff_sign(self, interface: InterfaceEnvironment) -> None:
        checks.check_increment_diff_sign(interface.increment(), interface.initial_state(),
                                         self._inc_rng(interface, "diff"), interface.params.increment_test.tolerance)

    def test_increment_dirac(self, interface: InterfaceEnvironment) -> None:
        checks.check_increment_dirac(interface.increment(), interface.dirac_config(), self._inc_rng(interface, "dirac"))

    def test_increment_schur(self, interface: InterfaceEnvironment) -> None:
        checks.check_increment_schur(interface.increment(), self._inc_rng(interface, "schur"))

    def test_increment_serialize(self, interface: InterfaceEnvironment) -> None:
        checks.check_increment_serialize(interface.increment(), self._inc_rng(interface, "serialize"),
                                         interface.params.increment_test.tolerance)

    def test_increment_batched(self, interface: InterfaceEnvironment) -> None:
        nmem = interface.params.increment_test.batch_size
        checks.check_batched_increments(interface.increment(batch_shape=(nmem,)), interface.increment(),
                                        self._inc_rng(interface, "batched"), interface.params.increment_test.tolerance)


# =======================================================================================
class GetValuesTests(InterfaceTestBase):
    """GetValues: interpolation to locations, its adjoint, grid-point exactness, batches."""

    @staticmethod
    def _gv_locations(interface: InterfaceEnvironment) -> Locations:
        section = interface.params.get_values_test
        if section.locations is not None:
            return Locations(section.locations)
        return checks.random_locations(interface.geometry, section.nlocs,
                                       generator(section.seed, "get values test", "locations"))

    def test_get_values_adjoint(self, interface: InterfaceEnvironment) -> None:
        section = interface.params.get_values_test
        checks.check_interpolator_adjoint(interface.geometry, self._gv_locations(interface), interface.variables,
                                          generator(section.seed, "get values test", "adjoint"),
                                          section.tolerance_AD)

    def test_get_values_grid_points(self, interface: InterfaceEnvironment) -> None:
        section = interface.params.get_values_test
        checks.check_interpolator_grid_points(interface.geometry, interface.variables,
                                              generator(section.seed, "get values test", "grid points"),
                                              section.tolerance)

    def test_get_values_batched(self, interface: InterfaceEnvironment) -> None:
        section = interface.params.get_values_test
        checks.check_interpolator_batched(interface.geometry, self._gv_locations(interface), interface.variables,
                                          generator(section.seed, "get values test", "batched"), 1.0e-14)


# =======================================================================================
class ModelTests(InterfaceTestBase):
    """Model: zero-length forecast, reproducibility, final norm, batched members."""

    def _model_section(self, interface: InterfaceEnvironment) -> Any:
        return self.require(interface, "model test", "ModelTests")

    def test_model_zero_length_forecast(self, interface: InterfaceEnvironment) -> None:
        self._model_section(interface)
        checks.check_model_zero_length(interface.model, interface.initial_state())

    def test_model_reproducible(self, interface: InterfaceEnvironment) -> None:
        section = self._model_section(interface)
        checks.check_model_reproducible(interface.model, interface.initial_state(), section.forecast_length)

    def test_model_final_norm(self, interface: InterfaceEnvironment) -> None:
        section = self._model_section(interface)
        if section.final_norm is None:
            pytest.skip(f"{interface.source}: no reference 'model test.final norm' given")
        checks.check_model_final_norm(interface.model, interface.initial_state(), section.forecast_length,
                                      section.final_norm, section.tolerance)

    def test_model_batched_forecast(self, interface: InterfaceEnvironment) -> None:
        section = self._model_section(interface)
        checks.check_model_batched(interface.model, interface.initial_state(), section.forecast_length,
                                   section.ensemble_size, section.ensemble_perturbation,
                                   generator(section.seed, "model test", "ensemble"), section.ensemble_tolerance)


# =======================================================================================
class LinearModelTests(InterfaceTestBase):
    """LinearModel: 0 → 0, linearity, TL against finite differences, adjoint dot-product test."""

    def _tlm_section(self, interface: InterfaceEnvironment) -> Any:
        return self.require(interface, "linear model test", "LinearModelTests")

    def _tlm_trajectory(self, interface: InterfaceEnvironment) -> Any:
        section = self._tlm_section(interface)
        checks.run_trajectory(interface.model, interface.linear_model, interface.initial_state(),
                              section.forecast_length)
        return section

    def test_linear_model_zero(self, interface: InterfaceEnvironment) -> None:
        section = self._tlm_trajectory(interface)
        checks.check_linear_model_zero(interface.linear_model, interface.increment(), section.forecast_length)

    def test_linear_model_linearity(self, interface: InterfaceEnvironment) -> None:
        section = self._tlm_trajectory(interface)
        checks.check_linear_model_linearity(interface.linear_model, interface.increment(), section.forecast_length,
                                            generator(section.seed, "linear model test", "linearity"),
                                            section.tolerance_linearity)

    def test_linear_model_tl(self, interface: InterfaceEnvironment) -> None:
        section = self._tlm_section(interface)
        checks.check_linear_model_tl(interface.model, interface.linear_model, interface.initial_state(),
                                     interface.increment(), section.forecast_length,
                                     generator(section.seed, "linear model test", "TL"),
                                     section.first_multiplier_TL, section.iterations_TL, section.tolerance_TL)

    def test_linear_model_adjoint(self, interface: InterfaceEnvironment) -> None:
        section = self._tlm_trajectory(interface)
        checks.check_linear_model_adjoint(interface.linear_model, interface.increment(), section.forecast_length,
                                          generator(section.seed, "linear model test", "AD"), section.tolerance_AD)


# =======================================================================================
def _for_each_observer(interface: InterfaceEnvironment, check: Any) -> None:
    """Run ``check(observer, index)`` for every observer; report every failure at once."""
    failures = []
    for i, observer in enumerate(interface.observers):
        try:
            check(observer, i)
        except AssertionError as exc:
            failures.append(f"observer [{i}] '{observer.name}': {exc}")
    if failures:
        raise AssertionError("\n".join(failures))


def _linearisation_geovals(interface: InterfaceEnvironment, observer: Any) -> Any:
    linear = observer.linear_obs_operator()
    variables = observer.obs_operator.required_variables + linear.required_variables
    return observer.interpolator.apply(interface.initial_state().fields, variables)


class ObsOperatorTests(InterfaceTestBase):
    """ObsOperator and LinearObsOperator on GeoVaLs: H(x), 0 → 0, linearity, TL vs FD, adjoint."""

    def _obsop_section(self, interface: InterfaceEnvironment) -> Any:
        return self.require(interface, "observations test", "ObsOperatorTests")

    def test_obs_operator_hofx(self, interface: InterfaceEnvironment) -> None:
        self._obsop_section(interface)

        def check(observer: Any, i: int) -> None:
            if observer.obs_space.nlocs == 0:
                raise AssertionError("the obs space has no observations: nothing is tested")
            checks.check_hofx(observer.obs_operator, observer.geovals(interface.initial_state().fields))

        _for_each_observer(interface, check)

    def test_linear_obs_operator_zero(self, interface: InterfaceEnvironment) -> None:
        self._obsop_section(interface)
        _for_each_observer(interface, lambda ob, i: checks.check_linear_obs_operator_zero(
            ob.linear_obs_operator(), _linearisation_geovals(interface, ob)))

    def test_linear_obs_operator_linearity(self, interface: InterfaceEnvironment) -> None:
        section = self._obsop_section(interface)
        _for_each_observer(interface, lambda ob, i: checks.check_linear_obs_operator_linearity(
            ob.linear_obs_operator(), _linearisation_geovals(interface, ob),
            generator(section.seed, "obs operator test", "linearity", i), section.tolerance))

    def test_linear_obs_operator_tl(self, interface: InterfaceEnvironment) -> None:
        section = self._obsop_section(interface)
        _for_each_observer(interface, lambda ob, i: checks.check_linear_obs_operator_tl(
            ob.obs_operator, ob.linear_obs_operator(), _linearisation_geovals(interface, ob),
            generator(section.seed, "obs operator test", "TL", i), section.first_multiplier_TL,
            section.iterations_TL, section.tolerance_TL))

    def test_declared_linear_obs_operator(self, interface: InterfaceEnvironment) -> None:
        section = self._obsop_section(interface)
        _for_each_observer(interface, lambda ob, i: checks.check_declared_linear_obs_operator(
            ob.obs_operator, ob.linear_obs_operator(), _linearisation_geovals(interface, ob),
            generator(section.seed, "obs operator test", "declared linear", i), section.tolerance))

    def test_linear_obs_operator_adjoint(self, interface: InterfaceEnvironment) -> None:
        section = self._obsop_section(interface)
        _for_each_observer(interface, lambda ob, i: checks.check_linear_obs_operator_adjoint(
            ob.linear_obs_operator(), _linearisation_geovals(interface, ob),
            generator(section.seed, "obs operator test", "AD", i), section.tolerance_AD))


class ObsErrorTests(InterfaceTestBase):
    """ObsError: consistency of σ, R R⁻¹ = I, symmetry, seeded reproducible randomization."""

    def _obserr_section(self, interface: InterfaceEnvironment) -> Any:
        return self.require(interface, "observations test", "ObsErrorTests")

    def test_obs_error_consistency(self, interface: InterfaceEnvironment) -> None:
        section = self._obserr_section(interface)
        _for_each_observer(interface, lambda ob, i: checks.check_obs_error_consistency(ob.obs_error,
                                                                                      section.tolerance))

    def test_obs_error_inverse(self, interface: InterfaceEnvironment) -> None:
        section = self._obserr_section(interface)
        _for_each_observer(interface, lambda ob, i: checks.check_obs_error_inverse(
            ob.obs_error, generator(section.seed, "obs error test", "inverse", i), section.tolerance))

    def test_obs_error_symmetric(self, interface: InterfaceEnvironment) -> None:
        section = self._obserr_section(interface)
        _for_each_observer(interface, lambda ob, i: checks.check_obs_error_symmetric(
            ob.obs_error, generator(section.seed, "obs error test", "symmetry", i), section.tolerance_AD))

    def test_obs_error_randomize(self, interface: InterfaceEnvironment) -> None:
        section = self._obserr_section(interface)
        _for_each_observer(interface, lambda ob, i: checks.check_obs_error_randomize(
            ob.obs_error, section.seed + i, section.randomize_samples))


# =======================================================================================
class VariableChangeTests(InterfaceTestBase):
    """VariableChange and LinearVariableChange (optional ``variable change test`` section)."""

    def _vc_section(self, interface: InterfaceEnvironment) -> Any:
        return self.require(interface, "variable change test", "VariableChangeTests", optional=True)

    def _vc_fields(self, interface: InterfaceEnvironment) -> Any:
        state = interface.initial_state()
        inputs = interface.variable_change_inputs
        missing = [v for v in inputs if v not in state.fields]
        if missing:
            raise AssertionError(f"the state lacks input variable(s) {missing} of the variable change")
        return state.fields.subset(inputs).copy()

    @staticmethod
    def _vc_need(obj: Any, what: str) -> Any:
        if obj is None:
            pytest.skip(f"no '{what}' in 'variable change test'")
        return obj

    def test_variable_change(self, interface: InterfaceEnvironment) -> None:
        section = self._vc_section(interface)
        change = self._vc_need(interface.variable_change, "variable change")
        checks.check_variable_change(change, self._vc_fields(interface), section.output_variables)

    def test_variable_change_inverse(self, interface: InterfaceEnvironment) -> None:
        section = self._vc_section(interface)
        change = self._vc_need(interface.variable_change, "variable change")
        if not section.test_inverse:
            pytest.skip("'variable change test.test inverse' is false")
        checks.check_variable_change_inverse(change, self._vc_fields(interface), section.output_variables,
                                             section.tolerance_inverse)

    def test_linear_variable_change_adjoint(self, interface: InterfaceEnvironment) -> None:
        section = self._vc_section(interface)
        linear = self._vc_need(interface.linear_variable_change, "linear variable change")
        linear.set_trajectory(self._vc_fields(interface))
        checks.check_linear_variable_change_adjoint(linear, interface.geometry, interface.variable_change_inputs,
                                                    section.output_variables,
                                                    generator(section.seed, "variable change test", "AD"),
                                                    section.tolerance_AD)

    def test_linear_variable_change_inverse(self, interface: InterfaceEnvironment) -> None:
        section = self._vc_section(interface)
        linear = self._vc_need(interface.linear_variable_change, "linear variable change")
        if not section.test_inverse:
            pytest.skip("'variable change test.test inverse' is false")
        linear.set_trajectory(self._vc_fields(interface))
        checks.check_linear_variable_change_inverse(linear, interface.geometry, interface.variable_change_inputs,
                                                    section.output_variables,
                                                    generator(section.seed, "variable change test", "inverse"),
                                                    section.tolerance_inverse)

    def test_linear_variable_change_tl(self, interface: InterfaceEnvironment) -> None:
        section = self._vc_section(interface)
        change = self._vc_need(interface.variable_change, "variable change")
        linear = self._vc_need(interface.linear_variable_change, "linear variable change")
        checks.check_linear_variable_change_tl(change, linear, self._vc_fields(interface), section.output_variables,
                                               generator(section.seed, "variable change test", "TL"),
                                               section.first_multiplier_TL, section.iterations_TL,
                                               section.tolerance_TL)


# =======================================================================================
class InterfaceTests(GeometryTests, StateTests, IncrementTests, GetValuesTests, ModelTests, LinearModelTests,
                     ObsOperatorTests, ObsErrorTests, VariableChangeTests):
    """Every suite: what a complete model plugin must pass.

    Sections ``model test``, ``linear model test`` and ``observations test`` are
    required (their suites fail without them); ``variable change test`` is optional.
    """
