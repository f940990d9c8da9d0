"""netCDF files of gridded fields (states, increments, ensembles).

Layout (documented in ``docs/file_formats.rst``):

* global attributes ``date`` (ISO-8601 valid time), ``pyoops_kind``
  (``state``, ``increment`` or ``ensemble``), ``Conventions = "CF-1.8"`` and
  ``geometry`` (JSON description of the grid, informative);
* one dimension per grid axis, named as the geometry's ``dims`` (``x``;
  ``y, x``; ``z, y, x``), each with a coordinate variable of the same name;
* an optional leading ``member`` dimension for ensembles;
* one float64 variable per field, with the grid dimensions in order.

Any file that follows this layout, written by any netCDF4 code, is read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from pyoops.fields.fieldset import FieldSet
from pyoops.util.atomic import atomic_output, input_path
from pyoops.util.datetime import DateTime
from pyoops.util.errors import ConfigError, InputFileError, PyoopsError
from pyoops.util.variables import Variables

if TYPE_CHECKING:
    from pyoops.interface.geometry import Geometry

__all__ = ["read_fields", "write_fields"]

MEMBER_DIM = "member"


def write_fields(
    filename: "str | os.PathLike[str]",
    geometry: "Geometry",
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
            for dim in _all_dims(geometry, fields.variables):
                size = len(coords[dim]) if dim in coords else None
                if size is None:
                    raise ValueError(f"geometry has no coordinate for dimension {dim!r}")
                ds.createDimension(dim, size)
                var = ds.createVariable(dim, "f8", (dim,))
                var[:] = coords[dim]
            for name, arr in fields.items():
                dims = ((MEMBER_DIM,) if batch else ()) + geometry.field_dims(name)
                var = ds.createVariable(name, "f8", dims, zlib=False)
                var[...] = arr


def _all_dims(geometry: "Geometry", variables: Variables) -> list[str]:
    dims: list[str] = []
    for v in variables:
        for d in geometry.field_dims(v):
            if d not in dims:
                dims.append(d)
    return dims


def read_fields(
    filename: "str | os.PathLike[str]",
    geometry: "Geometry",
    variables: Variables,
    date: DateTime | None = None,
    allow_members: bool = False,
    member: int | None = None,
) -> tuple[FieldSet, DateTime | None]:
    """Read ``variables`` from a gridded netCDF file, checking it against ``geometry``.

    Parameters
    ----------
    date:
        Expected valid time; if the file has a ``date`` attribute it must match.
    allow_members:
        Accept a leading ``member`` dimension and return all members stacked.
    member:
        Read only this member of an ensemble file.

    Returns
    -------
    (fields, date):
        The fields and the file's valid time (``date`` if the file has none).
    """
    import netCDF4

    name = str(filename)
    if not os.path.isfile(name):
        raise InputFileError(name, "file not found")
    try:
        ds = netCDF4.Dataset(input_path(name), "r")
    except OSError as exc:
        raise InputFileError(name, f"is not a readable netCDF file ({exc.strerror or exc})") from None
    try:
        file_date = None
        if "date" in ds.ncattrs():
            try:
                file_date = DateTime(str(ds.getncattr("date")))
            except PyoopsError:
                raise InputFileError(name, f"global attribute 'date' = {ds.getncattr('date')!r} is not an "
                                           "ISO-8601 date-time") from None
            if date is not None and file_date != date:
                raise InputFileError(name, f"holds fields valid at {file_date}, but the configuration "
                                           f"says date: {date}")
        elif date is None:
            raise InputFileError(name, "has no global attribute 'date' and the configuration gives no date")
        out = {}
        for var in variables:
            if var not in ds.variables:
                have = [v for v in ds.variables if v not in ds.dimensions]
                raise InputFileError(name, f"has no variable '{var}' (has: {', '.join(have) or 'none'})")
            nc = ds.variables[var]
            expected = geometry.field_dims(var)
            dims = tuple(nc.dimensions)
            has_member = len(dims) == len(expected) + 1 and dims[0] == MEMBER_DIM
            if dims[-len(expected):] != expected or not (len(dims) == len(expected) or has_member):
                raise InputFileError(name, f"variable '{var}' has dimensions {dims}, expected "
                                           f"{expected} (optionally preceded by '{MEMBER_DIM}')")
            shape = tuple(nc.shape[len(dims) - len(expected):])
            if shape != geometry.field_shape(var):
                raise InputFileError(name, f"variable '{var}' has grid shape {shape}, but the geometry "
                                           f"has {geometry.field_shape(var)}")
            data = nc[...]
            arr = np.ma.filled(data.astype(np.float64), np.nan) if np.ma.isMaskedArray(data) else np.asarray(data, dtype=np.float64)
            if has_member:
                if member is not None:
                    if not 0 <= member < arr.shape[0]:
                        raise InputFileError(name, f"has {arr.shape[0]} members, member {member} requested")
                    arr = arr[member]
                elif not allow_members:
                    raise InputFileError(name, f"variable '{var}' has a '{MEMBER_DIM}' dimension: it is an "
                                               "ensemble file, expected a single state")
            elif member is not None:
                # Reading "member k" of a single-state file would silently give every member the same state.
                raise InputFileError(name, f"variable '{var}' has no '{MEMBER_DIM}' dimension, but member "
                                           f"{member} was requested")
            if not np.isfinite(arr).all():
                bad = int((~np.isfinite(arr)).sum())
                raise InputFileError(name, f"variable '{var}' has {bad} non-finite value(s) (NaN or Inf)")
            out[var] = arr
        return FieldSet(out, copy=False), file_date or date
    finally:
        ds.close()


def check_same_geometry(filename: str, geometry: "Geometry") -> None:
    """Raise if the file's ``geometry`` attribute describes another grid than ``geometry``."""
    import netCDF4

    with netCDF4.Dataset(input_path(filename), "r") as ds:
        if "geometry" not in ds.ncattrs():
            return
        try:
            desc = json.loads(ds.getncattr("geometry"))
        except (TypeError, ValueError):
            return
    if desc.get("axes") != geometry.describe().get("axes"):
        raise ConfigError(f"{filename}: written on another geometry ({desc}), expected {geometry.describe()}")
