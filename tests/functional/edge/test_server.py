"""The HTTP/1.1 server: keep-alive, pipelining, limits, timeouts, normalisation, shutdown."""

from __future__ import annotations

import asyncio
import gc
import weakref

from reflow.edge.server import EdgeProtocol
from tests.functional.edge.conftest import Harness, settle, start_harness, stop_harness


async def test_miss_then_hit_on_one_kept_alive_connection(harness: Harness) -> None:
    harness.origin.serve("/a", b"alpha")
    client = await harness.connect()
    first = await client.get("/a")
    second = await client.get("/a")
    assert (first.status, first.headers["x-cache"], first.body) == (200, "Miss", b"alpha")
    assert (second.status, second.headers["x-cache"], second.body) == (200, "Hit", b"alpha")
    assert first.headers["server-timing"].startswith("origin;dur=")
    assert "server-timing" not in second.headers
    assert harness.origin.fetches == 1


async def test_pipelined_requests_are_answered_in_order_across_misses_and_hits(
    harness: Harness,
) -> None:
    for name in "abc":
        harness.origin.serve(f"/{name}", name.encode() * 3)
    harness.origin.delay = 0.01
    client = await harness.connect()
    await client.get("/b")  # b is a hit below, a and c are misses
    batch = b"".join(f"GET /{n} HTTP/1.1\r\nHost: e\r\n\r\n".encode() for n in "abcba")
    await client.send(batch)
    replies = await client.replies(5)
    assert [r.body for r in replies] == [b"aaa", b"bbb", b"ccc", b"bbb", b"aaa"]


async def test_head_gets_headers_and_length_without_body(harness: Harness) -> None:
    harness.origin.serve("/h", b"0123456789")
    client = await harness.connect()
    await client.get("/h")
    await client.send(b"HEAD /h HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n")
    raw = await client.reader.read()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Length: 10" in head and body == b""


async def test_connection_close_and_http_1_0_close_after_the_response(harness: Harness) -> None:
    harness.origin.serve("/c", b"x")
    client = await harness.connect()
    await client.send(b"GET /c HTTP/1.0\r\n\r\n")
    assert (await client.replies(1))[0].status == 200
    assert await client.closed(2)


async def test_dot_segments_percent_encoding_and_slashes_share_one_cache_entry(
    harness: Harness,
) -> None:
    harness.origin.serve("/a/b~c", b"same")
    client = await harness.connect()
    for target in ("/a/b~c", "/a/./x/../b%7Ec", "//a///b%7ec", "/a/b%7E%63"):
        reply = await client.get(target)
        assert reply.body == b"same", target
    assert harness.origin.fetches == 1
    assert harness.origin.requests[0].path == "/a/b~c"


async def test_unkeyed_headers_and_query_never_reach_the_origin_or_the_cache(
    harness: Harness,
) -> None:
    harness.origin.serve("/p", b"page")
    client = await harness.connect()
    await client.get("/p?utm=1", "X-Forwarded-Host: evil.example", "Cookie: s=1")
    request = harness.origin.requests[0]
    assert request.query == "" and request.headers == []
    hit = await client.get("/p?other=2", "X-Forwarded-Host: other")
    assert hit.headers["x-cache"] == "Hit"


async def test_long_request_line_gets_414_and_close(harness: Harness) -> None:
    client = await harness.connect()
    await client.send(b"GET /" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: e\r\n\r\n")
    (reply,) = await client.replies(1)
    assert reply.status == 414
    assert await client.closed()


async def test_large_header_block_gets_431_and_close(harness: Harness) -> None:
    client = await harness.connect()
    headers = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(64))
    await client.send(b"GET / HTTP/1.1\r\nHost: e\r\n" + headers + b"\r\n")
    (reply,) = await client.replies(1)
    assert reply.status == 431
    assert await client.closed()


async def test_slowloris_head_is_cut_off_after_the_head_timeout() -> None:
    harness = await start_harness(head_timeout=0.2)
    try:
        client = await harness.connect()
        await client.send(b"GET / HTTP/1.1\r\nHost: e\r\n")  # never finishes the head
        (reply,) = await client.replies(1, timeout=3)
        assert reply.status == 408
        assert await client.closed(3)
    finally:
        await stop_harness(harness)


