"""Summary of the tutorial runs: what each run assumed, what one Desroziers pass estimates,
and what the errors really were (the truth is known in this twin).

Reads ``out/RUN/obs_diagnostics.json`` (``pyoops obs-diagnostics``) and ``out/RUN/statistics.nc``
(``pyoops cycle``) for every run that exists and prints one line per run:

* assumed sigma_o^2 and mean assumed diag(HBH^T);
* the Desroziers estimates E[(O-A)(O-B)] and E[(A-B)(O-B)] with their 95 % intervals;
* the actual background-error variance in observation space: with H = identity at every grid
  point, the time mean of (forecast RMSE)^2 over the cycles after the spin-up
  (the actual observation-error variance is 1 by construction);
* the time-mean analysis RMSE.
"""

import json
import sys
from pathlib import Path

import netCDF4
import numpy as np

RUNS = ["reference", "misspecified", "r2_only", "b_half_only"]


def main(base: Path) -> None:
    print(f"{'run':<13} {'assumed':>8} {'assumed':>8} {'Desroziers sigma_o^2':>22} {'Desroziers HBH^T':>22} "
          f"{'actual':>7} {'analysis':>8}")
    print(f"{'':<13} {'sigma_o^2':>8} {'HBH^T':>8} {'E[(O-A)(O-B)]':>22} {'E[(A-B)(O-B)]':>22} "
          f"{'HBH^T':>7} {'RMSE':>8}")
    for run in RUNS:
        report_file = base / "out" / run / "obs_diagnostics.json"
        if not report_file.exists():
            continue
        report = json.loads(report_file.read_text())
        whole = report["subsets"][0]
        with netCDF4.Dataset(base / "out" / run / "statistics.nc") as nc:
            skip = nc.dimensions["cycle"].size - whole["cycles"]       # the cycles obs-diagnostics skipped
            forecast = np.asarray(nc["forecast_rmse"][:])[skip:]
            analysis = np.asarray(nc["analysis_rmse"][:])[skip:]

        def est(name: str) -> str:
            s = whole[name]
            return f"{s['value']:.3f} [{s['interval'][0]:.3f}, {s['interval'][1]:.3f}]"

        print(f"{run:<13} {whole['assumed obs error variance']:>8.3f} {whole['assumed background error variance']:>8.3f} "
              f"{est('obs error variance'):>22} {est('background error variance'):>22} "
              f"{np.mean(forecast ** 2):>7.3f} {np.mean(analysis):>8.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("."))
