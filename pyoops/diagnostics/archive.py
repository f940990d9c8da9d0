r"""Innovation archives: per observation and cycle, the departures and the error variances assumed.

An *innovation archive* records, for every observation :math:`i` assimilated in cycle
:math:`c`, what observation-space diagnostics and innovation-based tuning need
(Desroziers et al. 2005): the observation :math:`y_i`, the assumed observation-error
standard deviation :math:`\sigma_{o,i}`, :math:`H(x_b)_i` and :math:`H(x_a)_i` (for an
ensemble: the mean of the members' :math:`H(x)`), the assumed background-error variance
in observation space :math:`\sigma_{b,i}^2 = (\mathbf{H}\mathbf{B}\mathbf{H}^\mathrm{T})_{ii}`,
optionally the background ensemble's :math:`H(x)` perturbations, and metadata (time,
location, variable, observation group, region).  Per cycle it records the analysis time,
the number of observations and the total cost at the analysis :math:`J(x_a)`.

Writing (:class:`InnovationArchiveWriter`)
------------------------------------------
::

    writer = InnovationArchiveWriter("out/innovations.nc", coordinates=["x"], members=20,
                                     geometry=geometry, application="cycle", method="LETKF")
    if "innovations" in checkpoint:          # a resumed run: back to the checkpointed length
        writer.resume(checkpoint["innovations"])
    for k in cycles:
        ...
        writer.append_cycle(k, analysis_time, obs_value=y, obs_error=sigma_o,
                            hofx_background=hxb, hofx_analysis=hxa,
                            background_error_variance=hbht_diag, date_time=t_obs,
                            coordinates={"x": x_obs}, variable="x", obs_group="L96",
                            ensemble_perturbations=hx_pert, cost_at_analysis=j_a)
        checkpoint["innovations"] = writer.checkpoint_state()   # saved with the cycle checkpoint
    writer.close()                             # assembles out/innovations.nc

Several observers in one cycle: concatenate their arrays and pass per-observation
``obs_group`` (and ``variable``) arrays.

Design and guarantees
---------------------
The log's header, checkpoint state, resume and truncation are those of
:class:`pyoops.util.appendlog.AppendLog` (shared with the member archive of
:mod:`pyoops.ensemble.member_archive`); the chunk layout below is this archive's.

* **Append-only log.**  Each :meth:`~InnovationArchiveWriter.append_cycle` appends one
  *cycle chunk* to ``<archive>.log`` next to the archive (48-byte chunk header, the names
  first used in this cycle as JSON, then one fixed-layout little-endian record per
  observation) with one ``write`` and a ``flush``: the cost per cycle is a copy of the
  cycle's arrays, whatever the number of cycles before.  The log starts with a header
  (magic bytes, JSON of the coordinates, members and attributes) and is created through
  :func:`~pyoops.util.atomic.atomic_output` with ``commit="now"``: it is on disk at its
  final name at once, and kept if the run fails, because it is what a resumed run
  continues.  Every chunk carries the CRC-32 of its payload.
* **Checkpoint and resume.**  :meth:`~InnovationArchiveWriter.checkpoint_state` returns a
  small JSON-compatible dict (committed length in bytes, CRC-32 of those bytes, number of
  cycles, last cycle index) that the application saves *in its own checkpoint*, after the
  cycle's records were appended.  :meth:`~InnovationArchiveWriter.resume` checks the log
  against it (length, checksum, header), truncates whatever a killed run appended after
  the checkpoint (cycles to be recomputed, or a torn record) and appends from there.  A
  run killed at any instant (SIGKILL included) and resumed from its checkpoint therefore
  produces a log, and an archive, **bitwise identical** to an uninterrupted run, provided
  the cycles it recomputes are bitwise the same (pyoops's cycling is).  Like the cycle
  checkpoint, the log is protected against the death of the process, not against the
  loss of the operating system's page cache (no ``fsync``).
* **Assembly.**  :meth:`~pyoops.util.appendlog.LogArchiveWriter.close` reads the log and writes the
  netCDF archive through :func:`~pyoops.util.atomic.atomic_output` (inside an
  application run: renamed into place when the run succeeds).  The file's bytes depend
  only on the records and attributes (no creation time is stored).  The log is kept:
  re-running a finished experiment resumes with nothing to do and rebuilds the same
  archive from it; delete it when the archive is final.
* **Without a log.**  ``resumable=False`` keeps the chunks in memory (same format, same
  archive): for single-analysis applications that have no checkpoint.
* Inside an application run both the archive and its log are locked against other pyoops
  runs of the same user for as long as the run lasts (see :mod:`pyoops.util.atomic`).

Archive layout (netCDF4, IODA-like; read with ``xarray.open_dataset(path, group=...)``)
-----------------------------------------------------------------------------------------
Root dimensions ``Location`` (all observations of all cycles, cycle after cycle: a
ragged, "contiguous" layout) and ``Member`` (ensemble size, only with perturbations);
root attributes ``format`` (``"pyoops innovation archive"``), ``format_version``,
``application``, ``method``, ``members``, ``coordinates`` (JSON list), ``geometry`` (JSON
of the geometry's ``describe()``), ``pyoops_version`` and any extra attributes.

=================================== ================ ======= =============================================================
group / variable                    dimensions       type    content
=================================== ================ ======= =============================================================
``MetaData/dateTime``               Location         int64   observation time, ``seconds since 1970-01-01T00:00:00Z``
``MetaData/cycle``                  Location         int64   cycle index of the observation
``MetaData/<coordinate>``           Location         float64 location (``x``; ``x, y``; ``x, y, z`` ...)
``MetaData/variableName``           Location         string  observed variable
``MetaData/obsGroup``               Location         string  observation group (obs space name)
``MetaData/region``                 Location         string  region label (``""``: none given)
``ObsValue/value``                  Location         float64 :math:`y`
``ObsError/value``                  Location         float64 assumed :math:`\sigma_o` (standard deviation)
``HofXBackground/value``            Location         float64 :math:`H(x_b)` (ensembles: mean of :math:`H(x_b^k)`)
``HofXAnalysis/value``              Location         float64 :math:`H(x_a)` (ensembles: mean); NaN: none
``ombg/value``                      Location         float64 :math:`y - H(x_b)`
``oman/value``                      Location         float64 :math:`y - H(x_a)`
``BackgroundErrorVariance/value``   Location         float64 assumed :math:`(\mathbf{HBH}^\mathrm{T})_{ii}`; NaN: unknown
``EnsembleHofXPerturbations/value`` Location, Member float64 :math:`H(x_b^k) - \overline{H(x_b)}` (unnormalised)
``Cycle/cycle``                     Cycle            int64   cycle index (strictly increasing)
``Cycle/analysisTime``              Cycle            int64   analysis time, seconds since the epoch
``Cycle/nobs``                      Cycle            int64   observations of the cycle (``sample_dimension = "Location"``)
``Cycle/costAtAnalysis``            Cycle            float64 :math:`J(x_a)`, NaN when the method has no cost
=================================== ================ ======= =============================================================

Reading (:func:`read_archive`)
------------------------------
:func:`read_archive` reads one or several archives into an :class:`InnovationData`
(plain numpy arrays), checking each file (format, groups, variables, lengths, the
cycle table against ``MetaData/cycle``) and their combination (same geometry
description, coordinates, method and ensemble size; cycles that do not overlap).
Archives are concatenated in cycle order.  Any problem raises
:class:`~pyoops.util.errors.InputFileError` naming the file, on one line.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pyoops.util.appendlog import AppendLog, LogArchiveWriter, encode_log_header, log_path, parse_log_header
from pyoops.util.atomic import atomic_output
from pyoops.util.errors import InputFileError

if TYPE_CHECKING:
    from pyoops.diagnostics.regions import Regions

__all__ = [
    "ARCHIVE_FORMAT",
    "ARCHIVE_FORMAT_VERSION",
    "DATETIME_UNITS",
    "InnovationArchiveWriter",
    "InnovationData",
    "log_path",
    "read_archive",
]

ARCHIVE_FORMAT = "pyoops innovation archive"
ARCHIVE_FORMAT_VERSION = 1
DATETIME_UNITS = "seconds since 1970-01-01T00:00:00Z"
LOCATION_DIM = "Location"
MEMBER_DIM = "Member"
CYCLE_DIM = "Cycle"

#: Data groups on ``Location``: group name -> (InnovationData attribute, long name).
DATA_GROUPS: dict[str, tuple[str, str]] = {
    "ObsValue": ("obs_value", "observation value y"),
    "ObsError": ("obs_error", "assumed observation error standard deviation"),
    "HofXBackground": ("hofx_background", "H(x_b) (ensembles: mean of the members' H(x))"),
    "HofXAnalysis": ("hofx_analysis", "H(x_a) (ensembles: mean of the members' H(x))"),
    "BackgroundErrorVariance": ("background_error_variance", "assumed background error variance diag(HBH^T)"),
}
DERIVED_GROUPS = {"ombg": "y - H(x_b)", "oman": "y - H(x_a)"}
ENSEMBLE_GROUP = "EnsembleHofXPerturbations"
#: MetaData variables other than the coordinates.
RESERVED_METADATA = ("dateTime", "cycle", "variableName", "obsGroup", "region")
_NAME_KINDS = ("variable", "obs group", "region")
_NAME_METADATA = {"variable": "variableName", "obs group": "obsGroup", "region": "region"}

# Log format (the framing is :mod:`pyoops.util.appendlog`'s) -------------------------------------------
_LOG_MAGIC = b"PYOOPS-INNOVLOG\n"  # 16 bytes
_LOG_FORMAT = "pyoops innovation log"
_LOG_VERSION = 1
_CHUNK_TAG = b"CYC1"
_CHUNK = np.dtype([("tag", "S4"), ("names_nbytes", "<u4"), ("cycle", "<i8"), ("analysis_time", "<i8"),
                   ("nobs", "<i8"), ("cost", "<f8"), ("crc", "<u4"), ("pad", "<u4")])
assert _CHUNK.itemsize == 48


def _record_dtype(coordinates: Sequence[str], members: int) -> np.dtype:
    """Fixed layout of one observation record of the log (little-endian, packed)."""
    fields: list[tuple[Any, ...]] = [
        ("dateTime", "<i8"), ("obs_value", "<f8"), ("obs_error", "<f8"), ("hofx_background", "<f8"),
        ("hofx_analysis", "<f8"), ("background_error_variance", "<f8"),
        ("variable", "<i4"), ("obs group", "<i4"), ("region", "<i4"), ("pad", "<i4")]
    fields += [(f"coordinate {name}", "<f8") for name in coordinates]
    if members:
        fields.append(("perturbations", "<f8", (members,)))
    return np.dtype(fields)


def _seconds(value: Any, what: str) -> int:
    """Whole seconds since 1970-01-01T00:00:00Z of a DateTime, ISO string or number."""
    if hasattr(value, "seconds_since_epoch"):
        seconds = float(value.seconds_since_epoch())
    elif isinstance(value, str):
        from pyoops.util.datetime import DateTime

        seconds = DateTime(value).seconds_since_epoch()
    else:
        seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return int(round(seconds))


def _geometry_description(geometry: Any) -> Any:
    if geometry is None:
        return None
    if hasattr(geometry, "describe"):
        geometry = geometry.describe()
    # Normalised through JSON: what is compared on resume and read back from the archive.
    return json.loads(json.dumps(geometry, sort_keys=True))


def _header(coordinates: Sequence[str], members: int, attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {"format": _LOG_FORMAT, "version": _LOG_VERSION, "coordinates": list(coordinates),
            "members": int(members), "attributes": dict(attributes)}


@dataclass
class _LogContent:
    """A parsed log: header, name tables and the concatenated records of every cycle."""

    header: dict[str, Any]
    names: dict[str, list[str]]
    cycles: np.ndarray  # (ncycles,) of _CHUNK
    records: np.ndarray  # (nobs,) of the record dtype
    chunk_ends: list[int] = field(default_factory=list)  # byte offset after each chunk


def _parse_log(data: bytes, name: str) -> _LogContent:
    """Parse a whole log (``name`` for messages); raises InputFileError on any inconsistency."""
    header, pos = parse_log_header(data, _LOG_MAGIC, name, "pyoops innovation log")
    try:
        coordinates, members = list(header["coordinates"]), int(header["members"])
    except (ValueError, KeyError, TypeError):
        raise InputFileError(name, "innovation log has an unreadable header") from None
    if header.get("format") != _LOG_FORMAT or header.get("version") != _LOG_VERSION:
        raise InputFileError(name, f"innovation log format {header.get('format')!r} version "
                                   f"{header.get('version')!r}, expected {_LOG_FORMAT!r} version {_LOG_VERSION}")
    rec = _record_dtype(coordinates, members)
    names: dict[str, list[str]] = {k: [] for k in _NAME_KINDS}
    chunks, parts, ends = [], [], []
    while pos < len(data):
        if len(data) - pos < _CHUNK.itemsize:
            raise InputFileError(name, f"innovation log ends inside a cycle header at byte {pos}")
        head = np.frombuffer(data, _CHUNK, 1, pos)[0]
        start = pos + _CHUNK.itemsize
        nobs, nnames = int(head["nobs"]), int(head["names_nbytes"])
        end = start + nnames + nobs * rec.itemsize
        if head["tag"] != _CHUNK_TAG or nobs < 0 or end > len(data):
            raise InputFileError(name, f"innovation log is truncated or corrupt at byte {pos}")
        if zlib.crc32(data[start:end]) != int(head["crc"]):
            raise InputFileError(name, f"innovation log has a bad checksum in the cycle chunk at byte {pos}")
        if nnames:
            new = json.loads(data[start:start + nnames].decode("utf-8"))
            for kind in _NAME_KINDS:
                names[kind].extend(new.get(kind, []))
        parts.append(np.frombuffer(data, rec, nobs, start + nnames))
        chunks.append(head)
        pos = end
        ends.append(pos)
    records = np.concatenate(parts) if parts else np.empty(0, rec)
    return _LogContent(header, names, np.array(chunks, dtype=_CHUNK), records, ends)


class InnovationArchiveWriter(LogArchiveWriter):
    r"""Write an innovation archive cycle by cycle, resumably (see the module docstring).

    Parameters
    ----------
    filename:
        The netCDF archive to write at :meth:`~pyoops.util.appendlog.LogArchiveWriter.close`; the log is ``<filename>.log``.
    coordinates:
        Names of the location coordinates, e.g. ``["x"]`` or ``["x", "y", "z"]``.
    members:
        Ensemble size :math:`N` of the ``ensemble_perturbations`` given every cycle
        (0: no ensemble).
    geometry:
        The geometry (its ``describe()`` is stored) or the description itself; archives of
        different geometries are never pooled by :func:`read_archive`.
    application, method:
        What produced the innovations (``"cycle"``, ``"LETKF"``...), stored as attributes.
    attributes:
        Extra global attributes (strings or numbers), stored in the archive.
    resumable:
        ``True``: append to ``<filename>.log`` (needed for :meth:`resume`); ``False``: keep
        the records in memory until :meth:`~pyoops.util.appendlog.LogArchiveWriter.close`.
    regions:
        :class:`~pyoops.diagnostics.regions.Regions` labelling the observations of every
        cycle appended without an explicit ``region`` (stored as the ``regions`` attribute).
    """

    def __init__(self, filename: "str | os.PathLike[str]", coordinates: Sequence[str], members: int = 0, *,
                 geometry: Any = None, application: str = "", method: str = "",
                 attributes: Mapping[str, Any] | None = None, resumable: bool = True,
                 regions: "Regions | None" = None) -> None:
        self.filename = Path(filename)
        self.log = log_path(filename)
        self.coordinates = [str(c) for c in coordinates]
        clash = sorted(set(self.coordinates) & set(RESERVED_METADATA))
        if clash or len(set(self.coordinates)) != len(self.coordinates) or "" in self.coordinates:
            raise ValueError(f"coordinate names must be distinct, non-empty and not {RESERVED_METADATA}; "
                             f"got {self.coordinates}")
        if int(members) < 0 or int(members) == 1:
            raise ValueError(f"members must be 0 (no ensemble) or at least 2, got {members}")
        self.members = int(members)
        attrs = {"application": str(application), "method": str(method),
                 "geometry": _geometry_description(geometry)}
        for key, value in (attributes or {}).items():
            if key in attrs or key in ("format", "format_version", "members", "coordinates", "pyoops_version"):
                raise ValueError(f"attribute {key!r} is set by the writer")
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError(f"attribute {key!r} must be a string or a number, got {value!r}")
            attrs[str(key)] = value
        self.regions = regions if regions else None
        if self.regions is not None:
            attrs["regions"] = self.regions.describe()
        self._header = _header(self.coordinates, self.members, attrs)
        self._record = _record_dtype(self.coordinates, self.members)
        self.resumable = bool(resumable)
        self._names: dict[str, dict[str, int]] = {k: {} for k in _NAME_KINDS}
        self._ncycles = 0
        self._last_cycle: int | None = None
        self._log = AppendLog(self.filename, encode_log_header(_LOG_MAGIC, self._header), _LOG_FORMAT, _LOG_VERSION,
                              resumable=self.resumable)

    # State -----------------------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._log.closed:
            raise RuntimeError(f"the innovation archive writer of {self.filename} is closed")
        self._log.start()

    def resume(self, state: Mapping[str, Any]) -> None:
        """Continue the log from a :meth:`checkpoint_state` saved by an earlier (killed) run.

        Checks that ``<filename>.log`` holds at least the checkpointed bytes with the same
        checksum and was written with this writer's coordinates, members and attributes,
        truncates it to the checkpointed length and appends from there.  Must be called
        before the first :meth:`append_cycle`.

        Raises
        ------
        InputFileError
            The log is missing, shorter than the checkpoint, or not the one the
            checkpoint describes.
        """
        if self._log.started or self._log.closed:
            raise RuntimeError("resume() must be called before any append_cycle()")
        if not self.resumable:
            raise RuntimeError("a writer with resumable=False cannot resume")
        parsed: list[_LogContent] = []

        def check(data: bytes) -> None:
            content = _parse_log(data, str(self.log))
            if content.header != self._header:
                raise InputFileError(str(self.log), "innovation log was written with other coordinates, members or "
                                                    f"attributes ({json.dumps(content.header, sort_keys=True)[:300]}) "
                                                    "than this run's")
            parsed.append(content)

        self._log.resume(state, check)
        content = parsed[0]
        for kind in _NAME_KINDS:
            self._names[kind] = {n: i for i, n in enumerate(content.names[kind])}
        self._ncycles = int(content.cycles.size)
        self._last_cycle = int(content.cycles["cycle"][-1]) if content.cycles.size else None

    # Appending ----------------------------------------------------------------------------------
    def append_cycle(self, cycle: int, analysis_time: Any, *, obs_value: Any, obs_error: Any,
                     hofx_background: Any, hofx_analysis: Any, background_error_variance: Any, date_time: Any,
                     coordinates: Mapping[str, Any], variable: "str | Sequence[str]",
                     obs_group: "str | Sequence[str]", region: "str | Sequence[str] | None" = None,
                     ensemble_perturbations: Any = None, cost_at_analysis: float = math.nan) -> None:
        r"""Append the observations of one cycle (one write and a flush of the log).

        Parameters
        ----------
        cycle:
            Cycle index; strictly larger than the previous cycle's.
        analysis_time:
            Analysis time (DateTime, ISO-8601 string or seconds since the epoch).
        obs_value:
            :math:`y`, shape ``(nobs,)``, finite (pass only the observations used).
        obs_error:
            Assumed :math:`\sigma_o` (standard deviations), ``(nobs,)`` or a scalar; positive.
        hofx_background, hofx_analysis:
            :math:`H(x_b)` and :math:`H(x_a)`, ``(nobs,)`` (ensembles: the members' mean);
            NaN in ``hofx_analysis`` means "no analysis".
        background_error_variance:
            Assumed :math:`(\mathbf{HBH}^\mathrm{T})_{ii}`, ``(nobs,)`` or a scalar; NaN: unknown.
        date_time:
            Observation times in seconds since 1970-01-01T00:00:00Z, ``(nobs,)``, or one
            number or DateTime for all (rounded to whole seconds, the IODA convention).
        coordinates:
            One ``(nobs,)`` array (or scalar) per coordinate name of the writer.
        variable, obs_group, region:
            Names, one for all observations or one per observation; ``region`` may be None.
        ensemble_perturbations:
            :math:`H(x_b^k) - \overline{H(x_b)}`, shape ``(nobs, members)``; required iff
            ``members > 0``.
        cost_at_analysis:
            :math:`J(x_a)` (total cost at the analysis), NaN if the method has none.
        """
        self._ensure_started()
        cycle = int(cycle)
        if self._last_cycle is not None and cycle <= self._last_cycle:
            raise ValueError(f"cycle {cycle} appended after cycle {self._last_cycle}: cycle indices must "
                             "increase")
        y = np.asarray(obs_value, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError(f"obs_value must be one-dimensional, got shape {y.shape}")
        nobs = y.size

        def vector(name: str, value: Any, allow_nan: bool = False) -> np.ndarray:
            a = np.asarray(value, dtype=np.float64)
            if a.ndim == 0:
                a = np.full(nobs, float(a))
            if a.shape != (nobs,):
                raise ValueError(f"{name} has shape {a.shape}, expected ({nobs},) like obs_value")
            bad = ~np.isfinite(a) if not allow_nan else np.isinf(a)
            if bad.any():
                raise ValueError(f"{name} has {int(bad.sum())} non-finite value(s)"
                                 + (" (NaN is allowed, infinity is not)" if allow_nan else ""))
            return a

        rec = np.zeros(nobs, self._record)
        rec["obs_value"] = vector("obs_value", y)
        rec["obs_error"] = sigma_o = vector("obs_error", obs_error)
        if (sigma_o <= 0).any():
            raise ValueError("obs_error must be positive (standard deviations)")
        rec["hofx_background"] = vector("hofx_background", hofx_background)
        rec["hofx_analysis"] = vector("hofx_analysis", hofx_analysis, allow_nan=True)
        rec["background_error_variance"] = sb2 = vector("background_error_variance", background_error_variance,
                                                        allow_nan=True)
        if (sb2 < 0).any():
            raise ValueError("background_error_variance must not be negative")
        if hasattr(date_time, "seconds_since_epoch"):  # one DateTime for all observations
            date_time = date_time.seconds_since_epoch()
        rec["dateTime"] = np.rint(vector("date_time", date_time)).astype(np.int64)
        if set(coordinates) != set(self.coordinates):
            raise ValueError(f"coordinates {sorted(coordinates)} given, the writer has {self.coordinates}")
        for name in self.coordinates:
            rec[f"coordinate {name}"] = vector(f"coordinates[{name!r}]", coordinates[name])
        if region is None and self.regions is not None:
            region = self.regions.labels({c: rec[f"coordinate {c}"] for c in self.coordinates}).tolist()
        new_names: dict[str, list[str]] = {}
        for kind, value in (("variable", variable), ("obs group", obs_group),
                            ("region", "" if region is None else region)):
            rec[kind] = self._codes(kind, value, nobs, new_names)
        if self.members:
            if ensemble_perturbations is None:
                raise ValueError(f"ensemble_perturbations are required: the writer has members={self.members}")
            pert = np.asarray(ensemble_perturbations, dtype=np.float64)
            if pert.shape != (nobs, self.members):
                raise ValueError(f"ensemble_perturbations has shape {pert.shape}, expected {(nobs, self.members)}")
            if not np.isfinite(pert).all():
                raise ValueError("ensemble_perturbations has non-finite values")
            rec["perturbations"] = pert
        elif ensemble_perturbations is not None:
            raise ValueError("ensemble_perturbations given to a writer with members=0")
        cost = float(cost_at_analysis)
        if math.isinf(cost):
            raise ValueError("cost_at_analysis must be finite or NaN")
        names_blob = json.dumps(new_names, sort_keys=True).encode("utf-8") if new_names else b""
        payload = names_blob + rec.tobytes()
        head = np.zeros(1, _CHUNK)
        head["tag"], head["names_nbytes"], head["cycle"] = _CHUNK_TAG, len(names_blob), cycle
        head["analysis_time"] = _seconds(analysis_time, "analysis_time")
        head["nobs"], head["cost"], head["crc"] = nobs, cost, zlib.crc32(payload)
        self._log.append(head.tobytes() + payload)
        # Only now is the cycle part of the writer's state (a failed write leaves it out).
        for kind, added in new_names.items():
            table = self._names[kind]
            for n in added:
                table[n] = len(table)
        self._ncycles += 1
        self._last_cycle = cycle

    def _codes(self, kind: str, value: Any, nobs: int, new_names: dict[str, list[str]]) -> np.ndarray:
        """Integer codes of the names ``value`` (one, or one per observation), new names noted."""
        table = self._names[kind]
        if isinstance(value, str):
            labels, inverse = np.array([value]), np.zeros(nobs, dtype=np.int64)
        else:
            arr = np.asarray(value, dtype=str)
            if arr.shape != (nobs,):
                raise ValueError(f"{kind} names have shape {arr.shape}, expected ({nobs},) or one string")
            labels, inverse = np.unique(arr, return_inverse=True)
        codes = []
        added: list[str] = []
        for label in labels.tolist():
            if label not in table:
                if label not in added:
                    added.append(label)
                codes.append(len(table) + added.index(label))
            else:
                codes.append(table[label])
        if added:
            new_names[kind] = added
        return np.asarray(codes, dtype=np.int32)[inverse]

    # Checkpointing ----------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """What the application's checkpoint must store to :meth:`resume` this archive.

        A small JSON-compatible dict: the log's committed length in ``bytes``, the
        ``crc32`` of those bytes, the number of ``cycles`` and the ``last cycle`` index.
        Call it after the cycle's :meth:`append_cycle`, when writing the checkpoint.
        """
        if not self.resumable:
            raise RuntimeError("a writer with resumable=False has no checkpoint state")
        self._ensure_started()
        return {**self._log.checkpoint_state(), "cycles": self._ncycles, "last cycle": self._last_cycle}

    @property
    def ncycles(self) -> int:
        """Cycles in the archive so far (including those of a resumed log)."""
        return self._ncycles

    @property
    def last_cycle(self) -> int | None:
        """Index of the last cycle appended (or resumed), None before any."""
        return self._last_cycle

    # Closing ----------------------------------------------------------------------------------
    def _assemble(self) -> None:
        """Write the netCDF archive from the parsed log (atomically)."""
        self._ensure_started()
        _write_archive(self.filename, _parse_log(self._log.contents(), str(self.log)))


# Assembly ---------------------------------------------------------------------------------------------
def _write_archive(filename: Path, content: _LogContent) -> None:
    """Write the netCDF archive of a parsed log through atomic_output."""
    import netCDF4

    from pyoops.util.version import __version__

    header = content.header
    attrs = dict(header["attributes"])
    coordinates, members = header["coordinates"], int(header["members"])
    rec, cyc = content.records, content.cycles
    n = rec.size
    with atomic_output(filename, ".nc") as tmp:
        with netCDF4.Dataset(tmp, "w", format="NETCDF4") as ds:
            ds.setncattr("format", ARCHIVE_FORMAT)
            ds.setncattr("format_version", np.int32(ARCHIVE_FORMAT_VERSION))
            ds.setncattr("application", attrs.pop("application"))
            ds.setncattr("method", attrs.pop("method"))
            ds.setncattr("members", np.int32(members))
            ds.setncattr("coordinates", json.dumps(coordinates))
            ds.setncattr("geometry", json.dumps(attrs.pop("geometry"), sort_keys=True))
            ds.setncattr("pyoops_version", __version__)
            for key in sorted(attrs):
                ds.setncattr(key, attrs[key])
            ds.createDimension(LOCATION_DIM, n)
            if members:
                ds.createDimension(MEMBER_DIM, members)

            def variable(group: Any, name: str, kind: Any, values: Any, long_name: str,
                         dims: tuple[str, ...] = (LOCATION_DIM,), **extra: str) -> None:
                if kind is str:
                    var = group.createVariable(name, str, dims)
                else:
                    var = group.createVariable(name, kind, dims, fill_value=False)
                var.long_name = long_name
                for k, v in extra.items():
                    var.setncattr(k, v)
                if np.size(values):
                    var[...] = values

            meta = ds.createGroup("MetaData")
            variable(meta, "dateTime", "i8", rec["dateTime"], "observation time", units=DATETIME_UNITS)
            variable(meta, "cycle", "i8", np.repeat(cyc["cycle"], cyc["nobs"]), "cycle index")
            for name in coordinates:
                variable(meta, name, "f8", rec[f"coordinate {name}"], f"location coordinate {name}")
            for kind in _NAME_KINDS:
                table = np.array(content.names[kind], dtype=object)
                variable(meta, _NAME_METADATA[kind], str, table[rec[kind]], f"{kind} name")
            for group, (key, long_name) in DATA_GROUPS.items():
                variable(ds.createGroup(group), "value", "f8", rec[key], long_name)
            variable(ds.createGroup("ombg"), "value", "f8", rec["obs_value"] - rec["hofx_background"],
                     DERIVED_GROUPS["ombg"])
            variable(ds.createGroup("oman"), "value", "f8", rec["obs_value"] - rec["hofx_analysis"],
                     DERIVED_GROUPS["oman"])
            if members:
                variable(ds.createGroup(ENSEMBLE_GROUP), "value", "f8", rec["perturbations"],
                         "H(x_b^k) - mean_k H(x_b^k) (unnormalised)", (LOCATION_DIM, MEMBER_DIM))
            cg = ds.createGroup("Cycle")
            cg.createDimension(CYCLE_DIM, cyc.size)
            variable(cg, "cycle", "i8", cyc["cycle"], "cycle index", (CYCLE_DIM,))
            variable(cg, "analysisTime", "i8", cyc["analysis_time"], "analysis time", (CYCLE_DIM,),
                     units=DATETIME_UNITS)
            variable(cg, "nobs", "i8", cyc["nobs"], "number of observations of the cycle", (CYCLE_DIM,),
                     sample_dimension=LOCATION_DIM)
            variable(cg, "costAtAnalysis", "f8", cyc["cost"], "J(x_a), total cost at the analysis (NaN: none)",
                     (CYCLE_DIM,))


# Reading ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InnovationData:
    r"""The contents of one or several innovation archives, as numpy arrays.

    Per observation (length ``nobs``, cycle after cycle): ``obs_value`` :math:`y`,
    ``obs_error`` :math:`\sigma_o`, ``hofx_background``, ``hofx_analysis``,
    ``background_error_variance`` :math:`\sigma_b^2`, ``date_time`` (int64 seconds since
    the epoch), ``cycle`` (cycle index), ``coordinates`` (name -> array), ``variable``,
    ``obs_group``, ``region`` (string arrays) and ``ensemble_perturbations``
    (``(nobs, members)`` or None).  Per cycle (length ``ncycles``): ``cycle_index``,
    ``analysis_time``, ``cycle_nobs``, ``cost_at_analysis``.
    """

    obs_value: np.ndarray
    obs_error: np.ndarray
    hofx_background: np.ndarray
    hofx_analysis: np.ndarray
    background_error_variance: np.ndarray
    date_time: np.ndarray
    cycle: np.ndarray
    coordinates: dict[str, np.ndarray]
    variable: np.ndarray
    obs_group: np.ndarray
    region: np.ndarray
    ensemble_perturbations: np.ndarray | None
    cycle_index: np.ndarray
    analysis_time: np.ndarray
    cycle_nobs: np.ndarray
    cost_at_analysis: np.ndarray
    members: int = 0
    geometry: Any = None
    attributes: dict[str, Any] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    @property
    def nobs(self) -> int:
        return int(self.obs_value.size)

    @property
    def ncycles(self) -> int:
        return int(self.cycle_index.size)

    @property
    def omb(self) -> np.ndarray:
        """O−B, :math:`y - H(x_b)`."""
        return self.obs_value - self.hofx_background

    @property
    def oma(self) -> np.ndarray:
        """O−A, :math:`y - H(x_a)`."""
        return self.obs_value - self.hofx_analysis

    @property
    def amb(self) -> np.ndarray:
        """A−B, :math:`H(x_a) - H(x_b)`."""
        return self.hofx_analysis - self.hofx_background

    @property
    def cycle_position(self) -> np.ndarray:
        """Position ``0..ncycles-1`` of each observation's cycle in the cycle table."""
        return np.repeat(np.arange(self.ncycles), self.cycle_nobs)

    def ensemble_variance(self) -> np.ndarray | None:
        r"""Ensemble variance of :math:`H(x_b)`, :math:`\frac{1}{N-1}\sum_k (\delta_k)^2`, or None."""
        if self.ensemble_perturbations is None:
            return None
        return np.sum(self.ensemble_perturbations ** 2, axis=1) / (self.members - 1)

    def members_hofx(self) -> np.ndarray | None:
        """The members' :math:`H(x_b^k)` (``(nobs, members)``): mean plus perturbations, or None."""
        if self.ensemble_perturbations is None:
            return None
        return self.hofx_background[:, None] + self.ensemble_perturbations

    def with_regions(self, regions: "Regions") -> "InnovationData":
        """The same data with ``region`` recomputed from the coordinates by ``regions``."""
        return replace(self, region=regions.labels(self.coordinates))

    def select_cycles(self, keep: np.ndarray) -> "InnovationData":
        """The data of the cycles where the boolean ``keep`` (length ``ncycles``) is true."""
        keep = np.asarray(keep, dtype=bool)
        obs = np.repeat(keep, self.cycle_nobs)
        per_obs = {name: getattr(self, name)[obs] for name in (
            "obs_value", "obs_error", "hofx_background", "hofx_analysis", "background_error_variance",
            "date_time", "cycle", "variable", "obs_group", "region")}
        return replace(self, **per_obs, coordinates={k: v[obs] for k, v in self.coordinates.items()},
                       ensemble_perturbations=None if self.ensemble_perturbations is None
                       else self.ensemble_perturbations[obs],
                       cycle_index=self.cycle_index[keep], analysis_time=self.analysis_time[keep],
                       cycle_nobs=self.cycle_nobs[keep], cost_at_analysis=self.cost_at_analysis[keep])


def _get(filename: str, group: Any, name: str, dims: tuple[str, ...], kinds: str = "iuf") -> np.ndarray:
    label = f"{group.path.strip('/')}/{name}"
    if name not in group.variables:
        raise InputFileError(filename, f"innovation archive has no variable {label}")
    var = group.variables[name]
    if tuple(var.dimensions) != dims:
        raise InputFileError(filename, f"{label} has dimensions {tuple(var.dimensions)}, expected {dims}")
    datatype = var.dtype  # str for variable-length strings
    is_str = datatype is str or getattr(datatype, "kind", "") in ("S", "U")
    kind = datatype.kind if isinstance(datatype, np.dtype) else ""
    if (kinds == "str") != is_str or (not is_str and (not kind or kind not in kinds)):
        raise InputFileError(filename, f"{label} is of type {datatype}, expected "
                                       f"{'strings' if kinds == 'str' else 'numbers'}")
    var.set_auto_mask(False)
    values = var[...]
    if kinds == "str":
        return np.asarray(values, dtype=str).reshape(var.shape)
    return np.asarray(values)


def _group(filename: str, ds: Any, name: str) -> Any:
    if name not in ds.groups:
        raise InputFileError(filename, f"innovation archive has no group {name}")
    return ds.groups[name]


def _read_one(filename: str) -> InnovationData:
    from pyoops.fields.netcdf import open_dataset

    with open_dataset(filename, "innovation archive") as ds:
        attrs = {k: ds.getncattr(k) for k in ds.ncattrs()}
        if attrs.get("format") != ARCHIVE_FORMAT:
            raise InputFileError(filename, f"is not a pyoops innovation archive (global attribute 'format' is "
                                           f"{attrs.get('format')!r}, expected {ARCHIVE_FORMAT!r})")
        version = attrs.get("format_version")
        if version != ARCHIVE_FORMAT_VERSION:
            raise InputFileError(filename, f"innovation archive format version {version}, this pyoops reads "
                                           f"version {ARCHIVE_FORMAT_VERSION}")
        try:
            coordinates = [str(c) for c in json.loads(attrs["coordinates"])]
            geometry = json.loads(attrs["geometry"])
            members = int(attrs["members"])
        except (KeyError, ValueError, TypeError):
            raise InputFileError(filename, "innovation archive lacks readable global attributes 'coordinates', "
                                           "'geometry' and 'members'") from None
        if LOCATION_DIM not in ds.dimensions:
            raise InputFileError(filename, f"innovation archive has no dimension {LOCATION_DIM}")
        n = len(ds.dimensions[LOCATION_DIM])
        loc = (LOCATION_DIM,)
        meta = _group(filename, ds, "MetaData")
        out: dict[str, Any] = {
            "date_time": _get(filename, meta, "dateTime", loc, "iu").astype(np.int64),
            "cycle": _get(filename, meta, "cycle", loc, "iu").astype(np.int64),
            "coordinates": {c: _get(filename, meta, c, loc).astype(np.float64) for c in coordinates},
        }
        units = getattr(meta.variables["dateTime"], "units", DATETIME_UNITS)
        if str(units).strip() != DATETIME_UNITS:
            raise InputFileError(filename, f"MetaData/dateTime has units {units!r}, expected {DATETIME_UNITS!r}")
        for kind in _NAME_KINDS:
            out[kind.replace(" ", "_")] = _get(filename, meta, _NAME_METADATA[kind], loc, "str")
        for group, (key, _) in DATA_GROUPS.items():
            out[key] = _get(filename, _group(filename, ds, group), "value", loc, "f").astype(np.float64)
        if members:
            if MEMBER_DIM not in ds.dimensions or len(ds.dimensions[MEMBER_DIM]) != members:
                raise InputFileError(filename, f"innovation archive says members = {members} but its dimension "
                                               f"{MEMBER_DIM} does not match")
            out["ensemble_perturbations"] = _get(filename, _group(filename, ds, ENSEMBLE_GROUP), "value",
                                                 (LOCATION_DIM, MEMBER_DIM), "f").astype(np.float64)
        else:
            out["ensemble_perturbations"] = None
        cg = _group(filename, ds, "Cycle")
        if CYCLE_DIM not in cg.dimensions:
            raise InputFileError(filename, f"innovation archive has no dimension Cycle/{CYCLE_DIM}")
        cdim = (CYCLE_DIM,)
        out["cycle_index"] = _get(filename, cg, "cycle", cdim, "iu").astype(np.int64)
        out["analysis_time"] = _get(filename, cg, "analysisTime", cdim, "iu").astype(np.int64)
        out["cycle_nobs"] = _get(filename, cg, "nobs", cdim, "iu").astype(np.int64)
        out["cost_at_analysis"] = _get(filename, cg, "costAtAnalysis", cdim, "f").astype(np.float64)
    # Consistency of the file with itself.
    for key in ("obs_value", "obs_error", "hofx_background"):
        if not np.isfinite(out[key]).all():
            raise InputFileError(filename, f"{_group_of(key)}/value has non-finite values")
    for key in ("hofx_analysis", "background_error_variance"):
        if np.isinf(out[key]).any():
            raise InputFileError(filename, f"{_group_of(key)}/value has infinite values (NaN marks a missing one)")
    if (out["obs_error"] <= 0).any():
        raise InputFileError(filename, "ObsError/value has values that are not positive")
    if (out["background_error_variance"] < 0).any():
        raise InputFileError(filename, "BackgroundErrorVariance/value has negative values")
    if out["ensemble_perturbations"] is not None and not np.isfinite(out["ensemble_perturbations"]).all():
        raise InputFileError(filename, f"{ENSEMBLE_GROUP}/value has non-finite values")
    counts = out["cycle_nobs"]
    if (counts < 0).any() or int(counts.sum()) != n:
        raise InputFileError(filename, f"Cycle/nobs sums to {int(counts.sum())} observations but the archive has "
                                       f"{n} locations")
    if out["cycle_index"].size > 1 and (np.diff(out["cycle_index"]) <= 0).any():
        raise InputFileError(filename, "Cycle/cycle is not strictly increasing")
    if not np.array_equal(out["cycle"], np.repeat(out["cycle_index"], counts)):
        raise InputFileError(filename, "MetaData/cycle does not match the cycle table (Cycle/cycle, Cycle/nobs)")
    attributes = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items()}
    return InnovationData(**out, members=members, geometry=geometry, attributes=attributes, sources=(filename,))


