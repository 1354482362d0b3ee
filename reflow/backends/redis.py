"""The scaled-out engine: every primitive on one shared Redis server.

Point every process at the same ``REFLOW_BACKEND=redis://HOST:PORT/DB`` and
they share one Log (Streams, ``redis_log.py``), one KV (hashes + Lua,
``redis_kv.py``) and one PubSub (Redis pub/sub, below). Blobs live on a
directory every process can reach (``?blobs=/shared/path``, default
``<data dir>/blobs``), through the files engine.

URL options:

* ``prefix`` — put before every key and channel, so several deployments or
  test runs share a server in isolation (``redis://h:6379/0?prefix=site-a:``).
* ``blobs`` — the shared directory for Blobs.

Clocks: leases, pending idle times and TTLs run on the injected clock, like
every timer in reflow (so processes sharing a server keep their clocks in
sync); stream ids, and so trimming by age, carry the Redis server's clock.

The engine needs a standalone server (or a single primary): some scripts
name keys they compute from the prefix, which Redis Cluster would refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub as RedisPubSubConnection
from redis.exceptions import RedisError

from reflow.backends import Backend
from reflow.backends.protocols import Blobs, Message
from reflow.backends.redis_batch import Batcher
from reflow.backends.redis_client import CONNECT_TIMEOUT, CancelSafeRedis, keeping_cancellation
from reflow.backends.redis_keys import Namespace
from reflow.backends.redis_kv import RedisKV
from reflow.backends.redis_log import RedisLog
from reflow.clock import Clock
from reflow.config import BackendURL
from reflow.errors import BackendUnavailableError

__all__ = ["RedisPubSub", "RedisSubscription", "open_redis"]

_CLOSED = None  # what the pump puts in the queue when the subscription ends


class RedisSubscription:
    """An open Redis subscription; iterate it, or ``get`` one message at a time.

    A background task (the pump) reads the subscription's connection and
    queues messages, so ``close`` may be called from any task, even while
    another one is waiting for a message: waiting stops and iteration ends.
    """

    def __init__(
        self, connection: RedisPubSubConnection, namespace: Namespace, owner: RedisPubSub
    ) -> None:
        self._connection = connection
        self._ns = namespace
        self._owner = owner
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._closed = False  # no message will arrive any more
        self._released = False  # the connection went back to the pool
        self.error: BaseException | None = None  # why it ended, when its connection failed

    async def _start(self, channels: list[str]) -> None:
        # Pub/sub commands bypass the client's execute_command: keep cancellations here.
        await keeping_cancellation(self._connection.subscribe(*channels))
        # Wait for the server to confirm every channel: only then is it
        # certain that a message published after subscribe() returns arrives.
        waiting = len(set(channels))
        while waiting:
            raw = await self._connection.get_message(timeout=CONNECT_TIMEOUT)
            if raw is None:
                raise BackendUnavailableError(self._owner.url, "no confirmation of SUBSCRIBE")
            if raw["type"] == "subscribe":
                waiting -= 1
            else:
                self._enqueue(raw)
        # redis-py reconnects a lost pub/sub connection and subscribes again on its
        # own, so what was published in between vanishes without a trace. A
        # subscriber must learn that it may have missed messages: a reconnection
        # ends this subscription instead (the subscriber subscribes again).
        connection: Any = self._connection.connection  # set by subscribe (typed as None)
        connection.register_connect_callback(self._reconnected)
        self._pump = asyncio.create_task(self._run_pump(), name="reflow-redis-pubsub")

    def _reconnected(self, _connection: object) -> None:
        if self._released:
            return  # the connection went back to the pool: no longer ours
        # Not a ConnectionError: redis-py would retry that, reconnecting again.
        raise RedisError("the pub/sub connection was lost; messages may have been missed")

    def _enqueue(self, raw: dict[str, Any]) -> None:
        if raw.get("type") == "message":
            channel = self._ns.channel_name(raw["channel"])
            self._queue.put_nowait(Message(channel, bytes(raw["data"])))

    async def _run_pump(self) -> None:
        try:
            while True:
                raw = await keeping_cancellation(
                    self._connection.get_message(ignore_subscribe_messages=True, timeout=None)
                )
                if raw is not None:
                    self._enqueue(raw)
        except (RedisError, OSError) as exc:
            self.error = exc  # the connection went away: the subscription simply ends
        finally:
            self._queue.put_nowait(_CLOSED)

    def __aiter__(self) -> RedisSubscription:
        return self

    async def __anext__(self) -> Message:
        message = await self.get()
        if message is None:
            raise StopAsyncIteration
        return message

    async def get(self, timeout: float | None = None) -> Message | None:
        """The next message, or None after ``timeout`` s or once closed."""
        if self._closed and self._queue.empty():
            return None
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a
            # cancellation and drop the message it was about to return.
            async with asyncio.timeout(timeout):
                message = await self._queue.get()
        except TimeoutError:
            return None
        if message is _CLOSED:
            self._closed = True
            self._queue.put_nowait(_CLOSED)  # every later get() sees the end too
        return message

    async def close(self) -> None:
        """Unsubscribe and release the connection; iteration ends."""
        if self._released:
            return
        self._released = self._closed = True
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        self._queue.put_nowait(_CLOSED)
        connection: Any = self._connection.connection
        if connection is not None:  # the pool reuses it: our callback must not follow
            connection.deregister_connect_callback(self._reconnected)
        await self._connection.aclose()
        self._owner.forget(self)


class RedisPubSub:
    """Fire-and-forget broadcast on Redis pub/sub channels under the prefix."""

    def __init__(self, client: aioredis.Redis, namespace: Namespace, url: str = "redis") -> None:
        self._client = client
        self._ns = namespace
        self.url = url  # as shown in errors: without the password
        self._open: set[RedisSubscription] = set()

    async def publish(self, channel: str, data: bytes) -> int:
        """PUBLISH; return how many subscribers the server delivered it to."""
        return int(await self._client.publish(self._ns.channel(channel), data))

    async def subscribe(self, *channels: str) -> RedisSubscription:
        """Subscribe to ``channels``; returns once the server has confirmed them."""
        if not channels:
            raise ValueError("subscribe needs at least one channel")
        subscription = RedisSubscription(self._client.pubsub(), self._ns, self)
        self._open.add(subscription)
        try:
            await subscription._start([self._ns.channel(c) for c in channels])
        except BaseException:
            await subscription.close()
            raise
        return subscription

    def forget(self, subscription: RedisSubscription) -> None:
        """Stop tracking a closed subscription."""
        self._open.discard(subscription)

    async def close(self) -> None:
        """Close every subscription still open (the backend is closing)."""
        for subscription in list(self._open):
            await subscription.close()
        self._open.clear()


def _shown(url: BackendURL) -> str:
    """The URL as it may appear in messages: without its password."""
    if url.password:
        return url.url.replace(f":{url.password}@", ":***@", 1)
    return url.url


async def open_redis(url: BackendURL, *, data_dir: Path, clock: Clock) -> Backend:
    """Connect to the server a ``redis://`` URL names and bundle the four primitives.

    Raises :class:`BackendUnavailableError` naming the URL (without password)
    when the server cannot be reached within a few seconds.
    """
    # Every command and pipeline keeps its caller's cancellation (redis_client.py).
    client = CancelSafeRedis(
        host=url.host,
        port=url.port,
        db=url.db,
        password=url.password,
        ssl=url.scheme == "rediss",
        socket_connect_timeout=CONNECT_TIMEOUT,
        decode_responses=False,
    )
    try:
        # A bare TCP connect first: redis-py retries a refused connection with
        # back-off, which would turn "nothing listens there" into seconds.
        await _probe(url.host, url.port)
        async with asyncio.timeout(CONNECT_TIMEOUT + 1):
            await client.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        problem = str(exc) or type(exc).__name__
        raise BackendUnavailableError(_shown(url), f"cannot reach the server: {problem}") from None
    namespace = Namespace(url.options.get("prefix", ""))
    pubsub = RedisPubSub(client, namespace, _shown(url))
    blobs_dir = Path(url.options["blobs"]) if url.options.get("blobs") else data_dir / "blobs"
    batcher = Batcher(client)
    log = RedisLog(client, namespace, clock, batcher)
    kv = RedisKV(client, namespace, clock, batcher)
    try:
        # Load the scripts now, so that the first calls run them by SHA at once.
        await asyncio.gather(*(client.script_load(s.script) for s in log.scripts + kv.scripts))
    except RedisError as exc:
        await client.aclose()
        raise BackendUnavailableError(_shown(url), f"cannot load the Lua scripts: {exc}") from None
    backend = Backend(
        url=url,
        log=log,
        kv=kv,
        pubsub=pubsub,
        blobs=_shared_blobs(blobs_dir, clock),
        clock=clock,
    )
    # Closed in reverse: subscriptions, then pipelines in flight, then the pool.
    backend._closers.append(client.aclose)
    backend._closers.append(batcher.close)
    backend._closers.append(pubsub.close)
    return backend


async def _probe(host: str, port: int) -> None:
    """Open and close one TCP connection, within the connect timeout."""
    async with asyncio.timeout(CONNECT_TIMEOUT):
        _, writer = await asyncio.open_connection(host, port)
    writer.close()
    await writer.wait_closed()


def _shared_blobs(root: Path, clock: Clock) -> Blobs:
    """The files engine's Blobs on the shared directory ``root``."""
    from reflow.backends.files import FileBlobs

    return FileBlobs(root, clock)
