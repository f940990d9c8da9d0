"""Emulated EDA members on Lorenz-96: 10 real + 10 emulated against the full 20 and the controls.

The testbed of the slides (ECMWF's hybrid ML-EDA): ETKF (pyoops ``LETKF`` without
localization), n = 40, F = 8, every variable observed every 0.05 time units with error 1,
prior inflation ``mult`` 1.04 (the same for every row), no localization; an unlocalized
ETKF needs about 14 members here.

Steps (one process, serially):

1. **training data**: the full 20-member ETKF cycled ``--train-cycles`` cycles (truth seed
   ``--train-seed``) writing the member archive with every member's analysis;
2. **training**: the stochastic-flow generator (:mod:`pyoops.emulators.member_training`) on
   those pairs (the last 20 % of the cycles for early stopping);
3. **evaluation** on ``--seeds`` held-out truths (other truth, observation and ensemble
   seeds), ``--cycles`` cycles each (the first ``--spin-up`` left out), of

   ``full 20``            the 20-member ETKF;
   ``10 real``            the 10-member ETKF;
   ``10 + 10 flow``       10 real + 10 emulated by the trained generator;
   ``10 + 10 linear``     10 real + 10 by the covariance regression (the generator untrained);
   ``10 + 10 resample``   10 real + 10 Gaussian draws with the real analyses' mean and covariance;
   ``10 + 10 static B``   10 real + 10 draws from the static B (σ = 0.5, Gaussian correlation
                          0.02) scaled to the real analyses' variance, around their mean;

and prints, per row, the time-mean analysis RMSE (mean over seeds, and the paired difference
to ``full 20`` with its 95 % t-interval over the seeds), the spread/RMSE ratio, the fair CRPS
and energy score of the analysis ensemble against the truth, the seconds per cycle of the
whole ``cycle`` run, and for the hybrids the χ² test that the truth's rank among the 10
emulated members has the same distribution as among the 10 real ones (every 10th cycle and
every 4th point, to thin the serial and spatial correlation the test assumes away).

Run::

    PYTHONPATH=.:plugins/lorenz96/src python benchmarks/emulated_members.py

Results: ``benchmarks/output/emulated_members/results.json`` and the plots next to it;
recorded in ``docs/emulated_members.rst``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyoops  # noqa: E402
from pyoops.emulators.scores import energy_score, ensemble_crps  # noqa: E402
from pyoops.ensemble import cycling  # noqa: E402

OUT = Path(__file__).resolve().parent / "output" / "emulated_members"
MULT = 1.04
STATIC_B = {"covariance model": "SABER",
            "saber central block": {"saber block name": "spectral correlation", "length scale": 0.02},
            "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": 0.5}}]}


def cycle_config(directory: Path, members: int, cycles: int, spin_up: int, seed: int,
                 emulated: dict[str, Any] | None = None, archive: bool = False) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "model plugin": "lorenz96", "geometry": {"resol": 40},
        "model": {"name": "Lorenz96", "tstep": "PT6H"},
        "truth": {"initial condition": {"date": "2010-01-01T00:00:00Z",
                                        "analytic init": {"method": "random", "seed": seed}},
                  "spin-up": "P50D"},
        "observations": {"obs frequency": "PT6H", "obs density": 40, "obs error": 1.0, "seed": 1000 + seed},
        "cycling": {"method": "LETKF", "members": members, "cycles": cycles, "window length": "PT6H",
                    "spin-up cycles": spin_up, "seed": 2000 + seed, "checkpoint every": 500},
        "local ensemble DA": {"inflation": {"mult": MULT}},
        "output": {"directory": str(directory), "plots": False},
        "resume": False,
    }
    return with_emulation(cfg, emulated, archive)


def with_emulation(cfg: dict[str, Any], emulated: dict[str, Any] | None, archive: bool) -> dict[str, Any]:
    """``cfg`` with its ``emulated members`` section (if any) and, with ``archive``, the member archive of
    backgrounds and analyses (the training data)."""
    if emulated is not None:
        cfg["emulated members"] = emulated
    if archive:
        cfg["output"].update({"member archive": True, "member archive analyses": True})
    return cfg


class Recorder:
    """Keeps the truth and the analysis ensemble of every cycle of a run (wraps two CycleExperiment methods)."""

    def __init__(self) -> None:
        self.truth: list[np.ndarray] = []
        self.analyses: list[np.ndarray] = []
        self._letkf = cycling.CycleExperiment._cycle_letkf
        self._emulate = cycling.CycleExperiment._emulate

    def __enter__(self) -> "Recorder":
        recorder = self

        def cycle_letkf(experiment: Any, k: int, twin: Any, t_a: Any, state: Any, executor: Any) -> Any:
            recorder.truth.append(np.array(t_a["x"]))
            return recorder._letkf(experiment, k, twin, t_a, state, executor)

        def emulate(experiment: Any, k: int, backgrounds: Any, analyses: Any) -> Any:
            out = recorder._emulate(experiment, k, backgrounds, analyses)
            recorder.analyses.append(np.array(out["x"]))
            return out

        cycling.CycleExperiment._cycle_letkf = cycle_letkf
        cycling.CycleExperiment._emulate = emulate
        return self

    def __exit__(self, *exc: Any) -> None:
        cycling.CycleExperiment._cycle_letkf = self._letkf
        cycling.CycleExperiment._emulate = self._emulate


def timed_cycle(cfg: dict[str, Any]) -> tuple[dict[str, Any] | None, float, str | None]:
    """Run ``cycle`` for ``cfg`` in a fresh output directory: its ``statistics.json`` and the wall seconds of the
    whole run, or None and the error of a run that stopped (a diverged filter is a result, not a crash of the
    benchmark)."""
    directory = Path(cfg["output"]["directory"])
    if directory.exists():
        shutil.rmtree(directory)
    started = time.perf_counter()
    try:
        pyoops.run("cycle", cfg)
    except Exception as exc:
        return None, time.perf_counter() - started, str(exc)[:300]
    return json.loads((directory / "statistics.json").read_text()), time.perf_counter() - started, None


def run_cycle(cfg: dict[str, Any], spin_up: int, real: int | None) -> dict[str, Any]:
    directory = Path(cfg["output"]["directory"])
    with Recorder() as rec:
        stats, seconds, error = timed_cycle(cfg)
    if stats is None:
        return {"rmse": float("nan"), "error": error}
    means = stats["time means"]
    truth = np.array(rec.truth[spin_up:])
    ens = np.array(rec.analyses[spin_up:])                 # (cycles, N, 40)
    out = {"rmse": means["analysis mean rmse"], "spread": means["analysis spread"],
           "ratio": means["analysis spread"] / means["analysis mean rmse"],
           "crps": float(np.mean(ensemble_crps(np.moveaxis(ens, 1, 0), truth))),
           "energy score": float(np.mean([energy_score(e, t) for e, t in zip(ens, truth)])),
           "seconds per cycle": seconds / cfg["cycling"]["cycles"]}
    if real is not None and np.isfinite(out["rmse"]):
        thin = (slice(None, None, 10), slice(None), slice(None, None, 4))
        ranks = {}
        for name, part in (("real", ens[:, :real]), ("emulated", ens[:, real:])):
            ranks[name] = np.bincount((part[thin[0]][:, :, thin[2]] < truth[thin[0]][:, None, thin[2]])
                                      .sum(axis=1).ravel(), minlength=part.shape[1] + 1)
        from scipy.stats import chi2_contingency

        table = np.array([ranks["real"], ranks["emulated"]])
        keep = table.sum(axis=0) > 0
        chi2, p, dof, _ = chi2_contingency(table[:, keep])
        out["ranks"] = {k: v.tolist() for k, v in ranks.items()}
        out["rank chi2"] = {"chi2": float(chi2), "dof": int(dof), "p": float(p)}
    out["all ranks"] = np.bincount((ens < truth[:, None]).sum(axis=1).ravel(), minlength=ens.shape[1] + 1).tolist()
    shutil.rmtree(directory, ignore_errors=True)
    return out


def add_training_arguments(ap: argparse.ArgumentParser, train_cycles: int) -> None:
    """The options of the full run that makes the training data and of the generator (:func:`train_from_run`)."""
    ap.add_argument("--train-cycles", type=int, default=train_cycles, help="cycles of the full system")
    ap.add_argument("--train-seed", type=int, default=101, help="truth seed of the training twin, training seed")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--sigma", type=float, default=0.3, help="bridge noise, in units of the background spread")
    ap.add_argument("--steps", type=int, default=10, help="sampler steps")
    ap.add_argument("--baseline", default="covariance regression", choices=("covariance regression", "spread ratio"),
                    help="the non-learned endpoint the network corrects")
    ap.add_argument("--head", default="additive", choices=("additive", "linear gain"),
                    help="how the network corrects it (linear gain: spread ratio only)")


def train_from_run(cfg: dict[str, Any], layout: Any, skip: int, args: argparse.Namespace, kernel: int,
                   batch_size: int, output: Path, geometry: Any = None, keep: bool = False) -> dict[str, Any]:
    """Run the full system ``cfg`` (archiving its analyses), train the generator on its cycles after ``skip``
    (the last 20 % for early stopping), save it as ``output``; the timings and the training report.  With ``keep``
    the run's archive is kept, and a kept archive of a finished run is read instead of running it again."""
    directory = Path(cfg["output"]["directory"])
    started = time.perf_counter()
    if not (keep and (directory / "members.nc").exists() and (directory / "statistics.json").exists()):
        pyoops.run("cycle", cfg)
    data_seconds = time.perf_counter() - started
    report = fit_generator([directory / "members.nc"], layout, skip, args, kernel, batch_size, output, geometry)
    if not keep:
        shutil.rmtree(directory, ignore_errors=True)
    return {"data seconds": data_seconds, **report}


