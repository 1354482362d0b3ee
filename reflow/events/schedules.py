"""Schedule expressions: ``rate(...)``, ``cron(...)`` and ``at(...)``, in UTC.

The syntax is EventBridge's:

* ``rate(5 minutes)``: a positive whole number and ``minute(s)``,
  ``hour(s)`` or ``day(s)``; the unit is singular for 1 and plural
  otherwise, as EventBridge insists. reflow aligns rate periods on the Unix
  epoch (every 5 minutes fires at :00, :05, …), so every process computes
  the same firing times and one lease per period is enough to fire once.
* ``cron(Minutes Hours Day-of-month Month Day-of-week Year)``: six fields,
  UTC. ``,`` lists, ``-`` ranges, ``*`` every value, ``/`` steps
  (``0/15``, ``*/10``), ``?`` "no constraint" in one of the two day fields
  (exactly one of them must be ``?``), ``L`` (last day of the month; in
  Day-of-week, Saturday, or ``6L`` the last Friday), ``W`` (``15W``: the
  weekday nearest the 15th, within the month; ``LW``: the last weekday) and
  ``#`` (``3#2``: the second Tuesday). Months take ``JAN``-``DEC``,
  days of the week ``SUN``-``SAT`` (1 = Sunday … 7 = Saturday). Years run
  from 1970 to 2199.
* ``at(2026-12-24T18:00:00)``: once, at that UTC moment.

:func:`parse_schedule` returns a :class:`Schedule`, whose ``next_after``
gives the first firing strictly after a moment; ``next_fire(clock)`` reads
the moment from a :class:`~reflow.clock.Clock`. A malformed expression
raises :class:`~reflow.errors.InvalidScheduleError` saying what is wrong.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from reflow.clock import Clock
from reflow.errors import InvalidScheduleError

__all__ = ["AtSchedule", "CronSchedule", "RateSchedule", "Schedule", "parse_schedule"]

_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}
_WEEKDAYS = {
    name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), 1)
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST_YEAR = 2199


class Schedule(Protocol):
    """A parsed schedule expression."""

    @property
    def expression(self) -> str:
        """The expression as written."""
        ...

    def next_after(self, moment: datetime) -> datetime | None:
        """The first firing strictly after ``moment`` (``None``: it never fires again)."""
        ...


def next_fire(schedule: Schedule, clock: Clock) -> datetime | None:
    """The next firing of ``schedule`` after the clock's current time."""
    return schedule.next_after(datetime.fromtimestamp(clock.time(), UTC))


def parse_schedule(expression: str) -> Schedule:
    """Parse a ``rate(...)``, ``cron(...)`` or ``at(...)`` expression."""
    if not isinstance(expression, str):
        raise InvalidScheduleError(repr(expression), "a schedule expression must be a string")
    text = expression.strip()
    match = re.fullmatch(r"(rate|cron|at)\((.*)\)", text)
    if match is None:
        raise InvalidScheduleError(text, "expected rate(...), cron(...) or at(...)")
    kind, body = match.groups()
    if kind == "rate":
        return RateSchedule.parse(text, body)
    if kind == "cron":
        return CronSchedule.parse(text, body)
    return AtSchedule.parse(text, body)


# --- rate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RateSchedule:
    """Every ``seconds`` seconds, on period boundaries counted from the Unix epoch."""

    expression: str
    seconds: int

    @classmethod
    def parse(cls, expression: str, body: str) -> RateSchedule:
        """Read the body of ``rate(...)``."""
        match = re.fullmatch(r"\s*(\d+)\s+([a-z]+)\s*", body)
        if match is None:
            raise InvalidScheduleError(
                expression, "rate takes a whole number and a unit: rate(5 minutes)"
            )
        value, unit = int(match.group(1)), match.group(2)
        singular = unit.removesuffix("s")
        if singular not in _UNITS:
            raise InvalidScheduleError(
                expression, f"unknown unit {unit!r}; use minute(s), hour(s) or day(s)"
            )
        if value < 1:
            raise InvalidScheduleError(expression, "the rate must be a positive number")
        if value == 1 and unit != singular:
            raise InvalidScheduleError(expression, f"use the singular for 1: rate(1 {singular})")
        if value > 1 and unit == singular:
            raise InvalidScheduleError(
                expression, f"use the plural above 1: rate({value} {singular}s)"
            )
        return cls(expression, value * _UNITS[singular])

    def next_after(self, moment: datetime) -> datetime:
        """The first period boundary strictly after ``moment``."""
        elapsed = (moment - _EPOCH) // timedelta(seconds=1)
        periods = elapsed // self.seconds + 1
        return _EPOCH + timedelta(seconds=periods * self.seconds)


