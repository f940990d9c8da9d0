"""Benchmark: shallow-water forecast cost per step and one application of B, on 64², 256² and 1024² grids.

For every grid (the 950 km doubly periodic box at n × n points) it times

* one RK4 step of ``ShallowWater`` (``Model.step`` on h, u, v), without and with
  hyperdiffusion, and one tangent-linear and one adjoint step (``ShallowWaterTLM``);
* one application of the static balanced B (``StdDev`` · ``geostrophic balance`` ·
  ``spectral correlation``, 100 km) on the model grid;
* the same B modelled at half resolution and brought to the model grid by the
  ``interpolation`` block (dual resolution);

each as the best of several repetitions of the process CPU time (``time.process_time``,
which is robust on a shared machine; the operations are single-threaded, so on an idle
machine it equals the wall time).  The time step is half the CFL limit of the grid (the
cost per step does not depend on it).  Costs should grow like n² for the model and like
n² log n for B.

Run with ``python benchmarks/shallow_water.py [--sizes 64 256 1024] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Callable

import numpy as np

from pyoops.fields.fieldset import FieldSet
from pyoops.registry import get_registry
from pyoops.saber.chain import ErrorCovariance
from pyoops.util.datetime import DateTime, Duration
from pyoops.util.random import generator
from pyoops_shallow_water import ShallowWaterGeometry, ShallowWaterModel, ShallowWaterState, ShallowWaterTLM
from pyoops_shallow_water.model import stack

DATE = DateTime("2010-01-01T00:00:00Z")


def best_time(func: Callable[[], object], repeat: int) -> float:
    """Smallest CPU time of ``repeat`` calls of ``func`` (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        func()
        best = min(best, time.process_time() - start)
    return best


def covariance(n: int, dual: bool) -> dict:
    outer = [{"saber block name": "StdDev", "read": {"value": {"psi": 19620.0, "chi": 20.0, "hu": 0.02}}},
             {"saber block name": "geostrophic balance"}]
    if dual:
        outer.append({"saber block name": "interpolation", "inner geometry": {"nx": n // 2, "ny": n // 2}})
    return {"covariance model": "SABER",
            "saber central block": {"saber block name": "spectral correlation", "length scale": 100e3},
            "saber outer blocks": outer}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    registry = get_registry()
    plugin = registry.model_plugin("shallow_water")
    print(f"# {platform.machine()} {platform.processor() or ''} Python {platform.python_version()}, "
          f"NumPy {np.__version__}")
    header = ("grid", "tstep", "step [ms]", "step+hyperdiff [ms]", "TL step [ms]", "AD step [ms]",
              "B [ms]", "B dual res [ms]")
    print(" | ".join(header))
    for n in args.sizes:
        geometry = ShallowWaterGeometry({"nx": n, "ny": n})
        dt_max = 2 * math.sqrt(2) / (math.sqrt(9.81 * 1000.0) * math.sqrt(2) / geometry.dx)
        tstep = Duration(f"PT{max(int(dt_max / 2), 1)}S")
        lam = 8.0 / geometry.dx ** 2
        nu4 = 0.5 / (lam ** 2 * tstep.total_seconds())  # well inside the RK4 limit
        model = ShallowWaterModel({"tstep": str(tstep)}, geometry)
        damped = ShallowWaterModel({"tstep": str(tstep), "hyperdiffusion": nu4}, geometry)
        tlm = ShallowWaterTLM({"tstep": str(tstep)}, geometry)
        state = ShallowWaterState.from_config(geometry, {"date": str(DATE), "analytic init": {
            "method": "turbulence", "seed": 1, "amplitude": 0.5}})
        fields = state.fields
        traj = FieldSet({"huv": stack(fields)}, copy=False)
        rng = generator(7, "benchmark", n)
        dx = FieldSet({v: rng.standard_normal(geometry.shape) for v in "huv"})
        repeat = args.repeat if n <= 256 else max(2, args.repeat // 2)
        t_step = best_time(lambda: model.step(fields), repeat)
        t_damped = best_time(lambda: damped.step(fields), repeat)
        t_tl = best_time(lambda: tlm.step_tl(dx, traj), repeat)
        t_ad = best_time(lambda: tlm.step_ad(dx, traj), repeat)
        times = []
        for dual in (False, True):
            b = ErrorCovariance(covariance(n, dual), geometry, geometry.variables, DATE, registry, plugin)
            b.chain.multiply(dx.copy())  # warm-up (FFT plans)
            times.append(best_time(lambda b=b: b.chain.multiply(dx.copy()), repeat))
        print(f"{n}x{n} | {tstep} | {1e3 * t_step:.3g} | {1e3 * t_damped:.3g} | {1e3 * t_tl:.3g} | "
              f"{1e3 * t_ad:.3g} | {1e3 * times[0]:.3g} | {1e3 * times[1]:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
