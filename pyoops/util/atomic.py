"""Atomic file output: write to a temporary file, then rename it into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_output"]


@contextlib.contextmanager
def atomic_output(filename: "str | os.PathLike[str]", suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``filename``; rename it to ``filename`` on success.

    If the block raises, the temporary file is removed and ``filename`` is left
    as it was (absent or with its previous content): readers never see a
    half-written file.  Parent directories are created.
    """
    target = Path(filename)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()  # writers such as netCDF4 want to create the file themselves
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
