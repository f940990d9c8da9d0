"""Hostile or impossible configurations fail fast with one line: YAML alias bombs and recursion,
scalars YAML cannot build, infinite numbers, dates out of range, grids larger than memory."""

from __future__ import annotations

import time

import pytest

from pyoops.config.parameters import Parameters, validate
from pyoops.config.yaml_io import MAX_EXPANDED_NODES, parse_yaml
from pyoops.util.datetime import DateTime, Duration
from pyoops.util.errors import ConfigError, InputFileError
from pyoops.util.resources import format_bytes, memory_available, require_memory

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def test_an_alias_bomb_is_refused_quickly():
    start = time.process_time()
    with pytest.raises(InputFileError, match="expands to more than"):
        parse_yaml(BOMB, "bomb.yaml")
    # 9**9 nodes once expanded; the check visits each distinct node once. 5 s of CPU is
    # three orders of magnitude above what it takes, and far below walking the expansion.
    assert time.process_time() - start < 5.0


def test_aliases_within_the_cap_are_read():
    doc = parse_yaml("base: &b {f: 8.0, tstep: PT6H}\nmodel: *b\n")
    assert doc.data["model"] == {"f": 8.0, "tstep": "PT6H"}
    assert MAX_EXPANDED_NODES >= 10_000


def test_a_recursive_alias_is_refused():
    with pytest.raises(InputFileError, match="contains it"):
        parse_yaml("a: &x\n  b: *x\n", "rec.yaml")


@pytest.mark.parametrize("text, words", [
    ("date: 2010-02-30T00:00:00Z\n", ["line 1", "2010-02-30T00:00:00Z", "timestamp"]),
    ("n: !!int forty\n", ["line 1", "forty", "int"]),
    ("n: !!python/object:os.system ls\n", ["line 1", "constructor"]),
    ("[1, 2]\n", ["mapping"]),
    ("? [a, b]\n: 1\n", ["line 1", "unhashable key"]),
    ("1: one\n", ["keys must be strings"]),
])
def test_scalars_yaml_cannot_build_name_their_line(text, words):
    with pytest.raises(InputFileError) as info:
        parse_yaml(text, "bad.yaml")
    message = str(info.value)
    assert message.startswith("bad.yaml: ") and "\n" not in message
    for word in words:
        assert word in message


class _Weights(Parameters):
    weight: float


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), ".inf"])
def test_no_float_key_takes_a_non_finite_value(value):
    data = parse_yaml("weight: .inf\n").data if value == ".inf" else {"weight": value}
    with pytest.raises(ConfigError) as info:
        validate(_Weights, data, "hybrid")
    assert info.value.path == "hybrid.weight" and "finite" in str(info.value)


def test_durations_and_dates_out_of_range_are_config_errors():
    with pytest.raises(ConfigError, match="longer than the largest"):
        Duration("P99999999999D")
    with pytest.raises(ConfigError, match="years 1 to 9999"):
        DateTime("9999-12-31T00:00:00Z") + Duration("P2D")
    with pytest.raises(ConfigError, match="years 1 to 9999"):
        DateTime("0001-01-01T00:00:00Z") - Duration("P2D")


def test_memory_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv("PYOOPS_MEMORY_LIMIT", "1 MiB")
    assert memory_available() == 2**20
    with pytest.raises(ConfigError) as info:
        require_memory(2**21, "resol: 262144 (one state)", "geometry")
    assert info.value.path == "geometry"
    assert "2 MiB" in str(info.value) and "1 MiB" in str(info.value)
    monkeypatch.setenv("PYOOPS_MEMORY_LIMIT", "lots")
    with pytest.raises(ConfigError, match="PYOOPS_MEMORY_LIMIT"):
        memory_available()


def test_a_grid_larger_than_memory_fails_before_allocating(monkeypatch):
    from pyoops.generic.grid import StructuredGrid

    monkeypatch.setenv("PYOOPS_MEMORY_LIMIT", "64 MiB")
    with pytest.raises(ConfigError, match="would need"):
        StructuredGrid.periodic_1d(3_000_000_000)
    with pytest.raises(ConfigError, match="4096 x 4096 points"):
        StructuredGrid.periodic_2d(4096, 4096)


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(24e9) == "22.4 GiB"
