"""The cron-line check of the configuration against APScheduler's own reading of the line:
they must accept and refuse the same lines, or ``check`` would pass a line that
``paperboy run`` then cannot schedule (or refuse one it could)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from hypothesis import given, settings
from hypothesis import strategies as st

from service.settings.cron import check_cron, next_fire


def apscheduler_accepts(line: str) -> bool:
    try:
        CronTrigger.from_crontab(line, timezone="UTC")
    except ValueError:
        return False
    return True


def ours_accepts(line: str) -> bool:
    try:
        check_cron(line)
    except ValueError:
        return False
    return True


BOUNDS = [0, 1, 2, 5, 6, 7, 11, 12, 13, 22, 23, 24, 30, 31, 32, 58, 59, 60]  # each field's edges
NUMBER = st.one_of(st.sampled_from(BOUNDS), st.integers(min_value=0, max_value=62)).map(str)
NAME = st.sampled_from(["jan", "Dec", "feb", "mon", "FRI", "sun", "sat", "tue", "last", "x", "sunday", "foo"])
ATOM = st.one_of(
    st.just("*"),
    st.builds(lambda n: f"*/{n}", NUMBER),
    NUMBER,
    st.builds(lambda a, b: f"{a}-{b}", NUMBER, NUMBER),
    st.builds(lambda a, b, c: f"{a}-{b}/{c}", NUMBER, NUMBER, NUMBER),
    st.builds(lambda a, b: f"{a}/{b}", NUMBER, NUMBER),
    NAME,
    st.builds(lambda a, b: f"{a}-{b}", NAME, NAME),
    st.builds(lambda a, b: f"{a}/{b}", NAME, NUMBER),
    st.sampled_from(["", "-", "*/", "1-", "?", "L", "5#2", "٣"]),
)
FIELD = st.lists(ATOM, min_size=1, max_size=3).map(",".join)
# Most fields plain, so that a line often hinges on its one unusual field.
LINE = st.lists(st.one_of(st.sampled_from(["*", "1"]), FIELD), min_size=5, max_size=5).map(" ".join)


@settings(max_examples=1500, deadline=None)
@given(LINE)
def test_the_check_agrees_with_apscheduler(line: str) -> None:
    assert ours_accepts(line) == apscheduler_accepts(line), line


def single_fields() -> list[str]:
    """Every field expression worth trying alone: numbers, ranges and steps around
    each field's edges, names, and junk."""
    numbers = [*range(0, 63), 99]
    out = [
        "*",
        "*/0",
        "*/1",
        "*/7",
        "*/23",
        "*/24",
        "*/30",
        "*/59",
        "*/60",
        "last",
        "LAST",
        "lastx",
        "?",
        "",
        "-",
    ]
    out += [str(n) for n in numbers]
    out += [f"{a}-{b}" for a in BOUNDS for b in BOUNDS]
    out += [
        f"{a}-{b}/{c}" for a in (0, 1, 7) for b in (6, 12, 23, 31, 59) for c in (0, 1, 5, 6, 11, 22, 30, 59)
    ]
    out += [f"{a}/{c}" for a in (0, 1, 7, 24, 60) for c in (0, 1, 5, 30, 59, 60)]
    names = ["jan", "Dec", "mon", "sun", "SAT", "foo", "sunday", "last"]
    out += names + [f"{a}-{b}" for a in names for b in names] + [f"{a}/2" for a in names]
    out += ["1,2", "1 ,2", "1,,2", "mon,fri", "٣", "1-٣"]
    return out


@pytest.mark.parametrize("position", range(5))
def test_each_field_alone_agrees_with_apscheduler(position: int) -> None:
    """Every expression of :func:`single_fields` in one field, the others ``*``."""
    for expression in single_fields():
        fields = ["*"] * 5
        fields[position] = expression
        line = " ".join(fields)
        if len(line.split()) != 5:
            continue  # an empty expression or one with a space is another line
        assert ours_accepts(line) == apscheduler_accepts(line), line


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("0 24 * * *", "hour '24': 24 is above 23"),
        ("0 7 * * 7", "day of week '7': 7 is above 6"),
        ("*/0 * * * *", "a step must be above 0"),
        ("0 7 * * sunday", "'sunday' is not one of mon"),
        ("0 7 * *", "4 fields, not 5"),
    ],
)
def test_a_refused_line_says_which_field_and_why(line: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_cron(line)
    assert not apscheduler_accepts(line)


@pytest.mark.parametrize("line", ["0 7 * * *", "*/5 9-17 * * mon-fri", "0 7 last * *", "30 6 1,15 jan-jun *"])
def test_common_lines_pass(line: str) -> None:
    check_cron(line)
    assert apscheduler_accepts(line)


VALID = LINE.filter(ours_accepts)
AFTER = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2031, 12, 31), timezones=st.just(UTC)
).map(lambda t: t.replace(microsecond=0))


@settings(max_examples=400, deadline=None)
@given(VALID, AFTER)
def test_the_next_delivery_agrees_with_apscheduler(line: str, after: datetime) -> None:
    """``status`` says when the next delivery is due without importing the scheduler."""
    theirs = CronTrigger.from_crontab(line, timezone="UTC").get_next_fire_time(
        None, after + timedelta(seconds=1)
    )
    try:
        ours = next_fire(line, after)
    except ValueError:  # never within nine years (Feb 30, or Feb 29 on a weekday far off)
        assert theirs is None or theirs > after + timedelta(days=366 * 9 - 2), (line, theirs)
        return
    assert ours == theirs, (line, after)


def test_the_next_delivery_of_the_default_line_in_a_zone() -> None:
    zone = ZoneInfo("Europe/Berlin")
    after = datetime(2026, 11, 29, 7, 0, 30, tzinfo=zone)
    assert next_fire("0 7 * * *", after) == datetime(2026, 11, 30, 7, 0, tzinfo=zone)
    assert next_fire("30 6 * * mon-fri", datetime(2026, 11, 27, 8, 0, tzinfo=zone)) == datetime(
        2026, 11, 30, 6, 30, tzinfo=zone
    )
