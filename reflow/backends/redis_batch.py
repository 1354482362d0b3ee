"""Automatic pipelining: commands issued in one event-loop turn travel together.

A worker that handles many events at once calls ``kv.get`` or ``log.append``
from many tasks; sent one by one, each call costs a network round trip and
a pass through redis-py's connection pool, and the engine would reach a
fraction of what a hand-written pipeline does. The batcher queues every
command issued during one turn of the event loop and, at the end of that
turn, sends them as one pipeline (without MULTI: no atomicity is added or
needed, each command or script is atomic on its own), then hands each caller
its own reply or error. A lone call waits for nothing but the end of the
current turn, so sequential code keeps its latency.

Blocking commands (XREAD BLOCK) never go through the batcher: they would
hold up every command queued behind them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

__all__ = ["Batcher"]

Arg = bytes | str | int | float


@dataclass
class _Call:
    """One queued command, or one script call (sent as EVALSHA)."""

    args: Sequence[Arg]
    future: asyncio.Future[Any]
    script: AsyncScript | None = None
    keys: Sequence[str] = field(default_factory=tuple)


class Batcher:
    """Sends the commands queued during one event-loop turn as one pipeline."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._waiting: list[_Call] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def command(self, *args: Arg) -> Any:
        """Run one command (``"HMGET", key, ...``); return its parsed reply."""
        return await self._queue(_Call(args, self._future()))

    async def script(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run a registered Lua script by its SHA; return its reply."""
        call = _Call(args, self._future(), script, keys)
        try:
            return await self._queue(call)
        except NoScriptError:
            # The server lost its script cache (a restart, SCRIPT FLUSH): the
            # direct call loads the script and runs it.
            return await script(keys=keys, args=args)

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _queue(self, call: _Call) -> Any:
        if not self._waiting:
            asyncio.get_running_loop().call_soon(self._flush)
        self._waiting.append(call)
        return await call.future

    def _flush(self) -> None:
        batch = [call for call in self._waiting if not call.future.cancelled()]
        self._waiting = []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for call in batch:
                    if call.script is None:
                        pipe.execute_command(*call.args)
                    else:
                        pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
                replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for call in batch:
                call.future.cancel()
            raise
        except Exception as exc:  # the connection failed: every caller hears of it
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        for call, reply in zip(batch, replies, strict=True):
            if call.future.done():
                continue
            if isinstance(reply, Exception):
                call.future.set_exception(reply)
            else:
                call.future.set_result(reply)

    async def close(self) -> None:
        """Wait for the pipelines in flight."""
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
