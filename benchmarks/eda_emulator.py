"""Benchmark: emulating a 50-member EDA's standard deviation from 5 members, on Lorenz-96 and QG (issue 15).

``--model lorenz96`` (default) or ``--model qg``; the QG twin is described after the stages.  Stages (``--stage``;
``all`` runs them in order, each reusing what the previous wrote in ``--directory``):

``data``
    Lorenz-96 EDAs (n = 40, F = 8; every point observed every PT6H with sigma_o = 1; 3D-Var with B = StdDev x
    spectral correlation 0.02, DRPCG 20 iterations; perturbed observations; a control member), through
    ``pyoops.run("cycle", ...)`` with ``output: {member archive: true}``, all with sigma_b taken from the EDA itself
    every cycle (``StdDev`` ``calibration``): the system the emulator serves in cycling (50-es):

    * *training*: N = 50 members, 2050 cycles (truth seed 3, observation seed 5, EDA seed 1), and *train-2*: 6050
      more cycles of another twin (seeds 23, 25, 21);
    * *test*: N = 500 members, 250 cycles, another truth, other observations and perturbations (seeds 11, 13, 17),
      sigma_b from all 500 members: every member gets the same B from a statistic symmetric in the members, so
      the 500 stay exchangeable; members 1..50 give sigma_50, 51..500 are the pool of the bound.
``train``
    ``pyoops train-emulator`` on the training archives (first 50 cycles skipped, the last 20 % of each for early
    stopping), M = 5, predictors log sigma_5, the 5-member mean and its gradient, ReLU activations; one PyTorch
    thread (on the shared 2-core machine two threads were 10 times slower per epoch: the tensors are small and
    the cores busy); timed.
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
    Impact in cycling, 2100 cycles (first 100 spin-up; ``--cycling-cycles``) of the held-out twin (the test run's
    truth, observations and perturbation seeds 11, 13, 17, never seen in training): EDA + 3D-Var whose static B
    takes its sigma_b from the EDA every cycle, (1) 50-es: StdDev calibrated on 50 members, (2) 5-es: on 5 members,
    (3) ML-es: StdDev emulated from 5 members.  Control's 6-h forecast (background) RMSE against the truth; ratio
    of mean squared errors to 50-es with 95 % block-bootstrap intervals.

QG (``--model qg``): the channel 40 x 20 (layers 4500/5500 m, perfect model, the baroclinic-instability truth of
``emulated_members_qg.py``), the streamfunction observed at 40 random points every 3 hours with error 4e5 m^2/s,
6-hour windows, an EDA of strong-constraint 4D-Vars (QgTLM with its matrices stored, DRPCG, 10 inner iterations,
perturbed observations, a control) whose B is the tutorial's static balanced B (diffusion 1000 km, vertical
correlation 0.6, QG walls and balance) with sigma_b of the streamfunction taken from the EDA every cycle
(``StdDev`` ``calibration``: the 50-es system); the members (and the control) start from draws of the static B.

* *training*: 50 members, 200 cycles from day 9 of the truth, initial draws with sigma 3e6 (first 60 cycles
  skipped: the spread takes about 60 cycles to come down to the EDA's own);
* *test*: 250 members, 50 cycles from day 60 (after all the training cycles: held out in time, with other
  observation and perturbation seeds), initial draws with sigma 4e5 (first 20 skipped), sigma_b calibrated on
  all 250 members so that they stay exchangeable; members 1..50 give sigma_50, 51..250 are the pool of the bound
  (200 completions of 45 from 200);
* *cycling*: six independent twins (observation seeds 113..613, EDA seeds 18..23: other observation errors,
  initial draws and perturbations; the same truth from day 60), 310 cycles each (first 60 spin-up), initial draws
  with sigma 4e5, 50-es / 5-es / ML-es from 5 as for Lorenz-96, the control's 6-hour forecast RMSE (all
  variables, dominated by the streamfunction, m^2/s); each twin's change against 50-es with its block-bootstrap
  interval, and across twins the mean log ratio of mean squared errors with a Student-t 95 % interval (the
  twins are the independent units).

The QG evaluation scores all ten disjoint 5-subsets of members 1..50 (each against the same sigma_50, each with its
own bound): in this EDA a member keeps its deviation for tens of cycles, so the score of one fixed subset depends
on which five members it holds.  The QG emulator is trained with Adam weight decay 1e-3 (without it, RMSE 0.286
instead of 0.259 on the ten subsets).

The emulator sees and predicts the streamfunction x (two layers: 2 channels), the variable whose sigma_b the B takes
(q, u and v follow from x through the QG balance), with the ``relative`` flag (the network sees log sigma_5 less
its domain mean: the spread level of the test period is not the training period's).  The tables are per layer.

Prints every number, writes ``results.json`` and the plots to ``--directory``.  Usage::

    python benchmarks/eda_emulator.py --stage all --directory /tmp/eda_emulator
    PYTHONPATH=.:plugins/qg/src python benchmarks/eda_emulator.py --model qg --stage all --directory /tmp/eda_qg
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

M, N, DRAWS = 5, 50, 200


class Case:
    """One model's twin: the EDA's configuration, the data runs, the emulator's training and the cycling runs."""

    name = ""
    train: dict[str, Any] = {}
    test: dict[str, Any] = {}
    skip = 0                     # spin-up cycles left out of the archives (a run's own "skip" overrides it)
    cycling = {"cycles": 0, "spin-up": 0}
    analysis = ""                # what one member's analysis is, for the inference cost
    extra_train: dict[str, Any] = {}    # further training runs of the same system (their name: spec)
    plugin = ""
    emulator: dict[str, Any] = {}       # the train-emulator 'emulator' section but M and N
    batch_size = 0                      # cycles per training minibatch
    weight_decay = 0.0                  # Adam weight decay of the training
    # Disjoint M-subsets of members 1..N scored in the evaluation (each against the same sigma_50, with its own
    # bound): 1 scores members 1..M only.
    scored_subsets = 1
    fixed_stddev: dict[str, Any] = {}   # a StdDev section needing no ensemble (the analysis timed alone)

    def cycle_config(self, base: Path, directory: Path, cycles: int, members: int, run: dict[str, Any],
                     stddev: dict[str, Any] | None = None, archive: bool = True,
                     spin_up: int | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def data_stddev(self, name: str) -> dict[str, Any] | None:
        """The StdDev section of the ``name`` data run: sigma_b from the EDA itself (the training run: the 50-es
        system the emulator serves; the test run: sigma_b from all its members, which keeps them exchangeable)."""
        return self.runs()[name].get("stddev", {"calibration": {}})

    def runs(self) -> dict[str, dict[str, Any]]:
        """Every data run: ``train``, ``test`` and the extra training runs."""
        return {"train": self.train, "test": self.test, **self.extra_train}

    def archives(self, base: Path) -> list[str]:
        """The training archives: ``train`` and each extra training run's."""
        return [str(base / name / "members.nc") for name in ("train", *self.extra_train)]

    def geometry(self) -> dict[str, Any]:
        raise NotImplementedError

    def train_config(self, base: Path, threads: int = 1) -> dict[str, Any]:
        """The ``train-emulator`` configuration: the case's archives, emulator and minibatch size."""
        return {"model plugin": self.plugin, "geometry": self.geometry(),
                "training data": {"archives": self.archives(base), "skip cycles": self.train.get("skip", self.skip),
                                  "validation fraction": 0.2},
                "emulator": {"members": M, "target members": N, **self.emulator},
                "training": {"loss": "gaussian nll", "epochs": 300, "batch size": self.batch_size,
                             "learning rate": 3e-3, "weight decay": self.weight_decay, "patience": 30, "seed": 1,
                             "threads": threads},
                "output": {"model": str(base / "emulator" / "emulator.pt"), "directory": str(base / "emulator")}}


class Lorenz96(Case):
    name = "lorenz96"
    train = {"cycles": 2050, "members": 50, "seeds": (3, 5, 1)}
    test = {"cycles": 250, "members": 500, "seeds": (11, 13, 17)}
    # More training cycles of the same system (another truth, observations and perturbations): with the first
    # 2000 alone the network stops improving after about 25 epochs (validation loss).
    extra_train = {"train-2": {"cycles": 6050, "members": 50, "seeds": (23, 25, 21)}}
    skip = 50
    cycling = {"cycles": 2100, "spin-up": 100}
    analysis = "3D-Var"
    fixed_stddev = {"read": {"value": 0.6}}
    plugin = "lorenz96"
    emulator = {"predictors": ["mean", "gradient"],
                "network": {"width": 32, "depth": 3, "kernel": 5, "global context": True, "activation": "relu"}}
    batch_size = 64

    def geometry(self) -> dict[str, Any]:
        return {"resol": 40}

    @staticmethod
    def static_b(stddev: dict[str, Any]) -> dict[str, Any]:
        return {"covariance model": "SABER",
                "saber central block": {"saber block name": "spectral correlation", "length scale": 0.02},
                "saber outer blocks": [{"saber block name": "StdDev", **stddev}]}

    def cycle_config(self, base: Path, directory: Path, cycles: int, members: int, run: dict[str, Any],
                     stddev: dict[str, Any] | None = None, archive: bool = True,
                     spin_up: int | None = None) -> dict[str, Any]:
        truth_seed, obs_seed, eda_seed = run["seeds"]
        return {
            "model plugin": self.plugin,
            "geometry": self.geometry(),
            "model": {"name": "Lorenz96", "tstep": "PT6H"},
            "truth": {"initial condition": {"date": "2010-01-01T00:00:00Z",
                                            "analytic init": {"method": "random", "seed": truth_seed}},
                      "spin-up": "P20D"},
            "observations": {"obs frequency": "PT6H", "obs density": 40, "obs error": 1.0, "seed": obs_seed},
            "cycling": {"method": "EDA", "cycles": cycles, "window length": "PT6H",
                        "spin-up cycles": run.get("skip", self.skip) if spin_up is None else spin_up,
                        "seed": eda_seed, "members": members, "checkpoint every": 50},
            "eda": {"seed": eda_seed},
            "cost function": {"background error": self.static_b(stddev or self.fixed_stddev)},
            "variational": {"minimizer": {"algorithm": "DRPCG"},
                            "iterations": [{"ninner": 20, "gradient norm reduction": 1e-6}]},
            "output": {"directory": str(directory), "plots": True, "member archive": archive},
        }

class QG(Case):
    name = "qg"
    # The training run started from draws of the static B (sigma 3e6): its spread takes about 60 cycles to come
    # down to the EDA's own (about 1e5 m^2/s); the test and cycling runs start from draws with sigma 4e5, near it.
    train = {"cycles": 200, "members": 50, "seeds": (0, 5, 1), "truth spin-up": "P9D", "skip": 60}
    test = {"cycles": 50, "members": 250, "seeds": (0, 13, 17), "truth spin-up": "P60D", "skip": 20,
            "initial sigma": 4.0e5}
    skip = 20
    # Six independent twins (other observation errors, initial draws and perturbations; the same truth from day 60
    # and observing network), 250 scored cycles each: one 560-cycle twin did not decide (the control's error
    # wanders by a factor 2-3 for tens of cycles between equally good systems); the twins are the units of the
    # paired comparison.
    cycling = {"cycles": 310, "spin-up": 60, "truth spin-up": "P60D", "initial sigma": 4.0e5,
               "twins": [(0, 13 + 100 * k, 17 + k) for k in range(1, 7)]}
    analysis = "4D-Var"
    fixed_stddev = {"read": {"value": {"x": 3.0e6}}}
    plugin = "qg"
    emulator = {"variables": ["x"], "predictors": ["mean", "gradient", "relative"],
                "network": {"width": 24, "depth": 3, "kernel": 3, "global context": True}}
    batch_size = 16
    weight_decay = 1e-3
    # A fixed set of 5 members keeps its deviations for tens of cycles in this EDA (members' mean squared
    # deviations over 30 cycles range from 0.6 to 2.1 times the ensemble's): one subset's score depends on which 5
    # members they are, so all ten disjoint subsets of members 1..50 are scored.
    scored_subsets = 10

    def initial_ensemble(self, base: Path, members: int, spin_up: str, seed: int,
                         sigma: float | None = None) -> tuple[str, str]:
        """Draws from the static B (its sigma, or ``sigma``) around the truth after ``spin_up`` (made once per
        size, spin-up, seed and sigma): the members' %mem% template and the control's file (draw ``members + 1``)."""
        from emulated_members_qg import initial_ensemble

        directory = base / "initial" / (f"{spin_up}-{members}-{seed}" + ("" if sigma is None else f"-{sigma:g}"))
        template = str(directory / "ens.%mem%.nc")
        control = template.replace("%mem%", str(members + 1))
        if not Path(control).exists():
            initial_ensemble(directory, members + 1, seed, spin_up, sigma)
        return template, control

    def cycle_config(self, base: Path, directory: Path, cycles: int, members: int, run: dict[str, Any],
                     stddev: dict[str, Any] | None = None, archive: bool = True,
                     spin_up: int | None = None) -> dict[str, Any]:
        from emulated_members_qg import _truth_init, with_stddev

        _, obs_seed, eda_seed = run["seeds"]
        template, control = self.initial_ensemble(base, members, run["truth spin-up"], eda_seed,
                                                  run.get("initial sigma"))
        return {
            "model plugin": self.plugin, "geometry": self.geometry(), "model": {"name": "QG", "tstep": "PT1H"},
            "truth": {"initial condition": _truth_init(), "spin-up": run["truth spin-up"]},
            "observations": {"name": "streamfunction", "simulated variables": ["x"], "obs frequency": "PT3H",
                             "obs density": 40, "obs error": 4.0e5, "locations": "random", "locations seed": 1,
                             "seed": obs_seed},
            "cycling": {"method": "EDA", "members": members, "cycles": cycles, "window length": "PT6H",
                        "spin-up cycles": run.get("skip", self.skip) if spin_up is None else spin_up,
                        "seed": eda_seed,
                        "checkpoint every": 50, "initial ensemble": {"filename": template},
                        "initial background": {"filename": control}},
            "eda": {"seed": eda_seed, "control member": True},
            "cost function": {"cost type": "4D-Var",
                              "linear model": {"name": "QgTLM", "tstep": "PT1H", "trajectory": "matrices"},
                              "background error": with_stddev(stddev or {"calibration": {}})},
            "variational": {"minimizer": {"algorithm": "DRPCG"},
                            "iterations": [{"ninner": 10, "gradient norm reduction": 1e-3}]},
            "output": {"directory": str(directory), "plots": False, "member archive": archive},
        }

    def geometry(self) -> dict[str, Any]:
        from emulated_members_qg import GEOMETRY

        return GEOMETRY


CASES: dict[str, Case] = {"lorenz96": Lorenz96(), "qg": QG()}


def stage_data(base: Path, case: Case, runs: tuple[str, ...] = ("train", "test")) -> dict[str, Any]:
    out = {}
    for name, spec in ((name, case.runs()[name]) for name in runs):
        t0 = time.perf_counter()
        cfg = case.cycle_config(base, base / name, spec["cycles"], spec["members"], spec, case.data_stddev(name))
        summary = pyoops.run("cycle", cfg)
        out[name] = {"seconds": time.perf_counter() - t0, **{k: v for k, v in summary.items() if k.startswith("mean")}}
        print(f"data {name}: {spec['members']} members x {spec['cycles']} cycles in {out[name]['seconds']:.0f} s; "
              f"mean forecast spread {summary.get('mean forecast spread', float('nan')):.4g}, "
              f"control forecast RMSE {summary['mean forecast rmse']:.4g}", flush=True)
    return out


def stage_train(base: Path, case: Case) -> dict[str, Any]:
    t0 = time.perf_counter()
    summary = pyoops.run("train-emulator", case.train_config(base))
    seconds = time.perf_counter() - t0
    print(f"train: {summary['parameters']} parameters, {summary['epochs']} epochs, {summary['training seconds']:.0f} s "
          f"of training ({seconds:.0f} s with reading), validation RMSE log sigma {summary['rmse emulator']:.4f} "
          f"(naive {summary['rmse naive']:.4f}), 90 % coverage {summary['coverage 90']:.3f}", flush=True)
    return {"seconds with reading": seconds, **{k: v for k, v in summary.items() if k != "outputs"}}


def channel_names(layout: Any) -> list[str]:
    """One name per channel of ``layout`` (variable, then level), e.g. ``x`` or ``x level 2``."""
    per = layout.channels // len(layout.variables)
    if per == 1:
        return list(layout.variables)
    return [f"{v} level {k + 1}" for v in layout.variables for k in range(per)]


def scores(errors: dict[str, np.ndarray], crps: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    table = {}
    for name, e in errors.items():
        table[name] = {"rmse": float(np.sqrt(np.mean(e ** 2))), "bias": float(e.mean())}
        if name in crps:
            table[name]["crps"] = float(crps[name].mean())
    return table


def gap_closed(table: dict[str, dict[str, float]]) -> float:
    """Fraction of the naive-to-bound RMSE gap the emulator closes."""
    return (table["naive"]["rmse"] - table["emulator"]["rmse"]) / (table["naive"]["rmse"] - table["bound"]["rmse"])


def stage_evaluate(base: Path, case: Case) -> dict[str, Any]:
    from pyoops.diagnostics.statistics import block_bootstrap_ratios, default_block_length
    from pyoops.emulators.bound import completion_stddevs, log_stddev_noise, oracle_relative_sd
    from pyoops.emulators.model import load_emulator
    from pyoops.emulators.scores import Z90, coverage, ensemble_crps, gaussian_crps, pit
    from pyoops.ensemble.member_archive import read_member_archive

    emulator = load_emulator(base / "emulator" / "emulator.pt")
    layout = emulator.layout
    train = read_member_archive(base / "train" / "members.nc", variables=layout.variables)
    test = read_member_archive(base / "test" / "members.nc", variables=layout.variables)

    def channels(fields: dict[str, np.ndarray]) -> np.ndarray:
        """``{variable: (B, *shape)}`` -> ``(B, channels, horizontal points)``."""
        c = layout.to_channels(fields)
        return c.reshape(c.shape[:2] + (-1,))

    def log_sd(members: dict[str, np.ndarray], take: slice) -> np.ndarray:
        return channels({v: np.log(a[:, take].std(axis=1, ddof=1)) for v, a in members.items()})

    x = {v: test.members[v][case.test.get("skip", case.skip):] for v in layout.variables}   # (C, P, *shape)
    C = next(iter(x.values())).shape[0]
    y1 = log_sd(x, slice(0, N))                                                      # (C, K, H) log sigma_50
    offset = np.asarray(emulator.training["naive offset"])[None, :, None]
    rng = np.random.default_rng(0)
    pool = next(iter(x.values())).shape[1]
    # Every estimate for each scored M-subset of members 1..N (stacked on a leading axis; the target is the same
    # log sigma_50 of members 1..N); the bound completes the subset from the pool N+1..
    naive_l, mu_l, s_l, bound_l, lo_l, hi_l, bound_crps, mc_var = [], [], [], [], [], [], [], []
    # Every cycle's members as (P, values), made once for all subsets.
    cycle_members = [channels({v: a[c] for v, a in x.items()}).reshape(pool, -1) for c in range(C)]
    for first in range(0, case.scored_subsets * M, M):
        take = slice(first, first + M)
        naive_l.append(log_sd(x, take) + offset)
        mu_f, s_f = emulator.predict({v: a[:, take] for v, a in x.items()})
        mu_l.append(channels(mu_f))
        s_l.append(channels(s_f))
        completions = np.empty((DRAWS,) + y1.shape)                                  # (draws, C, K, H)
        for c, cols in enumerate(cycle_members):
            completions[:, c] = np.log(completion_stddevs(cols[take], cols[N:], N, DRAWS, rng)).reshape(
                (DRAWS,) + y1.shape[1:])
        bound_l.append(completions.mean(axis=0))
        mc_var.append(completions.var(axis=0, ddof=1) / DRAWS)
        lo, hi = np.quantile(completions, [0.05, 0.95], axis=0)
        lo_l.append(lo)
        hi_l.append(hi)
        bound_crps.append(ensemble_crps(completions, y1))
        del completions
    S = len(mu_l)
    # Subsets folded into the cycle axis: (S*C, K, H), subset-major.
    naive, mu, s, bound = (np.concatenate(a) for a in (naive_l, mu_l, s_l, bound_l))
    lo, hi = np.concatenate(lo_l), np.concatenate(hi_l)
    y = np.concatenate([y1] * S)
    bound_mc_se = float(np.sqrt(np.mean(np.concatenate(mc_var))))
    train_x = {v: train.members[v][case.train.get("skip", case.skip):] for v in layout.variables}
    clim = log_sd(train_x, slice(0, N)).mean(axis=0)                               # (K, H)
    climatology = np.broadcast_to(clim, y.shape)
    log_all = np.concatenate([log_sd(x, slice(None))] * S)

    errors = {"naive": naive - y, "climatology": climatology - y, "emulator": mu - y, "bound": bound - y,
              f"oracle (log sigma_{pool})": log_all - y}
    crps = {"naive": np.abs(naive - y), "climatology": np.abs(climatology - y), "emulator": gaussian_crps(mu, s, y),
            "bound": np.concatenate(bound_crps)}
    table = scores(errors, crps)
    gap = gap_closed(table)
    per_channel = {}
    for k, name in enumerate(channel_names(layout)):
        row = scores({n: e[:, k] for n, e in errors.items()}, {n: c[:, k] for n, c in crps.items()})
        per_channel[name] = {"scores": row, "gap closed": gap_closed(row),
                             "emulator coverage 90": coverage(mu[:, k], s[:, k], y[:, k], Z90)}
    # Bootstrap over cycles (common blocks for the three squared-error series).
    points = S * int(np.prod(y.shape[1:]))
    per_cycle = np.stack([(errors[k] ** 2).reshape(S, C, -1).sum(axis=(0, 2)) for k in ("naive", "emulator", "bound")],
                         axis=1)
    count = np.full_like(per_cycle, points)
    reps = np.sqrt(block_bootstrap_ratios(per_cycle, count, np.random.default_rng(0), samples=2000))
    gaps = (reps[:, 0] - reps[:, 1]) / (reps[:, 0] - reps[:, 2])
    gap_ci = [float(v) for v in np.quantile(gaps, [0.025, 0.975])]
    pits = pit(mu, s, y)
    calibration = {"emulator coverage 90": coverage(mu, s, y, Z90),
                   "bound coverage 90 (5-95 % of the completions)": float(np.mean((y >= lo) & (y <= hi))),
                   "emulator PIT histogram (10 bins)": np.histogram(pits, bins=10, range=(0, 1))[0].tolist(),
                   "emulator mean predictive sd": float(s.mean())}
    # Per-cycle coverage spread: how much the coverage varies between blocks of cycles.
    inside = (np.abs(mu - y) <= Z90 * s).reshape(S, C, -1).sum(axis=(0, 2))[:, None]
    cov_reps = block_bootstrap_ratios(inside, count[:, :1], np.random.default_rng(1), samples=2000)
    calibration["emulator coverage 90, 95 % interval"] = [float(v) for v in np.quantile(cov_reps, [0.025, 0.975])]
    oracle = {"theory sd of log sigma_50": log_stddev_noise(N), "theory sd(sigma_50)/sigma": oracle_relative_sd(N),
              "theory sd of log sigma_5": log_stddev_noise(M), "theory sd(sigma_5)/sigma": oracle_relative_sd(M)}
    equivalent = equivalent_members(log_sd, x, y1, [table["emulator"]["rmse"], table["naive"]["rmse"] - 0.7 * (
        table["naive"]["rmse"] - table["bound"]["rmse"])])
    cost = inference_cost(base, case, emulator, {v: a[0, :M] for v, a in x.items()})
    result = {"test cycles": C, "scored subsets": S, "points": int(y.size), "block length": default_block_length(C),
              "scores": table,
              "gap closed": gap, "gap closed 95 % interval": gap_ci, "bound Monte Carlo standard error": bound_mc_se,
              "per channel": per_channel, "calibration": calibration, "oracle": oracle, "inference": cost,
              "emulator parameters": emulator.parameters, "equivalent members": equivalent}
    plots(base, case, y, naive, mu, s, bound, pits)
    print(f"evaluate on {C} held-out cycles x {points // S} points x {S} subsets of {M} members, against "
          "log sigma_50:")
    print(f"  {'':<24}{'RMSE':>8}{'CRPS':>8}{'bias':>8}")
    for name, row in table.items():
        print(f"  {name:<24}{row['rmse']:>8.4f}{row.get('crps', math.nan):>8.4f}{row['bias']:>8.4f}")
    if len(per_channel) > 1:
        print(f"  per channel: {'':<10}{'naive':>8}{'clim':>8}{'emul.':>8}{'bound':>8}{'gap':>8}{'cov90':>8}")
        for name, row in per_channel.items():
            r = row["scores"]
            print(f"  {name:<22}" + "".join(f"{r[k]['rmse']:>8.4f}" for k in ("naive", "climatology", "emulator",
                                                                                 "bound"))
                  + f"{100 * row['gap closed']:>7.1f}%{row['emulator coverage 90']:>8.3f}")
    print(f"  gap closed by the emulator: {100 * gap:.1f} % (95 % interval {100 * gap_ci[0]:.1f}-"
          f"{100 * gap_ci[1]:.1f} %); bound MC standard error {bound_mc_se:.4f}")
    print(f"  90 % interval coverage: emulator {calibration['emulator coverage 90']:.3f} (95 % interval "
          f"{calibration['emulator coverage 90, 95 % interval'][0]:.3f}-"
          f"{calibration['emulator coverage 90, 95 % interval'][1]:.3f}), bound "
          f"{calibration['bound coverage 90 (5-95 % of the completions)']:.3f}")
    print(f"  PIT histogram (10 bins): {calibration['emulator PIT histogram (10 bins)']}")
    print(f"  oracle floor: sd of log sigma_50 {oracle['theory sd of log sigma_50']:.4f} (Gaussian theory); "
          f"RMSE of log sigma_50 against log sigma_{pool}: {table[f'oracle (log sigma_{pool})']['rmse']:.4f}")
    print("  naive RMSE of K independent members (the pool's, bias-corrected): " + ", ".join(
        f"{k}: {r:.4f}" for k, r in zip(equivalent["members"], equivalent["rmse"])))
    print(f"  the emulator's RMSE is that of {equivalent['equivalent'][0]:.1f} independent members; closing 70 % of "
          f"the gap would take that of {equivalent['equivalent'][1]:.1f}")
    print(f"  inference {1e3 * cost['predict seconds']:.3f} ms per cycle, one {case.analysis} analysis "
          f"{1e3 * cost['analysis seconds']:.2f} ms: {100 * cost['ratio']:.1f} %", flush=True)
    return result


def equivalent_members(log_sd: Any, x: dict[str, np.ndarray], y: np.ndarray, rmses: list[float]) -> dict[str, Any]:
    r"""What an RMSE of :math:`\log\hat\sigma_N` is worth in members: the RMSE against ``y`` (:math:`\log\hat\sigma_N`
    of members 1..N) of the naive :math:`\log\hat\sigma_K` of :math:`K` members of the pool (members N+1..,
    independent of the target's), bias-corrected, averaged over the pool's disjoint K-blocks, for K from 5 to 40;
    and the K (interpolated in :math:`\log K`) at which it equals each of ``rmses``."""
    pool = next(iter(x.values())).shape[1] - N
    sizes = [k for k in (5, 8, 10, 12, 15, 20, 25, 30, 40) if k <= pool]
    curve = []
    for k in sizes:
        errs = []
        for first in range(N, N + pool - k + 1, k):
            e = log_sd(x, slice(first, first + k))
            errs.append(float(np.sqrt(np.mean((e + (y - e).mean() - y) ** 2))))
        curve.append(float(np.mean(errs)))
    # The curve decreases in K: interpolate log K against the RMSE (reversed to increasing).
    equivalent = [float(np.exp(np.interp(r, curve[::-1], np.log(sizes)[::-1], left=np.nan, right=np.nan)))
                  for r in rmses]
    return {"members": sizes, "rmse": curve, "for rmse": rmses, "equivalent": equivalent}


def inference_cost(base: Path, case: Case, emulator: Any, members: dict[str, np.ndarray]) -> dict[str, float]:
    """Median time of Emulator.predict on one cycle's 5 members and of one member's analysis."""
    import torch

    from pyoops.apps import make_application
    from pyoops.config.yaml_io import load_config
    from pyoops.ensemble.eda import EDASetup, analyse_members
    from pyoops.fields.fieldset import FieldSet
    from pyoops.util.datetime import DateTime

    torch.set_num_threads(1)
    emulator.predict(members)
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        emulator.predict(members)
        times.append(time.perf_counter() - t0)
    app = make_application("cycle")
    cfg = case.cycle_config(base, base / "scratch", 1, 5, case.train, case.fixed_stddev, archive=False)
    app.validate(load_config(cfg))
    e = app.experiment
    state = e.initial_experiment_state()
    truth = e.plugin.state(e.geometry, FieldSet(state["truth"]), DateTime(state["truth time"]))
    w = e.window(0)
    truth_at = e.advance_truth(truth, e.analysis_time(0), e.obs_times(w) + [e.analysis_time(0)])
    twin = e.observe(w, truth_at)
    setup = EDASetup(cfg["model plugin"], e.cost_config(0, twin.observer), cfg["variational"],
                     {1: {v: a[0] for v, a in state["members"].items()}}, [twin.values], None, 1, ("cycle", 0))
    analyse_members(setup, [1])
    analysis = []
    for _ in range(20):
        t0 = time.perf_counter()
        analyse_members(setup, [1])
        analysis.append(time.perf_counter() - t0)
    p, a = float(np.median(times)), float(np.median(analysis))
    return {"predict seconds": p, "analysis seconds": a, "ratio": p / a}


def plots(base: Path, case: Case, y: np.ndarray, naive: np.ndarray, mu: np.ndarray, s: np.ndarray,
          bound: np.ndarray, pits: np.ndarray) -> None:
    """``eda_emulator_<model>.png``: the first held-out cycle along the first channel's first 40 points (the
    Lorenz-96 ring; for QG one row of the first layer's streamfunction), and the PIT histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    c, k = 0, 0
    row = slice(0, 40) if case.name == "lorenz96" else slice(10 * 40, 11 * 40)
    xs = np.arange(40)
    ax = axes[0]
    m, sd = mu[c, k, row], s[c, k, row]
    ax.fill_between(xs, np.exp(m - 1.645 * sd), np.exp(m + 1.645 * sd), color="C0", alpha=0.25,
                    label="emulator 90 %")
    ax.plot(xs, np.exp(m), "C0-", label="emulator median")
    ax.plot(xs, np.exp(naive[c, k, row]), "C1.:", label="naive rescaled sigma_5")
    ax.plot(xs, np.exp(bound[c, k, row]), "C2--", label="bound E[.|F_5]")
    ax.plot(xs, np.exp(y[c, k, row]), "k-", lw=1.5, label="sigma_50")
    ax.set_xlabel("grid point" if case.name == "lorenz96" else "grid point along the middle row, layer 1")
    ax.set_ylabel("background sigma")
    ax.set_title("first held-out cycle")
    ax.legend(fontsize="small")
    ax = axes[1]
    ax.hist(pits.ravel(), bins=10, range=(0, 1), density=True, color="C0", alpha=0.7)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("PIT of log sigma_50 under N(mu, s^2)")
    ax.set_title("emulator calibration (held-out cycles)")
    fig.savefig(base / f"eda_emulator_{'l96' if case.name == 'lorenz96' else case.name}.png", dpi=100)
    plt.close(fig)


def finished_series(directory: Path, cycles: int) -> tuple[np.ndarray, float, np.ndarray] | None:
    """The control's forecast RMSE of every cycle, the loop's seconds and the members' mean forecast RMSE of every
    cycle of a finished ``cycle`` run in ``directory`` (its ``statistics.nc``), or None if it has not run all
    ``cycles``."""
    import xarray as xr

    path = directory / "statistics.nc"
    if not (directory / "statistics.json").exists() or not path.exists():
        return None
    with xr.open_dataset(path) as stats:
        if stats.sizes["cycle"] != cycles:
            return None
        return (np.asarray(stats["forecast_rmse"].values), float(stats["seconds"].values.sum()),
                np.asarray(stats["forecast_mean_rmse"].values))


def stage_cycling(base: Path, case: Case, only: tuple[str, ...] | None = None,
                  twins: tuple[int, ...] | None = None) -> dict[str, Any]:
    """The cycling runs of every twin (``only``: just the runs named, ``twins``: just those twins, e.g. to share
    them between two processes); a run that has finished before (all its cycles in its ``statistics.nc``) is read,
    not run again.  The comparison is made when every run of every twin is there."""
    seeds = case.cycling.get("twins", [case.test["seeds"]])
    chosen = range(len(seeds)) if twins is None else twins
    per_twin, missing = [], False
    for k in chosen:
        twin = {**case.test, "seeds": tuple(seeds[k]),
                **{key: v for key, v in case.cycling.items() if key in ("truth spin-up", "initial sigma")}}
        directory = base / "cycling" if len(seeds) == 1 else base / "cycling" / f"twin-{k}"
        print(f"cycling twin {k} (truth, observation and EDA seeds {tuple(seeds[k])})", flush=True)
        result = cycling_twin(base, directory, case, twin, only)
        missing |= "methods" not in result
        per_twin.append({"twin": k, "seeds": list(seeds[k]), **result})
    if len(seeds) == 1:
        out = per_twin[0]
        if "methods" in out:
            plot_cycling(base, case, out.pop("series"), out)
        return out
    out = {"twins": [{k: v for k, v in t.items() if k != "series"} for t in per_twin]}
    if not missing and twins is None:
        out["across twins"] = across_twins(per_twin)
        plot_cycling(base, case, per_twin[0]["series"], out["across twins"])
    return out


def across_twins(per_twin: list[dict[str, Any]]) -> dict[str, Any]:
    r"""The paired comparison across independent twins: for each method, the twins' log ratios
    :math:`r_k = \log(\mathrm{MSE}_k / \mathrm{MSE}_k^{50})` of the control's forecast mean squared errors,
    their mean :math:`\bar r` with a Student-t 95 % interval (the twins are the independent units: within one
    twin the control's error wanders for tens of cycles), as a change in RMS error :math:`e^{\bar r/2} - 1`; the
    same for the members' mean forecast (``members' mean``)."""
    from scipy import stats

    out: dict[str, Any] = {"twins": len(per_twin), "methods": {}, "members' mean": {}}
    pairs = (("5-es", "50-es"), ("ML-es from 5", "50-es"), ("ML-es from 5", "5-es"))
    for score, key in (("methods", "rms forecast error"), ("members' mean", "members' mean rms forecast error")):
        for name, reference in pairs:
            r = np.array([math.log(t["methods"][name][key] ** 2 / t["methods"][reference][key] ** 2)
                          for t in per_twin])
            half = stats.t.ppf(0.975, r.size - 1) * r.std(ddof=1) / math.sqrt(r.size)
            change, lo, hi = (math.exp(v / 2) - 1 for v in (r.mean(), r.mean() - half, r.mean() + half))
            label = name if reference == "50-es" else f"{name} vs {reference}"
            out[score][label] = {f"change vs {reference}": change, "95 % interval": [lo, hi],
                                 "per twin": [math.exp(v / 2) - 1 for v in r]}
            print(f"  across {r.size} twins, {'control' if score == 'methods' else score}, {name}: RMS forecast "
                  f"error change vs {reference} {100 * change:+.2f} % (95 % t-interval {100 * lo:+.2f} to "
                  f"{100 * hi:+.2f} %; per twin " + ", ".join(f"{100 * (math.exp(v / 2) - 1):+.1f}" for v in r)
                  + " %)", flush=True)
        out[score]["50-es"] = {"rms forecast error": [t["methods"]["50-es"][key] for t in per_twin]}
    return out


def cycling_twin(base: Path, directory: Path, case: Case, run: dict[str, Any],
                 only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The three cycling runs of one twin (``run``: its seeds) under ``directory``, and their comparison with
    95 % block-bootstrap intervals over cycles when all three are there."""
    from pyoops.diagnostics.statistics import ratio_estimates

    cycles, spin_up = case.cycling["cycles"], case.cycling["spin-up"]
    model = str(base / "emulator" / "emulator.pt")
    runs = {"50-es": (N, {"calibration": {}}), "5-es": (M, {"calibration": {}}),
            "ML-es from 5": (M, {"emulated stddev": {"model": model, "members": M}})}
    series, seconds, mean_series = {}, {}, {}
    for name, (members, stddev) in runs.items():
        directory_run = directory / name.replace(" ", "_")
        done = finished_series(directory_run, cycles)
        if done is None and only is not None and name not in only:
            continue
        if done is None:
            cfg = case.cycle_config(base, directory_run, cycles, members, run, stddev, archive=False,
                                    spin_up=spin_up)
            cfg["resume"] = False
            pyoops.run("cycle", cfg)
            done = finished_series(directory_run, cycles)
            assert done is not None, f"{directory_run}: the cycle run left no complete statistics"
        series[name], seconds[name], mean_series[name] = done[0][spin_up:], done[1], done[2][spin_up:]
        print(f"cycling {name}: mean control forecast RMSE {series[name].mean():.4g} (loop {seconds[name]:.0f} s)",
              flush=True)
    if len(series) < len(runs):
        return {"cycles": cycles, "finished": sorted(series), "loop seconds": seconds}
    out: dict[str, Any] = {"cycles": cycles, "spin-up cycles": spin_up, "loop seconds": seconds, "methods": {}}
    ref = series["50-es"] ** 2
    for name in ("5-es", "ML-es from 5"):
        est = ratio_estimates((series[name] ** 2)[:, None], ref[:, None], rng=np.random.default_rng(0),
                              samples=2000)[0]
        change = math.sqrt(est.value) - 1
        lo, hi = (math.sqrt(v) - 1 for v in est.bootstrap)
        out["methods"][name] = {"rms forecast error": float(np.sqrt(np.mean(series[name] ** 2))),
                                "change vs 50-es": change, "95 % interval": [lo, hi],
                                "members' mean rms forecast error": float(np.sqrt(np.mean(mean_series[name] ** 2)))}
        print(f"  {name}: RMS forecast error change vs 50-es {100 * change:+.2f} % (95 % interval "
              f"{100 * lo:+.2f} to {100 * hi:+.2f} %)", flush=True)
    out["methods"]["50-es"] = {"rms forecast error": float(np.sqrt(np.mean(ref))),
                               "members' mean rms forecast error": float(np.sqrt(np.mean(mean_series["50-es"] ** 2)))}
    out["series"] = series
    return out


def plot_cycling(base: Path, case: Case, series: dict[str, np.ndarray], result: dict[str, Any]) -> None:
    """``eda_emulator_cycling[_qg].png``: running 50-cycle RMS of the control's 6-h forecast error, and the change of
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
    names = [n for n in result["methods"] if "change vs 50-es" in result["methods"][n]]
    changes = [100 * result["methods"][n]["change vs 50-es"] for n in names]
    lo = [100 * result["methods"][n]["95 % interval"][0] for n in names]
    hi = [100 * result["methods"][n]["95 % interval"][1] for n in names]
    axes[1].bar(names, changes, color=["C1", "C0"][: len(names)],
                yerr=[np.subtract(changes, lo), np.subtract(hi, changes)], capsize=6)
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set_ylabel("change in RMS forecast error vs 50-es [%]")
    axes[1].set_title("95 % t-intervals across twins" if "twins" in result else "95 % block-bootstrap intervals")
    fig.savefig(base / f"eda_emulator_cycling{'' if case.name == 'lorenz96' else '_' + case.name}.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["data", "train", "evaluate", "cycling", "all"], default="all")
    parser.add_argument("--model", choices=sorted(CASES), default="lorenz96")
    parser.add_argument("--directory", default="eda_emulator_out")
    parser.add_argument("--data-runs", default="train,test",
                        help="the data stage's runs, comma-separated (two processes may make one each)")
    parser.add_argument("--cycling-cycles", type=int, default=None,
                        help="cycles of each cycling run (default: the model's, 2100 for Lorenz-96, 310 per twin "
                             "for QG)")
    parser.add_argument("--cycling-runs", default=None,
                        help="the cycling stage's runs to make, comma-separated (default: all three)")
    parser.add_argument("--twins", default=None,
                        help="the cycling stage's twins to run, comma-separated indices (default: all; the "
                             "comparison across twins is made only then)")
    args = parser.parse_args(argv)
    base = Path(args.directory)
    base.mkdir(parents=True, exist_ok=True)
    import torch

    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, pyoops "
          f"{pyoops.__version__}, {platform.machine()}, {os.cpu_count()} cpus; load average before: "
          "%.2f %.2f %.2f" % os.getloadavg(), flush=True)
    results_file = base / "results.json"
    stages = ["data", "train", "evaluate", "cycling"] if args.stage == "all" else [args.stage]
    case = CASES[args.model]
    if args.cycling_cycles:
        case.cycling = {**case.cycling, "cycles": args.cycling_cycles}
    for stage in stages:
        if stage == "data":
            result = stage_data(base, case, tuple(args.data_runs.split(",")))
        elif stage == "cycling":
            result = stage_cycling(base, case, tuple(args.cycling_runs.split(",")) if args.cycling_runs else None,
                                   tuple(int(k) for k in args.twins.split(",")) if args.twins else None)
        else:
            result = globals()[f"stage_{stage}"](base, case)
        result["load average after"] = list(os.getloadavg())
        # Re-read before writing: another process may have recorded a stage (e.g. the other data run) meanwhile.
        results = json.loads(results_file.read_text()) if results_file.exists() else {}
        results[stage] = {**results.get(stage, {}), **result} if stage == "data" else result
        scratch = results_file.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(json.dumps(results, indent=1, default=float) + "\n")
        scratch.replace(results_file)
    print("load average after: %.2f %.2f %.2f" % os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
