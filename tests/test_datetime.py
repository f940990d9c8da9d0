"""ISO-8601 DateTime, Duration and the OOPS TimeWindow convention."""

import datetime as dt

import numpy as np
import pytest

from pyoops.util import ConfigError, DateTime, Duration, TimeWindow


# Duration -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, seconds",
    [
        ("PT6H", 6 * 3600),
        ("P1DT12H", 36 * 3600),
        ("-PT30M", -1800),
        ("PT0S", 0),
        ("P1D", 86400),
        ("PT1H30M15S", 5415),
        ("P2W", 14 * 86400),
        ("PT0.5S", 0.5),
        ("-P1DT1H", -25 * 3600),
    ],
)
def test_duration_parse_and_format_round_trip(text, seconds):
    d = Duration(text)
    assert d.total_seconds() == seconds
    assert Duration(str(d)) == d
    assert Duration(str(d)).total_seconds() == seconds


@pytest.mark.parametrize("text", ["PT6H", "P1DT12H", "-PT30M", "PT0S", "P1D", "PT1H30M15S", "PT0.5S"])
def test_duration_canonical_strings_are_kept(text):
    assert str(Duration(text)) == text


def test_duration_zero_is_written_pt0s():
    assert str(Duration(0)) == "PT0S"
    assert str(Duration("-PT0S")) == "PT0S"
    assert str(Duration("P0D")) == "PT0S"


def test_duration_format_is_exact_for_microseconds():
    d = Duration(dt.timedelta(hours=3, minutes=25, seconds=45, microseconds=678901))
    assert Duration(str(d)) == d
    d2 = Duration(dt.timedelta(microseconds=1))
    assert Duration(str(d2)) == d2


@pytest.mark.parametrize("bad", ["6H", "PT", "P", "-P", "P1DT", "PT6X", "P1Y", "P1M", "PT6H ", "PT-6H", "soon", ""])
def test_duration_bad_strings_raise_configerror_naming_the_text(bad):
    if bad == "PT6H ":  # surrounding white space is tolerated
        assert Duration(bad) == Duration("PT6H")
        return
    with pytest.raises(ConfigError) as err:
        Duration(bad)
    assert repr(bad.strip()) in str(err.value)


@pytest.mark.parametrize("bad", [None, [1], True])
def test_duration_bad_types_raise_configerror(bad):
    with pytest.raises(ConfigError):
        Duration(bad)


def test_duration_arithmetic():
    six = Duration("PT6H")
    assert six + six == Duration("PT12H")
    assert six - Duration("PT12H") == Duration("-PT6H")
    assert -six == Duration("-PT6H")
    assert abs(Duration("-PT6H")) == six
    assert 4 * six == Duration("P1D")
    assert six * 4 == Duration("P1D")
    assert Duration("P1D") / six == 4
    assert Duration("P1D") / Duration("PT7H") == pytest.approx(24 / 7)
    assert Duration("P1D") / 4 == six
    assert Duration("PT7H") % six == Duration("PT1H")
    assert six < Duration("P1D") and six <= six and Duration("P1D") > six and six >= six
    assert not Duration("PT0S")
    assert bool(six)
    assert six == "PT6H" and six == dt.timedelta(hours=6)
    assert six != "PT5H"
    assert hash(six) == hash(Duration("PT360M"))
    assert Duration.from_seconds(21600) == six


def test_duration_equality_with_garbage_is_false_not_an_error():
    assert not (Duration("PT6H") == "six hours")
    assert Duration("PT6H") != 6


def test_duration_multiplication_by_float_is_refused():
    with pytest.raises(TypeError):
        Duration("PT6H") * 0.5


# DateTime -----------------------------------------------------------------------------

def test_datetime_parse_with_z_and_format():
    t = DateTime("2010-01-02T00:00:00Z")
    assert str(t) == "2010-01-02T00:00:00Z"
    assert t.datetime.tzinfo is not None
    assert t.datetime.utcoffset() == dt.timedelta(0)
    assert repr(t) == "DateTime('2010-01-02T00:00:00Z')"
    assert t.compact() == "20100102T000000Z"


def test_datetime_offsets_are_converted_to_utc():
    assert DateTime("2010-01-01T01:00:00+01:00") == DateTime("2010-01-01T00:00:00Z")
    assert str(DateTime("2010-01-01T00:00:00-06:00")) == "2010-01-01T06:00:00Z"


