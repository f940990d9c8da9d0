"""Atomic, all-or-nothing file output.

Every file pyoops writes goes through :func:`atomic_output`: the writer fills a
temporary file in the target's directory, and the temporary is renamed onto the
target only when it is complete, so a reader never sees a half-written file.

Inside an :class:`OutputSession` (every application run has one) the renames are
*deferred* to the end of the run: a run that fails part-way writes nothing, and a
run that succeeds replaces all its outputs at once.  The session also

* refuses an output that would replace a file the same run has read
  (:func:`note_input` records the inputs);
* locks each output against other pyoops processes of the same user for as long as
  the run holds it (a POSIX record lock on one byte, chosen by a hash of the output's
  absolute path, of the empty file ``pyoops-<uid>.lock`` in the system's temporary
  directory; the kernel releases it when the process ends, even by SIGKILL), so two
  runs writing the same outputs cannot interleave their files: the second fails with a
  clear message and writes nothing;
* removes temporaries that a killed run on this host left behind, the first time it
  writes into a directory.

A writer that must make its file durable at once (a restart checkpoint) asks for
``commit="now"``; the session then records it as kept if the run later fails.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import itertools
import os
import re
import socket
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pyoops.util.errors import ConfigError, PyoopsError

__all__ = ["OutputError", "OutputSession", "atomic_output", "current_session", "input_path", "note_input",
           "readable_path"]

_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
_TMP_PATTERN = re.compile(r"^\.pyoops-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-\d+")
_counter = itertools.count()
_cleaned_directories: set[Path] = set()
_SESSION: contextvars.ContextVar["OutputSession | None"] = contextvars.ContextVar("pyoops_output_session",
                                                                                    default=None)


class OutputError(PyoopsError):
    """An output cannot be written where the user asked (permissions, a directory in the way, a lock)."""


def current_session() -> "OutputSession | None":
    """The :class:`OutputSession` of the running application, if any."""
    return _SESSION.get()


def _key(path: "str | os.PathLike[str]") -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def note_input(filename: "str | os.PathLike[str]") -> None:
    """Record that the running application read ``filename`` (no-op outside a session)."""
    session = _SESSION.get()
    if session is not None:
        session.inputs.setdefault(session.key(filename), str(filename))


def input_path(filename: "str | os.PathLike[str]") -> Path:
    """Record ``filename`` as an input of the running application and return where to read it."""
    note_input(filename)
    return readable_path(filename)


def readable_path(filename: "str | os.PathLike[str]") -> Path:
    """Where to read ``filename`` now: the staged temporary if this run already wrote it, else itself."""
    session = _SESSION.get()
    if session is not None:
        staged = session.staged.get(session.key(filename))
        if staged is not None:
            return staged[0]
    return Path(os.path.abspath(filename))


def _lock_file() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"pyoops-{uid}.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def remove_stale_temporaries(directory: "str | os.PathLike[str]") -> list[Path]:
    """Delete the temporaries that dead pyoops processes of this host left in ``directory``."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _TMP_PATTERN.match(entry.name)
        if not match or match.group("host") != _HOST or not entry.is_file(follow_symlinks=False):
            continue
        if _pid_alive(int(match.group("pid"))):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _prepare_directory(target: Path, created: list[Path], shown: "Path | None" = None) -> None:
    """Create the missing parents of ``target`` (remembering them), with errors naming ``shown``, the user's path."""
    shown = shown or target
    missing = []
    parent = target.parent
    while not parent.exists():
        missing.append(parent)
        if parent == parent.parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{shown}: cannot be written: {parent} is a file, not a directory")
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"{shown}: cannot create the directory {directory} ({exc.strerror or exc})") from None
        created.append(directory)
    if target.is_dir():
        raise OutputError(f"{shown}: cannot be written: a directory of that name is in the way")
    key = _key(target.parent)
    if key not in _cleaned_directories:
        _cleaned_directories.add(key)
        remove_stale_temporaries(target.parent)


def _new_temporary(target: Path, suffix: str, shown: "Path | None" = None) -> Path:
    """A fresh, short temporary name next to ``target`` (short: a 255-byte file name stays legal)."""
    tmp = target.parent / f".pyoops-{_HOST}-{os.getpid()}-{next(_counter)}{suffix}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raise OutputError(f"{shown or target}: cannot be written ({exc.strerror or exc})") from None
    os.close(fd)
    tmp.unlink()  # writers such as netCDF4 want to create the file themselves
    return tmp


def _replace(tmp: Path, target: Path, shown: "str | Path | None" = None) -> None:
    try:
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(f"{shown or target}: cannot be written ({exc.strerror or exc})") from None


