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
import logging
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reflow.edge")
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
        [lost] = [r.message for r in caplog.records if r.levelno == logging.WARNING]
        assert "RedisError: the pub/sub connection was lost" in lost
        [reopened] = [r.message for r in caplog.records if r.levelno == logging.INFO]
        assert (
            "reopened its purge subscription" in reopened and "marked 1 stored object " in reopened
        )
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


class OutageProxy:
    """A TCP proxy to Redis that the test can take down: cut every connection, refuse new ones.

    Only this test's backend connects through it, so the outage touches no other client.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.down = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        """Take the server away: close every proxied connection; refuse new ones."""
        self.down = True
        for writer in list(self._writers):
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(sink)
            sink.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_an_edge_rides_out_a_redis_outage_and_marks_its_store_stale_after_it(
    tmp_path: Path,
) -> None:
    require_server(REDIS_URL, "the Redis server")
    parts = urlsplit(REDIS_URL)
    proxy = OutageProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await proxy.start()
    prefix = f"test-gap-{uuid.uuid4().hex[:12]}:"
    db = parts.path.lstrip("/") or "0"
    backend = await open_backend(
        f"redis://127.0.0.1:{proxy.port}/{db}?prefix={prefix}", data_dir=tmp_path / "edge"
    )
    separator = "&" if "?" in REDIS_URL else "?"
    other = await open_backend(f"{REDIS_URL}{separator}prefix={prefix}", data_dir=tmp_path / "o")
    await backend.blobs.put(
        "pages/a.html", b"old", content_type="text/html", metadata={"surrogate-key": "a"}
    )
    service = EdgeService(gap_app(), backend, port=0, purge_timeout=0.5)
    publisher = PurgePublisher(other.pubsub, other.kv, timeout=0.5)
    await service.start()
    try:
        await get(service.port, "/a.html")
        assert (await get(service.port, "/a.html"))[1]["x-cache"] == "Hit"
        await backend.blobs.put(
            "pages/a.html", b"new", content_type="text/html", metadata={"surrogate-key": "a"}
        )

        proxy.cut()

        async def deaf() -> bool:
            return not service.purger.listening

        await wait_for(deaf)
        result = await publisher.purge(keys=["a"])  # the edge cannot hear it
        assert result.missing == (service.id,)
        await asyncio.sleep(1.5)  # a real outage: resubscribing fails for a while
        assert not service.purger.listening and service.purger.gaps == 0
        # Meanwhile it serves what it holds, the purged body too: the gap's cost.
        assert (await get(service.port, "/a.html"))[1]["x-cache"] == "Hit"

        proxy.down = False
        restored = asyncio.get_running_loop().time()

        async def back() -> bool:
            return service.purger.gaps == 1 and service.purger.listening

        await wait_for(back, timeout=30)
        print(f"\nresubscribed {asyncio.get_running_loop().time() - restored:.2f} s after Redis")
        _, headers, body = await get(service.port, "/a.html")
        assert (body, headers["x-cache"]) == (b"old", "Stale")
        assert service.edge is not None
        edge = service.edge
        await settle(lambda: not edge._refreshing)
        _, headers, body = await get(service.port, "/a.html")
        assert (body, headers["x-cache"]) == (b"new", "Hit")

        async def listed_listening() -> bool:
            # Listening, in a write made after the outage: the one from before it
            # says listening too, but is stale by now, and no purge waits for that.
            now = time.time()
            members = await live_edges(other.kv)
            return [m.listening and not m.stale(now) for m in members] == [True]

        await wait_for(listed_listening)
        result = await publisher.purge(keys=["a"])
        assert result.complete and dict(result.edges) == {service.id: 1}
    finally:
        await publisher.fanout.close()
        await service.stop()
        await backend.close()
        await other.close()
        await proxy.close()
