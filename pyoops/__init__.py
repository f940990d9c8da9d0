"""pyoops: plugin-based, object-oriented data assimilation after JEDI's OOPS and SABER.

Run an application from Python with :func:`pyoops.run`::

    import pyoops
    summary = pyoops.run("forecast", "truth.yaml")
"""

from pyoops.apps import run
from pyoops.util.errors import ConfigError, InputFileError, PyoopsError
from pyoops.util.version import __version__


__all__ = ["ConfigError", "InputFileError", "PyoopsError", "__version__", "run"]
