"""Time slots: which model time an observation is computed at.

An observation at :math:`t_o` belongs to the slot of the nearest model time
:math:`t_k`, i.e. :math:`t_o \\in (t_k - \\Delta t/2,\\ t_k + \\Delta t/2]`, the first
slot extended back to the window begin and the last forward to its end — the
convention of :class:`pyoops.generic.observers.HofX4DPost`.
"""

from __future__ import annotations

import numpy as np

from pyoops.util.datetime import DateTime, Duration

__all__ = ["slot_indices", "slot_times"]


def slot_times(begin: DateTime, end: DateTime, step: Duration) -> list[DateTime]:
    """``begin, begin + step, ..., end`` (``end - begin`` must be a multiple of ``step``)."""
    times = [begin]
    while times[-1] < end:
        times.append(times[-1] + step)
    if times[-1] != end:
        raise ValueError(f"{end - begin} is not a multiple of {step}")
    return times


def slot_indices(obs_seconds: np.ndarray, times: list[DateTime]) -> np.ndarray:
    """Index into ``times`` of the slot of every observation time (seconds since the epoch)."""
    t = np.array([time.seconds_since_epoch() for time in times])
    if t.size == 1:
        return np.zeros(np.asarray(obs_seconds).shape, dtype=int)
    half = 0.5 * (t[1:] + t[:-1])
    # slot k holds (half[k-1], half[k]]: searchsorted with side='left' puts a time equal to half[k] in slot k.
    return np.searchsorted(half, np.asarray(obs_seconds, dtype=float), side="left").astype(int)
