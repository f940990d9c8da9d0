"""Plots of an observation-space diagnostics report (matplotlib Agg, PNG through atomic_output).

* :func:`plot_time_series` — per subset, RMS O−B, RMS O−A and the predicted spread
  :math:`\\sqrt{\\overline{(1+1/N)v+\\sigma_o^2}}` (or :math:`\\sqrt{\\overline{\\sigma_b^2+\\sigma_o^2}}`) per cycle;
* :func:`plot_ratios` — per subset, bars of the Desroziers ratios, χ² and spread–skill
  ratio with their confidence intervals, and the line at 1;
* :func:`plot_rank_histograms` — per subset, the rank frequencies times :math:`N+1`
  (1 for a flat histogram), with the flatness test's p-value.

At most :data:`~pyoops.diagnostics.plots.MAX_PANELS` subsets are drawn per figure (the JSON has them all).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from pyoops.util.figures import pyplot, save_figure

__all__ = ["MAX_PANELS", "plot_rank_histograms", "plot_ratios", "plot_report", "plot_time_series"]

#: Largest number of subsets drawn in one figure.
MAX_PANELS = 12
_RATIOS = (("obs error variance ratio", r"$\sigma_o^2$ (Desroziers)"),
           ("background error variance ratio", r"$HBH^T$ (Desroziers)"),
           ("chi2", r"$\chi^2$"), ("spread-skill ratio", "spread-skill"))




def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 3)
    return math.ceil(n / cols), cols


def _short_name(subset: dict[str, Any]) -> str:
    """The subset's label values, one per line (``all`` for the whole set)."""
    labels = subset.get("labels") or {}
    return "\n".join(v if v != "" else "(none)" for v in labels.values()) if labels else "all"


def _values(seq: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in seq], dtype=float)


def plot_time_series(report: dict[str, Any], filename: "str | Path") -> str:
    """RMS O−B, RMS O−A and spread per cycle, one panel per subset."""
    plt = pyplot()
    subsets = report["subsets"][:MAX_PANELS]
    # ISO-8601 UTC strings without their "Z": numpy's datetime64 has no time zones.
    times = np.array([t.rstrip("Z") for t in report["cycles"]["analysis times"]], dtype="datetime64[s]")
    rows, cols = _grid(len(subsets))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.0 * rows), squeeze=False, constrained_layout=True)
    for ax, sub in zip(axes.flat, subsets):
        s = sub["series"]
        ax.plot(times, _values(s["O-B rms"]), lw=0.7, color="C0", label="RMS O−B")
        ax.plot(times, _values(s["O-A rms"]), lw=0.7, color="C1", label="RMS O−A")
        ax.plot(times, _values(s["spread"]), lw=0.9, color="C2", label="spread (predicted RMS O−B)")
        ax.set_title(_short_name(sub).replace("\n", ", "), fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.legend(fontsize=7, loc="upper right")
    for ax in list(axes.flat)[len(subsets):]:
        ax.set_axis_off()
    fig.suptitle(f"{report['method'] or ''} innovations per cycle".strip())
    return save_figure(fig, filename)


def plot_ratios(report: dict[str, Any], filename: "str | Path") -> str:
    """Grouped bars (one group per subset) of the ratios with their confidence intervals."""
    plt = pyplot()
    subsets = report["subsets"][:MAX_PANELS]
    x = np.arange(len(subsets))
    width = 0.8 / len(_RATIOS)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(subsets) + 2), 4.0), constrained_layout=True)
    for j, (key, label) in enumerate(_RATIOS):
        values, low, high = [], [], []
        for sub in subsets:
            entry = sub[key]
            v = np.nan if entry["value"] is None else entry["value"]
            lo, hi = entry["interval"] or (None, None)
            values.append(v)
            low.append(0.0 if lo is None or v != v else max(v - lo, 0.0))
            high.append(0.0 if hi is None or v != v else max(hi - v, 0.0))
        ax.bar(x + (j - (len(_RATIOS) - 1) / 2) * width, values, width, yerr=[low, high], capsize=3,
               label=label, color=f"C{j}")
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(x, [_short_name(s) for s in subsets], fontsize=8)
    level = report["settings"]["confidence level"]
    ax.set_ylabel(f"data / assumed ({100 * level:g} % {report['settings']['interval']} intervals)")
    ax.legend(fontsize=8)
    ax.set_title("Desroziers, χ² and spread–skill ratios (> 1: too little variance assumed)", fontsize=10)
    return save_figure(fig, filename)


def plot_rank_histograms(report: dict[str, Any], filename: "str | Path") -> str | None:
    """Rank histograms (frequency × (N+1)) per subset; None if the archive has no ensemble."""
    subsets = [s for s in report["subsets"] if s.get("rank histogram")][:MAX_PANELS]
    if not subsets:
        return None
    plt = pyplot()
    rows, cols = _grid(len(subsets))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False, constrained_layout=True)
    for ax, sub in zip(axes.flat, subsets):
        rh = sub["rank histogram"]
        counts = np.asarray(rh["counts"], dtype=float)
        total = counts.sum()
        freq = counts * counts.size / total if total else counts
        ax.bar(np.arange(counts.size), freq, width=1.0, color="C0", edgecolor="white")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        p = rh["p-value"]
        title = _short_name(sub).replace("\n", ", ")
        ax.set_title(f"{title}\nflatness p-value {p:.3g}" if p is not None else title, fontsize=9)
        ax.set_xlabel("rank of y among the members + obs error")
    for ax in list(axes.flat)[len(subsets):]:
        ax.set_axis_off()
    return save_figure(fig, filename)


def plot_report(report: dict[str, Any], directory: "str | Path") -> list[str]:
    """``timeseries.png``, ``ratios.png`` and (ensembles) ``rank_histograms.png`` in ``directory``."""
    directory = Path(directory)
    out = [plot_time_series(report, directory / "timeseries.png"), plot_ratios(report, directory / "ratios.png")]
    ranks = plot_rank_histograms(report, directory / "rank_histograms.png")
    if ranks:
        out.append(ranks)
    return out
