"""Emulated EDA members on the two-layer QG model: an EDA of 4D-Vars, 10 real + 10 emulated.

Twin (perfect model): the QG channel 40 × 20, layers 4500/5500 m, baroclinic-instability
truth; the streamfunction observed at ``--obs`` random points every 3 hours with error
4e5 m²/s; 6-hour windows; an EDA of strong-constraint 4D-Vars (QgTLM, DRPCG, ``--ninner``
inner iterations, one outer loop), perturbed observations, no control member, a posterior
multiplicative inflation of all the members (``--inflation``, after the emulation), in a hybrid
(``--beta``; 0 is the pure static EDA) of the tutorial's static balanced B (diffusion
correlation, QG balance) with the streamfunction's sigma_b taken from all the members'
backgrounds every cycle (``--static-stddev members``; the tutorial's fixed 3e6 m²/s is about 15
times the errors of this EDA and makes its analyses follow each member's perturbed
observations) and the members' own covariance localized by a diffusion (``--loc``).  Every
member's B is that of all 20 backgrounds, so emulated members feed the real ones.

Steps (serially):

1. initial ensemble of the training run: the truth after 9 days plus 20 draws from the static B
   with sigma ``--initial-sigma``;
2. training data: the full 20-member EDA for ``--train-cycles`` cycles (observation seed from
   ``--train-seed``), writing the member archive with the analyses to ``training-run-<hash of the
   run's settings>`` (``--keep-training-data`` keeps it, and a later run with the same settings reads
   it instead of running it again);
3. training the generator on those pairs (``--variables``: the streamfunction only by default,
   q, u and v follow through the QG variable change; ``--baseline``);
3b. with ``--shadow-output FILE``, one round of training on the hybrid's own cycles: the flow row
   (generator ``--generator``) with ``shadow analyses`` over the training period (same truth,
   observations and initial ensemble, so no evaluated cycle is seen), its archive pairing the
   hybrid's backgrounds with every member's real analysis; a generator trained on the pairs of
   both runs is saved as ``FILE`` and used by the rows of the same run;
4. evaluation on ``--seeds`` twins (their own observation and perturbation seeds), ``--cycles``
   cycles each, started (``--start after training``) from the training run's last backgrounds,
   so that they are spun up and every evaluated cycle comes after the training period of the
   same truth: ``full 20``, ``10 real``, ``10 + 10 flow``, ``10 + 10 linear`` (covariance
   regression), ``10 + 10 spread ratio``, ``10 + 10 resample``, ``10 + 10 static B`` (draws from
   the static B scaled to the real analyses' variance); time-mean forecast (background) and
   analysis RMSE of the ensemble mean against the truth, spread, seconds per cycle of the whole
   ``cycle`` run and of its loop;
5. the cost (``--cost-cycles``, after the twins or alone with ``--seeds`` given no seed): each of
   ``--cost-rows`` run alone as its own ``pyoops cycle`` process, in turn (the order turned by one each round),
   ``--cost-repeats`` rounds.
   The twins' own timings come from runs that may share the cores (two processes at once, say);
   these do not.

Run::

    PYTHONPATH=.:plugins/qg/src python benchmarks/emulated_members_qg.py --keep-training-data

Cost alone (no twins; the generator of an earlier run)::

    PYTHONPATH=.:plugins/qg/src python benchmarks/emulated_members_qg.py --skip-training --seeds \
        --row-inflation "full 20=1.015" "10 real=1.01" "10 + 10 flow=1.015" --cost-cycles 30 --results cost.json

A larger ensemble weight (``--beta 0.8``; the training run, then each row and inflation as its own process, two
at a time, and the table of all of them)::

    PYTHONPATH=.:plugins/qg/src python benchmarks/emulated_members_qg.py --beta 0.8 --keep-training-data --seeds
    PYTHONPATH=.:plugins/qg/src python benchmarks/emulated_members_qg.py --beta 0.8 --skip-training --seeds 1 \
        --rows "10 real" --row-inflation "10 real=1.02" --results t_1_real1.02.json     # ... every row, twins 1-3
    PYTHONPATH=.:plugins/qg/src python benchmarks/emulated_members_qg.py --merge "t_*.json" --figure beta08.png

Results: ``benchmarks/output/emulated_members_qg/<--results>`` (``--merge`` prints the table of
several, e.g. seeds run by two processes); recorded in ``docs/emulated_members.rst``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from emulated_members import (  # noqa: E402
    add_training_arguments,
    fit_generator,
    paired,
    timed_cycle,
    train_from_run,
    with_emulation,
)
from qg_4dvar_memory import static_b  # noqa: E402

import pyoops  # noqa: E402
from pyoops.util.datetime import DateTime, Duration  # noqa: E402

OUT = Path(__file__).resolve().parent / "output" / "emulated_members_qg"
START = "2010-01-01T00:00:00Z"
GEOMETRY = {"nx": 40, "ny": 20, "depths": [4500.0, 5500.0]}
STATIC_B = static_b()
ROWS = ("full 20", "10 real", "10 + 10 flow", "10 + 10 linear", "10 + 10 spread ratio", "10 + 10 resample",
        "10 + 10 static B")


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


def training_directory(args: argparse.Namespace, ensemble: str) -> Path:
    """The training run's directory, named by a hash of its configuration: a kept archive is only read again by a
    run with the same settings (observations, B, inflation, cycles, seed, initial ensemble)."""
    import hashlib

    start = argparse.Namespace(**{**vars(args), "truth_spin_up": "P9D"})      # the training run's truth
    cfg = cycle_config(OUT / "training-run", 20, args.train_cycles, 0, args.train_seed, ensemble, start, archive=True)
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return OUT / f"training-run-{digest}"


def ensemble_after_training(training: Path) -> tuple[str, str]:
    """The backgrounds of the last cycle of the training run in ``training`` as an initial ensemble (written once, to
    ``training/initial``): the %mem% template and the truth's spin-up to their time.  Twins started there are spun
    up and held out in time (their cycles come after every training cycle of the same truth)."""
    from pyoops.ensemble.member_archive import read_member_archive
    from pyoops.fields.fieldset import FieldSet
    from pyoops.fields.netcdf import open_dataset
    from pyoops.registry import get_registry

    name = training / "members.nc"
    directory = training / "initial"
    template = str(directory / "ens.%mem%.nc")
    stamp = directory / "start.json"          # written last: the members are complete (the archive may be gone)
    if stamp.exists():
        return template, json.loads(stamp.read_text())["truth spin-up"]
    with open_dataset(str(name), "member archive") as ds:     # the times and size only (the archive is ~0.6 GB)
        seconds, members = int(ds.variables["time"][-1]), len(ds.dimensions["member"])
    at = DateTime("1970-01-01T00:00:00Z") + Duration(f"PT{seconds}S")
    archive = read_member_archive(name)
    plugin = get_registry().model_plugin("qg")
    geometry = plugin.make_geometry(GEOMETRY, "geometry")
    directory.mkdir(parents=True, exist_ok=True)
    for m in range(members):
        fields = FieldSet({v: a[-1, m] for v, a in archive.members.items()})
        plugin.state(geometry, fields, at).write(template.replace("%mem%", str(m + 1)))
    spin_up = str(at - DateTime(START))
    stamp.write_text(json.dumps({"truth spin-up": spin_up, "members": members}) + "\n")
    return template, spin_up


def with_stddev(stddev: dict[str, Any]) -> dict[str, Any]:
    """The static B with ``stddev`` (the StdDev block's section but its name) for the streamfunction's."""
    outer = [{"saber block name": "StdDev", **stddev} if b["saber block name"] == "StdDev" else b
             for b in STATIC_B["saber outer blocks"]]
    return {**STATIC_B, "saber outer blocks": outer}


def static_covariance(args: argparse.Namespace) -> dict[str, Any]:
    """The static B of the EDA: the tutorial's correlations with the streamfunction's sigma_b taken from all the
    members' backgrounds every cycle (``--static-stddev members``, the EDA's own) or fixed (a value in m^2/s)."""
    if args.static_stddev == "members":
        return with_stddev({"calibration": {}})
    return with_sigma(float(args.static_stddev))


def with_sigma(sigma: float) -> dict[str, Any]:
    """The static B with the streamfunction's standard deviation ``sigma`` (m^2/s)."""
    return with_stddev({"read": {"value": {"x": sigma}}})


