r"""Plots of a tuning (matplotlib Agg, PNG written through :func:`~pyoops.util.atomic.atomic_output`).

* :func:`likelihood_surface` — :math:`-\log L` over a grid of the first two free parameters
  around the estimate (:math:`\pm 3` standard deviations on the internal log/logit scale, the
  other free parameters at the estimate; numbers from :func:`surface_grid`), with the contours
  :math:`\Delta(-\log L) = \tfrac12\chi^2_{2}(0.68)` and :math:`\tfrac12\chi^2_{2}(0.95)` above the grid's
  minimum and the estimate marked;
* :func:`profile_plots` — per free parameter, :math:`-\log L` along that parameter with the
  others at the estimate (a *slice*), or re-minimised over the others (a true *profile*,
  ``kind="profile"``); numbers from :func:`likelihood_curves`; with the line
  :math:`\tfrac12\chi^2_{1}(\text{level})` above the estimate's value and the reported interval;
* :func:`learning_curve_plot` — estimates and intervals against the number of cycles fitted
  (:func:`~pyoops.diagnostics.tuning.crossval.learning_curve`);
* :func:`shrinkage_plot` — per region, the independent, hierarchical (shrunk) and global
  estimates with their intervals (:class:`~pyoops.diagnostics.tuning.pooling.PoolingResult`).

Every function returns the path of the file it wrote.  The curves are of the *likelihood*
:math:`-\log L` (no prior), also for a MAP estimate, whose mode then need not be the
curves' minimum; likewise for the Desroziers and moment estimates.  Axes are natural values,
logarithmic for the log-scale parameters.

The likelihood is computed as the estimate's was (``result.details["likelihood"]``): a
matrix-free estimate is plotted with the same matrix-free model, probes and seed (no
:math:`p\times p` matrix), so on its stochastic path the curves are of the estimated
:math:`-\log L` — smooth (fixed probes), but each value off by about its probe standard error,
and a profile minimises it with L-BFGS-B on the stochastic gradient.  Each point costs one
evaluation (a 25 × 25 surface: 625), so at large :math:`p` the plots can take longer than the
fit.  Desroziers and moment estimates use the dense model, as their fits did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.optimize
from scipy.stats import chi2

from pyoops.diagnostics.tuning.data import TuningData
from pyoops.diagnostics.tuning.estimators import (
    TuningResult,
    build_model,
    likelihood_settings,
)
from pyoops.diagnostics.tuning.parameters import (
    Parametrization,
    to_natural,
    transform_of,
)
from pyoops.diagnostics.tuning.uncertainty import symbol
from pyoops.util.figures import pyplot, save_figure

__all__ = ["LikelihoodCurve", "LikelihoodSurface", "learning_curve_plot", "likelihood_curves", "likelihood_surface",
           "profile_plots", "shrinkage_plot", "surface_grid"]

MAX_HALF_WIDTH = 4.0
"""Largest half-width of a grid on the internal scale (a not identifiable parameter's 3 sd would be huge)."""
MIN_HALF_WIDTH = 1e-3
"""Smallest half-width of a grid on the internal scale."""




def _model(data: TuningData, result: TuningResult) -> tuple[Any, Parametrization]:
    """The model of ``result``: its free parameters, the others fixed at their values, with the likelihood the
    estimate used (:func:`~pyoops.diagnostics.tuning.estimators.likelihood_settings`)."""
    fixed = {k: v for k, v in result.values.items() if k not in result.free}
    return build_model(data, result.free, fixed, form=result.form, **likelihood_settings(result))


def _half_width(result: TuningResult, name: str, width: float) -> float:
    sd = result.estimates[name].internal_sd
    if not math.isfinite(sd) or sd <= 0:
        return MAX_HALF_WIDTH
    return float(min(max(width * sd, MIN_HALF_WIDTH), MAX_HALF_WIDTH))


def _axis(result: TuningResult, name: str, index: int, bounds: Sequence[tuple[float, float]], width: float,
          points: int) -> np.ndarray:
    """Internal grid of ``points`` values centred on the estimate, clipped to the bounds."""
    center = float(result.internal[index])
    half = _half_width(result, name, width)
    lo, hi = bounds[index]
    return np.linspace(max(center - half, lo), min(center + half, hi), points)


def _natural(name: str, phi: np.ndarray) -> np.ndarray:
    return np.array([to_natural(name, float(x)) for x in np.ravel(phi)]).reshape(np.shape(phi))


def _nll(model: Any, phi: np.ndarray) -> float:
    ev = model.evaluate(phi, gradient=False)
    return float(ev.nll) if math.isfinite(ev.nll) else math.nan


def _scale(ax: Any, name: str, axis: str = "x") -> None:
    """A logarithmic axis (plain tick labels) for a log-scale parameter."""
    if transform_of(name) == "log":
        from matplotlib.ticker import FuncFormatter

        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        fmt = FuncFormatter(lambda v, _: f"{v:.3g}")
        target = ax.xaxis if axis == "x" else ax.yaxis
        target.set_major_formatter(fmt)
        target.set_minor_formatter(fmt)


@dataclass(frozen=True)
class LikelihoodSurface:
    r""":math:`-\log L` on a grid: ``nll[i, j]`` at internal ``(x[j], y[i])`` of ``names``; ``center`` the
    estimate's internal values, ``nll_hat`` :math:`-\log L` there."""

    names: tuple[str, str]
    x: np.ndarray
    y: np.ndarray
    nll: np.ndarray
    center: tuple[float, float]
    nll_hat: float

    def argmin(self) -> tuple[int, int]:
        """Grid indices ``(i, j)`` (``y``, ``x``) of the smallest finite value."""
        i, j = np.unravel_index(np.nanargmin(self.nll), self.nll.shape)
        return int(i), int(j)

    def center_index(self) -> tuple[int, int]:
        """Grid indices ``(i, j)`` nearest the estimate."""
        return int(np.argmin(np.abs(self.y - self.center[1]))), int(np.argmin(np.abs(self.x - self.center[0])))


def surface_grid(data: TuningData, result: TuningResult, *, points: int = 25, width: float = 3.0) -> LikelihoodSurface:
    r""":math:`-\log L` over ``points`` × ``points`` internal values of the first two free parameters,
    :math:`\hat\phi_i \pm` ``width`` :math:`s_i` (clipped to the bounds and to :data:`MAX_HALF_WIDTH`),
    the other free parameters at the estimate."""
    if len(result.free) < 2:
        raise ValueError(f"a likelihood surface needs two free parameters, got {list(result.free)}")
    model, par = _model(data, result)
    bounds = par.internal_bounds()
    phi_hat = result.internal
    x = _axis(result, result.free[0], 0, bounds, width, points)
    y = _axis(result, result.free[1], 1, bounds, width, points)
    nll = np.empty((y.size, x.size))
    phi = phi_hat.copy()
    for i, yi in enumerate(y):
        for j, xj in enumerate(x):
            phi[0], phi[1] = xj, yi
            nll[i, j] = _nll(model, phi)
    return LikelihoodSurface((result.free[0], result.free[1]), x, y, nll, (float(phi_hat[0]), float(phi_hat[1])),
                             _nll(model, phi_hat))


def likelihood_surface(data: TuningData, result: TuningResult, filename: str | Path, *, points: int = 25,
                       width: float = 3.0, surface: LikelihoodSurface | None = None) -> str:
    r"""Filled contours of :math:`\Delta(-\log L)` above the grid's minimum (:func:`surface_grid`, or
    ``surface`` if already computed), the 68 % and 95 % joint contours
    (:math:`\tfrac12\chi^2_2`), and the estimate."""
    s = surface if surface is not None else surface_grid(data, result, points=points, width=width)
    plt = pyplot()
    nx, ny = s.names
    xx, yy = np.meshgrid(_natural(nx, s.x), _natural(ny, s.y))
    delta = np.ma.masked_invalid(s.nll - np.nanmin(s.nll))
    fig, ax = plt.subplots(figsize=(6.0, 5.0), constrained_layout=True)
    top = float(min(delta.max(), 10.0 * chi2.ppf(0.95, 2) / 2)) if delta.count() else 1.0
    filled = ax.contourf(xx, yy, np.ma.minimum(delta, top), levels=np.linspace(0.0, max(top, 1e-9), 21),
                         cmap="viridis_r")
    fig.colorbar(filled, ax=ax, label=r"$\Delta(-\log L)$ above the grid minimum")
    levels = [chi2.ppf(q, 2) / 2 for q in (0.68, 0.95)]
    if delta.count() and delta.max() > levels[0]:
        lines = ax.contour(xx, yy, delta, levels=levels, colors=["w", "k"], linewidths=1.2)
        ax.clabel(lines, fmt={levels[0]: "68 %", levels[1]: "95 %"}, fontsize=8)
    ax.plot(to_natural(nx, s.center[0]), to_natural(ny, s.center[1]), "r*", ms=12,
            label=f"{result.method} estimate")
    i, j = s.argmin()
    ax.plot(xx[i, j], yy[i, j], "w+", ms=10, mew=1.5, label="grid minimum")
    _scale(ax, nx, "x")
    _scale(ax, ny, "y")
    ax.set_xlabel(nx)
    ax.set_ylabel(ny)
    others = [n for n in result.free[2:]]
    ax.set_title(r"$-\log L$ over " + f"({nx}, {ny})"
                 + (f", {', '.join(others)} at the estimate" if others else "")
                 + f"\n{result.nobs} observations, {result.ncycles} cycles", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return save_figure(fig, filename)


@dataclass(frozen=True)
class LikelihoodCurve:
    r""":math:`-\log L` along one parameter: internal values ``phi``, ``nll`` there, ``kind`` ``"slice"``
    (others at the estimate) or ``"profile"`` (others re-minimised); ``nll_hat`` at the estimate."""

    name: str
    kind: str
    phi: np.ndarray
    nll: np.ndarray
    center: float
    nll_hat: float


def likelihood_curves(data: TuningData, result: TuningResult, *, kind: str = "slice", points: int = 41,
                      width: float = 3.0) -> dict[str, LikelihoodCurve]:
    r"""Per free parameter, :math:`-\log L` at ``points`` internal values :math:`\hat\phi_i \pm` ``width``
    :math:`s_i`: a slice (the other free parameters at the estimate) or, ``kind="profile"``, the
    minimum over them (L-BFGS-B with the analytic gradient, warm-started outward from the estimate)."""
    if kind not in ("slice", "profile"):
        raise ValueError(f"kind must be 'slice' or 'profile', got {kind!r}")
    model, par = _model(data, result)
    bounds = par.internal_bounds()
    phi_hat = result.internal
    nll_hat = _nll(model, phi_hat)
    out = {}
    for k, name in enumerate(result.free):
        grid = _axis(result, name, k, bounds, width, points)
        values = np.full(grid.size, np.nan)
        if kind == "slice" or len(result.free) == 1:
            phi = phi_hat.copy()
            for m, x in enumerate(grid):
                phi[k] = x
                values[m] = _nll(model, phi)
        else:
            rest = [i for i in range(len(result.free)) if i != k]
            rest_bounds = [bounds[i] for i in rest]
            start = int(np.argmin(np.abs(grid - phi_hat[k])))
            for order in (range(start, grid.size), range(start - 1, -1, -1)):
                warm = phi_hat[rest].copy()
                for m in order:
                    phi = phi_hat.copy()
                    phi[k] = grid[m]

                    def objective(z: np.ndarray, phi: np.ndarray = phi, rest: list[int] = rest
                                  ) -> tuple[float, np.ndarray]:
                        phi[rest] = z
                        ev = model.evaluate(phi)
                        if not math.isfinite(ev.nll):
                            return 1e300, np.zeros(len(rest))
                        return ev.nll, ev.gradient[rest]

                    res = scipy.optimize.minimize(objective, warm, jac=True, method="L-BFGS-B", bounds=rest_bounds)
                    warm = res.x
                    values[m] = float(res.fun) if res.fun < 1e299 else math.nan
        out[name] = LikelihoodCurve(name, kind, grid, values, float(phi_hat[k]), nll_hat)
    return out


def profile_plots(data: TuningData, result: TuningResult, filename: str | Path, *, kind: str = "slice",
                  points: int = 41, width: float = 3.0,
                  curves: dict[str, LikelihoodCurve] | None = None) -> str:
    r"""One panel per free parameter: :math:`-\log L - (-\log L)(\hat\theta)` along it
    (:func:`likelihood_curves`, or ``curves`` if already computed), the line
    :math:`\tfrac12\chi^2_1(\text{level})`, the estimate and its reported interval (shaded)."""
    if not result.free:
        raise ValueError("no free parameter to plot")
    cs = curves if curves is not None else likelihood_curves(data, result, kind=kind, points=points, width=width)
    plt = pyplot()
    n = len(result.free)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.4 * rows), squeeze=False, constrained_layout=True)
    threshold = chi2.ppf(result.level, 1) / 2
    for ax, name in zip(axes.flat, result.free):
        c = cs[name]
        e = result.estimates[name]
        ax.plot(_natural(name, c.phi), c.nll - c.nll_hat, color="C0", lw=1.2)
        ax.axhline(threshold, color="k", ls="--", lw=0.8,
                   label=rf"$\frac{{1}}{{2}}\chi^2_1({result.level:g})$ = {threshold:.2f}")
        lo, hi = e.interval
        if math.isfinite(lo) and math.isfinite(hi):
            kind_label = "profile" if e.profile_interval is not None else "Wald"
            ax.axvspan(lo, hi, color="C1", alpha=0.2, label=f"{100 * result.level:g} % interval ({kind_label})")
        ax.axvline(e.value, color="C3", lw=1.0, label=f"estimate {e.value:.4g}")
        _scale(ax, name)
        ax.set_xlabel(f"{name} (grid uniform in {symbol(name)})", fontsize=8)
        ax.set_ylabel(r"$\Delta(-\log L)$")
        other = "others re-minimised" if c.kind == "profile" else "others at the estimate"
        ax.set_title(f"{c.kind} of −log L along {name} ({other})\n{e.verdict}", fontsize=9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    return save_figure(fig, filename)


def learning_curve_plot(points: Sequence[Any], filename: str | Path) -> str:
    """One panel per free parameter: the estimate and its interval against the number of cycles fitted
    (``points`` from :func:`~pyoops.diagnostics.tuning.crossval.learning_curve`), verdicts marked
    (filled: identified; open: weakly identified; grey ×: not identifiable)."""
    if not points:
        raise ValueError("no learning-curve point to plot")
    free = points[0].result.free
    plt = pyplot()
    n = max(len(free), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.4 * rows), squeeze=False, constrained_layout=True)
    x = np.array([p.ncycles for p in points], dtype=float)
    for ax, name in zip(axes.flat, free):
        est = [p.result.estimates[name] for p in points]
        v = np.array([e.value for e in est])
        lo = np.array([e.interval[0] for e in est])
        hi = np.array([e.interval[1] for e in est])
        ax.fill_between(x, lo, hi, color="C0", alpha=0.2, label=f"{100 * points[0].result.level:g} % interval")
        ax.plot(x, v, color="C0", lw=1.0)
        for xi, vi, e in zip(x, v, est):
            if e.verdict == "identified":
                ax.plot(xi, vi, "o", color="C0")
            elif e.verdict == "weakly identified":
                ax.plot(xi, vi, "o", mfc="none", color="C0")
            else:
                ax.plot(xi, vi, "x", color="0.5")
        ax.axhline(v[-1], color="k", ls=":", lw=0.8, label=f"last: {v[-1]:.4g}")
        ax.set_xscale("log")
        _scale(ax, name, "y")
        ax.set_xlabel("cycles fitted")
        ax.set_ylabel(name)
        ax.set_title(f"{name}: estimate against record length", fontsize=9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(free):]:
        ax.set_axis_off()
    fig.suptitle(f"learning curve ({points[0].result.method}, {points[-1].nobs} observations at "
                 f"{points[-1].ncycles} cycles)", fontsize=10)
    return save_figure(fig, filename)


