"""pyoops: plugin-based, object-oriented data assimilation after JEDI's OOPS and SABER.

Run an application from Python with :func:`pyoops.run`::

    import pyoops
    summary = pyoops.run("forecast", "truth.yaml")

:func:`run` is imported from :mod:`pyoops.apps` on first access, so that ``import pyoops``
(and the ``pyoops`` command's start-up) imports neither numpy nor pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyoops.util.errors import ConfigError, InputFileError, PyoopsError
from pyoops.util.version import __version__

if TYPE_CHECKING:
    from pyoops.apps import run

__all__ = ["ConfigError", "InputFileError", "PyoopsError", "__version__", "run"]


def __getattr__(name: str) -> Any:
    """``pyoops.run``, imported on first access (PEP 562)."""
    if name == "run":
        from pyoops.apps import run

        globals()["run"] = run
        return run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, ``run`` included."""
    return sorted({*globals(), "run"})
