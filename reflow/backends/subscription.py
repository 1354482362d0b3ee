"""The queue-fed subscription the in-process PubSub engines share.

A publisher puts each message on every subscriber's ``asyncio.Queue``; the
subscriber reads it by iterating or with ``get(timeout)``. ``None`` on the
queue marks the end, so iteration stops after what was already queued.
Engines subclass :class:`QueuedSubscription` and say how to detach from
their hub.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Self

from reflow.backends.protocols import Message

__all__ = ["QueuedSubscription"]


class QueuedSubscription:
    """An open subscription; iterate it, or ``get`` with a timeout."""

    def __init__(self, channels: tuple[str, ...]) -> None:
        self.channels = channels
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self.closed = False

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            message = await self.queue.get()
            if message is None:
                return
            yield message

    async def get(self, timeout: float | None = None) -> Message | None:
        """The next message, or None after ``timeout`` seconds or once closed."""
        if self.closed and self.queue.empty():
            return None
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a
            # cancellation and drop the message it was about to return.
            async with asyncio.timeout(timeout):
                return await self.queue.get()
        except TimeoutError:
            return None

    async def close(self) -> None:
        """Stop receiving; iteration ends after what was already queued."""
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)
            await self._detach()

    async def _detach(self) -> None:
        """Leave the hub so publishers stop queueing for us (engine-specific)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
