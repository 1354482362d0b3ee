"""Purge fan-out between two edges that share only a Redis backend (two connections)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from reflow.backends import open_backend
from reflow.edge.metrics import Metrics, prometheus_text
from reflow.edge.purge import PurgePlan, Purger
from reflow.edge.store import Store
from tests.conftest import REDIS_URL, require_server
from tests.unit.edge.exposition import parse
from tests.unit.edge.test_store import entry

pytestmark = pytest.mark.redis


async def test_a_purge_on_one_edge_reaches_another_through_redis_pubsub() -> None:
    require_server(REDIS_URL, "the Redis server")
    separator = "&" if "?" in REDIS_URL else "?"
    url = f"{REDIS_URL}{separator}prefix=test-edge-{uuid.uuid4().hex[:12]}:"
    first, second = await open_backend(url), await open_backend(url)
    stores = [Store(), Store()]
    purgers = [Purger(stores[0], first.pubsub), Purger(stores[1], second.pubsub)]
    try:
        for purger in purgers:
            await purger.start()
        for store in stores:
            store.put(entry("/news/1", tags=("news",)))
            store.put(entry("/sport/1", tags=("sport",)))
        assert await purgers[0].purge(PurgePlan.of(["news"])) == 1
        async with asyncio.timeout(5):
            while stores[1].get("/news/1", []) is not None:
                await asyncio.sleep(0.01)
        assert stores[1].get("/sport/1", []) is not None
        assert purgers[1].purged == 1 and purgers[0].purged == 1  # not applied twice
        # Counted where it came from: relayed on the second edge, not on the first.
        assert (purgers[1].relayed, purgers[0].relayed) == (1, 0)
        families = parse(prometheus_text(Metrics(), purger=purgers[1]))
        assert families["reflow_edge_purges_total"].value(source="relayed") == 1
    finally:
        for purger in purgers:
            await purger.stop()
        await first.close()
        await second.close()
