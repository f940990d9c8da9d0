"""Shallow-water twin experiments through the variational application.

One nature run, a background with balanced errors, a 10-member ensemble sampling the same
errors (all forecast over a 6-hour window) and synthetic observations of height, wind (generic
``Identity``) and wind speed (generic ``WindSpeed``) made with ``pyoops hofx`` (``make obs``) are
built once per module in a temporary directory.  Then:

* hybrid 4D-EnVar (7 sub-window times, no linear model), B = interpolation (15x15 -> 30x30) of
  [0.5 x balanced static B + 0.5 x localized 4-D ensemble B]: analysis RMSE against the truth is
  below the background's for h, u and v at every sub-window time;
* hybrid 3D-EnVar with the inner loop at 15x15 (``iterations[0].geometry``) and a 15x15 ensemble
  (the 30x30 members coarse-grained): same check at the analysis time;
* 4D-Var with the shallow-water TL/AD and the balanced static B: same check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pyoops
from pyoops.fields.fieldset import FieldSet
from pyoops.generic.forecast import PostProcessor, forecast
from pyoops.util.datetime import DateTime, Duration
from pyoops.util.random import generator
from pyoops_shallow_water import ShallowWaterGeometry, ShallowWaterModel, ShallowWaterState
from pyoops_shallow_water.numerics import geostrophic_winds
from pyoops_shallow_water.state import balanced_random_height

T0 = DateTime("2010-01-01T00:00:00Z")
TIMES = [T0 + Duration(f"PT{k}H") for k in range(7)]
MID = TIMES[3]
NMEMBERS = 10
F, G = 1.0e-4, 9.81
SIGMA_H = 0.2  # RMS height error of the background and of the ensemble perturbations (m)
MODEL = {"name": "ShallowWater", "tstep": "PT10M", "hyperdiffusion": 1.0e12}
#: Observers: name, simulated variables, locations per time, frequency, error, seed of the locations.
NETWORK = (("height", ["h"], 60, "PT1H", 0.02, 5), ("wind", ["u", "v"], 30, "PT2H", 0.1, 6),
           ("speed", ["wind_speed"], 30, "PT3H", 0.1, 8))
#: Height and wind through the generic Identity (bilinear interpolation), speed through the generic WindSpeed.
OPERATOR = {"height": "Identity", "wind": "Identity", "speed": "WindSpeed"}


def balanced_perturbation(geometry, seed: int, nmembers: int | None = None) -> FieldSet:
    batch = () if nmembers is None else (nmembers,)
    h = balanced_random_height(geometry, generator(seed, "background error"), 300e3, SIGMA_H, batch)
    u, v = geostrophic_winds(h, F, G, geometry.dx, geometry.dy)
    return FieldSet({"h": h, "u": u, "v": v}, copy=False)


def run_states(geometry, fields: FieldSet, template: str) -> None:
    """Forecast ``fields`` (optionally batched) 6 hours from T0, writing every hour."""
    state = ShallowWaterState(geometry, fields, T0)
    forecast(ShallowWaterModel(MODEL, geometry), state, Duration("PT6H"),
             post=[_HourlyWriter(template)])


class _HourlyWriter(PostProcessor):
    def __init__(self, template: str):
        self.template = template

    def process(self, state: Any) -> None:
        if (state.time - T0) % Duration("PT1H"):
            return
        fields = state.fields
        if state.nmembers:
            for m in range(state.nmembers):
                ShallowWaterState(state.geometry, fields.map(lambda a, m=m: a[m]), state.time).write(
                    self.template.replace("%date%", str(state.time)).replace("%mem%", str(m + 1)))
        else:
            state.write(self.template.replace("%date%", str(state.time)))


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    """Truth, background, a 30x30 4-D ensemble (and its 15x15 version at MID), 4-D observations."""
    d = tmp_path_factory.mktemp("sw_twin")
    fine, coarse = ShallowWaterGeometry({"nx": 30, "ny": 30}), ShallowWaterGeometry({"nx": 15, "ny": 15})
    truth = ShallowWaterState.from_config(fine, {"date": str(T0), "analytic init": {
        "method": "turbulence", "seed": 1, "amplitude": 0.5}}).fields
    background = truth + balanced_perturbation(fine, 2)
    run_states(fine, truth, str(d / "truth.%date%.nc"))
    run_states(fine, background, str(d / "bg.%date%.nc"))
    pert = balanced_perturbation(fine, 3, NMEMBERS)
    members = FieldSet({v: background[v] + pert[v] for v in background})
    run_states(fine, members, str(d / "ens.%mem%.%date%.nc"))
    # The 15x15 ensemble of the coarse inner loop: the 30x30 members at MID coarse-grained by least squares
    # (the left inverse of the bilinear interpolation 15x15 -> 30x30), as the interpolation block does.
    w = coarse.interpolation_matrix(fine.grid_locations())
    normal = (w.T @ w).toarray()
    for m in range(NMEMBERS):
        member = ShallowWaterState.from_config(fine, {"date": str(MID), "filename": str(d / f"ens.{m + 1}.{MID}.nc")})
        fields = FieldSet({v: np.linalg.solve(normal, w.T @ member.fields[v].ravel()).reshape(coarse.shape)
                           for v in "huv"})
        ShallowWaterState(coarse, fields, MID).write(str(d / f"ens15.{m + 1}.{MID}.nc"))
    observers = []
    for name, variables, density, frequency, error, seed in NETWORK:
        observers.append({
            "obs space": {"name": name, "simulated variables": variables,
                          "generate": {"obs frequency": frequency, "obs density": density, "obs error": error,
                                       "locations": "random", "random seed": seed},
                          "obsdataout": {"filename": str(d / f"obs_{name}.nc")}},
            "obs operator": {"name": OPERATOR[name]}, "obs error": {"covariance model": "diagonal"}})
    pyoops.run("hofx", {
        "model plugin": "shallow_water", "time window": {"begin": str(T0), "length": "PT6H"},
        "geometry": {"nx": 30, "ny": 30},
        "initial condition": {"date": str(T0), "filename": str(d / f"truth.{T0}.nc")},
        "model": MODEL,
        "observations": {"observers": observers},
        "make obs": True, "obs perturbations": True, "obs perturbations seed": 7})
    return d


def observers(d: Path, tag: str) -> list[dict[str, Any]]:
    return [{"obs space": {"name": name, "simulated variables": variables,
                           "obsdatain": {"filename": str(d / f"obs_{name}.nc")},
                           "obsdataout": {"filename": str(d / f"obs_{name}.{tag}.nc")}},
             "obs operator": {"name": OPERATOR[name]}, "obs error": {"covariance model": "diagonal"}}
            for name, variables, *_ in NETWORK]


def static_covariance(length: float = 100e3) -> dict[str, Any]:
    """Balanced static B: sigma_psi = (g/f) 0.2 m, sigma_chi = 0.001 sigma_psi, sigma_hu = 0.02 m.

    The errors of the twin are balanced random heights with a 300 km spectral peak, so this
    isotropic 100 km Gaussian B is a plausible but not exact model of them."""
    return {"saber central block": {"saber block name": "spectral correlation", "length scale": length},
            "saber outer blocks": [
                {"saber block name": "StdDev",
                 "read": {"value": {"psi": G / F * SIGMA_H, "chi": 1e-3 * G / F * SIGMA_H, "hu": 0.1 * SIGMA_H}}},
                {"saber block name": "geostrophic balance", "f": F, "g": G}]}


def ensemble_component(length: float = 100e3) -> dict[str, Any]:
    """Localized ensemble B; one localization for h, u and v together (``duplicate variables``), so that
    the localization keeps the ensemble's cross-covariances between height and wind."""
    return {"saber central block": {"saber block name": "Ensemble", "localization": {
        "saber central block": {"saber block name": "spectral correlation", "length scale": length},
        "saber outer blocks": [{"saber block name": "duplicate variables", "variable groupings": [
            {"group variable name": "loc", "group components": ["h", "u", "v"]}]}]}}}


