r"""The per-cycle log of ``pyoops cycle``: one row of numbers per cycle, appended, never rewritten.

A cycling run produces per-cycle series — the statistics of :data:`~pyoops.ensemble.cycling.STATISTICS`,
the seconds each cycle took and, with the ``adaptive`` section, the series of
:class:`~pyoops.ensemble.adaptive.CycleAdaptation` (inflation mean, minimum, maximum, :math:`a_o` per
group, hybrid weight...).  Saving their whole history in every ``checkpoint.npz`` made a checkpoint cost
grow with the run length; they are instead appended, one row per cycle, to ``statistics.nc.log`` in the
output directory through the resumable :class:`~pyoops.util.appendlog.AppendLog`:

* the log's header (magic bytes ``PYOOPS-CYCLELOG\n``, then the JSON header) names the columns;
* each cycle appends one fixed-size chunk with one ``write`` and a ``flush``: a tag (``uint32``), the
  cycle index (``uint32``) and one little-endian ``float64`` per column;
* the checkpoint stores the log's :meth:`CycleLog.checkpoint_state` (committed bytes, CRC-32, cycles),
  a few numbers whatever the run length;
* :meth:`CycleLog.resume` checks the committed bytes and truncates the rows a killed run appended after
  its last checkpoint (with ``checkpoint every: k > 1``, up to :math:`k - 1` completed cycles' rows,
  which the resumed run recomputes bitwise); :func:`read_cycle_log` reads the same rows without
  touching the file (:func:`~pyoops.ensemble.cycling.load_checkpoint`).

The values are stored as the ``float64`` the run computed, so the series rebuilt from the log are
bitwise those of the run that appended them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pyoops.util.appendlog import (
    AppendLog,
    encode_log_header,
    log_path,
    parse_log_header,
    read_committed,
)
from pyoops.util.errors import InputFileError

__all__ = ["CycleLog", "read_cycle_log"]

_LOG_MAGIC = b"PYOOPS-CYCLELOG\n"  # 16 bytes
_LOG_FORMAT = "pyoops cycle log"
_LOG_VERSION = 1
_CHUNK_TAG = 0x4C435943  # "CYCL" read as a little-endian uint32
assert len(_LOG_MAGIC) == 16


def _row_dtype(ncolumns: int) -> np.dtype:
    """One chunk: tag, cycle index, the ``ncolumns`` values (8-byte aligned, no padding)."""
    return np.dtype([("tag", "<u4"), ("cycle", "<u4"), ("values", "<f8", (ncolumns,))])


def _parse(data: bytes, name: str) -> tuple[list[str], np.ndarray]:
    """The columns and the ``(cycles, columns)`` values of a whole log's committed bytes."""
    header, pos = parse_log_header(data, _LOG_MAGIC, name, "pyoops cycle log")
    columns = header.get("columns")
    if (header.get("format") != _LOG_FORMAT or header.get("version") != _LOG_VERSION
            or not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)):
        raise InputFileError(name, f"is not a {_LOG_FORMAT} version {_LOG_VERSION} (header {header!r})")
    dtype = _row_dtype(len(columns))
    body = len(data) - pos
    if body % dtype.itemsize:
        raise InputFileError(name, f"cycle log ends inside a row ({body} bytes of rows of {dtype.itemsize})")
    rows = np.frombuffer(data, dtype, body // dtype.itemsize, pos)
    bad = np.flatnonzero((rows["tag"] != _CHUNK_TAG) | (rows["cycle"] != np.arange(rows.size)))
    if bad.size:
        raise InputFileError(name, f"cycle log row {int(bad[0])} is damaged (wrong tag or cycle index)")
    return columns, rows["values"]


def _series(data: bytes, name: str, state: Mapping[str, Any], columns: Sequence[str] | None = None
            ) -> dict[str, np.ndarray]:
    """The series ``{column: (cycles,) float64}`` of a log's committed bytes, checked against the checkpoint's
    cycle count and, if given, the expected ``columns``."""
    found, values = _parse(data, name)
    if columns is not None and found != list(columns):
        raise InputFileError(name, f"cycle log has the columns {found}, this run {list(columns)}")
    if values.shape[0] != state.get("cycles"):
        raise InputFileError(name, f"cycle log holds {values.shape[0]} cycles, the checkpoint {state.get('cycles')}")
    return {c: values[:, i].copy() for i, c in enumerate(found)}


def read_cycle_log(filename: str | os.PathLike[str], state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The series ``{column: (cycles,) float64}`` of the cycle log of ``filename`` (the log is
    ``<filename>.log``) as committed at the :meth:`CycleLog.checkpoint_state` ``state``; read-only.

    Raises
    ------
    InputFileError
        The log is missing, does not match ``state`` or is damaged.
    """
    path = log_path(filename)
    return _series(read_committed(path, state, _LOG_FORMAT, _LOG_VERSION), str(path), state)


class CycleLog:
    """The append-only log of a cycling run's per-cycle series (see the module docstring).

    Parameters
    ----------
    filename:
        The output the series belong to (``statistics.nc``); the log is ``<filename>.log``.
    columns:
        The names of the values of a row, in order.
    """

    def __init__(self, filename: str | os.PathLike[str], columns: Sequence[str]) -> None:
        self.filename = Path(filename)
        self.columns = [str(c) for c in columns]
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"cycle log columns are not unique: {self.columns}")
        self._dtype = _row_dtype(len(self.columns))
        self._header = {"format": _LOG_FORMAT, "version": _LOG_VERSION, "columns": self.columns}
        self._log = AppendLog(self.filename, encode_log_header(_LOG_MAGIC, self._header), _LOG_FORMAT, _LOG_VERSION)
        self._row = np.zeros(1, self._dtype)
        self._row["tag"] = _CHUNK_TAG
        self.ncycles = 0

    @property
    def path(self) -> Path:
        """The log file (``<filename>.log``)."""
        return self._log.path

    def append(self, cycle: int, values: Sequence[float]) -> None:
        """Append cycle ``cycle``'s row (one value per column); cycles must come in order from 0."""
        if int(cycle) != self.ncycles:
            raise ValueError(f"cycle {cycle} appended to a cycle log holding cycles 0-{self.ncycles - 1}")
        if len(values) != len(self.columns):
            raise ValueError(f"{len(values)} values for the {len(self.columns)} columns {self.columns}")
        self._row["cycle"] = self.ncycles
        self._row["values"][0] = values
        self._log.append(self._row.tobytes())
        self.ncycles += 1

    def checkpoint_state(self) -> dict[str, Any]:
        """What the checkpoint stores to :meth:`resume` (after the cycle's row): O(1) in the run length."""
        return {**self._log.checkpoint_state(), "cycles": self.ncycles}

    def resume(self, state: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Continue from a :meth:`checkpoint_state` (truncating what came after it); returns the series
        ``{column: (cycles,) float64}`` committed so far."""
        found: list[dict[str, np.ndarray]] = []

        def check(data: bytes) -> None:
            found.append(_series(data, str(self.path), state, self.columns))

        self._log.resume(state, check)
        self.ncycles = int(state["cycles"])
        return found[0]

    def release(self) -> None:
        """Close the log file (it stays on disk: a later run with more cycles continues it)."""
        self._log.release()
