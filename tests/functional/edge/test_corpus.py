"""A malformed-request corpus: every case followed by canaries on the same and a fresh connection.

Each raw request carries, where a body would be, a smuggled ``GET /poison``.
After each case: the origin must never have been asked for ``/poison``
(no desync), the canary sent right behind the case on the same connection
is either answered correctly or never answered because the connection was
closed after an error (no desync), a canary on a fresh connection gets the
canary body (no crash, no poisoned cache entry), and the server holds no
connection afterwards. The corpus runs twice and resident memory must not
grow between the passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator

from tests.functional.edge.conftest import Harness, start_harness, stop_harness

SMUGGLED = b"GET /poison HTTP/1.1\r\nHost: e\r\n\r\n"
CANARY = b"GET /canary HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n"

TE_VALUES = [
    b"chunked",
    b" chunked",
    b"chunked ",
    b"Chunked",
    b"CHUNKED",
    b"\tchunked",
    b"xchunked",
    b"chunked, identity",
    b"identity, chunked",
    b"gzip, chunked",
    b"chunked, chunked",
    b"gzip",
    b"identity",
    b"chunked;q=1",
    b"chu nked",
    b'"chunked"',
    b"chunked\x0b",
    b"chunk",
    b"",
    b"x",
]
CL_VALUES = [
    b"+5",
    b"-5",
    b"0_2e",
    b"5 5",
    b"5,5",
    b"0x5",
    b"5.0",
    b"1e1",
    b"\xd9\xa5",
    b"",
    b"99999999999999999999999",
    b"5\x00",
    b"0 5",
    b"5;",
    b"five",
    b"0005a",
    b"--1",
    b"5e",
    b"\t",
    b"1\t1",
]
CHUNK_SIZES = [
    b"0x5",
    b"-5",
    b"+5",
    b"5 5",
    b"g",
    b"FFFFFFFFFFFFFFFFFF",
    b"5_0",
    b"",
    b" ",
    b"5\x00",
    b"\xff",
    b"5\r",
    b"1;\r",
    b"5 ;a=b",
    b"1e",
    b"0.5",
    b"z1",
    b"5\n",
    b"\t5",
    b"0x0",
]
BAD_VERSIONS = [
    b"HTTP/1.2",
    b"HTTP/2.0",
    b"HTTP/0.9",
    b"HTTP/1",
    b"http/1.1",
    b"HTTP/1.1x",
    b"HTTPS/1.1",
]


def _framing_cases() -> Iterator[bytes]:
    for method in (b"POST", b"GET"):
        for te in TE_VALUES:
            te_line = b"Transfer-Encoding: " + te + b"\r\n"
            body = b"0\r\n\r\n" + SMUGGLED
            # CL.TE and TE.CL: both framings present, in each order.
            yield (
                method
                + b" / HTTP/1.1\r\nHost: e\r\nContent-Length: 5\r\n"
                + te_line
                + b"\r\n"
                + body
            )
            yield (
                method
                + b" / HTTP/1.1\r\nHost: e\r\n"
                + te_line
                + b"Content-Length: 5\r\n\r\n"
                + body
            )
            # TE.TE: an obfuscated second Transfer-Encoding.
            yield (
                method
                + b" / HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n"
                + te_line
                + b"\r\n"
                + body
            )
        for value in CL_VALUES:
            yield (
                method
                + b" / HTTP/1.1\r\nHost: e\r\nContent-Length: "
                + value
                + b"\r\n\r\nhello"
                + SMUGGLED
            )
        yield (
            method
            + b" / HTTP/1.1\r\nHost: e\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
            + SMUGGLED
        )
        yield (
            method
            + b" / HTTP/1.1\r\nHost: e\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
            + SMUGGLED
        )
        yield method + b" / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED


def _chunk_cases() -> Iterator[bytes]:
    for size in CHUNK_SIZES:
        yield (
            b"POST / HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n"
            + size
            + b"\r\nhello\r\n0\r\n\r\n"
            + SMUGGLED
        )
    yield (
        b"POST / HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n"
        + SMUGGLED
    )


def _character_cases() -> Iterator[bytes]:
    for code in [*range(0, 9), *range(10, 32), 127]:
        char = bytes([code])
        yield b"GET / HTTP/1.1\r\nHost: e\r\nX-A" + char + b"B: v\r\n\r\n" + SMUGGLED
        yield b"GET / HTTP/1.1\r\nHost: e\r\nX-Value: a" + char + b"b\r\n\r\n" + SMUGGLED
    for name in (b"X Y", b"X(Y)", b"X;Y", b"", b'X"', b"[x]", b"X@Y", b"X,Y", b"X/Y", b"X\\Y"):
        yield b"GET / HTTP/1.1\r\nHost: e\r\n" + name + b": v\r\n\r\n" + SMUGGLED
    # Obsolete line folding, and whitespace before the colon.
    yield b"GET / HTTP/1.1\r\nHost: e\r\nX: a\r\n b\r\n\r\n" + SMUGGLED
    yield b"GET / HTTP/1.1\r\nHost: e\r\nX: a\r\n\tb\r\n\r\n" + SMUGGLED
    yield b"GET / HTTP/1.1\r\n Host: e\r\n\r\n" + SMUGGLED
    yield b"GET / HTTP/1.1\r\nHost : e\r\n\r\n" + SMUGGLED
    yield b"GET / HTTP/1.1\r\nHost\t: e\r\n\r\n" + SMUGGLED
    yield (
        b"POST / HTTP/1.1\r\nHost: e\r\nContent-Length: 5\r\n Transfer-Encoding: chunked\r\n\r\n"
        + b"0\r\n\r\n"
        + SMUGGLED
    )


def _line_cases() -> Iterator[bytes]:
    for version in BAD_VERSIONS:
        yield b"GET / " + version + b"\r\nHost: e\r\n\r\n" + SMUGGLED
    yield b"GET /" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: e\r\n\r\n" + SMUGGLED
    yield b"GET /?" + b"q" * 20_000 + b" HTTP/1.1\r\nHost: e\r\n\r\n" + SMUGGLED
    yield b"GET / HTTP/1.1\r\nHost: e\r\nX: " + b"v" * 40_000 + b"\r\n\r\n" + SMUGGLED
    yield b"GET / HTTP/1.1\r\nHost: e\r\n" + b"X-Many: 1\r\n" * 200 + b"\r\n" + SMUGGLED
    yield b"GET / HTTP/1.1\nHost: e\n\n" + SMUGGLED
    yield b"GET / HTTP/1.1\rHost: e\r\r" + SMUGGLED
    yield b"GET / HTTP/1.1 \r\nHost: e\r\n\r\n" + SMUGGLED
    yield b"GET /%00 HTTP/1.1\r\nHost: e\r\n\r\n" + SMUGGLED
    yield b"GET /%zz HTTP/1.1\r\nHost: e\r\n\r\n" + SMUGGLED
    yield b"GET /a\x00b HTTP/1.1\r\nHost: e\r\n\r\n" + SMUGGLED
    yield b"GET * HTTP/1.1\r\nHost: e\r\n\r\n" + SMUGGLED
    yield b"GET example.com HTTP/1.1\r\nHost: e\r\n\r\n" + SMUGGLED
    yield b"BREW / HTTP/1.1\r\nHost: e\r\n\r\n" + SMUGGLED
    yield b"CONNECT e:443 HTTP/1.1\r\nHost: e\r\n\r\n" + SMUGGLED
    yield b"GET / HTTP/1.1\r\n\r\n" + SMUGGLED
    yield b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + SMUGGLED
    yield b"POST / HTTP/1.1\r\nHost: e\r\nContent-Length: 2000000\r\n\r\n" + SMUGGLED


def _obfuscated_names() -> Iterator[bytes]:
    # Framing headers spelled so that a lenient parser might still honour them.
    for name in (b"Content-Length", b"Transfer-Encoding"):
        value = b"5" if name == b"Content-Length" else b"chunked"
        for line in (
            name + b" : " + value,
            name + b"\t: " + value,
            b" " + name + b": " + value,
            name + b":\x0b" + value,
            name + b":\x0c" + value,
            name + b": " + value + b"\x00",
            name + b"\x00: " + value,
            name + b": " + value + b"\rX: y",
        ):
            yield b"POST / HTTP/1.1\r\nHost: e\r\n" + line + b"\r\n\r\n0\r\n\r\n" + SMUGGLED


def corpus() -> list[bytes]:
    return [
        *_framing_cases(),
        *_chunk_cases(),
        *_character_cases(),
        *_line_cases(),
        *_obfuscated_names(),
    ]


def test_the_corpus_holds_at_least_300_requests() -> None:
    assert len(corpus()) >= 300


async def _run_case(harness: Harness, raw: bytes) -> tuple[list[int], bool]:
    client = await harness.connect()
    with contextlib.suppress(ConnectionError):
        await client.send(raw + CANARY)
    replies = []
    with contextlib.suppress(ConnectionError):
        replies = await client.replies(3, timeout=5)
    statuses = [r.status for r in replies]
    canary_ok = any(r.body == b"canary" for r in replies)
    await client.close()
    harness.clients.remove(client)
    for reply in replies:
        # Either the canary, or the answer to the case itself: never the smuggled request.
        assert reply.body != b"poisoned", raw[:80]
    return statuses, canary_ok


async def _fresh_canary(harness: Harness) -> None:
    client = await harness.connect()
    reply = await client.get("/canary")
    assert (reply.status, reply.body) == (200, b"canary")
    await client.close()
    harness.clients.remove(client)


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


async def test_malformed_requests_cause_no_desync_crash_or_poisoning() -> None:
    harness = await start_harness(head_timeout=2)
    try:
        harness.origin.serve("/canary", b"canary")
        harness.origin.serve("/poison", b"poisoned")
        cases = corpus()
        memory = []
        for _ in range(2):
            rejected = 0
            for raw in cases:
                statuses, canary_ok = await _run_case(harness, raw)
                if not statuses or statuses[0] >= 400:
                    # A rejection closes the connection: the canary behind it is never read.
                    # (No reply at all: the server closed while a 1 MB line was still being
                    # sent, and the reset overtook its 414.)
                    rejected += 1
                    assert len(statuses) <= 1, (raw[:80], statuses)
                else:
                    assert canary_ok, (raw[:80], statuses)
                await _fresh_canary(harness)
            assert all(r.path != "/poison" for r in harness.origin.requests)
            gc.collect()
            memory.append(_rss())
            await asyncio.sleep(0)
        assert rejected == len(cases)  # every case in the corpus is malformed
        for _ in range(100):  # the last close may still be on its way
            if not harness.server.connections:
                break
            await asyncio.sleep(0.01)
        assert len(harness.server.connections) == 0
        cached = harness.edge.store.get("/canary", [])
        assert cached is not None and cached.body == b"canary"
        assert harness.edge.store.get("/poison", []) is None
        assert memory[1] - memory[0] < 8 * 1024 * 1024
    finally:
        await stop_harness(harness)
