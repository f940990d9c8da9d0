"""Size checks the applications make at validation, before reading or writing anything.

A configuration that asks for more than the machine can hold or pyoops accepts (a
billion members, a million output files, ten billion generated observations, a
cycle that ends after the year 9999) fails here, with one :class:`~pyoops.util.errors.ConfigError` naming
its key, instead of after minutes of work, a full disk or a ``MemoryError``.  The
figures come from :mod:`pyoops.util.resources` (:data:`~pyoops.util.resources.MAX_MEMBERS`,
:data:`~pyoops.util.resources.MAX_OUTPUT_FILES`, the memory and disk available).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pyoops.util.datetime import DateTime, Duration, TimeWindow
from pyoops.util.errors import ConfigError, join_path
from pyoops.util.resources import (
    MAX_MEMBERS,
    MAX_OUTPUT_FILES,
    check_count,
    format_bytes,
    require_disk,
    require_memory,
)

__all__ = [
    "FILE_OVERHEAD",
    "check_generated_observations",
    "check_members",
    "check_output_files",
    "end_date",
    "state_bytes",
]

#: Bytes a state file holds besides its values (netCDF header, coordinate variables, attributes), an upper bound.
FILE_OVERHEAD = 64 * 1024


def state_bytes(geometry: Any, variables: Any = None) -> float:
    """Bytes of one state of ``variables`` (default: the geometry's) on ``geometry``, 8 bytes a value."""
    names = list(variables if variables is not None else geometry.variables)
    return 8.0 * sum(math.prod(geometry.field_shape(v)) for v in names)


def check_members(n: int, geometry: Any, variables: Any, path: str, copies: int = 4, times: int = 1) -> None:
    """``n`` members: at most :data:`~pyoops.util.resources.MAX_MEMBERS`, and ``copies`` ensembles of them must fit in memory.

    ``copies`` is how many arrays of all members the application holds at once (the
    background and the analysis, their H(x), work arrays); ``times`` the states of one
    member (4-D members).
    """
    check_count(int(n), MAX_MEMBERS, "ensemble size", path)
    one = times * state_bytes(geometry, variables)
    require_memory(copies * n * one, f"{n} members of {format_bytes(one)} ({copies} copies of the ensemble)",
                   path)


def check_output_files(count: int, bytes_each: float, filename: str, path: str, what: str = "output files"
                       ) -> None:
    """``count`` files of ``bytes_each`` (plus :data:`FILE_OVERHEAD`): at most :data:`~pyoops.util.resources.MAX_OUTPUT_FILES`,
    and they must fit on the disk that holds ``filename``'s directory."""
    check_count(int(count), MAX_OUTPUT_FILES, f"number of {what}", path)
    directory = Path(filename).parent if str(Path(filename).parent) else Path(".")
    if any(mark in str(directory) for mark in ("%mem%", "%date%", "%MEM%", "%member%")):
        directory = Path(str(directory).split("%")[0] or ".")
    require_disk(count * (bytes_each + FILE_OVERHEAD), directory, f"{count} {what}", path)


def end_date(start: DateTime, length: Duration, path: str) -> DateTime:
    """``start + length``, or a ConfigError naming ``path`` when it leaves the supported years 1-9999."""
    try:
        return DateTime(start) + Duration(length)
    except ConfigError as exc:
        raise ConfigError(exc.message, path) from None


def _generated_times(gen: Any, window: TimeWindow) -> int:
    """Upper bound of the number of observation times of a ``generate`` section (no loop over them)."""
    end = gen.end if gen.end is not None else window.length
    span = (end - gen.begin).total_seconds()
    step = gen.obs_frequency.total_seconds()
    if span < 0 or step <= 0:
        return 0
    return int(span // step) + 1


def check_generated_observations(observations: Any, window: TimeWindow, path: str) -> None:
    """Every generated obs space (``obs space.generate``) must fit in memory.

    ``observations`` is a validated observations section (it has ``observers``, each with
    ``obs_space``).  A generated network holds ``obs density`` locations at every
    observation time; each location carries its coordinates and time, and every
    simulated variable about ten values (ObsValue, ObsError, H(x), departures, QC ...).
    """
    for i, observer in enumerate(observations.observers):
        gen = observer.obs_space.generate
        if gen is None:
            continue
        ntimes = _generated_times(gen, window)
        nlocs = ntimes * gen.obs_density
        nvars = len(observer.obs_space.simulated_variables)
        here = join_path(path, "observers", i, "obs space.generate.obs density")
        require_memory(8.0 * nlocs * (4 + 10 * nvars),
                       f"obs density {gen.obs_density} at {ntimes} observation time(s) ({nlocs} locations of "
                       f"{nvars} variable(s))", here)
