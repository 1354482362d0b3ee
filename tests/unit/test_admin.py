"""The admin API: routing, errors as JSON, and a strict little HTTP reader."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from reflow.admin import AdminRequest, AdminResponse, AdminServer


@pytest.fixture
async def server() -> AsyncIterator[AdminServer]:
    admin = AdminServer()

    async def echo(request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, {"params": dict(request.params), "body": request.json()})

    async def broken(_: AdminRequest) -> AdminResponse:
        raise KeyError("bug")

    async def refuses(_: AdminRequest) -> AdminResponse:
        raise ValueError("field 'x' is missing")

    admin.route("POST", "/api/things/{name}", echo)
    admin.route("GET", "/api/broken", broken)
    admin.route("GET", "/api/refuses", refuses)
    await admin.start("127.0.0.1", 0)
    try:
        yield admin
    finally:
        await admin.stop()


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body
    finally:
        writer.close()
        await writer.wait_closed()


async def test_path_parameters_and_json_body_reach_the_handler(server: AdminServer) -> None:
    body = b'{"a": 1}'
    raw = (
        b"POST /api/things/hello%20world HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    status, headers, payload = await exchange(server.port, raw)
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(payload) == {"params": {"name": "hello world"}, "body": {"a": 1}}


async def test_unknown_path_is_a_json_404(server: AdminServer) -> None:
    status, _, payload = await exchange(server.port, b"GET /nowhere HTTP/1.1\r\n\r\n")
    assert status == 404
    assert "no admin route for /nowhere" in json.loads(payload)["error"]


async def test_wrong_method_is_405_with_allow(server: AdminServer) -> None:
    status, headers, _ = await exchange(server.port, b"GET /api/things/a HTTP/1.1\r\n\r\n")
    assert status == 405
    assert headers["allow"] == "POST"


async def test_a_route_bug_is_a_500_and_the_server_stays_up(server: AdminServer) -> None:
    status, _, payload = await exchange(server.port, b"GET /api/broken HTTP/1.1\r\n\r\n")
    assert status == 500
    assert "KeyError" in json.loads(payload)["error"]
    status, _, _ = await exchange(server.port, b"GET /api/refuses HTTP/1.1\r\n\r\n")
    assert status == 400


async def test_chunked_bodies_are_refused(server: AdminServer) -> None:
    raw = b"POST /api/things/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    status, headers, _ = await exchange(server.port, raw)
    assert status == 501
    assert headers["connection"] == "close"


async def test_bad_content_length_is_400(server: AdminServer) -> None:
    raw = b"POST /api/things/a HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello"
    status, _, payload = await exchange(server.port, raw)
    assert status == 400
    assert "Content-Length" in json.loads(payload)["error"]


async def test_oversized_body_is_413(server: AdminServer) -> None:
    raw = b"POST /api/things/a HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"
    status, _, _ = await exchange(server.port, raw)
    assert status == 413


async def test_malformed_request_line_is_400(server: AdminServer) -> None:
    status, _, _ = await exchange(server.port, b"GARBAGE\r\n\r\n")
    assert status == 400


async def test_keep_alive_serves_two_requests_on_one_connection(server: AdminServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for _ in range(2):
            writer.write(b"GET /nowhere HTTP/1.1\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 404")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()
