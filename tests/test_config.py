"""Typed Parameters validation and safe YAML loading with line numbers."""

import textwrap

import pytest
from pydantic import Field, model_validator

from pyoops.config import (
    ConfigDocument,
    DateTimeField,
    DurationField,
    Parameters,
    dump_yaml,
    load_config,
    parse_yaml,
    require_mapping,
    validate,
    yaml_keys,
)
from pyoops.util import ConfigError, DateTime, Duration, InputFileError


class Block(Parameters):
    length_scale: float
    smoothness: float = 1.5


class Iteration(Parameters):
    ninner: int
    gradient_norm_reduction: float = 1e-8


class Top(Parameters):
    cost_type: str
    window_begin: DateTimeField
    window_length: DurationField = Field(Duration("PT6H"))
    block: Block | None = None
    iterations: list[Iteration] = Field(default_factory=list)


GOOD = {
    "cost type": "3D-Var",
    "window begin": "2010-01-01T21:00:00Z",
    "block": {"length scale": 0.05},
    "iterations": [{"ninner": 10}, {"ninner": 20, "gradient norm reduction": 1e-4}],
}


def test_valid_config_is_parsed_with_yaml_aliases():
    p = validate(Top, GOOD)
    assert p.cost_type == "3D-Var"
    assert p.window_begin == DateTime("2010-01-01T21:00:00Z")
    assert p.window_length == Duration("PT6H")
    assert p.block.length_scale == 0.05 and p.block.smoothness == 1.5
    assert [it.ninner for it in p.iterations] == [10, 20]
    assert yaml_keys(Top) == ["cost type", "window begin", "window length", "block", "iterations"]


def test_to_yaml_dict_round_trips():
    p = validate(Top, GOOD)
    d = p.to_yaml_dict()
    assert d["window begin"] == "2010-01-01T21:00:00Z"
    assert "window length" not in d  # unset keys stay unset
    assert validate(Top, d) == p


def test_yaml_timestamp_objects_are_accepted():
    doc = parse_yaml("cost type: 3D-Var\nwindow begin: 2010-01-01T21:00:00Z\n")
    assert validate(Top, doc.data).window_begin == DateTime("2010-01-01T21:00:00Z")


def test_unquoted_yaml_timestamp_without_zone_is_rejected():
    doc = parse_yaml("cost type: 3D-Var\nwindow begin: 2010-01-01T21:00:00\n")
    with pytest.raises(ConfigError, match="window begin.*time zone"):
        validate(Top, doc.data)


def test_misspelt_top_level_key_names_path_and_suggests():
    bad = dict(GOOD)
    bad["cost tpye"] = bad.pop("cost type")
    with pytest.raises(ConfigError) as err:
        validate(Top, bad, "cost function")
    msg = str(err.value)
    assert "cost function.cost tpye" in msg
    assert "did you mean 'cost type'" in msg


def test_misspelt_nested_key_names_dotted_path_and_suggests():
    bad = dict(GOOD, block={"lenght scale": 0.05})
    with pytest.raises(ConfigError) as err:
        validate(Top, bad, "cost function")
    msg = str(err.value)
    assert "cost function.block.lenght scale" in msg
    assert "did you mean 'length scale'" in msg
    assert "smoothness" in msg  # the valid keys are listed


def test_misspelt_key_in_list_item_names_index():
    bad = dict(GOOD, iterations=[{"ninner": 10}, {"ninner": 5, "gradient norm reductoin": 1e-3}])
    with pytest.raises(ConfigError) as err:
        validate(Top, bad, "variational")
    msg = str(err.value)
    assert "variational.iterations[1].gradient norm reductoin" in msg
    assert "did you mean 'gradient norm reduction'" in msg


def test_unrelated_unknown_key_has_no_suggestion():
    with pytest.raises(ConfigError) as err:
        validate(Top, dict(GOOD, zzzzzz=1))
    assert "zzzzzz" in str(err.value)
    assert "did you mean" not in str(err.value)


def test_wrong_type_names_path_and_value():
    bad = dict(GOOD, iterations=[{"ninner": "many"}])
    with pytest.raises(ConfigError) as err:
        validate(Top, bad, "variational")
    msg = str(err.value)
    assert msg.startswith("variational.iterations[0].ninner:")
    assert "integer" in msg and "'many'" in msg


def test_wrong_duration_names_path():
    with pytest.raises(ConfigError) as err:
        validate(Top, dict(GOOD, **{"window length": "6 hours"}), "cost function")
    assert str(err.value).startswith("cost function.window length:")
    assert "'6 hours'" in str(err.value)


def test_missing_key_names_path():
    bad = {k: v for k, v in GOOD.items() if k != "window begin"}
    with pytest.raises(ConfigError) as err:
        validate(Top, bad, "cost function")
    assert "cost function.window begin" in str(err.value)
    assert "missing" in str(err.value)


def test_missing_nested_key_names_path():
    with pytest.raises(ConfigError) as err:
        validate(Top, dict(GOOD, block={"smoothness": 2.0}))
    assert str(err.value).startswith("block.length scale:")


def test_several_errors_are_counted():
    with pytest.raises(ConfigError) as err:
        validate(Top, {"cost type": 1.5})
    assert "more error" in str(err.value)


