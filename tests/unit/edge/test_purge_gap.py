"""A lost purge subscription: reopened with back-off, the store marked stale, the fleet told.

The backend is the memory one behind :class:`FlakyPubSub`, a wrapper whose
subscriptions the test breaks (iteration raises) or ends, and whose
``subscribe`` it can refuse or hang. Time is a FakeClock moved by hand.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.backends import Backend, memory_backend, open_backend
from reflow.backends.memory import MemoryPubSub
from reflow.backends.protocols import Message, Subscription
from reflow.edge.fleet import MEMBERS_PREFIX, EdgeMember, FanOut, Membership, live_edges
from reflow.edge.metrics import Metrics, prometheus_text
from reflow.edge.purge import PURGE_CHANNEL, PurgePlan, Purger
from reflow.edge.store import Store
from reflow.errors import EdgeError
from reflow.testing import FakeClock
from tests.unit.edge.exposition import parse
from tests.unit.edge.test_store import entry


async def until(condition: Callable[[], bool], turns: int = 200) -> None:
    """Run the loop until ``condition`` holds (no time passes on the clock)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def advance_until(
    clock: FakeClock, condition: Callable[[], bool], step: float = 0.005, limit: float = 30.0
) -> None:
    """Move the clock in small steps, letting the loop run, until ``condition`` holds."""
    start = clock.monotonic()
    while not condition():
        if clock.monotonic() - start > limit:
            raise AssertionError(f"the condition never held within {limit} s on the clock")
        clock.advance(step)
        for _ in range(5):
            await asyncio.sleep(0)


class FlakySubscription:
    """A memory subscription the test can break: its iteration then raises."""

    def __init__(self, inner: Subscription) -> None:
        self.inner = inner
        self.failure: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    def break_with(self, exc: BaseException) -> None:
        if not self.failure.done():
            self.failure.set_result(exc)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            getter = asyncio.ensure_future(self.inner.get())
            try:
                await asyncio.wait((getter, self.failure), return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()
            if self.failure.done():
                raise self.failure.result()
            message = getter.result()
            if message is None:
                return
            yield message

    async def get(self, timeout: float | None = None) -> Message | None:
        return await self.inner.get(timeout)

    async def close(self) -> None:
        await self.inner.close()


class FlakyPubSub:
    """The memory PubSub, with subscriptions to break and subscribe attempts to refuse."""

    def __init__(self, inner: MemoryPubSub, clock: FakeClock) -> None:
        self.inner = inner
        self.clock = clock
        self.subscriptions: list[FlakySubscription] = []
        self.attempts: list[float] = []  # the clock at every subscribe call
        self.refuse = 0  # refuse this many of the next subscribe calls
        self.hang = False  # subscribe never returns

    async def publish(self, channel: str, data: bytes) -> int:
        return await self.inner.publish(channel, data)

    async def subscribe(self, *channels: str) -> FlakySubscription:
        self.attempts.append(self.clock.monotonic())
        if self.hang:
            await asyncio.get_running_loop().create_future()
        if self.refuse:
            self.refuse -= 1
            raise ConnectionRefusedError("refused by the test")
        subscription = FlakySubscription(await self.inner.subscribe(*channels))
        self.subscriptions.append(subscription)
        return subscription

    def break_all(self, exc: BaseException) -> None:
        for subscription in self.subscriptions:
            subscription.break_with(exc)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hub() -> MemoryPubSub:
    return MemoryPubSub()


@pytest.fixture
def flaky(hub: MemoryPubSub, clock: FakeClock) -> FlakyPubSub:
    return FlakyPubSub(hub, clock)


@pytest.fixture
async def purger(flaky: FlakyPubSub, clock: FakeClock) -> AsyncIterator[Purger]:
    store = Store()
    store.put(entry("/news/1", tags=("news",)))
    store.put(entry("/sport/1", tags=("sport",)))
    started = Purger(store, flaky, node="edge", clock=clock)
    await started.start()
    yield started
    await started.stop()


def down(purger: Purger) -> Callable[[], bool]:
    return lambda: not purger.listening


# --- reopening ------------------------------------------------------------------


async def test_a_failed_subscription_is_reopened_with_doubling_jittered_back_off(
    purger: Purger, flaky: FlakyPubSub, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="reflow.edge")
    assert purger.listening and flaky.attempts == [0.0]
    flaky.refuse = 7
    lost = clock.monotonic()
    flaky.break_all(ConnectionResetError("reset by the test"))
    await until(down(purger))
    await advance_until(clock, lambda: purger.listening)
    assert len(flaky.attempts) == 1 + 8
    waits = [b - a for a, b in zip([lost, *flaky.attempts[1:]], flaky.attempts[1:], strict=False)]
    delays = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]  # doubling, capped at 2 s
    for waited, delay in zip(waits, delays, strict=True):
        # Jitter: between half and all of the delay (measured in 5 ms steps).
        assert delay / 2 - 0.006 <= waited <= delay + 0.006, (waits, delays)
    assert len({round(w / d, 2) for w, d in zip(waits, delays, strict=True)}) > 1  # jittered
    # Once per outage: one warning with the cause, one info when restored.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(warnings) == 1 and "ConnectionResetError: reset by the test" in warnings[0].message
    assert len(infos) == 1 and "after" in infos[0].message and "(8 attempts)" in infos[0].message
    assert "marked 2 stored objects stale" in infos[0].message
    assert (purger.gaps, purger.gap_marked) == (1, 2)


