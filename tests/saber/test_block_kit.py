"""pyoops.testing.BlockTests applied to every built-in block, and the kit's own failure modes.

Each ``Test*`` class is one BlockTests file (``block_tests/*.yaml``) or mapping; together
they cover ``ID``, ``StdDev``, ``spectral correlation``, ``interpolation`` (with and
without a left inverse), ``diffusion`` (implicit and explicit), ``Ensemble`` (with and
without localization), ``Hybrid``, ``explicit covariance``, ``duplicate variables`` and
``write fields``.  The second half proves that the kit catches a wrong adjoint, square
root and inverse with the figure, and that an impossible construction-time test is an
error.
"""

from __future__ import annotations

import atexit
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

from pyoops.fields.fieldset import FieldSet
from pyoops.registry import Registry, get_registry
from pyoops.saber.blocks import SaberBlockParameters, SaberCentralBlock, SaberOuterBlock
from pyoops.saber.chain import ErrorCovariance
from pyoops.saber.checks import (
    BlockTestSettings,
    adjoint_check,
    block_checks,
    inverse_check,
    left_inverse_check,
    randomization_checks,
    square_root_check,
)
from pyoops.saber.generic.explicit import write_matrix
from pyoops.testing import BlockTests
from pyoops.util.errors import ConfigError
from pyoops.util.random import generator

HERE = Path(__file__).parent / "block_tests"
T0 = "2010-01-01T00:00:00Z"
_TMP = Path(tempfile.mkdtemp(prefix="pyoops-block-kit-"))
atexit.register(shutil.rmtree, _TMP, True)


class TestStatic(BlockTests):
    config_file = HERE / "static.yaml"


class TestSpectralDualResolution(BlockTests):
    config_file = HERE / "spectral_dual_resolution.yaml"


class TestInterpolationFinerInner(BlockTests):
    config_file = HERE / "interpolation_finer_inner.yaml"


class TestDiffusion(BlockTests):
    config_file = HERE / "diffusion.yaml"


class TestDiffusionExplicit(BlockTests):
    config_file = HERE / "diffusion_explicit.yaml"


class TestEnsemble(BlockTests):
    config_file = HERE / "ensemble.yaml"


class TestEnsembleRaw(BlockTests):
    config_file = HERE / "ensemble_raw.yaml"


class TestHybrid(BlockTests):
    config_file = HERE / "hybrid.yaml"


def _explicit_matrix() -> str:
    """A 40 x 40 SOAR-like covariance matrix file (positive definite) for ``explicit covariance``."""
    x = np.arange(40) / 40.0
    d = np.abs(x[:, None] - x[None, :])
    d = np.minimum(d, 1.0 - d)
    matrix = 0.5 * (1.0 + d / 0.05) * np.exp(-d / 0.05)
    name = str(_TMP / "explicit.nc")
    write_matrix(name, matrix)
    return name


def _length_scale_file() -> str:
    """A spatially varying length scale on Lorenz-96's 40 points (the sparse-LU diffusion solver)."""
    from pyoops.fields.netcdf import write_fields

    geometry = get_registry().model_plugin("lorenz96").make_geometry({"resol": 40})
    ell = 0.04 + 0.02 * np.sin(2 * np.pi * np.arange(40) / 40)
    name = str(_TMP / "length_scale.nc")
    write_fields(name, geometry, FieldSet({"x": ell}), None)
    return name


def _varying_diffusion(p: int) -> dict[str, Any]:
    return {"model plugin": "lorenz96", "geometry": {"resol": 40}, "date": T0,
            "background error": {"saber central block": {"saber block name": "diffusion", "iterations": p,
                                                         "horizontal length scale file": _length_scale_file()}}}


class TestDiffusionVaryingEvenP(BlockTests):
    """Sparse LU, p = 2: a square root exists."""

    config = _varying_diffusion(2)


class TestDiffusionVaryingOddP(BlockTests):
    """Sparse LU, p = 3: no square root, so no randomization; the tests say why and skip."""

    config = _varying_diffusion(3)


class TestExplicitCovariance(BlockTests):
    config = {
        "model plugin": "lorenz96", "geometry": {"resol": 40}, "date": T0,
        "background error": {"saber central block": {"saber block name": "explicit covariance",
                                                     "read": {"filename": _explicit_matrix()}}},
    }


class TestDuplicateVariablesAndWriteFields(BlockTests):
    """Two variables on the shallow-water grid: ``h`` duplicated into ``u`` and ``v``; ``write fields`` outside."""

    config = {
        "model plugin": "shallow_water", "geometry": {"nx": 8, "ny": 6}, "date": T0, "variables": ["u", "v"],
        "background error": {
            "saber central block": {"saber block name": "spectral correlation", "length scale": 1.0e6},
            "saber outer blocks": [
                {"saber block name": "duplicate variables",
                 "variable groupings": [{"group variable name": "h", "group components": ["u", "v"]}]},
                {"saber block name": "write fields", "output file": str(_TMP / "written.%count%.nc")},
            ],
        },
    }


