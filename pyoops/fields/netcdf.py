"""netCDF files of gridded fields (states, increments, ensembles).

Layout (documented in ``docs/file_formats.rst``):

* global attributes ``date`` (ISO-8601 valid time), ``pyoops_kind``
  (``state``, ``increment`` or ``ensemble``), ``Conventions = "CF-1.8"`` and
  ``geometry`` (JSON description of the grid);
* one dimension per grid axis, named as the geometry's ``dims`` (``x``;
  ``y, x``; ``z, y, x``), each with a coordinate variable of the same name
  (with a ``units`` attribute when the geometry declares units);
* an optional leading ``member`` dimension for ensembles;
* one float64 variable per field, with the grid dimensions in order.

Any file that follows this layout, written by any netCDF4 code, is read.  On reading,
:func:`read_fields` checks that the file is on the geometry it is read into: the
dimensions and sizes of every field, the coordinate variables (equal to the
geometry's within :data:`COORDINATE_RTOL` of the grid spacing) and, when the file has
one, the ``geometry`` attribute; then that every value is finite.  Every failure is
one :class:`~pyoops.util.errors.InputFileError` naming the file and what differs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from pyoops.fields.fieldset import FieldSet
from pyoops.util.atomic import atomic_output, input_path
from pyoops.util.datetime import DateTime
from pyoops.util.errors import ConfigError, InputFileError, PyoopsError
from pyoops.util.logging import logger
from pyoops.util.resources import require_memory
from pyoops.util.variables import Variables

#: The geometry the fields live on, a :class:`pyoops.interface.geometry.Geometry`.  The fields
#: layer is below the interfaces, so it names the type without importing it (only ``dims``,
#: ``coordinates``, ``field_shape`` and ``describe`` are used).
GeometryLike = Any

__all__ = ["COORDINATE_RTOL", "EPOCH_SECONDS", "FieldSeries", "as_float64", "check_number_variable",
           "check_same_geometry", "cf_seconds_since_epoch", "non_finite_summary", "open_dataset", "read_fields",
           "require_file_memory", "write_fields"]

MEMBER_DIM = "member"
TIME_DIM = "time"
#: The time unit pyoops writes (observation times, time series); any CF time unit is read.
EPOCH_SECONDS = "seconds since 1970-01-01T00:00:00Z"

#: Coordinates (and numbers of the ``geometry`` attribute) agree when they differ by at most this
#: fraction of the grid spacing (of the value).  pyoops writes float64 coordinates, which netCDF stores
#: exactly, so its own files match bit for bit; the tolerance absorbs only how other code computes
#: the same points (``j / N`` rather than ``j * (1 / N)``: a few units in the last place).
COORDINATE_RTOL = 1e-9

#: Items of :meth:`Geometry.describe` that do not identify the grid: a file written through another
#: geometry class on the same grid (a generic grid, a third-party writer) is the same grid.
_NOT_IDENTITY = ("type", "variables")


def write_fields(
    filename: "str | os.PathLike[str]",
    geometry: GeometryLike,
    fields: FieldSet,
    time: DateTime | None,
    kind: str = "state",
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write ``fields`` on ``geometry`` to ``filename`` atomically.

    A FieldSet with one leading batch axis is written with a ``member`` dimension.
    """
    import netCDF4

    shapes = geometry.field_shapes(fields.variables)
    batch = fields.batch_shape(shapes)
    if len(batch) > 1:
        raise ValueError(f"only one leading (member) axis can be written, got batch shape {batch}")
    with atomic_output(filename, ".nc") as tmp:
        with netCDF4.Dataset(tmp, "w", format="NETCDF4") as ds:
            ds.Conventions = "CF-1.8"
            ds.pyoops_kind = kind
            if time is not None:
                ds.date = str(time)
            ds.geometry = json.dumps(geometry.describe())
            for key, value in (attrs or {}).items():
                ds.setncattr(key, value)
            if batch:
                ds.createDimension(MEMBER_DIM, batch[0])
                mem = ds.createVariable(MEMBER_DIM, "i4", (MEMBER_DIM,))
                mem[:] = np.arange(batch[0])
            coords = geometry.coordinates
            units = geometry.coordinate_units()
            for dim in _all_dims(geometry, fields.variables):
                size = len(coords[dim]) if dim in coords else None
                if size is None:
                    raise ValueError(f"geometry has no coordinate for dimension {dim!r}")
                ds.createDimension(dim, size)
                var = ds.createVariable(dim, "f8", (dim,))
                if dim in units:
                    var.units = units[dim]
                var[:] = coords[dim]
            for name, arr in fields.items():
                dims = ((MEMBER_DIM,) if batch else ()) + geometry.field_dims(name)
                var = ds.createVariable(name, "f8", dims, zlib=False)
                var[...] = arr


