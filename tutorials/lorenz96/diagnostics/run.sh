#!/bin/sh
# Reading the diagnostics (docs/tutorials/lorenz96_diagnostics.rst). Run from this directory:
#   cd tutorials/lorenz96/diagnostics && sh run.sh
# About 3 minutes (four cycles of 2000 3D-Var analyses, four diagnostics).
set -e
pyoops cycle reference.yaml --quiet          # (a) sigma_o and B as in the tests, archive on
python make_given_obs.py                     # the same observations, ObsError x sqrt(2)
pyoops cycle misspecified.yaml --quiet       # (b) R x 2 and B x 0.5
pyoops cycle r2_only.yaml --quiet            # (c) R x 2 alone
pyoops cycle b_half_only.yaml --quiet        # (d) B x 0.5 alone
for run in reference misspecified r2_only b_half_only; do
    pyoops obs-diagnostics diag_$run.yaml
done
python summary.py                            # estimates against assumed and actual variances