async def test_connections_past_the_cap_get_503() -> None:
    harness = await start_harness(max_connections=2)
    try:
        harness.origin.serve("/", b"ok")
        kept = [await harness.connect(), await harness.connect()]
        for client in kept:
            assert (await client.get("/")).status == 200
        extra = await harness.connect()
        (reply,) = await extra.replies(1)
        assert reply.status == 503
    finally:
        await stop_harness(harness)


async def test_graceful_shutdown_finishes_the_request_in_flight() -> None:
    harness = await start_harness()
    harness.origin.serve("/slow", b"done")
    harness.origin.delay = 0.2
    client = await harness.connect()
    await client.send(b"GET /slow HTTP/1.1\r\nHost: e\r\n\r\n")
    await asyncio.sleep(0.05)
    stopping = asyncio.create_task(stop_harness_keep_clients(harness))
    (reply,) = await client.replies(1)
    await stopping
    assert reply.body == b"done"
    await client.close()


async def stop_harness_keep_clients(harness: Harness) -> None:
    await harness.server.stop()


async def test_stop_refuses_new_connections() -> None:
    harness = await start_harness()
    port = harness.server.port
    await stop_harness(harness)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    writer.close()
    raise AssertionError("the port still accepts connections after stop()")


async def test_upgrade_is_not_offered_the_request_is_answered_and_the_rest_unread(
    harness: Harness,
) -> None:
    harness.origin.serve("/", b"plain")
    harness.origin.serve("/poison", b"poisoned")
    client = await harness.connect()
    await client.send(
        b"GET / HTTP/1.1\r\nHost: e\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
        b"GET /poison HTTP/1.1\r\nHost: e\r\n\r\n"
    )
    replies = await client.replies(2)
    assert [r.body for r in replies] == [b"plain"]
    assert all(r.path != "/poison" for r in harness.origin.requests)


async def test_a_client_that_does_not_read_is_paused_not_buffered_without_end(
    harness: Harness,
) -> None:
    harness.origin.serve("/x", b"x" * 10_000)
    harness.origin.serve("/y", b"y" * 10_000)
    client = await harness.connect()
    await client.get("/x")
    await client.get("/y")
    count = 3000
    batch = b"".join(
        f"GET /{'xy'[i % 2]} HTTP/1.1\r\nHost: e\r\n\r\n".encode() for i in range(count)
    )
    await client.send(batch)
    await asyncio.sleep(0.3)
    (connection,) = harness.server.connections
    assert connection.write_paused
    buffered = connection.transport.get_write_buffer_size()  # type: ignore[union-attr]
    assert buffered < 2 * 1024 * 1024  # not 30 MB of responses
    replies = await client.replies(count, timeout=20)
    assert len(replies) == count
    assert all(r.body[:1] == b"xy"[i % 2 : i % 2 + 1] for i, r in enumerate(replies))


async def test_an_endless_header_is_cut_off_with_431(harness: Harness) -> None:
    client = await harness.connect()
    await client.send(b"GET / HTTP/1.1\r\nHost: e\r\nX-Endless: ")
    for _ in range(40):
        try:
            await client.send(b"v" * 8192)
        except ConnectionError:
            break
        await asyncio.sleep(0)
    (reply,) = await client.replies(1)
    assert reply.status == 431
    assert await client.closed()


async def test_a_pipelined_burst_larger_than_the_head_limit_is_not_refused(
    harness: Harness,
) -> None:
    harness.origin.serve("/p", b"ok")
    client = await harness.connect()
    batch = b"GET /p HTTP/1.1\r\nHost: e\r\nX-Pad: " + b"p" * 900 + b"\r\n\r\n"
    await client.send(batch * 200)  # ~190 KB in a few reads
    replies = await client.replies(200)
    assert [r.status for r in replies] == [200] * 200


