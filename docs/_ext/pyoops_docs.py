"""Sphinx extension of the pyoops docs: YAML-key tables made from Parameters classes.

Every configurable object in pyoops declares a pydantic ``Parameters`` class whose
field aliases are the YAML keys.  This extension reads ``model_fields`` at build
time, so the configuration reference can never drift from the code:

* the directive ``.. pyoops-keys:: package.module.ClassName`` renders one table
  (YAML key, type, default, description) with an anchor other pages can link to;
  option ``:exclude: key, key`` leaves keys out;
* every Parameters class documented by autodoc gets the same table appended to
  its docstring.
"""

from __future__ import annotations

import datetime
import enum
import importlib
import re
import types
import typing
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

__all__ = ["setup"]

_SCALARS = {
    int: "integer",
    float: "number",
    str: "string",
    bool: "boolean",
    type(None): "null",
}


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _is_parameters(obj: Any) -> bool:
    try:
        from pydantic import BaseModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, type) and issubclass(obj, BaseModel) and hasattr(obj, "model_fields")


# Type names --------------------------------------------------------------------------------
def _type_text(annotation: Any) -> str:
    """A short, reader-facing description of a field annotation (RST)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_text(args[0])
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in args if a is not type(None)]
        text = " or ".join(_type_text(a) for a in parts)
        return text
    if origin is typing.Literal:
        return "one of " + ", ".join(f"``{_flow(a)}``" for a in args) if len(args) > 1 else f"``{_flow(args[0])}``"
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        return f"list of {_plural(_type_text(inner[0]))}" if inner else "list"
    if origin is dict or annotation is dict:
        return "mapping"
    if annotation is typing.Any:
        return "any"
    if isinstance(annotation, type):
        if annotation in _SCALARS:
            return _SCALARS[annotation]
        name = annotation.__name__
        if name == "DateTime":
            return "date-time"
        if name == "Duration":
            return "duration"
        if _is_parameters(annotation):
            return f"mapping (:class:`~{annotation.__module__}.{annotation.__qualname__}`)"
        return f":class:`~{annotation.__module__}.{annotation.__qualname__}`"
    return _escape(str(annotation))


def _plural(text: str) -> str:
    words = {"integer": "integers", "number": "numbers", "string": "strings", "boolean": "booleans",
             "mapping": "mappings", "date-time": "date-times", "duration": "durations"}
    return words.get(text, text)


def _constraints(field: Any) -> str:
    out = []
    for meta in getattr(field, "metadata", ()):
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(meta, attr, None)
            if value is not None and type(meta).__name__.lower() in (attr, "interval"):
                out.append(f"{sign} {value}")
        if type(meta).__name__ == "MinLen":
            n = meta.min_length
            out.append(f"at least {n} item{'s' if n != 1 else ''}")
        if type(meta).__name__ == "MaxLen":
            out.append(f"at most {meta.max_length} items")
    return ", ".join(out)


# Defaults ----------------------------------------------------------------------------------
def _flow(value: Any) -> str:
    """``value`` as YAML flow text."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return _flow(value.value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (datetime.datetime, datetime.timedelta)):
        return str(value)
    if hasattr(value, "model_dump"):
        return _flow(value.model_dump(by_alias=True, exclude_unset=True, mode="json"))
    return str(value)


def _default_text(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    if field.is_required():
        return "*required*"
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:  # factories that take the validated data
            return "*computed*"
        if hasattr(value, "model_dump") and not value.model_dump(exclude_unset=True):
            return "*all defaults*"
    else:
        value = field.default
    if value is PydanticUndefined:
        return "*required*"
    if value is None:
        return "*not set*"
    return f"``{_flow(value)}``"


# Escaping ----------------------------------------------------------------------------------
_LITERAL = re.compile(r"(``.+?``)")


def _escape(text: str) -> str:
    """Escape RST inline markup characters outside ````literal```` spans."""
    parts = _LITERAL.split(text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(part)
            continue
        part = part.replace("\\", "\\\\")
        for ch in "*`|":
            part = part.replace(ch, "\\" + ch)
        part = re.sub(r"(\w)_(?=\W|$)", r"\1\\_", part)
        out.append(part)
    return "".join(out)


# Tables ------------------------------------------------------------------------------------
def key_table(cls: Any, exclude: typing.Iterable[str] = (), widths: str = "22 22 14 42") -> list[str]:
    """RST lines of a list-table of the YAML keys of Parameters class ``cls``."""
    exclude = set(exclude)
    rows = []
    for name, field in cls.model_fields.items():
        key = field.alias or name
        if key in exclude or name in exclude:
            continue
        type_text = _type_text(field.annotation)
        limits = _constraints(field)
        if limits:
            type_text += f", {limits}"
        description = _escape((field.description or "").strip())
        rows.append((f"``{key}``", type_text, _default_text(field), description))
    if not rows:
        return ["*(no keys)*", ""]
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", "   :class: pyoops-keys", "",
             "   * - YAML key", "     - Type", "     - Default", "     - Meaning"]
    for row in rows:
        lines.append(f"   * - {row[0]}")
        for cell in row[1:]:
            lines.append(f"     - {cell}" if cell else "     -")
    lines.append("")
    return lines


def _anchor(cls: Any) -> str:
    return f"keys-{cls.__module__}.{cls.__qualname__}".lower().replace("_", "-").replace(".", "-")


class PyoopsKeysDirective(SphinxDirective):
    """``.. pyoops-keys:: module.Class`` — the YAML keys of a Parameters class."""

    required_arguments = 1
    optional_arguments = 0
    has_content = False
    option_spec = {
        "exclude": directives.unchanged,
        "widths": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        path = self.arguments[0]
        try:
            cls = _import(path)
        except (ImportError, AttributeError) as exc:
            raise self.error(f"pyoops-keys: cannot import {path!r}: {exc}") from None
        if not _is_parameters(cls):
            raise self.error(f"pyoops-keys: {path!r} is not a pydantic Parameters class")
        exclude = [k.strip() for k in self.options.get("exclude", "").split(",") if k.strip()]
        lines = key_table(cls, exclude, self.options.get("widths", "22 22 14 42"))
        container = nodes.container(classes=["pyoops-keys-table"])
        container["ids"].append(_anchor(cls))
        self.state.nested_parse(StringList(lines, source=self.get_source_info()[0]), self.content_offset, container)
        return [container]


def _append_keys(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    if what != "class" or not _is_parameters(obj):
        return
    from pyoops.config.parameters import Parameters

    if not issubclass(obj, Parameters) or obj is Parameters:
        return
    table = key_table(obj, widths="24 24 16 36")
    lines.extend(["", ".. rubric:: YAML keys", ""] + table)


def _skip_pydantic_internals(app: Sphinx, what: str, name: str, obj: Any, skip: bool, options: Any) -> bool | None:
    # pydantic's class-level machinery is not pyoops API.
    if name in ("model_config", "model_fields", "model_computed_fields"):
        return True
    return None


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("pyoops-keys", PyoopsKeysDirective)
    app.connect("autodoc-process-docstring", _append_keys)
    app.connect("autodoc-skip-member", _skip_pydantic_internals)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
