"""Build the 10-member ensemble of the shallow-water EnVar tutorials.

1. ``gen-ens-pert-b`` on ``ens_perturb.yaml``: 10 draws from the balanced static B
   added to the initial background at 2009-12-31T00;
2. the 30-hour ensemble forecast of ``ens_forecast.yaml`` (``ensemble-forecast``: all
   members in one batched model call), writing every hour through the window: the
   4-D members;
3. the 15x15 ensemble of the coarse inner loop of ``3denvar.yaml`` at
   2010-01-01T03: each 30x30 member coarse-grained by least squares, i.e. by the
   left inverse :math:`(W^T W)^{-1} W^T` of the bilinear interpolation ``W`` from the
   15x15 grid to the 30x30 grid (what the SABER ``interpolation`` block does to
   ensembles brought inwards).

Run from ``tutorials/shallow_water`` after ``background.yaml``.
"""

from __future__ import annotations

from pathlib import Path

import scipy.sparse.linalg as spla
import yaml

import pyoops
from pyoops.fields.fieldset import FieldSet
from pyoops_shallow_water import ShallowWaterGeometry, ShallowWaterState

here = Path(__file__).resolve().parent
MID = "2010-01-01T03:00:00Z"


def load(name: str) -> dict:
    with open(here / name) as f:
        return yaml.safe_load(f)


perturb = load("ens_perturb.yaml")
summary = pyoops.run("gen-ens-pert-b", perturb)
print(f"gen-ens-pert-b: {summary['members']} members, perturbation rms {summary['perturbation rms mean']:.3f}")
summary = pyoops.run("ensemble-forecast", load("ens_forecast.yaml"))
print(f"ensemble forecast: {perturb['members']} members, {len(summary['outputs'])} files")

fine, coarse = ShallowWaterGeometry({"nx": 30, "ny": 30}), ShallowWaterGeometry({"nx": 15, "ny": 15})
w = coarse.interpolation_matrix(fine.grid_locations())  # 900 x 225, bilinear, periodic
normal = spla.splu((w.T @ w).tocsc())
for member in range(1, perturb["members"] + 1):
    state = ShallowWaterState.from_config(fine, {"date": MID, "filename": f"output/ens.{member}.{MID}.nc"})
    fields = FieldSet({v: normal.solve(w.T @ state.fields[v].ravel()).reshape(coarse.shape) for v in "huv"})
    ShallowWaterState(coarse, fields, state.time).write(f"output/ens15.{member}.{MID}.nc")
print(f"coarse-grained ensemble: output/ens15.*.{MID}.nc (15x15)")