def fit_generator(archives: list[Path], layout: Any, skip: int, args: argparse.Namespace, kernel: int,
                  batch_size: int, output: Path, geometry: Any = None) -> dict[str, Any]:
    """Train the generator on the (background, analysis) pairs of the member ``archives``, each one's cycles after
    ``skip`` with its last 20 % kept for early stopping (held out in time in every run), and save it as ``output``;
    the training time and report."""
    from pyoops.emulators.member_training import MemberPairs, MemberTrainingOptions, fit_member_generator, member_pairs
    from pyoops.ensemble.member_archive import read_member_archive

    fitted: list[Any] = []
    held_out: list[Any] = []
    for name in archives:
        archive = read_member_archive(name)
        pairs = member_pairs({v: a[skip:] for v, a in archive.members.items()},
                             {v: a[skip:] for v, a in (archive.analyses or {}).items()}, layout)
        n = pairs.ncycles
        nval = max(1, n // 5)
        fitted.append(pairs.select(np.arange(n - nval)))
        held_out.append(pairs.select(np.arange(n - nval, n)))

    def joined(parts: list[Any]) -> Any:
        return MemberPairs(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("ub", "ua", "centre", "scale")))

    started = time.perf_counter()
    model, history = fit_member_generator(
        layout, 10, {"width": args.width, "depth": args.depth, "kernel": kernel,
                     "head": getattr(args, "head", "additive")}, args.sigma, args.steps,
        joined(fitted), joined(held_out),
        MemberTrainingOptions(epochs=args.epochs, batch_size=batch_size, patience=8, seed=args.train_seed, threads=1),
        geometry, False, getattr(args, "baseline", "covariance regression"))
    train_seconds = time.perf_counter() - started
    model.save(output)
    return {"training seconds": train_seconds, "parameters": model.parameters, "archives": [str(a) for a in archives],
            **{k: v for k, v in model.training.items() if k != "seconds"}, "history": history}


