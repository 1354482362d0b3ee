"""Where misses go: bucket and HTTP origins, origin groups, and request collapsing.

An origin is anything with ``async fetch(OriginRequest) -> OriginResponse``.
Four kinds exist:

* :class:`BucketOrigin` — ``bucket:NAME``, objects of the ``Blobs`` primitive
  under the ``NAME/`` prefix; answers conditional requests itself; user
  metadata ``cache-control`` and ``surrogate-key`` become response headers;
* :class:`HttpOrigin` — ``http://host:port``, a small HTTP/1.1 client with a
  pool of kept-alive connections, a timeout per fetch and a retry on a
  connection that the origin closed while idle;
* :class:`AsgiOrigin` — ``asgi:module:attr``, any ASGI 3 application
  (Starlette, FastAPI, ...) called in-process with an HTTP scope;
* :class:`OriginGroup` — a primary and a secondary; the secondary answers
  when the primary fails to connect or answers 5xx.

:class:`Collapser` makes N concurrent misses on one key into one fetch: the
first caller fetches, the others await its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import httptools

from reflow.backends.protocols import Blobs
from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.edge.cache import format_http_date, not_modified
from reflow.edge.http import HOP_BY_HOP, reason_phrase
from reflow.errors import OriginError

__all__ = [
    "AsgiOrigin",
    "BucketOrigin",
    "Collapser",
    "HttpOrigin",
    "Origin",
    "OriginGroup",
    "OriginRequest",
    "OriginResponse",
    "open_origin",
]


@dataclass
class OriginRequest:
    """What the edge asks an origin for (only the cache key's parts are forwarded)."""

    method: str
    path: str
    query: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


@dataclass
class OriginResponse:
    """An origin's answer, with its header names as received."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    reason: str = ""
    elapsed: float = 0.0  # seconds the origin took (for Server-Timing)

    def __post_init__(self) -> None:
        if not self.reason:
            self.reason = reason_phrase(self.status)

    def header(self, name: str) -> str | None:
        """The first value of ``name`` (case-insensitive), or None."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class Origin(Protocol):
    """Something the edge can fetch from."""

    name: str

    async def fetch(self, request: OriginRequest) -> OriginResponse:
        """Answer ``request``; raise :class:`OriginError` when unreachable."""
        ...

    async def close(self) -> None:
        """Release pooled connections."""
        ...


class BucketOrigin:
    """Objects of one bucket (``NAME/`` under the ``Blobs`` primitive) as an origin."""

    def __init__(
        self, blobs: Blobs, bucket: str, *, index: str = "index.html", clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.name = f"bucket:{bucket}"
        self._clock = clock
        self._blobs = blobs
        self._prefix = f"{bucket}/"
        self._index = index

    async def fetch(self, request: OriginRequest) -> OriginResponse:
        """The object at the request's path: 200, 304, 404, or 405 for other methods."""
        if request.method not in ("GET", "HEAD"):
            return OriginResponse(405, [("Allow", "GET, HEAD")])
        key = unquote(request.path).lstrip("/")
        if key == "" or key.endswith("/"):
            key += self._index
        blob = await self._blobs.get(self._prefix + key)
        if blob is None:
            return OriginResponse(404, [("Content-Type", "text/plain")], b"not found\n")
        info = blob.info
        headers = [
            ("Content-Type", info.content_type),
            ("ETag", info.etag),
            ("Last-Modified", format_http_date(info.modified)),
            ("Date", format_http_date(self._clock.time())),
        ]
        for meta, value in info.metadata.items():
            if meta.lower() in ("cache-control", "surrogate-key", "cache-tag", "content-encoding"):
                headers.append((meta.title(), value))
        lowered = [(k.lower(), v) for k, v in request.headers]
        if not_modified(lowered, info.etag, float(int(info.modified))):
            return OriginResponse(304, headers)
        return OriginResponse(200, headers, blob.data)

    async def close(self) -> None:
        """Nothing pooled."""


class _Connection:
    """One kept-alive connection to an HTTP origin, reading one response at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.done = False
        self.keep_alive = True

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True

    async def exchange(self, head: bytes, body: bytes) -> OriginResponse:
        self.status, self.headers, self.body, self.done = 0, [], [], False
        self.writer.write(head + body)
        parser = httptools.HttpResponseParser(self)
        while not self.done:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionResetError("origin closed the connection mid-response")
            parser.feed_data(data)
        self.status = parser.get_status_code()
        # Decided from the message itself: llhttp's should_keep_alive() is only
        # meaningful before the message completes.
        closing = any(k.lower() == "connection" and "close" in v.lower() for k, v in self.headers)
        self.keep_alive = parser.get_http_version() == "1.1" and not closing
        return OriginResponse(self.status, self.headers, b"".join(self.body))

    def close(self) -> None:
        self.writer.close()


class HttpOrigin:
    """An HTTP/1.1 origin at ``http://host:port`` with pooled kept-alive connections."""

    def __init__(
        self, url: str, *, timeout: float = 10.0, pool_size: int = 32, connect_retries: int = 2
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise OriginError(url, "an HTTP origin must look like http://host:port")
        self.name = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self.base = parts.path.rstrip("/")
        self.timeout = timeout
        self.pool_size = pool_size
        self.connect_retries = connect_retries
        self._idle: list[_Connection] = []

    async def fetch(self, request: OriginRequest) -> OriginResponse:
        """Send ``request``; one retry when a pooled connection turns out closed."""
        try:
            return await asyncio.wait_for(self._fetch(request), self.timeout)
        except TimeoutError:
            raise OriginError(self.name, f"no response within {self.timeout:g} s") from None

    async def _fetch(self, request: OriginRequest) -> OriginResponse:
        # HEAD goes out as GET: the response parser cannot know a body is absent, and
        # the full response is what the cache stores for both methods anyway.
        method = "GET" if request.method == "HEAD" else request.method
        target = self.base + request.path + (f"?{request.query}" if request.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for name, value in request.headers:
            if name.lower() not in HOP_BY_HOP and name.lower() not in ("host", "content-length"):
                lines.append(f"{name}: {value}")
        if request.body or method != "GET":
            lines.append(f"Content-Length: {len(request.body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        for attempt in range(2):
            reused = bool(self._idle)
            connection = self._idle.pop() if reused else await self._connect()
            try:
                response = await connection.exchange(head, request.body)
            except (OSError, httptools.HttpParserError) as exc:
                connection.close()
                if reused and attempt == 0:
                    continue  # the origin closed an idle connection: retry on a fresh one
                raise OriginError(self.name, f"exchange failed: {exc}") from None
            except BaseException:
                connection.close()  # timed out (cancelled) mid-exchange: never reuse it
                raise
            if connection.keep_alive and len(self._idle) < self.pool_size:
                self._idle.append(connection)
            else:
                connection.close()
            return response
        raise OriginError(self.name, "exchange failed twice")  # pragma: no cover

    async def _connect(self) -> _Connection:
        # Retrying a connect is always safe: nothing has been sent yet. Back off a
        # little so that a restarting origin gets a moment (all within the timeout).
        for attempt in range(self.connect_retries + 1):
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                if attempt == self.connect_retries:
                    raise OriginError(self.name, f"cannot connect: {exc.strerror or exc}") from None
                await asyncio.sleep(0.05 * (attempt + 1))
            else:
                return _Connection(reader, writer)
        raise OriginError(self.name, "cannot connect")  # pragma: no cover

    async def close(self) -> None:
        """Close every pooled connection."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
            with contextlib.suppress(OSError):
                await connection.writer.wait_closed()


class OriginGroup:
    """A primary origin that fails over to a secondary on connect errors or 5xx."""

    def __init__(self, primary: Origin, secondary: Origin) -> None:
        self.name = f"group({primary.name}, {secondary.name})"
        self.primary = primary
        self.secondary = secondary
        self.failovers = 0

    async def fetch(self, request: OriginRequest) -> OriginResponse:
        """The primary's answer unless it fails; then the secondary's."""
        try:
            response = await self.primary.fetch(request)
        except OriginError:
            self.failovers += 1
            return await self.secondary.fetch(request)
        if response.status >= 500:
            self.failovers += 1
            return await self.secondary.fetch(request)
        return response

    async def close(self) -> None:
        """Close both origins."""
        await self.primary.close()
        await self.secondary.close()


class AsgiOrigin:
    """Any ASGI 3 application (``asgi:module:attr``, e.g. Starlette or FastAPI) in-process."""

    def __init__(self, spec: str, *, timeout: float = 10.0) -> None:
        self.name = spec
        self.timeout = timeout
        _, module_name, attribute = (spec.split(":", 2) + ["", ""])[:3]
        if not module_name or not attribute:
            raise OriginError(spec, "an ASGI origin must look like asgi:module:attribute")
        try:
            module = importlib.import_module(module_name)
            self.app: Callable[..., Awaitable[None]] = getattr(module, attribute)
        except (ImportError, AttributeError) as exc:
            raise OriginError(spec, f"cannot load the ASGI app: {exc}") from None

    async def fetch(self, request: OriginRequest) -> OriginResponse:
        """Call the app with an HTTP scope; collect its response."""
        try:
            return await asyncio.wait_for(self._call(request), self.timeout)
        except TimeoutError:
            raise OriginError(self.name, f"no response within {self.timeout:g} s") from None
        except OriginError:
            raise
        except Exception as exc:
            raise OriginError(self.name, f"the app raised {type(exc).__name__}: {exc}") from exc

    async def _call(self, request: OriginRequest) -> OriginResponse:
        method = "GET" if request.method == "HEAD" else request.method
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(request.path),
            "raw_path": request.path.encode("latin-1"),
            "query_string": request.query.encode("latin-1"),
            "root_path": "",
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers
            ],
            "client": None,
            "server": ("reflow-edge", 80),
        }
        sent_body = False
        finished = asyncio.Event()
        status = 500
        headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    headers.append((bytes(name).decode("latin-1"), bytes(value).decode("latin-1")))
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))
                if not message.get("more_body", False):
                    finished.set()

        await self.app(scope, receive, send)
        finished.set()
        return OriginResponse(status, headers, b"".join(chunks))

    async def close(self) -> None:
        """Nothing pooled."""


def open_origin(
    spec: str,
    blobs: Blobs,
    *,
    timeout: float = 10.0,
    clock: Clock = SYSTEM_CLOCK,
    connect_retries: int = 2,
) -> Origin:
    """An origin from its spec: ``bucket:NAME``, ``http://host:port`` or ``asgi:mod:attr``."""
    if spec.startswith("bucket:"):
        return BucketOrigin(blobs, spec.removeprefix("bucket:"), clock=clock)
    if spec.startswith("http://"):
        return HttpOrigin(spec, timeout=timeout, connect_retries=connect_retries)
    if spec.startswith("asgi:"):
        return AsgiOrigin(spec, timeout=timeout)
    raise OriginError(
        spec, "unknown origin kind; expected bucket:NAME, http://host:port or asgi:module:attr"
    )


class Collapser:
    """One fetch per key at a time: concurrent callers share the first one's result."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[OriginResponse]] = {}
        self.collapsed = 0

    def __len__(self) -> int:
        return len(self._inflight)

    async def run(
        self, key: str, fetch: Callable[[], Awaitable[OriginResponse]]
    ) -> tuple[OriginResponse, bool]:
        """The response for ``key``, and whether this caller did the fetch itself."""
        pending = self._inflight.get(key)
        if pending is not None:
            self.collapsed += 1
            return await asyncio.shield(pending), False
        future: asyncio.Future[OriginResponse] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            response = await fetch()
        except BaseException as exc:
            if not future.done():
                future.set_exception(
                    exc if isinstance(exc, Exception) else OriginError(key, "cancelled")
                )
                future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        else:
            future.set_result(response)
            return response, True
        finally:
            del self._inflight[key]
