r"""Member archives: every cycle's ensemble backgrounds, point by point, for emulating EDA statistics.

The variance part of an EDA's background-error covariance is the pointwise sample
variance of its :math:`N` background members :math:`x^{(n)}`,

.. math::

    \hat\sigma_N^2 = \frac{1}{N-1}\sum_{n=1}^{N}\big(x^{(n)} - \bar x\big)^2
                   = \frac{1}{2N(N-1)}\sum_{n,m=1}^{N}\big(x^{(n)} - x^{(m)}\big)^2 .

An emulator of :math:`\hat\sigma_N` from :math:`M < N` members
(:mod:`pyoops.emulators`) is trained on many cycles of an EDA: the member
archive keeps, for every cycle, the backgrounds of *all* :math:`N` members (so
:math:`\hat\sigma_M` of any :math:`M`-subset can be formed later: members of one cycle
are exchangeable) together with their mean and :math:`\hat\sigma_N`.

Writing (:class:`MemberArchiveWriter`) follows the innovation archive
(:mod:`pyoops.diagnostics.archive`) and shares its log machinery
(:class:`~pyoops.util.appendlog.AppendLog`): each cycle is one chunk of ``<archive>.log``
(40-byte header: tag ``MEM1``, cycle index, background time, payload length, CRC-32; then
every variable's ``(N, *grid)`` float64 values, little-endian, C order), the writer's
:meth:`~MemberArchiveWriter.checkpoint_state` goes into the cycle checkpoint, and a
killed run resumed from its checkpoint writes a log and an archive bitwise equal to an
uninterrupted run's.  :meth:`~pyoops.util.appendlog.LogArchiveWriter.close` assembles the netCDF file cycle by
cycle (one netCDF chunk per cycle), through :func:`~pyoops.util.atomic.atomic_output`.

Layout (netCDF4, CF-style, read with ``xarray.open_dataset(path)``)
-------------------------------------------------------------------
Dimensions ``cycle``, ``member`` and the geometry's grid dimensions (``position``;
``yc, xc`` ...), each grid dimension with its coordinate variable.  Global attributes
``format`` (``"pyoops member archive"``), ``format_version``, ``application``, ``method``,
``members``, ``variables`` (JSON list), ``geometry`` (JSON of ``describe()``),
``pyoops_version``.

================== ======================== ======= ===========================================
variable           dimensions               type    content
================== ======================== ======= ===========================================
``cycle``          cycle                    int64   cycle index (strictly increasing)
``time``           cycle                    int64   background valid time, seconds since 1970
``member``         member                   int32   member number 1..N
``<v>``            cycle, member, grid...   float64 background of every member
``<v>_mean``       cycle, grid...           float64 :math:`\bar x`
``<v>_stddev``     cycle, grid...           float64 :math:`\hat\sigma_N` (:math:`N-1` normalisation)
``<v>_analysis``   cycle, member, grid...   float64 analysis of every member (archives written with
                                                    ``analyses=True``: the pairs an emulator of the
                                                    members' analyses learns from)
================== ======================== ======= ===========================================

Reading: :func:`read_member_archive` (checked, numpy arrays) and
:meth:`MemberArchive.stddev` (:math:`\hat\sigma` of any subset of members).
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pyoops.util.appendlog import AppendLog, LogArchiveWriter, encode_log_header, log_path, parse_log_header
from pyoops.util.atomic import atomic_output
from pyoops.util.errors import InputFileError

__all__ = [
    "MEMBER_ARCHIVE_FORMAT",
    "MemberArchive",
    "MemberArchiveWriter",
    "read_member_archive",
    "sample_stddev",
]

MEMBER_ARCHIVE_FORMAT = "pyoops member archive"
MEMBER_ARCHIVE_FORMAT_VERSION = 1
TIME_UNITS = "seconds since 1970-01-01T00:00:00Z"
_LOG_MAGIC = b"PYOOPS-MEMBLOG\n\n"  # 16 bytes
_LOG_FORMAT = "pyoops member log"
_LOG_VERSION = 1
_CHUNK_TAG = b"MEM1"
_CHUNK = np.dtype([("tag", "S4"), ("pad", "<u4"), ("cycle", "<i8"), ("time", "<i8"), ("nbytes", "<u8"),
                   ("crc", "<u4"), ("pad2", "<u4")])
assert _CHUNK.itemsize == 40 and len(_LOG_MAGIC) == 16


def sample_stddev(members: np.ndarray, axis: int = 0) -> np.ndarray:
    r"""Pointwise sample standard deviation :math:`\hat\sigma` over ``axis`` (:math:`N-1` normalisation)."""
    return np.std(np.asarray(members, dtype=np.float64), axis=axis, ddof=1)


def _geometry_description(geometry: Any) -> Any:
    if hasattr(geometry, "describe"):
        geometry = geometry.describe()
    return json.loads(json.dumps(geometry, sort_keys=True))


class MemberArchiveWriter(LogArchiveWriter):
    r"""Write a member archive cycle by cycle, resumably (see the module docstring).

    Parameters
    ----------
    filename:
        The netCDF archive written at :meth:`~pyoops.util.appendlog.LogArchiveWriter.close`; the log is ``<filename>.log``.
    geometry:
        The members' geometry (grid dimensions, coordinates and ``describe()``).
    variables:
        The archived variables.
    members:
        Ensemble size :math:`N \ge 2` of every cycle.
    application, method:
        What produced the members, stored as attributes.
    resumable:
        ``True``: append to ``<filename>.log`` (needed to :meth:`resume`); ``False``: in memory.
    analyses:
        Also archive every member's analysis (``<v>_analysis``): each cycle then appends the
        backgrounds and their analyses, the (background, analysis) pairs of every member.
    """

    def __init__(self, filename: "str | os.PathLike[str]", geometry: Any, variables: Sequence[str], members: int,
                 *, application: str = "", method: str = "", resumable: bool = True, analyses: bool = False) -> None:
        if int(members) < 2:
            raise ValueError(f"a member archive needs at least 2 members, got {members}")
        self.filename = Path(filename)
        self.log = log_path(filename)
        self.members = int(members)
        self.variables = [str(v) for v in variables]
        self.shapes = {v: tuple(int(n) for n in geometry.field_shape(v)) for v in self.variables}
        self.dims = {v: tuple(geometry.field_dims(v)) for v in self.variables}
        coords = geometry.coordinates
        self._header = {
            "format": _LOG_FORMAT, "version": _LOG_VERSION, "members": self.members, "variables": self.variables,
            "shapes": {v: list(s) for v, s in self.shapes.items()}, "dims": {v: list(d) for v, d in self.dims.items()},
            "coordinates": {d: [float(x) for x in np.asarray(coords[d]).ravel()]
                            for d in sorted({d for ds in self.dims.values() for d in ds}) if d in coords},
            "attributes": {"application": str(application), "method": str(method),
                           "geometry": _geometry_description(geometry)}}
        self.analyses = bool(analyses)
        if self.analyses:   # only then: the header (hence the resume check) of background-only logs is unchanged
            self._header["analyses"] = True
        self._log = AppendLog(self.filename, encode_log_header(_LOG_MAGIC, self._header), _LOG_FORMAT,
                              _LOG_VERSION, resumable=resumable)
        self._ncycles = 0
        self._last_cycle: int | None = None

    @property
    def ncycles(self) -> int:
        """Cycles in the archive so far (including those of a resumed log)."""
        return self._ncycles

    @property
    def payload_bytes(self) -> int:
        """Bytes of one cycle's members (backgrounds, and analyses if archived)."""
        return 8 * self.members * sum(math.prod(s) for s in self.shapes.values()) * (2 if self.analyses else 1)

    def append_cycle(self, cycle: int, time: Any, members: Mapping[str, Any],
                     analyses: Mapping[str, Any] | None = None) -> None:
        """Append the backgrounds ``{variable: (N, *grid)}`` of cycle ``cycle`` valid at ``time`` (and, in an
        archive of analyses, the members' ``analyses``, same layout)."""
        cycle = int(cycle)
        if self._last_cycle is not None and cycle <= self._last_cycle:
            raise ValueError(f"cycle {cycle} appended after cycle {self._last_cycle}: cycle indices must increase")
        if (analyses is not None) != self.analyses:
            raise ValueError("this archive keeps the members' analyses: give them" if self.analyses else
                             "this archive keeps backgrounds only, but analyses were given")
        parts = [self._payload(members, "members")]
        if analyses is not None:
            parts.append(self._payload(analyses, "analyses"))
        payload = b"".join(parts)
        seconds = time.seconds_since_epoch() if hasattr(time, "seconds_since_epoch") else float(time)
        head = np.zeros(1, _CHUNK)
        head["tag"], head["cycle"], head["time"] = _CHUNK_TAG, cycle, int(round(seconds))
        head["nbytes"], head["crc"] = len(payload), zlib.crc32(payload)
        self._log.append(head.tobytes() + payload)
        self._ncycles += 1
        self._last_cycle = cycle

    def _payload(self, members: Mapping[str, Any], what: str) -> bytes:
        parts = []
        for v in self.variables:
            if v not in members:
                raise ValueError(f"no {what} of variable {v!r} (the archive has {self.variables})")
            a = np.asarray(members[v], dtype="<f8")
            if a.shape != (self.members, *self.shapes[v]):
                raise ValueError(f"{what} of {v!r} have shape {a.shape}, expected {(self.members, *self.shapes[v])}")
            if not np.isfinite(a).all():
                raise ValueError(f"{what} of {v!r} have non-finite values")
            parts.append(np.ascontiguousarray(a).tobytes())
        return b"".join(parts)

    def checkpoint_state(self) -> dict[str, Any]:
        """What the application's checkpoint stores to :meth:`resume` (after the cycle's append)."""
        return {**self._log.checkpoint_state(), "cycles": self._ncycles, "last cycle": self._last_cycle}

    def resume(self, state: Mapping[str, Any]) -> None:
        """Continue the log from a :meth:`checkpoint_state` (truncating what came after it)."""
        found: list[tuple[int, int | None]] = []

        def check(data: bytes) -> None:
            header, _ = parse_log_header(data, _LOG_MAGIC, str(self.log), "pyoops member log")
            if header != self._header:
                raise InputFileError(str(self.log), "member log was written with other variables, members, grid or "
                                                    "attributes than this run's")
            _, chunks = _parse(data, str(self.log), self.payload_bytes)
            found.append((len(chunks), int(chunks[-1][0]["cycle"]) if chunks else None))

        self._log.resume(state, check)
        self._ncycles, self._last_cycle = found[0]

    def _assemble(self) -> None:
        """Write the netCDF archive from the log (atomically), one cycle's chunk at a time."""
        with self._log.reader() as fh:
            _assemble(self.filename, fh, self._log.nbytes, self._header, str(self.log), self.payload_bytes)


