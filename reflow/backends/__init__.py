"""The storage seams: four primitives and the engines behind them.

:func:`open_backend` turns a ``REFLOW_BACKEND`` URL into a :class:`Backend`,
the bundle of one ``Log``, ``KV``, ``PubSub`` and ``Blobs`` that every
subsystem is handed. Nothing above this package knows which engine it got.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from reflow.backends.memory import MemoryBlobs, MemoryKV, MemoryLog, MemoryPubSub
from reflow.backends.protocols import (
    KV,
    Blob,
    BlobInfo,
    Blobs,
    Check,
    Delete,
    Item,
    Log,
    LogEntry,
    Message,
    Operation,
    PendingEntry,
    PubSub,
    Put,
    Subscription,
    entry_id_key,
)
from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.config import DEFAULT_DATA_DIR, BackendURL, parse_backend_url

__all__ = [
    "KV",
    "Backend",
    "Blob",
    "BlobInfo",
    "Blobs",
    "Check",
    "Delete",
    "Item",
    "Log",
    "LogEntry",
    "Message",
    "Operation",
    "PendingEntry",
    "PubSub",
    "Put",
    "Subscription",
    "entry_id_key",
    "memory_backend",
    "open_backend",
]


@dataclass
class Backend:
    """One engine's four primitives, and how to close them."""

    url: BackendURL
    log: Log
    kv: KV
    pubsub: PubSub
    blobs: Blobs
    clock: Clock = SYSTEM_CLOCK
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list, repr=False)

    @property
    def kind(self) -> str:
        """``"memory"``, ``"sqlite"`` or ``"redis"``."""
        return self.url.kind

    async def close(self) -> None:
        """Release connections and files; the primitives are unusable afterwards."""
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            await close()

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def memory_backend(clock: Clock = SYSTEM_CLOCK) -> Backend:
    """A fresh in-process backend (unit tests only: nothing survives the process)."""
    return Backend(
        url=parse_backend_url("memory://"),
        log=MemoryLog(clock),
        kv=MemoryKV(clock),
        pubsub=MemoryPubSub(),
        blobs=MemoryBlobs(clock),
        clock=clock,
    )


async def open_backend(
    url: str | BackendURL,
    *,
    data_dir: Path = DEFAULT_DATA_DIR,
    clock: Clock = SYSTEM_CLOCK,
) -> Backend:
    """Open the backend a URL names: ``memory://``, ``sqlite:///PATH`` or ``redis://…``."""
    parsed = url if isinstance(url, BackendURL) else parse_backend_url(url, data_dir=data_dir)
    if parsed.kind == "memory":
        return memory_backend(clock)
    # The engines are imported only when asked for: an embedded app never
    # loads redis-py, and a Redis deployment never opens SQLite.
    if parsed.kind == "sqlite":
        from reflow.backends.sqlite import open_sqlite

        return await open_sqlite(parsed, data_dir=data_dir, clock=clock)
    from reflow.backends.redis import open_redis

    return await open_redis(parsed, data_dir=data_dir, clock=clock)
