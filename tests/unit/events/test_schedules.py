"""Schedule expressions, from the EventBridge user guide ("Schedule expressions for
rules"): rate(), six-field cron() in UTC, and at()."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflow import App
from reflow.errors import InvalidScheduleError, RegistrationError
from reflow.events.schedules import (
    AtSchedule,
    CronSchedule,
    RateSchedule,
    next_fire,
    parse_schedule,
)
from reflow.testing.clock import FakeClock


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def firings(expression: str, start: str, count: int) -> list[str]:
    schedule = parse_schedule(expression)
    moment = at(start)
    out = []
    for _ in range(count):
        found = schedule.next_after(moment)
        assert found is not None
        out.append(found.strftime("%Y-%m-%d %a %H:%M"))
        moment = found
    return out


# --- rate -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(1 minute)", 60),
        ("rate(5 minutes)", 300),
        ("rate(1 hour)", 3600),
        ("rate(12 hours)", 43200),
        ("rate(1 day)", 86400),
        ("rate(7 days)", 604800),
    ],
)
def test_rate_period_in_seconds(expression: str, seconds: int) -> None:
    schedule = parse_schedule(expression)
    assert isinstance(schedule, RateSchedule)
    assert schedule.seconds == seconds


def test_rate_fires_on_epoch_aligned_boundaries_strictly_after() -> None:
    schedule = parse_schedule("rate(5 minutes)")
    assert schedule.next_after(at("2026-12-04T15:02:30")) == at("2026-12-04T15:05:00")
    assert schedule.next_after(at("2026-12-04T15:05:00")) == at("2026-12-04T15:10:00")


@pytest.mark.parametrize(
    "expression",
    [
        "rate(5 minute)",
        "rate(1 minutes)",
        "rate(0 minutes)",
        "rate(-1 minutes)",
        "rate(5 weeks)",
        "rate(five minutes)",
        "rate(5)",
        "rate(1.5 hours)",
    ],
)
def test_invalid_rate_is_refused(expression: str) -> None:
    with pytest.raises(InvalidScheduleError) as caught:
        parse_schedule(expression)
    assert caught.value.expression == expression


# --- cron --------------------------------------------------------------------------------


def test_cron_daily_at_ten_utc() -> None:
    assert firings("cron(0 10 * * ? *)", "2026-12-04T10:00:00", 2) == [
        "2026-12-05 Sat 10:00",
        "2026-12-06 Sun 10:00",
    ]


def test_cron_quarter_past_noon() -> None:
    assert firings("cron(15 12 * * ? *)", "2026-12-04T12:14:59", 1) == ["2026-12-04 Fri 12:15"]


def test_cron_weekdays_at_six_pm() -> None:
    assert firings("cron(0 18 ? * MON-FRI *)", "2026-12-04T19:00:00", 2) == [
        "2026-12-07 Mon 18:00",
        "2026-12-08 Tue 18:00",
    ]


def test_cron_first_of_the_month() -> None:
    assert firings("cron(0 8 1 * ? *)", "2026-12-04T00:00:00", 2) == [
        "2027-01-01 Fri 08:00",
        "2027-02-01 Mon 08:00",
    ]


def test_cron_every_fifteen_minutes() -> None:
    assert firings("cron(0/15 * * * ? *)", "2026-12-04T10:50:00", 3) == [
        "2026-12-04 Fri 11:00",
        "2026-12-04 Fri 11:15",
        "2026-12-04 Fri 11:30",
    ]


def test_cron_every_five_minutes_in_office_hours_on_weekdays() -> None:
    result = firings("cron(0/5 8-17 ? * MON-FRI *)", "2026-12-04T17:54:00", 2)
    assert result == ["2026-12-04 Fri 17:55", "2026-12-07 Mon 08:00"]


def test_cron_first_monday_with_hash() -> None:
    assert firings("cron(0 9 ? * 2#1 *)", "2026-12-04T00:00:00", 2) == [
        "2026-12-07 Mon 09:00",
        "2027-01-04 Mon 09:00",
    ]


def test_cron_last_day_of_the_month() -> None:
    assert firings("cron(0 0 L * ? *)", "2027-01-31T00:00:00", 2) == [
        "2027-02-28 Sun 00:00",
        "2027-03-31 Wed 00:00",
    ]


def test_cron_last_friday_with_l() -> None:
    assert firings("cron(0 12 ? * 6L *)", "2026-12-01T00:00:00", 2) == [
        "2026-12-25 Fri 12:00",
        "2027-01-29 Fri 12:00",
    ]


def test_cron_nearest_weekday_stays_in_the_month() -> None:
    # 2027-05-01 is a Saturday: the nearest weekday inside May is Monday the 3rd.
    assert firings("cron(0 6 1W * ? 2027)", "2027-04-15T00:00:00", 1) == ["2027-05-03 Mon 06:00"]
    # 2026-11-15 is a Sunday: Monday the 16th.
    assert firings("cron(0 6 15W 11 ? 2026)", "2026-11-01T00:00:00", 1) == ["2026-11-16 Mon 06:00"]


def test_cron_last_weekday_of_the_month() -> None:
    # 2027-01-31 is a Sunday: the last weekday is Friday the 29th.
    assert firings("cron(0 6 LW 1 ? 2027)", "2027-01-01T00:00:00", 1) == ["2027-01-29 Fri 06:00"]


def test_cron_lists_and_named_months() -> None:
    assert firings("cron(30 6,18 1 JAN,JUL ? *)", "2026-12-04T00:00:00", 3) == [
        "2027-01-01 Fri 06:30",
        "2027-01-01 Fri 18:30",
        "2027-07-01 Thu 06:30",
    ]


def test_cron_past_its_last_year_never_fires_again() -> None:
    schedule = parse_schedule("cron(0 0 1 1 ? 2027)")
    assert schedule.next_after(at("2027-01-01T00:00:00")) is None


def test_cron_thirty_first_skips_short_months() -> None:
    assert firings("cron(0 0 31 * ? *)", "2027-01-31T00:00:00", 1) == ["2027-03-31 Wed 00:00"]


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("cron(0 10 * * *)", "six fields"),
        ("cron(0 10 * * * *)", "exactly one of day-of-month and day-of-week"),
        ("cron(0 10 ? * ? *)", "exactly one of day-of-month and day-of-week"),
        ("cron(60 10 * * ? *)", "minutes: 60 is outside 0-59"),
        ("cron(0 24 * * ? *)", "hours: 24 is outside 0-23"),
        ("cron(0 0 32 * ? *)", "day-of-month: 32 is outside 1-31"),
        ("cron(0 0 * 13 ? *)", "month: 13 is outside 1-12"),
        ("cron(0 0 * FOO ? *)", "month: 'FOO' is not a number"),
        ("cron(0 0 ? * 8 *)", "day-of-week: 8 is outside 1-7"),
        ("cron(0 0 * * ? 1969)", "year: 1969 is outside 1970-2199"),
        ("cron(0/0 * * * ? *)", "step '0' must be a positive number"),
        ("cron(10-5 * * * ? *)", "runs backwards"),
        ("cron(0 0 ? * 2#6 *)", "day-of-week"),
        ("every(5 minutes)", "expected rate(...), cron(...) or at(...)"),
    ],
)
def test_invalid_cron_says_what_is_wrong(expression: str, problem: str) -> None:
    with pytest.raises(InvalidScheduleError) as caught:
        parse_schedule(expression)
    assert problem in caught.value.problem


@settings(max_examples=100, deadline=None)
@given(
    minute=st.integers(0, 59),
    hour=st.integers(0, 23),
    start=st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
)
def test_daily_cron_fires_within_a_day_at_its_minute(
    minute: int, hour: int, start: datetime
) -> None:
    schedule = parse_schedule(f"cron({minute} {hour} * * ? *)")
    assert isinstance(schedule, CronSchedule)
    found = schedule.next_after(start)
    assert found is not None
    assert start < found <= start + timedelta(days=1)
    assert (found.hour, found.minute, found.second) == (hour, minute, 0)


# --- at, the clock, the App -----------------------------------------------------------------


def test_at_fires_once() -> None:
    schedule = parse_schedule("at(2026-12-24T18:00:00)")
    assert isinstance(schedule, AtSchedule)
    assert schedule.next_after(at("2026-12-24T17:59:59")) == at("2026-12-24T18:00:00")
    assert schedule.next_after(at("2026-12-24T18:00:00")) is None


@pytest.mark.parametrize("expression", ["at(2026-12-24)", "at(2026-13-01T00:00:00)"])
def test_invalid_at_is_refused(expression: str) -> None:
    with pytest.raises(InvalidScheduleError):
        parse_schedule(expression)


def test_next_fire_reads_the_clock() -> None:
    clock = FakeClock(start=at("2026-12-04T15:02:00").timestamp())
    assert next_fire(parse_schedule("rate(1 hour)"), clock) == at("2026-12-04T16:00:00")


def handler(event: object, context: object) -> None:
    """A handler of the right shape."""


def test_app_schedule_with_a_bad_cron_names_the_schedule() -> None:
    app = App("news")
    with pytest.raises(RegistrationError) as caught:
        app.schedule("cron(0 25 * * ? *)", name="nightly")(handler)
    assert caught.value.name == "nightly"
    assert "hours: 25 is outside 0-23" in str(caught.value)
    assert isinstance(caught.value.__cause__, InvalidScheduleError)
