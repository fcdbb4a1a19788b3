"""Business hours and durations for the service-level clock.

"Remind the adviser after 15 minutes without an answer" means 15 minutes of *open* time: the
clock pauses while the team is closed. Opening hours are wall-clock times in the team's time
zone, so every computation goes through aware datetimes, one local day at a time, never through
fixed offsets: after the clocks change an 08:00 opening is a different UTC time, and a range
that contains the jump (say Sun 00:00-06:00) is an hour shorter or longer that day.

Wall-clock times the clocks skip or repeat are mapped by one monotone rule (:func:`_instant`):
a time that occurs twice means its first occurrence, a time that never occurs means the moment
the clocks jump over it. So every local range becomes one real interval, the intervals of a week
never overlap, and :func:`is_open`, :func:`add_business_seconds` and
:func:`business_seconds_between` agree with each other to the second.

Pure apart from reading the IANA time zone database (``zoneinfo`` caches each zone): no clock,
every function takes the time it works on.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from itertools import groupby
from zoneinfo import ZoneInfo, available_timezones

__all__ = [
    "DAY_NAMES",
    "MAX_DURATION_S",
    "BusinessHours",
    "add_business_seconds",
    "business_seconds_between",
    "is_open",
    "next_opening",
    "parse_duration",
    "parse_hours",
]

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
#: Longest accepted duration (10 years): a longer one is a typo, and business-time arithmetic
#: walks day by day, so an absurd value would only cost time.
MAX_DURATION_S = 3650 * 86400
#: Days scanned without any open time before giving up (parse_hours rejects empty schedules,
#: so this bound only protects the loops).
_MAX_CLOSED_DAYS = 400
_DAY = 1440  # minutes

#: A wall-clock range of one day: [start, end) in minutes from local midnight, end <= 1440.
Range = tuple[int, int]

_DURATION_HOW = "write e.g. 15m, 1h, 2h30m or 1d"
_HOURS_HOW = 'write e.g. "Mon-Fri 08:00-18:00", "Mon-Thu 08:00-18:00, Fri 08:00-14:00" or "always"'
_DAY_HOW = "write Mon, Tue, Wed, Thu, Fri, Sat or Sun, e.g. Mon-Fri 08:00-18:00"
_ALWAYS = ("always", "24/7")


# --------------------------------------------------------------------------------------------
# Durations

_UNITS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 7 * 86400),
}
_DURATION = re.compile(r"(?:[0-9]+\s*[a-z]+\s*)+")
_DURATION_PART = re.compile(r"([0-9]+)\s*([a-z]+)")


def parse_duration(text: str | int) -> int:
    """Seconds in ``15m``, ``1h``, ``2h30m``, ``90s``, ``1d``, ``45 min``, ``2 hours``, or a
    whole number of seconds (an int or digits). Raises ValueError saying how to write it."""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise ValueError(f"{_kind(text)} is not a duration; {_DURATION_HOW}")
    seconds = text if isinstance(text, int) else _duration_seconds(text)
    shown = f"'{text}'" if isinstance(text, str) else f"{text} (seconds)"
    if seconds <= 0:
        raise ValueError(f"{shown} is not longer than zero; a duration must be positive, {_DURATION_HOW}")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{shown} is longer than {MAX_DURATION_S // 86400}d; {_DURATION_HOW}")
    return seconds


def _duration_seconds(text: str) -> int:
    """The signed number of seconds ``text`` spells; its sign is checked by the caller."""
    spec = text.strip().lower()
    sign = -1 if spec.startswith("-") else 1
    body = spec[1:].lstrip() if spec[:1] in "+-" else spec
    if re.fullmatch(r"[0-9]+", body):
        return sign * int(body)
    if re.fullmatch(r"[0-9]*[.,][0-9]+\s*[a-z]*", body):
        raise ValueError(f"'{text}' has a fraction; write whole numbers, e.g. 1h30m rather than 1.5h")
    if not _DURATION.fullmatch(body):
        raise ValueError(f"'{text}' is not a duration; {_DURATION_HOW}")
    total = 0
    for number, unit in _DURATION_PART.findall(body):
        if unit not in _UNITS:
            raise ValueError(f"'{text}' has the unknown unit '{unit}'; use s, m, h or d: {_DURATION_HOW}")
        total += int(number) * _UNITS[unit]
    return sign * total


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (true/false)"
    if isinstance(value, float):
        return f"the number {value} (only whole seconds)"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


# --------------------------------------------------------------------------------------------
# Business hours: the data


@dataclass(frozen=True)
class BusinessHours:
    """When a team is open, in the zone ``tz_name`` (an IANA name): ``week`` holds, Monday
    first, each day's wall-clock ranges (minutes from local midnight, sorted, disjoint, not
    touching); ``always`` means open all the time (``week`` is then unused).

    Build it with :func:`parse_hours`, which checks the text and the zone."""

    tz_name: str
    week: tuple[tuple[Range, ...], ...] = ()
    always: bool = False

    def __post_init__(self) -> None:
        # The loops below rely on some open time every week.
        if not self.always and (len(self.week) != 7 or not any(self.week)):
            raise ValueError(
                "business hours need seven days (Monday first) with at least one range, or always"
            )

    @property
    def zone(self) -> ZoneInfo:
        """The time zone (zoneinfo caches it, so this is cheap)."""
        return ZoneInfo(self.tz_name)

    def describe(self) -> str:
        """The hours as :func:`parse_hours` reads them back, e.g. ``Mon-Fri 08:00-18:00``: for
        notices and status replies, in the words of the configuration."""
        if self.always:
            return "always"
        parts = []
        for ranges, run in groupby(enumerate(self.week), key=lambda day: day[1]):
            if ranges:
                parts.append(f"{_day_label([d for d, _ in run])} {' '.join(_range_text(r) for r in ranges)}")
        return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# Business hours: parsing

_TOKEN = re.compile(
    r"(?P<times>(?P<t1>[0-9]{1,2}:[0-9]{2})\s*-\s*(?P<t2>[0-9]{1,2}:[0-9]{2}))"
    r"|(?P<days>(?P<d1>[^\W\d_]+)(?:\s*-\s*(?P<d2>[^\W\d_]+))?)"  # any letters, to name the bad word
    r"|(?P<sep>[\s,;]+)"
    r"|(?P<other>[^\s,;]+)",
)
_DASHES = str.maketrans(
    {"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-"}
)


def parse_hours(text: str, tz_name: str) -> BusinessHours:
    """Business hours from ``text`` (e.g. ``Mon-Fri 08:00-12:00 13:00-17:00, Sat 10:00-13:00``,
    or ``always`` / ``24/7``) in the zone ``tz_name``. Days not named are closed.

    Raises ValueError with a message fit to follow a config key path. Messages about the zone
    (and only those) contain the word "zone", so a caller can tell which key to blame."""
    if not isinstance(text, str):
        raise ValueError(f"{_kind(text)} is not business hours; {_HOURS_HOW}")
    spec = text.strip().translate(_DASHES)
    if not spec:
        raise ValueError(f"no hours given; {_HOURS_HOW}")
    week = None if spec.lower() in _ALWAYS else _week(spec)
    _check_zone(tz_name)
    return BusinessHours(tz_name, always=True) if week is None else BusinessHours(tz_name, week)


def _week(spec: str) -> tuple[tuple[Range, ...], ...]:
    """Each day's merged ranges: a day may appear in several groups if its ranges don't
    overlap (so an overnight shift can be split at midnight)."""
    per_day: list[list[Range]] = [[] for _ in DAY_NAMES]
    for days, ranges in _groups(spec):
        for day in days:
            per_day[day].extend(ranges)
    return tuple(_merged(DAY_NAMES[day], ranges) for day, ranges in enumerate(per_day))


def _groups(spec: str) -> list[tuple[list[int], list[Range]]]:
    """``spec`` as (days, ranges) groups: day names up to the first time range start a group,
    and the time ranges after them belong to it until the next day name."""
    groups: list[tuple[list[int], list[Range]]] = []
    for m in _TOKEN.finditer(spec):
        if m["other"]:
            raise ValueError(_not_understood(m["other"]))
        if m["days"]:
            if not groups or groups[-1][1]:
                groups.append(([], []))
            groups[-1][0].extend(_days(m["d1"], m["d2"]))
        elif m["times"]:
            if not groups:
                raise ValueError(
                    f"'{m['times']}' comes before any day; start with the days, e.g. Mon-Fri {m['times']}"
                )
            groups[-1][1].append(_range(m["t1"], m["t2"], groups[-1][0]))
    if not groups:
        raise ValueError(f"no days or hours in '{spec}'; {_HOURS_HOW}")
    if not groups[-1][1]:
        label = _day_label(groups[-1][0])
        raise ValueError(
            f"{label} has no hours; add them, e.g. {label} 08:00-18:00 (days not named are closed)"
        )
    return groups


def _not_understood(token: str) -> str:
    if token.lower() in _ALWAYS:
        return f"'{token}' must stand alone: write just {token}, or name days and hours, e.g. Mon-Fri 08:00-18:00"
    if token[:1].isdigit():
        return f"'{token}' is not a time range; write 24-hour start-end times, e.g. 08:00-18:00"
    return f"'{token}' is not a day or a time range; {_HOURS_HOW}"


def _days(first: str, last: str | None) -> list[int]:
    """A day or a range of days; a range may wrap past Sunday (Sun-Thu)."""
    start = _day(first)
    if last is None:
        return [start]
    return [(start + i) % 7 for i in range((_day(last) - start) % 7 + 1)]


def _day(word: str) -> int:
    lowered = word.lower()
    if lowered in _ALWAYS:
        raise ValueError(_not_understood(word))
    names = [name.lower() for name in DAY_NAMES]
    if lowered in names:
        return names.index(lowered)
    if lowered[:3] in names:
        raise ValueError(
            f"'{word}' is not a day name here; write its three letters, {DAY_NAMES[names.index(lowered[:3])]}"
        )
    raise ValueError(f"'{word}' is not a day; {_DAY_HOW}")


def _range(start_text: str, end_text: str, days: Sequence[int]) -> Range:
    start, end = _minute(start_text, end=False), _minute(end_text, end=True)
    shown = f"{start_text}-{end_text}"
    if start == end:
        raise ValueError(f"'{shown}' is empty; the end must come after the start, e.g. 08:00-18:00")
    if start > end:
        today, tomorrow = _day_label(days), _day_label([(d + 1) % 7 for d in days])
        raise ValueError(
            f"'{shown}' runs past midnight; split it into two days, "
            f"e.g. {today} {start_text}-24:00, {tomorrow} 00:00-{end_text}"
        )
    return start, end


def _minute(text: str, *, end: bool) -> int:
    hour, minute = (int(part) for part in text.split(":"))
    if minute > 59 or hour > 24 or (hour == 24 and minute):
        raise ValueError(
            f"'{text}' is not a time of day; use 00:00 to 23:59, and 24:00 for the end of the day"
        )
    if hour == 24 and not end:
        raise ValueError(f"'{text}' cannot start a range; 24:00 only ends one (start the next day at 00:00)")
    return hour * 60 + minute


def _merged(day: str, ranges: Iterable[Range]) -> tuple[Range, ...]:
    """Sorted ranges with touching ones joined; overlapping ones are a mistake (most likely a
    day given twice, the second meant to replace the first)."""
    out: list[Range] = []
    for start, end in sorted(ranges):
        if out and start < out[-1][1]:
            raise ValueError(
                f"{day} has overlapping hours {_range_text(out[-1])} and {_range_text((start, end))}; "
                "give each day its hours once, e.g. Mon-Thu 08:00-18:00, Fri 08:00-14:00"
            )
        if out and start == out[-1][1]:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return tuple(out)


def _check_zone(tz_name: str) -> None:
    if not isinstance(tz_name, str) or tz_name.strip() in ("", "localtime"):
        raise ValueError(
            f"{_kind(tz_name) if not isinstance(tz_name, str) else repr(tz_name)} is not a time zone; "
            "name one from the IANA database, e.g. Europe/Berlin, America/New_York or UTC"
        )
    try:
        ZoneInfo(tz_name)
    except (LookupError, ValueError, OSError):
        raise ValueError(_unknown_zone(tz_name)) from None


def _unknown_zone(tz_name: str) -> str:
    """Only on the error path: list the installed zones to suggest the nearest name."""
    known = available_timezones()
    if not known:
        return (
            f"unknown time zone '{tz_name}': this system has no time zone database; "
            "install the tzdata package (pip install tzdata)"
        )
    by_lower = {name.lower(): name for name in known}
    close = difflib.get_close_matches(tz_name.lower(), by_lower, n=1, cutoff=0.75)
    hint = f"did you mean {by_lower[close[0]]}? " if close else ""
    return f"unknown time zone '{tz_name}'; {hint}write an IANA name, e.g. Europe/Berlin, America/New_York or UTC"


def _day_label(days: Sequence[int]) -> str:
    """``Mon-Fri``, ``Mon,Wed`` or ``Sat-Mon`` for days in the given order."""
    runs: list[list[int]] = []
    for day in days:
        if runs and day == (runs[-1][-1] + 1) % 7:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ",".join(DAY_NAMES[r[0]] if len(r) == 1 else f"{DAY_NAMES[r[0]]}-{DAY_NAMES[r[-1]]}" for r in runs)


def _range_text(r: Range) -> str:
    return "-".join(f"{m // 60:02d}:{m % 60:02d}" for m in r)


# --------------------------------------------------------------------------------------------
# Business hours: arithmetic


def is_open(hours: BusinessHours, ts: float) -> bool:
    """Whether the team is open at Unix time ``ts``."""
    return hours.always or next_opening(hours, ts) == ts


def next_opening(hours: BusinessHours, ts: float) -> float:
    """The first Unix time at or after ``ts`` when the team is open (``ts`` itself if open)."""
    if hours.always:
        return ts
    return next(max(start, ts) for start, end in _spans(hours, ts) if end > ts)


def add_business_seconds(hours: BusinessHours, start_ts: float, seconds: float) -> float:
    """The Unix time when ``seconds`` of open time have passed since ``start_ts``; outside
    hours the count begins at the next opening. A due time that falls exactly on a closing is
    that closing (not the next opening)."""
    if seconds < 0:
        raise ValueError(f"{seconds} seconds is negative; business time only runs forward")
    if hours.always:
        return start_ts + seconds
    left = seconds
    for start, end in _spans(hours, start_ts):
        begin = max(start, start_ts)
        if end <= begin:
            continue
        if left <= end - begin:
            return begin + left
        left -= end - begin
    raise AssertionError("unreachable: _spans never ends")


def business_seconds_between(hours: BusinessHours, a_ts: float, b_ts: float) -> float:
    """Open seconds in [a_ts, b_ts) (0 if b_ts <= a_ts)."""
    if b_ts <= a_ts:
        return 0.0
    if hours.always:
        return b_ts - a_ts
    total = 0.0
    for start, end in _spans(hours, a_ts):
        if start >= b_ts:
            break
        total += max(0.0, min(end, b_ts) - max(start, a_ts))
    return total


def _spans(hours: BusinessHours, ts: float) -> Iterator[tuple[float, float]]:
    """The open intervals (start, end) in Unix seconds, in order, from the local day of ``ts``
    on; earlier days need no look: every one of their intervals ends by that day's midnight,
    which is no later than ``ts``. Never ends, except by giving up after a long closed run."""
    zone = hours.zone
    day = datetime.fromtimestamp(ts, zone).date()
    closed = 0
    while closed < _MAX_CLOSED_DAYS:
        spans = [(_instant(zone, day, s), _instant(zone, day, e)) for s, e in hours.week[day.weekday()]]
        spans = [(a, b) for a, b in spans if b > a]  # a range the clocks skip entirely is empty
        yield from spans
        closed = 0 if spans else closed + 1
        day += timedelta(days=1)
    raise ValueError(
        f"these business hours ({hours.describe()}) have no open time in {_MAX_CLOSED_DAYS} days"
    )


def _instant(zone: ZoneInfo, day: date, minute: int) -> float:
    """The Unix time at which the wall clock in ``zone`` reads ``minute`` on ``day``: the first
    occurrence of a time the clocks repeat, the moment of the jump for a time they skip.
    Monotone in (day, minute), which keeps every range one interval and the days in order."""
    if minute >= _DAY:
        day, minute = day + timedelta(days=1), minute - _DAY
    first = datetime.combine(day, time(minute // 60, minute % 60), zone)  # fold=0
    second = first.replace(fold=1)
    before, after = first.utcoffset(), second.utcoffset()
    if before is None or after is None or before >= after:  # an ordinary or a repeated time
        return first.timestamp()
    return _jump(zone, second.timestamp(), first.timestamp())


def _jump(zone: ZoneInfo, low: float, high: float) -> float:
    """The moment the clocks jump forward, between ``low`` (still the old offset) and ``high``
    (already the new one): a bisection, run only for a skipped time."""
    new = datetime.fromtimestamp(high, zone).utcoffset()
    lo, hi = int(low), int(high)
    while lo < hi:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == new:
            hi = mid
        else:
            lo = mid + 1
    return float(hi)
