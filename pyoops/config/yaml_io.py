"""YAML loading with ``yaml.safe_load`` semantics and a map of key line numbers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from pyoops.util.errors import ConfigError, InputFileError, join_path

__all__ = ["ConfigDocument", "load_config"]


class ConfigDocument:
    """A loaded YAML configuration: its data, file name and where each key sits.

    Only the safe loader is used: YAML tags that would build Python objects are
    rejected.  ``line_of("cost function.background")`` gives the 1-based line of
    that key, for error messages.
    """

    def __init__(self, data: dict[str, Any], filename: str | None = None, lines: dict[str, int] | None = None):
        self.data = data
        self.filename = filename
        self._lines = lines or {}

    @property
    def directory(self) -> Path:
        return Path(self.filename).resolve().parent if self.filename else Path.cwd()

    def line_of(self, path: str | None) -> int | None:
        """Line of the deepest known key along ``path`` (1-based), or None."""
        while path:
            if path in self._lines:
                return self._lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None

    def where(self, path: str | None) -> str:
        """``file.yaml:12`` for a YAML path, for messages."""
        line = self.line_of(path)
        if self.filename and line:
            return f"{self.filename}:{line}"
        return self.filename or "<config>"


def _index_lines(node: yaml.Node, path: str, out: dict[str, int], name: str = "<config>") -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    # safe_load would silently keep the last value: refuse, as YAML requires unique keys.
                    raise InputFileError(name, f"duplicate key '{join_path(path, key_node.value)}' at line {line} "
                                               f"(first given at line {seen[key_node.value]})")
                seen[key_node.value] = line
            key = join_path(path, str(key_node.value))
            out[key] = line
            _index_lines(value_node, key, out, name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = join_path(path, i)
            out[key] = item.start_mark.line + 1
            _index_lines(item, key, out, name)


def parse_yaml(text: str, filename: str | None = None) -> ConfigDocument:
    """Parse YAML text with the safe loader into a :class:`ConfigDocument`."""
    name = filename or "<config>"
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputFileError(name, f"is not valid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputFileError(name, f"expected a YAML mapping at the top level, got {type(data).__name__}")
    lines: dict[str, int] = {}
    if node is not None:
        _index_lines(node, "", lines, name)
    return ConfigDocument(data, filename, lines)


def load_config(source: "str | os.PathLike[str] | dict[str, Any]") -> ConfigDocument:
    """Load a configuration from a YAML file name or take a dict as it is."""
    if isinstance(source, ConfigDocument):
        return source
    if isinstance(source, dict):
        return ConfigDocument(source)
    path = Path(source)
    if not path.is_file():
        raise InputFileError(str(path), "configuration file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(str(path), f"cannot be read: {exc}") from None
    return parse_yaml(text, str(path))


def dump_yaml(data: Any) -> str:
    """YAML text for plain data, keys in insertion order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def require_mapping(value: Any, path: str) -> dict[str, Any]:
    """``value`` as a dict, or a ConfigError naming ``path``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"expected a mapping, got {type(value).__name__} {value!r}", path)
    return value
