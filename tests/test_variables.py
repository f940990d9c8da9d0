"""Variables: ordered, duplicate-free sets of names (oops::Variables)."""

import pytest

from pyoops.util import ConfigError, Variables


def test_order_kept_and_duplicates_dropped():
    v = Variables(["u", "v", "u", "t"])
    assert list(v) == ["u", "v", "t"]
    assert len(v) == 3
    assert v[1] == "v"
    assert v.index("t") == 2
    assert v.tolist() == ["u", "v", "t"]


def test_single_string_is_one_variable_not_characters():
    assert list(Variables("psi")) == ["psi"]


@pytest.mark.parametrize("bad", [[""], [1], ["x", None]])
def test_bad_names_raise(bad):
    with pytest.raises(ConfigError):
        Variables(bad)


def test_set_operations_keep_left_order():
    a = Variables(["x", "y", "z"])
    b = Variables(["z", "w", "x"])
    assert list(a + b) == ["x", "y", "z", "w"]
    assert list(a - b) == ["y"]
    assert list(a & b) == ["x", "z"]
    assert list(b & a) == ["z", "x"]
    assert Variables(["x"]).is_subset_of(a)
    assert not b.is_subset_of(a)


def test_equality_is_order_sensitive_and_accepts_lists():
    assert Variables(["x", "y"]) == ["x", "y"]
    assert Variables(["x", "y"]) == ("x", "y")
    assert Variables(["x", "y"]) != Variables(["y", "x"])
    assert hash(Variables(["x", "y"])) == hash(Variables(["x", "y", "x"]))
    assert "x" in Variables(["x"]) and "q" not in Variables(["x"])


def test_str_and_repr():
    v = Variables(["psi", "u"])
    assert str(v) == "psi, u"
    assert repr(v) == "Variables(['psi', 'u'])"
    assert Variables(v) == v
