"""Business hours and durations: parsing (every mistake explained), the clock pausing outside
hours, and wall-clock hours staying right across the DST changes in Berlin and New York."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import hours as hours_module
from policies.hours import (
    BusinessHours,
    add_business_seconds,
    business_seconds_between,
    is_open,
    next_opening,
    parse_duration,
    parse_hours,
)

BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"
H, M = 3600, 60


def at(tz: str, y: int, mo: int, d: int, hh: int = 0, mm: int = 0, weekday: str | None = None) -> float:
    """Unix time of a wall-clock time (its first occurrence); ``weekday`` guards the date."""
    when = datetime(y, mo, d, hh, mm, tzinfo=ZoneInfo(tz))
    assert weekday is None or when.strftime("%a") == weekday, when
    return when.timestamp()


def days_after(ymd: tuple[int, int, int], n: int) -> tuple[int, int, int]:
    d = date(*ymd) + timedelta(days=n)
    return d.year, d.month, d.day


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc).replace(tzinfo=None)


def wall(tz: str, ts: float) -> datetime:
    return datetime.fromtimestamp(ts, ZoneInfo(tz)).replace(tzinfo=None)


def message(call, *args) -> str:
    with pytest.raises(ValueError) as info:
        call(*args)
    return str(info.value)


# --------------------------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15m", 900),
        ("1h", 3600),
        ("2h30m", 9000),
        ("90s", 90),
        ("1d", 86400),
        ("45 min", 2700),
        ("2 hours", 7200),
        ("2h 30m", 9000),
        ("1 hour 30 minutes", 5400),
        (" 15M ", 900),
        ("1w", 604800),
        (900, 900),
        ("900", 900),
    ],
)
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("15 minutes please", "'15 minutes please' is not a duration; write e.g. 15m, 1h, 2h30m or 1d"),
        ("", "'' is not a duration"),
        ("1h 30", "'1h 30' is not a duration"),
        ("15 minuets", "unknown unit 'minuets'; use s, m, h or d"),
        ("1.5h", "has a fraction; write whole numbers, e.g. 1h30m"),
        ("0m", "'0m' is not longer than zero"),
        ("-5m", "'-5m' is not longer than zero"),
        (0, "0 (seconds) is not longer than zero"),
        (-30, "-30 (seconds) is not longer than zero"),
        ("99999d", "is longer than 3650d"),
        (True, "true (true/false) is not a duration"),
        (1.5, "the number 1.5 (only whole seconds) is not a duration"),
        (None, "nothing is not a duration"),
        (["15m"], "a list is not a duration"),
    ],
)
def test_bad_durations_say_how_to_write_one(value: object, fragment: str) -> None:
    text = message(parse_duration, value)
    assert fragment in text
    assert "e.g. 1" in text  # and how to write one


# --------------------------------------------------------------------------------------------
# Parsing business hours

WEEKDAYS_8_18 = (((480, 1080),),) * 5 + ((), ())


@pytest.mark.parametrize(
    ("text", "week"),
    [
        ("Mon-Fri 08:00-18:00", WEEKDAYS_8_18),
        ("mon-FRI 8:00 - 18:00", WEEKDAYS_8_18),
        ("Mon\u2013Fri 08:00\u201318:00", WEEKDAYS_8_18),  # en dashes, as pasted from a document
        ("Mon-Thu 08:00-18:00, Fri 08:00-14:00", (((480, 1080),),) * 4 + (((480, 840),), (), ())),
        (
            "Mon,Wed 09:00-12:00; Sat 10:00-13:00",
            (((540, 720),), (), ((540, 720),), (), (), ((600, 780),), ()),
        ),
        ("Mon-Fri 08:00-12:00 13:00-17:00", (((480, 720), (780, 1020)),) * 5 + ((), ())),
        ("Mon-Fri 08:00-12:00 12:00-17:00", (((480, 1020),),) * 5 + ((), ())),  # touching: joined
        ("Sat 20:00-24:00, Sun 00:00-02:00", ((),) * 5 + (((1200, 1440),), ((0, 120),))),
        ("Sun-Thu 08:00-16:00", (((480, 960),),) * 4 + ((), (), ((480, 960),))),  # wraps past Sunday
        ("Mon 22:00-24:00, Tue 00:00-06:00", (((1320, 1440),), ((0, 360),), (), (), (), (), ())),
    ],
)
def test_hours(text: str, week: tuple) -> None:
    hours = parse_hours(text, BERLIN)
    assert hours == BusinessHours(BERLIN, week)
    assert parse_hours(hours.describe(), BERLIN) == hours


@pytest.mark.parametrize("text", ["always", "24/7", " Always "])
def test_always(text: str) -> None:
    hours = parse_hours(text, BERLIN)
    assert hours.always and hours.describe() == "always"


def test_describe_speaks_the_configuration_language() -> None:
    assert (
        parse_hours("Mon-Thu 08:00-18:00, Fri 08:00-14:00", BERLIN).describe()
        == "Mon-Thu 08:00-18:00, Fri 08:00-14:00"
    )
    assert (
        parse_hours("fri 13:00-17:00 08:00-12:00, mon-thu 08:00-12:00 13:00-17:00", BERLIN).describe()
        == "Mon-Fri 08:00-12:00 13:00-17:00"
    )


BAD_HOURS = [
    ("", 'no hours given; write e.g. "Mon-Fri 08:00-18:00"'),
    (",;", "no days or hours in ',;'"),
    (
        "Mon-Fri 22:00-06:00",
        "'22:00-06:00' runs past midnight; split it into two days, "
        "e.g. Mon-Fri 22:00-24:00, Tue-Sat 00:00-06:00",
    ),
    ("Mon-Fri 08:00-08:00", "'08:00-08:00' is empty; the end must come after the start"),
    (
        "Mon-Fri 08:00-18:00, Fri 08:00-14:00",
        "Fri has overlapping hours 08:00-14:00 and 08:00-18:00; give each day its hours once",
    ),
    ("Mon 08:00-12:00 11:00-13:00", "Mon has overlapping hours 08:00-12:00 and 11:00-13:00"),
    ("Monday 08:00-18:00", "'Monday' is not a day name here; write its three letters, Mon"),
    ("Mo-Fr 08:00-18:00", "'Mo' is not a day; write Mon, Tue, Wed, Thu, Fri, Sat or Sun"),
    ("08:00-18:00", "'08:00-18:00' comes before any day; start with the days, e.g. Mon-Fri 08:00-18:00"),
    ("Mon-Fri", "Mon-Fri has no hours; add them, e.g. Mon-Fri 08:00-18:00"),
    ("Mon-Fri 08:00-18:00, Sat", "Sat has no hours"),
    ("Mon-Fri 8-18", "'8-18' is not a time range; write 24-hour start-end times, e.g. 08:00-18:00"),
    ("Mon-Fri 9am-5pm", "'9am-5pm' is not a time range"),
    ("Mon-Fri 08:00", "'08:00' is not a time range"),
    ("Mon 08:00-25:00", "'25:00' is not a time of day; use 00:00 to 23:59, and 24:00 for the end of the day"),
    ("Mon 08:60-09:00", "'08:60' is not a time of day"),
    ("Mon 08:00-24:30", "'24:30' is not a time of day"),
    ("Mon 24:00-24:00", "'24:00' cannot start a range"),
    ("always, Sat 10:00-12:00", "'always' must stand alone"),
    ("Mon-Fri 08:00-18:00 24/7", "'24/7' must stand alone"),
    ("Mön 08:00-18:00", "'Mön' is not a day; write Mon"),
    ("Mon-Fri 08:00-18:00 (CET)", "'(CET)' is not a day or a time range"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_HOURS)
def test_bad_hours_say_what_to_write(text: str, fragment: str) -> None:
    got = message(parse_hours, text, BERLIN)
    assert fragment in got
    # The policy model blames the `tz` key for messages that mention a zone, `hours` otherwise.
    assert "zone" not in got.lower()


@pytest.mark.parametrize(
    ("tz", "fragment"),
    [
        ("Europe/Berln", "unknown time zone 'Europe/Berln'; did you mean Europe/Berlin? write an IANA name"),
        ("europe/berlin", "did you mean Europe/Berlin?"),
        ("Mars/Olympus", "unknown time zone 'Mars/Olympus'; write an IANA name, e.g. Europe/Berlin"),
        ("../etc/passwd", "unknown time zone '../etc/passwd'"),
        ("", "'' is not a time zone"),
        ("localtime", "'localtime' is not a time zone"),  # the machine's zone, not the team's
        (1, "an int is not a time zone"),
    ],
)
def test_unknown_time_zone_is_named(tz: object, fragment: str) -> None:
    assert fragment in message(parse_hours, "Mon-Fri 08:00-18:00", tz)
    assert fragment in message(parse_hours, "always", tz)


def test_missing_time_zone_database_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hours_module, "available_timezones", lambda: set())
    assert "install the tzdata package" in message(parse_hours, "always", "Nowhere/Zone")


def test_empty_schedule_cannot_be_built() -> None:
    assert "at least one range" in message(BusinessHours, BERLIN, ((),) * 7)
    assert "seven days" in message(BusinessHours, BERLIN, ((480, 1080),))


# --------------------------------------------------------------------------------------------
# The clock pausing outside hours

OFFICE = parse_hours("Mon-Fri 08:00-18:00", BERLIN)
LUNCH = parse_hours("Mon-Fri 08:00-12:00 13:00-17:00", BERLIN)


def test_weekend_is_skipped() -> None:
    due = add_business_seconds(OFFICE, at(BERLIN, 2024, 6, 14, 17, 50, "Fri"), 15 * M)
    assert wall(BERLIN, due) == datetime(2024, 6, 17, 8, 5)
    assert business_seconds_between(OFFICE, at(BERLIN, 2024, 6, 14, 17, 50), due) == 15 * M


def test_lunch_break_pauses_the_clock() -> None:
    monday = (2024, 6, 17)
    assert wall(BERLIN, add_business_seconds(LUNCH, at(BERLIN, *monday, 11, 50, "Mon"), 20 * M)) == datetime(
        *monday, 13, 10
    )
    assert not is_open(LUNCH, at(BERLIN, *monday, 12, 30))
    assert next_opening(LUNCH, at(BERLIN, *monday, 12, 30)) == at(BERLIN, *monday, 13)
    assert business_seconds_between(LUNCH, at(BERLIN, *monday), at(BERLIN, *monday, 23)) == 8 * H


def test_start_before_opening_counts_from_opening() -> None:
    start = at(BERLIN, 2024, 6, 17, 6, 0, "Mon")
    assert wall(BERLIN, add_business_seconds(OFFICE, start, 15 * M)) == datetime(2024, 6, 17, 8, 15)
    assert next_opening(OFFICE, start) == at(BERLIN, 2024, 6, 17, 8)
    assert business_seconds_between(OFFICE, start, at(BERLIN, 2024, 6, 17, 8)) == 0


def test_exactly_at_closing() -> None:
    closing = at(BERLIN, 2024, 6, 14, 18, 0, "Fri")
    assert is_open(OFFICE, closing - 1) and not is_open(OFFICE, closing)
    assert is_open(OFFICE, at(BERLIN, 2024, 6, 17, 8))
    # Due exactly at closing time is due then, not on Monday morning...
    assert add_business_seconds(OFFICE, closing - 15 * M, 15 * M) == closing
    # ...and a message at closing time starts its clock on Monday.
    assert wall(BERLIN, add_business_seconds(OFFICE, closing, 1)) == datetime(2024, 6, 17, 8, 0, 1)
    assert next_opening(OFFICE, closing) == at(BERLIN, 2024, 6, 17, 8)


def test_open_through_midnight() -> None:
    late = parse_hours("Sat 20:00-24:00, Sun 00:00-02:00", BERLIN)
    assert wall(
        BERLIN, add_business_seconds(late, at(BERLIN, 2024, 6, 15, 23, 50, "Sat"), 20 * M)
    ) == datetime(2024, 6, 16, 0, 10)
    assert is_open(late, at(BERLIN, 2024, 6, 16, 0, 0))


def test_always_is_plain_arithmetic() -> None:
    hours = parse_hours("24/7", BERLIN)
    assert is_open(hours, 1.5e9) and next_opening(hours, 1.5e9) == 1.5e9
    assert add_business_seconds(hours, 1.5e9, 900) == 1.5e9 + 900
    assert business_seconds_between(hours, 1.5e9, 1.5e9 + 900) == 900
    assert business_seconds_between(hours, 1.5e9, 1.5e9 - 900) == 0


def test_arguments_are_checked() -> None:
    assert "negative" in message(add_business_seconds, OFFICE, 1.5e9, -1)
    assert business_seconds_between(OFFICE, 1.5e9, 1.5e9) == 0


# --------------------------------------------------------------------------------------------
# Daylight saving time: wall-clock hours, not fixed offsets


@pytest.mark.parametrize(
    ("tz", "friday", "monday_utc"),
    [
        (BERLIN, (2024, 3, 29), datetime(2024, 4, 1, 6, 5)),  # spring forward Sun 31 Mar: CET -> CEST
        (BERLIN, (2024, 10, 25), datetime(2024, 10, 28, 7, 5)),  # fall back Sun 27 Oct: CEST -> CET
        (NEW_YORK, (2024, 3, 8), datetime(2024, 3, 11, 12, 5)),  # spring forward Sun 10 Mar: EST -> EDT
        (NEW_YORK, (2024, 11, 1), datetime(2024, 11, 4, 13, 5)),  # fall back Sun 3 Nov: EDT -> EST
    ],
)
def test_weekend_with_a_clock_change(tz: str, friday: tuple[int, int, int], monday_utc: datetime) -> None:
    office = parse_hours("Mon-Fri 08:00-18:00", tz)
    start = at(tz, *friday, 17, 50, "Fri")
    due = add_business_seconds(office, start, 15 * M)
    assert utc(due) == monday_utc and wall(tz, due).time() == time(8, 5)
    assert business_seconds_between(office, start, due) == 15 * M
    # The whole week after the change: five ten-hour days, each from 08:00 local.
    monday = days_after(friday, 3)
    assert business_seconds_between(office, at(tz, *monday), at(tz, *days_after(monday, 5))) == 50 * H
    assert utc(next_opening(office, at(tz, *monday))) == monday_utc - timedelta(minutes=5)


@pytest.mark.parametrize(
    ("tz", "sunday", "hours_open"),
    [
        (BERLIN, (2024, 3, 31), 23),
        (BERLIN, (2024, 10, 27), 25),
        (NEW_YORK, (2024, 3, 10), 23),
        (NEW_YORK, (2024, 11, 3), 25),
    ],
)
def test_the_day_of_the_change_is_shorter_or_longer(
    tz: str, sunday: tuple[int, int, int], hours_open: int
) -> None:
    whole = parse_hours("Sun 00:00-24:00", tz)
    night = parse_hours("Sun 00:00-06:00", tz)  # contains the jump at 02:00 (03:00 back to 02:00)
    day = parse_hours("Sun 08:00-18:00", tz)  # does not: ten hours, from 08:00 in the new offset
    start, end = at(tz, *days_after(sunday, -1), weekday="Sat"), at(tz, *days_after(sunday, 1))
    assert business_seconds_between(whole, start, end) == hours_open * H
    assert business_seconds_between(night, start, end) == (hours_open - 18) * H
    assert business_seconds_between(day, start, end) == 10 * H
    assert wall(tz, add_business_seconds(day, start, 9 * H)).time() == time(17, 0)
    assert wall(tz, add_business_seconds(whole, start, 12 * H)).time() == time(12 + 24 - hours_open, 0)


def test_hours_the_clocks_skip_or_repeat() -> None:
    skipped = parse_hours("Sun 02:00-03:00", BERLIN)  # does not exist on 31 March 2024
    saturday, monday = at(BERLIN, 2024, 3, 30, weekday="Sat"), at(BERLIN, 2024, 4, 1)
    assert business_seconds_between(skipped, saturday, monday) == 0
    assert wall(BERLIN, next_opening(skipped, saturday)) == datetime(2024, 4, 7, 2, 0)
    # A range starting in the skipped hour opens when the clocks jump (03:00 CEST).
    half = parse_hours("Sun 02:30-04:00", BERLIN)
    assert utc(next_opening(half, saturday)) == datetime(2024, 3, 31, 1, 0)
    assert business_seconds_between(half, saturday, monday) == 1 * H
    # When 02:30 happens twice, a range starts at its first occurrence (CEST).
    assert utc(next_opening(half, at(BERLIN, 2024, 10, 26))) == datetime(2024, 10, 27, 0, 30)
    assert business_seconds_between(half, at(BERLIN, 2024, 10, 26), at(BERLIN, 2024, 10, 28)) == 2.5 * H


# --------------------------------------------------------------------------------------------
# Properties

SCHEDULES = [
    "Mon-Fri 08:00-18:00",
    "Mon-Fri 08:00-12:00 13:00-17:00",
    "Mon-Thu 08:00-18:00, Fri 08:00-14:00",
    "Mon,Wed 09:00-12:00; Sat 10:00-13:00",
    "Sun 00:00-06:00",
    "Sun 02:00-03:00, Wed 10:00-10:01",
    "Sat 20:00-24:00, Sun 00:00-02:00",
    "Mon-Sun 00:00-24:00",
    "always",
]
# Besides the two of the brief: a 30-minute DST (Lord Howe), DST at midnight (São Paulo until
# 2019) and a skipped day (Apia, 30 December 2011).
ZONES = [BERLIN, NEW_YORK, "UTC", "Australia/Lord_Howe", "America/Sao_Paulo", "Pacific/Apia", "Asia/Kolkata"]
INSTANTS = st.floats(min_value=at("UTC", 2010, 1, 1), max_value=at("UTC", 2027, 1, 1), allow_nan=False)
HOURS = st.builds(parse_hours, st.sampled_from(SCHEDULES), st.sampled_from(ZONES))


@settings(max_examples=150, deadline=None)
@given(HOURS, INSTANTS, st.integers(min_value=0, max_value=3 * 86400))
def test_adding_and_measuring_agree(hours: BusinessHours, start: float, seconds: int) -> None:
    due = add_business_seconds(hours, start, seconds)
    assert due >= start
    assert business_seconds_between(hours, start, due) == pytest.approx(seconds, abs=1e-3)
    assert add_business_seconds(hours, start, 0) == next_opening(hours, start)
    assert is_open(hours, next_opening(hours, start))


@settings(max_examples=150, deadline=None)
@given(HOURS, INSTANTS)
def test_is_open_reads_the_wall_clock(hours: BusinessHours, ts: float) -> None:
    """On a day without a clock change, open means: today's local time is in today's ranges."""
    zone = hours.zone
    local = datetime.fromtimestamp(ts, zone)
    midnight = datetime.combine(local.date(), time(), zone)
    next_midnight = datetime.combine(local.date() + timedelta(days=1), time(), zone)
    if not (midnight.utcoffset() == local.utcoffset() == next_midnight.utcoffset()):
        return
    minute = local.hour * 60 + local.minute
    expected = hours.always or any(s <= minute < e for s, e in hours.week[local.weekday()])
    assert is_open(hours, ts) == expected


def _day_ranges(points: list[int]) -> tuple[tuple[int, int], ...]:
    ordered = sorted(points)
    return tuple(zip(ordered[::2], ordered[1::2]))


WEEKS = st.tuples(*[st.lists(st.integers(0, 1440), max_size=6, unique=True).map(_day_ranges)] * 7)


@settings(max_examples=100, deadline=None)
@given(WEEKS.filter(any))
def test_describe_reads_back(week: tuple[tuple[tuple[int, int], ...], ...]) -> None:
    hours = BusinessHours("UTC", week)
    assert parse_hours(hours.describe(), "UTC") == hours
