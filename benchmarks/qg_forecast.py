"""Benchmark: cost of one QG model step on three grids, for a single state and a 20-member ensemble.

The grids are 40 x 20 (the OOPS DA grid, 300 km), 128 x 64 and 512 x 256, each with the
longest round time step its semi-Lagrangian limit allows at 150 m/s (PT1H, PT20M, PT5M).
The state is OOPS's baroclinic-instability flow with a wave perturbation; the ensemble adds
member perturbations of 1e5 m^2/s and is advanced as one FieldSet with a leading member axis
(``Model.step`` called in a loop, the numerics only).  Each timing is the best of
``--repeat`` runs of ``--steps`` steps (fewer on the large grid).

Run with ``python benchmarks/qg_forecast.py [--members M] [--steps S] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from pyoops.fields.fieldset import FieldSet
from pyoops.util.datetime import DateTime
from pyoops.util.random import generator
from pyoops_qg import QgGeometry, QgModel, QgState

GRIDS = ((40, 20, "PT1H"), (128, 64, "PT20M"), (512, 256, "PT5M"))


def best_time(model: QgModel, x: np.ndarray, steps: int, repeat: int) -> float:
    """Best wall time per step over ``repeat`` runs of ``steps`` steps."""
    model.step(FieldSet({"x": x}))  # warm-up (factorisations, caches)
    best = float("inf")
    for _ in range(repeat):
        fields = FieldSet({"x": x})
        start = time.perf_counter()
        for _ in range(steps):
            fields = model.step(fields)
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10, help="steps per timing on the two small grids")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"QG forecast cost per step (best of {args.repeat}); Python {platform.python_version()}, "
          f"NumPy {np.__version__}, {platform.machine()}")
    print(f"{'grid':>10}{'tstep':>7}{'single [ms]':>13}{f'{args.members} members [ms]':>17}"
          f"{'per member [ms]':>17}{'batched/serial':>16}{'single per day [s]':>20}")
    for nx, ny, tstep in GRIDS:
        geometry = QgGeometry({"nx": nx, "ny": ny, "depths": [4500.0, 5500.0]})
        model = QgModel({"tstep": tstep}, geometry)
        x0 = QgState.from_config(geometry, {"date": str(DateTime("2010-01-01T00:00:00Z")), "analytic init": {
            "method": "baroclinic-instability", "perturbation": 1.0}}).fields["x"]
        ens = x0 + 1e5 * generator(2024, "qg benchmark").standard_normal((args.members,) + x0.shape)
        steps = args.steps if nx <= 128 else 2
        single = best_time(model, x0, steps, args.repeat)
        batched = best_time(model, ens, max(1, steps // 2), 1 if nx > 128 else args.repeat)
        per_day = single * 86400.0 / model.time_resolution.total_seconds()
        print(f"{f'{nx}x{ny}':>10}{tstep:>7}{1e3 * single:>13.1f}{1e3 * batched:>17.1f}"
              f"{1e3 * batched / args.members:>17.2f}{batched / (args.members * single):>16.2f}{per_day:>20.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