def shrinkage_plot(pooled: Any, filename: str | Path) -> str:
    """One panel per pooled parameter: per region (or obs group), the independent and hierarchical
    estimates with their intervals, the global estimate and its interval as a band, and the pool's
    random-effects mean (a :class:`~pyoops.diagnostics.tuning.pooling.PoolingResult`)."""
    plt = pyplot()
    free = pooled.free
    n = len(free)
    labels = pooled.labels
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(5.0, 0.7 * len(labels) + 2.5) * cols, 3.6 * rows),
                             squeeze=False, constrained_layout=True)
    xr = np.arange(len(labels), dtype=float)
    for ax, name in zip(axes.flat, free):
        ind = [pooled.independent[lab].estimates[name] for lab in labels]
        v = np.array([e.value for e in ind])
        err = np.array([[max(e.value - e.interval[0], 0.0) for e in ind],
                        [max(e.interval[1] - e.value, 0.0) for e in ind]])
        err = np.where(np.isfinite(err), err, 0.0)
        ax.errorbar(xr - 0.12, v, yerr=err, fmt="o", color="C0", capsize=3, label="independent")
        h = np.array([pooled.hierarchical[lab][name] for lab in labels])
        hint = [pooled.hierarchical_intervals[lab][name] for lab in labels]
        herr = np.array([[max(hv - lo, 0.0) for hv, (lo, _) in zip(h, hint)],
                         [max(hi - hv, 0.0) for hv, (_, hi) in zip(h, hint)]])
        ax.errorbar(xr + 0.12, h, yerr=herr, fmt="s", color="C3", capsize=3, label="hierarchical")
        for x0, a, b in zip(xr, v, h):
            ax.annotate("", xy=(x0 + 0.1, b), xytext=(x0 - 0.1, a),
                        arrowprops={"arrowstyle": "->", "color": "0.6", "lw": 0.7})
        g = pooled.global_result.estimates[name]
        ax.axhline(g.value, color="C2", lw=1.0, label=f"global {g.value:.4g}")
        if math.isfinite(g.interval[0]) and math.isfinite(g.interval[1]):
            ax.axhspan(g.interval[0], g.interval[1], color="C2", alpha=0.15)
        ax.axhline(to_natural(name, pooled.mean[name]), color="k", ls=":", lw=0.8,
                   label=f"pool mean (τ = {math.sqrt(pooled.tau2[name]):.3g} in {symbol(name)})")
        _scale(ax, name, "y")
        ax.set_xticks(xr, labels, fontsize=8, rotation=30 if len(labels) > 6 else 0)
        ax.set_ylabel(name)
        ax.set_title(f"{name} per {pooled.by.replace('_', ' ')}: shrinkage toward the pool", fontsize=9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    return save_figure(fig, filename)