# --- at -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AtSchedule:
    """Once, at ``when`` (UTC)."""

    expression: str
    when: datetime

    @classmethod
    def parse(cls, expression: str, body: str) -> AtSchedule:
        """Read the body of ``at(...)``."""
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", body):
            raise InvalidScheduleError(expression, "at takes yyyy-mm-ddThh:mm:ss (UTC)")
        try:
            when = datetime.fromisoformat(body).replace(tzinfo=UTC)
        except ValueError as exc:
            raise InvalidScheduleError(expression, f"not a date and time: {exc}") from None
        return cls(expression, when)

    def next_after(self, moment: datetime) -> datetime | None:
        """``when`` if it is still ahead of ``moment``, else ``None``."""
        return self.when if self.when > moment else None


# --- cron ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _DaySpec:
    """The day-of-month or day-of-week field, resolved per month by :meth:`days`."""

    values: frozenset[int] = frozenset()  # plain days (of month, or of week 1..7)
    last: bool = False  # L in day-of-month: the last day
    last_weekday: bool = False  # LW: the last weekday (Mon-Fri) of the month
    nearest_weekday: int = 0  # nW: the weekday nearest day n
    last_of_week: int = 0  # nL in day-of-week: the last weekday n of the month
    nth: tuple[int, int] = (0, 0)  # d#k: the k-th weekday d of the month


@dataclass(frozen=True)
class CronSchedule:
    """A six-field EventBridge cron expression, evaluated in UTC."""

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: tuple[int, ...]
    years: tuple[int, ...]
    day_of_month: _DaySpec | None  # None: "?"
    day_of_week: _DaySpec | None

    @classmethod
    def parse(cls, expression: str, body: str) -> CronSchedule:
        """Read the body of ``cron(...)``."""
        fields = body.split()
        if len(fields) != 6:
            raise InvalidScheduleError(
                expression,
                f"cron takes six fields (minutes hours day-of-month month day-of-week year), "
                f"found {len(fields)}",
            )
        minute, hour, dom, month, dow, year = fields
        if (dom == "?") == (dow == "?"):
            raise InvalidScheduleError(
                expression, "exactly one of day-of-month and day-of-week must be '?'"
            )

        def numbers(
            text: str, name: str, low: int, high: int, names: dict[str, int] | None = None
        ) -> tuple[int, ...]:
            return tuple(sorted(_parse_list(expression, text, name, low, high, names or {})))

        return cls(
            expression,
            minutes=numbers(minute, "minutes", 0, 59),
            hours=numbers(hour, "hours", 0, 23),
            months=numbers(month, "month", 1, 12, _MONTHS),
            years=numbers(year, "year", 1970, _LAST_YEAR),
            day_of_month=None if dom == "?" else _parse_day_of_month(expression, dom),
            day_of_week=None if dow == "?" else _parse_day_of_week(expression, dow),
        )

    def days(self, year: int, month: int) -> list[int]:
        """The days of ``month`` in ``year`` on which the schedule fires."""
        length = calendar.monthrange(year, month)[1]
        spec = self.day_of_month or self.day_of_week
        assert spec is not None  # parse guarantees one of them
        found: set[int] = set()
        if self.day_of_month is not None:
            found.update(day for day in spec.values if day <= length)
            if spec.last:
                found.add(length)
            if spec.last_weekday:
                day = length
                while _weekday(year, month, day) in (1, 7):
                    day -= 1
                found.add(day)
            if spec.nearest_weekday:
                found.add(_nearest_weekday(year, month, min(spec.nearest_weekday, length), length))
            return sorted(found)
        first = _weekday(year, month, 1)
        for day in range(1, length + 1):
            if (first + day - 2) % 7 + 1 in spec.values:
                found.add(day)
        if spec.last_of_week:
            day = length
            while _weekday(year, month, day) != spec.last_of_week:
                day -= 1
            found.add(day)
        weekday, count = spec.nth
        if weekday:
            day = 1 + (weekday - first) % 7 + 7 * (count - 1)
            if day <= length:
                found.add(day)
        return sorted(found)

    def next_after(self, moment: datetime) -> datetime | None:
        """The first firing strictly after ``moment`` (``None`` past the last year)."""
        start = moment.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        for year in self.years:
            if year < start.year:
                continue
            same_year = year == start.year
            for month in self.months:
                if same_year and month < start.month:
                    continue
                same_month = same_year and month == start.month
                for day in self.days(year, month):
                    if same_month and day < start.day:
                        continue
                    same_day = same_month and day == start.day
                    for hour in self.hours:
                        if same_day and hour < start.hour:
                            continue
                        same_hour = same_day and hour == start.hour
                        for minute in self.minutes:
                            if same_hour and minute < start.minute:
                                continue
                            return datetime(year, month, day, hour, minute, tzinfo=UTC)
        return None


