"""Benchmark: emulating a 50-member EDA's standard deviation from 5 members on Lorenz-96 (issue 15).

Stages (``--stage``; ``all`` runs them in order, each reusing what the previous wrote in ``--directory``):

``data``
    Two Lorenz-96 EDAs (n = 40, F = 8; every point observed every PT6H with sigma_o = 1; 3D-Var with the static
    B = StdDev 0.6 x spectral correlation 0.02, DRPCG 20 iterations; perturbed observations; a control member),
    through ``pyoops.run("cycle", ...)`` with ``output: {member archive: true}``:

    * *training*: N = 50 members, 2050 cycles (truth seed 3, observation seed 5, EDA seed 1);
    * *test*: N = 500 members, 250 cycles, another truth, other observations and perturbations (seeds 11, 13, 17).

    With a static B the members of an EDA never interact: member k's background depends only on its own initial
    perturbation and observation perturbations (streams per member), so the first 50 members of the 500-member
    EDA are exactly a 50-member EDA, and members 51..500 are a pool of further exchangeable members of the same
    cycles, given the truth and observations.
``train``
    ``pyoops train-emulator`` on the training archive (first 50 cycles skipped, the last 20 % for early
    stopping), M = 5, predictors log sigma_5, the 5-member mean and its gradient; one PyTorch thread (on the shared
    2-core machine two threads were 10 times slower per epoch: the tensors are small and the cores busy); timed.
``evaluate``
    On the test cycles 50..249 (held out: another run), per point, against y = log sigma_50 (members 1..50):

    (a) naive: log sigma_5 (members 1..5) plus the mean offset of log sigma_50 - log sigma_5 in training;
    (b) climatology: the training mean of log sigma_50 at each point;
    (c) the emulator: median mu, predictive N(mu, s^2) of log sigma_50;
    (d) the bound: E[log sigma_50 | members 1..5] by Monte Carlo, 200 completions of members 1..5 by 45 members
        drawn without replacement from the pool 51..500 (seed 0); its 200 values are the ideal predictive sample;

    RMSE and CRPS (point estimates: absolute error; emulator: Gaussian CRPS; bound: fair CRPS of the sample),
    coverage of the central 90 % intervals, PIT histogram, the oracle floor (noise of log sigma_50 itself:
    Gaussian theory, and against log sigma_500 of all 500 members), and the fraction of the naive-to-bound RMSE
    gap the emulator closes with a 95 % moving-block bootstrap interval over cycles (blocks of
    round(C^(1/3)) cycles, 2000 replicates, seed 0).  Inference cost: ``Emulator.predict`` on one cycle (median of
    200 calls) against one member's 3D-Var analysis (``analyse_members`` of one member, median of 20).
``cycling``
    Impact in cycling, 600 cycles (first 100 spin-up) of the held-out twin (the test run's truth, observations
    and perturbation seeds 11, 13, 17, never seen in training): EDA + 3D-Var whose static B takes its sigma_b
    from the EDA every cycle, (1) 50-es: StdDev calibrated on 50 members, (2) 5-es: on 5 members,
    (3) ML-es: StdDev emulated from 5 members.  Control's 6-h forecast (background) RMSE against the truth; ratio
    of mean squared errors to 50-es with 95 % block-bootstrap intervals.

Prints every number, writes ``results.json`` and the plots to ``--directory``.  Usage::

    python benchmarks/eda_emulator.py --stage all --directory /tmp/eda_emulator
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import pyoops

TRAIN = {"cycles": 2050, "members": 50, "seeds": (3, 5, 1)}
TEST = {"cycles": 250, "members": 500, "seeds": (11, 13, 17)}
SKIP, M, N, DRAWS = 50, 5, 50, 200


def static_b(stddev: dict[str, Any]) -> dict[str, Any]:
    return {"covariance model": "SABER",
            "saber central block": {"saber block name": "spectral correlation", "length scale": 0.02},
            "saber outer blocks": [{"saber block name": "StdDev", **stddev}]}


def cycle_config(directory: Path, cycles: int, members: int, seeds: tuple[int, int, int],
                 stddev: dict[str, Any] | None = None, archive: bool = True, spin_up: int = SKIP) -> dict[str, Any]:
    truth_seed, obs_seed, eda_seed = seeds
    return {
        "model plugin": "lorenz96",
        "geometry": {"resol": 40},
        "model": {"name": "Lorenz96", "tstep": "PT6H"},
        "truth": {"initial condition": {"date": "2010-01-01T00:00:00Z",
                                        "analytic init": {"method": "random", "seed": truth_seed}},
                  "spin-up": "P20D"},
        "observations": {"obs frequency": "PT6H", "obs density": 40, "obs error": 1.0, "seed": obs_seed},
        "cycling": {"method": "EDA", "cycles": cycles, "window length": "PT6H", "spin-up cycles": spin_up,
                    "seed": eda_seed, "members": members, "checkpoint every": 50},
        "eda": {"seed": eda_seed},
        "cost function": {"background error": static_b(stddev or {"read": {"value": 0.6}})},
        "variational": {"minimizer": {"algorithm": "DRPCG"},
                        "iterations": [{"ninner": 20, "gradient norm reduction": 1e-6}]},
        "output": {"directory": str(directory), "plots": True, "member archive": archive},
    }


def stage_data(base: Path) -> dict[str, Any]:
    out = {}
    for name, spec in (("train", TRAIN), ("test", TEST)):
        t0 = time.perf_counter()
        summary = pyoops.run("cycle", cycle_config(base / name, spec["cycles"], spec["members"], spec["seeds"]))
        out[name] = {"seconds": time.perf_counter() - t0, **{k: v for k, v in summary.items() if k.startswith("mean")}}
        print(f"data {name}: {spec['members']} members x {spec['cycles']} cycles in {out[name]['seconds']:.0f} s; "
              f"mean forecast spread {summary.get('mean forecast spread', float('nan')):.3f}, "
              f"control forecast RMSE {summary['mean forecast rmse']:.3f}", flush=True)
    return out


def train_config(base: Path, threads: int = 1) -> dict[str, Any]:
    return {"model plugin": "lorenz96", "geometry": {"resol": 40},
            "training data": {"archives": [str(base / "train" / "members.nc")], "skip cycles": SKIP,
                              "validation fraction": 0.2},
            "emulator": {"members": M, "target members": N, "predictors": ["mean", "gradient"],
                         "network": {"width": 32, "depth": 3, "kernel": 5, "global context": True}},
            "training": {"loss": "gaussian nll", "epochs": 300, "batch size": 64, "learning rate": 3e-3,
                         "patience": 30, "seed": 1, "threads": threads},
            "output": {"model": str(base / "emulator" / "emulator.pt"), "directory": str(base / "emulator")}}


def stage_train(base: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    summary = pyoops.run("train-emulator", train_config(base))
    seconds = time.perf_counter() - t0
    print(f"train: {summary['parameters']} parameters, {summary['epochs']} epochs, {summary['training seconds']:.0f} s "
          f"of training ({seconds:.0f} s with reading), validation RMSE log sigma {summary['rmse emulator']:.4f} "
          f"(naive {summary['rmse naive']:.4f}), 90 % coverage {summary['coverage 90']:.3f}", flush=True)
    return {"seconds with reading": seconds, **{k: v for k, v in summary.items() if k != "outputs"}}


def stage_evaluate(base: Path) -> dict[str, Any]:
    from pyoops.diagnostics.statistics import block_bootstrap_ratios, default_block_length
    from pyoops.emulators.bound import completion_stddevs, log_stddev_noise, oracle_relative_sd
    from pyoops.emulators.model import load_emulator
    from pyoops.emulators.scores import Z90, coverage, ensemble_crps, gaussian_crps, pit
    from pyoops.ensemble.member_archive import read_member_archive

    emulator = load_emulator(base / "emulator" / "emulator.pt")
    train = read_member_archive(base / "train" / "members.nc")
    test = read_member_archive(base / "test" / "members.nc")
    train_x = train.members["x"][SKIP:, :N]
    clim = np.log(train_x.std(axis=1, ddof=1)).mean(axis=0)                 # (40,)
    x = test.members["x"][SKIP:]                                              # (C, 500, 40)
    C = x.shape[0]
    y = np.log(x[:, :N].std(axis=1, ddof=1))                                  # (C, 40) log sigma_50
    log5 = np.log(x[:, :M].std(axis=1, ddof=1))
    naive = log5 + emulator.training["naive offset"][0]
    climatology = np.broadcast_to(clim, y.shape)
    mu, s = emulator.predict({"x": x[:, :M]})
    mu, s = mu["x"], s["x"]
    rng = np.random.default_rng(0)
    completions = np.stack([np.log(completion_stddevs(x[c, :M], x[c, N:], N, DRAWS, rng)) for c in range(C)], axis=1)
    bound = completions.mean(axis=0)                                          # (C, 40)
    bound_mc_se = float(np.sqrt(np.mean(completions.var(axis=0, ddof=1) / DRAWS)))
    log500 = np.log(x.std(axis=1, ddof=1))

    errors = {"naive": naive - y, "climatology": climatology - y, "emulator": mu - y, "bound": bound - y,
              "oracle (log sigma_500)": log500 - y}
    crps = {"naive": np.abs(naive - y), "climatology": np.abs(climatology - y), "emulator": gaussian_crps(mu, s, y),
            "bound": ensemble_crps(completions, y)}
    table = {}
    for name, e in errors.items():
        table[name] = {"rmse": float(np.sqrt(np.mean(e ** 2))), "bias": float(e.mean())}
        if name in crps:
            table[name]["crps"] = float(crps[name].mean())
    gap = (table["naive"]["rmse"] - table["emulator"]["rmse"]) / (table["naive"]["rmse"] - table["bound"]["rmse"])
    # Bootstrap over cycles (common blocks for the three squared-error series).
    per_cycle = np.stack([(errors[k] ** 2).sum(axis=1) for k in ("naive", "emulator", "bound")], axis=1)
    count = np.full_like(per_cycle, y.shape[1])
    reps = np.sqrt(block_bootstrap_ratios(per_cycle, count, np.random.default_rng(0), samples=2000))
    gaps = (reps[:, 0] - reps[:, 1]) / (reps[:, 0] - reps[:, 2])
    gap_ci = [float(v) for v in np.quantile(gaps, [0.025, 0.975])]
    lo, hi = np.quantile(completions, [0.05, 0.95], axis=0)
    pits = pit(mu, s, y)
    calibration = {"emulator coverage 90": coverage(mu, s, y, Z90),
                   "bound coverage 90 (5-95 % of the completions)": float(np.mean((y >= lo) & (y <= hi))),
                   "emulator PIT histogram (10 bins)": np.histogram(pits, bins=10, range=(0, 1))[0].tolist(),
                   "emulator mean predictive sd": float(s.mean())}
    # Per-cycle coverage spread: how much the coverage varies between blocks of cycles.
    cov_reps = block_bootstrap_ratios((np.abs(mu - y) <= Z90 * s).sum(axis=1)[:, None], count[:, :1],
                                      np.random.default_rng(1), samples=2000)
    calibration["emulator coverage 90, 95 % interval"] = [float(v) for v in np.quantile(cov_reps, [0.025, 0.975])]
    oracle = {"theory sd of log sigma_50": log_stddev_noise(N), "theory sd(sigma_50)/sigma": oracle_relative_sd(N),
              "theory sd of log sigma_5": log_stddev_noise(M), "theory sd(sigma_5)/sigma": oracle_relative_sd(M)}
    cost = inference_cost(base, emulator, x[0, :M])
    result = {"test cycles": C, "points": int(y.size), "block length": default_block_length(C), "scores": table,
              "gap closed": gap, "gap closed 95 % interval": gap_ci, "bound Monte Carlo standard error": bound_mc_se,
              "calibration": calibration, "oracle": oracle, "inference": cost,
              "emulator parameters": emulator.parameters}
    plots(base, y, naive, mu, s, bound, completions, pits)
    print(f"evaluate on {C} held-out cycles x 40 points, against log sigma_50:")
    print(f"  {'':<24}{'RMSE':>8}{'CRPS':>8}{'bias':>8}")
    for name, row in table.items():
        print(f"  {name:<24}{row['rmse']:>8.4f}{row.get('crps', math.nan):>8.4f}{row['bias']:>8.4f}")
    print(f"  gap closed by the emulator: {100 * gap:.1f} % (95 % interval {100 * gap_ci[0]:.1f}-"
          f"{100 * gap_ci[1]:.1f} %); bound MC standard error {bound_mc_se:.4f}")
    print(f"  90 % interval coverage: emulator {calibration['emulator coverage 90']:.3f} (95 % interval "
          f"{calibration['emulator coverage 90, 95 % interval'][0]:.3f}-"
          f"{calibration['emulator coverage 90, 95 % interval'][1]:.3f}), bound "
          f"{calibration['bound coverage 90 (5-95 % of the completions)']:.3f}")
    print(f"  PIT histogram (10 bins): {calibration['emulator PIT histogram (10 bins)']}")
    print(f"  oracle floor: sd of log sigma_50 {oracle['theory sd of log sigma_50']:.4f} (Gaussian theory); "
          f"RMSE of log sigma_50 against log sigma_500: {table['oracle (log sigma_500)']['rmse']:.4f}")
    print(f"  inference {1e3 * cost['predict seconds']:.3f} ms per cycle, one 3D-Var analysis "
          f"{1e3 * cost['analysis seconds']:.2f} ms: {100 * cost['ratio']:.1f} %", flush=True)
    return result


def inference_cost(base: Path, emulator: Any, members: np.ndarray) -> dict[str, float]:
    """Median time of Emulator.predict on one cycle's 5 members and of one member's 3D-Var analysis."""
    import torch

    from pyoops.apps import make_application
    from pyoops.config.yaml_io import load_config
    from pyoops.ensemble.eda import EDASetup, analyse_members
    from pyoops.fields.fieldset import FieldSet
    from pyoops.util.datetime import DateTime

    torch.set_num_threads(1)
    emulator.predict({"x": members})
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        emulator.predict({"x": members})
        times.append(time.perf_counter() - t0)
    app = make_application("cycle")
    cfg = cycle_config(base / "scratch", 1, 5, TRAIN["seeds"], archive=False)
    app.validate(load_config(cfg))
    e = app.experiment
    state = e.initial_experiment_state()
    truth = e.plugin.state(e.geometry, FieldSet(state["truth"]), DateTime(state["truth time"]))
    w = e.window(0)
    truth_at = e.advance_truth(truth, e.analysis_time(0), e.obs_times(w) + [e.analysis_time(0)])
    twin = e.observe(w, truth_at)
    setup = EDASetup(cfg["model plugin"], e.cost_config(0, twin.observer), cfg["variational"],
                     {1: {"x": state["members"]["x"][0]}}, [twin.values], None, 1, ("cycle", 0))
    analyse_members(setup, [1])
    analysis = []
    for _ in range(20):
        t0 = time.perf_counter()
        analyse_members(setup, [1])
        analysis.append(time.perf_counter() - t0)
    p, a = float(np.median(times)), float(np.median(analysis))
    return {"predict seconds": p, "analysis seconds": a, "ratio": p / a}


def plots(base: Path, y: np.ndarray, naive: np.ndarray, mu: np.ndarray, s: np.ndarray, bound: np.ndarray,
          completions: np.ndarray, pits: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    c = 0
    xs = np.arange(y.shape[1])
    ax = axes[0]
    ax.fill_between(xs, np.exp(mu[c] - 1.645 * s[c]), np.exp(mu[c] + 1.645 * s[c]), color="C0", alpha=0.25,
                    label="emulator 90 %")
    ax.plot(xs, np.exp(mu[c]), "C0-", label="emulator median")
    ax.plot(xs, np.exp(naive[c]), "C1.:", label="naive rescaled sigma_5")
    ax.plot(xs, np.exp(bound[c]), "C2--", label="bound E[.|F_5]")
    ax.plot(xs, np.exp(y[c]), "k-", lw=1.5, label="sigma_50")
    ax.set_xlabel("grid point")
    ax.set_ylabel("background sigma")
    ax.set_title("first held-out cycle")
    ax.legend(fontsize="small")
    ax = axes[1]
    ax.hist(pits.ravel(), bins=10, range=(0, 1), density=True, color="C0", alpha=0.7)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("PIT of log sigma_50 under N(mu, s^2)")
    ax.set_title("emulator calibration (held-out cycles)")
    fig.savefig(base / "eda_emulator_l96.png", dpi=100)
    plt.close(fig)


def stage_cycling(base: Path, cycles: int = 600, spin_up: int = 100) -> dict[str, Any]:
    from pyoops.diagnostics.statistics import ratio_estimates

    model = str(base / "emulator" / "emulator.pt")
    runs = {"50-es": (50, {"calibration": {}}), "5-es": (5, {"calibration": {}}),
            "ML-es from 5": (5, {"emulated stddev": {"model": model, "members": 5}})}
    series, seconds = {}, {}
    for name, (members, stddev) in runs.items():
        cfg = cycle_config(base / "cycling" / name.replace(" ", "_"), cycles, members, TEST["seeds"], stddev,
                           archive=False, spin_up=spin_up)
        cfg["resume"] = False
        t0 = time.perf_counter()
        state = pyoops.run("cycle", cfg)["experiment"]
        seconds[name] = time.perf_counter() - t0
        series[name] = np.asarray(state.stats["forecast rmse"])[spin_up:]
        print(f"cycling {name}: mean control forecast RMSE {series[name].mean():.4f} ({seconds[name]:.0f} s)",
              flush=True)
    out: dict[str, Any] = {"cycles": cycles, "spin-up cycles": spin_up, "seconds": seconds, "methods": {}}
    ref = series["50-es"] ** 2
    for name in ("5-es", "ML-es from 5"):
        est = ratio_estimates((series[name] ** 2)[:, None], ref[:, None], rng=np.random.default_rng(0),
                              samples=2000)[0]
        change = math.sqrt(est.value) - 1
        lo, hi = (math.sqrt(v) - 1 for v in est.bootstrap)
        out["methods"][name] = {"rms forecast error": float(np.sqrt(np.mean(series[name] ** 2))),
                                "change vs 50-es": change, "95 % interval": [lo, hi]}
        print(f"  {name}: RMS forecast error change vs 50-es {100 * change:+.2f} % (95 % interval "
              f"{100 * lo:+.2f} to {100 * hi:+.2f} %)", flush=True)
    out["methods"]["50-es"] = {"rms forecast error": float(np.sqrt(np.mean(ref)))}
    plot_cycling(base, series, out)
    return out


def plot_cycling(base: Path, series: dict[str, np.ndarray], result: dict[str, Any]) -> None:
    """``eda_emulator_cycling.png``: running 50-cycle RMS of the control's 6-h forecast error, and the change of
    the RMS error against 50-es with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True, gridspec_kw={"width_ratios": [2, 1]})
    width = 50
    for (name, e), color in zip(series.items(), ("k", "C1", "C0")):
        running = np.sqrt(np.convolve(e ** 2, np.ones(width) / width, mode="valid"))
        axes[0].plot(np.arange(running.size) + width, running, color=color, label=name)
    axes[0].set_xlabel("cycle after spin-up")
    axes[0].set_ylabel(f"6-h forecast RMSE (running {width}-cycle RMS)")
    axes[0].legend()
    names = [n for n in result["methods"] if n != "50-es"]
    changes = [100 * result["methods"][n]["change vs 50-es"] for n in names]
    lo = [100 * result["methods"][n]["95 % interval"][0] for n in names]
    hi = [100 * result["methods"][n]["95 % interval"][1] for n in names]
    axes[1].bar(names, changes, color=["C1", "C0"][: len(names)],
                yerr=[np.subtract(changes, lo), np.subtract(hi, changes)], capsize=6)
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set_ylabel("change in RMS forecast error vs 50-es [%]")
    axes[1].set_title("95 % block-bootstrap intervals")
    fig.savefig(base / "eda_emulator_cycling.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["data", "train", "evaluate", "cycling", "all"], default="all")
    parser.add_argument("--directory", default="eda_emulator_out")
    args = parser.parse_args(argv)
    base = Path(args.directory)
    base.mkdir(parents=True, exist_ok=True)
    import torch

    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, pyoops "
          f"{pyoops.__version__}, {platform.machine()}, {os.cpu_count()} cpus; load average before: "
          "%.2f %.2f %.2f" % os.getloadavg(), flush=True)
    results_file = base / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    stages = ["data", "train", "evaluate", "cycling"] if args.stage == "all" else [args.stage]
    for stage in stages:
        results[stage] = globals()[f"stage_{stage}"](base)
        results[stage]["load average after"] = list(os.getloadavg())
        results_file.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print("load average after: %.2f %.2f %.2f" % os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
