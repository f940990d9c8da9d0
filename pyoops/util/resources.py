"""What the machine can hold: memory and disk checks made *before* allocating or writing.

A configuration that asks for more than the machine has (``resol: 3000000000``, a
billion members) must fail at validation with one line that says how much it
would need and how much there is, not after minutes of swapping or a full disk.

The figures come from the operating system:

* memory: ``MemAvailable`` of ``/proc/meminfo`` (memory that can be given to a new
  process without swapping), bounded by a cgroup limit when the process runs in one;
  elsewhere the physical memory;
* disk: :func:`shutil.disk_usage` of the output directory.

``PYOOPS_MEMORY_LIMIT`` (bytes, or a number with ``KiB``/``MiB``/``GiB``/``TiB``) sets a
lower limit than the machine's, e.g. on a shared node.

A request of at most :data:`ALWAYS_FITS` (1 MiB) is checked against that limit only: reading the
machine's figures would cost more than the allocation.

Besides those machine limits, a few documented caps (:data:`MAX_MEMBERS`,
:data:`MAX_OUTPUT_FILES`) bound counts whose cost is not only memory.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

from pyoops.util.errors import ConfigError

__all__ = [
    "MAX_MEMBERS",
    "MAX_OUTPUT_FILES",
    "check_count",
    "format_bytes",
    "memory_available",
    "require_disk",
    "require_memory",
]

#: Largest ensemble any application accepts (members, perturbations, EDA members).
MAX_MEMBERS = 10_000
#: Largest number of files one run may write (members × output times, cycles × plots ...).
MAX_OUTPUT_FILES = 100_000

_UNITS = {"": 1, "B": 1, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
          "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def format_bytes(nbytes: float) -> str:
    """``22.4 GiB``: a byte count in binary units with three significant figures."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} PiB"  # pragma: no cover


def _parse_bytes(text: str) -> int:
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise ConfigError(f"PYOOPS_MEMORY_LIMIT: expected a byte count such as '8GiB', got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _cgroup_limit() -> int | None:
    for name in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


def memory_available() -> int:
    """Bytes of memory a new allocation can get without swapping (see the module docstring)."""
    candidates: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            candidates.append(2**40)  # unknown platform: do not refuse on a guess
    limit = _cgroup_limit()
    if limit is not None:
        candidates.append(limit)
    env = os.environ.get("PYOOPS_MEMORY_LIMIT")
    if env:
        candidates.append(_parse_bytes(env))
    return min(candidates)


#: A request of at most this many bytes is not checked against the machine's memory (reading
#: ``/proc/meminfo`` and the cgroup limit costs more than the allocation, e.g. every cycle's small
#: observation and truth files); a ``PYOOPS_MEMORY_LIMIT`` is still applied to it.
ALWAYS_FITS = 2**20


def require_memory(nbytes: float, what: str, path: str | None = None) -> None:
    """Raise a :class:`~pyoops.util.errors.ConfigError` naming ``path`` if ``nbytes`` do not fit in memory.

    ``what`` completes the sentence ``"<what> would need 22.4 GiB"``, e.g.
    ``"resol: 3000000000 (one state of 1 variable)"``.
    """
    if not math.isfinite(nbytes) or (nbytes > ALWAYS_FITS or os.environ.get("PYOOPS_MEMORY_LIMIT")) \
            and nbytes > memory_available():
        raise ConfigError(f"{what} would need {format_bytes(nbytes)}; this machine has "
                          f"{format_bytes(memory_available())} available", path)


def require_disk(nbytes: float, directory: "str | os.PathLike[str]", what: str, path: str | None = None) -> None:
    """Raise a :class:`~pyoops.util.errors.ConfigError` if ``nbytes`` more do not fit on the disk holding ``directory``."""
    probe = Path(directory).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if not math.isfinite(nbytes) or nbytes > free:
        raise ConfigError(f"{what} would write {format_bytes(nbytes)}; the disk holding {probe} has "
                          f"{format_bytes(free)} free", path)


def check_count(value: int, cap: int, what: str, path: str | None = None) -> None:
    """Raise a :class:`~pyoops.util.errors.ConfigError` if a count exceeds its documented cap."""
    if value > cap:
        raise ConfigError(f"{what} {value} exceeds pyoops's cap of {cap} (see 'Errors and guarantees' in the docs)",
                          path)