def _parse(data: bytes, name: str, payload: int) -> tuple[dict[str, Any], list[tuple[Any, int]]]:
    """Header and (chunk header, payload offset) of every chunk of a whole log in memory."""
    header, pos = parse_log_header(data, _LOG_MAGIC, name, "pyoops member log")
    chunks = []
    while pos < len(data):
        head, start = _chunk_at(data[pos:pos + _CHUNK.itemsize], name, pos, payload)
        if start + pos + payload > len(data) or zlib.crc32(data[pos + start:pos + start + payload]) != int(head["crc"]):
            raise InputFileError(name, f"member log is truncated or has a bad checksum in the chunk at byte {pos}")
        chunks.append((head, pos + start))
        pos += start + payload
    return header, chunks


def _chunk_at(raw: bytes, name: str, pos: int, payload: int) -> tuple[Any, int]:
    if len(raw) < _CHUNK.itemsize:
        raise InputFileError(name, f"member log ends inside a cycle header at byte {pos}")
    head = np.frombuffer(raw, _CHUNK, 1)[0]
    if head["tag"] != _CHUNK_TAG or int(head["nbytes"]) != payload:
        raise InputFileError(name, f"member log is corrupt at byte {pos}")
    return head, _CHUNK.itemsize


def _assemble(filename: Path, fh: Any, nbytes: int, header: dict[str, Any], name: str, payload: int) -> None:
    """Write the netCDF archive, reading the log ``fh`` one chunk (cycle) at a time."""
    import netCDF4

    from pyoops.util.version import __version__

    first = fh.read(len(_LOG_MAGIC) + 4)
    size = int(np.frombuffer(first, "<u4", 1, len(_LOG_MAGIC))[0])
    parse_log_header(first + fh.read(size), _LOG_MAGIC, name, "pyoops member log")
    pos = len(first) + size
    heads, offsets = [], []
    while pos < nbytes:  # first pass: the chunk headers (the cycle table)
        fh.seek(pos)
        head, start = _chunk_at(fh.read(_CHUNK.itemsize), name, pos, payload)
        heads.append(head)
        offsets.append(pos + start)
        pos += start + payload
    if pos != nbytes:
        raise InputFileError(name, "member log is truncated")
    variables, n = header["variables"], int(header["members"])
    shapes = {v: tuple(header["shapes"][v]) for v in variables}
    dims = {v: tuple(header["dims"][v]) for v in variables}
    attrs = header["attributes"]
    with atomic_output(filename, ".nc") as tmp:
        with netCDF4.Dataset(os.path.abspath(tmp), "w", format="NETCDF4") as ds:
            ds.setncattr("format", MEMBER_ARCHIVE_FORMAT)
            ds.setncattr("format_version", np.int32(MEMBER_ARCHIVE_FORMAT_VERSION))
            ds.setncattr("application", attrs["application"])
            ds.setncattr("method", attrs["method"])
            ds.setncattr("members", np.int32(n))
            ds.setncattr("variables", json.dumps(variables))
            ds.setncattr("geometry", json.dumps(attrs["geometry"], sort_keys=True))
            ds.setncattr("pyoops_version", __version__)
            ds.createDimension("cycle", len(heads))
            ds.createDimension("member", n)
            for v in variables:
                for d, k in zip(dims[v], shapes[v]):
                    if d not in ds.dimensions:
                        ds.createDimension(d, k)
                        if d in header["coordinates"]:
                            ds.createVariable(d, "f8", (d,))[:] = np.asarray(header["coordinates"][d])
            cyc = ds.createVariable("cycle", "i8", ("cycle",))
            cyc.long_name = "cycle index"
            t = ds.createVariable("time", "i8", ("cycle",))
            t.units = TIME_UNITS
            t.long_name = "background valid time"
            if heads:
                cyc[:] = np.array([h["cycle"] for h in heads], dtype=np.int64)
                t[:] = np.array([h["time"] for h in heads], dtype=np.int64)
            ds.createVariable("member", "i4", ("member",))[:] = np.arange(1, n + 1, dtype=np.int32)
            out = {}
            for v in variables:
                shape = shapes[v]
                out[v] = ds.createVariable(v, "f8", ("cycle", "member", *dims[v]), chunksizes=(1, n, *shape))
                out[v].long_name = f"background of every member, {v}"
                out[f"{v}_mean"] = ds.createVariable(f"{v}_mean", "f8", ("cycle", *dims[v]), chunksizes=(1, *shape))
                out[f"{v}_mean"].long_name = f"ensemble mean of {v}"
                out[f"{v}_stddev"] = ds.createVariable(f"{v}_stddev", "f8", ("cycle", *dims[v]),
                                                       chunksizes=(1, *shape))
                out[f"{v}_stddev"].long_name = f"ensemble standard deviation of {v} (N-1 normalisation)"
                if header.get("analyses"):
                    out[f"{v}_analysis"] = ds.createVariable(f"{v}_analysis", "f8", ("cycle", "member", *dims[v]),
                                                             chunksizes=(1, n, *shape))
                    out[f"{v}_analysis"].long_name = f"analysis of every member, {v}"
            for i, offset in enumerate(offsets):
                fh.seek(offset)
                data = fh.read(payload)
                if zlib.crc32(data) != int(heads[i]["crc"]):
                    raise InputFileError(name, f"member log has a bad checksum in the chunk of cycle "
                                               f"{int(heads[i]['cycle'])}")
                start = 0
                for v in variables:
                    count = n * math.prod(shapes[v])
                    a = np.frombuffer(data, "<f8", count, start).reshape((n, *shapes[v]))
                    start += 8 * count
                    out[v][i] = a
                    out[f"{v}_mean"][i] = a.mean(axis=0)
                    out[f"{v}_stddev"][i] = sample_stddev(a)
                if header.get("analyses"):
                    for v in variables:
                        count = n * math.prod(shapes[v])
                        out[f"{v}_analysis"][i] = np.frombuffer(data, "<f8", count, start).reshape((n, *shapes[v]))
                        start += 8 * count


