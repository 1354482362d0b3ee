"""A running edge on a free port, a scriptable origin, and a raw HTTP/1.1 client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import httptools
import pytest

from reflow.edge import Behaviour, CachePolicy, Edge, EdgeServer, Hook
from reflow.edge.origins import OriginRequest, OriginResponse
from reflow.testing import FakeClock


class ScriptedOrigin:
    """An origin whose answers tests set per path; it counts and records every fetch."""

    def __init__(self, clock: FakeClock) -> None:
        self.name = "scripted"
        self.clock = clock
        self.answers: dict[str, Callable[[OriginRequest], OriginResponse]] = {}
        self.requests: list[OriginRequest] = []
        self.delay = 0.0
        self.fail = False

    def serve(
        self,
        path: str,
        body: bytes,
        headers: Sequence[tuple[str, str]] = (("Cache-Control", "max-age=60"),),
        status: int = 200,
    ) -> None:
        def answer(_: OriginRequest) -> OriginResponse:
            return OriginResponse(status, list(headers), body)

        self.answers[path] = answer

    @property
    def fetches(self) -> int:
        return len(self.requests)

    async def fetch(self, request: OriginRequest) -> OriginResponse:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            from reflow.errors import OriginError

            raise OriginError(self.name, "cannot connect: refused")
        answer = self.answers.get(request.path)
        if answer is None:
            return OriginResponse(404, [("Content-Type", "text/plain")], b"missing")
        return answer(request)

    async def close(self) -> None:
        return None


@dataclass
class Reply:
    """One parsed response."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class _Collector:
    replies: list[Reply] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    status: int = 0
    parser: httptools.HttpResponseParser | None = None

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.status = self.parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.replies.append(Reply(self.status, self.headers, bytes(self.body)))
        self.headers, self.body = {}, bytearray()


class Client:
    """A raw connection: write any bytes, read back parsed responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.collector = _Collector()
        self.parser = httptools.HttpResponseParser(self.collector)
        self.collector.parser = self.parser

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def replies(self, count: int, timeout: float = 5.0) -> list[Reply]:
        """Read until ``count`` responses arrived (or the connection closed)."""
        async with asyncio.timeout(timeout):
            while len(self.collector.replies) < count:
                data = await self.reader.read(1 << 20)
                if not data:
                    break
                self.parser.feed_data(data)
        got, self.collector.replies = self.collector.replies[:count], self.collector.replies[count:]
        return got

    async def get(self, path: str, *headers: str) -> Reply:
        extra = "".join(f"{h}\r\n" for h in headers)
        await self.send(f"GET {path} HTTP/1.1\r\nHost: edge\r\n{extra}\r\n".encode())
        (reply,) = await self.replies(1)
        return reply

    async def closed(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection (EOF) within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except ConnectionResetError:
            return True  # closed with our unread bytes in its buffer: a reset
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await self.writer.wait_closed()


async def settle(done: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``done()`` (background work finished), polling; fail after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not done():
            await asyncio.sleep(0.01)


@dataclass
class Harness:
    """An edge server, its origin and clock."""

    server: EdgeServer
    edge: Edge
    origin: ScriptedOrigin
    clock: FakeClock
    clients: list[Client] = field(default_factory=list)

    async def connect(self) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        client = Client(reader, writer)
        self.clients.append(client)
        return client


async def start_harness(
    policy: CachePolicy | None = None,
    hooks: Sequence[Hook] = (),
    **server_options: float,
) -> Harness:
    clock = FakeClock()
    origin = ScriptedOrigin(clock)
    edge = Edge([Behaviour("*", origin, policy or CachePolicy())], hooks, clock=clock)
    server = EdgeServer(edge, port=0, **server_options)  # type: ignore[arg-type]
    await server.start()
    return Harness(server, edge, origin, clock)


async def stop_harness(harness: Harness) -> None:
    for client in harness.clients:
        await client.close()
    await harness.server.stop()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    started = await start_harness()
    yield started
    await stop_harness(started)
