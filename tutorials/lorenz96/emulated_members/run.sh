#!/bin/sh
# Emulated EDA members (docs/emulated_members.rst). Run from this directory:
#   cd tutorials/lorenz96/emulated_members && sh run.sh
# About 3 minutes on one core; needs pyoops[ml] (PyTorch CPU) for the training and the hybrid run.
set -e
pyoops cycle full.yaml --quiet                  # training data: the full 20-member ETKF, analyses archived
pyoops train-member-generator train.yaml        # the stochastic flow (about a minute)
pyoops cycle full20.yaml --quiet                # on another twin: the full 20 ...
pyoops cycle real10.yaml --quiet                # ... 10 members alone ...
pyoops cycle hybrid.yaml --quiet                # ... 10 real + 10 emulated ...
pyoops cycle resample.yaml --quiet              # ... 10 real + 10 copies of their mean and covariance
python summary.py
