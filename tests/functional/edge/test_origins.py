"""Origins: the pooled HTTP client, timeouts, fail-over groups, buckets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from reflow.backends import memory_backend
from reflow.edge.origins import BucketOrigin, HttpOrigin, OriginGroup, OriginRequest
from reflow.errors import OriginError


class TinyOrigin:
    """A raw HTTP/1.1 server that answers each request from a script and counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.status = 200
        self.delay = 0.0
        self.close_after_each = False
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                if self.delay:
                    await asyncio.sleep(self.delay)
                body = b"from origin"
                writer.write(
                    f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(body)}\r\n"
                    "Cache-Control: max-age=60\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                if self.close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def tiny() -> AsyncIterator[TinyOrigin]:
    server = TinyOrigin()
    await server.start()
    yield server
    await server.stop()


async def test_http_origin_reuses_one_pooled_connection(tiny: TinyOrigin) -> None:
    origin = HttpOrigin(f"http://127.0.0.1:{tiny.port}")
    try:
        for _ in range(3):
            response = await origin.fetch(OriginRequest("GET", "/a", "x=1", [("accept", "*/*")]))
            assert (response.status, response.body) == (200, b"from origin")
        assert tiny.connections == 1
        assert tiny.requests[0].startswith(b"GET /a?x=1 HTTP/1.1\r\n")
        assert b"accept: */*" in tiny.requests[0]
    finally:
        await origin.close()


async def test_http_origin_retries_when_the_origin_closed_the_idle_connection(
    tiny: TinyOrigin,
) -> None:
    tiny.close_after_each = True
    origin = HttpOrigin(f"http://127.0.0.1:{tiny.port}")
    try:
        await origin.fetch(OriginRequest("GET", "/"))
        await asyncio.sleep(0.05)
        response = await origin.fetch(OriginRequest("GET", "/"))
        assert response.status == 200
    finally:
        await origin.close()


async def test_http_origin_timeout_and_refused_connection_are_origin_errors(
    tiny: TinyOrigin,
) -> None:
    tiny.delay = 1.0
    slow = HttpOrigin(f"http://127.0.0.1:{tiny.port}", timeout=0.1)
    with pytest.raises(OriginError, match="within"):
        await slow.fetch(OriginRequest("GET", "/"))
    await slow.close()
    dead = HttpOrigin("http://127.0.0.1:9")
    with pytest.raises(OriginError, match="cannot connect"):
        await dead.fetch(OriginRequest("GET", "/"))


async def test_origin_group_fails_over_on_5xx_and_connect_errors(tiny: TinyOrigin) -> None:
    backend = memory_backend()
    await backend.blobs.put("spare/index.html", b"spare copy", content_type="text/html")
    spare = BucketOrigin(backend.blobs, "spare")
    tiny.status = 503
    group = OriginGroup(HttpOrigin(f"http://127.0.0.1:{tiny.port}"), spare)
    dead_group = OriginGroup(HttpOrigin("http://127.0.0.1:9"), spare)
    try:
        assert (await group.fetch(OriginRequest("GET", "/"))).body == b"spare copy"
        assert (await dead_group.fetch(OriginRequest("GET", "/"))).body == b"spare copy"
        tiny.status = 200
        assert (await group.fetch(OriginRequest("GET", "/"))).body == b"from origin"
        assert group.failovers == 1
    finally:
        await group.close()
        await dead_group.close()
        await backend.close()


async def test_bucket_origin_answers_conditionals_and_maps_metadata() -> None:
    backend = memory_backend()
    info = await backend.blobs.put(
        "site/a/b.css",
        b"body{}",
        content_type="text/css",
        metadata={"cache-control": "max-age=5", "surrogate-key": "css", "owner": "x"},
    )
    origin = BucketOrigin(backend.blobs, "site")
    try:
        response = await origin.fetch(OriginRequest("GET", "/a/b.css"))
        assert response.header("surrogate-key") == "css"
        assert response.header("cache-control") == "max-age=5"
        assert response.header("owner") is None
        same = await origin.fetch(
            OriginRequest("GET", "/a/b.css", "", [("If-None-Match", info.etag)])
        )
        assert same.status == 304
        assert (await origin.fetch(OriginRequest("GET", "/nope"))).status == 404
        assert (await origin.fetch(OriginRequest("DELETE", "/a/b.css"))).status == 405
    finally:
        await backend.close()


