#!/usr/bin/env bash
# QG twin experiment (OOPS's QG toy model, 40 x 20 grid, two layers).
# Part 1: a truth with the truth depths 4000/6000 m, synthetic streamfunction, wind and
# wind-speed observations over the window 2010-01-11T00-12, a background forecast of the
# imperfect model (4500/5500 m) from a perturbed state, and a 10-member ensemble.
# Part 2: 3D-Var, 4D-Var and hybrid 4D-Ens-Var with the same observations and background,
# scored against the truth, with maps of truth, background, analysis and increment.
# Outputs go to tutorials/qg/output/ (netCDF files, JSON cost traces, PNGs).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p output
pyoops forecast truth.yaml                          # 10.5 days: baroclinic waves develop
pyoops hofx makeobs.yaml                            # 390 observations in the 12-hour window
pyoops gen-ens-pert-b background_perturbation.yaml  # truth on 2010-01-10 + a draw from B
pyoops forecast background.yaml                     # the imperfect model through the window
pyoops gen-ens-pert-b ens_perturbation.yaml         # 10 more perturbed states
pyoops ensemble-forecast ens_forecast.yaml          # the ensemble, one batched forecast

# Part 2: data assimilation
pyoops variational 3dvar.yaml                       # background at 06:00, static balanced B
pyoops variational 4dvar.yaml                       # two outer loops, QgTLM and its adjoint
pyoops forecast 4dvar_forecast.yaml                 # the 4D-Var analysis through the window
pyoops variational 4denvar.yaml                     # hybrid: 0.5 static + 0.5 localized ensemble
python plot_qg.py --check                           # RMSE table; output/maps_*.png
echo "QG tutorial outputs are in $(pwd)/output"