def _truth_init() -> dict[str, Any]:
    return {"date": START, "analytic init": {"method": "baroclinic-instability", "bottom wind": 0.0,
                                             "top wind": 30.0, "perturbation": 1.0}}


def cycle_config(directory: Path, members: int, cycles: int, spin_up: int, seed: int, ensemble: str,
                 args: argparse.Namespace, emulated: dict[str, Any] | None = None,
                 archive: bool = False) -> dict[str, Any]:
    background_error = static_covariance(args)
    method = "EDA"
    if args.beta > 0:
        method = "EDA-hybrid"
        static = {k: v for k, v in background_error.items() if k != "covariance model"}
        ensemble_b = {"saber central block": {"saber block name": "Ensemble", "localization": {
            "saber central block": {"saber block name": "diffusion", "horizontal length scale": args.loc}}}}
        background_error = {"covariance model": "SABER", "saber central block": {
            "saber block name": "Hybrid", "components": [
                {"covariance": static, "weight": {"value": 1.0 - args.beta}},
                {"covariance": ensemble_b, "weight": {"value": args.beta}}]}}
    cfg: dict[str, Any] = {
        "model plugin": "qg", "geometry": GEOMETRY, "model": {"name": "QG", "tstep": "PT1H"},
        "truth": {"initial condition": _truth_init(), "spin-up": getattr(args, "truth_spin_up", "P9D")},
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


def train(args: argparse.Namespace, ensemble: str, training: Path) -> dict[str, Any]:
    """The training run from ``ensemble`` in ``training`` (:func:`training_directory`) and the generator trained on
    its cycles (``OUT/generator.pt``); the timings and the training report."""
    cfg = cycle_config(training, 20, args.train_cycles, 0, args.train_seed, ensemble, args, archive=True)
    geometry, layout = generator_grid(args)
    # The archive is kept until the twins' initial ensemble (its last backgrounds) is written.
    return train_from_run(cfg, layout, args.train_skip, args, 3, 8, OUT / "generator.pt", geometry.describe(), True)


def generator_grid(args: argparse.Namespace) -> tuple[Any, Any]:
    """The twin's QG geometry and the generator's layout of ``--variables`` on it."""
    from pyoops.emulators.features import GridLayout
    from pyoops.registry import get_registry

    geometry = get_registry().model_plugin("qg").make_geometry(GEOMETRY, "geometry")
    return geometry, GridLayout.from_geometry(geometry, args.variables)


def shadow_round(args: argparse.Namespace, ensemble: str, training: Path, inflation: float) -> dict[str, Any]:
    """One round of training on the hybrid's own cycles: the hybrid (``10 + 10 flow`` with the generator of
    ``--generator``, posterior inflation ``inflation``) with ``shadow analyses`` over the training run's period (the
    same truth, observations and initial ensemble ``ensemble``, so no cycle of the twins is seen), then a generator
    trained on the pairs of both runs (``--shadow-output``); the timings and the training report."""
    archive = training / "members.nc"
    if not archive.exists():
        raise SystemExit(f"--shadow-output needs the training run's archive {archive}: run the training with "
                         "--keep-training-data")
    run_args = argparse.Namespace(**{**vars(args), "inflation": inflation, "cycles": args.train_cycles, "spin_up": 0,
                                     "truth_spin_up": "P9D"})
    cfg = row_config("10 + 10 flow", ensemble, run_args, args.train_seed)
    cfg["emulated members"]["shadow analyses"] = True
    shadow = OUT / "shadow-run"
    cfg["output"].update({"directory": str(shadow), "member archive": True, "member archive analyses": True})
    started = time.perf_counter()
    if not (shadow / "statistics.json").exists():
        pyoops.run("cycle", cfg)
    data_seconds = time.perf_counter() - started
    geometry, layout = generator_grid(args)
    report = fit_generator([archive, shadow / "members.nc"], layout, args.train_skip, args, 3, 8,
                           OUT / args.shadow_output, geometry.describe())
    return {"data seconds": data_seconds, "generator": args.generator, "inflation": inflation, **report}


def row_config(name: str, ensemble: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    hybrid = {"real": 10, "emulated": 10}
    # The generators draw the streamfunction (the prognostic variable) and derive q, u, v from it.
    derive = {} if set(args.variables) == {"x", "q", "u", "v"} else {"variable change": {"variable change name": "QG"}}
    spec: dict[str, tuple[int, dict[str, Any] | None]] = {
        "full 20": (20, None), "10 real": (10, None),
        "10 + 10 flow": (20, {"generator": "flow", "model": str(OUT / getattr(args, "generator", "generator.pt")),
                              **hybrid, **derive}),
        "10 + 10 linear": (20, {"generator": "linear", "variables": args.variables, **hybrid, **derive}),
        "10 + 10 spread ratio": (20, {"generator": "linear", "baseline": "spread ratio", "variables": args.variables,
                                      **hybrid, **derive}),
        "10 + 10 resample": (20, {"generator": "resample", **hybrid}),
        "10 + 10 static B": (20, {"generator": "static B", "background error": STATIC_B, **hybrid}),
    }
    members, emulated = spec[name]
    return cycle_config(OUT / f"run-{os.getpid()}", members, args.cycles, args.spin_up, seed, ensemble, args,
                        emulated)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_training_arguments(ap, train_cycles=300)
    # The EDA's generator: linear in each member's deviation (the additive head on either baseline made the emulated
    # members stray from the real ones until the model stopped, in every twin; docs/emulated_members.rst, section 5).
    ap.set_defaults(sigma=0.1, baseline="spread ratio", head="linear gain")
    ap.add_argument("--train-skip", type=int, default=20)
    ap.add_argument("--obs", type=int, default=40, help="streamfunction observations per time")
    ap.add_argument("--ninner", type=int, default=10)
    ap.add_argument("--beta", type=float, default=0.5, help="ensemble weight of the hybrid B (0: static EDA)")
    ap.add_argument("--loc", type=float, default=2.0e6, help="localization length of the ensemble B [m]")
    # Without inflation the 10-member EDA's spread is half its error and any added members help it as inflation
    # would (docs/emulated_members.rst, section 5); 1.03 is the best of 1.0-1.06 for 10 real members.
    ap.add_argument("--inflation", type=float, default=1.03,
                    help="EDA posterior multiplicative inflation (every row, and the training run)")
    ap.add_argument("--row-inflation", nargs="*", default=[], metavar="ROW=VALUE",
                    help="the inflation of some rows instead of --inflation (e.g. 'full 20=1.015': a larger ensemble "
                         "keeps more spread and needs less)")
    ap.add_argument("--static-stddev", default="members",
                    help="sigma_b of the static B: 'members' (from all the members' backgrounds every cycle) or a "
                         "fixed value in m^2/s (the tutorial's 3e6)")
    ap.add_argument("--variables", nargs="+", default=["x"],
                    help="what the generators emulate (the others follow through the QG variable change)")
    ap.add_argument("--initial-sigma", type=float, default=4.0e5,
                    help="sigma of the static-B draws around the truth that start every run [m^2/s]")
    ap.add_argument("--start", choices=("after training", "draws"), default="after training",
                    help="where the evaluation twins start: from the training run's last backgrounds (spun up, the "
                         "cycles held out in time) or from the static-B draws of day 9 (as the training run)")
    ap.add_argument("--cycles", type=int, default=300)
    ap.add_argument("--spin-up", type=int, default=40)
    ap.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3])
    ap.add_argument("--rows", nargs="*", default=list(ROWS))
    ap.add_argument("--skip-training", action="store_true", help="reuse output/emulated_members_qg/generator.pt")
    ap.add_argument("--generator", default="generator.pt",
                    help="the flow row's generator, in the output directory (what training writes: generator.pt)")
    ap.add_argument("--shadow-output", metavar="FILE",
                    help="after the training, one round on the hybrid's own cycles (the flow row with shadow "
                         "analyses over the training period, with --generator and the flow row's inflation), and a "
                         "generator trained on both runs' pairs saved as FILE in the output directory (needs the "
                         "training run's archive: --keep-training-data); the rows of the same run then use FILE")
    ap.add_argument("--keep-training-data", action="store_true",
                    help="keep the training run's member archive (and read it, if kept, instead of running the "
                         "training run again)")
    ap.add_argument("--cost-cycles", type=int, default=0,
                    help="time --cost-rows alone over this many cycles of the first seed's twin (0: no timing)")
    ap.add_argument("--cost-repeats", type=int, default=3, help="rounds of the timing (every row once a round)")
    ap.add_argument("--cost-rows", nargs="*", default=["full 20", "10 real", "10 + 10 flow"])
    ap.add_argument("--results", default="results.json", help="file name of the results in the output directory")
    ap.add_argument("--merge", nargs="+",
                    help="only print the table of these results files (names or glob patterns in the output directory)")
    ap.add_argument("--figure", default="emulated_members_qg.png",
                    help="file name of --merge's figure in the output directory")
    args = ap.parse_args()
    row_inflation = {}
    for item in args.row_inflation:
        name, _, value = item.rpartition("=")
        try:
            row_inflation[name] = float(value)
        except ValueError:
            name = ""
        if name not in ROWS:
            ap.error(f"--row-inflation {item!r}: expected ROW=VALUE with ROW one of {', '.join(ROWS)} and VALUE a "
                     "number")
    if args.merge:
        matches = {pattern: sorted(OUT.glob(pattern)) for pattern in args.merge}
        missing = [pattern for pattern, paths in matches.items() if not paths]
        if missing:
            ap.error(f"--merge: no results file {', '.join(missing)} in {OUT}")
        merge([path.name for paths in matches.values() for path in paths], args.figure)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    initial = OUT / f"initial-{args.initial_sigma:g}"
    template = initial / "ens.%mem%.nc"
    ensemble = str(template) if Path(str(template).replace("%mem%", "20")).exists() else \
        initial_ensemble(initial, 20, 5, sigma=args.initial_sigma)
    training_ensemble = ensemble
    results: dict[str, Any] = {"args": vars(args), "load before": os.getloadavg(),
                               "python": platform.python_version(), "numpy": np.__version__}
    training = training_directory(args, training_ensemble)
    made_archive = not args.skip_training and not (training / "members.nc").exists()
    if not args.skip_training:
        results["training"] = train(args, training_ensemble, training)
        t = results["training"]
        print(f"training data {t['data seconds']:.1f} s ({args.train_cycles} cycles), training "
              f"{t['training seconds']:.1f} s, {t['epochs run']} epochs, validation loss "
              f"{t['best validation loss']:.2e} (baseline "
              f"{t['baseline validation loss']:.2e}), {t['parameters']} parameters", flush=True)
    if args.shadow_output:
        results["shadow round"] = shadow_round(args, training_ensemble, training,
                                               row_inflation.get("10 + 10 flow", args.inflation))
        t = results["shadow round"]
        args.generator = args.shadow_output          # the rows below use the generator of the shadow round
        print(f"shadow run {t['data seconds']:.1f} s, training {t['training seconds']:.1f} s, {t['epochs run']} "
              f"epochs, validation loss {t['best validation loss']:.2e} (baseline {t['baseline validation loss']:.2e})",
              flush=True)
    if args.start == "after training":
        ensemble, args.truth_spin_up = ensemble_after_training(training)
    if made_archive and not args.keep_training_data:       # an archive an earlier run kept stays
        for name in ("members.nc", "members.nc.log", "checkpoint.npz"):
            (training / name).unlink(missing_ok=True)
    runs = []
    for seed in args.seeds:
        for name in args.rows:
            inflation = row_inflation.get(name, args.inflation)
            run_args = argparse.Namespace(**{**vars(args), "inflation": inflation})
            r = {"row": name, "seed": seed, "inflation": inflation,
                 **run_cycle(row_config(name, ensemble, run_args, seed))}
            runs.append(r)
            print(f"seed {seed} {name:18s}", {k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()
                                              if k not in ("row", "seed")}, flush=True)
    results["runs"] = runs
    if args.cost_cycles > 0:
        results["cost"] = cost(args, ensemble, row_inflation)
    results["load after"] = os.getloadavg()
    if runs:
        results["rows"] = summarise(runs)
    (OUT / args.results).write_text(json.dumps(results, indent=1) + "\n")
    if runs:
        report(results["rows"], args.cycles, args.spin_up)
    if "cost" in results:
        report_cost(results["cost"])


