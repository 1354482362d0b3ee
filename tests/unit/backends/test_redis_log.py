"""The Redis Log beyond the shared contract: server-side leases, what trimming and
deleting do to pending entries, and that the stream is plain Redis underneath."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reflow.backends import Backend, Log, PendingEntry, open_backend
from reflow.backends.memory import MemoryLog
from reflow.backends.redis_log import MAX_BATCH
from reflow.testing.clock import FakeClock
from tests.conftest import REDIS_URL, require_server


@dataclass
class Engine:
    """A Redis backend under a fresh prefix, plus a raw client on the same server."""

    backend: Backend
    prefix: str
    raw: aioredis.Redis

    async def keys(self) -> set[str]:
        """Every Redis key under this engine's prefix (without it)."""
        found = [k async for k in self.raw.scan_iter(match=f"{self.prefix}*", count=1000)]
        return {k.decode().removeprefix(self.prefix) for k in found}


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    require_server(REDIS_URL, "the Redis server")
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    separator = "&" if "?" in REDIS_URL else "?"
    backend = await open_backend(f"{REDIS_URL}{separator}prefix={prefix}", data_dir=tmp_path)
    raw = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield Engine(backend, prefix, raw)
    finally:
        stale = [k async for k in raw.scan_iter(match=f"{prefix}*", count=1000)]
        if stale:
            await raw.unlink(*stale)
        await raw.aclose()
        await backend.close()


async def test_entry_ids_and_payloads_are_the_redis_streams_own(engine: Engine) -> None:
    entry_id = await engine.backend.log.append("orders", b"\x00payload")
    rows = await engine.raw.xrange(f"{engine.prefix}log:orders")
    assert rows == [(entry_id.encode(), {b"d": b"\x00payload"})]
    # And entries another tool XADDs are read like our own.
    other = await engine.raw.xadd(f"{engine.prefix}log:orders", {b"d": b"from raw"})
    entries = await engine.backend.log.read("orders", "g", "c")
    assert [(e.id.encode(), e.data) for e in entries] == [
        (entry_id.encode(), b"\x00payload"),
        (other, b"from raw"),
    ]


async def test_reading_with_an_unknown_group_creates_it_at_the_beginning(engine: Engine) -> None:
    await engine.backend.log.append("s", b"early")
    (entry,) = await engine.backend.log.read("s", "late-group", "c")
    assert entry.data == b"early"
    groups = await engine.raw.xinfo_groups(f"{engine.prefix}log:s")
    assert [g["name"] for g in groups] == [b"late-group"]


async def test_each_redelivery_raises_the_count_redis_reports(engine: Engine) -> None:
    log = engine.backend.log
    entry_id = await log.append("s", b"x")
    counts = []
    for consumer in ("a", "b", "c"):
        (entry,) = await log.read("s", "g", consumer, lease=0.1)
        counts.append(entry.deliveries)
        await asyncio.sleep(0.15)
    assert counts == [1, 2, 3]
    (row,) = await engine.raw.xpending_range(f"{engine.prefix}log:s", "g", "-", "+", 10)
    assert (row["message_id"], row["times_delivered"]) == (entry_id.encode(), 3)


async def test_a_blocking_read_wakes_when_a_lease_ends(engine: Engine) -> None:
    log = engine.backend.log
    await log.append("s", b"x")
    await log.read("s", "g", "crashed", lease=0.3)
    started = time.monotonic()
    (entry,) = await log.read("s", "g", "rescuer", block=5)
    waited = time.monotonic() - started
    assert entry.deliveries == 2
    assert 0.2 <= waited < 2


async def test_entries_trimmed_while_pending_are_dropped_not_redelivered(engine: Engine) -> None:
    log = engine.backend.log
    await log.append("s", b"old")
    kept = await log.append("s", b"new")
    await log.read("s", "g", "a", lease=0.1)
    assert await log.trim("s", max_length=1) == 1
    await asyncio.sleep(0.15)
    entries = await log.read("s", "g", "b")
    assert [(e.id, e.deliveries) for e in entries] == [(kept, 2)]
    assert [p.id for p in await log.pending("s", "g")] == [kept]


async def test_ack_releases_the_lease_and_delete_leaves_no_key_behind(engine: Engine) -> None:
    log = engine.backend.log
    ids = [await log.append("s", b"x") for _ in range(3)]
    await log.read("s", "g1", "c")
    await log.read("s", "g2", "c")
    lease_key = f"{engine.prefix}lease:s\x00g1"
    assert await engine.raw.zcard(lease_key) == 3
    assert await log.ack("s", "g1", ids[:2]) == 2
    assert await log.ack("s", "g1", []) == 0
    assert await engine.raw.zrange(lease_key, 0, -1) == [ids[2].encode()]
    assert await log.delete_stream("s") is True
    assert await engine.keys() == set()


async def test_pending_idle_of_an_entry_another_tool_delivered_comes_from_redis(
    engine: Engine,
) -> None:
    log = engine.backend.log
    await log.append("s", b"x")
    await log.create_group("s", "g")
    key = f"{engine.prefix}log:s"
    await engine.raw.xreadgroup("g", "raw-consumer", {key: ">"}, count=1)
    await asyncio.sleep(0.2)
    (row,) = await log.pending("s", "g")
    assert row.consumer == "raw-consumer"
    assert 0.15 <= row.idle < 5
    assert await log.pending("missing", "g") == []
    assert await log.pending("s", "missing-group") == []


