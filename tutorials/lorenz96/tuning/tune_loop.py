"""Tune the hybrid weight and inflation of a cycled Lorenz-96 EDA-hybrid from its own innovations.

Each round: run ``hybrid.yaml`` with the current (beta, lambda) and its innovation archive, run
``pyoops tune`` (``tune.yaml``) on that archive, take the estimates, repeat.  In a cycled system
the estimates describe the run they come from (its background errors were made with the old
weights), so the loop is re-run until the estimates stop moving.  Prints a table and writes
``out/tune_loop.json``.

    python tune_loop.py [--rounds 8] [--cycles 400]
"""

import argparse
import copy
import json
from pathlib import Path

import yaml

import pyoops

HERE = Path(__file__).resolve().parent


def with_weights(config: dict, beta: float, inflation: float, directory: str, cycles: int) -> dict:
    cfg = copy.deepcopy(config)
    static, ensemble = cfg["cost function"]["background error"]["saber central block"]["components"]
    static["weight"]["value"] = inflation * (1.0 - beta)
    ensemble["weight"]["value"] = inflation * beta
    cfg["output"]["directory"] = directory
    cfg["cycling"]["cycles"] = cycles
    return cfg


def main(rounds: int = 8, cycles: int = 400, out: Path = HERE / "out", quiet: bool = False) -> list:
    base = yaml.safe_load((HERE / "hybrid.yaml").read_text())
    tune = yaml.safe_load((HERE / "tune.yaml").read_text())
    out.mkdir(parents=True, exist_ok=True)
    w_s, w_e = (c["weight"]["value"] for c in base["cost function"]["background error"]["saber central block"]
                ["components"])
    inflation = w_s + w_e
    beta = w_e / inflation
    rows = []
    for k in range(rounds):
        run = with_weights(base, beta, inflation, str(out / f"run{k}"), cycles)
        summary = pyoops.run("cycle", run)
        cfg = dict(tune, archives=[str(out / f"run{k}" / "innovations.nc")],
                   output={"json": {"filename": str(out / f"tune{k}.json")},
                           "yaml": {"filename": str(out / f"tuned{k}.yaml")}, "table": False})
        estimate = pyoops.run("tune", cfg)
        rows.append({"round": k, "beta": beta, "lambda": inflation, "analysis rmse": summary["mean analysis rmse"],
                     "tuned beta": estimate["beta"], "tuned lambda": estimate["inflation"]})
        if not quiet:
            print(f"round {k}: beta {beta:.3f} lambda {inflation:.3f} -> analysis RMSE "
                  f"{summary['mean analysis rmse']:.4f}; tune: beta {estimate['beta']:.3f}, "
                  f"lambda {estimate['inflation']:.3f}", flush=True)
        beta, inflation = estimate["beta"], estimate["inflation"]
    (out / "tune_loop.json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--cycles", type=int, default=400)
    args = parser.parse_args()
    main(args.rounds, args.cycles)
