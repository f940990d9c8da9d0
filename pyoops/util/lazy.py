"""Lazy package exports (PEP 562): public names imported from their modules on first access.

A plugin package lists its public classes and the modules that define them; importing the
package (which pyoops does to register it) then imports neither those modules nor numpy::

    from pyoops.util.lazy import lazy_exports

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {
        "MyModel": "my_plugin.model",
        "MyGeometry": "my_plugin.geometry",
    })

Only the standard library is imported here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """The ``__getattr__``, ``__dir__`` and ``__all__`` of ``package`` for ``exports`` (name -> module).

    ``__getattr__`` imports a name's module on first access and caches the value in the
    package namespace; an unknown name raises :class:`AttributeError` as usual.
    """
    table = dict(exports)

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *table})

    return __getattr__, __dir__, sorted(table)