def cost(args: argparse.Namespace, ensemble: str, row_inflation: dict[str, float]) -> dict[str, Any]:
    """Cost per cycle of each of ``--cost-rows``: each run as its own ``pyoops cycle`` process (what a user runs:
    Python's start-up, the imports, the set-up and the cycles), alone, on the first seed's twin for
    ``--cost-cycles`` cycles, every row once a round for ``--cost-repeats`` rounds, the order of the rows turned by
    one each round (so a drift of the machine's speed over minutes falls on every row and every position alike).
    Per run: the wall and CPU (user + system, every thread of the process) seconds of the whole process, and the wall
    seconds of the cycling loop (``statistics.json``), each per cycle.  Per row: the medians over the rounds, its
    ratio to ``full 20`` in the same round (median, lowest and highest over the rounds) and the ratio of its seconds
    summed over all rounds to those of ``full 20`` (drift averaged over the whole timing)."""
    import resource

    seed = args.seeds[0] if args.seeds else 1
    cycles = int(args.cost_cycles)
    runs: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    names = list(args.cost_rows)
    for repeat in range(int(args.cost_repeats)):
        turn = repeat % len(names)
        for name in names[turn:] + names[:turn]:
            inflation = row_inflation.get(name, args.inflation)
            run_args = argparse.Namespace(**{**vars(args), "inflation": inflation, "cycles": cycles,
                                             "spin_up": min(args.spin_up, cycles // 2)})
            cfg = row_config(name, ensemble, run_args, seed)
            directory = Path(cfg["output"]["directory"])
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            config = directory / "cycle.yaml"
            config.write_text(yaml.safe_dump(cfg, sort_keys=False))
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import sys; from pyoops.cli import main; sys.exit(main())",
                            "cycle", str(config), "--quiet"], check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            stats = json.loads((directory / "statistics.json").read_text())
            runs.append({"row": name, "round": repeat, "inflation": inflation, "wall seconds per cycle": wall / cycles,
                         "cpu seconds per cycle": cpu / cycles, "loop seconds per cycle": stats["seconds per cycle"]})
            print(f"cost round {repeat} {name:18s}", {k: round(v, 4) for k, v in runs[-1].items()
                                                     if k.endswith("per cycle")}, flush=True)
            shutil.rmtree(directory)
    return {"cycles": cycles, "seed": seed, "rounds": int(args.cost_repeats), "load before": load_before,
            "load after": os.getloadavg(), "cpu": platform.processor() or platform.machine(), "runs": runs,
            "rows": cost_rows(runs, list(args.cost_rows))}


def cost_rows(runs: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, Any]]:
    """Per row of ``names``: the medians over the rounds of its seconds per cycle (wall, CPU, loop) and, if ``full 20``
    was timed, its ratios to it: per round (median, lowest and highest) and of the seconds summed over the rounds."""
    keys = ("wall seconds per cycle", "cpu seconds per cycle", "loop seconds per cycle")
    full = {r["round"]: r for r in runs if r["row"] == "full 20"}
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        mine = [r for r in runs if r["row"] == name]
        rows[name] = {k: float(np.median([r[k] for r in mine])) for k in keys}
        if full:
            for k in keys:
                ratios = [r[k] / full[r["round"]][k] for r in mine]
                what = k.split()[0]
                rows[name].update({f"{what} vs full 20": float(np.median(ratios)),
                                   f"{what} vs full 20 range": [float(min(ratios)), float(max(ratios))],
                                   f"{what} vs full 20 of the sums": float(sum(r[k] for r in mine)
                                                                           / sum(f[k] for f in full.values()))})
    return rows


def report_cost(cost: dict[str, Any]) -> None:
    print(f"\nCost per cycle, each row alone as its own process, {cost['cycles']} cycles of twin {cost['seed']}, "
          f"medians of {cost['rounds']} rounds (load {cost['load before'][0]:.2f} before, {cost['load after'][0]:.2f} "
          "after); ratios to full 20: median of the rounds [lowest, highest] and of the sums over the rounds")
    print(f"{'row':22s} {'wall s':>8s} {'cpu s':>8s} {'loop s':>8s}   " + "   ".join(
        f"{what + '/full':>31s}" for what in ("wall", "cpu", "loop")))
    for name, r in cost["rows"].items():
        print(f"{name:22s} {r['wall seconds per cycle']:8.3f} {r['cpu seconds per cycle']:8.3f} "
              f"{r['loop seconds per cycle']:8.3f}   " + "   ".join(_ratio_text(r, w) for w in ("wall", "cpu", "loop")))


def _ratio_text(row: dict[str, Any], what: str) -> str:
    """``median [lowest, highest] sums ratio`` of one cost row's ``what`` (wall, cpu, loop) against full 20."""
    if f"{what} vs full 20" not in row:
        return f"{'-':>31s}"
    low, high = row[f"{what} vs full 20 range"]
    return f"{row[f'{what} vs full 20']:6.3f} [{low:.3f}, {high:.3f}] sums {row[f'{what} vs full 20 of the sums']:.3f}"


def row_labels(runs: list[dict[str, Any]]) -> list[str]:
    """Every run's row in the table: its row name, with its inflation where that row was run at several."""
    inflations: dict[str, set[float]] = {}
    for r in runs:
        inflations.setdefault(r["row"], set()).add(float(r.get("inflation", 1.0)))
    return [f"{r['row']} ×{float(r.get('inflation', 1.0)):g}" if len(inflations[r["row"]]) > 1 else r["row"]
            for r in runs]


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per row (and inflation, where a row was run at several), the means over its seeds and the paired difference
    of the forecast RMSE against ``10 real`` on the seeds both have (95 % t-interval over the seeds, absolute and
    relative) — against its best inflation where it was run at several (the lowest mean over the seeds run at every
    one), so that no row gains from an inflation the reference was not given; cost against ``full 20``."""
    runs = [{**r, "inflation": float(r.get("inflation", 1.0))} for r in runs]
    by_row: dict[str, dict[int, dict[str, Any]]] = {}
    for r, label in zip(runs, row_labels(runs)):
        by_row.setdefault(label, {})[int(r["seed"])] = r
    rows: dict[str, dict[str, Any]] = {}
    for name, per in by_row.items():
        rs = list(per.values())
        rows[name] = {k: float(np.mean([r.get(k, float("nan")) for r in rs]))
                      for k in ("forecast rmse", "analysis rmse", "forecast spread", "seconds per cycle",
                                "loop seconds per cycle")}
        rows[name].update(seeds=sorted(per), row=rs[0]["row"], inflation=rs[0]["inflation"])
    references = [n for n in rows if rows[n]["row"] == "10 real"]
    shared = set.intersection(*(set(by_row[n]) for n in references)) if references else set()
    reference = min(references, key=lambda n: np.mean([by_row[n][s]["forecast rmse"] for s in shared]) if shared
                    else rows[n]["forecast rmse"]) if references else None
    ref = by_row[reference] if reference else {}
    for name, per in by_row.items():
        common = sorted(set(per) & set(ref))
        if common and name != reference:
            diffs = [per[s]["forecast rmse"] - ref[s]["forecast rmse"] for s in common]
            rel = [100.0 * d / ref[s]["forecast rmse"] for d, s in zip(diffs, common)]
            rows[name]["reference"] = reference
            rows[name]["forecast rmse diff vs 10 real"] = paired(diffs)
            rows[name]["forecast rmse diff vs 10 real (%)"] = paired(rel)
            rows[name]["paired tests (%)"] = paired_tests(rel)
            rows[name]["paired seeds"] = common
    fulls = [rows[n]["loop seconds per cycle"] for n in rows if rows[n]["row"] == "full 20"]
    full = float(np.mean(fulls)) if fulls else float("nan")
    for name in rows:
        rows[name]["cost vs full 20"] = rows[name]["loop seconds per cycle"] / full
    return rows


def paired_tests(diffs: list[float]) -> dict[str, float]:
    """Two-sided p-values of the paired differences ``diffs`` (one per seed) against zero: Student's t (the
    t-interval's test) and Wilcoxon's signed rank (no normality assumed); and how many seeds are below zero."""
    from scipy.stats import ttest_1samp, wilcoxon

    d = np.asarray(diffs, dtype=np.float64)
    counts = {"below zero": int(np.sum(d < 0)), "seeds": int(d.size)}
    if d.size < 2 or not np.all(np.isfinite(d)) or not np.any(d):
        return {"t p": float("nan"), "wilcoxon p": float("nan"), **counts}
    return {"t p": float(ttest_1samp(d, 0.0).pvalue), "wilcoxon p": float(wilcoxon(d).pvalue), **counts}


def row_order(rows: dict[str, Any]) -> list[str]:
    """The rows of :data:`ROWS` present (each at its inflations, increasing), then any others (e.g. a generator
    variant renamed in a results file)."""
    known = sorted((n for n in rows if rows[n].get("row", n) in ROWS),
                   key=lambda n: (ROWS.index(rows[n].get("row", n)), rows[n].get("inflation", 1.0)))
    return known + [n for n in rows if n not in known]


def report(rows: dict[str, dict[str, Any]], cycles: int, spin_up: int) -> None:
    order = row_order(rows)
    print(f"\nQG EDA of 4D-Vars, {cycles} cycles (spin-up {spin_up})")
    print(f"{'row':28s} {'seeds':>7s} {'fc RMSE':>10s} {'Δ vs 10 real % [95% CI]':>26s} {'an RMSE':>10s} "
          f"{'fc spread':>10s} {'s/cycle':>8s} {'cost/full':>9s} {'t p':>7s} {'Wilc. p':>7s} {'better':>7s}")
    nan = float("nan")
    for name in order:
        r = rows[name]
        d = r.get("forecast rmse diff vs 10 real (%)", (nan,) * 3)
        tests = r.get("paired tests (%)", {"t p": nan, "wilcoxon p": nan, "below zero": 0, "seeds": 0})
        better = f"{tests['below zero']}/{tests['seeds']}" if tests["seeds"] else "-"
        print(f"{name:28s} {len(r['seeds']):7d} {r['forecast rmse']:10.4g} {d[0]:+8.2f} [{d[1]:+6.2f}, {d[2]:+6.2f}] "
              f"{r['analysis rmse']:10.4g} {r['forecast spread']:10.4g} {r['seconds per cycle']:8.3f} "
              f"{r['cost vs full 20']:9.3f} {tests['t p']:7.3f} {tests['wilcoxon p']:7.3f} {better:>7s}")


def merge(names: list[str], figure: str) -> None:
    """The table of the runs of several results files (``names`` in the output directory, e.g. seeds run by two
    processes), its plot (``figure`` there) and the merged results (``merged.json``)."""
    runs: list[dict[str, Any]] = []
    args: dict[str, Any] = {}
    for name in names:
        data = json.loads((OUT / name).read_text())
        runs += data["runs"]
        args = data["args"]
    rows = summarise(runs)
    report(rows, args["cycles"], args["spin_up"])
    (OUT / "merged.json").write_text(json.dumps({"files": names, "args": args, "runs": runs, "rows": rows},
                                                indent=1) + "\n")
    plot(runs, rows, figure)


def plot(runs: list[dict[str, Any]], rows: dict[str, dict[str, Any]], figure: str) -> None:
    """Forecast RMSE of every row, per seed (a line joins a seed's rows) and over the seeds; a run that stopped
    is drawn at the top."""
    from pyoops.util.figures import pyplot, save_figure

    plt = pyplot()
    names = row_order(rows)
    fig, ax = plt.subplots(figsize=(9, 4), constrained_layout=True)
    finite = [r["forecast rmse"] for r in runs if np.isfinite(r["forecast rmse"])]
    top = 1.15 * max(finite)
    labels = row_labels(runs)
    for seed in sorted({int(r["seed"]) for r in runs}):
        per = {label: r["forecast rmse"] for r, label in zip(runs, labels) if int(r["seed"]) == seed}
        xs = [i for i, n in enumerate(names) if n in per]
        ys = [per[names[i]] if np.isfinite(per[names[i]]) else top for i in xs]
        ax.plot(xs, ys, "o-", ms=4, lw=0.6, alpha=0.7, label=f"seed {seed}")
    for i, name in enumerate(names):
        if np.isfinite(rows[name]["forecast rmse"]):
            ax.plot([i - 0.3, i + 0.3], [rows[name]["forecast rmse"]] * 2, color="k")
    ax.axhline(top, color="0.6", lw=0.5, ls=":")
    ax.set_xticks(range(len(names)), names, rotation=25, ha="right")
    ax.set_ylabel("time-mean forecast RMSE of the mean [m²/s]")
    ax.set_title("QG EDA of 4D-Vars: 10 real + 10 emulated (dotted: the model stopped)")
    ax.legend(fontsize=7, ncol=1 + len({r["seed"] for r in runs}) // 7)
    save_figure(fig, OUT / figure)

if __name__ == "__main__":
    main()
