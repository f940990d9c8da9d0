"""Generic applications, one module each, and :func:`~pyoops.run` to call them from Python."""

from __future__ import annotations

import os
from typing import Any

from pyoops.config.yaml_io import load_config
from pyoops.registry import get_registry

__all__ = ["make_application", "run"]


def make_application(name: str) -> Any:
    """The registered application called ``name`` (``forecast``, ``hofx``, ...)."""
    registry = get_registry()
    return registry.application.get(name, "application")(registry)


def run(app: str, config: "str | os.PathLike[str] | dict[str, Any]", validate_only: bool = False) -> dict[str, Any]:
    """Run application ``app`` on a YAML file name or a dict, as ``pyoops APP CONFIG`` does.

    Returns the application's summary dict.  Errors caused by the configuration
    or input files raise :class:`~pyoops.util.errors.PyoopsError`.
    """
    application = make_application(app)
    document = load_config(config)
    params = application.validate(document)
    if validate_only:
        return {"valid": True}
    return application.execute(params)
