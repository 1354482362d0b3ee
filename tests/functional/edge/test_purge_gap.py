"""A purge missed while the edge's subscription was down is never followed by a fresh old body.

Over HTTP: the edge serves an object, its subscription fails, a purge of the
object is published during the gap (and missed), and once the subscription
is back the old body comes at most once, as ``X-Cache: Stale`` while the
refresh runs — never as a fresh ``Hit``. The memory backend's PubSub is
wrapped so the test can break it (tests/unit/edge/test_purge_gap.py).
"""

from __future__ import annotations

import asyncio

from reflow import App
from reflow.backends import memory_backend
from reflow.backends.memory import MemoryPubSub
from reflow.edge.fleet import PurgePublisher, live_edges
from reflow.edge.purge import PurgePlan, Purger
from reflow.edge.service import EdgeService
from reflow.edge.store import Store
from reflow.testing import FakeClock
from tests.functional.edge.conftest import Harness, settle
from tests.functional.edge.test_runtime_hooks import get
from tests.unit.edge.exposition import parse
from tests.unit.edge.test_purge_gap import FlakyPubSub, advance_until, until


async def test_a_purge_missed_in_the_gap_is_never_served_as_a_fresh_hit(harness: Harness) -> None:
    harness.origin.serve("/a", b"old", [("Cache-Control", "max-age=600"), ("Surrogate-Key", "a")])
    client = await harness.connect()
    assert (await client.get("/a")).headers["x-cache"] == "Miss"
    assert (await client.get("/a")).headers["x-cache"] == "Hit"
    hub = MemoryPubSub()
    flaky = FlakyPubSub(hub, harness.clock)
    purger = Purger(harness.edge.store, flaky, node="edge", clock=harness.clock)
    purger.metrics = harness.edge.metrics
    sender = Purger(Store(), hub, node="sender")
    await purger.start()
    try:
        flaky.refuse = 3  # the backend stays away for a few attempts
        flaky.break_all(ConnectionResetError("connection reset by peer"))
        await until(lambda: not purger.listening)
        await until(lambda: not hub._subscribers.get("reflow.edge.purge"))
        harness.origin.serve(
            "/a", b"new", [("Cache-Control", "max-age=600"), ("Surrogate-Key", "a")]
        )
        await sender.purge(PurgePlan.of(["a"]))  # published in the gap: missed
        during = await client.get("/a")
        assert (during.body, during.headers["x-cache"]) == (b"old", "Hit")  # why gaps matter
        await advance_until(harness.clock, lambda: purger.listening)
        assert purger.relayed == 0  # the purge itself never arrived
        harness.origin.delay = 0.05  # the refresh is still running when the next request comes
        after = await client.get("/a")
        assert after.headers["x-cache"] != "Hit"
        assert (after.body, after.headers["x-cache"]) == (b"old", "Stale")
        await settle(lambda: not harness.edge._refreshing)
        fresh = await client.get("/a")
        assert (fresh.body, fresh.headers["x-cache"]) == (b"new", "Hit")
        assert harness.edge.metrics.purge_feed_gaps == 1
        assert harness.edge.metrics.purge_gap_objects == 1
    finally:
        await purger.stop()


def gap_app() -> App:
    app = App("gap")
    app.bucket("pages")
    app.edge_origin("*", "bucket:pages", default_ttl=600)
    return app


async def test_an_edge_without_its_subscription_is_named_missing_at_once_then_catches_up() -> None:
    clock = FakeClock()
    backend = memory_backend(clock)
    hub = backend.pubsub
    assert isinstance(hub, MemoryPubSub)
    flaky = FlakyPubSub(hub, clock)
    backend.pubsub = flaky  # the edge's view of the backend: one it can lose
    await backend.blobs.put(
        "pages/a.html", b"old", content_type="text/html", metadata={"surrogate-key": "a"}
    )
    service = EdgeService(gap_app(), backend, port=0, clock=clock, purge_timeout=1.0)
    publisher = PurgePublisher(hub, backend.kv, clock=clock, timeout=1.0)
    await service.start()
    try:
        await get(service.port, "/a.html")
        assert (await get(service.port, "/a.html"))[1]["x-cache"] == "Hit"
        [member] = await live_edges(backend.kv)
        assert member.id == service.id and member.listening

        flaky.refuse = 2
        flaky.break_all(ConnectionResetError("reset"))
        async with asyncio.timeout(5):
            while (await live_edges(backend.kv))[0].listening:
                await asyncio.sleep(0)
        # Still a member (it serves), but deaf: a purge does not wait for it.
        await backend.blobs.put(
            "pages/a.html", b"new", content_type="text/html", metadata={"surrogate-key": "a"}
        )
        async with asyncio.timeout(2):  # real seconds; the fake clock stands still
            result = await publisher.purge(keys=["a"])
        assert result.missing == (service.id,) and int(result) == 0

        await advance_until(clock, lambda: service.purger.listening)
        async with asyncio.timeout(5):
            while not (await live_edges(backend.kv))[0].listening:
                await asyncio.sleep(0)
        _, headers, body = await get(service.port, "/a.html")
        assert (body, headers["x-cache"]) == (b"old", "Stale")  # marked stale, not a Hit
        assert service.edge is not None
        edge = service.edge
        await settle(lambda: not edge._refreshing)
        _, headers, body = await get(service.port, "/a.html")
        assert (body, headers["x-cache"]) == (b"new", "Hit")
        figures = service.metrics()
        assert (figures["purge_feed_gaps"], figures["purge_gap_objects"]) == (1, 1)
        families = parse(service.prometheus())
        assert families["reflow_edge_purge_feed_gaps_total"].value() == 1
        # Listening again: the next purge waits for its answer and gets it.
        async with asyncio.timeout(2):
            result = await publisher.purge(keys=["a"])
        assert result.complete and dict(result.edges) == {service.id: 1}
    finally:
        await publisher.fanout.close()
        await service.stop()
        await backend.close()
