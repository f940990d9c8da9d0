"""Score the Lorenz-96 data-assimilation tutorials against the truth.

Reads the truth, background and analysis files that ``run.sh`` wrote in ``output/``
and prints the root-mean-square error (RMSE) against the truth of the background and
of each analysis:

* the 3-D window centred on 2010-01-02T00 (``3dvar.yaml``, ``3denvar.yaml``,
  ``hybrid.yaml``): one time;
* the 4-D window 2010-01-01T00 - 2010-01-02T00 (``4dvar.yaml`` followed by
  ``4dvar_forecast.yaml``, and ``4denvar.yaml``): every 6 hours.

It also draws ``output/analyses.png``: truth, background, observations and the three
3-D analyses at 2010-01-02T00, and their errors.  With ``--check`` it exits with
status 1 if an analysis is not closer to the truth than its background.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import netCDF4
import numpy as np

OUT = Path(__file__).resolve().parent / "output"
TIME_3D = "2010-01-02T00:00:00Z"
TIMES_4D = [f"2010-01-01T{h:02d}:00:00Z" for h in (0, 6, 12, 18)] + ["2010-01-02T00:00:00Z"]
METHODS_3D = {"3D-Var": "3dvar", "3D-EnVar": "3denvar", "Hybrid 3D-EnVar": "hybrid"}
METHODS_4D = {"4D-Var": "4dvar", "4D-EnVar": "4denvar"}


def read_x(path: Path) -> np.ndarray:
    with netCDF4.Dataset(path) as ds:
        return np.asarray(ds["x"][:], dtype=float)


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def scores() -> tuple[list[tuple[str, float, float]], list[tuple[str, list[float], list[float]]]]:
    truth = read_x(OUT / f"truth.{TIME_3D}.nc")
    background = read_x(OUT / f"background.{TIME_3D}.nc")
    table_3d = [(name, rmse(background, truth), rmse(read_x(OUT / f"an_{tag}.{TIME_3D}.nc"), truth))
                for name, tag in METHODS_3D.items()]
    truths = [read_x(OUT / f"truth.{t}.nc") for t in TIMES_4D]
    bg = [rmse(read_x(OUT / f"background.{t}.nc"), x) for t, x in zip(TIMES_4D, truths)]
    table_4d = [(name, bg, [rmse(read_x(OUT / f"an_{tag}.{t}.nc"), x) for t, x in zip(TIMES_4D, truths)])
                for name, tag in METHODS_4D.items()]
    return table_3d, table_4d


def plot(filename: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with netCDF4.Dataset(OUT / f"truth.{TIME_3D}.nc") as ds:
        position = np.asarray(ds["position"][:])
    truth = read_x(OUT / f"truth.{TIME_3D}.nc")
    background = read_x(OUT / f"background.{TIME_3D}.nc")
    with netCDF4.Dataset(OUT / "obs3d.nc") as ds:
        obs_x = np.asarray(ds["MetaData/x"][:])
        obs_y = np.asarray(ds["ObsValue/x"][:])
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, constrained_layout=True)
    ax0.plot(position, truth, "k-", lw=2, label="truth")
    ax0.plot(position, background, "0.5", ls="--", label=f"background ({rmse(background, truth):.3f})")
    ax0.plot(obs_x, obs_y, "o", color="C3", ms=3, label="observations")
    ax1.plot(position, background - truth, "0.5", ls="--", label="background")
    for k, (name, tag) in enumerate(METHODS_3D.items()):
        xa = read_x(OUT / f"an_{tag}.{TIME_3D}.nc")
        ax0.plot(position, xa, f"C{k}-", lw=1, label=f"{name} ({rmse(xa, truth):.3f})")
        ax1.plot(position, xa - truth, f"C{k}-", lw=1, label=name)
    ax1.axhline(0.0, color="k", lw=0.8)
    for ax in (ax0, ax1):  # room for the legend below the curves
        low, high = ax.get_ylim()
        ax.set_ylim(low - 0.3 * (high - low), high)
    ax0.set_ylabel("x")
    ax0.set_title(f"Lorenz-96 analyses at {TIME_3D} (RMSE against the truth in brackets)")
    ax0.legend(fontsize=8, ncol=3, loc="lower right")
    ax1.set_ylabel("error (minus truth)")
    ax1.set_xlabel("position on the circle")
    ax1.legend(fontsize=8, ncol=4, loc="lower right")
    fig.savefig(filename, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail unless every analysis beats its background")
    parser.add_argument("--no-plot", action="store_true", help="skip output/analyses.png")
    args = parser.parse_args()
    table_3d, table_4d = scores()
    print(f"RMSE against the truth, 3-D window centred on {TIME_3D}:")
    print(f"  {'method':<18}{'background':>11}{'analysis':>10}")
    for name, b, a in table_3d:
        print(f"  {name:<18}{b:11.3f}{a:10.3f}")
    hours = [f"{6 * k:d} h" for k in range(len(TIMES_4D))]
    print("RMSE against the truth, 4-D window from 2010-01-01T00 (hours into the window):")
    print(f"  {'method':<18}" + "".join(f"{h:>8}" for h in hours))
    print(f"  {'background':<18}" + "".join(f"{b:8.3f}" for b in table_4d[0][1]))
    for name, _, a in table_4d:
        print(f"  {name:<18}" + "".join(f"{v:8.3f}" for v in a))
    if not args.no_plot:
        plot(OUT / "analyses.png")
        print(f"wrote {OUT / 'analyses.png'}")
    if args.check:
        bad = [name for name, b, a in table_3d if not a < b]
        bad += [f"{name} at {h}" for name, b, a in table_4d for h, bv, av in zip(hours, b, a) if not av < bv]
        if bad:
            print(f"FAILED: analysis not better than the background for {', '.join(bad)}", file=sys.stderr)
            return 1
        print("every analysis is closer to the truth than its background")
    return 0


if __name__ == "__main__":
    sys.exit(main())