def test_non_mapping_rejected_with_path():
    with pytest.raises(ConfigError) as err:
        validate(Top, ["a", "b"], "cost function")
    assert err.value.path == "cost function"
    assert "mapping" in str(err.value)


def test_none_is_an_empty_mapping():
    class Defaults(Parameters):
        a: int = 3

    assert validate(Defaults, None).a == 3


def test_model_validator_message_names_section():
    class OneOf(Parameters):
        a: int | None = None
        b: int | None = None

        @model_validator(mode="after")
        def _one(self):
            if (self.a is None) == (self.b is None):
                raise ValueError("give exactly one of 'a' and 'b'")
            return self

    with pytest.raises(ConfigError) as err:
        validate(OneOf, {"a": 1, "b": 2}, "section")
    assert str(err.value) == "section: give exactly one of 'a' and 'b'"


def test_require_mapping():
    assert require_mapping(None, "x") == {}
    with pytest.raises(ConfigError, match="^a.b: expected a mapping"):
        require_mapping([1], "a.b")


# YAML ---------------------------------------------------------------------------------

YAML_TEXT = textwrap.dedent(
    """\
    # a comment
    cost function:
      cost type: 3D-Var
      background:
        date: 2010-01-02T00:00:00Z
        filename: bg.nc
    observations:
      observers:
      - obs space:
          name: x grid
        obs operator: {name: Identity}
      - obs space:
          name: second
    """
)


def test_line_of_nested_keys_and_list_items():
    doc = parse_yaml(YAML_TEXT, "c.yaml")
    assert doc.line_of("cost function") == 2
    assert doc.line_of("cost function.cost type") == 3
    assert doc.line_of("cost function.background.filename") == 6
    assert doc.line_of("observations.observers") == 8
    assert doc.line_of("observations.observers[0]") == 9
    assert doc.line_of("observations.observers[0].obs space.name") == 10
    assert doc.line_of("observations.observers[0].obs operator") == 11
    assert doc.line_of("observations.observers[0].obs operator.name") == 11
    assert doc.line_of("observations.observers[1].obs space.name") == 13
    # unknown deeper keys fall back to the deepest known ancestor
    assert doc.line_of("cost function.background.nonexistent") == 4
    assert doc.line_of("observations.observers[1].obs error.covariance model") == 12
    assert doc.line_of("nowhere") is None
    assert doc.line_of(None) is None
    assert doc.where("cost function.background.date") == "c.yaml:5"


def test_parse_error_gives_inputfileerror_with_line():
    text = "a: 1\nb: [1, 2\nc: 3\n"
    with pytest.raises(InputFileError) as err:
        parse_yaml(text, "broken.yaml")
    assert err.value.filename == "broken.yaml"
    assert "line" in str(err.value)
    assert "broken.yaml" in str(err.value)


def test_bad_indentation_reports_the_right_line():
    text = "a:\n  b: 1\n c: 2\n"
    with pytest.raises(InputFileError, match="line 3"):
        parse_yaml(text, "indent.yaml")


def test_python_object_tags_are_rejected():
    text = "x: !!python/object/apply:os.system ['echo pwned']\n"
    with pytest.raises(InputFileError, match="constructor"):
        parse_yaml(text, "evil.yaml")
    with pytest.raises(InputFileError):
        parse_yaml("x: !!python/object:collections.OrderedDict {}\n", "evil.yaml")


def test_duplicate_keys_are_rejected_with_both_lines():
    text = "a: 1\nb:\n  c: 1\n  c: 2\n"
    with pytest.raises(InputFileError) as err:
        parse_yaml(text, "dup.yaml")
    msg = str(err.value)
    assert "b.c" in msg and "line 4" in msg and "line 3" in msg


def test_merge_keys_and_anchors_still_work():
    doc = parse_yaml("base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\nl: &l [1, 2]\nm: *l\n")
    assert doc.data["d"] == {"x": 1, "y": 2}
    assert doc.data["m"] == [1, 2]


def test_top_level_must_be_a_mapping():
    with pytest.raises(InputFileError, match="mapping"):
        parse_yaml("- 1\n- 2\n", "list.yaml")
    assert parse_yaml("").data == {}


def test_load_config_from_file_and_errors(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(YAML_TEXT)
    doc = load_config(f)
    assert doc.data["cost function"]["background"]["filename"] == "bg.nc"
    assert doc.directory == tmp_path.resolve()
    assert doc.filename == str(f)
    assert load_config(doc) is doc
    assert load_config({"a": 1}).data == {"a": 1}
    with pytest.raises(InputFileError, match="not found") as err:
        load_config(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(err.value)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputFileError, match="bin.yaml"):
        load_config(binary)


def test_dump_yaml_round_trips_and_keeps_order():
    data = {"z": 1, "a": [1, 2], "m": {"k": "PT6H"}}
    text = dump_yaml(data)
    assert text.index("z") < text.index("a:")
    assert parse_yaml(text).data == data


def test_config_document_defaults():
    doc = ConfigDocument({"a": 1})
    assert doc.where("a") == "<config>"
    assert doc.line_of("a") is None
