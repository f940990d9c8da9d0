r"""A resumable append-only log: the machinery shared by pyoops's cycle-by-cycle archives.

An archive written by a cycling run (the innovation archive of
:mod:`pyoops.diagnostics.archive`, the member archive of
:mod:`pyoops.ensemble.member_archive`) appends one *chunk* per cycle to a log file
``<archive>.log`` and assembles its netCDF file from the log at the end.  What every
such log needs, whatever its chunks contain, is here:

* the log starts with a header (the format's magic bytes, then the length and the JSON
  text of a header mapping) and is created through
  :func:`~pyoops.util.atomic.atomic_output` with ``commit="now"``: it is on disk at its
  final name at once and kept if the run fails, because it is what a resumed run
  continues;
* :meth:`AppendLog.append` writes one chunk with one ``write`` and a ``flush``, and keeps
  the committed length :math:`n` and the running CRC-32 :math:`c` of the bytes written;
* :meth:`AppendLog.checkpoint_state` returns ``{format, version, bytes: n, crc32: c}``,
  which the application stores in its own checkpoint after the cycle's chunk;
* :meth:`AppendLog.resume` checks that the log holds at least :math:`n` bytes whose CRC-32
  is :math:`c`, lets the caller check the content (its header, its chunks), truncates what a
  killed run appended after the checkpoint and appends from there.  A run killed at any
  instant and resumed therefore writes a log bitwise equal to an uninterrupted run's,
  provided the recomputed cycles are bitwise the same;
* ``resumable=False`` keeps the bytes in memory instead (single-analysis applications);
* inside an application run the archive and its log are locked against other pyoops runs
  (:class:`~pyoops.util.atomic.OutputSession`).

The chunk layout, the parsing and the assembly belong to each archive.
"""

from __future__ import annotations

import io
import json
import os
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pyoops.util.atomic import atomic_output, current_session
from pyoops.util.errors import InputFileError

__all__ = ["LOG_SUFFIX", "AppendLog", "LogArchiveWriter", "encode_log_header", "log_path", "parse_log_header",
           "read_committed"]

LOG_SUFFIX = ".log"


def log_path(filename: "str | os.PathLike[str]") -> Path:
    """The append-only log of the archive ``filename`` (``<filename>.log``)."""
    return Path(f"{os.fspath(filename)}{LOG_SUFFIX}")


def encode_log_header(magic: bytes, header: Mapping[str, Any]) -> bytes:
    """``magic``, the byte length of the JSON text (little-endian uint32), the JSON text of ``header``."""
    text = json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")
    return magic + np.array([len(text)], dtype="<u4").tobytes() + text


def parse_log_header(data: bytes, magic: bytes, name: str, what: str) -> tuple[dict[str, Any], int]:
    """The header mapping of a log and the offset of its first chunk (InputFileError naming ``name``)."""
    if data[:len(magic)] != magic:
        raise InputFileError(name, f"is not a {what} (wrong magic bytes)")
    pos = len(magic)
    if len(data) < pos + 4:
        raise InputFileError(name, f"{what} ends inside its header")
    size = int(np.frombuffer(data, "<u4", 1, pos)[0])
    pos += 4
    try:
        header = json.loads(data[pos:pos + size].decode("utf-8"))
    except ValueError:
        raise InputFileError(name, f"{what} has an unreadable header") from None
    if not isinstance(header, dict):
        raise InputFileError(name, f"{what} has an unreadable header")
    return header, pos + size