class OutputSession:
    """The outputs of one application run, committed together when it succeeds.

    Use as a context manager around the run: on a normal exit every staged output is
    renamed onto its target; on an exception every staged temporary (and every
    directory the run created and left empty) is removed and the exception goes on.
    """

    def __init__(self) -> None:
        self.staged: dict[Path, tuple[Path, str, Path]] = {}  # key -> (temporary, name shown, target)
        # Targets already prepared (directory made, locked): a file written again (a checkpoint, every
        # cycle) skips the directory walk and the lock call; :meth:`key` resolves its path once.
        self.prepared: set[Path] = set()
        self._keys: dict[tuple[str, str], Path] = {}
        self.kept: list[str] = []
        self.inputs: dict[Path, str] = {}
        self.committed: list[str] = []
        self._created: list[Path] = []
        self._lock_fd: int | None = None
        self._token: contextvars.Token | None = None

    def key(self, filename: "str | os.PathLike[str]") -> Path:
        """The resolved path that identifies ``filename`` (symbolic links followed), remembered per name and
        working directory for the run: a file read every cycle is resolved once."""
        name = (os.getcwd(), os.fspath(filename))
        key = self._keys.get(name)
        if key is None:
            key = self._keys[name] = _key(filename)
        return key

    # Context management ------------------------------------------------------------------
    def __enter__(self) -> "OutputSession":
        self._token = _SESSION.set(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
            else:
                self.abort()
        finally:
            if self._token is not None:
                _SESSION.reset(self._token)
                self._token = None
            self._release_locks()

    def describe_failure(self) -> str:
        """What a failed run left on disk, for its error message."""
        if self.kept:
            shown = ", ".join(self.kept[:3]) + (f" and {len(self.kept) - 3} more" if len(self.kept) > 3 else "")
            return f"kept from this run: {shown}; nothing else was written"
        return "no output was written"

    # Staging ---------------------------------------------------------------------------------
    def check_not_input(self, target: Path, shown: "str | Path | None" = None) -> None:
        key = self.key(target)
        if key in self.inputs:
            raise ConfigError(f"output {shown or target} would replace {self.inputs[key]}, an input of this run; "
                              "choose another output file name")

    def lock(self, target: Path, shown: "str | Path | None" = None) -> None:
        """Hold ``target`` against other pyoops processes of this user until this session ends."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no inter-process lock
            return
        if self._lock_fd is None:
            try:
                self._lock_fd = os.open(_lock_file(), os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                return  # no lock file can be made: the run goes on unlocked
        digest = hashlib.blake2b(str(self.key(target)).encode(), digest_size=8).digest()
        offset = int.from_bytes(digest, "little") >> 2  # a byte in [0, 2**62): off_t holds it
        try:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset, os.SEEK_SET)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise OutputError(f"{shown or target}: another pyoops run is writing this output now; wait for it to "
                                  "finish or choose another output name") from None
            raise

    def stage(self, target: Path, tmp: Path, shown: "str | Path | None" = None) -> None:
        key = self.key(target)
        previous = self.staged.pop(key, None)
        if previous is not None:
            with contextlib.suppress(OSError):
                previous[0].unlink()
        self.staged[key] = (tmp, str(shown or target), target)

    def commit(self) -> list[str]:
        """Rename every staged output onto its target; returns the targets."""
        for key, (tmp, name, target) in list(self.staged.items()):
            self.check_not_input(key, name)
        for key, (tmp, name, target) in list(self.staged.items()):
            _replace(tmp, target, name)
            del self.staged[key]
            self.committed.append(name)
        return self.committed

    def abort(self) -> None:
        """Remove every staged temporary and the directories this run created that stayed empty."""
        for tmp, *_ in self.staged.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
        self.staged.clear()
        for directory in reversed(self._created):
            with contextlib.suppress(OSError):
                directory.rmdir()

    def _release_locks(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # closing the file releases every lock this process holds on it
            self._lock_fd = None


@contextlib.contextmanager
def atomic_output(filename: "str | os.PathLike[str]", suffix: str = "",
                  commit: Literal["run", "now"] = "run") -> Iterator[Path]:
    """Yield a temporary path next to ``filename``; it becomes ``filename`` when complete.

    Outside an :class:`OutputSession`, or with ``commit="now"``, the temporary is renamed
    onto ``filename`` when the block ends without error.  Inside a session the rename
    waits for the end of the run (see the module docstring).  If the block raises, the
    temporary is removed and ``filename`` is left as it was.  Missing parent
    directories are created; errors name ``filename``, never the temporary.
    """
    # Absolute from here on: the netCDF library misreads some relative names (a leading blank).
    # Messages still name the path as the user wrote it.
    shown = Path(filename)
    target = Path(os.path.abspath(filename))
    session = _SESSION.get()
    if session is not None and target in session.prepared:
        session.check_not_input(target, shown)  # prepared and locked by an earlier write of this run
    else:
        created: list[Path] = []
        _prepare_directory(target, created, shown)
        if session is not None:
            session._created.extend(created)
            session.check_not_input(target, shown)
            session.lock(target, shown)
            session.prepared.add(target)
    tmp = _new_temporary(target, suffix, shown)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"{shown}: the writer produced no file")
        if session is None or commit == "now":
            _replace(tmp, target, shown)
            if session is not None and str(shown) not in session.kept:
                session.kept.append(str(shown))
        else:
            session.stage(target, tmp, shown)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