# The kit catches wrong blocks, with the figure ---------------------------------------------------
WRONG_BLOCKS = Path(__file__).with_name("wrong_blocks.py")


def _wrong_blocks() -> Any:
    """The plugin module of deliberately wrong blocks (loaded once per process: --import-mode=importlib)."""
    name = "pyoops_tests_wrong_blocks"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, WRONG_BLOCKS)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


@pytest.fixture(scope="module")
def wrong_registry() -> Registry:
    """A registry with the generic blocks and the deliberately wrong ones of ``wrong_blocks``."""
    registry = Registry()
    registry.load_entry_points()
    registry.register_plugin(_wrong_blocks(), name="wrong-blocks")
    return registry


def _chain(registry: Registry, central: dict[str, Any], outer: list[dict[str, Any]] | None = None) -> Any:
    geometry = get_registry().model_plugin("lorenz96").make_geometry({"resol": 40})
    config = {"saber central block": central, "saber outer blocks": outer or []}
    return ErrorCovariance(config, geometry, ["x"], T0, registry, get_registry().model_plugin("lorenz96")).chain


@pytest.mark.parametrize("error", [1e-6, 1e-9])
def test_wrong_adjoint_is_caught_with_its_figure(wrong_registry, error):
    """A perturbation eps of U^T gives a relative error of order eps (well above 1e-12)."""
    chain = _chain(wrong_registry, {"saber block name": "ID"}, [{"saber block name": "wrong adjoint", "error": error}])
    check = adjoint_check(chain.outer[0][0], generator(0, "t"))
    assert not check.passed
    assert 0.01 * error < check.figure < 100 * error
    assert f"adjoint test failed: relative error {check.figure:.3e} > tolerance 1e-12" in check.message()


def test_wrong_square_root_is_caught_with_its_figure(wrong_registry):
    """S = (1 + eps) I: <S^T x, S^T y> = (1 + eps)^2 <x, y>, a relative error 2 eps."""
    chain = _chain(wrong_registry, {"saber block name": "wrong sqrt", "error": 1e-7})
    check = square_root_check(chain.central, generator(0, "t"))
    assert not check.passed
    assert check.figure == pytest.approx(2e-7, rel=1e-3)
    assert "square root test failed: relative error 2.000e-07 > tolerance 1e-12" in check.message()


def test_wrong_left_inverse_is_caught_with_its_figure(wrong_registry):
    """U^-1 U x = x / (1 + eps): a relative error eps / (1 + eps), for the left and the two-sided test."""
    chain = _chain(wrong_registry, {"saber block name": "ID"}, [{"saber block name": "wrong inverse", "error": 1e-8}])
    block = chain.outer[0][0]
    for check in (left_inverse_check(block, generator(0, "t")), inverse_check(block, generator(1, "t"))):
        assert not check.passed
        assert check.figure == pytest.approx(1e-8, rel=1e-6)
        assert "failed: relative error 1.000e-08 > tolerance 1e-12" in check.message()


def test_wrong_randomization_is_caught_and_a_right_one_passes(wrong_registry):
    """Draws 5 % too large (variance +10 %) fail the mean test; the identity's own draws pass both."""
    wrong = _chain(wrong_registry, {"saber block name": "wrong randomize", "error": 0.05}).central
    mean, point = randomization_checks(wrong, seed=0, size=2000)
    # Var(T) = 2 / (K n) for 40 uncorrelated points: sd 3.5e-3, so +10 % is z ~ 29.
    assert not mean.passed and mean.figure > 20 and "mean sample/exact variance 1.10" in mean.detail
    right = _chain(wrong_registry, {"saber block name": "ID"}).central
    assert all(c.passed for c in randomization_checks(right, seed=0, size=2000))


def test_asymmetric_central_block_fails_symmetry_and_dirac(wrong_registry):
    chain = _chain(wrong_registry, {"saber block name": "lopsided", "error": 1e-3})
    results = {c.test: c for c in block_checks(chain.central, BlockTestSettings())}
    assert not results["adjoint"].passed and not results["dirac"].passed
    assert results["square root"].skipped == "block 'lopsided' does not implement multiply_sqrt"
    assert "does not implement multiply_sqrt, and randomize draws through the square root" in \
        results["randomization mean"].skipped


def test_members_leaking_into_each_other_fail_the_batch_test(wrong_registry):
    chain = _chain(wrong_registry, {"saber block name": "member mixer", "error": 1e-5})
    results = {c.test: c for c in block_checks(chain.central, BlockTestSettings())}
    assert not results["batch"].passed and results["batch"].figure > 1e-6
    assert results["adjoint"].passed  # one member at a time the block is right


