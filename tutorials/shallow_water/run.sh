#!/usr/bin/env bash
# Shallow-water twin experiment: nature run, background and ensemble drawn from the
# balanced static B, synthetic height and wind observations, the Dirac responses of B
# (static with geostrophic balance, at full and half resolution, and the hybrid), then 3D-Var,
# hybrid 3D-EnVar (inner loop at 15x15) and hybrid 4D-EnVar (dual-resolution B).
# Outputs go to tutorials/shallow_water/output/ (netCDF files, dirac.png, twin.png).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p output
pyoops forecast truth.yaml             # 1-day spin-up of balanced turbulence, then hourly to the window's end
pyoops gen-ens-pert-b bg_perturb.yaml  # initial background (a day before) = truth + a draw from the static B
pyoops forecast background.yaml        # 30-hour background forecast, hourly in the window
python make_ensemble.py                # 10 members from B, their forecasts, and a 15x15 copy at 03:00
pyoops hofx makeobs.yaml               # h hourly at 60 points, (u, v) every 2 h and speed every 3 h at 30
pyoops dirac dirac.yaml                # static balanced B on a height impulse
pyoops dirac dirac_dual.yaml           # the same B modelled at 15x15 and interpolated
pyoops dirac dirac_hybrid.yaml         # hybrid B (static + localized ensemble) on the same impulse
python plot_dirac.py                   # output/dirac.png
pyoops variational 3dvar.yaml          # static B, full resolution
pyoops variational 3denvar.yaml        # hybrid, inner loop at 15x15
pyoops variational 4denvar.yaml        # hybrid, 7 sub-window times, B at 15x15 through interpolation
python scores.py                       # RMSE table and output/twin.png
echo "Shallow-water tutorial outputs are in $(pwd)/output"
