"""The parse memo answers exactly as the parser would, and stays bounded.

:class:`reflow.edge.server.EdgeProtocol` skips httptools for the exact bytes
of a request it has parsed before (``EdgeServer.memo``). Two servers, one with
the memo and one whose memo never keeps anything, get the same byte chunks —
valid and malformed requests, whole, split at random points and pipelined —
and must write the same bytes, close the same way and ask their origins the
same things.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.edge import Behaviour, CachePolicy, Edge, EdgeServer, Hook
from reflow.edge.origins import OriginRequest, OriginResponse
from reflow.edge.server import MEMO_BYTES, MEMO_SIZE, EdgeProtocol, Memo
from reflow.testing import FakeClock

H = b"Host: e\r\n"
POOL = [
    b"GET /a HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /a HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    b"GET /b?x=1 HTTP/1.1\r\n" + H + b"User-Agent: t\r\n\r\n",
    b"GET /./a/../b HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /%61 HTTP/1.1\r\n" + H + b"\r\n",
    b"HEAD /a HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /missing HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /a HTTP/1.1\r\n" + H + b'If-None-Match: "v1"\r\n\r\n',
    b"GET /a HTTP/1.1\r\n" + H + b"Range: bytes=0-3\r\n\r\n",
    b"GET /a HTTP/1.1\r\n" + H + b"Accept-Encoding: gzip\r\n\r\n",
    b"GET /a HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n",
    b"GET /a HTTP/1.0\r\n\r\n",
    b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /hooked HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /hooked?q=1 HTTP/1.1\r\n" + H + b"X-Y: z\r\n\r\n",
    b"GET /ip HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /q HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /q?x=1 HTTP/1.1\r\n" + H + b"\r\n",
    b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc",
    b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n",
    b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"\r\nGET /a HTTP/1.1\r\n" + H + b"\r\n",
]
POOL += [
    # Malformed: each must be refused the same way, memo or not.
    b"GET /a HTTP/1.1\r\n\r\n",
    b"GET /a HTTP/1.1\r\n" + H + H + b"\r\n",
    b"GET /a HTTP/1.1\r\n" + H + b"X Y: v\r\n\r\n",
    b"GET /a HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n",
    b"GET /a HTTP/1.1\nHost: e\n\n",
    b"BREW /a HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /%00 HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /a HTTP/1.2\r\n" + H + b"\r\n",
    b"GET a HTTP/1.1\r\n" + H + b"\r\n",
    b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /a HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\nUpgrade: x\r\n\r\n",
    b"GET /a HTTP/1.1\r\n" + H,  # an unfinished head
    b"xyz\r\n",
]
_TIMING = re.compile(rb"origin;dur=[0-9.]+")


class _Origin:
    def __init__(self) -> None:
        self.name = "test"
        self.requests: list[tuple[str, str, str]] = []

    async def fetch(self, request: OriginRequest) -> OriginResponse:
        self.requests.append((request.method, request.path, request.query))
        if request.path == "/missing":
            return OriginResponse(404, [("Cache-Control", "no-store")], b"missing")
        body = f"{request.path}?{request.query}".encode() * 20
        return OriginResponse(
            200,
            [
                ("Content-Type", "text/plain"),
                ("ETag", '"v1"'),
                ("Cache-Control", "max-age=60"),
            ],
            body,
        )

    async def close(self) -> None:
        return None


def _add_header(event: dict[str, Any], context: object) -> Any:
    request = event["Records"][0]["cf"]["request"]
    request["headers"]["x-seen"] = [{"key": "X-Seen", "value": "1"}]
    return request


def _client_ip(event: dict[str, Any], context: object) -> Any:
    request = event["Records"][0]["cf"]["request"]
    return {"status": "200", "body": "client " + request["clientIp"]}


@dataclass
class _Transport:
    written: list[bytes] = field(default_factory=list)
    closed: bool = False
    eof: bool = False

    def write(self, data: bytes) -> None:
        self.written.append((b"(after close) " if self.closed else b"") + data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("10.0.0.1", 1234) if name == "peername" else default

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True


class _Forgetful(OrderedDict[bytes, Memo]):
    """A memo that never keeps anything: every request goes through the parser."""

    def __setitem__(self, key: bytes, value: Memo) -> None:
        pass


class _Side:
    """One server, its edge and origin, and its current connection."""

    def __init__(self, memo: bool) -> None:
        self.origin = _Origin()
        hooks = [
            Hook("h", "viewer-request", "/hooked*", _add_header),
            Hook("ip", "viewer-request", "/ip", _client_ip),
        ]
        behaviours = [
            Behaviour("*", self.origin),
            Behaviour("/q", self.origin, CachePolicy(query_strings="all")),
        ]
        self.edge = Edge(behaviours, hooks, clock=FakeClock())
        self.server = EdgeServer(self.edge, port=0)
        if not memo:
            self.server.memo = _Forgetful()
        self.log: list[tuple[str, object]] = []
        self.transport = _Transport()
        self.protocol = self._connect()

    def _connect(self) -> EdgeProtocol:
        self.transport = _Transport()
        protocol = EdgeProtocol(self.server)
        protocol.connection_made(self.transport)  # type: ignore[arg-type]
        return protocol

    def feed(self, data: bytes) -> None:
        self.protocol.data_received(data)

    def outcome(self) -> tuple[bytes, bool, bool, bool]:
        """What the client saw so far on this connection."""
        # The origin's timing is the one thing that differs between two runs.
        written = _TIMING.sub(b"origin;dur=X", b"".join(self.transport.written))
        return (
            written,
            self.transport.closed,
            self.transport.eof,
            self.protocol.closing,
        )

    def reconnect_if_done(self) -> None:
        if self.protocol.closing or self.transport.closed:
            self.log.append(("connection", self.outcome()))
            self.protocol.connection_lost(None)
            self.protocol = self._connect()


async def _settle(*sides: _Side) -> None:
    for _ in range(50):
        await asyncio.sleep(0)
        if not any(side.protocol.busy for side in sides):
            return


def _pieces(requests: list[bytes], cuts: list[int]) -> list[bytes]:
    data = b"".join(requests)
    points = sorted({cut % len(data) for cut in cuts} - {0})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


Step = tuple[list[bytes], list[int], bool]


async def _compare(steps: list[Step]) -> _Side:
    """Feed each step's requests (cut at its points); let misses finish if it says so."""
    memo, plain = _Side(memo=True), _Side(memo=False)
    for requests, cuts, settle in steps:
        for piece in _pieces(requests, cuts):
            memo.feed(piece)
            plain.feed(piece)
            assert memo.outcome() == plain.outcome()
        if settle:
            # Otherwise the next step arrives while a miss is still being answered.
            await _settle(memo, plain)
            assert memo.outcome() == plain.outcome()
        memo.reconnect_if_done()
        plain.reconnect_if_done()
    await _settle(memo, plain)
    memo.log.append(("connection", memo.outcome()))
    plain.log.append(("connection", plain.outcome()))
    assert memo.log == plain.log
    assert memo.origin.requests == plain.origin.requests
    assert memo.edge.metrics.hits == plain.edge.metrics.hits
    assert len(plain.server.memo) == 0
    return memo