def test_datetime_fractional_seconds_round_trip():
    t = DateTime("2010-01-01T00:00:00.250000Z")
    assert DateTime(str(t)) == t
    assert t - DateTime("2010-01-01T00:00:00Z") == Duration("PT0.25S")


def test_datetime_naive_string_rejected():
    with pytest.raises(ConfigError, match="no time zone"):
        DateTime("2010-01-01T00:00:00")


def test_datetime_naive_python_datetime_rejected():
    with pytest.raises(ConfigError, match="no time zone"):
        DateTime(dt.datetime(2010, 1, 1))


def test_datetime_aware_python_datetime_accepted():
    tz = dt.timezone(dt.timedelta(hours=3))
    assert DateTime(dt.datetime(2010, 1, 1, 3, tzinfo=tz)) == "2010-01-01T00:00:00Z"


@pytest.mark.parametrize("bad", ["yesterday", "2010-13-01T00:00:00Z", "", "2010-01-01T25:00:00Z"])
def test_datetime_bad_strings_raise_configerror_with_text(bad):
    with pytest.raises(ConfigError) as err:
        DateTime(bad)
    assert repr(bad) in str(err.value)


def test_datetime_bad_type_raises_configerror():
    with pytest.raises(ConfigError):
        DateTime(12345)


def test_datetime_arithmetic_and_order():
    t0 = DateTime("2010-01-01T21:00:00Z")
    t1 = t0 + Duration("PT6H")
    assert t1 == DateTime("2010-01-02T03:00:00Z")
    assert Duration("PT6H") + t0 == t1
    assert t1 - t0 == Duration("PT6H")
    assert t0 - t1 == Duration("-PT6H")
    assert t1 - Duration("PT6H") == t0
    assert t0 < t1 and t0 <= t0 and t1 > t0 and t1 >= t1
    assert t0 != t1
    assert hash(t0) == hash(DateTime("2010-01-01T22:00:00+01:00"))
    assert not (t0 == "not a date")


def test_datetime_epoch_seconds_round_trip():
    t = DateTime("2010-01-01T00:00:00Z")
    assert t.seconds_since_epoch() == 1262304000.0
    assert DateTime.from_seconds_since_epoch(1262304000) == t
    assert DateTime("1970-01-01T00:00:00Z").seconds_since_epoch() == 0.0


# TimeWindow ---------------------------------------------------------------------------

@pytest.fixture
def window():
    return TimeWindow(begin="2010-01-01T21:00:00Z", length="PT6H")


def test_window_end_and_midpoint(window):
    assert window.end == DateTime("2010-01-02T03:00:00Z")
    assert window.midpoint == DateTime("2010-01-02T00:00:00Z")
    assert isinstance(window.begin, DateTime) and isinstance(window.length, Duration)


def test_window_oops_convention_begin_excluded_end_included(window):
    assert not window.contains(window.begin)
    assert window.contains(window.end)
    assert window.contains(window.begin + Duration("PT1S"))
    assert window.contains("2010-01-02T00:00:00Z")
    assert not window.contains(window.end + Duration("PT1S"))
    assert not window.contains(window.begin - Duration("PT1H"))


def test_window_include_begin():
    w = TimeWindow(begin="2010-01-01T21:00:00Z", length="PT6H", include_begin=True)
    assert w.contains(w.begin)
    assert w.contains(w.end)
    assert not w.contains(w.begin - Duration("PT1S"))


def test_window_negative_length_rejected():
    with pytest.raises(ConfigError, match="negative"):
        TimeWindow(begin="2010-01-01T00:00:00Z", length="-PT6H")


@pytest.mark.parametrize("include_begin", [False, True])
def test_contains_seconds_agrees_with_contains(include_begin):
    w = TimeWindow(begin="2010-01-01T21:00:00Z", length="PT6H", include_begin=include_begin)
    b = w.begin.seconds_since_epoch()
    offsets = np.array([-3600, -1, 0, 1, 1800, 10800, 21599, 21600, 21601, 86400], dtype=float)
    seconds = b + offsets
    got = w.contains_seconds(seconds)
    expected = [w.contains(DateTime.from_seconds_since_epoch(s)) for s in seconds]
    assert got.dtype == bool
    assert got.tolist() == expected
    assert got[2] == include_begin  # exactly at begin
    assert got[7]  # exactly at end