async def test_a_blocking_read_notices_a_fake_clock_passing_a_lease(tmp_path: Path) -> None:
    require_server(REDIS_URL, "the Redis server")
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    clock = FakeClock()
    separator = "&" if "?" in REDIS_URL else "?"
    url = f"{REDIS_URL}{separator}prefix={prefix}"
    backend = await open_backend(url, data_dir=tmp_path, clock=clock)
    try:
        await backend.log.append("s", b"job")
        await backend.log.read("s", "g", "crashed", lease=30)
        waiting = asyncio.create_task(backend.log.read("s", "g", "rescuer", block=60))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        clock.advance(31)
        (entry,) = await asyncio.wait_for(waiting, 2)
        assert entry.deliveries == 2
    finally:
        await backend.log.delete_stream("s")
        await backend.close()


async def test_trim_by_age_and_length_together_drop_the_larger_cut(engine: Engine) -> None:
    log = engine.backend.log
    for _ in range(3):
        await log.append("s", b"old")
    await asyncio.sleep(0.25)
    fresh = [await log.append("s", b"new") for _ in range(3)]
    assert await log.trim("s", max_length=5, max_age=0.2) == 3
    assert [e.id for e in await log.range("s")] == fresh
    assert await log.trim("never-written", max_length=0) == 0


async def test_large_reads_are_capped_and_large_acks_are_chunked(engine: Engine) -> None:
    log = engine.backend.log
    key = f"{engine.prefix}log:s"
    async with engine.raw.pipeline(transaction=False) as pipe:
        for _ in range(2500):
            pipe.xadd(key, {b"d": b"x"})
        await pipe.execute()
    first = await log.read("s", "g", "c", count=5000)
    assert len(first) == MAX_BATCH
    rest = await log.read("s", "g", "c", count=5000) + await log.read("s", "g", "c", count=5000)
    everything = [e.id for e in first + rest]
    assert len(set(everything)) == 2500
    assert await log.ack("s", "g", everything) == 2500
    assert await log.pending("s", "g") == []


# --- a model check: random reads, acks and time steps match the memory engine --

_LOG_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("append")),
        st.tuples(
            st.just("read"),
            st.sampled_from(["a", "b"]),
            st.sampled_from([1.0, 5.0]),
            st.sampled_from([1, 2, 50]),
        ),
        st.tuples(st.just("ack"), st.integers(0, 30)),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 2.0, 6.0])),
    ),
    max_size=30,
)


async def _log_step(
    log: Log, step: tuple[object, ...], appended: int, ids: dict[bytes, str]
) -> object:
    """Run one step; describe its outcome by payloads (ids differ between engines)."""
    if step[0] == "append":
        data = f"e{appended}".encode()
        ids[data] = await log.append("s", data)
        return data
    if step[0] == "read":
        consumer, lease, count = str(step[1]), float(step[2]), int(step[3])  # type: ignore[arg-type,call-overload]
        entries = await log.read("s", "g", consumer, count=count, lease=lease)
        return [(e.data, e.deliveries) for e in entries]
    if step[0] == "ack":
        data = f"e{step[1]}".encode()
        return await log.ack("s", "g", [ids[data]]) if data in ids else None
    raise AssertionError(step)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=_LOG_STEPS)
async def test_random_reads_acks_and_leases_match_the_memory_engine(
    tmp_path: Path, steps: list[tuple[object, ...]]
) -> None:
    require_server(REDIS_URL, "the Redis server")
    clock = FakeClock()
    separator = "&" if "?" in REDIS_URL else "?"
    url = f"{REDIS_URL}{separator}prefix=test-{uuid.uuid4().hex[:12]}:"
    backend = await open_backend(url, data_dir=tmp_path, clock=clock)
    model = MemoryLog(clock)
    ours_ids: dict[bytes, str] = {}
    model_ids: dict[bytes, str] = {}
    appended = 0
    try:
        for step in steps:
            if step[0] == "advance":
                clock.advance(float(step[1]))  # type: ignore[arg-type]
                continue
            ours = await _log_step(backend.log, step, appended, ours_ids)
            expected = await _log_step(model, step, appended, model_ids)
            appended += step[0] == "append"
            assert ours == expected, step

        def by_payload(rows: list[PendingEntry], ids: dict[bytes, str]) -> list[object]:
            names = {entry_id: data for data, entry_id in ids.items()}
            return [(names[r.id], r.consumer, r.deliveries, r.idle) for r in rows]

        assert by_payload(await backend.log.pending("s", "g"), ours_ids) == by_payload(
            await model.pending("s", "g"), model_ids
        )
    finally:
        await backend.log.delete_stream("s")
        await backend.close()


async def test_a_blocking_read_longer_than_a_commands_deadline_waits_it_out(
    engine: Engine,
) -> None:
    # Under redis-py's 5 s socket timeout, an XREAD BLOCK of more than 5 s
    # timed out, was retried (ten times) and raised after about a minute. The
    # engine's own deadline gives a blocking XREAD its block time on top.
    from reflow.backends.redis_client import COMMAND_TIMEOUT

    log = engine.backend.log
    await log.create_group("s", "g")
    started = time.monotonic()
    assert await log.read("s", "g", "c", block=COMMAND_TIMEOUT + 0.5) == []
    assert COMMAND_TIMEOUT + 0.4 <= time.monotonic() - started < COMMAND_TIMEOUT + 3
