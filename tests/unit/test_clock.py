"""FakeClock: virtual time that moves only when told."""

from __future__ import annotations

import asyncio

import pytest

from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.testing import FakeClock


async def test_sleepers_wake_in_deadline_order_when_time_advances() -> None:
    clock = FakeClock(start=1000.0)
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [asyncio.create_task(sleeper("ten", 600)), asyncio.create_task(sleeper("one", 60))]
    await asyncio.sleep(0)
    assert clock.sleepers == 2
    clock.advance(59)
    await asyncio.sleep(0)
    assert woke == []
    clock.advance(1)
    await asyncio.sleep(0)
    assert woke == ["one"]
    clock.advance(540)
    await asyncio.gather(*tasks)
    assert woke == ["one", "ten"]
    assert clock.time() == 1600.0


async def test_autojump_finishes_a_ten_minute_sleep_instantly() -> None:
    clock = FakeClock(autojump=True)
    start = clock.time()
    loop = asyncio.get_running_loop()
    wall = loop.time()
    await clock.sleep(600)
    assert clock.time() - start == 600
    assert loop.time() - wall < 0.5


def test_fake_clock_never_goes_backwards() -> None:
    clock = FakeClock(start=50.0)
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set(10.0)


def test_both_clocks_satisfy_the_protocol() -> None:
    assert isinstance(FakeClock(), Clock)
    assert isinstance(SYSTEM_CLOCK, Clock)
