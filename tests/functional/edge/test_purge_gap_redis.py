"""Against the real Redis: the edge's pub/sub connection is killed from outside.

The test finds the address of the edge's own subscription connection and
kills only that one (``CLIENT KILL ADDR <it> TYPE pubsub``: other tests share
the server). A purge published right after the kill is lost — redis-py
reconnects and subscribes again by itself, so without the backend ending the
subscription the edge would never know. The edge must resubscribe, mark its
store stale, and so never serve the purged body as a fresh hit.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from reflow.backends import open_backend
from reflow.edge.fleet import PurgePublisher, live_edges
from reflow.edge.service import EdgeService
from tests.conftest import REDIS_URL, require_server
from tests.functional.edge.conftest import settle
from tests.functional.edge.test_purge_gap import gap_app
from tests.functional.edge.test_runtime_hooks import get

pytestmark = pytest.mark.redis


def subscription_address(service: EdgeService) -> str:
    """``host:port`` of the edge's purge subscription connection, as Redis lists the client."""
    subscription: Any = service.purger._subscription
    assert subscription is not None
    host, port = subscription._connection.connection._writer.get_extra_info("sockname")[:2]
    return f"{host}:{port}"


async def pubsub_clients(admin: aioredis.Redis) -> set[str]:
    return {c["addr"] for c in await admin.client_list(_type="pubsub")}


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.01)


async def test_an_edge_whose_redis_subscription_is_killed_resubscribes_and_serves_no_stale_hit(
    tmp_path: Path,
) -> None:
    require_server(REDIS_URL, "the Redis server")
    separator = "&" if "?" in REDIS_URL else "?"
    url = f"{REDIS_URL}{separator}prefix=test-gap-{uuid.uuid4().hex[:12]}:"
    backend = await open_backend(url, data_dir=tmp_path / "edge")
    other = await open_backend(url, data_dir=tmp_path / "other")  # another process's connections
    admin = aioredis.Redis.from_url(REDIS_URL)  # only for CLIENT LIST / CLIENT KILL
    await backend.blobs.put(
        "pages/a.html", b"old", content_type="text/html", metadata={"surrogate-key": "a"}
    )
    service = EdgeService(gap_app(), backend, port=0, purge_timeout=0.5)
    # A wide first back-off (150-300 ms) so the purge below surely lands in the gap.
    service.purger.retry_first = 0.3
    publisher = PurgePublisher(other.pubsub, other.kv, timeout=0.5)
    await service.start()
    try:
        await get(service.port, "/a.html")
        assert (await get(service.port, "/a.html"))[1]["x-cache"] == "Hit"
        address = subscription_address(service)
        assert address in await pubsub_clients(admin)
        await backend.blobs.put(
            "pages/a.html", b"new", content_type="text/html", metadata={"surrogate-key": "a"}
        )

        killed = await admin.client_kill_filter(_type="pubsub", addr=address)  # this one only
        assert killed == 1
        result = await publisher.purge(keys=["a"])  # in the gap: the edge cannot answer
        assert result.missing == (service.id,)

        async def back() -> bool:
            return service.purger.gaps == 1 and service.purger.listening

        await wait_for(back)
        assert service.purger.relayed == 0  # the purge itself was lost with the connection
        assert subscription_address(service) != address
        assert subscription_address(service) in await pubsub_clients(admin)

        async def listed_listening() -> bool:
            return [m.listening for m in await live_edges(other.kv)] == [True]

        await wait_for(listed_listening)
        _, headers, body = await get(service.port, "/a.html")
        assert headers["x-cache"] != "Hit"
        assert (body, headers["x-cache"]) == (b"old", "Stale")  # served while one refresh runs
        assert service.edge is not None
        edge = service.edge
        await settle(lambda: not edge._refreshing)
        _, headers, body = await get(service.port, "/a.html")
        assert (body, headers["x-cache"]) == (b"new", "Hit")
        assert service.metrics()["purge_feed_gaps"] == 1

        # Subscribed again for real: the next purge is heard and answered.
        result = await publisher.purge(keys=["a"])
        assert result.complete and dict(result.edges) == {service.id: 1}
        assert service.purger.relayed == 1
    finally:
        await publisher.fanout.close()
        await service.stop()
        await admin.aclose()
        await backend.close()
        await other.close()
