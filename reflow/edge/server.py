"""The HTTP/1.1 server: an asyncio protocol over httptools, strict, kept-alive, pipelined.

One :class:`EdgeProtocol` per connection feeds bytes to an httptools
(llhttp) request parser and adds the checks llhttp leaves to its caller (see
:mod:`reflow.edge.http`): header names and values, framing, request-line and
header-block sizes. Any violation is answered with its status (400, 413, 414,
431, 501) and ``Connection: close``, and the connection is closed: after a
framing error the rest of the stream cannot be trusted.

A fresh hit is answered inside ``data_received`` with one ``transport.write``
of pre-built bytes. Anything else goes to a task; while it runs, further
pipelined requests queue in order and reading pauses, so responses leave in
request order and a client cannot make the queue grow without bound.

Slow clients: a request head must complete within ``head_timeout`` of its
first byte and an idle kept-alive connection closes after ``idle_timeout``;
one sweeper task checks every connection once a second rather than one
timer per request. Connections past ``max_connections`` get a 503 and close.
``stop()`` stops accepting, lets requests in flight finish (up to a grace
period), then closes what remains.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque

import httptools

from reflow.edge.core import Edge
from reflow.edge.http import (
    MAX_BODY,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_URL,
    Request,
    check_framing,
    error_response,
    normalise_path,
)
from reflow.errors import InvalidRequestError

__all__ = ["EdgeProtocol", "EdgeServer"]

_SPECIAL = frozenset({b"if-none-match", b"if-modified-since", b"range", b"if-range"})
_NOTED = _SPECIAL | {b"host", b"content-length", b"transfer-encoding"}
# Bytes of an unfinished request head we hold before refusing it (414/431).
_MAX_HEAD = MAX_URL + MAX_HEADER_BYTES + 1024
_SWEEP_CHUNK = 1000  # connections the sweeper checks per event-loop turn
_LINGER = 2.0  # seconds a rejected connection keeps draining input before it closes
# What a closed connection's parser becomes (see connection_lost).
_CLOSED = httptools.HttpRequestParser(object())
_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS"})
# The parse memo (see EdgeServer.memo): requests remembered, and the longest remembered.
MEMO_SIZE = 512
MEMO_BYTES = 4096
# A parsed request: method, path, query, headers, special (see on_message_complete).
Parsed = tuple[str, str, str, tuple[tuple[str, str], ...], bool]
# What the memo keeps: a Parsed and, if Edge.hit alone can answer it, whether it is HEAD.
Memo = tuple[str, str, str, tuple[tuple[str, str], ...], bool, bool | None]


class EdgeProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: EdgeServer) -> None:
        self.server = server
        self.edge = server.edge
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.queue: deque[tuple[Request, bool]] = deque()
        self.busy = False
        self.closing = False
        self.linger_until = 0.0  # closing after a rejection: discard input until then
        self.write_paused = False  # the client is not reading its responses
        self.paused_at = 0.0
        self.head_started = 0.0
        self.last_seen = 0.0
        self.error: InvalidRequestError | None = None
        self.in_head = False
        self.began = False
        self.head_bytes = 0
        # The parser is between messages and the last one kept the connection alive:
        # the state in which the parse memo may stand in for it.
        self.boundary = True
        self.messages = 0  # messages begun on this connection
        self.parsed: Parsed | None = None  # the last message, if the memo may keep it
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.header_bytes = 0
        self.special = False
        self.framing = False  # saw Content-Length or Transfer-Encoding
        self.hosts = 0
        self.body = b""

    # -- connection lifecycle ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the connection, or refuse it with 503 past the cap."""
        # uvloop's transports do not subclass asyncio.Transport; they quack like one.
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else ""
        if len(self.server.connections) >= self.server.max_connections:
            self.server.edge.metrics.rejected += 1
            transport.write(error_response(503, "too many connections"))  # type: ignore[attr-defined]
            transport.close()
            self.closing = True
            return
        self.server.connections.add(self)
        self.last_seen = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection and anything queued on it."""
        self.server.connections.discard(self)
        self.closing = True
        self.queue.clear()
        # The parser calls back into this protocol, and a rejection's exception holds
        # frames that hold it: reference cycles that only the cyclic GC would free,
        # after the connection's objects had aged into the old generation. Nothing
        # feeds the parser once closing is set.
        self.parser = _CLOSED
        self.error = None

    def data_received(self, data: bytes) -> None:
        """Feed bytes to the parser; answer or reject what it finds."""
        if self.closing:
            return
        now = time.monotonic()
        self.last_seen = now
        boundary = self.boundary
        if boundary:
            remembered = self.server.memo.get(data)
            if remembered is not None:
                # Exactly these bytes, from this parser state, were parsed before into
                # exactly one complete, bodiless, kept-alive request: parsing them again
                # would give the same request and leave the parser where it is now.
                method, path, query, headers, special, head = remembered
                if head is not None and not self.busy and not self.write_paused:
                    # Edge.plain said only the path, headers and HEAD-ness matter.
                    answer = self.edge.hit(path, headers, head)
                    if answer is not None:
                        self.transport.write(answer)  # type: ignore[union-attr]
                        return
                request = Request(method, path, query, list(headers), b"", True, self.client_ip)
                if self.busy or self.write_paused:
                    self._dispatch(request, special)
                    return
                answer = self.edge.fast(request, special)  # answer(), inline: kept alive
                if answer is not None:
                    self.transport.write(answer)  # type: ignore[union-attr]
                else:
                    self._answer_later(request)
                return
        if not self.in_head:
            self.head_started = now
        self.began = False
        begun = self.messages
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request itself was answered (upgrades are not offered); what follows
            # it is another protocol's bytes, so nothing more is read.
            self.closing = True
            self.queue.clear()
            if self.transport is not None and not self.busy:
                self.transport.close()
            return
        except httptools.HttpParserError as exc:
            problem = self.error or InvalidRequestError(400, f"malformed request: {exc}")
            self.reject(problem)
            return
        if (
            boundary
            and self.messages == begun + 1
            and self.boundary
            and self.parsed is not None
            and len(data) <= MEMO_BYTES
        ):
            memo = self.server.memo
            if len(memo) >= MEMO_SIZE:
                # Oldest first, not least recently used: a hit costs no bookkeeping, and a
                # client sending endless distinct requests only costs the hot ones a parse.
                memo.popitem(last=False)
            method, path, query, headers, special = self.parsed
            head = method == "HEAD" if self.edge.plain(method, path, query, special) else None
            memo[data] = (method, path, query, headers, special, head)
        if self.in_head:
            # httptools holds a header's pieces until the header ends, so an endless
            # header would grow without bound: count the bytes of a head that spans
            # chunks. (The chunk a head starts in is not counted: it may also hold
            # whole pipelined requests before it, and it is bounded by the read size.)
            self.head_bytes = 0 if self.began else self.head_bytes + len(data)
            if self.head_bytes > _MAX_HEAD:
                status = 414 if not self.headers else 431
                self.reject(InvalidRequestError(status, "request head too large"))

    def reject(self, problem: InvalidRequestError) -> None:
        """Answer a protocol violation and close: the stream can no longer be trusted."""
        # Its traceback's frames hold this protocol (a cycle only the cyclic GC frees).
        problem.__traceback__ = problem.__context__ = None
        self.server.edge.metrics.rejected += 1
        self.closing = True
        self.queue.clear()
        transport = self.transport
        if transport is None:
            return
        if not self.busy:
            transport.write(error_response(problem.status, problem.problem))
        if transport.can_write_eof():
            # Lingering close: send FIN after the error but keep reading (and
            # discarding) for a moment, so that unread request bytes do not make the
            # kernel answer with a reset that destroys the error before it is read.
            transport.write_eof()
            self.linger_until = time.monotonic() + _LINGER
        else:
            transport.close()

    # -- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        """httptools: a new request starts."""
        self._reset()
        self.in_head = True
        self.began = True
        self.boundary = False
        self.messages += 1
        self.parsed = None

    def on_url(self, url: bytes) -> None:
        """httptools: a piece of the request target (414 past the limit)."""
        self.url += url
        if len(self.url) > MAX_URL:
            self._fail(414, f"request target longer than {MAX_URL} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        """httptools: one complete header field (431 past the limits)."""
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > MAX_HEADER_BYTES or len(self.headers) >= MAX_HEADERS:
            self._fail(431, "request header fields too large")
        # Names that are not tokens and values with controls other than HTAB never get
        # here: llhttp refuses exactly the bytes check_header refuses (a unit test pins
        # that), so the hit path does not scan each header twice.
        lower = name.lower()
        if lower in _NOTED:
            if lower == b"host":
                self.hosts += 1
            elif lower in _SPECIAL:
                self.special = True
            else:
                self.framing = True
        self.headers.append((lower.decode("latin-1"), value.decode("latin-1").strip(" \t")))

    def on_headers_complete(self) -> None:
        """httptools: the head is complete; check framing, method, version, Host."""
        self.in_head = False
        length = 0
        if self.framing:
            try:
                length = check_framing(self.headers)
            except InvalidRequestError as exc:
                self._fail(exc.status, exc.problem)
            if length > MAX_BODY:
                self._fail(413, f"request body over {MAX_BODY} bytes")
        method = self.parser.get_method()
        if method not in _METHODS:
            self._fail(501, f"method {method[:16]!r} is not implemented")
        version = self.parser.get_http_version()
        if version == "1.1":
            if self.hosts != 1:
                self._fail(400, "an HTTP/1.1 request needs exactly one Host header")
        elif version == "1.0":
            if length == -1:
                # RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
                self._fail(400, "Transfer-Encoding in an HTTP/1.0 request")
        else:
            self._fail(505, f"HTTP/{version} is not supported")

    def on_body(self, body: bytes) -> None:
        """httptools: a piece of the body (413 past the limit)."""
        self.body += body
        if len(self.body) > MAX_BODY:
            self._fail(413, f"request body over {MAX_BODY} bytes")

    def on_message_complete(self) -> None:
        """httptools: the request is complete; normalise its target and answer it."""
        targets = self.server.targets
        split = targets.get(self.url)
        if split is None:
            try:
                split = normalise_path(self.url.decode("latin-1"))
            except InvalidRequestError as exc:
                self.error = exc
                raise
            if len(targets) >= 4096:
                targets.clear()
            targets[self.url] = split
        method = self.parser.get_method().decode("latin-1")
        keep_alive = self.parser.should_keep_alive()
        special = self.special
        self.boundary = keep_alive
        if keep_alive and not self.framing:
            # Bodiless (no Content-Length, no Transfer-Encoding) and kept alive.
            self.parsed = (method, split[0], split[1], tuple(self.headers), special)
        request = Request(
            method, split[0], split[1], self.headers, self.body, keep_alive, self.client_ip
        )
        self._dispatch(request, special)

    def _dispatch(self, request: Request, special: bool) -> None:
        """Answer a complete request now, or queue it behind the one being answered."""
        if self.busy or self.write_paused:
            self.queue.append((request, special))
            if len(self.queue) > 16 and self.transport is not None:
                self.transport.pause_reading()
            return
        self.answer(request, special)

    def _fail(self, status: int, problem: str) -> None:
        self.error = InvalidRequestError(status, problem)
        raise self.error

    # -- answering ---------------------------------------------------------------------

    def answer(self, request: Request, special: bool) -> None:
        """Answer from the hit path if possible, else in a task (keeping the order)."""
        transport = self.transport
        if transport is None or self.closing:
            return
        data = self.edge.fast(request, special)
        if data is not None:
            transport.write(data)
            if not request.keep_alive:
                self.closing = True
                transport.close()
            return
        self._answer_later(request)

    def _answer_later(self, request: Request) -> None:
        """Answer ``request`` in a task; later requests queue until it is written."""
        self.busy = True
        task = asyncio.get_running_loop().create_task(self._answer_slowly(request))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    async def _answer_slowly(self, request: Request) -> None:
        try:
            data = await self.edge.handle(request)
        except Exception as exc:  # a bug must cost one response, not the connection's queue
            self.server.errors += 1
            request.keep_alive = False
            data = error_response(500, f"internal error: {type(exc).__name__}")
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        self.busy = False
        if not request.keep_alive:
            self.closing = True
            transport.close()
            return
        if self.closing:
            transport.close()
            return
        self._drain()

    def _drain(self) -> None:
        """Answer queued requests in order until one needs a task or writing pauses."""
        while self.queue and not self.busy and not self.closing and not self.write_paused:
            queued, special = self.queue.popleft()
            self.answer(queued, special)
        if not self.queue and not self.closing and not self.write_paused and self.transport:
            self.transport.resume_reading()

    # -- flow control: a client that does not read must not make us buffer without end --

    def pause_writing(self) -> None:
        """asyncio: the client is not reading; stop reading its requests."""
        self.write_paused = True
        self.paused_at = time.monotonic()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        """asyncio: the client drained its responses; answer what waited."""
        self.write_paused = False
        if not self.busy:
            self._drain()


class EdgeServer:
    """Listens on a port and serves an :class:`Edge`; stops gracefully."""

    def __init__(
        self,
        edge: Edge,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        max_connections: int = 10000,
        head_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        grace: float = 5.0,
    ) -> None:
        self.edge = edge
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self.idle_timeout = idle_timeout
        self.grace = grace
        self.connections: set[EdgeProtocol] = set()
        self.errors = 0  # unexpected exceptions answered with 500
        self.tasks: set[asyncio.Task[None]] = set()
        # Raw request targets already normalised: the hit path skips the byte walk.
        self.targets: dict[bytes, tuple[str, str]] = {}
        # The parse memo: the exact bytes of a whole request the parser accepted (one
        # bodiless, kept-alive request, read in one piece at a message boundary) to
        # what it parsed to. Clients send the same bytes request after request.
        self.memo: OrderedDict[bytes, Memo] = OrderedDict()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and start accepting; ``port=0`` picks a free port (read ``.port`` after)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: EdgeProtocol(self), self.host, self.port, reuse_address=True, backlog=1024
        )
        sockname = self._server.sockets[0].getsockname()
        self.port = int(sockname[1])
        self._sweeper = loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        # Slowloris: one pass a second over the connections instead of a timer per request,
        # in chunks with a loop turn between them: one pass over 10,000 connections took
        # 4.4 ms of CPU, a stall every second for every request in flight.
        while True:
            await asyncio.sleep(min(1.0, self.head_timeout / 2))
            connections = list(self.connections)
            for start in range(0, len(connections), _SWEEP_CHUNK):
                if start:
                    await asyncio.sleep(0)
                self._sweep_some(connections[start : start + _SWEEP_CHUNK])

    def _sweep_some(self, connections: list[EdgeProtocol]) -> None:
        now = time.monotonic()
        live = self.connections
        for connection in connections:
            if connection not in live:
                continue  # closed while an earlier chunk waited for its turn
            if connection.linger_until:
                if now > connection.linger_until and connection.transport:
                    connection.transport.close()
                continue
            if connection.busy:
                continue
            if connection.write_paused:
                # A client that stopped reading its responses is as slow as one that
                # stopped sending its request.
                if now - connection.paused_at > self.idle_timeout and connection.transport:
                    connection.transport.close()
            elif connection.in_head and now - connection.head_started > self.head_timeout:
                connection.reject(InvalidRequestError(408, "request head timed out"))
            elif now - connection.last_seen > self.idle_timeout and connection.transport:
                connection.transport.close()

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to ``grace``), close the rest."""
        if self._server is None:
            return
        self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=self.grace)
        for task in list(self.tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        await self._server.wait_closed()
        self._server = None
        await self.edge.close()
