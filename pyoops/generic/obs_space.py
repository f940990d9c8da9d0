"""IODA-like observation spaces stored in netCDF, and observation vectors.

File layout (documented in ``docs/file_formats.rst``):

* dimension ``Location`` (number of observations);
* group ``MetaData``: ``dateTime`` (int64 seconds since
  1970-01-01T00:00:00Z, attribute ``units``) and one float64 variable per
  location coordinate of the geometry (``x``; ``x, y``; ``x, y, z``);
* group ``ObsValue``: one float64 variable per observed variable (NaN = missing);
* group ``ObsError``: standard deviations, same variables;
* groups written by applications: ``hofx``, ``ombg``, ``oman``, ``EffectiveQC``
  (int32, 0 = used), ``EffectiveError``.

Every variable read is a number on ``Location``; times and locations must be finite.
NaN (or the fill value) in ``ObsValue`` is a missing observation, never used by any
statistic (:meth:`ObsSpace.qc_mask`); ±Inf there, or an ``ObsError`` that is not finite
and positive where ``ObsValue`` is present, is a corrupted file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from pyoops.config.parameters import DurationField, Parameters, VariableName
from pyoops.fields.netcdf import (
    EPOCH_SECONDS,
    cf_seconds_since_epoch,
    check_number_variable,
    non_finite_summary,
    open_dataset,
    read_float64,
    require_file_memory,
)
from pyoops.interface.geometry import Locations
from pyoops.util.atomic import atomic_output, input_path
from pyoops.util.datetime import DateTime, Duration, TimeWindow
from pyoops.util.errors import ConfigError, InputFileError, join_path
from pyoops.util.logging import logger
from pyoops.util.random import generator
from pyoops.util.variables import Variables

__all__ = ["ObsFileContents", "ObsSpace", "ObsSpaceParameters", "ObsVector", "read_obs_file"]

LOCATION_DIM = "Location"
DATETIME_UNITS = EPOCH_SECONDS
REQUIRED_GROUPS = ("MetaData", "ObsValue", "ObsError")


class ObsFileParameters(Parameters):
    filename: str = Field(description="netCDF file in the IODA-like layout.")
    outside_window: Literal["fail", "drop"] = Field(
        "fail", description="obsdatain: observations outside the time window are an error ('fail') or are left "
                            "out ('drop': one file of many windows, its rows selected by the window).")


class GenerateParameters(Parameters):
    """Synthetic observation network, as OOPS's Lorenz-95 MakeObs ``generate`` section."""

    begin: DurationField = Field(Duration("PT0S"), description="Offset of the first obs time from the window begin.")
    end: DurationField | None = Field(None, description="Offset of the last possible obs time (default: window length).")
    obs_frequency: DurationField = Field(description="Time between two obs times.")
    obs_density: int = Field(gt=0, description="Number of locations at each obs time.")
    obs_error: float = Field(gt=0, description="Observation error standard deviation (all variables).")
    locations: Literal["regular", "random"] = Field(
        "regular", description="Evenly spaced locations, or uniformly random ones (seeded).")
    random_seed: int = Field(0, ge=0, description="Seed of the random locations (a non-negative integer).")
    levels: list[float] | None = Field(None, description="Levels to observe on a grid with levels (default: all).")

    @model_validator(mode="after")
    def _positive_frequency(self) -> "GenerateParameters":
        if self.obs_frequency <= Duration(0):
            raise ValueError(f"obs frequency must be positive, got {self.obs_frequency}")
        return self


class ObsSpaceParameters(Parameters):
    """The ``obs space`` section of an observer."""

    name: str = Field(description="Name of the observation type, used in messages and plots.")
    simulated_variables: list[VariableName] = Field(min_length=1, description="Observed variables H(x) simulates.")
    obsdatain: ObsFileParameters | None = Field(None, description="Input file with ObsValue and ObsError.")
    obsdataout: ObsFileParameters | None = Field(None, description="Output file (input plus written groups).")
    generate: GenerateParameters | None = Field(None, description="Synthetic locations instead of obsdatain.")

    @model_validator(mode="after")
    def _one_source(self) -> "ObsSpaceParameters":
        if (self.obsdatain is None) == (self.generate is None):
            raise ValueError("give exactly one of 'obsdatain' and 'generate'")
        return self


