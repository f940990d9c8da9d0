"""Plot the Lorenz-96 twin experiment: truth Hovmöller, and truth, background and
observations at 2010-01-02T00.  Reads the files run.sh wrote; writes output/twin.png."""

from __future__ import annotations

import glob
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import netCDF4
import numpy as np

out = Path(__file__).resolve().parent / "output"


def read_state(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    with netCDF4.Dataset(path) as ds:
        return np.asarray(ds["position"][:]), np.asarray(ds["x"][:]), ds.date


truth_files = sorted(glob.glob(str(out / "truth.*.nc")))
times, fields = [], []
for name in truth_files:
    position, x, date = read_state(Path(name))
    times.append(date)
    fields.append(x)
hovmoller = np.array(fields)

position, truth, _ = read_state(out / "truth.2010-01-02T00:00:00Z.nc")
_, background, _ = read_state(out / "background.2010-01-02T00:00:00Z.nc")
with netCDF4.Dataset(out / "obs3d.nc") as ds:
    obs_x = np.asarray(ds["MetaData/x"][:])
    obs_y = np.asarray(ds["ObsValue/x"][:])
    obs_err = np.asarray(ds["ObsError/x"][:])

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
mesh = ax0.pcolormesh(position, np.arange(len(times)) * 6.0, hovmoller, cmap="RdBu_r", shading="nearest")
ax0.set_xlabel("position on the circle")
ax0.set_ylabel(f"hours since {times[0]}")
ax0.set_title("Truth run (Hovmöller)")
fig.colorbar(mesh, ax=ax0, label="x")

ax1.plot(position, truth, "k-", label="truth")
ax1.plot(position, background, "C0--", label="background (F = 8.5)")
ax1.errorbar(obs_x, obs_y, yerr=obs_err, fmt="o", color="C3", ms=3, label="observations ± σ")
rmse = float(np.sqrt(np.mean((background - truth) ** 2)))
ax1.set_title(f"2010-01-02T00:00:00Z — background RMSE {rmse:.3f}")
ax1.set_xlabel("position on the circle")
ax1.set_ylabel("x")
ax1.legend(loc="best")
fig.savefig(out / "twin.png", dpi=110)
print(f"wrote {out / 'twin.png'} (background RMSE against truth {rmse:.3f})")