def hybrid(static_weight: float) -> dict[str, Any]:
    return {"saber block name": "Hybrid", "components": [
        {"covariance": static_covariance(), "weight": {"value": static_weight}},
        {"covariance": ensemble_component(), "weight": {"value": 1.0 - static_weight}}]}


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def read(path: Path | str) -> dict[str, np.ndarray]:
    import netCDF4

    with netCDF4.Dataset(path) as ds:
        return {v: np.array(ds[v][:]) for v in "huv"}


def variational(d: Path, cost_function: dict[str, Any], tag: str, iterations: list[dict[str, Any]]) -> dict:
    cfg = {"model plugin": "shallow_water", "cost function": cost_function,
           "variational": {"minimizer": {"algorithm": "DRPCG"}, "iterations": iterations},
           "output": {"filename": str(d / f"an.{tag}.%date%.nc")}}
    return pyoops.run("variational", cfg)


def scores(d: Path, tag: str, times: list[DateTime]) -> list[dict[str, tuple[float, float]]]:
    out = []
    for t in times:
        truth, bg, an = read(d / f"truth.{t}.nc"), read(d / f"bg.{t}.nc"), read(d / f"an.{tag}.{t}.nc")
        out.append({v: (rmse(bg[v], truth[v]), rmse(an[v], truth[v])) for v in "huv"})
    return out


