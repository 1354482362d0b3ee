"""An execution's history: events named as Step Functions names them.

Each event has an ``id`` (1, 2, …), the ``id`` of the event before it, a
``timestamp`` from the execution's clock and a ``type`` such as
``ExecutionStarted``, ``PassStateEntered``, ``TaskScheduled``,
``TaskSucceeded``, ``MapIterationStarted`` or ``ExecutionSucceeded``;
``details`` carries what that type carries (state name, input, output,
error, cause, iteration index …).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

__all__ = ["History", "HistoryEvent", "iso_time"]


_last_second: list[Any] = [None, ""]


def iso_time(seconds: float) -> str:
    """Epoch seconds as Step Functions writes times: ``2024-05-01T12:00:00.000Z``."""
    # Every state entered formats a time; formatting each second once keeps that cheap.
    whole = int(seconds // 1)
    if _last_second[0] != whole:
        _last_second[1] = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _last_second[0] = whole
    millis = min(999, int((seconds - whole) * 1000))
    return f"{_last_second[1]}{millis:03d}Z"


class HistoryEvent(NamedTuple):
    """One event of an execution's history (a named tuple: cheap to make, immutable)."""

    id: int
    type: str
    timestamp: float
    previous_event_id: int
    details: Mapping[str, Any]


class History:
    """The append-only list of an execution's events.

    State transitions are the hot path of every execution, so they are kept
    as plain tuples (:meth:`state`) and turned into :class:`HistoryEvent`
    objects only when someone reads the history.
    """

    def __init__(self) -> None:
        # (type, timestamp, details) or (type, timestamp, name, field, value)
        self._raw: list[tuple[Any, ...]] = []

    def add(self, type: str, timestamp: float, **details: Any) -> None:
        """Append an event of ``type`` carrying ``details``."""
        self._raw.append((type, timestamp, details))

    def state(self, type: str, timestamp: float, name: str, field: str, value: Any) -> None:
        """Append a state event: ``{"name": name, field: value}`` (input or output)."""
        self._raw.append((type, timestamp, name, field, value))

    @property
    def events(self) -> tuple[HistoryEvent, ...]:
        """Every event so far, oldest first; ids are 1, 2, 3 …"""
        return tuple(self)

    def stored(self) -> list[list[Any]]:
        """The events as a store writes them, without ids: ``[type, time, details]``,
        or ``[type, time, state, "input"|"output", value]`` for a state's events."""
        return [list(raw) if len(raw) == 5 else [raw[0], raw[1], dict(raw[2])] for raw in self._raw]

    def types(self) -> list[str]:
        """The event types in order (handy in tests)."""
        return [raw[0] for raw in self._raw]

    def __iter__(self) -> Iterator[HistoryEvent]:
        for index, raw in enumerate(self._raw):
            details = raw[2] if len(raw) == 3 else {"name": raw[2], raw[3]: raw[4]}
            yield HistoryEvent(index + 1, raw[0], raw[1], index, details)

    def __len__(self) -> int:
        return len(self._raw)
