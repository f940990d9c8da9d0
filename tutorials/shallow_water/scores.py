"""Score the shallow-water assimilations against the truth and plot them.

Prints the RMSE of h, u and v of the background and of each analysis against the
truth (at 03:00 for the 3-D analyses, at every hour for 4D-EnVar), and writes
output/twin.png: the truth at 03:00, the background error and the analysis errors
(height in colours, wind error as arrows), and the 4D-EnVar RMSE through the window.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import netCDF4
import numpy as np

out = Path(__file__).resolve().parent / "output"
TIMES = [f"2010-01-01T0{k}:00:00Z" for k in range(7)]
MID = TIMES[3]


def read(name: str) -> dict[str, np.ndarray]:
    with netCDF4.Dataset(out / name) as ds:
        return {v: np.asarray(ds[v][:]) for v in ("x", "y", "h", "u", "v")}


def rmse(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    return {v: float(np.sqrt(np.mean((a[v] - b[v]) ** 2))) for v in "huv"}


truth = {t: read(f"truth.{t}.nc") for t in TIMES}
background = {t: read(f"bg.{t}.nc") for t in TIMES}
analyses = {"3D-Var (static)": read(f"an_3dvar.{MID}.nc"),
            "3D-EnVar (15x15 inner loop)": read(f"an_3denvar.{MID}.nc"),
            "4D-EnVar (dual-resolution B)": read(f"an_4denvar.{MID}.nc")}

print(f"RMSE against the truth at {MID}:")
print(f"{'':32s} {'h (m)':>8s} {'u (m/s)':>8s} {'v (m/s)':>8s}")
rows = {"background": rmse(background[MID], truth[MID])}
rows.update({name: rmse(an, truth[MID]) for name, an in analyses.items()})
for name, r in rows.items():
    print(f"{name:32s} {r['h']:8.3f} {r['u']:8.3f} {r['v']:8.3f}")

envar = [rmse(read(f"an_4denvar.{t}.nc"), truth[t]) for t in TIMES]
bg = [rmse(background[t], truth[t]) for t in TIMES]
print("4D-EnVar through the window (background -> analysis):")
for t, b, a in zip(TIMES, bg, envar):
    print(f"  {t}  " + "  ".join(f"{v}: {b[v]:.3f} -> {a[v]:.3f}" for v in "huv"))

fig, axes = plt.subplots(2, 3, figsize=(14, 8.6), constrained_layout=True)
x, y = truth[MID]["x"] / 1e3, truth[MID]["y"] / 1e3


def panel(ax, fields, title, lim=None):
    lim = lim or np.abs(fields["h"]).max()
    mesh = ax.pcolormesh(x, y, fields["h"], cmap="RdBu_r", vmin=-lim, vmax=lim, shading="nearest")
    ax.quiver(x, y, fields["u"], fields["v"], width=0.003)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)
    return mesh


m = panel(axes[0, 0], truth[MID], f"truth at {MID}")
fig.colorbar(m, ax=axes[0, 0], shrink=0.8, label="h (m)")
error = {v: background[MID][v] - truth[MID][v] for v in "huv"}
lim = np.abs(error["h"]).max()
m = panel(axes[0, 1], error, f"background error (RMSE h {rows['background']['h']:.3f} m)", lim)
fig.colorbar(m, ax=axes[0, 1], shrink=0.8, label="h error (m)")
for ax, (name, an) in zip((axes[0, 2], axes[1, 0], axes[1, 1]), analyses.items()):
    err = {v: an[v] - truth[MID][v] for v in "huv"}
    m = panel(ax, err, f"{name} error (RMSE h {rows[name]['h']:.3f} m)", lim)
    fig.colorbar(m, ax=ax, shrink=0.8, label="h error (m)")
ax = axes[1, 2]
hours = np.arange(len(TIMES))
for v, c in zip("huv", ("C0", "C1", "C2")):
    ax.plot(hours, [b[v] for b in bg], "--", color=c, label=f"{v} background")
    ax.plot(hours, [a[v] for a in envar], "-o", color=c, ms=3, label=f"{v} 4D-EnVar")
ax.set_xlabel("hours since 2010-01-01T00")
ax.set_ylabel("RMSE (m, m/s)")
ax.set_title("4D-EnVar through the window")
ax.legend(fontsize=8, ncol=2)
fig.savefig(out / "twin.png", dpi=65)
print(f"wrote {out / 'twin.png'}")
