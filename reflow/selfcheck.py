"""A quick self-test of a backend's four primitives, with latencies.

``reflow backend check`` runs it against the configured backend: every
primitive does a small round of real work under a unique prefix, the results
are verified, and everything written is removed again. It proves the backend
is reachable, writable and behaving, and shows what each operation costs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from reflow.backends import Backend

__all__ = ["CheckResult", "run_self_check"]


@dataclass(frozen=True)
class CheckResult:
    """One checked operation: its name, whether it behaved, and how long it took."""

    primitive: str
    operation: str
    ok: bool
    milliseconds: float
    detail: str = ""


async def run_self_check(backend: Backend) -> list[CheckResult]:
    """Exercise Log, KV, PubSub and Blobs once each; never raises for a failed check."""
    tag = f"reflow-check-{uuid.uuid4().hex[:12]}"
    results: list[CheckResult] = []

    async def step(primitive: str, operation: str, work: Callable[[], Awaitable[str]]) -> bool:
        started = time.perf_counter()
        try:
            problem = await asyncio.wait_for(work(), timeout=10)
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
        took = (time.perf_counter() - started) * 1000
        results.append(CheckResult(primitive, operation, not problem, took, problem))
        return not problem

    stream = f"{tag}:stream"
    entry_ids: list[str] = []

    async def log_append() -> str:
        entry_ids.append(await backend.log.append(stream, b"check"))
        return ""

    async def log_read() -> str:
        entries = await backend.log.read(stream, "check", "self", count=1, lease=5)
        if [e.data for e in entries] != [b"check"]:
            return f"read back {entries!r}"
        return ""

    async def log_ack() -> str:
        acked = await backend.log.ack(stream, "check", entry_ids)
        await backend.log.delete_stream(stream)
        return "" if acked == 1 else f"acked {acked}, expected 1"

    key = f"{tag}:key"

    async def kv_put() -> str:
        version = await backend.kv.put(key, b"v", expect_version=0)
        return "" if version >= 1 else f"version {version}"

    async def kv_get() -> str:
        item = await backend.kv.get(key)
        return "" if item is not None and item.value == b"v" else f"read back {item!r}"

    async def kv_cas_delete() -> str:
        item = await backend.kv.get(key)
        if item is None:
            return "key vanished"
        await backend.kv.put(key, b"w", expect_version=item.version)
        return "" if await backend.kv.delete(key) else "delete found nothing"

    channel = f"{tag}:channel"

    async def pubsub_round_trip() -> str:
        subscription = await backend.pubsub.subscribe(channel)
        try:
            await backend.pubsub.publish(channel, b"ping")
            message = await subscription.get(timeout=5)
        finally:
            await subscription.close()
        return "" if message is not None and message.data == b"ping" else "no message arrived"

    blob_key = f"{tag}/object.txt"

    async def blobs_put_get_delete() -> str:
        info = await backend.blobs.put(blob_key, b"hello", content_type="text/plain")
        blob = await backend.blobs.get(blob_key)
        deleted = await backend.blobs.delete(blob_key)
        if blob is None or blob.data != b"hello" or blob.info.etag != info.etag:
            return "read back something else"
        return "" if deleted else "delete found nothing"

    if await step("Log", "append", log_append) and await step("Log", "read (group)", log_read):
        await step("Log", "ack", log_ack)
    if await step("KV", "put (create)", kv_put) and await step("KV", "get", kv_get):
        await step("KV", "compare-and-set + delete", kv_cas_delete)
    await step("PubSub", "publish -> receive", pubsub_round_trip)
    await step("Blobs", "put + get + delete", blobs_put_get_delete)
    return results