def _all_dims(geometry: GeometryLike, variables: Variables) -> list[str]:
    dims: list[str] = []
    for v in variables:
        for d in geometry.field_dims(v):
            if d not in dims:
                dims.append(d)
    return dims


# Shared by every netCDF reader ---------------------------------------------------------------------
def open_dataset(filename: "str | os.PathLike[str]", what: str = "file") -> Any:
    """Open ``filename`` for reading as an input of the running application.

    A missing or unreadable file is one :class:`~pyoops.util.errors.InputFileError`; ``what`` names the kind of
    file in the "not found" message (``"observation file"``).
    """
    import netCDF4

    name = str(filename)
    path = input_path(name)
    if not path.is_file():
        raise InputFileError(name, f"{what} not found")
    try:
        return netCDF4.Dataset(path, "r")
    except OSError as exc:
        raise InputFileError(name, f"is not a readable netCDF file ({exc.strerror or exc})") from None


def check_number_variable(filename: str, nc: Any, label: str, dims: tuple[str, ...] | None = None) -> None:
    """Raise unless netCDF variable ``nc`` holds real numbers (integer or float), on exactly ``dims`` if given.

    ``label`` names the variable in the message (``variable 'h'``, ``ObsValue/x``).
    """
    datatype = nc.datatype
    if not (isinstance(datatype, np.dtype) and datatype.kind in "iuf"):
        kind = ("text (char or string)" if datatype is str or getattr(datatype, "kind", "") in "SU"
                else str(getattr(datatype, "name", datatype)))
        raise InputFileError(filename, f"{label} is of type {kind}, expected float64 numbers")
    if dims is not None and tuple(nc.dimensions) != tuple(dims):
        raise InputFileError(filename, f"{label} has dimensions {tuple(nc.dimensions)}, expected {tuple(dims)}")


def as_float64(data: Any) -> np.ndarray:
    """A float64 array of netCDF data, masked (fill) values as NaN."""
    if np.ma.isMaskedArray(data):
        return np.ma.filled(data.astype(np.float64), np.nan)
    return np.asarray(data, dtype=np.float64)


#: Attributes that make netCDF4 mask or scale what it reads (besides the type's default fill value).
_MASKING_ATTRIBUTES = frozenset({"missing_value", "_FillValue", "valid_range", "valid_min", "valid_max",
                                 "scale_factor", "add_offset", "_Unsigned"})


def read_float64(nc: Any, index: Any = Ellipsis) -> np.ndarray:
    """``as_float64(nc[index])``: netCDF variable ``nc`` (all of it by default) as float64, masked (fill) values as NaN.

    The bits are those of ``as_float64(nc[index])``.  A number variable with none of the
    ``_MASKING_ATTRIBUTES`` is masked by netCDF4 only where it holds its type's default
    fill value: it is read unmasked and those values set to NaN here, which avoids netCDF4's
    masked array (about 0.04 ms a read, which counts when a cycle reads small files).
    """
    import netCDF4

    dtype = nc.dtype
    if not (isinstance(dtype, np.dtype) and dtype.kind in "iuf" and dtype.itemsize > 1 and nc.mask
            and _MASKING_ATTRIBUTES.isdisjoint(nc.ncattrs())):
        return as_float64(nc[index])
    nc.set_auto_mask(False)
    try:
        raw = nc[index]
    finally:
        nc.set_auto_mask(True)
    fill = raw == np.array(netCDF4.default_fillvals[dtype.str[1:]], dtype)
    out = np.array(raw, dtype=np.float64)
    if fill.any():
        out[fill] = np.nan
    return out


def require_file_memory(filename: str, nbytes: float, what: str) -> None:
    """Raise an :class:`~pyoops.util.errors.InputFileError` naming the file if reading ``what`` (``nbytes``) would not fit in memory."""
    try:
        require_memory(nbytes, f"reading {what}")
    except ConfigError as exc:
        raise InputFileError(filename, exc.message) from None


