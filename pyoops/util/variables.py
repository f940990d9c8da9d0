"""Ordered sets of variable names (the OOPS ``Variables`` class)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pyoops.util.errors import ConfigError

__all__ = ["Variables"]


class Variables:
    """An ordered, duplicate-free list of variable names.

    Supports membership, iteration, ``+`` (ordered union), ``-`` (difference)
    and ``&`` (ordered intersection), like OOPS's ``oops::Variables``.
    """

    __slots__ = ("_names",)

    def __init__(self, names: "Iterable[str] | str | Variables" = ()):
        if isinstance(names, str):
            names = [names]
        seen: list[str] = []
        for name in names:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"variable names must be non-empty strings, got {name!r}")
            if name not in seen:
                seen.append(name)
        self._names = tuple(seen)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __getitem__(self, index: int) -> str:
        return self._names[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple)):
            other = Variables(other)
        return isinstance(other, Variables) and self._names == other._names

    def __hash__(self) -> int:
        return hash(self._names)

    def __add__(self, other: "Iterable[str]") -> "Variables":
        return Variables(list(self._names) + list(Variables(other)))

    def __sub__(self, other: "Iterable[str]") -> "Variables":
        drop = set(Variables(other))
        return Variables([n for n in self._names if n not in drop])

    def __and__(self, other: "Iterable[str]") -> "Variables":
        keep = set(Variables(other))
        return Variables([n for n in self._names if n in keep])

    def is_subset_of(self, other: "Iterable[str]") -> bool:
        return set(self._names) <= set(Variables(other))

    def index(self, name: str) -> int:
        return self._names.index(name)

    def __repr__(self) -> str:
        return f"Variables({list(self._names)!r})"

    def __str__(self) -> str:
        return ", ".join(self._names)

    def tolist(self) -> list[str]:
        return list(self._names)
