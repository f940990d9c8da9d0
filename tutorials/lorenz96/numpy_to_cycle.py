"""Hand plain numpy arrays (a Lorenz-96 twin made elsewhere) to ``pyoops cycle``.

Writes, with netCDF4 only, the files ``cycle`` reads when it is given observations:

* one IODA-like observation file per window (``obs.%date%.nc``, ``%date%`` = the cycle's
  analysis time) — or one file of all windows, whose rows each window selects;
* the truth at each analysis time (``truth.%date%.nc``), optional;
* the initial ensemble (one file with a ``member`` dimension) and control background.

Run ``python numpy_to_cycle.py DIRECTORY`` for a demonstration on random arrays.
"""

import sys
from pathlib import Path

import netCDF4
import numpy as np

EPOCH = np.datetime64("1970-01-01T00:00:00", "s")


def iso(t: np.datetime64) -> str:
    """The ``%date%`` of a time: ISO-8601 in UTC, e.g. ``2010-01-21T06:00:00Z``."""
    return str(np.datetime64(t, "s")) + "Z"


def write_obs_file(filename, times, positions, values, errors, variable="x"):
    """Observations of one variable: ``times`` (datetime64), ``positions`` (in [0, 1)), ``values``, ``errors``
    (standard deviations), all of shape ``(nobs,)``."""
    with netCDF4.Dataset(filename, "w") as nc:
        nc.createDimension("Location", len(values))
        meta, value, error = nc.createGroup("MetaData"), nc.createGroup("ObsValue"), nc.createGroup("ObsError")
        t = meta.createVariable("dateTime", "i8", ("Location",))
        t.units = "seconds since 1970-01-01T00:00:00Z"
        t[:] = (np.asarray(times, "datetime64[s]") - EPOCH).astype(np.int64)
        meta.createVariable("x", "f8", ("Location",))[:] = positions      # Lorenz-96 location: x = j / N
        value.createVariable(variable, "f8", ("Location",))[:] = values
        error.createVariable(variable, "f8", ("Location",))[:] = errors


def write_state_file(filename, time, x):
    """A Lorenz-96 state ``x`` of shape ``(N,)`` valid at ``time``, or an ensemble of shape ``(members, N)``."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    with netCDF4.Dataset(filename, "w") as nc:
        nc.date = iso(time)
        nc.createDimension("position", n)
        nc.createVariable("position", "f8", ("position",))[:] = np.arange(n) / n
        dims = ("position",)
        if x.ndim == 2:
            nc.createDimension("member", x.shape[0])
            nc.createVariable("member", "i4", ("member",))[:] = np.arange(x.shape[0])
            dims = ("member", "position")
        nc.createVariable("x", "f8", dims)[:] = x


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "given")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n, cycles, step = 40, 4, np.timedelta64(6, "h")
    start = np.datetime64("2010-01-21T00:00:00", "s")        # cycling.start: T_0
    truth = rng.standard_normal((cycles, n)) + 3.0            # x^t at the analysis times T_0 + (k+1) 6h
    for k in range(cycles):
        a_k = start + (k + 1) * step
        y = truth[k] + rng.standard_normal(n)                 # 3-D windows (a_k - 3h, a_k + 3h]: obs at a_k
        write_obs_file(out / f"obs.{iso(a_k)}.nc", np.full(n, a_k), np.arange(n) / n, y, np.ones(n))
        write_state_file(out / f"truth.{iso(a_k)}.nc", a_k, truth[k])
    s0 = start + step                                         # 3-D methods: the first background is at a_0
    write_state_file(out / "ensemble.nc", s0, 3.0 + rng.standard_normal((10, n)))
    write_state_file(out / "background.nc", s0, 3.0 + rng.standard_normal(n))
