"""Automatic pipelining: concurrent commands share round trips, yet each caller
gets exactly its own reply or error."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from reflow.backends.redis_batch import Batcher
from tests.conftest import REDIS_URL, require_server


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    require_server(REDIS_URL, "the Redis server")
    name = f"test-batch-{uuid.uuid4().hex[:12]}"
    opened = aioredis.Redis.from_url(REDIS_URL, client_name=name)
    try:
        yield opened
    finally:
        stale = [k async for k in opened.scan_iter(match=f"{name}:*", count=1000)]
        if stale:
            await opened.unlink(*stale)
        await opened.aclose()


def _prefix(client: aioredis.Redis) -> str:
    """The client's connection name, which also prefixes the test's keys."""
    return f"{client.connection_pool.connection_kwargs['client_name']}:"


async def _connections_named(client: aioredis.Redis, name: str) -> int:
    listed = await client.client_list()
    return sum(1 for c in listed if c.get("name") == name)


async def test_concurrent_commands_travel_on_one_connection(client: aioredis.Redis) -> None:
    batcher = Batcher(client)
    prefix = _prefix(client)
    keys = [f"{prefix}k{i}" for i in range(200)]
    await asyncio.gather(*(batcher.command("SET", k, k) for k in keys))
    values = await asyncio.gather(*(batcher.command("GET", k) for k in keys))
    assert values == [k.encode() for k in keys]
    # Sent one by one, 200 concurrent commands would open about 200 connections.
    name = prefix.removesuffix(":")
    assert await _connections_named(client, name) <= 3
    await batcher.close()


async def test_an_error_reaches_only_the_command_that_caused_it(client: aioredis.Redis) -> None:
    batcher = Batcher(client)
    prefix = _prefix(client)
    await client.set(f"{prefix}text", "not a number")
    results = await asyncio.gather(
        batcher.command("INCR", f"{prefix}n"),
        batcher.command("INCR", f"{prefix}text"),
        batcher.command("INCR", f"{prefix}n"),
        return_exceptions=True,
    )
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], ResponseError)
    await batcher.close()


async def test_a_cancelled_caller_leaves_the_others_their_replies(client: aioredis.Redis) -> None:
    batcher = Batcher(client)
    prefix = _prefix(client)
    doomed = asyncio.create_task(batcher.command("SET", f"{prefix}a", "1"))
    kept = asyncio.create_task(batcher.command("SET", f"{prefix}b", "2"))
    await asyncio.sleep(0)
    doomed.cancel()
    assert await kept is True
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert await client.get(f"{prefix}b") == b"2"
    await batcher.close()


async def test_a_script_the_server_has_not_seen_is_loaded_and_run(client: aioredis.Redis) -> None:
    batcher = Batcher(client)
    # A script text no server has cached: its first EVALSHA answers NOSCRIPT.
    script = client.register_script(f"-- {uuid.uuid4()}\nreturn ARGV[1] .. KEYS[1]")
    assert await client.script_exists(script.sha) == [False]
    replies = await asyncio.gather(
        *(batcher.script(script, [f"k{i}"], ["v"]) for i in range(5)),
    )
    assert replies == [f"vk{i}".encode() for i in range(5)]
    await batcher.close()


async def test_a_failed_connection_fails_every_queued_caller() -> None:
    dead = aioredis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    batcher = Batcher(dead)
    results = await asyncio.gather(
        batcher.command("GET", "a"), batcher.command("GET", "b"), return_exceptions=True
    )
    assert all(isinstance(r, (RedisConnectionError, OSError)) for r in results), results
    await batcher.close()
    await dead.aclose()