def test_block_tests_suite_reports_the_figures_of_a_wrong_block(tmp_path):
    """BlockTests run by pytest on wrong blocks: the failures name the test, the figure and the tolerance."""
    (tmp_path / "test_wrong.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(WRONG_BLOCKS.parent)!r})\n"
        "import wrong_blocks\n"
        "from pyoops.registry import Registry\n"
        "from pyoops.testing import BlockTests\n\n"
        "class TestWrong(BlockTests):\n"
        "    config = {'model plugin': 'lorenz96', 'geometry': {'resol': 40},\n"
        "              'background error': {'saber central block': {'saber block name': 'wrong sqrt', 'error': 1e-6},\n"
        "                                   'saber outer blocks': [{'saber block name': 'wrong adjoint'},\n"
        "                                                          {'saber block name': 'wrong inverse'}]}}\n\n"
        "    @classmethod\n"
        "    def make_registry(cls):\n"
        "        registry = Registry()\n"
        "        registry.load_entry_points()\n"
        "        registry.register_plugin(wrong_blocks, name='wrong-blocks')\n"
        "        return registry\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "--rootdir",
                          str(tmp_path), str(tmp_path / "test_wrong.py")], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    out = run.stdout
    assert run.returncode == 1, out
    assert "adjoint test failed: relative error" in out and "> tolerance 1e-12" in out
    assert "square root test failed: relative error 2.000e-06 > tolerance 1e-12" in out
    assert "left inverse test failed: relative error 1.000e-06 > tolerance 1e-12" in out
    assert "TestWrong.test_adjoint[outer[0]]" in out and "7 failed, 11 passed, 2 skipped" in out


# Requested tests that cannot run are errors -------------------------------------------------------
@pytest.mark.parametrize("central, outer, key, message", [
    ({"saber block name": "spectral correlation", "length scale": 0.1}, {"saber block name": "interpolation",
     "inner geometry": {"resol": 80}, "inverse test": True}, "inverse test",
     "asks for a test this block cannot run: interpolation has no left inverse"),
    ({"saber block name": "lopsided", "square-root test": True}, None, "square-root test",
     "asks for a test this block cannot run: block 'lopsided' does not implement multiply_sqrt"),
    ({"saber block name": "ID", "inverse test": True}, None, "inverse test",
     "a central block has no left inverse to test"),
    ({"saber block name": "ID"}, {"saber block name": "StdDev", "read": {"value": 2.0}, "square-root test": True},
     "square-root test", "an outer block has no square root to test"),
    ({"saber block name": "ID"}, {"saber block name": "StdDev", "read": {"value": 2.0}, "inverse test": True,
                                  "skip inverse": True}, "inverse test", "contradict each other"),
])
def test_impossible_construction_time_test_is_an_error(wrong_registry, central, outer, key, message):
    with pytest.raises(ConfigError, match=message) as err:
        _chain(wrong_registry, central, [outer] if outer else None)
    assert err.value.path.endswith(key)


def test_construction_time_tests_record_their_figures(wrong_registry):
    chain = _chain(wrong_registry, {"saber block name": "ID", "adjoint test": True, "square-root test": True},
                   [{"saber block name": "StdDev", "read": {"value": 2.0}, "adjoint test": True,
                     "inverse test": True}])
    assert [c.test for c in chain.test_results] == ["adjoint", "left inverse", "inverse", "adjoint", "square root"]
    assert all(c.passed and c.figure <= c.tolerance for c in chain.test_results)


# Capabilities come from the methods a block overrides ------------------------------------------------
def test_capabilities_are_derived_from_overridden_methods():
    from pyoops.saber.generic.basic import IdentityBlock, StdDev

    assert IdentityBlock.multiply_sqrt is not SaberCentralBlock.multiply_sqrt
    assert "has_sqrt" not in IdentityBlock.__dict__ and "has_inverse" not in StdDev.__dict__

    class P(SaberBlockParameters):
        saber_block_name: Literal["p"]

    with pytest.raises(TypeError, match=r"overrides \['multiply_sqrt'\] but not \['multiply_sqrt_ad', "
                                        r"'ctl_vec_size'\]"):
        type("Half", (SaberCentralBlock,), {"Parameters": P, "multiply": lambda s, f: f,
                                             "multiply_sqrt": lambda s, v: v})
    with pytest.raises(TypeError, match="sets has_inverse = True but does not implement"):
        type("Flagged", (SaberOuterBlock,), {"Parameters": P, "has_inverse": True, "multiply": lambda s, f: f,
                                              "multiply_ad": lambda s, f: f})
    # A legacy False flag switches an implemented capability off, and says so.
    off = type("Off", (SaberOuterBlock,), {"Parameters": P, "has_inverse": False, "multiply": lambda s, f: f,
                                           "multiply_ad": lambda s, f: f, "left_inverse_multiply": lambda s, f: f})
    assert "has_inverse" not in off.__dict__ and off._disabled_by_flag == frozenset({"has_inverse"})
