"""Emulated EDA members on the two-layer QG model: an EDA of 4D-Vars, 10 real + 10 emulated.

Twin (perfect model): the QG channel 40 × 20, layers 4500/5500 m, baroclinic-instability
truth spun up 9 days; the streamfunction observed at ``--obs`` random points every 3 hours
with error 4e5 m²/s; 6-hour windows; an EDA of strong-constraint 4D-Vars (QgTLM, DRPCG,
``--ninner`` inner iterations, one outer loop), perturbed observations, no control member,
the tutorial's static balanced B (diffusion correlation, 3e6 m²/s, QG balance), in a hybrid
with the members' own covariance (``--beta``; 0 is the pure static EDA) — the ensemble B of
every member's 4D-Var is that of all 20 backgrounds, so emulated members feed the real ones.

Steps (serially):

1. initial ensemble: the truth at the start plus 20 draws from B (``gen-ens-pert-b``);
2. training data: the full 20-member EDA for ``--train-cycles`` cycles (truth seed
   ``--train-seed``), writing the member archive with the analyses;
3. training the generator on those pairs;
4. evaluation on ``--seeds`` held-out twins (other truth perturbation... other observation and
   perturbation seeds), ``--cycles`` cycles each: ``full 20``, ``10 real``, ``10 + 10 flow``,
   ``10 + 10 resample``, ``10 + 10 static B`` (draws from the static B scaled to the real
   analyses' variance); time-mean forecast (background) and analysis RMSE of the ensemble mean
   against the truth, spread, seconds per cycle of the whole ``cycle`` run.

Run::

    PYTHONPATH=.:plugins/qg/src python benchmarks/emulated_members_qg.py

Results: ``benchmarks/output/emulated_members_qg/results.json``; recorded in
``docs/emulated_members.rst``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyoops  # noqa: E402
from pyoops.util.datetime import DateTime, Duration  # noqa: E402
from qg_4dvar_memory import static_b  # noqa: E402
from emulated_members import (  # noqa: E402
    add_training_arguments,
    paired,
    timed_cycle,
    train_from_run,
    with_emulation,
)

OUT = Path(__file__).resolve().parent / "output" / "emulated_members_qg"
START = "2010-01-01T00:00:00Z"
GEOMETRY = {"nx": 40, "ny": 20, "depths": [4500.0, 5500.0]}
STATIC_B = static_b()
ROWS = ("full 20", "10 real", "10 + 10 flow", "10 + 10 resample", "10 + 10 static B")


def initial_ensemble(directory: Path, members: int, seed: int, spin_up: str = "P9D",
                     sigma: float | None = None) -> str:
    """The truth after ``spin_up`` plus ``members`` draws from the static B (with the streamfunction's standard
    deviation ``sigma`` if given); returns the %mem% file template."""
    directory.mkdir(parents=True, exist_ok=True)
    truth = str(directory / "truth.%date%.nc")
    at = str(DateTime(START) + Duration(spin_up))
    pyoops.run("forecast", {"model plugin": "qg", "geometry": GEOMETRY, "model": {"name": "QG", "tstep": "PT1H"},
                            "initial condition": _truth_init(), "forecast length": spin_up,
                            "output": {"filename": truth, "first": spin_up, "frequency": "P1D"}})
    template = str(directory / "ens.%mem%.nc")
    pyoops.run("gen-ens-pert-b", {"model plugin": "qg", "geometry": GEOMETRY,
                                  "background": {"date": at, "filename": truth.replace("%date%", at)},
                                  "background error": STATIC_B if sigma is None else with_sigma(sigma),
                                  "members": members, "seed": seed,
                                  "perturbed states": True, "output": {"filename": template}})
    return template


def with_stddev(stddev: dict[str, Any]) -> dict[str, Any]:
    """The static B with ``stddev`` (the StdDev block's section but its name) for the streamfunction's."""
    outer = [{"saber block name": "StdDev", **stddev} if b["saber block name"] == "StdDev" else b
             for b in STATIC_B["saber outer blocks"]]
    return {**STATIC_B, "saber outer blocks": outer}


def with_sigma(sigma: float) -> dict[str, Any]:
    """The static B with the streamfunction's standard deviation ``sigma`` (m^2/s)."""
    return with_stddev({"read": {"value": {"x": sigma}}})


def _truth_init() -> dict[str, Any]:
    return {"date": START, "analytic init": {"method": "baroclinic-instability", "bottom wind": 0.0,
                                             "top wind": 30.0, "perturbation": 1.0}}


def cycle_config(directory: Path, members: int, cycles: int, spin_up: int, seed: int, ensemble: str,
                 args: argparse.Namespace, emulated: dict[str, Any] | None = None,
                 archive: bool = False) -> dict[str, Any]:
    background_error: dict[str, Any] = STATIC_B
    method = "EDA"
    if args.beta > 0:
        method = "EDA-hybrid"
        static = {k: v for k, v in STATIC_B.items() if k != "covariance model"}
        ensemble_b = {"saber central block": {"saber block name": "Ensemble", "localization": {
            "saber central block": {"saber block name": "diffusion", "horizontal length scale": args.loc}}}}
        background_error = {"covariance model": "SABER", "saber central block": {
            "saber block name": "Hybrid", "components": [
                {"covariance": static, "weight": {"value": 1.0 - args.beta}},
                {"covariance": ensemble_b, "weight": {"value": args.beta}}]}}
    cfg: dict[str, Any] = {
        "model plugin": "qg", "geometry": GEOMETRY, "model": {"name": "QG", "tstep": "PT1H"},
        "truth": {"initial condition": _truth_init(), "spin-up": "P9D"},
        "observations": {"name": "streamfunction", "simulated variables": ["x"], "obs frequency": "PT3H",
                         "obs density": args.obs, "obs error": 4.0e5, "locations": "random", "locations seed": 1,
                         "seed": 1000 + seed},
        "cycling": {"method": method, "members": members, "cycles": cycles, "window length": "PT6H",
                    "spin-up cycles": spin_up, "seed": 2000 + seed, "checkpoint every": 50,
                    "initial ensemble": {"filename": ensemble}},
        "eda": {"control member": False, "inflation": {"mult": args.inflation}},
        "cost function": {"cost type": "4D-Var", "linear model": {"name": "QgTLM", "tstep": "PT1H"},
                          "background error": background_error},
        "variational": {"minimizer": {"algorithm": "DRPCG"},
                        "iterations": [{"ninner": args.ninner, "gradient norm reduction": 1e-3}]},
        "output": {"directory": str(directory), "plots": False},
        "resume": False,
    }
    return with_emulation(cfg, emulated, archive)


def run_cycle(cfg: dict[str, Any]) -> dict[str, Any]:
    stats, seconds, error = timed_cycle(cfg)
    if stats is None:
        return {"forecast rmse": float("nan"), "error": error}
    means = stats["time means"]
    out = {"forecast rmse": means["forecast mean rmse"], "analysis rmse": means["analysis mean rmse"],
           "forecast spread": means["forecast spread"], "analysis spread": means["analysis spread"],
           "seconds per cycle": seconds / cfg["cycling"]["cycles"],
           "loop seconds per cycle": stats["seconds per cycle"]}
    shutil.rmtree(cfg["output"]["directory"], ignore_errors=True)
    return out


def train(args: argparse.Namespace, ensemble: str) -> dict[str, Any]:
    from pyoops.emulators.features import GridLayout
    from pyoops.registry import get_registry

    cfg = cycle_config(OUT / "training-run", 20, args.train_cycles, 0, args.train_seed, ensemble, args, archive=True)
    geometry = get_registry().model_plugin("qg").make_geometry(GEOMETRY, "geometry")
    layout = GridLayout.from_geometry(geometry, list(geometry.variables))
    return train_from_run(cfg, layout, args.train_skip, args, 3, 8, OUT / "generator.pt", geometry.describe(),
                          args.keep_training_data)


def row_config(name: str, ensemble: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    hybrid = {"real": 10, "emulated": 10}
    spec: dict[str, tuple[int, dict[str, Any] | None]] = {
        "full 20": (20, None), "10 real": (10, None),
        "10 + 10 flow": (20, {"generator": "flow", "model": str(OUT / "generator.pt"), **hybrid}),
        "10 + 10 resample": (20, {"generator": "resample", **hybrid}),
        "10 + 10 static B": (20, {"generator": "static B", "background error": STATIC_B, **hybrid}),
    }
    members, emulated = spec[name]
    return cycle_config(OUT / f"run-{os.getpid()}", members, args.cycles, args.spin_up, seed, ensemble, args,
                        emulated)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_training_arguments(ap, train_cycles=300)
    ap.add_argument("--train-skip", type=int, default=20)
    ap.add_argument("--obs", type=int, default=40, help="streamfunction observations per time")
    ap.add_argument("--ninner", type=int, default=10)
    ap.add_argument("--beta", type=float, default=0.5, help="ensemble weight of the hybrid B (0: static EDA)")
    ap.add_argument("--loc", type=float, default=2.0e6, help="localization length of the ensemble B [m]")
    ap.add_argument("--inflation", type=float, default=1.0, help="EDA posterior multiplicative inflation")
    ap.add_argument("--cycles", type=int, default=300)
    ap.add_argument("--spin-up", type=int, default=40)
    ap.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3])
    ap.add_argument("--rows", nargs="*", default=list(ROWS))
    ap.add_argument("--skip-training", action="store_true", help="reuse output/emulated_members_qg/generator.pt")
    ap.add_argument("--keep-training-data", action="store_true", help="keep the training run's member archive")
    ap.add_argument("--results", default="results.json", help="file name of the results in the output directory")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    template = OUT / "initial" / "ens.%mem%.nc"
    ensemble = str(template) if Path(str(template).replace("%mem%", "20")).exists() else \
        initial_ensemble(OUT / "initial", 20, 5)
    results: dict[str, Any] = {"args": vars(args), "load before": os.getloadavg(),
                               "python": platform.python_version(), "numpy": np.__version__}
    if not args.skip_training:
        results["training"] = train(args, ensemble)
        t = results["training"]
        print(f"training data {t['data seconds']:.1f} s ({args.train_cycles} cycles), training "
              f"{t['training seconds']:.1f} s, {t['epochs run']} epochs, validation loss "
              f"{t['best validation loss']:.2e} (covariance regression "
              f"{t['covariance regression validation loss']:.2e}), {t['parameters']} parameters", flush=True)
    per: dict[str, list[dict[str, Any]]] = {name: [] for name in args.rows}
    for seed in args.seeds:
        for name in args.rows:
            r = run_cycle(row_config(name, ensemble, args, seed))
            per[name].append(r)
            print(f"seed {seed} {name:18s}", {k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()},
                  flush=True)
    rows = {}
    for name in args.rows:
        rs = per[name]
        ref = per.get("10 real")
        rows[name] = {k: float(np.mean([r.get(k, float("nan")) for r in rs]))
                      for k in ("forecast rmse", "analysis rmse", "forecast spread", "seconds per cycle",
                                "loop seconds per cycle")}
        if ref is not None:
            rows[name]["forecast rmse diff vs 10 real"] = paired([r["forecast rmse"] - f["forecast rmse"]
                                                                  for r, f in zip(rs, ref)])
        rows[name]["per seed"] = rs
    if "full 20" in rows and np.isfinite(rows["full 20"]["loop seconds per cycle"]):
        for name in rows:
            full = rows["full 20"]["loop seconds per cycle"]
            rows[name]["cost vs full 20"] = rows[name]["loop seconds per cycle"] / full
    results["rows"] = rows
    results["load after"] = os.getloadavg()
    (OUT / args.results).write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nQG EDA of 4D-Vars, {args.cycles} cycles (spin-up {args.spin_up}), seeds {args.seeds}")
    print(f"{'row':18s} {'fc RMSE':>10s} {'Δ vs 10 real [95% CI]':>34s} {'an RMSE':>10s} {'fc spread':>10s} "
          f"{'s/cycle':>8s} {'cost/full':>9s}")
    for name in args.rows:
        r = rows[name]
        d = r.get("forecast rmse diff vs 10 real", (float("nan"),) * 3)
        print(f"{name:18s} {r['forecast rmse']:10.4g} {d[0]:+11.4g} [{d[1]:+.4g}, {d[2]:+.4g}] "
              f"{r['analysis rmse']:10.4g} {r['forecast spread']:10.4g} {r['seconds per cycle']:8.3f} "
              f"{r.get('cost vs full 20', float('nan')):9.3f}")


if __name__ == "__main__":
    main()
