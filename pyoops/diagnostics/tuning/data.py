r"""The data contract of the tuning estimators: observation-space arrays per cycle.

Per cycle :math:`k` with :math:`p_k` observations (:class:`TuningCycle`):

* innovations :math:`d_k = y_k - H(x_{b,k})`, shape ``(p_k,)``;
* the assumed observation-error standard deviations :math:`\sigma_o`, so
  :math:`\mathbf R_k = \mathrm{diag}(\sigma_o^2)`;
* a static factor :math:`\mathbf G_k` (``(p_k, K)``) and its normalisation :math:`s`
  (``static_scale``) with :math:`\mathbf C_{s,k} = \mathbf{H B_s H}^\mathrm{T} = s\,\mathbf G_k\mathbf G_k^\mathrm{T}`:
  :math:`s = 1` when :math:`\mathbf G = \mathbf H\mathbf B_s^{1/2}` exactly (:math:`K` = control size),
  :math:`s = 1/K` when the columns are :math:`K` random draws :math:`\mathbf H\mathbf B_s^{1/2}v`,
  :math:`v \sim N(0, \mathbf I)`;
* optionally the ensemble perturbations :math:`\mathbf Y_k` of :math:`H(x)` (``(p_k, N)``), with
  :math:`\mathbf C_{e,k} = \mathbf{H P_e H}^\mathrm{T} = \mathbf Y_k\mathbf Y_k^\mathrm{T}/(N-1)`;
* observation coordinates (name → ``(p_k,)`` array), region and obs-group labels (``(p_k,)``
  strings; one group ``""`` when none are given).

:class:`TuningData` holds the cycles in time order and the caller's distance function
(:mod:`~pyoops.diagnostics.tuning.localization`), used for the observation-space
localization :math:`L_\ell = \mathrm{GC}(r/\ell)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from pyoops.diagnostics.tuning.localization import DistanceFunction, checked_distances

__all__ = ["TuningCycle", "TuningData"]


def _labels(value: object, p: int, what: str) -> np.ndarray:
    if value is None:
        return np.full(p, "", dtype=object)
    arr = np.asarray(value, dtype=object)
    if arr.ndim == 0:
        return np.full(p, str(arr), dtype=object)
    if arr.shape != (p,):
        raise ValueError(f"{what} has shape {arr.shape}, expected ({p},)")
    return np.array([str(v) for v in arr], dtype=object)


@dataclass(frozen=True)
class TuningCycle:
    r"""One cycle's observation-space arrays (see the module docstring for the meaning).

    Arrays are converted to float64 and checked (shapes, finite values, :math:`\sigma_o > 0`,
    :math:`N \ge 2`); label arguments may be a single string for all observations.
    """

    innovations: np.ndarray
    obs_error: np.ndarray
    static_factor: np.ndarray
    static_scale: float = 1.0
    ensemble_perturbations: np.ndarray | None = None
    coordinates: Mapping[str, np.ndarray] = field(default_factory=dict)
    region: np.ndarray | str | None = None
    obs_group: np.ndarray | str | None = None
    cycle: int = 0

    def __post_init__(self) -> None:
        d = np.asarray(self.innovations, dtype=np.float64)
        if d.ndim != 1:
            raise ValueError(f"innovations must be one-dimensional, got shape {d.shape}")
        p = d.size
        sigma = np.asarray(self.obs_error, dtype=np.float64)
        if sigma.shape != (p,):
            raise ValueError(f"obs_error has shape {sigma.shape}, expected ({p},)")
        g = np.asarray(self.static_factor, dtype=np.float64)
        if g.ndim != 2 or g.shape[0] != p:
            raise ValueError(f"static_factor has shape {g.shape}, expected ({p}, K)")
        if not (np.all(np.isfinite(d)) and np.all(np.isfinite(g))):
            raise ValueError("innovations and static_factor must be finite")
        if not np.all(np.isfinite(sigma) & (sigma > 0)):
            raise ValueError("obs_error must be finite and positive")
        if not (np.isfinite(self.static_scale) and self.static_scale > 0):
            raise ValueError(f"static_scale must be positive, got {self.static_scale}")
        y = self.ensemble_perturbations
        if y is not None:
            y = np.asarray(y, dtype=np.float64)
            if y.ndim != 2 or y.shape[0] != p or y.shape[1] < 2:
                raise ValueError(f"ensemble_perturbations has shape {y.shape}, expected ({p}, N) with N >= 2")
            if not np.all(np.isfinite(y)):
                raise ValueError("ensemble_perturbations must be finite")
        coords = {}
        for name, values in dict(self.coordinates).items():
            arr = np.asarray(values, dtype=np.float64)
            if arr.shape != (p,):
                raise ValueError(f"coordinate {name!r} has shape {arr.shape}, expected ({p},)")
            coords[name] = arr
        object.__setattr__(self, "innovations", d)
        object.__setattr__(self, "obs_error", sigma)
        object.__setattr__(self, "static_factor", g)
        object.__setattr__(self, "static_scale", float(self.static_scale))
        object.__setattr__(self, "ensemble_perturbations", y)
        object.__setattr__(self, "coordinates", coords)
        object.__setattr__(self, "region", _labels(self.region, p, "region"))
        object.__setattr__(self, "obs_group", _labels(self.obs_group, p, "obs_group"))

    @property
    def nobs(self) -> int:
        """:math:`p_k`."""
        return int(self.innovations.size)

    @property
    def members(self) -> int:
        """:math:`N` (0 without ensemble)."""
        return 0 if self.ensemble_perturbations is None else int(self.ensemble_perturbations.shape[1])

    def static_covariance(self) -> np.ndarray:
        r""":math:`\mathbf C_s = s\,\mathbf G\mathbf G^\mathrm{T}` (``(p, p)``)."""
        return self.static_scale * (self.static_factor @ self.static_factor.T)

    def ensemble_covariance(self) -> np.ndarray:
        r""":math:`\mathbf C_e = \mathbf Y\mathbf Y^\mathrm{T}/(N-1)`; zeros without ensemble."""
        y = self.ensemble_perturbations
        if y is None:
            return np.zeros((self.nobs, self.nobs))
        return (y @ y.T) / (y.shape[1] - 1)

    def subset(self, mask: np.ndarray) -> TuningCycle:
        """The cycle restricted to the observations where ``mask`` (boolean ``(p,)`` or indices) selects."""
        idx = np.arange(self.nobs)[np.asarray(mask)]
        y = None if self.ensemble_perturbations is None else self.ensemble_perturbations[idx]
        return replace(self, innovations=self.innovations[idx], obs_error=self.obs_error[idx],
                       static_factor=self.static_factor[idx], ensemble_perturbations=y,
                       coordinates={k: v[idx] for k, v in self.coordinates.items()},
                       region=self.region[idx], obs_group=self.obs_group[idx])

    def with_innovations(self, innovations: np.ndarray) -> TuningCycle:
        """The same cycle with other innovations (simulation)."""
        return replace(self, innovations=innovations)


@dataclass(frozen=True)
class TuningData:
    """Cycles in time order and the distance function of their observation locations.

    ``distance`` may be None when no localization length is used (``length`` fixed to
    infinity, the default).
    """

    cycles: tuple[TuningCycle, ...]
    distance: DistanceFunction | None = None

    def __post_init__(self) -> None:
        cycles = tuple(self.cycles)
        if not cycles:
            raise ValueError("no cycles")
        if any(not isinstance(c, TuningCycle) for c in cycles):
            raise TypeError("cycles must be TuningCycle instances")
        object.__setattr__(self, "cycles", cycles)

    def __len__(self) -> int:
        return len(self.cycles)

    @property
    def nobs(self) -> int:
        """Total number of observations :math:`\\sum_k p_k`."""
        return int(sum(c.nobs for c in self.cycles))

    @property
    def has_ensemble(self) -> bool:
        """Whether any cycle carries ensemble perturbations."""
        return any(c.ensemble_perturbations is not None for c in self.cycles)

    def obs_groups(self) -> list[str]:
        """Sorted obs-group labels present."""
        return sorted({str(g) for c in self.cycles for g in c.obs_group})

    def regions(self) -> list[str]:
        """Sorted region labels present."""
        return sorted({str(r) for c in self.cycles for r in c.region})

    def take(self, indices: Iterable[int]) -> TuningData:
        """The cycles at ``indices`` (in that order)."""
        return TuningData(tuple(self.cycles[i] for i in indices), self.distance)

    def head(self, ncycles: int) -> TuningData:
        """The first ``ncycles`` cycles."""
        return self.take(range(min(ncycles, len(self.cycles))))

    def select(self, region: str | Sequence[str] | None = None,
               obs_group: str | Sequence[str] | None = None) -> TuningData:
        """The observations with the given region(s) and obs group(s); cycles left empty are dropped."""
        regions = None if region is None else ({region} if isinstance(region, str) else set(region))
        groups = None if obs_group is None else ({obs_group} if isinstance(obs_group, str) else set(obs_group))
        out = []
        for c in self.cycles:
            mask = np.ones(c.nobs, dtype=bool)
            if regions is not None:
                mask &= np.isin(c.region, list(regions))
            if groups is not None:
                mask &= np.isin(c.obs_group, list(groups))
            if mask.any():
                out.append(c if mask.all() else c.subset(mask))
        if not out:
            raise ValueError(f"no observations with region={region!r}, obs_group={obs_group!r}")
        return TuningData(tuple(out), self.distance)

    def subset_observations(self, masks: Sequence[np.ndarray]) -> TuningData:
        """Per-cycle observation masks (one per cycle); cycles left empty are dropped."""
        if len(masks) != len(self.cycles):
            raise ValueError(f"{len(masks)} masks for {len(self.cycles)} cycles")
        out = [c.subset(m) for c, m in zip(self.cycles, masks) if np.asarray(m).any()]
        if not out:
            raise ValueError("the masks select no observation")
        return TuningData(tuple(out), self.distance)

    def with_innovations(self, innovations: Sequence[np.ndarray]) -> TuningData:
        """The same cycles with other innovations (one array per cycle)."""
        if len(innovations) != len(self.cycles):
            raise ValueError(f"{len(innovations)} innovation arrays for {len(self.cycles)} cycles")
        return TuningData(tuple(c.with_innovations(d) for c, d in zip(self.cycles, innovations)), self.distance)

    def distances(self, cycle: TuningCycle) -> np.ndarray:
        """Pairwise distances of a cycle's observations, checked (``(p, p)``, finite, non-negative)."""
        if self.distance is None:
            raise ValueError("a localization length needs a distance function (TuningData.distance)")
        return checked_distances(self.distance(cycle.coordinates, cycle.coordinates), (cycle.nobs, cycle.nobs))
