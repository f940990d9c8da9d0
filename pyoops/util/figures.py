"""Figures written by the applications: matplotlib without a display, saved atomically.

Every plot pyoops writes goes through :func:`save_figure`, so that a figure is either complete at
its final name or absent (:func:`~pyoops.util.atomic.atomic_output`), with one resolution (100 dpi,
PNG), and its memory is released.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, filename: str | Path) -> str:
    """Write ``fig`` as a 100-dpi PNG to ``filename`` atomically, close it, return the name."""
    from pyoops.util.atomic import atomic_output

    with atomic_output(filename, ".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    pyplot().close(fig)
    return str(filename)