def read_committed(path: str | os.PathLike[str], state: Mapping[str, Any], format_name: str, version: int) -> bytes:
    """The committed bytes of the log ``path`` recorded by a :meth:`AppendLog.checkpoint_state` ``state``.

    Read-only (nothing is truncated): what :meth:`AppendLog.resume` continues from, and what a reader of a
    running or killed experiment may use.

    Raises
    ------
    InputFileError
        The state is not one of format ``format_name`` version ``version``, or the log is missing, shorter
        than the checkpoint or has another checksum.
    """
    name = str(path)
    try:
        nbytes, crc = int(state["bytes"]), int(state["crc32"])
        ok = state.get("format") == format_name and state.get("version") == int(version)
    except (KeyError, TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise InputFileError(name, f"the checkpoint's log state {state!r} is not one written by this pyoops version")
    try:
        with open(path, "rb") as fh:
            data = fh.read(nbytes)
    except FileNotFoundError:
        raise InputFileError(name, f"log to resume from is missing (the checkpoint expects {nbytes} bytes); "
                                   "restart the experiment without resuming") from None
    except OSError as exc:
        raise InputFileError(name, f"cannot be read ({exc.strerror or exc})") from None
    if len(data) < nbytes:
        raise InputFileError(name, f"log holds {len(data)} bytes, fewer than the {nbytes} the checkpoint "
                                   "records: it is not the log of this experiment")
    if zlib.crc32(data) != crc:
        raise InputFileError(name, f"log does not match the checkpoint (checksum of its first {nbytes} bytes "
                                   "differs): it is not the log of this experiment")
    return data


class AppendLog:
    """The append-only log of one archive (see the module docstring).

    Parameters
    ----------
    archive:
        The archive the log belongs to (locked with it); the log is ``<archive>.log``.
    header:
        The encoded header (:func:`encode_log_header`), written when the log starts.
    format_name, version:
        Stored in :meth:`checkpoint_state` and checked by :meth:`resume`.
    resumable:
        ``True``: a file; ``False``: bytes in memory (no checkpoint, no resume).
    """

    def __init__(self, archive: "str | os.PathLike[str]", header: bytes, format_name: str, version: int,
                 resumable: bool = True) -> None:
        self.archive = Path(archive)
        self.path = log_path(archive)
        self.header = header
        self.format_name = format_name
        self.version = int(version)
        self.resumable = bool(resumable)
        self._fh: Any = None
        self.nbytes = 0
        self.crc = 0
        self.started = False
        self.closed = False
        session = current_session()
        if session is not None:
            session.check_not_input(self.archive)
            session.lock(self.archive)
            if self.resumable:
                session.lock(self.path)

    def start(self) -> None:
        """Start a fresh log (its header only); nothing if already started."""
        if self.closed:
            raise RuntimeError(f"the log of {self.archive} is closed")
        if self.started:
            return
        if self.resumable:
            with atomic_output(self.path, LOG_SUFFIX, commit="now") as tmp:
                tmp.write_bytes(self.header)
            self._fh = open(self.path, "ab")  # noqa: SIM115 - held until release()
        else:
            self._fh = io.BytesIO()
            self._fh.write(self.header)
        self.nbytes = len(self.header)
        self.crc = zlib.crc32(self.header)
        self.started = True

    def resume(self, state: Mapping[str, Any], check: Callable[[bytes], None]) -> bytes:
        """Continue from a :meth:`checkpoint_state`; returns the log's committed bytes.

        ``check(data)`` is called with the committed bytes (length and checksum already
        verified) before anything is truncated; it raises if they are not this run's.

        Raises
        ------
        InputFileError
            The log is missing, shorter than the checkpoint, has another checksum, or
            ``check`` rejects it.
        """
        if self.started or self.closed:
            raise RuntimeError("resume() must be called before anything is appended")
        if not self.resumable:
            raise RuntimeError("a log kept in memory (resumable=False) cannot resume")
        data = read_committed(self.path, state, self.format_name, self.version)
        nbytes, crc = int(state["bytes"]), int(state["crc32"])
        check(data)
        name = str(self.path)
        try:
            os.truncate(self.path, nbytes)  # drop what a killed run appended after the checkpoint
        except OSError as exc:
            raise InputFileError(name, f"cannot be truncated for resuming ({exc.strerror or exc})") from None
        self.nbytes, self.crc = nbytes, crc
        self._fh = open(self.path, "ab")  # noqa: SIM115 - held until release()
        self.started = True
        return data

    def append(self, chunk: bytes) -> None:
        """Append one chunk (one write and a flush); it counts only once written."""
        self.start()
        self._fh.write(chunk)
        self._fh.flush()
        self.nbytes += len(chunk)
        self.crc = zlib.crc32(chunk, self.crc)

    def checkpoint_state(self) -> dict[str, Any]:
        """``{format, version, bytes, crc32}`` of what has been appended (store it in the checkpoint)."""
        if not self.resumable:
            raise RuntimeError("a log kept in memory (resumable=False) has no checkpoint state")
        self.start()
        return {"format": self.format_name, "version": self.version, "bytes": self.nbytes, "crc32": self.crc}

    def contents(self) -> bytes:
        """The committed bytes of the log (header and chunks)."""
        self.start()
        self._fh.flush()
        if not self.resumable:
            return self._fh.getvalue()
        with open(self.path, "rb") as fh:
            return fh.read(self.nbytes)

    def reader(self) -> Any:
        """A binary file object over the log from its first byte (read at most ``nbytes`` bytes); close it."""
        self.start()
        self._fh.flush()
        if not self.resumable:
            return io.BytesIO(self._fh.getvalue())
        return open(self.path, "rb")  # noqa: SIM115 - the caller closes it

    def release(self) -> None:
        """Close the file (the log is kept on disk); no more appends."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.closed = True


class LogArchiveWriter:
    """Base of the writers that keep an :class:`AppendLog` (``self._log``) and assemble their archive
    (``self.filename``) from it when closed.

    As a context manager: a clean exit closes (assembles the archive), an exception only
    releases the log, which stays on disk for a resumed run.  Subclasses implement
    ``_assemble()``.
    """

    filename: Path
    _log: AppendLog

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None and not self._log.closed:
            self.close()
        else:
            self._log.release()

    def _assemble(self) -> None:
        """Write the archive from the log (atomically)."""
        raise NotImplementedError

    def close(self) -> Path:
        """Assemble the archive from the log and release the log; returns the archive's path."""
        if self._log.closed:
            return self.filename
        self._assemble()
        self._log.release()
        return self.filename