def _weekday(year: int, month: int, day: int) -> int:
    """Cron's day of the week: 1 = Sunday … 7 = Saturday."""
    return (calendar.weekday(year, month, day) + 1) % 7 + 1


def _nearest_weekday(year: int, month: int, day: int, length: int) -> int:
    weekday = _weekday(year, month, day)
    if weekday == 7:  # Saturday: Friday, unless that leaves the month
        return day - 1 if day > 1 else day + 2
    if weekday == 1:  # Sunday: Monday, unless that leaves the month
        return day + 1 if day < length else day - 2
    return day


def _parse_list(
    expression: str, text: str, name: str, low: int, high: int, names: dict[str, int]
) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        values.update(_parse_part(expression, part, name, low, high, names))
    return values


def _parse_part(
    expression: str, part: str, name: str, low: int, high: int, names: dict[str, int]
) -> range:
    def number(token: str) -> int:
        value = names.get(token.upper()) if names else None
        if value is None:
            if not token.isdigit():
                raise InvalidScheduleError(expression, f"{name}: {token!r} is not a number")
            value = int(token)
        if not low <= value <= high:
            raise InvalidScheduleError(expression, f"{name}: {value} is outside {low}-{high}")
        return value

    base, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) < 1:
            raise InvalidScheduleError(
                expression, f"{name}: step {step_text!r} must be a positive number"
            )
        step = int(step_text)
    if base == "*":
        return range(low, high + 1, step)
    first_text, dash, last_text = base.partition("-")
    if not first_text:
        raise InvalidScheduleError(expression, f"{name}: {part!r} is empty")
    first = number(first_text)
    last = number(last_text) if dash else (high if slash else first)
    if last < first:
        raise InvalidScheduleError(expression, f"{name}: range {base!r} runs backwards")
    return range(first, last + 1, step)


def _parse_day_of_month(expression: str, text: str) -> _DaySpec:
    if text == "L":
        return _DaySpec(last=True)
    if text == "LW":
        return _DaySpec(last_weekday=True)
    match = re.fullmatch(r"(\d{1,2})W", text)
    if match:
        day = int(match.group(1))
        if not 1 <= day <= 31:
            raise InvalidScheduleError(expression, f"day-of-month: {day}W is outside 1-31")
        return _DaySpec(nearest_weekday=day)
    return _DaySpec(values=frozenset(_parse_list(expression, text, "day-of-month", 1, 31, {})))


def _parse_day_of_week(expression: str, text: str) -> _DaySpec:
    if text == "L":
        return _DaySpec(values=frozenset({7}))
    match = re.fullmatch(r"([1-7]|[A-Za-z]{3})L", text)
    if match:
        return _DaySpec(last_of_week=_weekday_number(expression, match.group(1)))
    match = re.fullmatch(r"([1-7]|[A-Za-z]{3})#([1-5])", text)
    if match:
        return _DaySpec(nth=(_weekday_number(expression, match.group(1)), int(match.group(2))))
    if "#" in text or "L" in text.upper().replace("SAT", "").replace("SUN", ""):
        raise InvalidScheduleError(expression, f"day-of-week: cannot read {text!r}")
    return _DaySpec(values=frozenset(_parse_list(expression, text, "day-of-week", 1, 7, _WEEKDAYS)))


def _weekday_number(expression: str, token: str) -> int:
    if token.isdigit():
        return int(token)
    number = _WEEKDAYS.get(token.upper())
    if number is None:
        raise InvalidScheduleError(expression, f"day-of-week: {token!r} is not a day")
    return number
