"""Lazy registration: makers registered by import path are imported on first use only.

``pyoops --help``, ``pyoops APP --help`` and ``pyoops plugins`` run in a fresh
interpreter and must import neither numpy nor scipy (nor pydantic, torch or any
registered maker's module): the names, plugins and application summaries are stored
at registration.  A maker registered by ``"module:Class"`` is imported by
``Factory.get`` and nothing else; classes registered directly keep working.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from pyoops.config import Parameters
from pyoops.registry import Entry, Factory, Registry, hookimpl
from pyoops.util.errors import ConfigError, PluginError, UnknownNameError

#: Modules that the commands listing names must not import.
HEAVY = ("numpy", "scipy", "pydantic", "torch", "netCDF4", "pyoops.apps", "pyoops.config.parameters")

#: A child interpreter runs ``pyoops ARGS`` in-process, then prints what it imported as JSON.
_PROBE = """
import json, sys
from pyoops.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
from pyoops.registry import get_registry
registry = get_registry()
makers = sorted({e.module for f in registry.factories.values() for e in f.entries()}
                | {m.geometry_module for m in registry.model_plugins.values()})
print(json.dumps({"code": code, "modules": sorted(sys.modules), "makers": makers}), file=sys.stderr)
"""


def _installed() -> Registry:
    """A fresh registry of the installed plugins only (the process-wide one may hold test plugins)."""
    registry = Registry()
    registry.load_entry_points()
    if "generic" not in registry.distributions:
        from pyoops.generic import plugin as generic_plugin

        registry.register_plugin(generic_plugin, name="generic")
    return registry


def _probe(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120, check=False)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    report["stdout"] = done.stdout
    return report


@pytest.mark.parametrize("args", [("--help",), ("forecast", "--help"), ("variational", "--help"), ("plugins",)],
                         ids=["help", "forecast-help", "variational-help", "plugins"])
def test_listing_commands_import_neither_numpy_nor_scipy(args):
    report = _probe(*args)
    assert report["code"] == 0
    modules = set(report["modules"])
    assert "numpy" not in modules and "scipy" not in modules
    assert [m for m in HEAVY if m in modules] == []
    assert [m for m in report["makers"] if m in modules] == [], "a registered maker was imported"
    assert len(report["makers"]) > 20  # the probe did see the built-in and the plugins' makers


def test_help_lists_every_application_with_its_summary():
    report = _probe("--help")
    registry = _installed()
    for entry in registry.application.entries():
        assert entry.name in report["stdout"]
    words = " ".join(report["stdout"].split())  # argparse wraps the summaries to the terminal width
    for entry in registry.application.entries():
        assert " ".join(entry.summary.split()) in words, entry.name


def test_plugins_lists_every_name_by_kind_and_the_distributions():
    report = _probe("plugins")
    out = report["stdout"]
    registry = _installed()
    for kind, entries in registry.describe().items():
        assert f"\n{kind}:\n" in out
        for name, plugin in entries:
            assert f"  {name:<28} [{plugin}]" in out
    assert "pyoops-lorenz96 0.1.0" in out and "pyoops-qg 0.1.0" in out


def test_registered_summaries_equal_the_application_classes():
    for entry in _installed().application.entries():
        assert entry.summary, entry.name
        assert entry.summary == entry.maker.summary, entry.name


def test_builtin_and_plugin_import_paths_all_resolve():
    registry = _installed()
    for factory in registry.factories.values():
        for entry in factory.entries():
            assert isinstance(entry.maker, type), (factory.kind, entry.name)
            assert entry.target == f"{entry.maker.__module__}:{entry.maker.__qualname__}" or \
                entry.target.startswith(entry.maker.__module__.split(".")[0])
    for plugin in registry.model_plugins.values():
        assert plugin.geometry is registry.geometry.get(plugin.name)
        assert isinstance(plugin.state, type) and isinstance(plugin.increment, type)


# Entry and Factory ------------------------------------------------------------------------

class _Maker:
    class Parameters(Parameters):
        name: str

    summary = "a test maker"


def test_import_path_is_imported_on_first_get_only():
    f = Factory("model", "name")
    f.register("Lazy", "tests_lazy_target_module:Thing", plugin="p")
    entry = f.entries()[0]
    assert not entry.loaded and entry.module == "tests_lazy_target_module" and f.names() == ["Lazy"]
    module = types.ModuleType("tests_lazy_target_module")
    module.Thing = _Maker  # type: ignore[attr-defined]
    sys.modules["tests_lazy_target_module"] = module
    try:
        assert entry.loaded_maker() is _Maker  # the module is imported: no import needed
        assert f.get("Lazy") is _Maker and entry.loaded
    finally:
        del sys.modules["tests_lazy_target_module"]


def test_real_module_path_resolves_nested_and_summary_is_kept():
    f = Factory("saber block", "saber block name")
    f.register("X", "pyoops.registry:Registry", summary="registry", plugin="p")
    f.register("Y", "pyoops.registry:Registry.factory")
    assert f.get("X") is Registry and f.entries()[0].summary == "registry"
    assert f.get("Y") is Registry.factory


def test_class_registered_directly_takes_its_summary_and_path():
    f = Factory("application")
    f.register("direct", _Maker, plugin="third")
    entry = f.entries()[0]
    assert entry.loaded and entry.summary == "a test maker"
    assert entry.target == f"{__name__}:_Maker"
    assert f.get("direct") is _Maker


def test_the_same_maker_by_path_and_by_class_is_no_clash():
    f = Factory("model", "name")
    f.register("M", _Maker, plugin="a")
    f.register("M", f"{__name__}:_Maker", plugin="a")
    with pytest.raises(ConfigError, match="registered twice"):
        f.register("M", "pyoops.registry:Registry", plugin="b")


def test_malformed_import_path_is_a_plugin_error():
    f = Factory("model", "name")
    for bad in ("pyoops.registry.Registry", "pyoops registry:Registry", ":Registry", "pyoops:"):
        with pytest.raises(PluginError, match="is not an import path"):
            f.register("Bad", bad, plugin="broken")


@pytest.mark.parametrize("target", ["pyoops_no_such_module:Model", "pyoops.registry:NoSuchClass"])
def test_unimportable_path_is_a_one_line_plugin_error_on_use(target):
    f = Factory("model", "name")
    f.register("Broken", target, plugin="broken")
    assert f.names() == ["Broken"]  # listing does not import
    with pytest.raises(PluginError) as err:
        f.get("Broken")
    assert err.value.plugin == "broken" and err.value.maker == target
    assert "cannot be imported" in str(err.value) and target in str(err.value) and "\n" not in str(err.value)
    assert f.entries()[0].loaded_maker() is None


def test_unknown_name_names_the_key_and_known_names_without_importing():
    f = Factory("model", "name")
    f.register("Lorenz96", "pyoops_no_such_module:Model", plugin="p")
    with pytest.raises(UnknownNameError) as err:
        f.maker_for({"name": "Lorenz69"}, "model")
    assert str(err.value).startswith("model.name:") and "known: Lorenz96" in str(err.value)
    assert not f.entries()[0].loaded


def test_entry_repr_says_whether_loaded():
    assert "not loaded" in repr(Entry("a", "pyoops.registry:Registry", "p"))
    assert "not loaded" not in repr(Entry("a", Registry, "p"))


def test_model_plugin_by_import_path_is_lazy_and_direct_classes_still_work():
    registry = Registry()

    class Plugin:
        @hookimpl
        def pyoops_register(self, registry):
            registry.add_model_plugin("lazytoy", geometry="pyoops_no_such_module:Geometry")
            registry.add_model_plugin("directtoy", geometry=_Maker, state=_Maker)

    registry.register_plugin(Plugin(), name="toys")
    lazy, direct = registry.model_plugins["lazytoy"], registry.model_plugins["directtoy"]
    assert lazy.geometry_module == "pyoops_no_such_module" and lazy.plugin == "toys"
    assert registry.geometry.names() == ["directtoy", "lazytoy"]
    with pytest.raises(PluginError, match="cannot be imported"):
        _ = lazy.geometry
    assert direct.geometry is _Maker and direct.state is _Maker
    from pyoops.generic.state import GenericIncrement

    assert direct.increment is GenericIncrement
    # re-declaring the same geometry (by path or class) is fine, another one is a clash
    registry.add_model_plugin("directtoy", geometry=f"{__name__}:_Maker")
    with pytest.raises(ConfigError, match="registered twice"):
        registry.add_model_plugin("directtoy", geometry="pyoops.registry:Registry")


# The command line ---------------------------------------------------------------------------

def _write(tmp_path: Path, model_name: str) -> str:
    path = tmp_path / "fc.yaml"
    path.write_text(
        "model plugin: lorenz96\ngeometry: {resol: 40}\n"
        f"model: {{name: {model_name}, tstep: PT6H}}\n"
        "initial condition: {date: 2010-01-01T00:00:00Z, analytic init: {method: sinusoid}}\n"
        "forecast length: PT6H\n", encoding="utf-8")
    return str(path)


def test_unknown_model_in_a_run_is_one_line_and_imports_no_other_maker(tmp_path):
    report = _probe("forecast", _write(tmp_path, "Lorenz69"))
    assert report["code"] == 2
    done = subprocess.run([sys.executable, "-m", "pyoops.cli", "forecast", _write(tmp_path, "Lorenz69")],
                          capture_output=True, text=True, timeout=120, check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "model.name" in lines[0] and "did you mean 'Lorenz96'" in lines[0]
    assert "Lorenz96, QG, ShallowWater" in lines[0]
    modules = set(report["modules"])
    assert "pyoops_qg.model" not in modules and "pyoops_shallow_water.model" not in modules
    assert "pyoops.apps.variational" not in modules


def test_a_one_step_forecast_imports_no_scipy_and_no_other_application(tmp_path):
    report = _probe("forecast", _write(tmp_path, "Lorenz96"), "--quiet")
    assert report["code"] == 0
    modules = set(report["modules"])
    assert "numpy" in modules and "pyoops.apps.forecast" in modules  # the probe saw a real run
    assert "scipy" not in modules and "torch" not in modules
    assert [m for m in modules if m.startswith("pyoops.apps.") and m not in
            ("pyoops.apps.forecast", "pyoops.apps.base", "pyoops.apps.files")] == []


def test_plugin_packages_export_their_classes_lazily():
    import pyoops_lorenz96
    from pyoops_lorenz96.model import Lorenz96Model

    assert pyoops_lorenz96.Lorenz96Model is Lorenz96Model
    assert "Lorenz96Model" in dir(pyoops_lorenz96) and "Lorenz96Model" in pyoops_lorenz96.__all__
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        pyoops_lorenz96.Nope  # noqa: B018
    import pyoops

    assert pyoops.run.__module__ == "pyoops.apps"
    with pytest.raises(AttributeError):
        pyoops.nope  # noqa: B018


def test_cycle_application_does_not_import_the_tuning_estimators() -> None:
    """``pyoops cycle`` uses the spectral innovation likelihood of the tuning package, not its estimators: importing
    the application must not import scipy.optimize or scipy.stats (0.5 s of start-up)."""
    import subprocess
    import sys

    code = ("import sys, pyoops.apps.cycle; "
            "print(sorted(m for m in ('scipy.optimize', 'scipy.stats', 'pyoops.diagnostics.tuning.estimators') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out
