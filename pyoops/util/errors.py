"""Exception hierarchy for errors caused by user input.

Every error a user can cause through a YAML file, a data file or a command-line
argument derives from :class:`PyoopsError`.  The command-line interface prints
such an error as *one* line and exits with status 2; anything else is a bug in
pyoops or a plugin and keeps its traceback.
"""

from __future__ import annotations


class PyoopsError(Exception):
    """Base class of every error caused by user input (config, files, arguments)."""


class ConfigError(PyoopsError, ValueError):
    """A YAML configuration is invalid.

    Parameters
    ----------
    message:
        What was wrong and what was expected.
    path:
        Dotted YAML path of the offending key, e.g. ``cost function.background.filename``.
    """

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class InputFileError(PyoopsError):
    """A data file is missing, unreadable or does not follow the documented layout."""

    def __init__(self, filename: str, message: str):
        self.filename = str(filename)
        self.message = message
        super().__init__(f"{filename}: {message}")


class UnknownNameError(ConfigError):
    """A factory was asked for a name nobody registered."""


class PluginError(Exception):
    """A plugin defines a maker wrongly (a mistake in the plugin, not in the user's YAML).

    Not a :class:`PyoopsError`: the user cannot fix it by editing a configuration.  The
    command line prints it as one line naming the plugin, its distribution and the maker,
    and exits with status 1.

    Parameters
    ----------
    plugin:
        Name of the plugin (its entry point) that registered the maker.
    kind, name:
        The factory kind (``saber block``, ``model`` ...) and the registered name.
    maker:
        The registered class (or callable), or its import path ``"module:Class"``.
    message:
        What is wrong with it and what the plugin must provide.
    """

    def __init__(self, plugin: str, kind: str, name: str, maker: object, message: str):
        self.plugin = plugin
        self.kind = kind
        self.name = name
        self.maker = maker
        self.message = message
        if isinstance(maker, str):  # registered by import path, "module:Class"
            where = maker
        else:
            where = getattr(maker, "__module__", "?") + "." + getattr(maker, "__qualname__", repr(maker))
        super().__init__(f"{kind} '{name}' ({where}) {message}")


class NumericalError(PyoopsError):
    """A computation produced non-finite values (e.g. a model blew up)."""


def join_path(*parts: str | int | None) -> str:
    """Join YAML path components with dots, skipping empty ones.

    List indices are written in brackets: ``observers[0].obs space``.
    """
    out = ""
    for part in parts:
        if part is None or part == "":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += "." + part
        else:
            out = str(part)
    return out
