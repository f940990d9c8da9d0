"""Hand plain numpy arrays (a Lorenz-96 twin made elsewhere) to ``pyoops cycle``.

Writes, with netCDF4 only, the files ``cycle`` reads when it is given observations:

* one IODA-like observation file per window (``obs.%date%.nc``, ``%date%`` = the cycle's
  analysis time) — or one file of all windows (``obs.nc``), whose rows each window selects;
* the truth at each analysis time (``truth.%date%.nc``) — or one file of every time with a
  ``time`` dimension (``truth.nc``), optional;
* the initial ensemble (one file with a ``member`` dimension) and control background.

:func:`write_filter_experiment` writes all of them for the common case of a 3-D method
observing grid points at the analysis times, from arrays laid out as DAPPER's ``xx``/``yy``,
and returns the ``cycle`` configuration entries that read them.
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


def write_state_series(filename, times, x):
    """Lorenz-96 states ``x`` of shape ``(times, N)`` valid at ``times`` (datetime64), in one file:
    the fields on ``(time, position)`` and a ``time`` coordinate in seconds since 1970."""
    x = np.asarray(x, dtype=np.float64)
    with netCDF4.Dataset(filename, "w") as nc:
        nc.createDimension("time", x.shape[0])
        nc.createDimension("position", x.shape[1])
        t = nc.createVariable("time", "i8", ("time",))
        t.units = "seconds since 1970-01-01T00:00:00Z"
        t[:] = (np.asarray(times, "datetime64[s]") - EPOCH).astype(np.int64)
        nc.createVariable("position", "f8", ("position",))[:] = np.arange(x.shape[1]) / x.shape[1]
        nc.createVariable("x", "f8", ("time", "position"))[:] = x


def write_filter_experiment(directory, start, step, truth, obs, obs_error=1.0, observed=None, background=None,
                            ensemble=None, one_file=False):
    """Files of a 3-D method cycled every ``step`` (``window length``) from ``start`` (``cycling.start``, T_0).

    ``truth`` (K+1, N): the truth at T_0 and at the K analysis times T_0 + k step (k = 1..K), or None;
    ``obs`` (K, p): the observations at the analysis times of the grid points ``observed`` (default:
    all N), errors ``obs_error`` (standard deviations); ``background`` (N,) / ``ensemble`` (members, N):
    the first background(s), valid at the first analysis time T_0 + step.  ``one_file``: the
    observations of all windows in ``obs.nc`` and the truth at every time in ``truth.nc`` instead of
    a file per analysis time.  Returns the configuration entries that read the files
    (``observations``, ``truth``, ``cycling``), to merge into a ``cycle`` file.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    obs = np.asarray(obs, dtype=np.float64)
    n = np.shape(truth)[1] if truth is not None else np.shape(background if background is not None else ensemble)[-1]
    observed = np.arange(n) if observed is None else np.asarray(observed)
    errors = np.broadcast_to(np.asarray(obs_error, dtype=np.float64), obs.shape[1:])
    times = start + np.arange(1, obs.shape[0] + 1) * step     # a_k; 3-D windows (a_k - step/2, a_k + step/2]
    if one_file:
        write_obs_file(out / "obs.nc", np.repeat(times, len(observed)), np.tile(observed / n, len(times)),
                       obs.ravel(), np.tile(errors, len(times)))
        if truth is not None:
            write_state_series(out / "truth.nc", times, np.asarray(truth)[1:])
    else:
        for k, a_k in enumerate(times):
            write_obs_file(out / f"obs.{iso(a_k)}.nc", np.full(len(observed), a_k), observed / n, obs[k], errors)
            if truth is not None:
                write_state_file(out / f"truth.{iso(a_k)}.nc", a_k, truth[k + 1])
    name = "" if one_file else ".%date%"
    config = {"observations": {"obsdatain": {"filename": str(out / f"obs{name}.nc")},
                               "obs operator": {"name": "Identity"}},
              "cycling": {"start": iso(start)}}
    if truth is not None:
        config["truth"] = {"filename": str(out / f"truth{name}.nc")}
    if background is not None:
        write_state_file(out / "background.nc", start + step, background)
        config["cycling"]["initial background"] = {"filename": str(out / "background.nc")}
    if ensemble is not None:
        write_state_file(out / "ensemble.nc", start + step, ensemble)
        config["cycling"]["initial ensemble"] = {"filename": str(out / "ensemble.nc")}
    return config


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "given")
    rng = np.random.default_rng(0)
    n, cycles, step = 40, 4, np.timedelta64(6, "h")
    start = np.datetime64("2010-01-21T00:00:00", "s")        # cycling.start: T_0
    truth = rng.standard_normal((cycles + 1, n)) + 3.0        # x^t at T_0 and at the analysis times T_0 + k 6h
    y = truth[1:] + rng.standard_normal((cycles, n))          # y at the analysis times, every grid point
    entries = write_filter_experiment(out, start, step, truth, y, obs_error=1.0,
                                      background=3.0 + rng.standard_normal(n),
                                      ensemble=3.0 + rng.standard_normal((10, n)))
    print(entries)                                            # observations, truth, cycling: for the YAML file
