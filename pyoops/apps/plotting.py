"""Quick-look plots of fields on structured grids (matplotlib, written atomically as PNG)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pyoops.fields.fieldset import FieldSet
from pyoops.util.figures import pyplot, save_figure

__all__ = ["plot_fields"]


def plot_fields(geometry: Any, panels: Mapping[str, FieldSet], filename: str, title: str = "",
                marks: Sequence[int] = ()) -> None:
    """One row per operator, one column per variable (and level); 1-D fields as lines, 2-D as maps.

    ``marks`` are flat grid indices (Dirac positions) marked on 1-D plots.
    """
    plt = pyplot()

    first = next(iter(panels.values()))
    columns: list[tuple[str, tuple[int, ...]]] = []
    for var in first:
        shape = geometry.field_shape(var)
        levels = [()] if len(shape) <= 2 else [(k,) for k in range(shape[0])]
        columns += [(var, lev) for lev in levels]
    nrows, ncols = len(panels), len(columns)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False,
                             constrained_layout=True)
    coords = geometry.coordinates
    for r, (name, fields) in enumerate(panels.items()):
        for c, (var, lev) in enumerate(columns):
            ax = axes[r][c]
            if var not in fields:
                ax.set_axis_off()
                continue
            data = np.asarray(fields[var])[lev] if lev else np.asarray(fields[var])
            dims = geometry.field_dims(var)[len(lev):]
            label = f"{name}: {var}" + (f" level {lev[0]}" if lev else "")
            if data.ndim == 1:
                x = coords[dims[0]]
                ax.plot(x, data, "-", color="C0")
                for m in marks:
                    if m < x.size:
                        ax.axvline(x[m], color="0.6", lw=0.8, ls=":")
                ax.set_xlabel(dims[0])
            else:
                y, x = coords[dims[0]], coords[dims[1]]
                vmax = float(np.abs(data).max()) or 1.0
                mesh = ax.pcolormesh(x, y, data, cmap="RdBu_r", vmin=-vmax, vmax=vmax, shading="nearest")
                fig.colorbar(mesh, ax=ax, shrink=0.85)
                ax.set_xlabel(dims[1])
                ax.set_ylabel(dims[0])
                ax.set_aspect("equal", adjustable="box")
            ax.set_title(label, fontsize=9)
    if title:
        fig.suptitle(title)
    save_figure(fig, filename)
