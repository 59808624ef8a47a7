"""Cron lines (``schedule.deliver``): checked when the configuration loads.

The scheduler (APScheduler's ``CronTrigger.from_crontab``) reads the line
when ``paperboy run`` starts. Every command loads the configuration, and
most never schedule anything, so the check is made here without importing
the scheduler: five fields (minute, hour, day of month, month, day of week
with 0 = Monday), each a comma list of ``*``, ``*/step``, ``n``, ``n-m``,
``n-m/step``, month or weekday names (``jan``, ``mon-fri``) and ``last``
for the day, with APScheduler's ranges. A test holds this check against
APScheduler's own answer for generated lines, so the two cannot drift apart.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time

FIELDS = (  # name, lowest, highest
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 6),
)
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_SEPARATOR = re.compile(" *, *")
_ALL = re.compile(r"\*(?:/(?P<step>\d+))?$")
_RANGE = re.compile(r"(?P<first>\d+)(?:-(?P<last>\d+))?(?:/(?P<step>\d+))?$")
_NAMES = re.compile(
    r"(?P<first>[a-z]+)(?:-(?P<last>[a-z]+))?", re.IGNORECASE
)  # a prefix, as APScheduler reads it
_LAST = re.compile(r"last", re.IGNORECASE)


def check_cron(line: str) -> None:
    """Raise ValueError, saying which field is wrong and why, unless ``line`` is a cron line."""
    fields = line.split()
    if len(fields) != len(FIELDS):
        raise ValueError(f"{len(fields)} fields, not 5")
    for text, (name, low, high) in zip(fields, FIELDS, strict=True):
        for part in _SEPARATOR.split(text.strip()):
            _check_part(part, name, low, high)


def _check_part(part: str, name: str, low: int, high: int) -> None:
    def fail(why: str) -> ValueError:
        return ValueError(f"{name} {part!r}: {why}")

    first: int | None
    last: int | None
    step: int | None
    if m := _ALL.match(part):
        first, last, step = None, None, _number(m["step"])
    elif m := _RANGE.match(part):
        first, last, step = int(m["first"]), _number(m["last"]), _number(m["step"])
        if last is None and step is None:
            last = first
    elif name in ("month", "day of week") and (m := _NAMES.match(part)):
        names = MONTHS if name == "month" else WEEKDAYS
        offset = 1 if name == "month" else 0
        for word in (m["first"], m["last"]):
            if word and word.lower() not in names:
                raise fail(f"{word!r} is not one of {', '.join(names)}")
        first = names.index(m["first"].lower()) + offset
        last = names.index(m["last"].lower()) + offset if m["last"] else first
        step = None
    elif name == "day" and _LAST.match(part):
        return
    else:
        raise fail("not *, */n, n, n-m, n-m/n" + (" or a name" if name in ("month", "day of week") else ""))
    if step == 0:
        raise fail("a step must be above 0")
    if first is not None and last is not None and first > last:
        raise fail("a range must not end before it starts")
    if first is not None and first < low:
        raise fail(f"{first} is below {low}")
    if last is not None and last > high:
        raise fail(f"{last} is above {high}")
    span = (last or high) - (first if first is not None else low)  # APScheduler's own arithmetic
    if step and step > span:
        raise fail(f"the step {step} is larger than the range ({span})")


def _number(text: str | None) -> int | None:
    return None if text is None else int(text)


def next_fire(line: str, after: datetime) -> datetime:
    """The first minute after ``after`` (aware, in the schedule's zone) that the cron line
    names, as APScheduler's ``CronTrigger.from_crontab`` counts (day of month and day of
    week must both match; 0 = Monday). For ``status``, which imports no scheduler; a test
    holds it against APScheduler's own answer."""
    check_cron(line)
    minutes, hours, days, months, weekdays = (
        _expand(text, name, low, high) for text, (name, low, high) in zip(line.split(), FIELDS, strict=True)
    )
    start = (after + timedelta(minutes=1)).replace(second=0, microsecond=0)
    day = start.date()
    for _ in range(366 * 9):  # Feb 29 on a Monday can be years away
        last = calendar.monthrange(day.year, day.month)[1]
        if (
            day.month in months
            and (day.day in days or (LAST in days and day.day == last))
            and day.weekday() in weekdays
        ):
            for hour in sorted(hours):
                for minute in sorted(minutes):
                    candidate = datetime.combine(day, dt_time(hour, minute), tzinfo=after.tzinfo)
                    if candidate >= start:
                        return candidate
        day += timedelta(days=1)
    raise ValueError(f"{line!r} never fires")


LAST = -1  # "last" in the day field: the month's last day


def _expand(text: str, name: str, low: int, high: int) -> set[int]:
    """The values a (checked) field names."""
    out: set[int] = set()
    for part in _SEPARATOR.split(text.strip()):
        if name == "day" and _LAST.match(part):
            out.add(LAST)
            continue
        if m := _ALL.match(part):
            first, last, step = low, high, _number(m["step"]) or 1
        elif m := _RANGE.match(part):
            first = int(m["first"])
            step = _number(m["step"]) or 1
            last = int(m["last"]) if m["last"] else (high if m["step"] else first)
        else:
            m = _NAMES.match(part)
            assert m is not None  # check_cron passed
            names = MONTHS if name == "month" else WEEKDAYS
            offset = 1 if name == "month" else 0
            first = names.index(m["first"].lower()) + offset
            last = names.index(m["last"].lower()) + offset if m["last"] else first
            step = 1
        out.update(range(first, last + 1, step))
    return out


def next_fire_utc(line: str, zone: str, after: datetime) -> datetime:
    """The first time after ``after`` (aware, any zone) that ``line`` fires in the time zone
    ``zone`` (an IANA name), in UTC: when a subscriber's own schedule next lets an email go."""
    from zoneinfo import ZoneInfo

    return next_fire(line, after.astimezone(ZoneInfo(zone))).astimezone(UTC)
