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

__all__ = ["ensemble_innovations", "flat_hofx", "flat_metadata", "observer_records", "select",
           "variational_innovations"]


def flat_metadata(obs_group: str, variables: Sequence[str], times: np.ndarray,
                  coordinates: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``append_cycle`` metadata keywords for ``len(variables) * nlocs`` observations (variable-major)."""
    nv = len(variables)
    nlocs = np.shape(times)[0]
    return {"date_time": np.tile(np.asarray(times, dtype=np.float64), nv),
            "coordinates": {c: np.tile(np.asarray(a, dtype=np.float64), nv) for c, a in coordinates.items()},
            "variable": variables[0] if nv == 1 else np.repeat(np.asarray(variables, dtype=object), nlocs).tolist(),
            "obs_group": obs_group}


def observer_records(observers: Any) -> tuple[dict[str, Any], np.ndarray]:
    """``append_cycle`` keywords of all observers (y, sigma_o and metadata of every observation, flat) and the
    boolean mask of the used ones; the caller adds H(x), the background variance and the cost (flat, in the
    same order: :func:`flat_hofx`), then keeps ``mask`` (:func:`select`)."""
    parts: list[dict[str, Any]] = []
    masks = []
    for ob in observers:
        space = ob.obs_space
        meta = flat_metadata(space.name, list(space.simulated_variables), space.locations.times,
                             space.locations.coords)
        n = np.size(meta["date_time"])
        if isinstance(meta["variable"], str):
            meta["variable"] = [meta["variable"]] * n
        meta["obs_group"] = [space.name] * n
        meta.update(obs_value=np.asarray(space.obs_values().values, dtype=np.float64).ravel(),
                    obs_error=np.asarray(ob.obs_error.obserrors().values, dtype=np.float64).ravel())
        parts.append(meta)
        masks.append(np.asarray(space.qc_mask(), dtype=bool).ravel())
    mask = np.concatenate(masks)
    out: dict[str, Any] = {}
    for key in ("date_time", "obs_value", "obs_error"):
        out[key] = np.concatenate([p[key] for p in parts])
    out["coordinates"] = {c: np.concatenate([p["coordinates"][c] for p in parts]) for c in parts[0]["coordinates"]}
    for key in ("variable", "obs_group"):
        out[key] = [name for p in parts for name in p[key]]
    return out, mask


def flat_hofx(hofx: Sequence[Any]) -> np.ndarray:
    """One ObsVector or ``(..., nvars, nlocs)`` array per observer -> ``(..., p)`` (members first, if any)."""
    parts = [np.asarray(getattr(h, "values", h), dtype=np.float64) for h in hofx]
    return np.concatenate([a.reshape(a.shape[:-2] + (-1,)) for a in parts], axis=-1)


def ensemble_innovations(hxb: np.ndarray, hxa: np.ndarray, prior_inflation: float = 1.0) -> dict[str, Any]:
    r"""Archive values of an ensemble filter from the members' :math:`H(x^b_k)`, :math:`H(x^a_k)` ``(N, p)``:
    the means :math:`\overline{H(x)}`, the perturbations :math:`\sqrt{\lambda}\,(H(x^b_k) - \overline{H(x^b)})`
    ``(p, N)`` and the assumed background variance
    :math:`\frac{\lambda}{N-1}\sum_k (H(x^b_k) - \overline{H(x^b)})^2`; no cost.

    :math:`\lambda` = ``prior_inflation``, the multiplicative inflation of the background
    covariance the analysis applied (the LETKF's ``mult``): what is archived is the
    covariance the analysis *assumed*, not the raw forecast spread.
    """
    mean_b = hxb.mean(axis=0)
    pert = (hxb - mean_b) * np.sqrt(prior_inflation)
    return {"hofx_background": mean_b, "hofx_analysis": hxa.mean(axis=0),
            "background_error_variance": np.einsum("kp,kp->p", pert, pert) / (hxb.shape[0] - 1),
            "ensemble_perturbations": pert.T, "cost_at_analysis": float("nan")}


def variational_innovations(diagnostics: Mapping[int, Mapping[str, Any]], labels: Sequence[int],
                            has_control: bool) -> dict[str, Any]:
    r"""Archive values of variational analyses (EDA included) from the members' diagnostics of
    :func:`~pyoops.ensemble.eda.analyse_members` (``record_hofx`` and ``hbht`` set).

    With a control (member 0): its :math:`H(x_b)`, :math:`H(x_a)` and final cost
    :math:`J(x_a)` (the quadratic cost at the end of the last minimisation: exact for a
    linear :math:`H`); without: the means over the members and no cost (NaN).  The
    background variance is :math:`\mathrm{diag}(\mathbf{HBH}^\mathrm{T})` of the B the
    analyses used (static, ensemble or hybrid), computed on the first member; the
    perturbations are those of the perturbed members' :math:`H(x_b^k)` (None without members).
    """
    hxb = np.stack([diagnostics[m]["hofx background"] for m in labels])
    hxa = np.stack([diagnostics[m]["hofx analysis"] for m in labels])
    first = 1 if has_control else 0
    out: dict[str, Any] = {"background_error_variance": diagnostics[labels[0]]["background error variance"],
                           "ensemble_perturbations": None, "cost_at_analysis": float("nan")}
    if has_control:
        out.update(hofx_background=hxb[0], hofx_analysis=hxa[0], cost_at_analysis=float(diagnostics[0]["final J"]))
    else:
        out.update(hofx_background=hxb.mean(axis=0), hofx_analysis=hxa.mean(axis=0))
    if len(labels) > first:
        members = hxb[first:]
        out["ensemble_perturbations"] = (members - members.mean(axis=0)).T
    return out


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
