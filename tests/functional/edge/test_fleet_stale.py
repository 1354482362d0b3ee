"""A purge does not wait for a member that stopped renewing, and still waits for a slow one.

An edge that dies without leaving stays registered until its key expires
(15 s); purges in that window used to wait the whole timeout for it. A member
now stamps each renewal, and one that has missed :data:`STALE_AFTER` of them
is named ``missing`` at once. A live edge keeps renewing however slowly it
answers, so it is still waited for up to the timeout. On memory, SQLite and
real Redis, on the system clock with short periods.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reflow.backends import Backend, open_backend
from reflow.backends.protocols import PubSub, Subscription
from reflow.edge.fleet import STALE_AFTER, EdgeMember, Membership, PurgePublisher, live_edges
from reflow.edge.purge import REPLY_PREFIX, Purger
from reflow.edge.store import Store
from tests.conftest import REDIS_URL, require_server
from tests.unit.edge.test_store import entry

REFRESH = 0.1  # a member is stale after STALE_AFTER * REFRESH = 0.3 s without renewing
TTL = 30.0  # longer than any test: no member drops out by expiry here


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'stale.db'}"
    else:
        require_server(REDIS_URL, "the Redis server")
        separator = "&" if "?" in REDIS_URL else "?"
        yield f"{REDIS_URL}{separator}prefix=test-stale-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def backend(backend_url: str, tmp_path: Path) -> AsyncIterator[Backend]:
    opened = await open_backend(backend_url, data_dir=tmp_path / "data")
    try:
        yield opened
    finally:
        await opened.close()


class SlowAnswers:
    """A PubSub whose purge answers leave ``delay`` seconds late: an edge slow to reply."""

    def __init__(self, inner: PubSub, delay: float) -> None:
        self.inner = inner
        self.delay = delay

    async def publish(self, channel: str, data: bytes) -> int:
        if channel.startswith(REPLY_PREFIX):
            await asyncio.sleep(self.delay)  # the slowness under test, not synchronisation
        return await self.inner.publish(channel, data)

    async def subscribe(self, *channels: str) -> Subscription:
        return await self.inner.subscribe(*channels)


@dataclass
class Member:
    """An edge of the fleet: a store of one tagged object, its purger and its membership."""

    purger: Purger
    membership: Membership

    async def stop(self) -> None:
        await self.membership.stop()
        await self.purger.stop()


async def join(backend: Backend, name: str, pubsub: PubSub | None = None) -> Member:
    store = Store()
    store.put(entry("/page", tags=("page",)))
    purger = Purger(store, pubsub or backend.pubsub, node=name)
    membership = Membership(backend.kv, EdgeMember(name), ttl=TTL, refresh=REFRESH)
    await purger.start()
    await membership.start()
    return Member(purger, membership)


async def until_stale(backend: Backend, name: str) -> None:
    """Wait until the backend shows ``name`` stale (it stopped renewing)."""
    deadline = time.monotonic() + 10
    while True:
        members = {m.id: m for m in await live_edges(backend.kv)}
        assert name in members, f"{name} dropped out instead of going stale"
        if members[name].stale(time.time()):
            return
        assert time.monotonic() < deadline, f"{name} never went stale"
        await asyncio.sleep(REFRESH / 4)


async def test_a_member_that_stopped_renewing_is_missing_without_a_wait(
    backend: Backend,
) -> None:
    live = await join(backend, "live")
    dead = await join(backend, "dead")
    # As if SIGKILLed: it neither renews, nor leaves, nor answers.
    assert dead.membership._task is not None
    dead.membership._task.cancel()
    await dead.purger.stop()
    publisher = PurgePublisher(backend.pubsub, backend.kv, timeout=5.0)
    try:
        await until_stale(backend, "dead")
        started = time.monotonic()
        result = await publisher.purge(keys=["page"])
        elapsed = time.monotonic() - started
        assert dict(result.edges) == {"live": 1}
        assert result.missing == ("dead",)
        assert elapsed < 1.0, f"waited {elapsed:.2f} s for a dead member"
        # Still listed until its key expires: stale is the purges' judgement only.
        assert {m.id for m in await live_edges(backend.kv)} == {"live", "dead"}
    finally:
        await publisher.stop()
        await live.stop()
        await dead.membership.stop()


async def test_live_members_are_waited_for_however_slow_until_the_timeout(
    backend: Backend,
) -> None:
    slow_by = STALE_AFTER * REFRESH + 0.2  # slower to answer than staleness takes
    slow = await join(backend, "slow", SlowAnswers(backend.pubsub, slow_by))
    # Renews but never answers (its answers would leave after the purge returned).
    silent = await join(backend, "silent", SlowAnswers(backend.pubsub, 60))
    timeout = 1.5
    publisher = PurgePublisher(backend.pubsub, backend.kv, timeout=timeout)
    try:
        started = time.monotonic()
        result = await publisher.purge(keys=["page"])
        elapsed = time.monotonic() - started
        assert dict(result.edges) == {"slow": 1}
        assert result.missing == ("silent",)
        assert elapsed >= timeout - 0.05, f"gave up on a live member after {elapsed:.2f} s"
    finally:
        await publisher.stop()
        for member in (slow, silent):
            await member.stop()