def non_finite_summary(arr: np.ndarray) -> str | None:
    """``"3 non-finite value(s) of 40 (2 NaN or fill value, 1 infinite)"``, or None if all are finite."""
    nan = int(np.isnan(arr).sum())
    inf = int(np.isinf(arr).sum())
    if not nan + inf:
        return None
    return f"{nan + inf} non-finite value(s) of {arr.size} ({nan} NaN or fill value, {inf} infinite)"


# Reading ------------------------------------------------------------------------------------------
def read_fields(
    filename: "str | os.PathLike[str]",
    geometry: GeometryLike,
    variables: Variables,
    date: DateTime | None = None,
    allow_members: bool = False,
    member: int | None = None,
    other_geometry: bool = False,
) -> tuple[FieldSet, DateTime | None]:
    """Read ``variables`` from a gridded netCDF file, checking it against ``geometry``.

    Checked, in order, each failure one :class:`~pyoops.util.errors.InputFileError` naming the file: the
    ``date`` attribute; every variable's existence, number type, dimensions and grid
    shape; the grid's identity (``_grid_difference``); the member dimension; finite values.

    Parameters
    ----------
    date:
        Expected valid time; if the file has a ``date`` attribute it must match.
    allow_members:
        Accept a leading ``member`` dimension and return all members stacked.
    member:
        Read only this member of an ensemble file.
    other_geometry:
        Accept a file written on another geometry of the same dimensions and shape, point
        by point (logged as a warning); e.g. a truth run with other layer depths.

    Returns
    -------
    (fields, date):
        The fields and the file's valid time (``date`` if the file has none).
    """
    name = str(filename)
    variables = Variables(variables)
    ds = open_dataset(name)
    try:
        file_date = _file_date(ds, name, date)
        found = {var: _field_variable(ds, name, var, geometry) for var in variables}
        difference = _grid_difference(ds, name, geometry, _all_dims(geometry, variables))
        if difference and not other_geometry:
            raise InputFileError(name, f"written on another geometry: {difference}")
        if difference:
            logger.warning("%s: written on another geometry (%s); read point by point (allow other geometry)",
                           name, difference)
        with_member = {var for var, (_, has_member) in found.items() if has_member}
        if with_member and len(with_member) != len(found):
            raise InputFileError(name, f"variables {sorted(with_member)} have a '{MEMBER_DIM}' dimension, "
                                       f"{sorted(set(found) - with_member)} do not")
        out = {var: _field_values(name, var, nc, has_member, allow_members, member)
               for var, (nc, has_member) in found.items()}
        return FieldSet(out, copy=False), file_date or date
    finally:
        ds.close()


def _file_date(ds: Any, name: str, date: DateTime | None) -> DateTime | None:
    """The file's ``date`` attribute, checked against the configured ``date``."""
    if "date" not in ds.ncattrs():
        if date is None:
            raise InputFileError(name, "has no global attribute 'date' and the configuration gives no date")
        return None
    try:
        file_date = DateTime(str(ds.getncattr("date")))
    except PyoopsError:
        raise InputFileError(name, f"global attribute 'date' = {ds.getncattr('date')!r} is not an "
                                   "ISO-8601 date-time") from None
    if date is not None and file_date != date:
        raise InputFileError(name, f"holds fields valid at {file_date}, but the configuration says date: {date}")
    return file_date


def _field_variable(ds: Any, name: str, var: str, geometry: GeometryLike, lead: str = MEMBER_DIM,
                    lead_required: bool = False) -> tuple[Any, bool]:
    """The netCDF variable of field ``var`` and whether it has the leading dimension ``lead`` (``member``;
    ``time`` for a :class:`FieldSeries`, where it is required)."""
    if var not in ds.variables:
        have = [v for v in ds.variables if v not in ds.dimensions]
        raise InputFileError(name, f"has no variable '{var}' (has: {', '.join(have) or 'none'})")
    nc = ds.variables[var]
    expected = geometry.field_dims(var)
    dims = tuple(nc.dimensions)
    has_lead = len(dims) == len(expected) + 1 and dims[0] == lead
    if lead_required and dims != (lead, *expected):
        raise InputFileError(name, f"variable '{var}' has dimensions {dims}, expected {(lead, *expected)}")
    if dims[len(dims) - len(expected):] != expected or not (len(dims) == len(expected) or has_lead):
        raise InputFileError(name, f"variable '{var}' has dimensions {dims}, expected "
                                   f"{expected} (optionally preceded by '{lead}')")
    check_number_variable(name, nc, f"variable '{var}'")
    shape = tuple(nc.shape[len(dims) - len(expected):])
    if shape != geometry.field_shape(var):
        raise InputFileError(name, f"variable '{var}' has grid shape {shape}, but the geometry "
                                   f"has {geometry.field_shape(var)}")
    return nc, has_lead


