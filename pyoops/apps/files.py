"""The files a configuration names, and the checks made on them before a run starts.

Every application's configuration names its inputs and outputs with a small set of
keys: ``filename``, ``obsfile``, ``output file`` and ``directory`` (a value), under
sections whose key says the direction (``output``, ``output mean``, ``obsdataout``
... write; everything else reads).  :func:`declared_files` finds them all in the
validated parameters (plugin sections included, which are plain mappings there), and
:func:`check_declared_files` refuses, before anything is read or written,

* an output that names the same file as an input of the same run (it would replace
  it): ``output.filename`` equal to ``initial condition.filename``;
* two outputs of one run that name the same file (the second would replace the first);
* an output whose directory cannot be created or written, or whose name is taken by a
  directory.

Templates (``%date%``, ``%mem%``, ``%count%``) are compared as written; files that a
template expands to are checked again when they are read or written
(:mod:`pyoops.util.atomic`), so an expanded name that hits an input fails the run
with nothing written.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from pyoops.util.errors import ConfigError, join_path

__all__ = ["DeclaredFile", "check_declared_files", "declared_files"]

#: Keys whose string value is a file name.
FILE_KEYS = frozenset({"filename", "obsfile", "output file", "output"})
#: Keys whose string value is an output directory.
DIRECTORY_KEYS = frozenset({"directory"})
_TEMPLATE_MARKS = ("%date%", "%mem%", "%count%", "%member%", "%MEM%")


@dataclass(frozen=True)
class DeclaredFile:
    """A file named in a configuration."""

    path: str  #: dotted YAML path of the key
    value: str  #: the file name as written
    role: Literal["input", "output"]
    directory: bool = False

    @property
    def is_template(self) -> bool:
        return any(mark in self.value for mark in _TEMPLATE_MARKS)

    @property
    def resolved(self) -> Path:
        return Path(os.path.realpath(os.path.abspath(self.value)))


def _is_output_key(key: str) -> bool:
    return key.startswith("output") or key == "obsdataout"


def _items(node: Any) -> Iterator[tuple[str | int, Any]]:
    if isinstance(node, BaseModel):
        for name, field in type(node).model_fields.items():
            yield field.alias or name, getattr(node, name)
    elif isinstance(node, dict):
        yield from ((str(k), v) for k, v in node.items())
    elif isinstance(node, (list, tuple)):
        yield from enumerate(node)


def declared_files(params: Any) -> list[DeclaredFile]:
    """Every input and output file named in ``params`` (validated parameters or plain YAML data)."""
    out: list[DeclaredFile] = []

    def walk(node: Any, path: str, writing: bool) -> None:
        for key, value in _items(node):
            here = join_path(path, key)
            is_output = writing or (isinstance(key, str) and _is_output_key(key))
            if isinstance(value, str) and isinstance(key, str):
                if key in FILE_KEYS:
                    out.append(DeclaredFile(here, value, "output" if is_output else "input"))
                elif key in DIRECTORY_KEYS and is_output:
                    out.append(DeclaredFile(here, value, "output", directory=True))
            elif isinstance(value, (BaseModel, dict, list, tuple)):
                walk(value, here, is_output)

    walk(params, "", False)
    return out


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_name_length(item: DeclaredFile, existing: Path) -> None:
    """Each component of the name within the file system's limit (templates: the expanded date is longer)."""
    try:
        limit = os.pathconf(existing if existing.is_dir() else existing.parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    expanded = item.value.replace("%date%", "2010-01-01T00:00:00Z")
    for part in Path(expanded).parts:
        size = len(os.fsencode(part))
        if size > limit:
            raise ConfigError(f"output name component '{part[:40]}...' is {size} bytes long; this file system "
                              f"allows {limit}", item.path)


def _check_writable(item: DeclaredFile) -> None:
    target = Path(item.value)
    directory = target if item.directory else target.parent
    if any(mark in str(directory) for mark in _TEMPLATE_MARKS):
        return
    existing = _nearest_existing(directory.resolve() if directory.is_absolute() else Path.cwd() / directory)
    _check_name_length(item, existing)
    if not item.directory and not item.is_template and target.is_dir():
        raise ConfigError(f"output {item.value} is a directory; give a file name", item.path)
    if item.directory and target.exists() and not target.is_dir():
        raise ConfigError(f"output directory {item.value} is a file", item.path)
    if not existing.is_dir():
        raise ConfigError(f"output {item.value} cannot be written: {existing} is a file, not a directory", item.path)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output {item.value} cannot be written: no permission to write in {existing}", item.path)


def check_declared_files(params: Any) -> list[DeclaredFile]:
    """Refuse outputs that would replace an input or each other, or cannot be written (see module doc)."""
    files = declared_files(params)
    for item in files:
        if not item.value.strip():
            raise ConfigError(f"file name {item.value!r} is blank; give a file name", item.path)
    inputs = [f for f in files if f.role == "input"]
    outputs = [f for f in files if f.role == "output"]
    for out in outputs:
        _check_writable(out)
        for other in inputs:
            if out.directory:
                continue
            same = (out.value == other.value) if (out.is_template or other.is_template) else \
                (out.resolved == other.resolved)
            if same:
                raise ConfigError(f"output {out.value} would replace the input given at '{other.path}'; "
                                  "choose another output file name", out.path)
    seen: dict[Any, DeclaredFile] = {}
    for out in outputs:
        if out.directory:
            continue
        key = out.value if out.is_template else out.resolved
        if key in seen:
            raise ConfigError(f"output {out.value} is also the output '{seen[key].path}'; one would replace the "
                              "other: give them different file names", out.path)
        seen[key] = out
    return files
