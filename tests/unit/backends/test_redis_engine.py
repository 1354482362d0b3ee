"""Opening the Redis engine, its key namespaces, its pub/sub subscriptions, and
Blobs on the shared directory."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from reflow.backends import Backend, open_backend
from reflow.errors import BackendUnavailableError
from tests.conftest import REDIS_URL, require_server


def _url(prefix: str, **options: str) -> str:
    query = "&".join([f"prefix={prefix}", *(f"{k}={v}" for k, v in options.items())])
    return f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}{query}"


@pytest.fixture
async def raw() -> AsyncIterator[aioredis.Redis]:
    require_server(REDIS_URL, "the Redis server")
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def prefixes(raw: aioredis.Redis) -> AsyncIterator[list[str]]:
    """Fresh prefixes for a test; every key under them is removed afterwards."""
    made = [f"test-{uuid.uuid4().hex[:12]}:" for _ in range(2)]
    try:
        yield made
    finally:
        for prefix in made:
            stale = [k async for k in raw.scan_iter(match=f"{prefix}*", count=1000)]
            if stale:
                await raw.unlink(*stale)


@pytest.fixture
async def backend(prefixes: list[str], tmp_path: Path) -> AsyncIterator[Backend]:
    opened = await open_backend(_url(prefixes[0]), data_dir=tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_refused_connection_fails_fast_naming_the_url(tmp_path: Path) -> None:
    url = "redis://127.0.0.1:1/0"
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as caught:
        await open_backend(url, data_dir=tmp_path)
    assert time.monotonic() - started < 3
    assert caught.value.url == url
    assert url in str(caught.value)


async def test_an_unanswering_host_times_out_within_the_connect_timeout(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never routed, so the connect hangs.
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError):
        await open_backend("redis://192.0.2.1:6379/0", data_dir=tmp_path)
    assert time.monotonic() - started < 4


async def test_the_error_never_shows_the_password(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError) as caught:
        await open_backend("redis://:hunter2@127.0.0.1:1/0", data_dir=tmp_path)
    assert "hunter2" not in str(caught.value)
    assert caught.value.url == "redis://:***@127.0.0.1:1/0"


async def test_every_key_lives_under_the_prefix(
    backend: Backend, prefixes: list[str], raw: aioredis.Redis
) -> None:
    await backend.kv.put("k", b"v")
    await backend.log.append("s", b"e")
    await backend.log.read("s", "g", "c")
    found = {k.decode() async for k in raw.scan_iter(match=f"{prefixes[0]}*", count=1000)}
    assert {k.removeprefix(prefixes[0]) for k in found} == {
        "kv:k",
        "kv#index",
        "log:s",
        "lease:s\x00g",
        "delivered:s\x00g",
    }


async def test_two_prefixes_on_one_server_do_not_see_each_other(
    backend: Backend, prefixes: list[str], tmp_path: Path
) -> None:
    other = await open_backend(_url(prefixes[1]), data_dir=tmp_path)
    try:
        await backend.kv.put("k", b"mine")
        await backend.log.append("s", b"mine")
        sub = await other.pubsub.subscribe("news")
        try:
            assert await backend.pubsub.publish("news", b"mine") == 0
            assert await sub.get(timeout=0.2) is None
        finally:
            await sub.close()
        assert await other.kv.get("k") is None
        assert await other.kv.scan() == []
        assert await other.log.length("s") == 0
    finally:
        await other.close()


async def test_a_raw_publish_on_the_prefixed_channel_reaches_subscribers(
    backend: Backend, prefixes: list[str], raw: aioredis.Redis
) -> None:
    sub = await backend.pubsub.subscribe("purge")
    try:
        assert await raw.publish(f"{prefixes[0]}ps:purge", b"key:home") == 1
        message = await sub.get(timeout=2)
        assert message is not None and (message.channel, message.data) == ("purge", b"key:home")
    finally:
        await sub.close()


async def test_closing_a_subscription_wakes_a_waiting_reader(backend: Backend) -> None:
    sub = await backend.pubsub.subscribe("c")
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0.05)
    await sub.close()
    assert await asyncio.wait_for(waiting, 2) is None
    assert [m async for m in sub] == []
    await sub.close()  # closing twice is harmless


async def test_closing_the_backend_closes_its_open_subscriptions(
    prefixes: list[str], tmp_path: Path
) -> None:
    opened = await open_backend(_url(prefixes[0]), data_dir=tmp_path)
    sub = await opened.pubsub.subscribe("c")
    await opened.close()
    assert await sub.get(timeout=1) is None


async def test_subscribe_needs_a_channel(backend: Backend) -> None:
    with pytest.raises(ValueError):
        await backend.pubsub.subscribe()


async def test_blobs_live_on_the_shared_directory_every_process_names(
    prefixes: list[str], tmp_path: Path
) -> None:
    shared = tmp_path / "shared-blobs"
    first = await open_backend(_url(prefixes[0], blobs=str(shared)), data_dir=tmp_path / "a")
    second = await open_backend(_url(prefixes[0], blobs=str(shared)), data_dir=tmp_path / "b")
    try:
        info = await first.blobs.put("site/index.html", b"<h1>hi</h1>", content_type="text/html")
        blob = await second.blobs.get("site/index.html")
        assert blob is not None and blob.data == b"<h1>hi</h1>" and blob.info.etag == info.etag
        assert any(shared.rglob("*")), "the object is stored under the blobs= directory"
        assert not (tmp_path / "a").exists() or not any((tmp_path / "a").rglob("*"))
    finally:
        await first.close()
        await second.close()


async def test_blobs_default_to_the_data_dir(backend: Backend, tmp_path: Path) -> None:
    await backend.blobs.put("x", b"1")
    assert any((tmp_path / "blobs").rglob("*"))
