"""Typed parameter classes (pydantic v2) with OOPS-style YAML keys.

Every configurable object in pyoops declares a :class:`Parameters` subclass.
Python field names use underscores; YAML keys are the same names with spaces
(``cost_type`` ↔ ``cost type``), as in OOPS.  Unknown keys are rejected, and
:func:`validate` turns pydantic's errors into one :class:`~pyoops.util.errors.ConfigError`
that names the YAML path and, for a misspelt key, the closest valid one.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    Field,
    field_validator,
    model_validator,
)

from pyoops.util.datetime import DateTime, Duration, TimeWindow
from pyoops.util.errors import ConfigError, join_path

__all__ = [
    "DateTimeField",
    "as_parameters",
    "DurationField",
    "PositiveDurationField",
    "Parameters",
    "TimeWindowParameters",
    "VariableName",
    "per_variable_number",
    "validate",
    "yaml_keys",
]


def _yaml_alias(name: str) -> str:
    return name.replace("_", " ")


class Parameters(BaseModel):
    """Base of every parameter class: strict keys, YAML aliases with spaces, finite numbers.

    ``.inf`` and ``.nan`` are refused for every float key: no configurable quantity of
    pyoops (errors, weights, inflation, lengths, tolerances) is meaningful when infinite.
    """

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        alias_generator=_yaml_alias,
        populate_by_name=True,
        arbitrary_types_allowed=True,
        validate_default=False,
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``true``/``false`` for an integer or float key is a mistake, not 1 or 0 (pydantic would take it)."""
        if isinstance(value, bool) and info.field_name is not None:
            field = cls.model_fields.get(info.field_name)
            kind = _numeric_annotation(field.annotation) if field is not None else ""
            if kind:
                raise ValueError(f"expected {kind}, got the boolean {str(value).lower()}")
        return value

    def to_yaml_dict(self) -> dict[str, Any]:
        """The parameters as a plain dict with YAML keys (round-trips through :func:`validate`)."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


def _numeric_annotation(annotation: Any) -> str:
    """``"an integer"`` or ``"a number"`` when ``annotation`` is ``int``/``float`` (possibly optional or in a
    union without ``bool``), else ``""``."""
    import types
    import typing

    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return _numeric_annotation(args[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and bool not in args:
        return next((kind for kind in map(_numeric_annotation, args) if kind), "")
    return ""


VariableName = Annotated[str, StringConstraints(min_length=1, pattern=r"^\S(.*\S)?$")]
"""A variable name, a non-empty string without leading or trailing blanks."""


def per_variable_number(what: str, positive: bool, unit: str = "") -> Any:
    """A before-validator for a key that takes a finite number or ``{variable: finite number}``.

    ``what`` names the quantity in messages (plural, e.g. ``"length scales"``); with
    ``positive`` the numbers must also be > 0; ``unit`` completes "a ... number{unit}".
    Returns a float or a ``{str: float}`` dict.
    """
    import math

    def ok(x: Any) -> bool:
        return (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                and (x > 0 or not positive))

    kind = "positive finite number" if positive else "finite number"

    def check(value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, dict):
            bad = {k: v for k, v in value.items() if not ok(v)}
            if not value or bad:
                raise ValueError(f"{what} must be {kind}s{unit}, got {bad or value!r}")
            return {str(k): float(v) for k, v in value.items()}
        if not ok(value):
            raise ValueError(f"must be a {kind}{unit} (or a mapping variable: value), got {value!r}")
        return float(value)

    return check


def _as_datetime(value: Any) -> DateTime:
    import datetime as _dt

    if isinstance(value, (DateTime, str, _dt.datetime, _dt.date)):
        return DateTime(value)
    raise ConfigError(f"expected an ISO-8601 date-time such as '2010-01-01T00:00:00Z', got {value!r}")


def _as_duration(value: Any) -> Duration:
    if isinstance(value, (Duration, str)):
        return Duration(value)
    raise ConfigError(f"expected an ISO-8601 duration such as 'PT6H', got {value!r}")


DateTimeField = Annotated[
    DateTime,
    BeforeValidator(_as_datetime),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2010-01-01T00:00:00Z"]}),
]
"""A pydantic field type for ISO-8601 date-times (YAML strings or YAML timestamps)."""

DurationField = Annotated[
    Duration,
    BeforeValidator(_as_duration),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "format": "duration", "examples": ["PT6H"]}),
]
"""A pydantic field type for ISO-8601 durations such as ``PT6H``."""


def _positive_duration(value: Duration) -> Duration:
    if value <= Duration(0):
        raise ValueError(f"must be positive, got {value}")
    return value


PositiveDurationField = Annotated[DurationField, AfterValidator(_positive_duration)]
"""A duration that must be longer than zero (a frequency, a step)."""


def yaml_keys(cls: type[BaseModel]) -> list[str]:
    """The YAML keys a parameter class accepts."""
    return [f.alias or name for name, f in cls.model_fields.items()]


def _union_members(annotation: Any) -> list[Any]:
    """Parameter classes inside an annotation (Optional, list, Union, Annotated)."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[Any] = []
    for arg in typing.get_args(annotation):
        out.extend(_union_members(arg))
    return out


