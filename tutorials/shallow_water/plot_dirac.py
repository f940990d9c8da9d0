"""Plot the Dirac responses of dirac.yaml, dirac_dual.yaml and dirac_hybrid.yaml: the height part
(colours) and wind part (arrows) of B e_h, with the geostrophic residual ||f k x u + g grad h|| / ||g grad h||.

Reads output/dirac.nc, output/dirac_dual.nc, output/dirac_hybrid.nc and its ensemble component;
writes output/dirac.png."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import netCDF4
import numpy as np

out = Path(__file__).resolve().parent / "output"
F, G = 1.0e-4, 9.81


def read(path: Path) -> dict[str, np.ndarray]:
    with netCDF4.Dataset(path) as ds:
        return {v: np.asarray(ds[v][:]) for v in ("x", "y", "h", "u", "v")}


def residual(r: dict[str, np.ndarray]) -> float:
    """Relative geostrophic residual with centred differences on the periodic grid."""
    dx, dy = r["x"][1] - r["x"][0], r["y"][1] - r["y"][0]
    gx = G * (np.roll(r["h"], -1, 1) - np.roll(r["h"], 1, 1)) / (2 * dx)
    gy = G * (np.roll(r["h"], -1, 0) - np.roll(r["h"], 1, 0)) / (2 * dy)
    rx, ry = gx - F * r["v"], gy + F * r["u"]
    return float(np.sqrt(np.sum(rx ** 2 + ry ** 2) / np.sum(gx ** 2 + gy ** 2)))


panels = [("dirac.nc", "static balanced B (30x30)"),
          ("dirac_dual.nc", "static balanced B at 15x15, interpolated"),
          ("dirac_hybrid.nc", "hybrid B = 0.5 static + 0.5 ensemble"),
          ("dirac_hybrid.component_1.nc", "its ensemble component (localized)")]
fig, axes = plt.subplots(2, 2, figsize=(10.5, 9.4), constrained_layout=True)
for ax, (name, title) in zip(axes.ravel(), panels):
    r = read(out / name)
    km_x, km_y = r["x"] / 1e3, r["y"] / 1e3
    lim = np.abs(r["h"]).max()
    mesh = ax.pcolormesh(km_x, km_y, r["h"], cmap="RdBu_r", vmin=-lim, vmax=lim, shading="nearest")
    ax.quiver(km_x, km_y, r["u"], r["v"], color="k", scale=None, width=0.004)
    ax.set_aspect("equal")
    ax.set_xlabel("x (km)")
    ax.set_ylabel("y (km)")
    ax.set_title(f"{title}\ngeostrophic residual {residual(r):.3f}", fontsize=10)
    fig.colorbar(mesh, ax=ax, shrink=0.8, label="h part of B e_h (m²)")
fig.suptitle("B applied to a height impulse at the centre: height (colours) and wind (arrows)")
fig.savefig(out / "dirac.png", dpi=70)
for name, title in panels:
    print(f"{title}: geostrophic residual {residual(read(out / name)):.4f}")
print(f"wrote {out / 'dirac.png'}")
