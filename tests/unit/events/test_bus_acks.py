"""``Acks``: the acknowledgements of one event-loop turn go out as one ``Log.ack``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from reflow.backends import memory_backend
from reflow.backends.protocols import Log
from reflow.errors import BackendUnavailableError
from reflow.events.delivery import Acks


class CountingLog:
    """A memory Log whose ``ack`` calls are recorded, and may be made to fail."""

    def __init__(self, inner: Log) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []
        self.fail = False

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        self.calls.append(list(ids))
        if self.fail:
            raise BackendUnavailableError("memory://", "simulated outage")
        return await self.inner.ack(stream, group, ids)


async def _pending(log: Log, count: int) -> list[str]:
    for i in range(count):
        await log.append("s", str(i).encode())
    return [entry.id for entry in await log.read("s", "g", "c", count=count)]


async def test_acks_of_one_turn_go_out_as_one_call_and_each_waiter_returns_after_it() -> None:
    inner = memory_backend().log
    log = CountingLog(inner)
    ids = await _pending(inner, 5)
    acks = Acks(log, "s", "g")  # type: ignore[arg-type]
    await asyncio.gather(*(acks.ack(entry_id) for entry_id in ids[:4]))
    assert log.calls == [ids[:4]]
    assert [p.id for p in await inner.pending("s", "g")] == [ids[4]]  # acked before returning
    await acks.ack(ids[4])  # a later turn: its own call
    assert log.calls == [ids[:4], [ids[4]]]
    assert await inner.pending("s", "g") == []


async def test_a_failed_ack_reaches_every_waiter() -> None:
    inner = memory_backend().log
    log = CountingLog(inner)
    ids = await _pending(inner, 2)
    log.fail = True
    acks = Acks(log, "s", "g")  # type: ignore[arg-type]
    outcomes = await asyncio.gather(*(acks.ack(i) for i in ids), return_exceptions=True)
    assert all(isinstance(o, BackendUnavailableError) for o in outcomes)
    assert len(await inner.pending("s", "g")) == 2  # nothing acked: both come back later


async def test_send_does_not_wait_logs_a_failure_and_drain_finishes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = memory_backend().log
    log = CountingLog(inner)
    ids = await _pending(inner, 3)
    acks = Acks(log, "s", "g")  # type: ignore[arg-type]
    acks.send(ids[0], ids[1])
    assert log.calls == []  # queued, not yet sent
    await acks.drain()
    assert log.calls == [ids[:2]]
    log.fail = True
    with caplog.at_level(logging.ERROR, logger="reflow.events"):
        acks.send(ids[2])
        await acks.drain()
        await asyncio.sleep(0)
    assert "come back after their lease" in caplog.text
    assert [p.id for p in await inner.pending("s", "g")] == [ids[2]]
