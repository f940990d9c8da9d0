"""Utilities: time, variables, random streams, logging and errors."""

from pyoops.util.datetime import DateTime, Duration, TimeWindow
from pyoops.util.errors import (
    ConfigError,
    InputFileError,
    NumericalError,
    PluginError,
    PyoopsError,
    UnknownNameError,
)
from pyoops.util.variables import Variables

__all__ = [
    "ConfigError",
    "DateTime",
    "Duration",
    "InputFileError",
    "NumericalError",
    "PluginError",
    "PyoopsError",
    "TimeWindow",
    "UnknownNameError",
    "Variables",
]
