r"""The observation-space diagnostics report: statistics of every subset of an :class:`~pyoops.diagnostics.archive.InnovationData`.

:func:`diagnose` splits the observations into subsets (by obs group, variable, region
and/or time block), computes :func:`~pyoops.diagnostics.statistics.innovation_statistics`,
rank histograms and per-cycle series for each, and the whole-cost check
:math:`2J(x_a)/p`; the result is plain data (numbers, lists, strings; NaN as None), ready
for JSON.  :func:`format_table` renders it as a text table.  Random draws come from
:func:`pyoops.util.random.generator` streams of the configured seeds, one per subset
(label path ``"bootstrap", <subset name>``), so a subset's numbers do not depend on
which other subsets are computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyoops.diagnostics.archive import InnovationData
from pyoops.diagnostics.statistics import (
    Estimate,
    cost_check,
    innovation_statistics,
    observation_ranks,
    per_cycle_series,
    rank_flatness,
    rank_histogram,
)
from pyoops.util.random import generator

__all__ = ["GROUP_KEYS", "DiagnosticsSettings", "diagnose", "format_table", "subset_codes"]

#: Keys observations can be grouped by.
GROUP_KEYS = ("obs group", "variable", "region", "time block")


@dataclass(frozen=True)
class DiagnosticsSettings:
    """How :func:`diagnose` computes its intervals and draws."""

    group_by: tuple[str, ...] = ()
    time_block_seconds: float | None = None
    level: float = 0.95
    interval: str = "bootstrap"
    samples: int = 1000
    block_length: int | None = None
    bootstrap_seed: int = 0
    rank_seed: int = 0


def _iso(seconds: float) -> str:
    from pyoops.util.datetime import DateTime

    return str(DateTime.from_seconds_since_epoch(float(seconds)))


def subset_codes(data: InnovationData, group_by: Sequence[str], time_block_seconds: float | None = None
                 ) -> tuple[list[dict[str, str]], np.ndarray]:
    """Subsets of the observations: their labels and each observation's subset index.

    ``time block`` blocks are ``time_block_seconds`` long, counted from the first cycle's
    analysis time, and labelled by their start.  Observations without a region have the
    region label ``""``.
    """
    keys: list[np.ndarray] = []
    for key in group_by:
        if key == "obs group":
            keys.append(data.obs_group)
        elif key == "variable":
            keys.append(data.variable)
        elif key == "region":
            keys.append(data.region)
        elif key == "time block":
            if not time_block_seconds:
                raise ValueError("grouping by time block needs a time block length")
            t_cycle = data.analysis_time[data.cycle_position].astype(np.float64)
            t0 = float(data.analysis_time[0]) if data.ncycles else 0.0
            block = np.floor((t_cycle - t0) / time_block_seconds).astype(np.int64)
            # Zero-padded block start: string order is time order.
            keys.append(np.array([f"{b:012d}" for b in block.tolist()]) if block.size else np.array([], dtype=str))
        else:
            raise ValueError(f"unknown group key {key!r}; expected one of {GROUP_KEYS}")
    if not keys:
        return [], np.zeros(data.nobs, dtype=np.int64)
    joined = keys[0].astype(object)
    for k in keys[1:]:
        joined = joined + "\x1f" + k.astype(object)
    unique, inverse = np.unique(joined.astype(str), return_inverse=True)
    labels = []
    for text in unique.tolist():
        parts = text.split("\x1f")
        label = {}
        for key, part in zip(group_by, parts):
            if key == "time block":
                start = float(data.analysis_time[0]) + int(part) * float(time_block_seconds or 0)
                label[key] = _iso(start)
            else:
                label[key] = part
        labels.append(label)
    return labels, inverse.astype(np.int64)


def subset_name(label: dict[str, str]) -> str:
    """``"all"`` or ``"obs group=L96, variable=x"``."""
    if not label:
        return "all"
    return ", ".join(f"{k}={v if v != '' else '(none)'}" for k, v in label.items())


def _number(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _pair(pair: tuple[float, float] | None) -> list[float | None] | None:
    return None if pair is None else [_number(pair[0]), _number(pair[1])]


def estimate_dict(est: Estimate, interval: str) -> dict[str, Any]:
    """JSON form of an :class:`~pyoops.diagnostics.statistics.Estimate`."""
    return {"value": _number(est.value), "interval": _pair(est.interval(interval)),
            "bootstrap interval": _pair(est.bootstrap), "analytic interval": _pair(est.analytic),
            "cycles": est.cycles, "effective cycles": _number(est.effective_cycles),
            "lag-1 autocorrelation": _number(est.lag1)}


def _subset_report(data: InnovationData, mask: np.ndarray, name: str, settings: DiagnosticsSettings,
                   ranks: np.ndarray | None) -> dict[str, Any]:
    ens_var = data.ensemble_variance()
    stats = innovation_statistics(
        data.obs_value[mask], data.obs_error[mask], data.hofx_background[mask], data.hofx_analysis[mask],
        data.background_error_variance[mask], data.cycle[mask],
        ensemble_variance=None if ens_var is None else ens_var[mask], members=data.members,
        level=settings.level, rng=generator(settings.bootstrap_seed, "bootstrap", name),
        samples=settings.samples, block_length=settings.block_length)
    out: dict[str, Any] = {"count": stats["count"], "cycles": stats["cycles"]}
    for key, value in stats.items():
        if isinstance(value, Estimate):
            out[key] = estimate_dict(value, settings.interval)
        elif key not in out:
            out[key] = _number(value) if isinstance(value, float) else value
    # Per-cycle series (NaN where the subset has no observation in a cycle).
    d, da = data.omb[mask], data.oma[mask]
    spread = (data.background_error_variance[mask] if ens_var is None
              else (1 + 1 / data.members) * ens_var[mask]) + data.obs_error[mask] ** 2
    series = per_cycle_series({"O-B ms": d * d, "O-A ms": da * da, "spread": spread},
                              data.cycle_position[mask], data.ncycles)
    out["series"] = {"O-B rms": [_number(math.sqrt(v)) if v == v else None for v in series["O-B ms"].tolist()],
                     "O-A rms": [_number(math.sqrt(v)) if v == v else None for v in series["O-A ms"].tolist()],
                     "spread": [_number(math.sqrt(v)) if v == v else None for v in series["spread"].tolist()]}
    if ranks is not None:
        counts = rank_histogram(ranks[mask], data.members)
        test = rank_flatness(counts)
        out["rank histogram"] = {"counts": counts.tolist(), "chi2 statistic": _number(test.statistic),
                                 "degrees of freedom": test.dof, "p-value": _number(test.pvalue)}
    return out


def diagnose(data: InnovationData, settings: DiagnosticsSettings) -> dict[str, Any]:
    """Every statistic of every subset (JSON-ready; see the module docstring)."""
    ranks = None
    if data.members >= 2 and data.nobs:
        ranks = observation_ranks(data.obs_value, data.obs_error, data.members_hofx(),
                                  generator(settings.rank_seed, "rank histogram"))
    labels, codes = subset_codes(data, settings.group_by, settings.time_block_seconds)
    subsets = [{"name": "all", "labels": {}, **_subset_report(data, np.ones(data.nobs, bool), "all", settings,
                                                               ranks)}]
    for j, label in enumerate(labels):
        name = subset_name(label)
        subsets.append({"name": name, "labels": label, **_subset_report(data, codes == j, name, settings, ranks)})
    cost = cost_check(data.cost_at_analysis, data.cycle_nobs, level=settings.level,
                      rng=generator(settings.bootstrap_seed, "bootstrap", "2J/p"), samples=settings.samples,
                      block_length=settings.block_length)
    return {
        "archives": list(data.sources),
        "application": data.attributes.get("application"),
        "method": data.attributes.get("method"),
        "members": data.members,
        "observations": data.nobs,
        "cycles": {"count": data.ncycles,
                   "first": int(data.cycle_index[0]) if data.ncycles else None,
                   "last": int(data.cycle_index[-1]) if data.ncycles else None,
                   "analysis times": [_iso(t) for t in data.analysis_time.tolist()]},
        "settings": {"group by": list(settings.group_by), "confidence level": settings.level,
                     "interval": settings.interval, "bootstrap samples": settings.samples,
                     "block length": settings.block_length, "bootstrap seed": settings.bootstrap_seed,
                     "rank histogram seed": settings.rank_seed},
        "2J/p": None if cost is None else estimate_dict(cost, settings.interval),
        "cycles with a cost": int(np.isfinite(data.cost_at_analysis).sum()),
        "subsets": subsets,
    }


def _fmt(entry: dict[str, Any] | None, digits: int = 3) -> str:
    if entry is None or entry.get("value") is None:
        return "n/a"
    text = f"{entry['value']:.{digits}f}"
    lo, hi = entry["interval"] or (None, None)
    if lo is not None and hi is not None:
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


def format_table(report: dict[str, Any]) -> str:
    """A text table of the headline numbers of every subset (intervals as configured)."""
    s = report["settings"]
    lines = [f"obs-diagnostics: {report['observations']} observations in {report['cycles']['count']} cycles "
             f"({report['method'] or 'unknown method'}); {100 * s['confidence level']:g} % {s['interval']} "
             "intervals; ratios = data / assumed (> 1: too little variance assumed)"]
    if report["2J/p"] is not None:
        lines.append(f"2J(x_a)/p over {report['cycles with a cost']} cycles: {_fmt(report['2J/p'])}")
    columns = [("count", 8), ("O-B rms", 8), ("O-A rms", 8), ("chi2", 22), ("sigma_o^2 ratio", 22),
               ("HBH^T ratio", 22), ("spread-skill", 22)]
    width = max([len(x["name"]) for x in report["subsets"]] + [6])
    lines.append(f"{'subset':<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in columns))
    for sub in report["subsets"]:
        cells = [str(sub["count"]),
                 "n/a" if sub["O-B rms"]["value"] is None else f"{sub['O-B rms']['value']:.4g}",
                 "n/a" if sub["O-A rms"]["value"] is None else f"{sub['O-A rms']['value']:.4g}",
                 _fmt(sub["chi2"]), _fmt(sub["obs error variance ratio"]),
                 _fmt(sub["background error variance ratio"]), _fmt(sub["spread-skill ratio"])]
        lines.append(f"{sub['name']:<{width}}  " + "  ".join(f"{c:>{w}}" for c, (_, w) in zip(cells, columns)))
    for sub in report["subsets"]:
        rh = sub.get("rank histogram")
        if rh is not None and rh["p-value"] is not None:
            lines.append(f"rank histogram {sub['name']}: chi2 {rh['chi2 statistic']:.4g} with "
                         f"{rh['degrees of freedom']} dof, p-value {rh['p-value']:.3g}")
    return "\n".join(lines)
