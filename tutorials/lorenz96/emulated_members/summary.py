"""Time-mean analysis RMSE and spread/RMSE of the four runs (statistics.json of each output directory)."""

import json
from pathlib import Path

for name in ("full20", "real10", "hybrid", "resample"):
    means = json.loads((Path("out") / name / "statistics.json").read_text())["time means"]
    rmse, spread = means["analysis mean rmse"], means["analysis spread"]
    print(f"{name:9s} analysis RMSE {rmse:7.4f}   spread/RMSE {spread / rmse:5.3f}")
