"""A redis-py client whose calls never lose their caller's cancellation.

redis-py 8 has a default 5 s socket timeout, so it writes each command under
``asyncio.wait_for``, and Python 3.11's ``wait_for`` returns the inner result
when the write completes as the caller is cancelled: the call returns
normally and the CancelledError is gone (measured: a call cancelled one to
three loop turns after it started, 300 of 300 lost). A loop whose body is a
Redis call then never ends when its task is cancelled, and whoever awaits
the task (a ``stop()``) waits for ever.

The task's ``cancelling()`` count still records the request, so every
command and every pipeline of the Redis engine goes through
:func:`keeping_cancellation`, which raises it once the reply has been read.
Raising only after the reply keeps the connection clean: raising between the
write and the read would hand the pool a connection with a reply in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

__all__ = ["CancelSafePipeline", "CancelSafeRedis", "keeping_cancellation"]

T = TypeVar("T")


async def keeping_cancellation(call: Awaitable[T]) -> T:
    """Await a redis-py call; raise the cancellation it may have lost."""
    task = asyncio.current_task()
    requested = task.cancelling() if task is not None else 0
    result = await call
    if task is not None and task.cancelling() > requested:
        raise asyncio.CancelledError
    return result


class CancelSafePipeline(Pipeline):
    """A pipeline whose ``execute`` keeps the caller's cancellation."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands; raise a cancellation the write swallowed."""
        return await keeping_cancellation(super().execute(raise_on_error))


class CancelSafeRedis(aioredis.Redis):
    """``redis.asyncio.Redis`` whose commands and pipelines keep cancellations.

    Every command method (and so every registered Lua script) goes through
    ``execute_command``; pipelines come from :meth:`pipeline`. Pub/sub
    commands bypass both: the subscription in reflow.backends.redis wraps
    them in :func:`keeping_cancellation` itself.
    """

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command; raise a cancellation the write swallowed."""
        return await keeping_cancellation(super().execute_command(*args, **options))  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        """A :class:`CancelSafePipeline` on this client's pool."""
        return CancelSafePipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