class ObsSpace:
    """Observations of one type inside a time window: locations, times and named groups.

    Parameters
    ----------
    params:
        Validated :class:`ObsSpaceParameters`.
    window:
        The assimilation window; every observation must lie in it.
    geometry:
        Used to name the location coordinates and to lay out generated networks.
    path:
        YAML path of this obs space, for messages.
    """

    def __init__(self, params: ObsSpaceParameters, window: TimeWindow, geometry: Any, path: str = ""):
        self.params = params
        self.name = params.name
        self.window = window
        self.path = path
        self.simulated_variables = Variables(params.simulated_variables)
        self.location_names = tuple(geometry.location_names)
        self._db: dict[tuple[str, str], np.ndarray] = {}
        if params.obsdatain is not None:
            self.source = params.obsdatain.filename
            self.locations = self._read(params.obsdatain.filename, params.obsdatain.outside_window == "drop")
        else:
            self.source = f"{join_path(path, 'generate')}"
            self.locations = self._generate(params.generate, geometry)
        geometry.check_locations(self.locations, self.source)

    # Construction ---------------------------------------------------------------------
    def _read(self, filename: str, drop_outside: bool = False) -> Locations:
        """Locations and groups of an input file, checked against the layout (see :meth:`_check_values`);
        ``drop_outside``: keep only the rows inside the window (else any row outside is an error).

        A file of many windows (``drop_outside``) is read whole once per process and kept
        (:func:`read_obs_file`, ``cached``): a cycling run selects each window's rows from memory
        instead of opening and reading the whole file every cycle.
        """
        contents = read_obs_file(filename, self.location_names, cached=drop_outside)
        times, coords, db = contents.times, contents.coords, contents.db
        if drop_outside:
            rows = contents.rows_in(self.window)
            times, coords = times[rows], {name: c[rows] for name, c in coords.items()}
            db = {key: values[rows] for key, values in db.items()}
        self._db = dict(db)
        self._check_values(filename)
        locations = Locations(coords, times)
        inside = self.window.contains_seconds(times)
        if not inside.all():
            bad = int((~inside).sum())
            raise InputFileError(filename, f"{bad} observation(s) outside the time window {self.window} "
                                           f"(first at {_time_text(times[~inside][0])})")
        return locations

    def _check_values(self, filename: str) -> None:
        """ObsValue and ObsError of every simulated variable (the rule of ``docs/file_formats.rst``).

        NaN or the fill value in ``ObsValue`` is a missing observation: not used, counted in the
        log.  ±Inf is a corrupted value, and ``ObsError`` must be finite and positive wherever
        ``ObsValue`` is present: either is an InputFileError naming the variable and the count.
        """
        for var in self.simulated_variables:
            for group in ("ObsValue", "ObsError"):
                if (group, var) not in self._db:
                    raise InputFileError(filename, f"has no variable {group}/{var} (simulated variables: "
                                                   f"{self.simulated_variables})")
            values = self._db[("ObsValue", var)]
            infinite = np.isinf(values)
            if infinite.any():
                raise InputFileError(filename, f"ObsValue/{var} has {int(infinite.sum())} infinite value(s) of "
                                               f"{values.size} (a missing observation is NaN or the fill value)")
            present = ~np.isnan(values)
            err = self._db[("ObsError", var)]
            bad = present & ~(np.isfinite(err) & (err > 0))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise InputFileError(filename, f"ObsError/{var} must be positive and finite where ObsValue is "
                                               f"present; {int(bad.sum())} value(s) are not (first: "
                                               f"ObsError/{var}[{i}] = {float(err[i]):g})")
            missing = values.size - int(present.sum())
            if missing:
                logger.info("obs space '%s': %d of %d ObsValue/%s missing (NaN or fill value), not used",
                            self.name, missing, values.size, var)

    def _generated_times(self, gen: GenerateParameters) -> list[DateTime]:
        """The observation times of a generated network in this space's window."""
        end_offset = gen.end if gen.end is not None else self.window.length
        first = self.window.begin + gen.begin
        last = self.window.begin + end_offset
        # first + j * frequency for j = 0 .. J (J computed, so that no date past `last` is ever formed).
        count = int((last - first).total_seconds() // gen.obs_frequency.total_seconds()) + 1 if last >= first else 0
        candidates = (first + gen.obs_frequency * j for j in range(count))
        times: list[DateTime] = [t for t in candidates if self.window.contains(t)]
        if not times:
            raise ConfigError(f"no observation time between {first} and {last} falls inside the window {self.window}",
                              join_path(self.path, "generate"))
        return times

    def _generated_db(self, gen: GenerateParameters, nlocs: int) -> None:
        for var in self.simulated_variables:
            self._db[("ObsError", var)] = np.full(nlocs, gen.obs_error)

    def _generate(self, gen: GenerateParameters, geometry: Any) -> Locations:
        times = self._generated_times(gen)
        rng = generator(gen.random_seed, "generate", self.name)
        coords: dict[str, list[np.ndarray]] = {n: [] for n in self.location_names}
        all_times: list[np.ndarray] = []
        for time in times:
            pts = _network(geometry, gen, rng)
            for n in self.location_names:
                coords[n].append(pts[n])
            all_times.append(np.full(gen.obs_density, time.seconds_since_epoch()))
        loc = Locations({n: np.concatenate(v) for n, v in coords.items()}, np.concatenate(all_times))
        self._generated_db(gen, loc.nlocs)
        return loc

    def at_window(self, window: TimeWindow) -> ObsSpace | None:
        """This generated space as built for ``window``: the same network at the same offsets from
        the window begin, ``ObsError`` as generated and nothing else in the database — what
        ``ObsSpace(params, window, geometry)`` returns, without drawing the network again (it is
        drawn from a stream seeded by the configuration alone, so it is the same in every window
        with the same observation times relative to its begin).  None when this space was read
        from a file or the new window has another number of observation times."""
        gen = self.params.generate
        if self.params.obsdatain is not None or gen is None:
            return None
        new = object.__new__(ObsSpace)
        new.__dict__.update(self.__dict__)
        new.window, new._db = window, {}
        times = new._generated_times(gen)
        if len(times) * gen.obs_density != self.nlocs:
            return None
        new.locations = Locations(self.locations.coords, np.repeat([t.seconds_since_epoch() for t in times],
                                                                   gen.obs_density))
        new._generated_db(gen, new.nlocs)
        return new

    # Access -----------------------------------------------------------------------------
    @property
    def nlocs(self) -> int:
        return self.locations.nlocs

    def has(self, group: str, variable: str) -> bool:
        return (group, variable) in self._db

    def get_db(self, group: str, variable: str) -> np.ndarray:
        try:
            return self._db[(group, variable)]
        except KeyError:
            raise InputFileError(self.source, f"obs space '{self.name}' has no {group}/{variable}") from None

    def put_db(self, group: str, variable: str, values: np.ndarray) -> None:
        values = np.asarray(values)
        if values.shape != (self.nlocs,):
            raise ValueError(f"{group}/{variable}: {values.shape} values for {self.nlocs} locations")
        self._db[(group, variable)] = values.copy()

    def groups(self) -> list[str]:
        return sorted({g for g, _ in self._db})

    def obs_values(self) -> "ObsVector":
        """The ``ObsValue`` group as an ObsVector."""
        return ObsVector.from_group(self, "ObsValue")

    def qc_mask(self) -> np.ndarray:
        """Boolean ``(nvars, nlocs)``: True where an observation is used.

        An observation is used where its ``ObsValue`` (if the space has one) is finite and its
        ``EffectiveQC`` flag (if any) is 0: a missing value is never used, whatever its flag.
        """
        rows = []
        for var in self.simulated_variables:
            ok = np.ones(self.nlocs, dtype=bool)
            if ("EffectiveQC", var) in self._db:
                ok &= self._db[("EffectiveQC", var)] == 0
            if ("ObsValue", var) in self._db:
                ok &= np.isfinite(self._db[("ObsValue", var)])
            rows.append(ok)
        return np.array(rows, dtype=bool).reshape(len(self.simulated_variables), self.nlocs)

    def save(self, filename: str | None = None) -> str | None:
        """Write the obs space, with every group, to ``obsdataout`` (atomically)."""
        import netCDF4

        filename = filename or (self.params.obsdataout.filename if self.params.obsdataout else None)
        if filename is None:
            return None
        if ("EffectiveQC", self.simulated_variables[0]) not in self._db:
            for var, ok in zip(self.simulated_variables, self.qc_mask()):
                self._db[("EffectiveQC", var)] = np.where(ok, 0, 1).astype(np.int32)
        with atomic_output(filename, ".nc") as tmp:
            with netCDF4.Dataset(tmp, "w", format="NETCDF4") as ds:
                ds.obs_space_name = self.name
                ds.window_begin = str(self.window.begin)
                ds.window_end = str(self.window.end)
                ds.createDimension(LOCATION_DIM, self.nlocs)
                meta = ds.createGroup("MetaData")
                dt = meta.createVariable("dateTime", "i8", (LOCATION_DIM,))
                dt.units = DATETIME_UNITS
                dt[:] = np.round(self.locations.times).astype(np.int64)
                for name in self.location_names:
                    meta.createVariable(name, "f8", (LOCATION_DIM,))[:] = self.locations.coords[name]
                for (group, var), values in sorted(self._db.items()):
                    grp = ds.groups[group] if group in ds.groups else ds.createGroup(group)
                    kind = "i4" if group == "EffectiveQC" else "f8"
                    grp.createVariable(var, kind, (LOCATION_DIM,))[:] = values
        return filename

    def __repr__(self) -> str:
        return f"ObsSpace('{self.name}', nlocs={self.nlocs}, variables={self.simulated_variables})"


class ObsFileContents:
    """Everything an observation file holds on ``Location``, checked against the layout.

    ``times`` (seconds since the epoch), ``coords`` (one array per location coordinate) and ``db``
    (``(group, variable)`` -> values) for all rows of the file, in file order.
    """

    def __init__(self, times: np.ndarray, coords: dict[str, np.ndarray],
                 db: dict[tuple[str, str], np.ndarray]) -> None:
        self.times, self.coords, self.db = times, coords, db
        self._sorted = bool(np.all(times[1:] >= times[:-1]))

    def rows_in(self, window: TimeWindow) -> np.ndarray:
        """The rows inside ``window`` (:meth:`~pyoops.util.datetime.TimeWindow.contains_seconds`), in file order.

        Times in ascending order (as a file of successive windows is written) are bisected, so
        the cost does not grow with the file; otherwise every row is tested.  Either way the
        selected rows are the same.
        """
        if not self._sorted:
            return np.flatnonzero(window.contains_seconds(self.times))
        begin, end = window.begin.seconds_since_epoch(), window.end.seconds_since_epoch()
        lo = np.searchsorted(self.times, begin, side="left" if window.include_begin else "right")
        hi = np.searchsorted(self.times, end, side="right")
        return np.arange(lo, max(lo, hi))


#: Files of many windows read by this process: key (path, device, inode, size, modification and status-change
#: times, coordinates) -> contents.  At most :data:`_OBS_FILE_CACHE_SIZE` entries, the first read dropped first.
_OBS_FILE_CACHE: dict[tuple, ObsFileContents] = {}
_OBS_FILE_CACHE_SIZE = 2


def read_obs_file(filename: str, location_names: tuple[str, ...], cached: bool = False) -> ObsFileContents:
    """Read and check every row of an IODA-like observation file.

    Checked: the groups ``MetaData``, ``ObsValue``, ``ObsError`` and the ``Location`` dimension;
    every variable a number on ``Location``; ``MetaData/dateTime`` and the location coordinates
    finite (in CF time units).  Each failure is one :class:`~pyoops.util.errors.InputFileError`
    naming the file.

    With ``cached`` the contents are kept for the process, keyed by the file's identity and
    modification (device, inode, size, modification and status-change times in ns; the latter
    cannot be set by a user, so a copy that preserves the modification time is still seen):
    reading the same unchanged file again costs a ``stat``; a file replaced or rewritten is read
    anew.  The kept arrays are read-only.
    """
    path = input_path(filename)
    key = None
    if cached:
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is not None:
            key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                   tuple(location_names))
            hit = _OBS_FILE_CACHE.get(key)
            if hit is not None:
                return hit
    contents = _read_obs_file(filename, location_names)
    if key is not None:
        for array in (contents.times, *contents.coords.values(), *contents.db.values()):
            array.setflags(write=False)
        while len(_OBS_FILE_CACHE) >= _OBS_FILE_CACHE_SIZE:
            del _OBS_FILE_CACHE[next(iter(_OBS_FILE_CACHE))]
        _OBS_FILE_CACHE[key] = contents
    return contents


