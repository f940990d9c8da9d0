"""Where does the hybrid win?  A β sweep of 3D hybrid-EnVar on Lorenz-96.

    python tutorials/lorenz96/beta_sweep.py          # about a minute on 2 cores (38 s of CPU)

A self-contained experiment (it does not need ``run.sh``) with fixed seeds.  Over
``NDATES`` independent analysis times along one long truth run it compares, for every
β, the 3-D analysis with the hybrid background-error covariance

.. math::

    \\mathbf{B}_h = (1 - \\beta)\\,\\mathbf{B}_s + \\beta\\,\\mathbf{B}_e ,

(the SABER ``Hybrid`` block with weights ``1 - β`` and ``β``), without and with
localization of the ensemble covariance :math:`\\mathbf{B}_e`.  At every analysis time
:math:`t_a`:

* 11 states are drawn around the truth at :math:`t_a - ` ``LEAD`` with
  ``gen-ens-pert-b`` (:math:`\\mathcal{N}(0, \\sigma_0^2 \\mathbf{C}_{0.05})`) and
  forecast to :math:`t_a` with the (perfect) model: member 11 is the *background*
  (the control forecast), members 1-10 the *ensemble*.  The truth is statistically
  one more member, so the ensemble spread matches the background error on average;
* all 40 grid points are observed at :math:`t_a` with error 0.4 (``hofx``, ``make obs``);
* ``variational`` (3D-Var cost type, DRPCG) runs with the Hybrid covariance for every
  β in ``BETAS`` and for localization "none" and a Gaussian ``spectral correlation``
  of length ``LOC_LENGTH``.

The static :math:`\\mathbf{B}_s = \\sigma_s^2 \\mathbf{C}_{L_s}` has
:math:`\\sigma_s` = the root-mean-square background error over all dates (a
climatological standard deviation) and the Gaussian length :math:`L_s` from
``STATIC_LENGTHS`` that gives the best pure 3D-Var (β = 0): the static B is tuned,
so that the hybrid has to beat a tuned 3D-Var.

The analysis RMSE against the truth is averaged over the dates.  Results: a table on
stdout, ``output/beta_sweep.png`` (RMSE against β, one curve per localization) and
``output/beta_sweep/results.json``; every intermediate file is in
``output/beta_sweep/``.  Everything goes through :func:`pyoops.run` with dict
configurations (the YAML files of the tutorial, as Python dictionaries).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np

import pyoops
from pyoops.util.datetime import DateTime, Duration

# Experiment sizes ---------------------------------------------------------------------------
NDATES = 40                      # independent analysis times
SPACING = Duration("P4D")        # between analysis times (about one model time unit)
LEAD = Duration("P2D")           # forecast length of the background and the ensemble
NMEMBERS = 10                    # ensemble size
SIGMA0 = 0.4                     # std. dev. of the initial perturbations
PERT_LENGTH = 0.05               # their Gaussian correlation length
OBS_ERROR = 0.4                  # all 40 variables observed with this error
BETAS = [0.0, 0.25, 0.5, 0.75, 0.9, 1.0]
LOC_LENGTH = 0.2                 # localization: Gaussian spectral correlation length
STATIC_LENGTHS = [0.01, 0.02, 0.03, 0.05]  # candidates for the static correlation length
START = DateTime("2010-01-01T00:00:00Z")   # the truth starts here (after 100 days of spin-up)

HERE = Path(__file__).resolve().parent
OUT = HERE / "output" / "beta_sweep"
GEOMETRY = {"resol": 40}
MODEL = {"name": "Lorenz96", "f": 8.0, "tstep": "PT6H"}
PLUGIN = {"model plugin": "lorenz96"}


def read_x(path: Path) -> np.ndarray:
    with netCDF4.Dataset(path) as ds:
        return np.asarray(ds["x"][:], dtype=float)


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def truth_file(date: DateTime) -> Path:
    return OUT / f"truth.{date}.nc"


def make_truth() -> list[DateTime]:
    """Spin-up (100 days from rest) and a truth run through every initial and analysis time."""
    pyoops.run("forecast", {
        **PLUGIN, "geometry": GEOMETRY, "model": MODEL,
        "initial condition": {"date": "2009-09-23T00:00:00Z",
                              "analytic init": {"method": "rest-perturbed", "perturbation": 0.01}},
        "forecast length": "P100D",
        "output": {"filename": str(OUT / "spinup.%date%.nc")}})
    length = SPACING * (NDATES - 1) + LEAD
    pyoops.run("forecast", {
        **PLUGIN, "geometry": GEOMETRY, "model": MODEL,
        "initial condition": {"date": str(START), "filename": str(OUT / f"spinup.{START}.nc")},
        "forecast length": str(length),
        "output": {"filename": str(OUT / "truth.%date%.nc"), "frequency": "P2D"}})
    return [START + LEAD + SPACING * i for i in range(NDATES)]


def make_date(i: int, analysis_time: DateTime) -> dict[str, Any]:
    """Background, ensemble and observations for one analysis time."""
    d = OUT / f"date{i:02d}"
    initial_time = analysis_time - LEAD
    pyoops.run("gen-ens-pert-b", {
        **PLUGIN, "geometry": GEOMETRY,
        "background": {"date": str(initial_time), "filename": str(truth_file(initial_time))},
        "background error": {"covariance model": "SABER",
                             "saber central block": {"saber block name": "spectral correlation",
                                                     "length scale": PERT_LENGTH},
                             "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": SIGMA0}}]},
        "members": NMEMBERS + 1, "seed": 1000 + i,
        "output": {"filename": str(d / "init.%mem%.nc")}})
    for m in range(1, NMEMBERS + 2):
        pyoops.run("forecast", {
            **PLUGIN, "geometry": GEOMETRY, "model": MODEL,
            "initial condition": {"date": str(initial_time), "filename": str(d / f"init.{m}.nc")},
            "forecast length": str(LEAD),
            "output": {"filename": str(d / f"fc.{m}.nc")}})
    pyoops.run("hofx", {
        **PLUGIN, "geometry": GEOMETRY,
        "time window": {"begin": str(analysis_time - Duration("PT3H")), "length": "PT6H"},
        "state": {"date": str(analysis_time), "filename": str(truth_file(analysis_time))},
        "observations": {"observers": [{
            "obs space": {"name": "grid", "simulated variables": ["x"],
                          "generate": {"begin": "PT3H", "obs frequency": "PT6H", "obs density": 40,
                                       "obs error": OBS_ERROR},
                          "obsdataout": {"filename": str(d / "obs.nc")}},
            "obs operator": {"name": "Identity"},
            "obs error": {"covariance model": "diagonal"}}]},
        "make obs": True, "obs perturbations": True, "obs perturbations seed": 2000 + i})
    truth = read_x(truth_file(analysis_time))
    background = read_x(d / f"fc.{NMEMBERS + 1}.nc")
    ensemble = np.array([read_x(d / f"fc.{m}.nc") for m in range(1, NMEMBERS + 1)])
    return {"dir": d, "time": analysis_time, "truth": truth, "background": background,
            "background rmse": rmse(background, truth),
            "spread": float(np.sqrt(np.mean(ensemble.var(axis=0, ddof=1))))}


def static_covariance(sigma: float, length: float) -> dict[str, Any]:
    return {"saber central block": {"saber block name": "spectral correlation", "length scale": length},
            "saber outer blocks": [{"saber block name": "StdDev", "read": {"value": sigma}}]}


def ensemble_covariance(case: dict[str, Any], localization: float | None) -> dict[str, Any]:
    block: dict[str, Any] = {"saber block name": "Ensemble"}
    if localization is not None:
        block["localization"] = {"saber central block": {"saber block name": "spectral correlation",
                                                         "length scale": localization}}
    template = {"date": str(case["time"]), "filename": str(case["dir"] / "fc.%mem%.nc")}
    return {"ensemble": {"members from template": {"template": template, "pattern": "%mem%",
                                                   "nmembers": NMEMBERS}},
            "saber central block": block}


def analysis_rmse(case: dict[str, Any], covariance: dict[str, Any]) -> float:
    """One 3D-Var with the given ``background error``; the analysis RMSE against the truth."""
    t = case["time"]
    summary = pyoops.run("variational", {
        **PLUGIN,
        "cost function": {
            "cost type": "3D-Var",
            "time window": {"begin": str(t - Duration("PT3H")), "length": "PT6H"},
            "geometry": GEOMETRY, "analysis variables": ["x"],
            "background": {"date": str(t), "filename": str(case["dir"] / f"fc.{NMEMBERS + 1}.nc")},
            "background error": {"covariance model": "SABER", **covariance},
            "observations": {"observers": [{
                "obs space": {"name": "grid", "simulated variables": ["x"],
                              "obsdatain": {"filename": str(case["dir"] / "obs.nc")}},
                "obs operator": {"name": "Identity"},
                "obs error": {"covariance model": "diagonal"}}]}},
        "variational": {"minimizer": {"algorithm": "DRPCG"},
                        "iterations": [{"ninner": 60, "gradient norm reduction": 1e-8}]}})
    return rmse(summary["analysis"][0].fields["x"], case["truth"])


def hybrid(sigma: float, length: float, case: dict[str, Any], beta: float,
           localization: float | None) -> dict[str, Any]:
    """B_h = (1 - β) B_s + β B_e as a two-component Hybrid block."""
    return {"saber central block": {
        "saber block name": "Hybrid",
        "components": [{"covariance": static_covariance(sigma, length), "weight": {"value": 1.0 - beta}},
                       {"covariance": ensemble_covariance(case, localization), "weight": {"value": beta}}]}}


def plot(table: dict[str, list[float]], background: float, static_length: float, filename: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.4), constrained_layout=True)
    for (label, values), style in zip(table.items(), ("C3o-", "C0s-")):
        ax.plot(BETAS, values, style, label=label)
        k = int(np.argmin(values))
        ax.plot(BETAS[k], values[k], "k*", ms=12)
    ax.axhline(OBS_ERROR, color="0.5", ls="--", lw=0.8, label=f"observation error ({OBS_ERROR})")
    ax.set_xlabel(r"$\beta$ (weight of the ensemble covariance)")
    ax.set_ylabel("analysis RMSE against the truth")
    ax.set_title(f"Lorenz-96 3D hybrid-EnVar, N = {NMEMBERS}, mean over {NDATES} dates "
                 f"(background RMSE {background:.2f})\n"
                 rf"$B_h = (1-\beta)B_s + \beta B_e$, $B_s$: Gaussian $L_s$ = {static_length}", fontsize=10)
    ax.legend(fontsize=8)
    fig.savefig(filename, dpi=100)
    plt.close(fig)


def main() -> None:
    logging.getLogger("pyoops").setLevel(logging.WARNING)
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dates = make_truth()
    cases = [make_date(i, t) for i, t in enumerate(dates)]
    background = float(np.mean([c["background rmse"] for c in cases]))
    sigma = float(np.sqrt(np.mean([c["background rmse"] ** 2 for c in cases])))
    spread = float(np.mean([c["spread"] for c in cases]))
    errors = np.array([c["background"] - c["truth"] for c in cases])
    lag_correlation = [float(np.mean(errors * np.roll(errors, lag, axis=1)) / np.mean(errors ** 2))
                       for lag in range(4)]
    print(f"{NDATES} analysis times {dates[0]} ... {dates[-1]}, {NMEMBERS} members, lead {LEAD}")
    print(f"mean background RMSE {background:.3f}, mean ensemble spread {spread:.3f}, sigma_s = {sigma:.3f}")
    print("background-error correlation at 0, 1, 2, 3 grid lengths: "
          + ", ".join(f"{c:.2f}" for c in lag_correlation))
    print(f"ensembles and observations made in {time.perf_counter() - started:.1f} s")

    # Tune the static correlation length on pure 3D-Var (β = 0).
    static = {}
    for length in STATIC_LENGTHS:
        static[length] = float(np.mean([analysis_rmse(c, static_covariance(sigma, length)) for c in cases]))
    print("static 3D-Var: " + ", ".join(f"L_s = {k}: {v:.3f}" for k, v in static.items()))
    length = min(static, key=static.get)

    labels = {None: "no localization", LOC_LENGTH: f"localization L = {LOC_LENGTH}"}
    table: dict[str, list[float]] = {}
    per_date: dict[str, list[list[float]]] = {}
    for loc, label in labels.items():
        rows = []
        for beta in BETAS:
            if beta == 0.0:
                rows.append([analysis_rmse(c, static_covariance(sigma, length)) for c in cases])
            else:
                rows.append([analysis_rmse(c, hybrid(sigma, length, c, beta, loc)) for c in cases])
        per_date[label] = rows
        table[label] = [float(np.mean(r)) for r in rows]
    elapsed = time.perf_counter() - started

    print()
    print(f"mean analysis RMSE over {NDATES} dates (background {background:.3f}); static B: "
          f"sigma_s = {sigma:.3f}, L_s = {length}")
    print(f"{'beta':>6} " + " ".join(f"{label:>22}" for label in table))
    for k, beta in enumerate(BETAS):
        print(f"{beta:6.2f} " + " ".join(f"{values[k]:22.3f}" for values in table.values()))
    for label, values in table.items():
        k = int(np.argmin(values))
        wins = sum(np.array(per_date[label][k]) < np.minimum(np.array(per_date[label][0]),
                                                             np.array(per_date[label][-1])))
        print(f"{label}: best beta = {BETAS[k]} (RMSE {values[k]:.3f}; better than both beta = 0 and 1 "
              f"on {wins} of {NDATES} dates)")
    plot(table, background, length, HERE / "output" / "beta_sweep.png")
    results = {"ndates": NDATES, "members": NMEMBERS, "lead": str(LEAD), "sigma0": SIGMA0,
               "obs error": OBS_ERROR, "background rmse": background, "ensemble spread": spread,
               "sigma_s": sigma, "background error lag correlation": lag_correlation, "static lengths": {str(k): v for k, v in static.items()}, "L_s": length,
               "localization length": LOC_LENGTH, "betas": BETAS, "analysis rmse": table,
               "analysis rmse per date": per_date, "seconds": elapsed}
    (OUT / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {HERE / 'output' / 'beta_sweep.png'} and {OUT / 'results.json'} ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
