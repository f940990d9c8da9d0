"""Scores of gridded fields: the root-mean-square difference from a truth and the ensemble spread.

Both pool every variable and grid value of the fields given (a variable of larger shape weighs more).
"""

from __future__ import annotations

import math

import numpy as np

from pyoops.fields.fieldset import FieldSet

__all__ = ["rmse", "spread"]


def rmse(fields: "FieldSet | dict[str, np.ndarray]", truth: "FieldSet | dict[str, np.ndarray] | None") -> float:
    """Root-mean-square difference over every variable and grid value (NaN without a truth)."""
    if truth is None:
        return math.nan
    total, count = 0.0, 0
    for v, t in truth.items():
        d = np.asarray(fields[v]) - np.asarray(t)
        total += float(np.sum(d * d))
        count += d.size
    return math.sqrt(total / count)


def spread(members: "FieldSet | dict[str, np.ndarray]") -> float:
    """Square root of the mean ensemble variance (members on axis 0, :math:`N-1` normalisation)."""
    total, count = 0.0, 0
    for a in members.values():
        var = np.asarray(a).var(axis=0, ddof=1)
        total += float(var.sum())
        count += var.size
    return math.sqrt(total / count)
