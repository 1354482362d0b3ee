"""The PubSub and Blobs contracts."""

from __future__ import annotations

import asyncio

import pytest

from reflow.backends import Backend


async def test_subscribers_receive_messages_published_after_subscribing(backend: Backend) -> None:
    await backend.pubsub.publish("news", b"before")
    sub = await backend.pubsub.subscribe("news", "other")
    try:
        await backend.pubsub.publish("news", b"one")
        await backend.pubsub.publish("other", b"two")
        await backend.pubsub.publish("unrelated", b"three")
        first = await sub.get(timeout=2)
        second = await sub.get(timeout=2)
        assert first is not None and (first.channel, first.data) == ("news", b"one")
        assert second is not None and (second.channel, second.data) == ("other", b"two")
        assert await sub.get(timeout=0.2) is None
    finally:
        await sub.close()


async def test_every_subscriber_gets_every_message(backend: Backend) -> None:
    subs = [await backend.pubsub.subscribe("purge") for _ in range(3)]
    try:
        receivers = await backend.pubsub.publish("purge", b"key:a")
        assert receivers >= 1
        for sub in subs:
            message = await sub.get(timeout=2)
            assert message is not None and message.data == b"key:a"
    finally:
        for sub in subs:
            await sub.close()


async def test_iteration_ends_when_the_subscription_closes(backend: Backend) -> None:
    sub = await backend.pubsub.subscribe("c")
    seen: list[bytes] = []

    async def consume() -> None:
        async for message in sub:
            seen.append(message.data)
            if len(seen) == 2:
                await sub.close()

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    await backend.pubsub.publish("c", b"1")
    await backend.pubsub.publish("c", b"2")
    await asyncio.wait_for(task, 5)
    assert seen == [b"1", b"2"]


async def test_blob_put_then_get_and_head(backend: Backend) -> None:
    info = await backend.blobs.put(
        "site/index.html",
        b"<h1>hi</h1>",
        content_type="text/html",
        metadata={"author": "ada", "surrogate-key": "home"},
    )
    assert info.key == "site/index.html"
    assert info.size == 11
    blob = await backend.blobs.get("site/index.html")
    assert blob is not None
    assert blob.data == b"<h1>hi</h1>"
    assert blob.info.content_type == "text/html"
    assert dict(blob.info.metadata) == {"author": "ada", "surrogate-key": "home"}
    head = await backend.blobs.head("site/index.html")
    assert head is not None and head.etag == info.etag and head.size == 11
    assert await backend.blobs.get("site/missing") is None
    assert await backend.blobs.head("site/missing") is None


async def test_etag_is_the_quoted_md5_and_changes_with_content(backend: Backend) -> None:
    import hashlib

    one = await backend.blobs.put("a", b"one")
    assert one.etag == '"' + hashlib.md5(b"one").hexdigest() + '"'
    two = await backend.blobs.put("a", b"two")
    assert two.etag != one.etag
    blob = await backend.blobs.get("a")
    assert blob is not None and blob.data == b"two"


async def test_list_by_prefix_in_key_order(backend: Backend) -> None:
    for key in ["img/b.png", "img/a.png", "css/site.css", "img/sub/c.png", "imgx"]:
        await backend.blobs.put(key, key.encode())
    listed = await backend.blobs.list("img/")
    assert [i.key for i in listed] == ["img/a.png", "img/b.png", "img/sub/c.png"]
    assert [i.key for i in await backend.blobs.list("img/", limit=1)] == ["img/a.png"]
    after = await backend.blobs.list("img/", start_after="img/a.png")
    assert [i.key for i in after] == ["img/b.png", "img/sub/c.png"]
    assert len(await backend.blobs.list()) == 5


async def test_delete_removes_an_object(backend: Backend) -> None:
    await backend.blobs.put("x/y", b"1")
    assert await backend.blobs.delete("x/y") is True
    assert await backend.blobs.delete("x/y") is False
    assert await backend.blobs.get("x/y") is None
    assert await backend.blobs.list("x/") == []


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a/\x00"])
async def test_unsafe_blob_keys_are_refused(backend: Backend, key: str) -> None:
    with pytest.raises(ValueError):
        await backend.blobs.put(key, b"x")


async def test_large_objects_round_trip(backend: Backend) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    info = await backend.blobs.put("big.bin", data)
    assert info.size == len(data)
    blob = await backend.blobs.get("big.bin")
    assert blob is not None and blob.data == data
