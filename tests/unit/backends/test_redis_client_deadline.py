"""CancelSafeRedis's own deadline, which replaces redis-py's socket timeout.

The engine's client runs without redis-py's per-command ``wait_for`` (it cost
a task per write and a timeout per reply); a command or pipeline that gets no
reply still fails, with redis-py's ``TimeoutError``, once its deadline
(``command_timeout``) has passed, and a blocking XREAD gets its block time on
top of it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from reflow.backends.redis_client import CancelSafeRedis
from tests.conftest import REDIS_URL, require_server


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port where a server accepts connections and reads, but never answers."""
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("kind", ["command", "pipeline"])
async def test_a_call_to_a_server_that_never_answers_fails_after_its_deadline(
    silent_port: int, kind: str
) -> None:
    client = CancelSafeRedis(host="127.0.0.1", port=silent_port, command_timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            if kind == "command":
                await client.get("k")
            else:
                pipe = client.pipeline(transaction=False)
                pipe.get("k")
                await pipe.execute()
        assert time.monotonic() - started < 3  # the deadline plus at most a tick
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # the deadline's cancel is undone
        await asyncio.sleep(0)  # and no cancellation is left to fall on the caller
    finally:
        await client.aclose()


async def test_a_blocking_xread_may_wait_its_block_time_beyond_the_deadline() -> None:
    require_server(REDIS_URL, "the Redis server")
    server = urlsplit(REDIS_URL)
    client = CancelSafeRedis(host=server.hostname, port=server.port or 6379, command_timeout=0.2)
    key = f"test-{uuid.uuid4().hex[:12]}:empty"
    try:
        started = time.monotonic()
        assert not await client.xread({key: "$"}, count=1, block=1500)
        assert time.monotonic() - started >= 1.4
        assert await client.ping()  # the connection was not closed under it
    finally:
        await client.aclose()
