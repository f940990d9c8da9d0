#!/usr/bin/env bash
# Lorenz-96 twin experiment.
# Part 1: spin-up, truth run, synthetic observations, a background forecast with
# model error and its departures from the observations.
# Part 2: data assimilation with the same truth, observations and background:
# 3D-Var, 4D-Var, 3D-EnVar, 4D-EnVar and hybrid 3D-EnVar, scored against the truth.
# Outputs go to tutorials/lorenz96/output/ (netCDF files, JSON cost traces, PNGs).
# The beta sweep (python beta_sweep.py) is a separate, longer experiment.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p output
pyoops forecast spinup.yaml          # 100 days from rest: onto the attractor
pyoops forecast truth.yaml           # 4-day nature run, a file every 6 h
pyoops hofx makeobs3d.yaml           # 40 obs at 2010-01-02T00, error 0.4, perturbed
pyoops hofx makeobs4d.yaml           # 20 random locations every 6 h over one day
pyoops forecast background.yaml      # 3-day forecast with F = 8.5 (model error)
pyoops hofx hofx_background.yaml     # y - H(x_b) for the 3-D observations
python plot_twin.py                  # output/twin.png

# Part 2: data assimilation
pyoops variational 3dvar.yaml        # 3D-Var at 2010-01-02T00, static B
pyoops variational 4dvar.yaml        # 4D-Var over 2010-01-01, two outer loops
pyoops forecast 4dvar_forecast.yaml  # the 4D-Var analysis carried through the window
pyoops gen-ens-pert-b ens_perturb.yaml     # 10 perturbed initial states
pyoops ensemble-forecast ens_forecast.yaml  # their forecasts (F = 8.5), one batched run
pyoops variational 3denvar.yaml      # 3D-EnVar: localized ensemble B
pyoops variational 4denvar.yaml      # 4D-EnVar: 4-D ensemble B, no tangent-linear model
pyoops variational hybrid.yaml       # hybrid 3D-EnVar: 0.1 B_static + 0.9 B_ens
python scores.py --check             # RMSE table; output/analyses.png
echo "Lorenz-96 tutorial outputs are in $(pwd)/output"
