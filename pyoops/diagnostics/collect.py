r"""Flatten observations for the innovation archive, as the assimilation orders them.

Each observer's values are ``(nvars, nlocs)`` arrays and its :math:`H(x)` and linearised
:math:`\mathbf H` act on their C-order (variable-major) ravel; several observers are
concatenated in order.  :func:`flat_metadata` repeats the per-location metadata in that
order; :func:`observer_records` does it for an
:class:`~pyoops.generic.observers.Observers` and returns the mask of the observations
actually used (QC passed and ObsValue present), the ones an archive records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["flat_metadata", "observer_records", "select"]


def flat_metadata(obs_group: str, variables: Sequence[str], times: np.ndarray,
                  coordinates: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``append_cycle`` metadata keywords for ``len(variables) * nlocs`` observations (variable-major)."""
    nv = len(variables)
    nlocs = np.shape(times)[0]
    return {"date_time": np.tile(np.asarray(times, dtype=np.float64), nv),
            "coordinates": {c: np.tile(np.asarray(a, dtype=np.float64), nv) for c, a in coordinates.items()},
            "variable": variables[0] if nv == 1 else np.repeat(np.asarray(variables, dtype=object), nlocs).tolist(),
            "obs_group": obs_group}


def observer_records(observers: Any, hofx_background: Sequence[Any], hofx_analysis: Sequence[Any]
                     ) -> tuple[dict[str, Any], np.ndarray]:
    """``append_cycle`` keywords of all observers (values and metadata, every observation) and the boolean
    mask of the used ones; the caller adds the background variance and the cost, then selects ``mask``."""
    parts: list[dict[str, Any]] = []
    masks = []
    for ob, hb, ha in zip(observers, hofx_background, hofx_analysis):
        space = ob.obs_space
        meta = flat_metadata(space.name, list(space.simulated_variables), space.locations.times,
                             space.locations.coords)
        n = np.size(meta["date_time"])
        if isinstance(meta["variable"], str):
            meta["variable"] = [meta["variable"]] * n
        meta["obs_group"] = [space.name] * n
        meta.update(obs_value=np.asarray(space.obs_values().values, dtype=np.float64).ravel(),
                    obs_error=np.asarray(ob.obs_error.obserrors().values, dtype=np.float64).ravel(),
                    hofx_background=np.asarray(hb.values, dtype=np.float64).ravel(),
                    hofx_analysis=np.asarray(ha.values, dtype=np.float64).ravel())
        parts.append(meta)
        masks.append(np.asarray(space.qc_mask(), dtype=bool).ravel())
    mask = np.concatenate(masks)
    out: dict[str, Any] = {}
    for key in ("date_time", "obs_value", "obs_error", "hofx_background", "hofx_analysis"):
        out[key] = np.concatenate([p[key] for p in parts])
    out["coordinates"] = {c: np.concatenate([p["coordinates"][c] for p in parts]) for c in parts[0]["coordinates"]}
    for key in ("variable", "obs_group"):
        out[key] = [name for p in parts for name in p[key]]
    return out, mask


def select(record: Mapping[str, Any], mask: np.ndarray) -> dict[str, Any]:
    """The ``append_cycle`` keywords restricted to the observations where ``mask`` is True."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "coordinates":
            out[key] = {c: a[mask] for c, a in value.items()}
        elif isinstance(value, list):
            out[key] = [v for v, keep in zip(value, mask) if keep]
        elif isinstance(value, np.ndarray) and value.shape[:1] == mask.shape:
            out[key] = value[mask]
        else:
            out[key] = value
    return out
