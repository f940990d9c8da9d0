"""What the small QG cycling tests share: the analytic truth and the static B of their EDAs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

START = "2010-01-01T00:00:00Z"
TRUTH_INIT = {"date": START, "analytic init": {"method": "baroclinic-instability", "bottom wind": 0.0,
                                              "top wind": 30.0, "perturbation": 1.0}}


def static_b(stddev: dict[str, Any]) -> dict[str, Any]:
    """Diffusion correlation (1500 km), 0.6 between the layers, the StdDev section ``stddev``, walls, balance."""
    return {"covariance model": "SABER",
            "saber central block": {"saber block name": "diffusion", "horizontal length scale": 1.5e6},
            "saber outer blocks": [{"saber block name": "QG vertical correlation", "correlation": 0.6},
                                   {"saber block name": "StdDev", **stddev},
                                   {"saber block name": "QG walls"},
                                   {"saber block name": "QG balance"}]}


def draws_around_truth(directory: Path, geometry: dict[str, Any], at: str, members: int, sigma: float,
                       seed: int) -> str:
    """The truth run from :data:`START` to ``at`` and ``members`` draws from :func:`static_b` (streamfunction
    sigma ``sigma``) around it, written to ``directory``: the members' %mem% file template."""
    import pyoops
    from pyoops.util.datetime import DateTime

    length = str(DateTime(at) - DateTime(START))
    truth = str(directory / "truth.%date%.nc")
    pyoops.run("forecast", {"model plugin": "qg", "geometry": geometry, "model": {"name": "QG", "tstep": "PT1H"},
                            "initial condition": TRUTH_INIT, "forecast length": length,
                            "output": {"filename": truth, "first": length, "frequency": "P1D"}})
    template = str(directory / "ens.%mem%.nc")
    pyoops.run("gen-ens-pert-b", {"model plugin": "qg", "geometry": geometry,
                                  "background": {"date": at, "filename": truth.replace("%date%", at)},
                                  "background error": static_b({"read": {"value": {"x": sigma}}}),
                                  "members": members, "seed": seed, "perturbed states": True,
                                  "output": {"filename": template}})
    return template