def _field_values(name: str, var: str, nc: Any, has_member: bool, allow_members: bool,
                  member: int | None) -> np.ndarray:
    """The values of field ``var`` (one member, or all when allowed), all finite."""
    if has_member:
        nmembers = nc.shape[0]
        if member is not None:
            if not 0 <= member < nmembers:
                raise InputFileError(name, f"has {nmembers} members, member {member} requested")
        elif not allow_members:
            raise InputFileError(name, f"variable '{var}' has a '{MEMBER_DIM}' dimension: it is an "
                                       "ensemble file, expected a single state")
    elif member is not None:
        # Reading "member k" of a single-state file would silently give every member the same state.
        raise InputFileError(name, f"variable '{var}' has no '{MEMBER_DIM}' dimension, but member "
                                   f"{member} was requested")
    selected = has_member and member is not None
    require_file_memory(name, 8.0 * math.prod(nc.shape[1:] if selected else nc.shape), f"variable '{var}'")
    arr = as_float64(nc[member]) if selected else read_float64(nc)
    bad = non_finite_summary(arr)
    if bad:
        raise InputFileError(name, f"variable '{var}' has {bad}; a field file must hold finite values only")
    return arr


def cf_seconds_since_epoch(filename: str, nc: Any, values: np.ndarray, label: str) -> np.ndarray:
    """Seconds since 1970-01-01T00:00:00Z of the finite time ``values`` of netCDF variable ``nc`` (in its ``units``).

    :data:`EPOCH_SECONDS` (the default when ``units`` is absent) is taken as it is; any other CF time
    unit (``hours since 2010-01-01``) is converted with ``cftime`` in the variable's ``calendar``
    (``standard`` if absent), times without an offset as UTC; a calendar that is not the real one
    (``noleap``, ``360_day``) is refused.  ``label`` names the variable in the error (``MetaData/dateTime``).
    """
    units = getattr(nc, "units", EPOCH_SECONDS)
    if str(units).strip() == EPOCH_SECONDS:
        return values
    calendar = getattr(nc, "calendar", None)
    try:
        import datetime

        import cftime

        dates = cftime.num2date(values, units, calendar=str(calendar or "standard"), only_use_cftime_datetimes=False,
                                only_use_python_datetimes=True)
        return np.array([DateTime(d if d.tzinfo is not None else d.replace(tzinfo=datetime.timezone.utc))
                         .seconds_since_epoch() for d in np.atleast_1d(dates)])
    except Exception:
        shown = f" and calendar {calendar!r}" if calendar is not None else ""
        raise InputFileError(filename, f"{label} has units {units!r}{shown}, expected '{EPOCH_SECONDS}' or another "
                                       "CF time unit of the standard calendar (with times it can represent)") from None


#: A time of a :class:`FieldSeries` file matches a requested time within this many seconds.
TIME_TOLERANCE = 1e-3
#: :class:`FieldSeries` reads at most this many bytes, and this many times, at once.
SERIES_BLOCK_BYTES = 16 * 2**20
SERIES_BLOCK_TIMES = 256


