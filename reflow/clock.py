"""Time, injected.

Every timer, TTL, lease, retry back-off and Wait state in reflow reads a
:class:`Clock` rather than the ``time`` module, so tests can run hours of
virtual time in milliseconds with :class:`reflow.testing.FakeClock`.

``time()`` is wall-clock seconds since the epoch (what TTLs and timestamps are
stored in); ``monotonic()`` never goes backwards (what durations are measured
in); ``sleep()`` waits on the clock's own time line.
"""

from __future__ import annotations

import asyncio
import time as _time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "SYSTEM_CLOCK"]


@runtime_checkable
class Clock(Protocol):
    """The source of time every reflow timer reads."""

    def time(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock's time line."""
        ...


class SystemClock:
    """The real clock: the ``time`` module and ``asyncio.sleep``."""

    def time(self) -> float:
        return _time.time()

    def monotonic(self) -> float:
        return _time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()
