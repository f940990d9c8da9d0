"""The pyoops logger and a tqdm progress bar that respects the log level."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")

logger = logging.getLogger("pyoops")


class _StderrHandler(logging.StreamHandler):
    """Writes to the *current* ``sys.stderr``, which may have been replaced since configuration
    (pytest's capture, notebooks, a second in-process ``pyoops.cli.main`` call)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure(level: "int | str" = logging.INFO) -> None:
    """Send pyoops log records to standard error with a compact format."""
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("pyoops %(levelname)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", enabled: bool | None = None) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm bar when running interactively at INFO level."""
    if enabled is None:
        enabled = sys.stderr.isatty() and logger.getEffectiveLevel() <= logging.INFO
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)
