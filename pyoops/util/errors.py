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
