"""reflow.testing.Harness: handlers called with a context over memory blobs."""

from __future__ import annotations

from typing import Any

import pytest

from reflow import App
from reflow.backends.memory import MemoryBlobs
from reflow.errors import EdgeError, FunctionNotFoundError, NotAvailableError
from reflow.testing import Harness


def make_app() -> App:
    app = App("t")

    @app.function()
    def write(event: dict[str, Any], context: Any) -> dict[str, Any]:
        info = context.blobs.sync.put(event["key"], event["data"].encode())
        count = context.cache.purge_sync(paths=[event["path"]], keys=event.get("keys", ()))
        return {"etag": info.etag, "purged": count}

    @app.function()
    async def write_async(event: dict[str, Any], context: Any) -> str:
        await context.blobs.put(event["key"], event["data"].encode())
        await context.cache.purge(paths=[event["path"]], soft=True)
        return str(context.function_name)

    @app.function()
    def read(event: dict[str, Any], context: Any) -> list[str]:
        return [info.key for info in context.blobs.sync.list(event["prefix"])]

    return app


def test_a_plain_handler_writes_blobs_the_test_can_read_back() -> None:
    with Harness(make_app()) as harness:
        result = harness.invoke("write", {"key": "site/a", "data": "hello", "path": "/a"})
        assert harness.blob("site/a") == b"hello"
        assert result["purged"] == 0  # nothing is cached in a test
        assert result["etag"].startswith('"')


def test_an_async_handler_is_awaited_on_the_harness_loop() -> None:
    with Harness(make_app()) as harness:
        name = harness.invoke("write_async", {"key": "site/b", "data": "x", "path": "/b"})
        assert name == "write_async"
        assert harness.blob("site/b") == b"x"
        assert harness.cache.plans[0].soft is True


def test_purges_are_recorded_in_order_with_keys_and_paths() -> None:
    with Harness(make_app()) as harness:
        harness.invoke("write", {"key": "k1", "data": "1", "path": "/one", "keys": ["home"]})
        harness.invoke("write", {"key": "k2", "data": "2", "path": "/two/*"})
        assert harness.purged_paths == ["/one", "/two/*"]
        assert harness.purged_keys == ["home"]


def test_a_purge_the_edge_would_refuse_is_refused_in_the_test_too() -> None:
    with Harness(make_app()) as harness, pytest.raises(EdgeError, match="must start with '/'"):
        harness.invoke("write", {"key": "k", "data": "1", "path": "no-slash"})
    assert harness.purged_paths == []


def test_blobs_given_to_the_harness_are_what_handlers_see() -> None:
    blobs = MemoryBlobs()
    with Harness(make_app(), blobs=blobs) as harness:
        harness.run(blobs.put("site/x", b"1"))
        harness.run(blobs.put("other/y", b"2"))
        assert harness.invoke("read", {"prefix": "site/"}) == ["site/x"]
        assert harness.blob("missing") is None


def test_an_unknown_function_is_named_in_the_error() -> None:
    with Harness(make_app()) as harness, pytest.raises(FunctionNotFoundError, match="nope"):
        harness.invoke("nope", {})


def test_the_harness_must_be_entered_before_it_invokes() -> None:
    harness = Harness(make_app())
    with pytest.raises(NotAvailableError, match="with block"):
        harness.invoke("write", {"key": "k", "data": "1", "path": "/"})
    with pytest.raises(NotAvailableError, match="with block"):
        harness.blob("k")


def test_leaving_the_harness_stops_its_loop_thread() -> None:
    harness = Harness(make_app())
    with harness:
        thread = harness._thread
        assert thread is not None and thread.is_alive()
    assert not thread.is_alive()
