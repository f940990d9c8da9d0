r"""Simulation helpers: observation networks and innovations drawn from known parameters.

* :func:`correlation` — Gaussian :math:`e^{-r^2/(2L^2)}` or SOAR :math:`(1 + r/L)e^{-r/L}`
  correlations of a distance matrix;
* :func:`symmetric_factor` — :math:`\mathbf G` with :math:`\mathbf G\mathbf G^\mathrm{T} = \mathbf C`
  (symmetric square root; negative round-off eigenvalues set to 0);
* :func:`ensemble_perturbations` — :math:`N` centred draws from :math:`N(0, \mathbf C)`,
  :math:`\mathbf Y = \mathbf C^{1/2}\mathbf Z(\mathbf I - \tfrac1N\mathbf 1\mathbf 1^\mathrm{T})`, so that
  :math:`\mathbf Y\mathbf Y^\mathrm{T}/(N-1)` is the unbiased sample covariance;
* :func:`ring_network` — a Lorenz-96-like network: ``p`` observations on a periodic domain
  :math:`[0, 1)` with ``n`` grid points, static covariance from one correlation model, the
  ensemble drawn from another (so that :math:`\beta` is identifiable), fresh members every cycle;
* :func:`geometry_network` — the same on a model geometry's horizontal plane (e.g. the two-layer
  QG channel, periodic in :math:`x`, walls in :math:`y`): ``p`` fixed random locations, the
  correlations of the geometry's own ``distance``;
* :func:`simulate_innovations` — :math:`d_k = \mathbf L_k z_k`, :math:`\mathbf S_k(\theta^*) =
  \mathbf L_k\mathbf L_k^\mathrm{T}`, :math:`z_k \sim N(0, \mathbf I)` from a seeded generator.

Simulated this way, the ensemble and static covariances *are* the model's
:math:`\mathbf C_e, \mathbf C_s`: the draws test the estimators, not the realism of the
hybrid covariance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pyoops.diagnostics.tuning.data import TuningCycle, TuningData
from pyoops.diagnostics.tuning.from_archive import geometry_distance
from pyoops.diagnostics.tuning.localization import periodic_distance
from pyoops.diagnostics.tuning.model import HybridCovarianceModel
from pyoops.diagnostics.tuning.parameters import Parametrization

__all__ = ["correlation", "ensemble_perturbations", "geometry_network", "ring_network", "simulate_innovations", "simulate_regions",
           "symmetric_factor"]


def correlation(distance: np.ndarray, length: float, kind: str = "gaussian") -> np.ndarray:
    """Gaussian or SOAR correlation of the distances (``kind`` ``"gaussian"`` or ``"soar"``)."""
    r = np.asarray(distance, dtype=np.float64) / length
    if kind == "gaussian":
        return np.exp(-0.5 * r * r)
    if kind == "soar":
        return (1.0 + r) * np.exp(-r)
    raise ValueError(f"kind must be 'gaussian' or 'soar', got {kind!r}")


def symmetric_factor(covariance: np.ndarray) -> np.ndarray:
    r"""Symmetric square root :math:`\mathbf V\mathrm{diag}(\sqrt{\max(\mu, 0)})\mathbf V^\mathrm{T}`."""
    mu, v = np.linalg.eigh(0.5 * (covariance + covariance.T))
    return (v * np.sqrt(np.clip(mu, 0.0, None))) @ v.T


def ensemble_perturbations(covariance_factor: np.ndarray, members: int, rng: np.random.Generator) -> np.ndarray:
    """``(p, members)`` centred perturbations drawn from :math:`N(0, \\mathbf G\\mathbf G^\\mathrm{T})`."""
    z = rng.standard_normal((covariance_factor.shape[1], members))
    z -= z.mean(axis=1, keepdims=True)
    return covariance_factor @ z


def ring_network(rng: np.random.Generator, cycles: int, *, n: int = 40, p: int = 40, members: int | None = 20,
                 static_kind: str = "gaussian", static_length: float = 2.0 / 40,
                 ensemble_kind: str = "soar", ensemble_length: float = 4.0 / 40,
                 ensemble_amplitude: Sequence[float] | float = 1.0, obs_error: float = 1.0,
                 static_variance: float = 1.0, ensemble_from_static: bool = False,
                 random_locations: bool = False, regions: Mapping[str, tuple[float, float]] | None = None,
                 obs_groups: Sequence[str] | None = None) -> TuningData:
    r"""A periodic Lorenz-96-like observation network with zero innovations (fill them with
    :func:`simulate_innovations`).

    Grid :math:`x_j = j/n`; observations at ``p`` grid points (evenly spaced, or a fresh random
    choice per cycle with ``random_locations``), :math:`\sigma_o` = ``obs_error``.
    :math:`\mathbf C_s` = ``static_variance`` × the ``static_kind`` correlation with
    ``static_length`` (exact factor, :math:`s = 1`).  Ensemble: ``members`` draws per cycle from
    ``ensemble_amplitude`` × the ``ensemble_kind`` correlation with ``ensemble_length`` (a
    different covariance, so :math:`\beta` is identifiable), or from :math:`\mathbf C_s` itself
    with ``ensemble_from_static``; ``ensemble_amplitude`` may vary per cycle (a sequence), a
    flow-dependent ensemble variance.  ``regions``: name → half-open :math:`[a, b)` in ``x``;
    ``obs_groups``: labels assigned round-robin to the observations.
    """
    dist_fn = periodic_distance(1.0, "x")
    out = []
    amps = np.broadcast_to(np.asarray(ensemble_amplitude, dtype=np.float64), (cycles,))
    fixed_cache: dict[str, np.ndarray] = {}
    for k in range(cycles):
        if random_locations:
            idx = np.sort(rng.choice(n, size=p, replace=False))
        else:
            idx = np.unique(np.round(np.arange(p) * n / p).astype(int))
        x = idx / n
        if random_locations or not fixed_cache:
            r = dist_fn({"x": x}, {"x": x})
            fixed_cache["g"] = symmetric_factor(static_variance * correlation(r, static_length, static_kind))
            fixed_cache["e"] = fixed_cache["g"] if ensemble_from_static else \
                symmetric_factor(correlation(r, ensemble_length, ensemble_kind))
        y = None
        if members:
            y = np.sqrt(amps[k]) * ensemble_perturbations(fixed_cache["e"], members, rng)
        region = None
        if regions:
            region = np.full(x.size, "", dtype=object)
            for name, (lo, hi) in regions.items():
                region[(x >= lo) & (x < hi) & (region == "")] = name
        groups = None
        if obs_groups:
            groups = np.array([obs_groups[i % len(obs_groups)] for i in range(x.size)], dtype=object)
        out.append(TuningCycle(np.zeros(x.size), np.full(x.size, obs_error), fixed_cache["g"], 1.0, y,
                               {"x": x}, region, groups, cycle=k))
    return TuningData(tuple(out), dist_fn)


def geometry_network(geometry: Any, rng: np.random.Generator, cycles: int, *, p: int = 80,
                     members: int | None = 15, static_kind: str = "gaussian", static_length: float | None = None,
                     ensemble_kind: str = "soar", ensemble_length: float | None = None,
                     ensemble_amplitude: Sequence[float] | float = 1.0, obs_error: float = 1.0,
                     static_variance: float = 1.0, level: int = -1) -> TuningData:
    r"""An observation network on a model geometry (zero innovations; fill them with
    :func:`simulate_innovations`).

    ``p`` locations drawn once, uniformly over the horizontal axes of ``geometry`` (a
    :class:`~pyoops.generic.grid.StructuredGrid`: each horizontal axis from its ``lower`` to
    its ``upper`` bound, periodic ones half-open), at the height of level ``level`` if the
    geometry has a vertical axis, and kept for every cycle (a fixed network).  Distances:
    :func:`~pyoops.diagnostics.tuning.from_archive.geometry_distance` (the geometry's
    horizontal distance, periodic where its grid is), which is also the ``distance`` of the
    returned :class:`~pyoops.diagnostics.tuning.data.TuningData` (used by localization).
    :math:`\mathbf C_s` =
    ``static_variance`` × the ``static_kind`` correlation with ``static_length`` (default two
    grid spacings, the mean of the horizontal axes' spacings); the ensemble: ``members`` fresh draws per
    cycle from ``ensemble_amplitude`` × the ``ensemble_kind`` correlation with
    ``ensemble_length`` (default four spacings), a different covariance so that
    :math:`\beta` is identifiable; :math:`\sigma_o` = ``obs_error``.  The geometry is passed
    in: the core imports no model plugin.
    """
    horizontal = list(geometry.horizontal_axes)
    if not horizontal:
        raise ValueError("the geometry has no horizontal axis to place observations on")
    spacing = float(np.mean([axis.spacing for axis in horizontal]))
    static_length = 2.0 * spacing if static_length is None else float(static_length)
    ensemble_length = 4.0 * spacing if ensemble_length is None else float(ensemble_length)
    coords: dict[str, np.ndarray] = {}
    for axis in horizontal:
        lo, hi = float(axis.lower), float(axis.upper)
        coords[axis.name] = lo + (hi - lo) * rng.random(p)
    for name in geometry.location_names:
        if name not in coords:
            axis = geometry.axis(name)
            coords[name] = np.full(p, float(axis.points[level]))
    dist_fn = geometry_distance(geometry)
    r = dist_fn(coords, coords)
    g = symmetric_factor(static_variance * correlation(r, static_length, static_kind))
    e = symmetric_factor(correlation(r, ensemble_length, ensemble_kind))
    amps = np.broadcast_to(np.asarray(ensemble_amplitude, dtype=np.float64), (cycles,))
    out = []
    for k in range(cycles):
        y = np.sqrt(amps[k]) * ensemble_perturbations(e, members, rng) if members else None
        out.append(TuningCycle(np.zeros(p), np.full(p, obs_error), g, 1.0, y, dict(coords), None, None, cycle=k))
    return TuningData(tuple(out), dist_fn)


def simulate_innovations(data: TuningData, values: Mapping[str, float], rng: np.random.Generator,
                         form: str = "hybrid") -> TuningData:
    r"""``data`` with innovations drawn from :math:`N(0, \mathbf S_k(\theta^*))`, :math:`\theta^*` = ``values``
    (natural values; unspecified ones take the defaults of
    :mod:`~pyoops.diagnostics.tuning.parameters`)."""
    par = Parametrization.create((), values, form=form, groups=data.obs_groups(), has_ensemble=data.has_ensemble)
    model = HybridCovarianceModel(data, par)
    covs = model.covariances(par.natural(np.zeros(0)))
    draws = [np.linalg.cholesky(s) @ rng.standard_normal(s.shape[0]) for s in covs]
    return data.with_innovations(draws)


def simulate_regions(data: TuningData, values: Mapping[str, Mapping[str, float]], rng: np.random.Generator,
                     form: str = "hybrid") -> TuningData:
    r"""Innovations drawn region by region: the observations of region :math:`r` from
    :math:`N(0, \mathbf S_{k,r}(\theta^*_r))` with ``values[r]``, independently between regions (no
    cross-region covariance), so regional parameters are the right model."""
    draws = []
    for c in data.cycles:
        d = np.zeros(c.nobs)
        for region in np.unique(c.region):
            mask = c.region == region
            if str(region) not in values:
                raise ValueError(f"no parameter values for region {region!r}")
            one = simulate_innovations(TuningData((c.subset(mask),), data.distance), values[str(region)], rng, form)
            d[mask] = one.cycles[0].innovations
        draws.append(d)
    return data.with_innovations(draws)
