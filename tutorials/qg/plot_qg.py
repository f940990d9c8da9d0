"""Maps and scores of the QG tutorial: truth, background, analysis and increment of each method.

Reads the files run.sh wrote in output/ and writes, for 3D-Var, 4D-Var and the hybrid
4D-Ens-Var, ``output/maps_<method>.png``: the streamfunction of both layers at the middle of
the window (2010-01-11T06), truth, background, analysis (for 4D-Var the analysis forecast to
06:00) and analysis increment, with the wind observations of the window (in that layer) on the increment.
Prints the streamfunction RMSE against the truth and writes it to ``output/scores.json``;
``--check`` fails unless every analysis beats the background and 4D-Var beats 3D-Var.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import netCDF4
import numpy as np

out = Path(__file__).resolve().parent / "output"
MID = "2010-01-11T06:00:00Z"
METHODS = {"3D-Var": f"an_3dvar.{MID}.nc", "4D-Var": f"an_4dvar_fc.{MID}.nc",
           "hybrid 4D-Ens-Var": f"an_4denvar.{MID}.nc"}
TAGS = {"3D-Var": "3dvar", "4D-Var": "4dvar", "hybrid 4D-Ens-Var": "4denvar"}


def read(name: str) -> dict[str, np.ndarray]:
    with netCDF4.Dataset(out / name) as ds:
        return {k: np.array(ds[k][:], dtype=float) for k in ("x", "u", "v", "xc", "yc")}


def rmse(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(np.mean((a["x"] - b["x"]) ** 2)))


def wind_obs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Locations of the wind observations and their layer (nearest layer middle: 0 lower, 1 upper)."""
    with netCDF4.Dataset(out / "obs_wind.nc") as ds:
        z = np.array(ds["MetaData/z"][:])
        return np.array(ds["MetaData/x"][:]), np.array(ds["MetaData/y"][:]), (z > 4500.0).astype(int)


def maps(method: str, truth: dict, background: dict, analysis: dict) -> Path:
    x_km, y_km = truth["xc"] / 1e3, truth["yc"] / 1e3
    panels = [("truth", truth["x"]), ("background", background["x"]), ("analysis", analysis["x"]),
              ("increment (analysis - background)", analysis["x"] - background["x"])]
    fig, axes = plt.subplots(2, 4, figsize=(17, 6.2), constrained_layout=True, sharex=True, sharey=True)
    full = max(np.abs(p[1]).max() for p in panels[:3]) / 1e6
    inc = np.abs(panels[3][1]).max() / 1e6
    obs_x, obs_y, obs_layer = wind_obs()
    for layer, name in ((1, "upper layer"), (0, "lower layer")):
        row = axes[1 - layer]
        for ax, (title, field) in zip(row, panels):
            lim = inc if title.startswith("increment") else full
            mesh = ax.pcolormesh(x_km, y_km, field[layer] / 1e6, cmap="RdBu_r", vmin=-lim, vmax=lim,
                                 shading="nearest")
            ax.contour(x_km, y_km, field[layer] / 1e6, levels=12, colors="k", linewidths=0.4)
            if title.startswith("increment"):
                here = obs_layer == layer
                ax.plot(obs_x[here] / 1e3, obs_y[here] / 1e3, "k.", ms=3, alpha=0.7)
            ax.set_title(f"{title}, {name}", fontsize=9)
            fig.colorbar(mesh, ax=ax, shrink=0.85, label="ψ [10⁶ m² s⁻¹]")
        row[0].set_ylabel("y [km]")
    for ax in axes[1]:
        ax.set_xlabel("x [km]")
    fig.suptitle(f"QG {method} at {MID}: streamfunction RMSE against the truth "
                 f"{rmse(background, truth) / 1e6:.2f} (background) → {rmse(analysis, truth) / 1e6:.2f} "
                 "(analysis) × 10⁶ m² s⁻¹")
    name = out / f"maps_{TAGS[method]}.png"
    fig.savefig(name, dpi=90)
    plt.close(fig)
    return name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail unless the analyses are ordered as expected")
    args = parser.parse_args()
    truth, background = read(f"truth.{MID}.nc"), read(f"background.{MID}.nc")
    scores = {"background": rmse(background, truth)}
    for method, name in METHODS.items():
        analysis = read(name)
        scores[method] = rmse(analysis, truth)
        print(f"wrote {maps(method, truth, background, analysis)}")
    print(f"streamfunction RMSE against the truth at {MID} [1e6 m^2/s]:")
    for key, value in scores.items():
        print(f"  {key:<20} {value / 1e6:6.3f}")
    (out / "scores.json").write_text(json.dumps(scores, indent=1) + "\n")
    if args.check:
        worse = [m for m in METHODS if not scores[m] < scores["background"]]
        if worse or not scores["4D-Var"] < scores["3D-Var"]:
            raise SystemExit(f"unexpected scores: {scores}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
