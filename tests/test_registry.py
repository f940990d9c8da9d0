"""Named factories, in-process plugins and the built-in ``generic`` entry point."""

import types

import pytest

from pyoops.config import Parameters
from pyoops.registry import Factory, Registry, get_registry, hookimpl, reset_registry
from pyoops.util import ConfigError, UnknownNameError
from pyoops.util.errors import PluginError


class _A:
    class Parameters(Parameters):
        name: str
        alpha: float = 1.0


class _B:
    pass


def _factory():
    f = Factory("model", "name")
    f.register("Lorenz96", _A, plugin="lorenz96")
    f.register("QG", _B, plugin="qg")
    return f


def test_get_known_name():
    f = _factory()
    assert f.get("Lorenz96") is _A
    assert "QG" in f and "qg" not in f
    assert f.names() == ["Lorenz96", "QG"]
    assert [e.plugin for e in f.entries()] == ["lorenz96", "qg"]


def test_unknown_name_lists_known_and_suggests_close_one():
    f = _factory()
    with pytest.raises(UnknownNameError) as err:
        f.get("Lorenz69", "cost function.model.name")
    msg = str(err.value)
    assert msg.startswith("cost function.model.name:")
    assert "'Lorenz69' does not exist in the model factory" in msg
    assert "did you mean 'Lorenz96'" in msg
    assert "Lorenz96" in msg and "QG" in msg
    assert isinstance(err.value, ConfigError)


def test_unknown_name_without_close_match_has_no_hint():
    with pytest.raises(UnknownNameError) as err:
        _factory().get("ShallowWater")
    assert "did you mean" not in str(err.value)
    assert "known: Lorenz96, QG" in str(err.value)


def test_non_string_name_is_unknown():
    with pytest.raises(UnknownNameError):
        _factory().get(None)


def test_empty_factory_says_none_registered():
    with pytest.raises(UnknownNameError, match="none registered"):
        Factory("saber block").get("ID")


def test_duplicate_registration_by_two_plugins_errors():
    f = _factory()
    with pytest.raises(ConfigError) as err:
        f.register("Lorenz96", _B, plugin="impostor")
    assert "lorenz96" in str(err.value) and "impostor" in str(err.value)
    assert f.get("Lorenz96") is _A
    f.register("Lorenz96", _A, plugin="lorenz96")  # same maker again is harmless
    f.register("Lorenz96", _B, plugin="x", replace=True)
    assert f.get("Lorenz96") is _B


def test_maker_for_and_parameters():
    f = _factory()
    assert f.maker_for({"name": "Lorenz96"}, "model") is _A
    params = f.parameters({"name": "Lorenz96", "alpha": 2.0}, "model")
    assert params.alpha == 2.0
    with pytest.raises(ConfigError, match=r"^model\.name: required key is missing"):
        f.maker_for({"nmae": "Lorenz96"}, "model")
    with pytest.raises(ConfigError, match=r"model\.alhpa.*did you mean 'alpha'"):
        f.parameters({"name": "Lorenz96", "alhpa": 2.0}, "model")
    with pytest.raises(PluginError, match="model 'QG' .* has no Parameters class"):  # the plugin's mistake
        f.parameters({"name": "QG"}, "model")
    with pytest.raises(UnknownNameError, match=r"^model\.name:"):
        f.maker_for({"name": "nope"}, "model")


def _plugin_module(modname, **makers):
    mod = types.ModuleType(modname)

    @hookimpl
    def pyoops_register(registry):
        for name, maker in makers.items():
            registry.saber_block.register(name, maker, plugin=registry._current_plugin)

    mod.pyoops_register = pyoops_register
    return mod


def test_in_process_plugin_adds_names():
    reg = Registry()
    assert "MyBlock" not in reg.saber_block
    reg.register_plugin(_plugin_module("myplugin", MyBlock=_A))
    assert reg.saber_block.get("MyBlock") is _A
    assert reg.saber_block.entries()[0].plugin == "myplugin"
    assert ("MyBlock", "myplugin") in reg.describe()["saber block"]


def test_registering_the_same_plugin_twice_is_a_no_op():
    reg = Registry()
    mod = _plugin_module("p", MyBlock=_A)
    reg.register_plugin(mod)
    reg.register_plugin(mod)
    assert reg.saber_block.names() == ["MyBlock"]


def test_two_plugins_registering_the_same_name_error():
    reg = Registry()
    reg.register_plugin(_plugin_module("first", Clash=_A))
    with pytest.raises(ConfigError) as err:
        reg.register_plugin(_plugin_module("second", Clash=_B))
    assert "first" in str(err.value) and "second" in str(err.value)
    assert reg.saber_block.get("Clash") is _A


def test_model_plugin_declaration_and_lookup():
    from pyoops.generic.grid import StructuredGrid
    from pyoops.generic.state import GenericIncrement, GenericState

    reg = Registry()
    entry = reg.add_model_plugin("toy", geometry=StructuredGrid, description="a toy")
    assert entry.state is GenericState and entry.increment is GenericIncrement
    assert reg.model_plugin("toy") is entry
    assert reg.geometry.get("toy") is StructuredGrid
    with pytest.raises(UnknownNameError) as err:
        reg.model_plugin("tyo")
    assert "did you mean 'toy'" in str(err.value) and "pip install" in str(err.value)


def test_unknown_factory_kind():
    with pytest.raises(KeyError, match="kinds"):
        Registry().factory("teleporter")


def test_generic_entry_point_registers_builtins():
    from pyoops.generic.obs_error import DiagonalObsError
    from pyoops.generic.obs_operators import IdentityObsOperator, LinearIdentityObsOperator

    reset_registry()
    try:
        reg = get_registry()
        assert reg.plugin_manager.get_plugin("generic") is not None
        assert reg.obs_operator.get("Identity") is IdentityObsOperator
        assert reg.linear_obs_operator.get("Identity") is LinearIdentityObsOperator
        assert reg.obs_error.get("diagonal") is DiagonalObsError
        assert get_registry() is reg  # built once
        assert dict(reg.describe()["obs error"])["diagonal"] == "generic"
    finally:
        reset_registry()