def _read_obs_file(filename: str, location_names: tuple[str, ...]) -> ObsFileContents:
    ds = open_dataset(filename, "observation file")
    try:
        for group in REQUIRED_GROUPS:
            if group not in ds.groups:
                raise InputFileError(filename, f"has no group '{group}' (an observation file needs groups "
                                               f"{', '.join(REQUIRED_GROUPS)})")
        if LOCATION_DIM not in ds.dimensions:
            raise InputFileError(filename, f"has no dimension '{LOCATION_DIM}' (every observation variable is "
                                           f"on the one dimension '{LOCATION_DIM}')")
        nvariables = 1 + len(location_names) + sum(len(ds.groups[g].variables) for g in ds.groups
                                                   if g != "MetaData")
        require_file_memory(filename, 8.0 * nvariables * len(ds.dimensions[LOCATION_DIM]),
                            f"{nvariables} variables of {len(ds.dimensions[LOCATION_DIM])} observations")
        meta = ds.groups["MetaData"]
        times_nc = _location_variable(filename, meta, "dateTime", "(locations need a time)")
        times = cf_seconds_since_epoch(filename, times_nc, _finite_metadata(filename, times_nc, "dateTime", "a time"),
                                       "MetaData/dateTime")
        coords = {}
        for name in location_names:
            nc = _location_variable(filename, meta, name, f"(locations need {', '.join(location_names)})")
            coords[name] = _finite_metadata(filename, nc, name, "a location")
        db: dict[tuple[str, str], np.ndarray] = {}
        for group in ds.groups:
            if group == "MetaData":
                continue
            for var in ds.groups[group].variables:
                nc = _location_variable(filename, ds.groups[group], var)
                db[(group, var)] = read_float64(nc) if group != "EffectiveQC" else np.asarray(nc[...])
    finally:
        ds.close()
    return ObsFileContents(times, coords, db)