async def test_random_pipelines_of_hits_misses_and_conditionals_keep_their_order(
    harness: Harness,
) -> None:
    import random

    for name in "abcdef":
        harness.origin.serve(f"/{name}", name.encode() * 5, [("Cache-Control", "max-age=60")])
    harness.origin.delay = 0.002
    rng = random.Random(5)
    client = await harness.connect()
    for _ in range(20):
        picks = [rng.choice("abcdefz") for _ in range(rng.randint(1, 30))]
        lines = []
        for pick in picks:
            extra = "Range: bytes=0-1\r\n" if rng.random() < 0.2 else ""
            lines.append(f"GET /{pick} HTTP/1.1\r\nHost: e\r\n{extra}\r\n")
        await client.send("".join(lines).encode())
        replies = await client.replies(len(picks))
        for pick, line, reply in zip(picks, lines, replies, strict=True):
            if pick == "z":
                assert reply.status == 404
            elif "Range" in line:
                assert (reply.status, reply.body) == (206, pick.encode() * 2)
            else:
                assert reply.body == pick.encode() * 5


async def test_an_unexpected_error_is_a_500_and_a_close_not_a_hang(harness: Harness) -> None:
    def broken(request: object) -> object:
        raise ZeroDivisionError("bug")

    harness.origin.answers["/bug"] = broken  # type: ignore[assignment]
    client = await harness.connect()
    await client.send(b"GET /bug HTTP/1.1\r\nHost: e\r\n\r\n")
    (reply,) = await client.replies(1)
    assert reply.status == 500
    assert await client.closed()
    assert harness.server.errors == 1


async def test_closed_connections_are_freed_without_the_cyclic_gc(harness: Harness) -> None:
    # A protocol and its parser refer to each other, and a rejection's traceback
    # holds frames that hold the protocol; left as cycles, every closed connection
    # waited for a full collection (whose pause grows with the heap) to be freed.
    harness.origin.serve("/a", b"alpha")
    requests = [
        b"GET /a HTTP/1.1\r\nHost: e\r\n\r\nGET /a HTTP/1.1\r\nHost: e\r\n\r\n",  # miss, hit
        b"GET /a HTTP/1.1\r\nHost: e\r\nContent-Length: +5\r\n\r\n",  # rejected by llhttp
        b"GET /%zz HTTP/1.1\r\nHost: e\r\n\r\n",  # rejected by the normaliser
        b"GET /a HTTP/1.1\r\nHost: e\r\nHost: f\r\n\r\n",  # rejected after the head
    ]
    gc.collect()
    gc.disable()
    try:
        protocols = []
        for raw in requests:
            await settle(lambda: not harness.server.connections)
            client = await harness.connect()
            await settle(lambda: bool(harness.server.connections))
            (protocol,) = harness.server.connections
            protocols.append(weakref.ref(protocol))
            del protocol
            await client.send(raw)
            assert (await client.replies(2 if raw.count(b"GET") == 2 else 1))[0].status
            await client.close()
            harness.clients.remove(client)
        await settle(lambda: not harness.server.connections)
        await asyncio.sleep(0.05)  # connection_lost runs a loop turn after the close
        assert [ref() for ref in protocols] == [None] * len(requests)
    finally:
        gc.enable()


class _IdleTransport:
    """A transport whose close is recorded in a shared log."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 40000)

    def close(self) -> None:
        self.log.append("close")


async def test_the_sweeper_lets_requests_through_between_chunks_of_connections() -> None:
    # One pass over 10,000 connections took 4.4 ms of CPU in one piece; in chunks of
    # 1,000 with a loop turn between them, other work runs in the middle of a pass.
    harness = await start_harness(idle_timeout=0.05, head_timeout=0.1)
    log: list[str] = []
    try:
        for _ in range(2500):
            protocol = EdgeProtocol(harness.server)
            protocol.connection_made(_IdleTransport(log))  # type: ignore[arg-type]
            protocol.last_seen -= 1.0  # idle for longer than idle_timeout
        stop = False

        async def ticker() -> None:
            while not stop:
                if log and log[-1] != "tick":
                    log.append("tick")
                await asyncio.sleep(0)

        ticking = asyncio.create_task(ticker())
        await settle(lambda: log.count("close") == 2500)
        stop = True
        await ticking
        closes = [index for index, entry in enumerate(log) if entry == "close"]
        between = log[closes[0] : closes[-1]]
        assert between.count("tick") >= 2  # two loop turns inside the pass
        assert all(len(run) <= 1000 for run in "".join(e[0] for e in between).split("t"))
    finally:
        harness.server.connections.clear()
        await stop_harness(harness)
