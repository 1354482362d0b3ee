"""A loop of Redis calls ends when its task is cancelled, whatever the call.

redis-py 8 writes each command under ``asyncio.wait_for`` when it has a socket
timeout (its default is 5 s), and on Python 3.11 ``wait_for`` returns
normally when the write completes as the caller is cancelled. The Redis
engine's client (``CancelSafeRedis``) runs without that socket timeout (its
own deadline replaces it), and still raises a lost cancellation after the
reply, for direct commands and pipelines alike: the last test gives a client
redis-py's socket timeout back, where the loss happens (1, 3 and 4 turns of
4 measured), so the wrapper keeps its meaning. Batched calls (``kv.get``)
wait on a future, which keeps cancellations by itself: checked here too, so
a change to the batcher that loses them fails.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from reflow.backends import Backend, open_backend
from reflow.testing.clock import FakeClock
from tests.conftest import REDIS_URL, require_server


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    require_server(REDIS_URL, "the Redis server")
    separator = "&" if "?" in REDIS_URL else "?"
    url = f"{REDIS_URL}{separator}prefix=test-{uuid.uuid4().hex[:12]}:"
    opened = await open_backend(url, data_dir=tmp_path, clock=FakeClock())
    try:
        yield opened
    finally:
        await opened.close()


def _spy(owner: Any, name: str, started: asyncio.Event) -> None:
    """Make ``owner.name(...)`` set ``started`` each time it is called."""
    real = getattr(owner, name)

    def called(*args: Any, **kwargs: Any) -> Any:
        started.set()
        return real(*args, **kwargs)

    setattr(owner, name, called)


async def _cancel_after(
    body: Callable[[], Awaitable[object]], started: asyncio.Event, turns: int
) -> asyncio.Task[None]:
    """Loop ``body`` in a task; cancel it ``turns`` loop turns after a call starts.

    Without the fix, 2 and 3 turns lose the cancellation (redis-py 8.2, the
    connection pooled): the write completes in between."""

    async def loop() -> None:
        while True:  # only a cancellation ends it
            await body()

    task = asyncio.create_task(loop())
    # Let a few calls go by first, so the pool has a connection ready, as in a
    # long-lived service loop.
    for _ in range(3):
        started.clear()
        await asyncio.wait_for(started.wait(), timeout=3)
    started.clear()
    await asyncio.wait_for(started.wait(), timeout=3)
    for _ in range(turns):  # the command's write completes meanwhile
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait({task}, timeout=3)
    return task


async def _outcome(task: asyncio.Task[None]) -> bool:
    """Whether ``task`` ended cancelled; if it went on, stop it anyway."""
    ended = task.cancelled()
    for _ in range(50):  # never leave it polling the server
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    return ended


@pytest.mark.parametrize("turns", [1, 2, 3, 4])
async def test_a_loop_of_direct_commands_ends_cancelled(backend: Backend, turns: int) -> None:
    log: Any = backend.log
    started = asyncio.Event()
    _spy(log._client, "execute_command", started)
    task = await _cancel_after(lambda: log.length("s"), started, turns)  # XLEN
    assert await _outcome(task)


@pytest.mark.parametrize("turns", [1, 2, 3, 4])
async def test_a_loop_of_pipelines_ends_cancelled(backend: Backend, turns: int) -> None:
    kv: Any = backend.kv
    await kv.put("a", b"1")
    started = asyncio.Event()
    _spy(kv._client, "pipeline", started)
    task = await _cancel_after(lambda: kv.get_many(["a", "b"]), started, turns)
    assert await _outcome(task)


@pytest.mark.parametrize("turns", [1, 2, 3, 4])
async def test_a_loop_of_batched_gets_ends_cancelled(backend: Backend, turns: int) -> None:
    kv: Any = backend.kv
    started = asyncio.Event()
    _spy(kv._batch, "command", started)
    task = await _cancel_after(lambda: kv.get("a"), started, turns)
    assert await _outcome(task)


async def test_a_reply_read_after_a_lost_cancellation_leaves_the_connection_clean(
    backend: Backend,
) -> None:
    # The cancellation is raised after the reply is read, so the next command
    # on the pooled connection reads its own reply, not the cancelled one's.
    kv: Any = backend.kv
    await kv.put("k", b"v")
    for turns in range(4):
        started = asyncio.Event()
        _spy(kv._client, "pipeline", started)
        task = await _cancel_after(lambda: kv.get_many(["k"]), started, turns)
        await _outcome(task)
        del kv._client.pipeline  # the spy, back to the class's method
        item = await kv.get("k")
        assert item is not None and item.value == b"v"
        assert await backend.log.length("none") == 0


async def test_the_state_helpers_own_clients_keep_cancellations_too(backend: Backend) -> None:
    # Counters and RateLimiter open a client of their own for their scripts.
    from reflow.backends.redis_client import CancelSafeRedis
    from reflow.state.counters import Counters
    from reflow.state.limits import RateLimiter

    counters = Counters.for_backend(backend)
    limiter = RateLimiter.for_backend(backend)
    try:
        assert isinstance(counters._redis, CancelSafeRedis)
        assert isinstance(limiter._redis, CancelSafeRedis)
    finally:
        await counters.close()
        await limiter.close()


async def test_a_timeout_around_a_loop_of_commands_ends_it(backend: Backend) -> None:
    # asyncio.timeout cancels the task and turns the CancelledError into
    # TimeoutError; a lost cancellation would leave the loop running.
    log: Any = backend.log

    async def timed_loop() -> None:
        for deadline in (0.001, 0.002, 0.003, 0.005, 0.008) * 4:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(deadline):
                    while True:  # only the timeout ends it
                        await log.length("s")

    runner = asyncio.create_task(timed_loop())
    done, _ = await asyncio.wait({runner}, timeout=5)
    if not done:  # it went on: stop it anyway
        runner.cancel()
        await asyncio.wait({runner}, timeout=3)
    assert runner in done
    runner.result()


@pytest.mark.parametrize("turns", [1, 2, 3])
async def test_a_blocking_log_read_cancelled_as_its_xread_is_sent_ends_cancelled(
    backend: Backend, turns: int
) -> None:
    """RedisLog.read polls for ever on a clock that never moves: the hang CI met."""
    log: Any = backend.log
    await log.create_group("s", "g")
    started = asyncio.Event()
    _spy(log._client, "xread", started)
    reader = asyncio.create_task(log.read("s", "g", "c", block=5.0))
    await started.wait()
    for _ in range(turns):  # the command's write completes meanwhile
        await asyncio.sleep(0)
    reader.cancel()
    done, _ = await asyncio.wait({reader}, timeout=3)
    for _ in range(50):  # if it went on, stop it anyway: never leave it polling
        if reader.done():
            break
        reader.cancel()
        await asyncio.wait({reader}, timeout=0.1)
    assert reader in done and reader.cancelled()


@pytest.mark.parametrize("turns", [1, 2, 3, 4])
async def test_a_client_given_redis_pys_socket_timeout_still_keeps_cancellations(
    turns: int,
) -> None:
    # The engine's client runs without redis-py's socket timeout, so no
    # wait_for is left to lose a cancellation; one given a socket timeout
    # writes under wait_for again, and keeping_cancellation must cover it.
    require_server(REDIS_URL, "the Redis server")
    from urllib.parse import urlsplit

    from reflow.backends.redis_client import CancelSafeRedis

    server = urlsplit(REDIS_URL)
    client = CancelSafeRedis(host=server.hostname, port=server.port or 6379, socket_timeout=5.0)
    try:
        started = asyncio.Event()
        _spy(client, "execute_command", started)
        task = await _cancel_after(lambda: client.xlen("none"), started, turns)
        assert await _outcome(task)
    finally:
        await client.aclose()