@dataclass(frozen=True)
class MemberArchive:
    """The contents of a member archive: ``members[v]`` (backgrounds) of shape ``(ncycles, N, *grid)``, and
    ``analyses[v]`` (same shape) if the archive keeps the members' analyses (else None)."""

    members: dict[str, np.ndarray]
    cycle: np.ndarray
    time: np.ndarray
    geometry: Any
    attributes: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    analyses: dict[str, np.ndarray] | None = None

    @property
    def variables(self) -> list[str]:
        return list(self.members)

    @property
    def nmembers(self) -> int:
        return int(next(iter(self.members.values())).shape[1])

    @property
    def ncycles(self) -> int:
        return int(self.cycle.size)

    def stddev(self, subset: "Sequence[int] | np.ndarray | None" = None) -> dict[str, np.ndarray]:
        r""":math:`\hat\sigma` of the members in ``subset`` (indices 0..N-1 along the member axis, one list
        for every cycle, or an ``(ncycles, M)`` array of per-cycle subsets; None: all :math:`N`),
        ``{variable: (ncycles, *grid)}``."""
        return {v: sample_stddev(self.subset(v, subset), axis=1) for v in self.members}

    def subset(self, variable: str, subset: "Sequence[int] | np.ndarray | None") -> np.ndarray:
        """The members in ``subset`` of ``variable``, ``(ncycles, M, *grid)``."""
        a = self.members[variable]
        if subset is None:
            return a
        idx = np.asarray(subset, dtype=np.int64)
        if idx.ndim == 1:
            return a[:, idx]
        if idx.shape[0] != a.shape[0]:
            raise ValueError(f"per-cycle subsets for {idx.shape[0]} cycles, the archive has {a.shape[0]}")
        return np.take_along_axis(a, idx.reshape(idx.shape + (1,) * (a.ndim - 2)), axis=1)

    def select_cycles(self, keep: np.ndarray) -> "MemberArchive":
        keep = np.asarray(keep)
        return MemberArchive({v: a[keep] for v, a in self.members.items()}, self.cycle[keep], self.time[keep],
                             self.geometry, self.attributes, self.source,
                             None if self.analyses is None else {v: a[keep] for v, a in self.analyses.items()})


