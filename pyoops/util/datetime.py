"""ISO-8601 date-times, durations and assimilation time windows.

Times are timezone-aware UTC instants written ``2010-01-01T00:00:00Z``;
durations are ISO-8601 durations such as ``PT6H``, ``P1DT12H`` or ``-PT30M``.
Durations are exact (whole seconds and microseconds); calendar units larger
than a day (years, months) are rejected because they have no fixed length.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import Any

from pyoops.util.errors import ConfigError

__all__ = ["DateTime", "Duration", "TimeWindow"]

_DURATION_RE = re.compile(
    r"^(?P<sign>[-+])?P(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


class Duration:
    """An exact, signed time span parsed from or written as ISO-8601 (``PT6H``).

    Durations add to :class:`DateTime`, add and subtract among themselves,
    scale by integers and divide into each other (``Duration('P1D') / Duration('PT6H') == 4``).
    """

    __slots__ = ("_td",)

    def __init__(self, value: "str | Duration | _dt.timedelta | int | float"):
        if isinstance(value, Duration):
            self._td = value._td
        elif isinstance(value, _dt.timedelta):
            self._td = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self._td = _dt.timedelta(seconds=value)
        elif isinstance(value, str):
            self._td = self._parse(value.strip())
        else:
            raise ConfigError(f"expected an ISO-8601 duration such as 'PT6H', got {value!r}")

    @staticmethod
    def _parse(text: str) -> _dt.timedelta:
        match = _DURATION_RE.match(text)
        if not match or text in ("P", "-P", "+P") or text.endswith("T"):
            raise ConfigError(
                f"expected an ISO-8601 duration such as 'PT6H' or 'P1DT12H', got {text!r}"
            )
        parts = {k: float(v) for k, v in match.groupdict().items() if v and k != "sign"}
        try:
            td = _dt.timedelta(**parts)
        except OverflowError:
            raise ConfigError(f"duration {text!r} is longer than the largest supported "
                              f"({_dt.timedelta.max.days} days)") from None
        return -td if match.group("sign") == "-" else td

    @classmethod
    def from_seconds(cls, seconds: float) -> "Duration":
        return cls(_dt.timedelta(seconds=seconds))

    @property
    def timedelta(self) -> _dt.timedelta:
        return self._td

    def total_seconds(self) -> float:
        return self._td.total_seconds()

    def __str__(self) -> str:
        td = self._td
        sign = "-" if td < _dt.timedelta(0) else ""
        td = abs(td)
        days = td.days
        secs = td.seconds
        hours, rem = divmod(secs, 3600)
        minutes, seconds = divmod(rem, 60)
        out = f"{sign}P"
        if days:
            out += f"{days}D"
        time = ""
        if hours:
            time += f"{hours}H"
        if minutes:
            time += f"{minutes}M"
        if seconds or td.microseconds:
            # Exact: whole seconds plus up to six decimals, trailing zeros dropped.
            frac = f".{td.microseconds:06d}".rstrip("0") if td.microseconds else ""
            time += f"{seconds}{frac}S"
        if time:
            out += "T" + time
        if out in ("P", "-P"):
            out = "PT0S"
        return out

    def __repr__(self) -> str:
        return f"Duration('{self}')"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (str, _dt.timedelta)):
            try:
                other = Duration(other)
            except ConfigError:
                return False
        return isinstance(other, Duration) and self._td == other._td

    def __hash__(self) -> int:
        return hash(self._td)

    def __lt__(self, other: "Duration") -> bool:
        return self._td < Duration(other)._td

    def __le__(self, other: "Duration") -> bool:
        return self._td <= Duration(other)._td

    def __gt__(self, other: "Duration") -> bool:
        return self._td > Duration(other)._td

    def __ge__(self, other: "Duration") -> bool:
        return self._td >= Duration(other)._td

    def __add__(self, other: Any) -> Any:
        if isinstance(other, Duration):
            return Duration(self._td + other._td)
        if isinstance(other, DateTime):
            return other + self
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, other: "Duration") -> "Duration":
        if isinstance(other, Duration):
            return Duration(self._td - other._td)
        return NotImplemented

    def __neg__(self) -> "Duration":
        return Duration(-self._td)

    def __abs__(self) -> "Duration":
        return Duration(abs(self._td))

    def __mul__(self, factor: int) -> "Duration":
        if isinstance(factor, int):
            return Duration(self._td * factor)
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, other: "Duration | int") -> Any:
        if isinstance(other, Duration):
            return self._td / other._td
        if isinstance(other, int):
            return Duration(self._td / other)
        return NotImplemented

    def __mod__(self, other: "Duration") -> "Duration":
        return Duration(self._td % other._td)

    def __bool__(self) -> bool:
        return bool(self._td)


class DateTime:
    """A timezone-aware UTC instant, read and written as ``YYYY-MM-DDThh:mm:ssZ``."""

    __slots__ = ("_dt",)

    def __init__(self, value: "str | DateTime | _dt.datetime"):
        if isinstance(value, DateTime):
            self._dt = value._dt
        elif isinstance(value, _dt.datetime):
            if value.tzinfo is None or value.utcoffset() is None:
                raise ConfigError(
                    f"date-time {value.isoformat()!r} has no time zone: write it in UTC with a trailing 'Z'"
                )
            self._dt = value.astimezone(_dt.timezone.utc)
        elif isinstance(value, _dt.date):
            self._dt = _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.timezone.utc)
        elif isinstance(value, str):
            text = value.strip()
            try:
                parsed = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ConfigError(
                    f"expected an ISO-8601 date-time such as '2010-01-01T00:00:00Z', got {value!r}"
                ) from None
            if parsed.tzinfo is None:
                raise ConfigError(
                    f"date-time {value!r} has no time zone: write it in UTC with a trailing 'Z'"
                )
            self._dt = parsed.astimezone(_dt.timezone.utc)
        else:
            raise ConfigError(
                f"expected an ISO-8601 date-time such as '2010-01-01T00:00:00Z', got {value!r}"
            )

    @property
    def datetime(self) -> _dt.datetime:
        return self._dt

    _EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)

    def seconds_since_epoch(self) -> float:
        """Seconds since 1970-01-01T00:00:00Z (the IODA ``dateTime`` convention)."""
        return (self._dt - self._EPOCH).total_seconds()

    @classmethod
    def from_seconds_since_epoch(cls, seconds: float) -> "DateTime":
        return cls(cls._EPOCH + _dt.timedelta(seconds=float(seconds)))

    def __str__(self) -> str:
        # The year is zero-padded by hand: strftime's %Y gives "1" for year 1 on glibc, which ISO-8601
        # (and this class) cannot read back.
        d = self._dt
        text = f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
        return f"{text}.{d.microsecond:06d}Z" if d.microsecond else f"{text}Z"

    def compact(self) -> str:
        """A file-name friendly form, ``20100101T000000Z``."""
        return self._dt.strftime("%Y%m%dT%H%M%SZ")

    def __repr__(self) -> str:
        return f"DateTime('{self}')"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (str, _dt.datetime)):
            try:
                other = DateTime(other)
            except ConfigError:
                return False
        return isinstance(other, DateTime) and self._dt == other._dt

    def __hash__(self) -> int:
        return hash(self._dt)

    def __lt__(self, other: "DateTime") -> bool:
        return self._dt < DateTime(other)._dt

    def __le__(self, other: "DateTime") -> bool:
        return self._dt <= DateTime(other)._dt

    def __gt__(self, other: "DateTime") -> bool:
        return self._dt > DateTime(other)._dt

    def __ge__(self, other: "DateTime") -> bool:
        return self._dt >= DateTime(other)._dt

    def __add__(self, other: Duration) -> "DateTime":
        if isinstance(other, Duration):
            return DateTime(_shift(self._dt, other.timedelta, self, "+", other))
        return NotImplemented

    def __sub__(self, other: "Duration | DateTime") -> Any:
        if isinstance(other, Duration):
            return DateTime(_shift(self._dt, -other.timedelta, self, "-", other))
        if isinstance(other, DateTime):
            return Duration(self._dt - other._dt)
        return NotImplemented


def _shift(when: _dt.datetime, by: _dt.timedelta, start: Any, sign: str, step: Any) -> _dt.datetime:
    """``when + by``, or a ConfigError when the result leaves the years 1-9999."""
    try:
        return when + by
    except OverflowError:
        raise ConfigError(f"{start} {sign} {step} falls outside the supported dates (years 1 to 9999)") from None


@dataclass(frozen=True)
class TimeWindow:
    """An assimilation window ``(begin, begin + length]``.

    OOPS convention: an observation at exactly ``begin`` belongs to the previous
    window, one at ``end`` to this one.  Set ``include_begin`` to also accept
    observations at ``begin`` (useful for a first cycle).
    """

    begin: DateTime
    length: Duration
    include_begin: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "begin", DateTime(self.begin))
        object.__setattr__(self, "length", Duration(self.length))
        if self.length < Duration(0):
            raise ConfigError(f"time window length must not be negative, got {self.length}")

    @property
    def end(self) -> DateTime:
        return self.begin + self.length

    @property
    def midpoint(self) -> DateTime:
        return self.begin + self.length / 2

    def contains(self, time: DateTime) -> bool:
        """Whether ``time`` is in the window ``(begin, end]`` (``[begin, end]`` with ``include_begin``)."""
        time = DateTime(time)
        if self.include_begin and time == self.begin:
            return True
        return self.begin < time <= self.end

    def contains_seconds(self, seconds):  # numpy array of seconds since epoch
        """Vectorised :meth:`~TimeWindow.contains` on seconds since the epoch."""
        import numpy as np

        b = self.begin.seconds_since_epoch()
        e = self.end.seconds_since_epoch()
        seconds = np.asarray(seconds, dtype=float)
        inside = (seconds > b) & (seconds <= e)
        if self.include_begin:
            inside |= seconds == b
        return inside

    def __str__(self) -> str:
        return f"[{self.begin}, {self.end}]"
