"""Benchmark: a Lorenz-96 ensemble forecast, batched vs member by member.

40 members of N = 40 variables are advanced 1000 steps (PT6H each), either as one
FieldSet of shape (40, 40) or as 40 separate forecasts, both by calling
``Model.step`` in a loop and through the generic :func:`pyoops.generic.forecast.forecast`.
The batched and member-by-member results must agree bitwise.

Run with ``python benchmarks/lorenz96_batched_forecast.py [--members M] [--steps S] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from pyoops.fields.fieldset import FieldSet
from pyoops.generic.forecast import forecast
from pyoops.util.datetime import DateTime
from pyoops.util.random import generator
from pyoops_lorenz96 import Lorenz96Geometry, Lorenz96Model, Lorenz96State


def best_time(func: Callable[[], np.ndarray], repeat: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = func()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=40)
    parser.add_argument("--resol", type=int, default=40)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    geometry = Lorenz96Geometry({"resol": args.resol})
    model = Lorenz96Model({"tstep": "PT6H"}, geometry)
    date = DateTime("2010-01-01T00:00:00Z")
    ens0 = 8.0 + generator(2024, "benchmark").standard_normal((args.members, args.resol))
    length = model.time_resolution * args.steps

    def step_batched() -> np.ndarray:
        fields = FieldSet({"x": ens0})
        for _ in range(args.steps):
            fields = model.step(fields)
        return fields["x"]

    def step_members() -> np.ndarray:
        out = np.empty_like(ens0)
        for m in range(args.members):
            fields = FieldSet({"x": ens0[m]})
            for _ in range(args.steps):
                fields = model.step(fields)
            out[m] = fields["x"]
        return out

    def forecast_batched() -> np.ndarray:
        state = Lorenz96State(geometry, FieldSet({"x": ens0}), date)
        return forecast(model, state, length, show_progress=False).fields["x"]

    def forecast_members() -> np.ndarray:
        return np.stack([forecast(model, Lorenz96State(geometry, FieldSet({"x": ens0[m]}), date), length,
                                  show_progress=False).fields["x"] for m in range(args.members)])

    print(f"Lorenz-96 ensemble forecast: {args.members} members x N={args.resol}, {args.steps} steps "
          f"(best of {args.repeat})")
    print(f"{'path':<22}{'batched [s]':>13}{'members [s]':>13}{'speed-up':>10}{'bitwise':>9}")
    for name, batched, members in (("Model.step loop", step_batched, step_members),
                                   ("generic forecast()", forecast_batched, forecast_members)):
        tb, xb = best_time(batched, args.repeat)
        tm, xm = best_time(members, args.repeat)
        print(f"{name:<22}{tb:>13.4f}{tm:>13.4f}{tm / tb:>9.1f}x{str(np.array_equal(xb, xm)):>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