def train(args: argparse.Namespace) -> dict[str, Any]:
    from pyoops.emulators.features import GridLayout

    cfg = cycle_config(OUT / "training-run", 20, args.train_cycles, 200, args.train_seed, archive=True)
    layout = GridLayout(("x",), (40,), (0,), (True,), (1.0 / 40,))
    return train_from_run(cfg, layout, 200, args, 5, 32, OUT / "generator.pt")


def paired(diffs: list[float]) -> tuple[float, float, float]:
    from scipy.stats import t

    d = np.asarray(diffs, dtype=np.float64)
    if d.size < 2 or not np.all(np.isfinite(d)):
        return float(np.mean(d)), float("nan"), float("nan")
    half = float(t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


ROWS = ("full 20", "10 real", "10 + 10 flow", "10 + 10 linear", "10 + 10 resample", "10 + 10 static B")


def row_config(name: str, directory: Path, args: argparse.Namespace, seed: int) -> tuple[dict[str, Any], int | None]:
    hybrid = {"real": 10, "emulated": 10}
    spec: dict[str, tuple[int, dict[str, Any] | None]] = {
        "full 20": (20, None), "10 real": (10, None),
        "10 + 10 flow": (20, {"generator": "flow", "model": str(OUT / "generator.pt"), **hybrid}),
        "10 + 10 linear": (20, {"generator": "linear", **hybrid}),
        "10 + 10 resample": (20, {"generator": "resample", **hybrid}),
        "10 + 10 static B": (20, {"generator": "static B", "background error": STATIC_B, **hybrid}),
    }
    members, emulated = spec[name]
    return (cycle_config(directory, members, args.cycles, args.spin_up, seed, emulated),
            10 if emulated is not None else None)


def report(results: dict[str, Any]) -> None:
    rows = results["rows"]
    print(f"\nLorenz-96 ETKF n=40, mult {MULT}, {results['cycles']} cycles (spin-up {results['spin-up']}), "
          f"seeds {results['seeds']}")
    print(f"{'row':18s} {'RMSE':>7s} {'Δ vs full 20 [95% CI]':>26s} {'spread/RMSE':>11s} {'CRPS':>7s} "
          f"{'ES':>7s} {'s/cycle':>8s}  rank χ² p (per seed)")
    for name in ROWS:
        r = rows[name]
        ps = " ".join(f"{s['rank chi2']['p']:.2f}" for s in r["per seed"] if "rank chi2" in s)
        print(f"{name:18s} {r['rmse']:7.4f} {r['diff'][0]:+8.4f} [{r['diff'][1]:+.4f}, {r['diff'][2]:+.4f}] "
              f"{r['ratio']:11.3f} {r['crps']:7.4f} {r['energy score']:7.3f} {r['seconds per cycle']:8.5f}  {ps}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_training_arguments(ap, train_cycles=5200)
    ap.add_argument("--cycles", type=int, default=2200)
    ap.add_argument("--spin-up", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3, 4, 5])
    ap.add_argument("--rows", nargs="*", default=list(ROWS))
    ap.add_argument("--skip-training", action="store_true", help="reuse output/emulated_members/generator.pt")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"cycles": args.cycles, "spin-up": args.spin_up, "seeds": args.seeds,
                               "mult": MULT, "load before": os.getloadavg(), "python": platform.python_version(),
                               "numpy": np.__version__}
    if not args.skip_training:
        results["training"] = train(args)
        t = results["training"]
        print(f"training data {t['data seconds']:.1f} s ({args.train_cycles} cycles), training "
              f"{t['training seconds']:.1f} s, {t['epochs run']} epochs, validation loss "
              f"{t['best validation loss']:.2e} (baseline "
              f"{t['baseline validation loss']:.2e}), {t['parameters']} parameters", flush=True)
    elif (OUT / "results.json").exists():
        results["training"] = json.loads((OUT / "results.json").read_text()).get("training")
    per: dict[str, list[dict[str, Any]]] = {name: [] for name in args.rows}
    for seed in args.seeds:
        for name in args.rows:
            cfg, real = row_config(name, OUT / "run", args, seed)
            r = run_cycle(cfg, args.spin_up, real)
            per[name].append(r)
            print(f"seed {seed} {name:18s} rmse {r['rmse']:.4f}", {k: (round(v, 4) if isinstance(v, float) else v)
                                                                  for k, v in r.items() if k in ("ratio", "rank chi2")},
                  flush=True)
    rows = {}
    for name in args.rows:
        rs = per[name]
        full = per.get("full 20")
        diffs = [r["rmse"] - f["rmse"] for r, f in zip(rs, full)] if full else [float("nan")]
        rows[name] = {"rmse": float(np.mean([r["rmse"] for r in rs])), "diff": paired(diffs),
                      **{k: float(np.mean([r.get(k, float("nan")) for r in rs]))
                         for k in ("ratio", "crps", "energy score", "seconds per cycle")},
                      "per seed": rs}
    results["rows"] = rows
    results["load after"] = os.getloadavg()
    (OUT / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    if set(ROWS) <= set(rows):
        report(results)
        plot(results)


def plot(results: dict[str, Any]) -> None:
    from pyoops.util.figures import pyplot, save_figure

    plt = pyplot()
    rows = results["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    ax = axes[0]
    names = [n for n in ROWS if np.isfinite(rows[n]["rmse"])]
    for i, name in enumerate(names):
        per = [s["rmse"] for s in rows[name]["per seed"]]
        ax.scatter([i] * len(per), per, color="C0", s=12)
        ax.plot([i - 0.3, i + 0.3], [rows[name]["rmse"]] * 2, color="C3")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("time-mean analysis RMSE (per seed, mean)")
    ax.set_title("Lorenz-96 ETKF, 10 real + 10 emulated")
    ax = axes[1]
    for name, style in (("full 20", "k-"), ("10 + 10 flow", "C0-")):
        counts = np.sum([s["all ranks"] for s in rows[name]["per seed"]], axis=0)
        ax.plot(np.arange(counts.size), counts / counts.sum(), style, drawstyle="steps-mid", label=f"{name}, all 20")
    ranks = [s["ranks"] for s in rows["10 + 10 flow"]["per seed"] if "ranks" in s]
    for part, style in (("real", "C2--"), ("emulated", "C1--")):
        counts = np.sum([r[part] for r in ranks], axis=0)
        ax.plot(np.arange(counts.size) * 2, counts / counts.sum() / 2, style, drawstyle="steps-mid",
                label=f"flow: truth among the 10 {part} (x2)")
    ax.set_xlabel("rank of the truth")
    ax.set_ylabel("frequency")
    ax.legend(fontsize=8)
    ax.set_title("rank histograms")
    save_figure(fig, OUT / "emulated_members.png")


if __name__ == "__main__":
    main()