def _tag_of(member: Any) -> list[str]:
    """Names pydantic may put in an error location for a union member."""
    import typing

    names = [member.__name__]
    for field in member.model_fields.values():
        if typing.get_origin(field.annotation) is typing.Literal:
            names.extend(str(a) for a in typing.get_args(field.annotation))
    return names


def _walk(cls: Any, loc: list[Any]) -> tuple[list[Any], Any]:
    """Follow an error location through nested parameter classes.

    Returns the location with union-member tags removed (they are not YAML keys)
    and the parameter class owning the last element (or None).
    """
    clean: list[Any] = []
    owner: Any = cls
    candidates: list[Any] = []
    for part in loc:
        if candidates:
            chosen = [m for m in candidates if isinstance(part, str) and part in _tag_of(m)]
            candidates = []
            if chosen:
                owner = chosen[0]
                continue
        clean.append(part)
        if isinstance(part, int):
            continue
        if isinstance(owner, type) and issubclass(owner, BaseModel):
            annotation = None
            for name, field in owner.model_fields.items():
                if part in (name, field.alias):
                    annotation = field.annotation
            members = _union_members(annotation) if annotation is not None else []
            owner = members[0] if len(members) == 1 else None
            candidates = members if len(members) > 1 else []
        else:
            owner = None
    return clean, owner


def _describe(error: dict[str, Any], cls: type[BaseModel], prefix: str) -> tuple[str, str]:
    """``(yaml path, message)`` for one pydantic error."""
    loc = [part for part in error["loc"] if not (isinstance(part, str) and "[" in part and "]" in part)]
    kind = error["type"]
    if kind == "extra_forbidden":
        parent, owner = _walk(cls, loc[:-1])
        path = join_path(prefix, *parent, loc[-1])
        bad = str(loc[-1])
        valid = yaml_keys(owner) if isinstance(owner, type) and issubclass(owner, BaseModel) else []
        close = difflib.get_close_matches(bad, valid, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        listing = f" (valid keys: {', '.join(valid)})" if valid else ""
        return path, f"unknown key '{bad}'{hint}{listing}"
    clean, _ = _walk(cls, loc)
    path = join_path(prefix, *clean)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        ctx = error.get("ctx", {})
        key = str(ctx.get("discriminator", "")).strip("'\"")
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        what = f"unknown value {ctx.get('tag')!r}" if kind == "union_tag_invalid" else "required key is missing"
        listing = f" (expected one of: {expected})" if expected else ""
        return join_path(path, key), f"{what}{listing}"
    if kind == "missing":
        return path, "required key is missing"
    message = error["msg"]
    for prefix_text in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix_text):
            message = message[len(prefix_text):]
    got = error.get("input")
    if kind not in ("value_error", "assertion_error") and not isinstance(got, (dict, list)):
        message = f"{message[0].lower()}{message[1:]}, got {got!r}"
    return path, message


P = TypeVar("P", bound=BaseModel)


def validate(cls: type[P], data: Any, path: str = "") -> P:
    """Validate ``data`` (a YAML mapping) against ``cls`` or raise one ConfigError.

    Parameters
    ----------
    cls:
        The parameter class.
    data:
        The YAML value; ``None`` is read as an empty mapping.
    path:
        Dotted YAML path of ``data`` in its file, used in the error message.
    """
    if data is None:
        data = {}
    if isinstance(data, BaseModel):
        data = data.model_dump(by_alias=True, exclude_unset=True)
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of {cls.__name__} keys, got {type(data).__name__} {data!r}", path)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        # A misspelt key shows up as one unknown key plus one missing key: report
        # the unknown key first, with its suggestion.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        where, first = _describe(errors[0], cls, path)
        more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise ConfigError(first + more, where or None) from None


def as_parameters(cls: type[P], params: Any, path: str = "") -> P:
    """``params`` if it already is a ``cls``, else the validated YAML mapping.

    Lets a plugin class accept either validated parameters (from a factory) or the
    mapping itself (from Python code and tests).
    """
    return params if isinstance(params, cls) else validate(cls, dict(params or {}), path)


class TimeWindowParameters(Parameters):
    """``time window: {begin, length}`` (observations in (begin, begin + length])."""

    begin: DateTimeField = Field(description="Window begin (ISO-8601).")
    length: DurationField = Field(description="Window length (ISO-8601 duration).")
    bound_to_include: Literal["end", "begin"] = Field(
        "end", description="'end': obs at begin belong to the previous window (OOPS default); 'begin': accept them.")

    @field_validator("length")
    @classmethod
    def _not_negative(cls, value: Duration) -> Duration:
        if value < Duration(0):
            raise ValueError(f"the window length must not be negative, got {value}")
        return value

    @model_validator(mode="after")
    def _end_in_range(self) -> "TimeWindowParameters":
        self.begin + self.length  # a ConfigError (a ValueError) if the end is past year 9999
        return self

    def window(self) -> TimeWindow:
        """The :class:`~pyoops.util.datetime.TimeWindow` of these parameters."""
        return TimeWindow(self.begin, self.length, include_begin=self.bound_to_include == "begin")