def _location_variable(filename: str, group: Any, var: str, need: str = "") -> Any:
    """Variable ``var`` of netCDF ``group``, which must exist and hold numbers on ``Location``."""
    label = f"{group.name}/{var}"
    if var not in group.variables:
        raise InputFileError(filename, f"has no variable {label}" + (f" {need}" if need else ""))
    nc = group.variables[var]
    check_number_variable(filename, nc, label, (LOCATION_DIM,))
    return nc


def _finite_metadata(filename: str, nc: Any, var: str, what: str) -> np.ndarray:
    """Values of ``MetaData/<var>``, refused unless all are finite (every observation needs ``what``)."""
    values = read_float64(nc)
    bad = non_finite_summary(values)
    if bad:
        raise InputFileError(filename, f"MetaData/{var} has {bad}; every observation needs {what}")
    return values


def _time_text(seconds: float) -> str:
    """An observation time for messages, even one too far out for a date-time."""
    try:
        return str(DateTime.from_seconds_since_epoch(seconds))
    except (OverflowError, ValueError):
        return f"{seconds:.6g} {DATETIME_UNITS}"


def _network(geometry: Any, gen: GenerateParameters, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Locations of one obs time: regular lattice or uniform random points."""
    n = gen.obs_density
    axes = {a.name: a for a in getattr(geometry, "axes", ())}
    horizontal = [a for a in axes.values() if a.horizontal]
    levels = [a for a in axes.values() if not a.horizontal]
    out: dict[str, np.ndarray] = {}
    if gen.locations == "random":
        for a in horizontal:
            out[a.name] = rng.uniform(a.lower, a.upper, n) if not a.periodic else (
                a.lower + (a.upper - a.lower) * rng.random(n))
    else:
        # Regular: a near-square lattice of n points, cell-centred in each direction.
        counts = _lattice_counts(n, [a.upper - a.lower for a in horizontal])
        grids = np.meshgrid(*[a.lower + (np.arange(c) + (0.0 if a.periodic and len(horizontal) == 1 else 0.5))
                              * (a.upper - a.lower) / c for a, c in zip(horizontal, counts)], indexing="ij")
        for a, g in zip(horizontal, grids):
            out[a.name] = g.ravel()[:n]
    for a in levels:
        choices = np.asarray(gen.levels if gen.levels is not None else a.points, dtype=float)
        out[a.name] = choices[np.arange(n) % choices.size] if gen.locations == "regular" else rng.choice(choices, n)
    return out


def _lattice_counts(n: int, lengths: list[float]) -> list[int]:
    if len(lengths) == 1:
        return [n]
    if len(lengths) != 2:
        raise ConfigError("regular generated networks support 1-D and 2-D horizontal grids; use 'random'")
    ratio = lengths[1] / lengths[0]
    ny = max(1, int(round(np.sqrt(n / ratio))))
    nx = int(np.ceil(n / ny))
    return [ny, nx]


class ObsVector:
    """Values of every simulated variable at every location of an ObsSpace.

    ``values`` has shape ``(..., nvars, nlocs)``; leading axes are ensemble members.
    Entries where the ObsSpace's QC mask is False do not count in inner products.
    """

    __slots__ = ("obs_space", "values")

    def __init__(self, obs_space: ObsSpace, values: np.ndarray | None = None):
        self.obs_space = obs_space
        shape = (len(obs_space.simulated_variables), obs_space.nlocs)
        if values is None:
            values = np.zeros(shape)
        values = np.asarray(values, dtype=np.float64)
        if values.shape[-2:] != shape:
            raise ValueError(f"ObsVector of '{obs_space.name}' needs trailing shape {shape}, got {values.shape}")
        self.values = values

    @classmethod
    def from_group(cls, obs_space: ObsSpace, group: str) -> "ObsVector":
        return cls(obs_space, np.array([obs_space.get_db(group, v) for v in obs_space.simulated_variables]))

    def save(self, group: str) -> None:
        """Store in the ObsSpace as ``group/<variable>`` (single vectors only)."""
        if self.values.ndim != 2:
            raise ValueError("only an ObsVector without member axis can be saved to a group")
        for var, row in zip(self.obs_space.simulated_variables, self.values):
            self.obs_space.put_db(group, var, row)

    @property
    def variables(self) -> Variables:
        return self.obs_space.simulated_variables

    def __getitem__(self, variable: str) -> np.ndarray:
        return self.values[..., self.variables.index(variable), :]

    def mask(self) -> np.ndarray:
        return self.obs_space.qc_mask()

    def nobs(self) -> int:
        """Number of used observations."""
        return int(self.mask().sum())

    def copy(self) -> "ObsVector":
        return ObsVector(self.obs_space, self.values.copy())

    def zeros_like(self) -> "ObsVector":
        return ObsVector(self.obs_space, np.zeros_like(self.values))

    def zero(self) -> None:
        self.values[...] = 0.0

    def ones(self) -> None:
        self.values[...] = 1.0

    def masked_values(self) -> np.ndarray:
        """Values with unused entries set to 0."""
        return np.where(self.mask(), self.values, 0.0)

    def dot_product_with(self, other: "ObsVector") -> float:
        return float(np.vdot(self.masked_values(), other.masked_values()))

    def rms(self) -> float:
        n = self.nobs() * int(np.prod(self.values.shape[:-2]))
        return float(np.sqrt(self.dot_product_with(self) / n)) if n else 0.0

    def axpy(self, a: float, other: "ObsVector") -> None:
        self.values += a * other.values

    def _other(self, other: Any) -> Any:
        return other.values if isinstance(other, ObsVector) else other

    def __add__(self, other: Any) -> "ObsVector":
        return ObsVector(self.obs_space, self.values + self._other(other))

    def __sub__(self, other: Any) -> "ObsVector":
        return ObsVector(self.obs_space, self.values - self._other(other))

    def __mul__(self, other: Any) -> "ObsVector":
        return ObsVector(self.obs_space, self.values * self._other(other))

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> "ObsVector":
        return ObsVector(self.obs_space, self.values / self._other(other))

    def __neg__(self) -> "ObsVector":
        return ObsVector(self.obs_space, -self.values)

    def __iadd__(self, other: Any) -> "ObsVector":
        self.values += self._other(other)
        return self

    def __isub__(self, other: Any) -> "ObsVector":
        self.values -= self._other(other)
        return self

    def __imul__(self, other: Any) -> "ObsVector":
        self.values *= self._other(other)
        return self

    def __repr__(self) -> str:
        return f"ObsVector('{self.obs_space.name}', shape={self.values.shape})"


def stack_variables(obs_space: ObsSpace, per_variable: Iterable[np.ndarray]) -> ObsVector:
    """An ObsVector from one array ``(..., nlocs)`` per simulated variable."""
    return ObsVector(obs_space, np.stack(list(per_variable), axis=-2))