async def asgi_site(scope: dict[str, object], receive: object, send: object) -> None:
    """A minimal ASGI 3 app: echoes the path and query it was called with."""
    assert scope["type"] == "http"
    body = f"{scope['method']} {scope['path']}?{scope['query_string']!r}".encode()
    await send(  # type: ignore[operator]
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"cache-control", b"max-age=30")],
        }
    )
    await send({"type": "http.response.body", "body": body})  # type: ignore[operator]


async def broken_site(scope: dict[str, object], receive: object, send: object) -> None:
    raise RuntimeError("template missing")


async def test_asgi_origin_calls_the_app_in_process() -> None:
    from reflow.edge.origins import AsgiOrigin, open_origin

    origin = open_origin(f"asgi:{__name__}:asgi_site", memory_backend().blobs)
    assert isinstance(origin, AsgiOrigin)
    response = await origin.fetch(OriginRequest("HEAD", "/a%20b", "x=1"))
    assert response.status == 200
    assert response.body == b"GET /a b?b'x=1'"
    assert response.header("cache-control") == "max-age=30"
    with pytest.raises(OriginError, match="template missing"):
        await AsgiOrigin(f"asgi:{__name__}:broken_site").fetch(OriginRequest("GET", "/"))
    with pytest.raises(OriginError, match="cannot load"):
        AsgiOrigin("asgi:no_such_module_here:app")


async def test_connect_is_retried_until_a_restarting_origin_listens() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = TinyOrigin()

    async def start_late() -> None:
        await asyncio.sleep(0.06)
        server.server = await asyncio.start_server(server._serve, "127.0.0.1", port)

    origin = HttpOrigin(f"http://127.0.0.1:{port}", connect_retries=6)
    starter = asyncio.create_task(start_late())
    try:
        response = await origin.fetch(OriginRequest("GET", "/"))
        assert response.status == 200
    finally:
        await starter
        await origin.close()
        await server.stop()


def test_connect_retries_is_an_edge_origin_option_carried_to_the_http_origin() -> None:
    from reflow import App
    from reflow.backends import memory_backend
    from reflow.edge.service import behaviours_from_app
    from reflow.errors import RegistrationError

    app = App("retries")
    app.edge_origin("*", "http://127.0.0.1:9", connect_retries=5)
    app.edge_origin("/api/*", "http://127.0.0.1:9")
    origins = {b.pattern: b.origin for b in behaviours_from_app(app, memory_backend())}
    assert isinstance(origins["*"], HttpOrigin) and origins["*"].connect_retries == 5
    assert isinstance(origins["/api/*"], HttpOrigin) and origins["/api/*"].connect_retries == 2
    for bad in (-1, 11, 1.5, True):
        with pytest.raises(RegistrationError, match="connect_retries"):
            # 1.5 is deliberately not an int: registration must refuse it at run time.
            app.edge_origin(f"/bad{bad}/*", "http://127.0.0.1:9", connect_retries=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("retries", "attempts"), [(0, 1), (2, 3)])
async def test_a_refused_connect_is_tried_once_plus_the_retries(
    retries: int, attempts: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    tried: list[tuple[str, int]] = []

    async def refuse(host: str, port: int) -> Any:
        tried.append((host, port))
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(asyncio, "open_connection", refuse)
    origin = HttpOrigin("http://127.0.0.1:9", connect_retries=retries, timeout=5)
    with pytest.raises(OriginError, match="cannot connect"):
        await origin.fetch(OriginRequest("GET", "/", "", []))
    assert tried == [("127.0.0.1", 9)] * attempts
    await origin.close()