def read_member_archive(path: "str | os.PathLike[str]", geometry: Any = None,
                        variables: Sequence[str] | None = None) -> MemberArchive:
    """Read a member archive (checking format, variables and, if given, the geometry) into numpy arrays."""
    from pyoops.fields.netcdf import open_dataset

    name = os.fspath(path)
    with open_dataset(name, "member archive") as ds:
        attrs = {k: ds.getncattr(k) for k in ds.ncattrs()}
        if attrs.get("format") != MEMBER_ARCHIVE_FORMAT:
            raise InputFileError(name, f"is not a pyoops member archive (global attribute 'format' is "
                                       f"{attrs.get('format')!r})")
        if int(attrs.get("format_version", -1)) != MEMBER_ARCHIVE_FORMAT_VERSION:
            raise InputFileError(name, f"member archive format version {attrs.get('format_version')}, this pyoops "
                                       f"reads {MEMBER_ARCHIVE_FORMAT_VERSION}")
        try:
            stored = [str(v) for v in json.loads(attrs["variables"])]
            described = json.loads(attrs["geometry"])
        except (KeyError, ValueError, TypeError):
            raise InputFileError(name, "member archive lacks readable 'variables' and 'geometry' attributes") from None
        if geometry is not None and described != _geometry_description(geometry):
            raise InputFileError(name, "member archive is on another geometry than the one asked for")
        wanted = list(variables) if variables is not None else stored
        missing = [v for v in wanted if v not in stored]
        if missing:
            raise InputFileError(name, f"member archive has no variable(s) {missing} (it has {stored})")
        def values(name: str) -> np.ndarray:
            var = ds.variables[name]
            var.set_auto_mask(False)
            return np.asarray(var[...], dtype=np.float64)

        members = {v: values(v) for v in wanted}
        analyses = ({v: values(f"{v}_analysis") for v in wanted}
                    if all(f"{v}_analysis" in ds.variables for v in wanted) else None)
        cycle = np.asarray(ds.variables["cycle"][...], dtype=np.int64)
        time = np.asarray(ds.variables["time"][...], dtype=np.int64)
    return MemberArchive(members, cycle, time, described, attrs, name, analyses)
