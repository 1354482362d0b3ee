"""The admin API: a small JSON-over-HTTP server on the admin port (8081).

It answers operators and the CLI — health, what the app registered, and the
routes each subsystem mounts (purges, executions, dead-letter queues). It is
not on the readers' path, so it favours plainness over speed: one request per
connection turn, bodies read by ``Content-Length``, JSON in and out, and a
hard cap on request sizes so a bad client cannot make it hold much memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["AdminRequest", "AdminResponse", "AdminServer", "Route"]

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
READ_TIMEOUT = 10.0


@dataclass(frozen=True)
class AdminRequest:
    """A parsed admin request."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    params: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body as JSON (``None`` when empty); ValueError when malformed."""
        if not self.body:
            return None
        return json.loads(self.body)


@dataclass(frozen=True)
class AdminResponse:
    """What a route answers: a status and a JSON-able body."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


AdminHandler = Callable[[AdminRequest], Awaitable[AdminResponse]]


@dataclass(frozen=True)
class Route:
    """A method and a path template (``/api/flows/{name}``) bound to a handler."""

    method: str
    template: str
    handler: AdminHandler
    pattern: re.Pattern[str]


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[a-z_]+\})", template)
    regex = "".join(
        f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") else re.escape(part) for part in parts
    )
    return re.compile(f"^{regex}$")


PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class AdminServer:
    """Serve JSON routes on one port; subsystems add theirs with :meth:`route`.

    ``GET /metrics`` serves Prometheus' text exposition (format 0.0.4): the
    concatenation of every source registered with :meth:`add_metrics`.
    """

    def __init__(self) -> None:
        self._routes: list[Route] = []
        self._server: asyncio.Server | None = None
        self._metrics: dict[str, Callable[[], str]] = {}
        self.route("GET", "/metrics", self._serve_metrics)

    def add_metrics(self, name: str, source: Callable[[], str]) -> None:
        """Add ``source`` (returning exposition text) to ``GET /metrics``, once per ``name``.

        A second source under the same name replaces the first, so that two
        services holding one runtime do not expose its metric families twice.
        """
        self._metrics[name] = source

    def remove_metrics(self, name: str) -> None:
        """Stop exposing the source registered as ``name``."""
        self._metrics.pop(name, None)

    async def _serve_metrics(self, _: AdminRequest) -> AdminResponse:
        text = "".join(source() for source in self._metrics.values())
        return AdminResponse(200, text.encode("utf-8"), {"Content-Type": PROMETHEUS_TYPE})

    def route(self, method: str, template: str, handler: AdminHandler) -> None:
        """Mount ``handler`` for ``method`` requests to paths matching ``template``."""
        self._routes.append(Route(method.upper(), template, handler, _compile(template)))

    @property
    def routes(self) -> list[Route]:
        """Every mounted route, in mounting order."""
        return list(self._routes)

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the admin server is not running")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``."""
        self._server = await asyncio.start_server(self._serve, host, port)

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def dispatch(self, request: AdminRequest) -> AdminResponse:
        """Route a request to its handler; 404 / 405 / 500 as JSON errors."""
        allowed: list[str] = []
        for route in self._routes:
            match = route.pattern.match(request.path)
            if match is None:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            bound = AdminRequest(
                request.method, request.path, request.query, request.headers, request.body, params
            )
            try:
                return await route.handler(bound)
            except ValueError as exc:
                return _error(400, str(exc))
            except Exception as exc:  # a route's bug must not take the admin API down
                return _error(500, f"{type(exc).__name__}: {exc}")
        if allowed:
            return AdminResponse(
                405,
                {"error": f"{request.method} not allowed; use {', '.join(sorted(set(allowed)))}"},
                {"Allow": ", ".join(sorted(set(allowed)))},
            )
        return _error(404, f"no admin route for {request.path}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    break
                if isinstance(request, AdminResponse):
                    await _write(writer, request, keep_alive=False)
                    break
                response = await self.dispatch(request)
                keep_alive = request.headers.get("connection", "").lower() != "close"
                await _write(writer, response, keep_alive=keep_alive)
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(
        self, reader: asyncio.StreamReader
    ) -> AdminRequest | AdminResponse | None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except asyncio.IncompleteReadError as exc:
            return None if not exc.partial else _error(400, "incomplete request")
        except asyncio.LimitOverrunError:
            return _error(431, "request headers too large")
        if len(head) > MAX_HEADER_BYTES:
            return _error(431, "request headers too large")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _error(400, f"malformed request line {lines[0][:80]!r}")
        method, target, _ = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                return _error(400, f"malformed header line {line[:80]!r}")
            headers[name.lower()] = value.strip()
        if "transfer-encoding" in headers:
            return _error(501, "the admin API takes Content-Length bodies only")
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit():
            return _error(400, f"bad Content-Length {length_text!r}")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            return _error(413, f"body of {length} bytes is over the {MAX_BODY_BYTES} byte limit")
        body = await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT) if length else b""
        url = urlsplit(target)
        return AdminRequest(method.upper(), url.path or "/", parse_qs(url.query), headers, body)


def _error(status: int, message: str) -> AdminResponse:
    return AdminResponse(status, {"error": message})


async def _write(
    writer: asyncio.StreamWriter, response: AdminResponse, *, keep_alive: bool
) -> None:
    # Bytes go out as they are (the route sets their Content-Type); anything else is JSON.
    raw = isinstance(response.body, bytes)
    if raw:
        body = response.body
    else:
        body = (
            b"" if response.body is None else json.dumps(response.body, indent=2).encode() + b"\n"
        )
    reason = (
        HTTPStatus(response.status).phrase
        if response.status in HTTPStatus._value2member_map_
        else ""
    )
    head = [f"HTTP/1.1 {response.status} {reason}"]
    if not raw:
        head.append("Content-Type: application/json")
    head.append(f"Content-Length: {len(body)}")
    head.append("Connection: keep-alive" if keep_alive else "Connection: close")
    head.extend(f"{name}: {value}" for name, value in response.headers.items())
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
