r"""Region labels of observations: named boxes in the location coordinates.

A region is a name and, for some of the geometry's location coordinates, a half-open
interval :math:`[\mathrm{lower}, \mathrm{upper})`; an observation belongs to the *first*
region (in the order given) whose every interval contains its coordinates, and has the
label ``""`` when none does.  YAML (the ``regions`` key of an innovation-archive output, or
of ``pyoops obs-diagnostics`` to relabel archives when they are read)::

    regions:
    - {name: west, bounds: {x: [0.0, 0.5]}}
    - {name: east, bounds: {x: [0.5, 1.0]}}

Diagnostics grouped by ``region`` then give one row per region, and the tuning of
``pyoops tune`` pools parameters across them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import Field, field_validator

from pyoops.config.parameters import Parameters
from pyoops.util.errors import ConfigError

__all__ = ["ArchiveRegions", "RegionParameters", "Regions", "archive_regions"]


class RegionParameters(Parameters):
    """One region: ``{name: west, bounds: {x: [0.0, 0.5]}}``."""

    name: str = Field(min_length=1, description="Region label written to the archive's MetaData/region.")
    bounds: dict[str, tuple[float, float]] = Field(
        min_length=1, description="Per location coordinate, [lower, upper): lower <= value < upper.")

    @field_validator("bounds")
    @classmethod
    def _ordered(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for coord, (lo, hi) in value.items():
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(f"bounds of {coord!r} must be finite with lower < upper, got [{lo}, {hi}]")
        return value


#: The ``regions`` key of an innovation-archive output (empty: no labels).
ArchiveRegions = Annotated[list[RegionParameters], Field(
    default_factory=list, description="Region labels of the archived observations: [{name, bounds: {coordinate: "
                                      "[lower, upper)}}], the first match wins (MetaData/region).")]


class Regions:
    """The regions of a configuration, checked against the location coordinates.

    Parameters
    ----------
    regions:
        Validated :class:`RegionParameters` (order matters: the first match wins).
    coordinates:
        The location coordinate names (the geometry's ``location_names``).
    path:
        YAML path of the list, for error messages.
    """

    def __init__(self, regions: Sequence[RegionParameters], coordinates: Sequence[str], path: str = "regions"):
        self.regions = list(regions)
        seen: set[str] = set()
        for i, region in enumerate(self.regions):
            if region.name in seen:
                raise ConfigError(f"region name {region.name!r} is given twice", f"{path}[{i}].name")
            seen.add(region.name)
            unknown = sorted(set(region.bounds) - set(coordinates))
            if unknown:
                raise ConfigError(f"no location coordinate {unknown[0]!r} (the locations have "
                                  f"{', '.join(coordinates)})", f"{path}[{i}].bounds")

    def __bool__(self) -> bool:
        return bool(self.regions)

    def labels(self, coordinates: Mapping[str, Any]) -> np.ndarray:
        """The region label of every location (``""``: in no region), as an object array."""
        n = np.size(next(iter(coordinates.values()))) if coordinates else 0
        out = np.full(n, "", dtype=object)
        free = np.ones(n, dtype=bool)
        for region in self.regions:
            inside = free.copy()
            for coord, (lo, hi) in region.bounds.items():
                c = np.asarray(coordinates[coord], dtype=np.float64)
                inside &= (c >= lo) & (c < hi)
            out[inside] = region.name
            free &= ~inside
        return out

    def describe(self) -> str:
        """JSON of the regions (stored as an archive attribute)."""
        return json.dumps([{"name": r.name, "bounds": {k: list(v) for k, v in r.bounds.items()}}
                           for r in self.regions])


def archive_regions(archive: Any, geometry: Any, path: str = "output archive.regions") -> "Regions | None":
    """The :class:`Regions` of an ``output archive`` section (None without archive or regions)."""
    if archive is None or not archive.regions:
        return None
    return Regions(archive.regions, list(geometry.location_names), path)
