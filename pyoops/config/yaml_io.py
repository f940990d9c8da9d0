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


#: Largest number of YAML nodes a configuration may expand to once aliases are followed.
#: A real configuration has a few hundred; the cap stops "billion laughs" alias bombs
#: before anything walks the expanded tree.
MAX_EXPANDED_NODES = 100_000


def _expanded_size(root: yaml.Node, name: str) -> int:
    """Number of nodes of ``root`` with aliases expanded; refuses cycles and alias bombs.

    Aliases make the node graph a DAG whose expansion can be exponential: sizes are
    memoised per node, so this costs one visit per distinct node.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            children = _children(node)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_EXPANDED_NODES:
                raise InputFileError(name, f"expands to more than {MAX_EXPANDED_NODES} YAML nodes through "
                                           f"aliases (near line {node.start_mark.line + 1}); a configuration has a "
                                           "few hundred: remove the nested aliases")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise InputFileError(name, f"an alias refers to a node that contains it (line "
                                       f"{node.start_mark.line + 1}): recursive YAML is not a configuration")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


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


class _CheckedConstructor(yaml.constructor.SafeConstructor):
    """The safe constructor, with values it cannot build reported at their line.

    PyYAML's own constructors raise bare ``ValueError`` for scalars that match a
    type's pattern but not its range (``2010-02-30T00:00:00Z``, ``!!int forty``).
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError) as exc:
            tag = node.tag.rsplit(":", 1)[-1]
            value = node.value if isinstance(node, yaml.ScalarNode) else "..."
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {value!r} as a YAML {tag} ({exc}); quote it to make it a string",
                node.start_mark) from None


class _CheckedLoader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer,
                     _CheckedConstructor, yaml.resolver.Resolver):
    def __init__(self, stream: str):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _CheckedConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)


def parse_yaml(text: str, filename: str | None = None) -> ConfigDocument:
    """Parse YAML text with the safe loader into a :class:`ConfigDocument`.

    The text is composed once into a node graph, checked (no recursive aliases, at
    most :data:`MAX_EXPANDED_NODES` nodes once aliases are expanded, no duplicate
    keys) and only then constructed into Python data.
    """
    name = filename or "<config>"
    loader = None
    try:
        loader = _CheckedLoader(text)
        node = loader.get_single_node()
        if node is not None:
            _expanded_size(node, name)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputFileError(name, f"is not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise InputFileError(name, "is nested too deeply to be a configuration") from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputFileError(name, f"expected a YAML mapping at the top level, got {type(data).__name__}")
    if any(not isinstance(k, str) for k in data):
        bad = next(k for k in data if not isinstance(k, str))
        raise InputFileError(name, f"top-level keys must be strings, got {bad!r}")
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
