"""A clock that only moves when told to."""

from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["FakeClock"]


class FakeClock:
    """Virtual time for tests; satisfies :class:`reflow.clock.Clock`.

    ``sleep()`` parks the caller until :meth:`advance` moves time past its
    deadline, so a ten-minute Wait state finishes as soon as the test says ten
    minutes have passed. With ``autojump=True`` a sleep instead jumps the clock
    straight to its deadline, which runs whole retry schedules instantly.
    """

    def __init__(self, start: float = 1_700_000_000.0, *, autojump: bool = False) -> None:
        self._now = float(start)
        self._start = float(start)
        self.autojump = autojump
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now - self._start

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + max(0.0, seconds)
        if self.autojump:
            self._move_to(deadline)
            await asyncio.sleep(0)
            return
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._order), future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake every sleeper now due."""
        if seconds < 0:
            raise ValueError("a clock cannot be advanced by a negative amount")
        self._move_to(self._now + seconds)

    def set(self, when: float) -> None:
        """Jump to the absolute time ``when`` (seconds since the epoch)."""
        if when < self._now:
            raise ValueError("a FakeClock never goes backwards")
        self._move_to(when)

    @property
    def sleepers(self) -> int:
        """How many callers are parked in :meth:`sleep`."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    def _move_to(self, when: float) -> None:
        self._now = max(self._now, when)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def __repr__(self) -> str:
        return f"FakeClock(time={self._now})"
