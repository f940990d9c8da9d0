#!/usr/bin/env bash
# Lorenz-96 twin experiment, part 1: spin-up, truth run, synthetic observations,
# a background forecast with model error and its departures from the observations.
# Outputs go to tutorials/lorenz96/output/ (netCDF files and twin.png).
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
echo "Lorenz-96 tutorial outputs are in $(pwd)/output"
