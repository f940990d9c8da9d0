"""Mistakes in plugins are reported as the plugin's, on one line, naming the plugin, its distribution and the maker.

Three broken SABER blocks are registered in-process as the plugin ``broken`` (whose
distribution is given as ``pyoops-broken 1.0``, as the entry-point loader records it):

* ``no parameters``: a block class without a ``Parameters`` class;
* ``no name``: a ``Parameters`` class without the ``saber block name`` key;
* ``key error``: a block whose ``multiply`` raises ``KeyError: 'u'`` (a bug in its code).

The first two are plugin-definition mistakes: exit status 1 and "plugin error", never the
user's YAML path; the third is an internal error located in the plugin's maker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import yaml

from pyoops.cli import main
from pyoops.config.parameters import Parameters
from pyoops.fields.fieldset import FieldSet
from pyoops.registry import Entry, get_registry
from pyoops.saber.blocks import SaberBlockParameters, SaberCentralBlock
from pyoops.util.errors import PluginError

T0 = "2010-01-01T00:00:00Z"


class _NoNameParameters(Parameters):
    length: float = 1.0


class NoParameters(SaberCentralBlock):
    def multiply(self, fields: FieldSet) -> FieldSet:
        return fields.copy()


NoParameters.Parameters = None  # type: ignore[assignment]  # what a plugin that forgot it looks like


class NoName(SaberCentralBlock):
    Parameters = _NoNameParameters  # type: ignore[assignment]

    def multiply(self, fields: FieldSet) -> FieldSet:
        return fields.copy()


class _KeyErrorParameters(SaberBlockParameters):
    saber_block_name: Literal["key error"]


class KeyErrorBlock(SaberCentralBlock):
    Parameters = _KeyErrorParameters

    def multiply(self, fields: FieldSet) -> FieldSet:
        return FieldSet({"u": fields["u"]})


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = get_registry()
    entries = registry.saber_block._entries
    for name, cls in (("no parameters", NoParameters), ("no name", NoName), ("key error", KeyErrorBlock)):
        monkeypatch.setitem(entries, name, Entry(name, cls, "broken"))
    monkeypatch.setitem(registry.distributions, "broken", "pyoops-broken 1.0")


def _dirac(tmp_path: Path, block: str) -> str:
    cfg = {"model plugin": "lorenz96", "geometry": {"resol": 40},
           "background": {"date": T0, "analytic init": {"method": "sinusoid"}},
           "background error": {"saber central block": {"saber block name": block}},
           "dirac": {"ixdir": [3]}}
    path = tmp_path / "dirac.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.parametrize("block, message", [
    ("no parameters", "saber block 'no parameters' (test_plugin_errors.NoParameters) has no Parameters class"),
    ("no name", "saber block 'no name' (test_plugin_errors.NoName) has a Parameters class (_NoNameParameters) "
                "without the key 'saber block name' that names it: the plugin must declare it, e.g. "
                "saber_block_name: Literal['no name']"),
])
def test_plugin_definition_mistakes_are_the_plugins_not_the_yamls(broken, tmp_path, capsys, block, message):
    for args in (["dirac", _dirac(tmp_path, block)], ["dirac", _dirac(tmp_path, block), "--validate-only"]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith("pyoops: plugin error: plugin 'broken' (pyoops-broken 1.0): "), err
        assert message in err.replace("tests.", "").replace("pyoops_tests.", ""), err
        assert "a mistake in the plugin, not in the configuration" in err
        assert "background error" not in err  # not blamed on the user's key


def test_plugin_error_carries_the_plugin_and_maker(broken):
    with pytest.raises(PluginError) as err:
        get_registry().saber_block.parameters({"saber block name": "no name"}, "background error")
    assert (err.value.plugin, err.value.kind, err.value.name, err.value.maker) == ("broken", "saber block", "no name",
                                                                                 NoName)


def test_a_bug_in_a_plugin_block_names_plugin_distribution_maker_and_exception(broken, tmp_path, capsys):
    assert main(["dirac", _dirac(tmp_path, "key error")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "pyoops: internal error in plugin 'broken' (pyoops-broken 1.0), saber block 'key error' (" in err, err
    assert "KeyErrorBlock.multiply): KeyError: 'u'" in err and "rerun with --debug for the traceback" in err, err
    assert main(["dirac", _dirac(tmp_path, "key error"), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err