def test_hybrid_4denvar_dual_resolution_twin(twin):
    """Hybrid 4D-EnVar, B = W (0.5 B_static + 0.5 B_ens) W^T with W the interpolation 15x15 -> 30x30 and
    the 30x30 4-D ensemble brought to 15x15 by the interpolation's left inverse: the analysis RMSE is below
    the background's for h, u and v at all 7 sub-window times."""
    cost = {
        "cost type": "4D-Ens-Var", "subwindow": "PT1H",
        "time window": {"begin": str(T0), "length": "PT6H"},
        "geometry": {"nx": 30, "ny": 30}, "analysis variables": ["h", "u", "v"],
        "background": {"states": [{"date": str(t), "filename": str(twin / f"bg.{t}.nc")} for t in TIMES]},
        "background error": {
            "covariance model": "SABER",
            "ensemble": {"members from template": {"template": {"states": [
                {"date": str(t), "filename": str(twin / f"ens.%mem%.{t}.nc")} for t in TIMES]},
                "nmembers": NMEMBERS}},
            "saber central block": hybrid(0.5),
            "saber outer blocks": [{"saber block name": "interpolation", "inner geometry": {"nx": 15, "ny": 15}}]},
        "observations": {"observers": observers(twin, "4denvar")}}
    summary = variational(twin, cost, "4denvar", [{"ninner": 40, "gradient norm reduction": 1e-6}])
    assert summary["final J"] < 0.5 * summary["initial J"]
    result = scores(twin, "4denvar", TIMES)
    for t, s in zip(TIMES, result):
        for v, (b, a) in s.items():
            assert a < b, (str(t), v, b, a)
    # Measured RMSE background -> analysis at the middle of the window:
    # h 0.209 -> 0.082, u 0.352 -> 0.206, v 0.323 -> 0.182.
    mid = result[3]
    assert all(a < 0.8 * b for b, a in mid.values()), mid


def test_hybrid_3denvar_with_coarse_inner_loop(twin):
    """3D-EnVar at the middle of the window with the inner loop at 15x15 (``iterations[0].geometry``):
    B (hybrid of the balanced static B and a 15x15 ensemble, localized) lives on the inner grid and the
    increment is interpolated to 30x30; the analysis beats the background for h, u and v."""
    cost = {
        "cost type": "3D-Var", "time window": {"begin": str(T0), "length": "PT6H"},
        "geometry": {"nx": 30, "ny": 30}, "analysis variables": ["h", "u", "v"],
        "background": {"date": str(MID), "filename": str(twin / f"bg.{MID}.nc")},
        "background error": {
            "covariance model": "SABER",
            "ensemble": {"members from template": {
                "template": {"date": str(MID), "filename": str(twin / f"ens15.%mem%.{MID}.nc")},
                "nmembers": NMEMBERS}},
            "saber central block": hybrid(0.5)},
        "observations": {"observers": observers(twin, "3denvar")}}
    summary = variational(twin, cost, "3denvar", [{"ninner": 40, "gradient norm reduction": 1e-6,
                                                   "geometry": {"nx": 15, "ny": 15}}])
    assert summary["final J"] < summary["initial J"]
    (mid,) = scores(twin, "3denvar", [MID])
    # Measured RMSE background -> analysis: h 0.209 -> 0.090, u 0.352 -> 0.216, v 0.323 -> 0.193.
    assert all(a < 0.85 * b for b, a in mid.values()), mid


def test_4dvar_with_the_shallow_water_tlm(twin):
    """Strong-constraint 4D-Var with ShallowWaterTLM (36 TL/AD steps per iteration) and the balanced static B:
    the analysis at the start of the window beats the background for h, u and v (measured with 20
    iterations: h 0.200 -> 0.097, u 0.356 -> 0.219, v 0.326 -> 0.207)."""
    cost = {"cost type": "4D-Var", "time window": {"begin": str(T0), "length": "PT6H"},
            "geometry": {"nx": 30, "ny": 30}, "analysis variables": ["h", "u", "v"],
            "model": MODEL,
            "linear model": {"name": "ShallowWaterTLM", "tstep": "PT10M", "hyperdiffusion": 1.0e12},
            "background": {"date": str(T0), "filename": str(twin / f"bg.{T0}.nc")},
            "background error": {"covariance model": "SABER", **static_covariance()},
            "observations": {"observers": observers(twin, "4dvar")}}
    summary = variational(twin, cost, "4dvar", [{"ninner": 20, "gradient norm reduction": 1e-6}])
    assert summary["final J"] < 0.2 * summary["initial J"]
    (start,) = scores(twin, "4dvar", [T0])
    assert all(a < 0.75 * b for b, a in start.values()), start
