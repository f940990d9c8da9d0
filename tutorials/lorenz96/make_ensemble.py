"""Build the 10-member ensemble of the EnVar and hybrid tutorials.

Runs ``gen-ens-pert-b`` on ``ens_perturb.yaml`` and then the forecast of
``ens_forecast.yaml`` once per member, replacing ``%mem%`` by the member number.
This is what ``pyoops gen-ens-pert-b ens_perturb.yaml`` followed by ten
``pyoops forecast`` commands would do, in one Python process (with
:func:`pyoops.run`), which is faster than starting ten processes.
Run from ``tutorials/lorenz96`` after ``spinup.yaml``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

import pyoops

here = Path(__file__).resolve().parent


def load(name: str) -> dict:
    with open(here / name) as f:
        return yaml.safe_load(f)


def substitute(config, member: int):
    """``config`` with ``%mem%`` replaced by ``member`` in every string."""
    if isinstance(config, dict):
        return {k: substitute(v, member) for k, v in config.items()}
    if isinstance(config, list):
        return [substitute(v, member) for v in config]
    if isinstance(config, str):
        return config.replace("%mem%", str(member))
    return config


perturb = load("ens_perturb.yaml")
summary = pyoops.run("gen-ens-pert-b", perturb)
print(f"gen-ens-pert-b: {summary['members']} members, perturbation rms {summary['perturbation rms mean']:.3f}")
template = load("ens_forecast.yaml")
for member in range(1, perturb["members"] + 1):
    summary = pyoops.run("forecast", substitute(copy.deepcopy(template), member))
    print(f"member {member:2d}: {len(summary['outputs'])} states, last {summary['outputs'][-1]}")