async def test_a_subscription_that_ends_is_reopened_too(
    purger: Purger, flaky: FlakyPubSub, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reflow.edge")
    await flaky.subscriptions[0].inner.close()  # the backend ended it: iteration stops
    await until(down(purger))
    await advance_until(clock, lambda: purger.listening)
    assert len(flaky.attempts) == 2 and purger.gaps == 1
    assert "the subscription ended" in caplog.records[0].message
    # The new subscription hears purges.
    sender = Purger(Store(), flaky.inner, node="sender")
    await sender.purge(PurgePlan.of(["sport"]))
    await until(lambda: purger.relayed == 1)
    assert purger.store.get("/sport/1", []) is None


async def test_the_back_off_restarts_only_after_the_subscription_held(
    purger: Purger, flaky: FlakyPubSub, clock: FakeClock
) -> None:
    def gap() -> float:
        flaky.break_all(ConnectionResetError("flap"))
        return clock.monotonic()

    lost = gap()
    await until(down(purger))
    await advance_until(clock, lambda: purger.listening)
    assert 0.025 - 0.006 <= flaky.attempts[-1] - lost <= 0.05 + 0.006
    # It failed again at once: the same outage, flapping, so the wait keeps doubling.
    lost = gap()
    await until(down(purger))
    await advance_until(clock, lambda: purger.listening)
    assert 0.05 - 0.006 <= flaky.attempts[-1] - lost <= 0.1 + 0.006
    # It held for more than the cap: a new outage starts at the first delay again.
    clock.advance(2.5)
    lost = gap()
    await until(down(purger))
    await advance_until(clock, lambda: purger.listening)
    assert 0.025 - 0.006 <= flaky.attempts[-1] - lost <= 0.05 + 0.006
    assert purger.gaps == 3


async def test_stop_during_back_off_returns_promptly_and_tries_no_more(
    purger: Purger, flaky: FlakyPubSub, clock: FakeClock
) -> None:
    flaky.refuse = 10**6
    flaky.break_all(ConnectionResetError("down"))
    await until(lambda: clock.sleepers == 1)  # waiting to try again
    async with asyncio.timeout(1):  # real seconds: the fake clock never moves here
        await purger.stop()
    attempts = len(flaky.attempts)
    clock.advance(60)
    await asyncio.sleep(0)
    assert len(flaky.attempts) == attempts and clock.sleepers == 0
    assert not purger.listening


async def test_stop_while_a_resubscribe_hangs_returns_promptly(
    purger: Purger, flaky: FlakyPubSub, clock: FakeClock
) -> None:
    flaky.hang = True
    flaky.break_all(ConnectionResetError("down"))
    await until(down(purger))
    await advance_until(clock, lambda: len(flaky.attempts) == 2)
    async with asyncio.timeout(1):
        await purger.stop()
    assert not purger.listening and purger.gaps == 0


async def test_stop_closes_the_subscription_without_reopening_it(
    purger: Purger, flaky: FlakyPubSub, hub: MemoryPubSub
) -> None:
    await purger.stop()
    assert len(flaky.attempts) == 1
    assert await hub.publish(PURGE_CHANNEL, b"{}") == 0  # nobody subscribed any more


def test_retry_delays_are_checked() -> None:
    with pytest.raises(ValueError):
        Purger(Store(), retry_first=0)
    with pytest.raises(ValueError):
        Purger(Store(), retry_first=3, retry_max=2)


# --- the gap ----------------------------------------------------------------------


async def test_after_a_gap_everything_stored_is_marked_stale_before_it_says_listening(
    purger: Purger, flaky: FlakyPubSub, hub: MemoryPubSub, clock: FakeClock
) -> None:
    seen: list[tuple[bool, bool]] = []
    purger.on_listening = lambda now: seen.append(
        (now, all(e.soft_purged for e in purger.store.entries()))
    )
    purger.metrics = Metrics()
    generation = purger.store.generation
    flaky.break_all(ConnectionResetError("down"))
    await until(down(purger))
    await until(lambda: len(hub._subscribers.get(PURGE_CHANNEL, [])) == 0)
    # A purge published during the gap never reaches this edge...
    sender = Purger(Store(), hub, node="sender")
    await sender.purge(PurgePlan.of(["news"]))
    purger.store.put(entry("/during", tags=("x",)))  # stored during the gap: suspect too
    await asyncio.sleep(0)
    assert purger.relayed == 0 and not purger.store.get("/news/1", []).soft_purged  # type: ignore[union-attr]
    # ...so when the subscription is back, every stored object is stale.
    await advance_until(clock, lambda: purger.listening)
    assert purger.relayed == 0
    assert all(e.soft_purged for e in purger.store.entries()) and len(purger.store) == 3
    assert purger.store.generation > generation  # fetches in flight across it are not stored
    assert seen == [(False, False), (True, True)]
    assert (purger.metrics.purge_feed_gaps, purger.metrics.purge_gap_objects) == (1, 3)
    # Stored after it came back: fresh, and purges reach it again.
    purger.store.put(entry("/after", tags=("y",)))
    await sender.purge(PurgePlan.of(["y"]))
    await until(lambda: purger.relayed == 1)
    assert purger.store.get("/after", []) is None


async def test_a_malformed_message_or_failing_apply_does_not_count_as_a_gap(
    purger: Purger, hub: MemoryPubSub, monkeypatch: pytest.MonkeyPatch
) -> None:
    await hub.publish(PURGE_CHANNEL, b"not json")
    await until(lambda: purger.malformed == 1)

    def broken(self: PurgePlan, store: Store) -> int:
        raise RuntimeError("a bug")

    news = b'{"from": "s", "plan": {"keys": ["news"], "paths": [], "soft": false}}'
    monkeypatch.setattr(PurgePlan, "apply", broken)
    await hub.publish(PURGE_CHANNEL, news)
    await until(lambda: purger.relayed == 1)
    monkeypatch.undo()
    assert purger.listening and purger.gaps == 0
    await hub.publish(PURGE_CHANNEL, news)
    await until(lambda: purger.relayed == 2)
    assert purger.store.get("/news/1", []) is None


# --- the fleet: members that do not listen ------------------------------------------


@pytest.fixture
async def backend(clock: FakeClock) -> AsyncIterator[Backend]:
    opened = memory_backend(clock)
    try:
        yield opened
    finally:
        await opened.close()


def test_a_member_says_whether_it_listens_and_older_records_do() -> None:
    deaf = EdgeMember("e", listening=False)
    assert EdgeMember.from_json(deaf.to_json()) == deaf
    assert EdgeMember.from_json(b'{"id": "old"}').listening is True
    with pytest.raises(EdgeError, match="listening"):
        EdgeMember.from_json(b'{"id": "x", "listening": "no"}')


async def test_a_live_member_that_does_not_listen_is_missing_at_once(
    backend: Backend, clock: FakeClock
) -> None:
    await backend.kv.put(
        MEMBERS_PREFIX + "deaf", EdgeMember("deaf", listening=False).to_json(), ttl=15
    )
    fanout = FanOut(backend.pubsub, backend.kv, sender="s", clock=clock, timeout=1.0)
    try:
        async with asyncio.timeout(1):  # real time: nothing waits on the fake clock
            result = await fanout.publish(PurgePlan.of(["news"]), {"s": 2})
        assert (dict(result.edges), result.missing, int(result)) == ({"s": 2}, ("deaf",), 2)
        # With a listening edge as well: its answer is awaited, the deaf one is not.
        store = Store()
        store.put(entry("/n", tags=("news",)))
        other = Purger(store, backend.pubsub, node="ok")
        await other.start()
        await backend.kv.put(MEMBERS_PREFIX + "ok", EdgeMember("ok").to_json(), ttl=15)
        async with asyncio.timeout(1):
            result = await fanout.publish(PurgePlan.of(["news"]), {"s": 0})
        assert dict(result.edges) == {"s": 0, "ok": 1} and result.missing == ("deaf",)
        await other.stop()
    finally:
        await fanout.close()


async def test_membership_rewrites_the_member_when_asked_and_not_after_stop(
    backend: Backend, clock: FakeClock
) -> None:
    state = {"listening": True}
    membership = Membership(
        backend.kv, lambda: EdgeMember("e", listening=state["listening"]), clock=clock
    )
    membership.renew_soon()  # before start: nothing
    await asyncio.sleep(0)
    assert await live_edges(backend.kv) == []
    await membership.start()
    state["listening"] = False
    membership.renew_soon()

    async def listening() -> bool:
        [member] = await live_edges(backend.kv)
        return member.listening

    for _ in range(50):
        if not await listening():
            break
        await asyncio.sleep(0)
    assert not await listening()
    clock.advance(5)  # the periodic renewal describes it again, still not listening
    await until(lambda: membership.renewals == 2)
    assert not await listening()
    await membership.stop()
    membership.renew_soon()
    await asyncio.sleep(0)
    assert await live_edges(backend.kv) == []


# --- metrics ------------------------------------------------------------------------


def test_gaps_are_counted_in_the_snapshot_and_the_exposition() -> None:
    metrics = Metrics()
    metrics.purge_feed_gaps, metrics.purge_gap_objects = 2, 7
    assert metrics.snapshot()["purge_feed_gaps"] == 2
    assert metrics.snapshot()["purge_gap_objects"] == 7
    families = parse(prometheus_text(metrics))
    assert families["reflow_edge_purge_feed_gaps_total"].type == "counter"
    assert families["reflow_edge_purge_feed_gaps_total"].value() == 2
    assert families["reflow_edge_purge_gap_objects_total"].value() == 7


# --- the SQLite engine: a failed poller ends its subscriptions ----------------------


async def test_a_failed_sqlite_poller_ends_subscriptions_and_the_purger_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'gap.db'}"
    here, there = (
        await open_backend(url, data_dir=tmp_path),
        await open_backend(url, data_dir=tmp_path),
    )
    store = Store()
    store.put(entry("/news/1", tags=("news",)))
    store.put(entry("/sport/1", tags=("sport",)))
    purger = Purger(store, here.pubsub, node="edge", retry_first=0.01, retry_max=0.05)
    try:
        await purger.start()
        hub: Any = here.pubsub
        read: Callable[..., Awaitable[Any]] = hub._db.read
        failures = iter([sqlite3.OperationalError("disk I/O error")])

        async def failing(job: Any) -> Any:
            failure = next(failures, None)
            if failure is not None:
                raise failure
            return await read(job)

        monkeypatch.setattr(hub._db, "read", failing)
        async with asyncio.timeout(10):
            while purger.gaps == 0 or not purger.listening:
                await asyncio.sleep(0.005)
        assert all(e.soft_purged for e in store.entries())
        # The new poller hears the other process's purges again.
        await Purger(Store(), there.pubsub, node="other").purge(PurgePlan.of(["sport"]))
        async with asyncio.timeout(10):
            while store.get("/sport/1", []) is not None:
                await asyncio.sleep(0.005)
        assert purger.relayed == 1
    finally:
        await purger.stop()
        await here.close()
        await there.close()