class FieldSeries:
    """A time series of gridded fields in one file, read one time at a time.

    The layout of a state file (:func:`read_fields`) with a leading ``time`` dimension before
    the grid dimensions of every field, and a coordinate variable ``time(time)`` of distinct
    times in a CF time unit (``seconds since 1970-01-01T00:00:00Z``; no ``date`` attribute is
    needed).  This is how a nature run (xarray's ``Dataset.to_netcdf`` of a ``(time, x)`` array,
    DAPPER's ``xx``) is given in one file.

    The file is opened and checked once — every field's dimensions, number type and grid shape,
    the grid's identity, the times — and stays open until :meth:`FieldSeries.close`.  :meth:`read` reads the
    fields of several consecutive times at once (as many as fit in ``SERIES_BLOCK_BYTES``, 16 MiB, at
    most ``SERIES_BLOCK_TIMES``, 256) and serves the next times from them: a run that reads the
    times in order pays one netCDF read per block, not per time.  Memory: one block.

    Raises
    ------
    InputFileError
        Naming the file: a missing or malformed ``time`` variable, repeated times, a field not on
        ``(time, <grid dims>)`` or on another grid.
    """

    def __init__(self, filename: "str | os.PathLike[str]", geometry: GeometryLike, variables: Variables) -> None:
        self.filename = name = str(filename)
        self.variables = Variables(variables)
        self._ds = ds = open_dataset(name)
        try:
            if TIME_DIM not in ds.dimensions or TIME_DIM not in ds.variables:
                raise InputFileError(name, f"has no '{TIME_DIM}' dimension and coordinate variable (a file of "
                                           f"several times has fields on ('{TIME_DIM}', <grid dimensions>))")
            nc_time = ds.variables[TIME_DIM]
            check_number_variable(name, nc_time, f"coordinate variable '{TIME_DIM}'", (TIME_DIM,))
            raw = read_float64(nc_time)
            bad = non_finite_summary(raw)
            if bad:
                raise InputFileError(name, f"coordinate variable '{TIME_DIM}' has {bad}")
            seconds = np.asarray(cf_seconds_since_epoch(name, nc_time, raw, f"coordinate variable '{TIME_DIM}'"),
                                 dtype=np.float64)
            self._seconds = seconds
            self._order = np.argsort(seconds, kind="stable")
            self._sorted = seconds[self._order]
            if np.any(np.diff(self._sorted) <= 2 * TIME_TOLERANCE):
                raise InputFileError(name, f"coordinate variable '{TIME_DIM}' has repeated times")
            self._fields = {var: _field_variable(ds, name, var, geometry, TIME_DIM, lead_required=True)[0]
                            for var in self.variables}
            per_time = 8 * sum(math.prod(nc.shape[1:]) for nc in self._fields.values())
            self._block_times = int(max(1, min(SERIES_BLOCK_TIMES, SERIES_BLOCK_BYTES // max(per_time, 1))))
            self._block: tuple[int, dict[str, np.ndarray]] = (0, {})
            difference = _grid_difference(ds, name, geometry, _all_dims(geometry, self.variables))
            if difference:
                raise InputFileError(name, f"written on another geometry: {difference}")
        except BaseException:
            ds.close()
            raise

    @property
    def times(self) -> list[DateTime]:
        """The file's times, in file order."""
        return [DateTime.from_seconds_since_epoch(float(t)) for t in self._seconds]

    def index(self, time: DateTime) -> int | None:
        """The file index of ``time``: the file's time nearest to it, if within :data:`TIME_TOLERANCE`
        (times written as floats in a unit other than seconds, or summed step by step, are off by far less
        than a second but rarely exact)."""
        t = float(time.seconds_since_epoch())
        j = int(np.searchsorted(self._sorted, t))
        for k in (j - 1, j):
            if 0 <= k < self._sorted.size and abs(self._sorted[k] - t) <= TIME_TOLERANCE:
                return int(self._order[k])
        return None

    def read(self, time: DateTime) -> FieldSet:
        """The fields valid at ``time``, all finite (else an :class:`~pyoops.util.errors.InputFileError` naming
        the file)."""
        i = self.index(time)
        if i is None:
            raise InputFileError(self.filename, f"has no time {time} (its '{TIME_DIM}' coordinate holds "
                                                f"{self._seconds.size} times)")
        first, block = self._block
        if not block or not first <= i < first + len(next(iter(block.values()))):
            stop = min(i + self._block_times, self._seconds.size)
            block = {var: read_float64(nc, slice(i, stop)) for var, nc in self._fields.items()}
            first = i
            self._block = (first, block)
        out = {}
        for var, values in block.items():
            arr = values[i - first].copy()
            bad = non_finite_summary(arr)
            if bad:
                raise InputFileError(self.filename, f"variable '{var}' at {time} has {bad}; a field file must "
                                                    "hold finite values only")
            out[var] = arr
        return FieldSet(out, copy=False)

    def close(self) -> None:
        """Close the file (and drop the block of fields read)."""
        self._block = (0, {})
        if self._ds.isopen():
            self._ds.close()

    def __enter__(self) -> "FieldSeries":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# Grid identity ------------------------------------------------------------------------------------
def _grid_difference(ds: Any, name: str, geometry: GeometryLike, dims: list[str]) -> str | None:
    """What differs between the file's grid and ``geometry``: coordinate variables, then the ``geometry`` attribute.

    Every grid dimension needs its coordinate variable, a number in the geometry's units (the
    documented layout; without it a file of the right shape on another grid could not be told
    apart): a file without one is refused here.
    """
    coords = geometry.coordinates
    units = geometry.coordinate_units()
    keys = geometry.spacing_keys()
    for dim in dims:
        if dim not in ds.variables:
            raise InputFileError(name, f"has no coordinate variable '{dim}' (every grid dimension needs a float64 "
                                       "variable of the same name holding the grid-point coordinates)")
        nc = ds.variables[dim]
        check_number_variable(name, nc, f"coordinate variable '{dim}'", (dim,))
        file_units = getattr(nc, "units", None)
        if dim in units and file_units is not None and str(file_units).strip() != units[dim]:
            raise InputFileError(name, f"coordinate '{dim}' is in {str(file_units)!r} in the file, "
                                       f"{units[dim]!r} in the geometry")
        difference = _coordinate_difference(dim, read_float64(nc), coords[dim], units.get(dim), keys.get(dim))
        if difference:
            return difference
    return _attribute_difference(ds, name, geometry)


def _coordinate_difference(dim: str, got: np.ndarray, want: np.ndarray, units: str | None,
                           key: str | None) -> str | None:
    """What differs between the file's coordinates ``got`` and the geometry's ``want`` (same length), or None.

    A uniform axis whose points are all offset by one spacing change is reported as a spacing.
    """
    want = np.asarray(want, dtype=np.float64)
    step = np.diff(want)
    tol = COORDINATE_RTOL * (float(np.abs(step).max()) if step.size else max(abs(float(want[0])), 1.0))
    off = ~(np.abs(got - want) <= tol)  # NaN counts as different
    if not off.any():
        return None
    unit = f" {units}" if units else ""
    got_step = np.diff(got)
    if step.size and np.ptp(step) <= tol and np.ptp(got_step) <= tol and abs(got_step[0] - step[0]) > tol:
        a, b = _distinct(got_step[0], step[0])
        where = f" (geometry.{key})" if key else ""
        return f"{dim} spacing {a}{unit} in the file, {b}{unit} in the geometry{where}"
    i = int(np.flatnonzero(off)[0])
    a, b = _distinct(got[i], want[i])
    return f"coordinate {dim}[{i}] = {a}{unit} in the file, {b}{unit} in the geometry"


def _distinct(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` with the fewest significant digits (6, 10 or 17) that tell them apart."""
    for digits in (6, 10, 17):
        sa, sb = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if sa != sb:
            break
    return sa, sb


def _attribute_difference(ds: Any, name: str, geometry: GeometryLike) -> str | None:
    """The first item the file's ``geometry`` attribute and ``geometry.describe()`` disagree on, or None.

    Items only one of them has are not compared; numbers agree within :data:`COORDINATE_RTOL`.
    """
    if "geometry" not in ds.ncattrs():
        return None
    try:
        written = json.loads(str(ds.getncattr("geometry")))
    except ValueError:
        written = None
    if not isinstance(written, dict):
        raise InputFileError(name, "global attribute 'geometry' is not the JSON description of a grid that pyoops "
                                   "writes (remove it, or write the file with pyoops)")
    theirs = _flatten({k: v for k, v in written.items() if k not in _NOT_IDENTITY})
    ours = _flatten({k: v for k, v in geometry.describe().items() if k not in _NOT_IDENTITY})
    for key, value in ours.items():
        if key in theirs and not _same(theirs[key], value):
            a, b = (_distinct(theirs[key], value) if _is_number(theirs[key]) and _is_number(value)
                    else (json.dumps(theirs[key]), json.dumps(value)))
            return f"{key} = {a} in the file, {b} in the geometry"
    return None


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of nested JSON data; a list of named items is keyed by name (``axes[x].upper``)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
        out = {}
        for v in value:
            out.update(_flatten({k: x for k, x in v.items() if k != "name"}, f"{prefix}[{v['name']}]"))
        return out
    return {prefix: value}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    """JSON values equal, numbers (also inside lists) within :data:`COORDINATE_RTOL`."""
    if _is_number(a) and _is_number(b):
        return math.isclose(a, b, rel_tol=COORDINATE_RTOL)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def check_same_geometry(filename: str, geometry: GeometryLike) -> None:
    """Raise a :class:`~pyoops.util.errors.ConfigError` if the file's ``geometry`` attribute describes another grid.

    :func:`read_fields` makes this check (and the coordinate check) on every read; this
    function is for applications that check member files before reading them.
    """
    name = str(filename)
    ds = open_dataset(name)
    try:
        difference = _attribute_difference(ds, name, geometry)
    finally:
        ds.close()
    if difference:
        raise ConfigError(f"{name}: written on another geometry: {difference}")