def _group_of(key: str) -> str:
    return next(g for g, (k, _) in DATA_GROUPS.items() if k == key)


def read_archive(paths: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]",
                 geometry: Any = None) -> InnovationData:
    """Read one or several innovation archives into one :class:`InnovationData`.

    Parameters
    ----------
    paths:
        One archive or a list; several are concatenated in cycle order.
    geometry:
        Optional geometry (or its ``describe()``) the archives must have been written on.

    Raises
    ------
    InputFileError
        A file is missing, not an archive, misses a group or variable, has lengths or
        cycles that do not agree, or does not go with the others (another geometry,
        coordinates, method or ensemble size; overlapping cycles).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    names = [os.fspath(p) for p in paths]
    if not names:
        raise ValueError("read_archive needs at least one file")
    parts = [_read_one(name) for name in names]
    expected = _geometry_description(geometry)
    first = parts[0]
    for part in parts:
        name = part.sources[0]
        if expected is not None and part.geometry != expected:
            raise InputFileError(name, f"innovation archive of another geometry ({_short(part.geometry)}), expected "
                                       f"{_short(expected)}")
        if part is first:
            continue
        for what, mine, theirs in (("geometry", part.geometry, first.geometry),
                                   ("coordinates", list(part.coordinates), list(first.coordinates)),
                                   ("members", part.members, first.members),
                                   ("method", part.attributes.get("method"), first.attributes.get("method"))):
            if mine != theirs:
                raise InputFileError(name, f"cannot be pooled with {first.sources[0]}: its {what} "
                                           f"{_short(mine)} differs from {_short(theirs)}")
    if len(parts) == 1:
        return first
    parts.sort(key=lambda p: (p.cycle_index[0] if p.ncycles else np.iinfo(np.int64).max))
    previous = None
    for part in parts:
        if not part.ncycles:
            continue
        if previous is not None and part.cycle_index[0] <= previous.cycle_index[-1]:
            raise InputFileError(part.sources[0], f"cycles {part.cycle_index[0]}..{part.cycle_index[-1]} overlap "
                                                  f"those of {previous.sources[0]} ({previous.cycle_index[0]}.."
                                                  f"{previous.cycle_index[-1]})")
        previous = part

    def cat(key: str) -> np.ndarray:
        return np.concatenate([getattr(p, key) for p in parts])

    keys = ("obs_value", "obs_error", "hofx_background", "hofx_analysis", "background_error_variance", "date_time",
            "cycle", "variable", "obs_group", "region", "cycle_index", "analysis_time", "cycle_nobs",
            "cost_at_analysis")
    return replace(first, **{k: cat(k) for k in keys},
                   coordinates={c: np.concatenate([p.coordinates[c] for p in parts]) for c in first.coordinates},
                   ensemble_perturbations=None if first.ensemble_perturbations is None
                   else np.concatenate([p.ensemble_perturbations for p in parts]),
                   sources=tuple(p.sources[0] for p in parts))


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
