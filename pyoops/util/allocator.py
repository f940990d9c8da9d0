"""The C allocator's settings for array work: the same results, without the page-fault churn.

NumPy takes the memory of every array from the C library's ``malloc``.  glibc serves a request
above its *mmap threshold* (128 KiB at start, raised as mapped blocks are freed) with a fresh
``mmap`` and gives it back with ``munmap`` when freed, and it returns the top of its heap to the
system (``brk``) whenever more than its *trim threshold* is free there.  A model step that makes and
drops temporaries of a few hundred KiB to a few MiB — a QG tangent-linear step at 160 × 80, the
localized products of an ensemble B — then maps, faults in (the kernel zeroes every page) and unmaps
the same memory thousands of times: an EDA of three 4D-Vars (the control and two members) on QG
160 × 80 spent 12 s of its 46 s of CPU in the kernel (docs/benchmarks.rst).

:func:`tune_allocator` sets, through ``mallopt``, an mmap threshold of :data:`MMAP_THRESHOLD`
(32 MiB, glibc's largest) and a trim threshold of :data:`TRIM_THRESHOLD` (256 MiB): freed blocks
below 32 MiB are kept and reused, and up to 256 MiB of free heap stays with the process instead of
going back to the system and being faulted in again.  The results are bitwise the same; the
resident set may stay higher by up to the trim threshold after a peak.  The ``pyoops`` command calls
it before running an application (worker processes of the ``processes`` engine inherit it, dask
workers call it when they start).  It does nothing where the C library is not glibc, and when the
user has set either of glibc's own variables ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
or ``PYOOPS_MALLOC=default``.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_allocator"]

#: Requests above this many bytes are mapped on their own (glibc's maximum, HEAP_MAX_SIZE / 2 on 64-bit).
MMAP_THRESHOLD = 32 * 2**20
#: Free memory at the top of the heap above this many bytes is returned to the system.
TRIM_THRESHOLD = 256 * 2**20

# glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_applied: bool | None = None


def tune_allocator() -> bool:
    """Set glibc's mmap and trim thresholds for array work (once per process); True if they are set.

    False, and nothing changed, on another C library, when ``MALLOC_MMAP_THRESHOLD_`` or
    ``MALLOC_TRIM_THRESHOLD_`` is in the environment (the user's choice stands) or when
    ``PYOOPS_MALLOC=default``.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("PYOOPS_MALLOC", "").strip().lower() == "default" or any(
            name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (an AttributeError here: not glibc)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # Both: setting one only turns glibc's dynamic adjustment off and leaves the other at its small default.
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