@st.composite
def _steps(draw: st.DrawFn) -> list[Step]:
    """Chunks made of a few requests repeated: the memo only matters for repeats."""
    vocabulary = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=5, unique=True))
    return draw(
        st.lists(
            st.tuples(
                st.lists(st.sampled_from(vocabulary), min_size=1, max_size=3),
                st.one_of(st.just([]), st.lists(st.integers(0, 400), max_size=3)),
                st.booleans(),
            ),
            min_size=1,
            max_size=20,
        )
    )


@settings(max_examples=300, deadline=None)
@given(_steps())
def test_the_memo_answers_byte_for_byte_as_the_parser(
    steps: list[Step],
) -> None:
    asyncio.run(_compare(steps))


def _get(target: bytes, method: bytes = b"GET") -> bytes:
    return method + b" " + target + b" HTTP/1.1\r\n" + H + b"\r\n"


SCENARIOS: dict[str, list[Step]] = {
    # A remembered hit behind a miss still being answered waits its turn.
    "hit behind a miss": [
        ([_get(b"/a")], [], True),
        ([_get(b"/a")], [], True),
        ([_get(b"/missing")], [], False),
        ([_get(b"/a")], [], True),
    ],
    "HEAD remembered": [
        ([_get(b"/a")], [], True),
        ([_get(b"/a", b"HEAD")], [], True),
        ([_get(b"/a", b"HEAD")], [], True),
    ],
    # The query is in this behaviour's key: /q?x=1 is not /q.
    "query in the key": [
        ([_get(b"/q")], [], True),
        ([_get(b"/q?x=1")], [], True),
        ([_get(b"/q?x=1")], [], True),
    ],
    "conditional remembered": [
        ([_get(b"/a")], [], True),
        ([_get(b"/a")[:-2] + b'If-None-Match: "v1"\r\n\r\n'], [], True),
        ([_get(b"/a")[:-2] + b'If-None-Match: "v1"\r\n\r\n'], [], True),
    ],
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenarios_the_memo_must_not_shortcut(name: str) -> None:
    asyncio.run(_compare(SCENARIOS[name]))


def test_repeated_requests_are_answered_from_the_memo_without_the_parser() -> None:
    async def run() -> None:
        wrk = b"GET /a HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
        side = await _compare([([wrk], [], True), ([wrk], [], True), ([wrk], [], True)])
        assert list(side.server.memo) == [wrk]
        # Prove the parser is skipped: one that can no longer parse anything.
        protocol = side.protocol
        protocol.parser = None  # type: ignore[assignment]
        before = len(side.transport.written)
        protocol.data_received(wrk)
        assert len(side.transport.written) == before + 1
        assert side.transport.written[-1].startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nX-Cache: Hit\r\n" in side.transport.written[-1]

    asyncio.run(run())


def test_only_whole_bodiless_kept_alive_requests_read_in_one_piece_are_remembered() -> None:
    async def run() -> None:
        get = b"GET /a HTTP/1.1\r\n" + H + b"\r\n"
        side = await _compare(
            [
                ([get, get], [], True),  # pipelined
                ([get], [7], True),  # split
                ([b"GET /a HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"], [], True),
                ([b"GET /a HTTP/1.0\r\n\r\n"], [], True),
                ([b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc"], [], True),
                ([b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n"], [], True),
                ([b"GET /a HTTP/1.1\r\n" + H + b"X: " + b"v" * MEMO_BYTES + b"\r\n\r\n"], [], True),
                ([b"GET /a HTTP/1.1\r\n\r\n"], [], True),  # refused
            ]
        )
        assert len(side.server.memo) == 0

    asyncio.run(run())


def test_the_memo_is_bounded_and_forgets_the_oldest_first() -> None:
    async def run() -> None:
        side = _Side(memo=True)
        sent = [b"GET /a?%d HTTP/1.1\r\nHost: e\r\n\r\n" % n for n in range(MEMO_SIZE + 50)]
        for data in sent:
            side.feed(data)
            await _settle(side)
        assert not side.protocol.closing
        assert len(side.transport.written) == len(sent)
        assert list(side.server.memo) == sent[50:]

    asyncio.run(run())


def test_a_request_after_connection_close_is_refused_even_if_remembered() -> None:
    async def run() -> None:
        get = b"GET /a HTTP/1.1\r\n" + H + b"\r\n"
        close = b"GET /missing HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"
        sides = _Side(memo=True), _Side(memo=False)
        for side in sides:
            side.feed(get)
            await _settle(side)
            # The miss keeps the connection busy, so the bytes after the closing request
            # reach the protocol before it closes: the parser refuses them, and so must
            # the memo path.
            side.feed(close)
            assert side.protocol.busy
            side.feed(get)
            await _settle(side)
        memo, plain = sides
        assert get in memo.server.memo
        assert memo.outcome() == plain.outcome()
        assert memo.edge.metrics.hits == plain.edge.metrics.hits == 0
        assert memo.protocol.closing

    asyncio.run(run())