# --- the back-off schedule, as a property ------------------------------------------

HOLDS = st.sampled_from([0.0, 0.5, 1.9, 2.1, 3.0])  # away from the 2 s boundary


@settings(max_examples=20)
@given(outages=st.lists(st.tuples(HOLDS, st.integers(0, 4)), min_size=1, max_size=3))
def test_every_wait_follows_the_doubling_schedule_that_restarts_after_a_held_subscription(
    outages: list[tuple[float, int]],
) -> None:
    """Each wait is half to all of its delay; delays double to 2 s and restart after 2 s held."""

    async def run() -> None:
        clock = FakeClock()
        flaky = FlakyPubSub(MemoryPubSub(), clock)
        purger = Purger(Store(), flaky, node="p", clock=clock)
        await purger.start()
        delay = 0.05
        try:
            for hold, refused in outages:
                clock.advance(hold)
                if hold >= 2.0:
                    delay = 0.05
                flaky.refuse = refused
                lost = clock.monotonic()
                before = len(flaky.attempts)
                flaky.break_all(ConnectionResetError("gone"))
                await until(lambda: not purger.listening)
                await advance_until(clock, lambda: purger.listening, step=0.01)
                times = [lost, *flaky.attempts[before:]]
                assert len(times) == refused + 2
                for earlier, later in zip(times, times[1:], strict=False):
                    assert delay / 2 - 0.011 <= later - earlier <= delay + 0.011
                    delay = min(delay * 2, 2.0)
        finally:
            await purger.stop()
        assert purger.gaps == len(outages)

    asyncio.run(run())
