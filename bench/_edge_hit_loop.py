"""Per-hit CPU of the edge server, in process: no sockets, no wrk, no scheduler noise.

A measuring tool beside bench/edge.py, not a benchmark of its own (no peer;
the leading underscore keeps ``bench/run.py`` from running it):
``python bench/_edge_hit_loop.py [--hooks]``.

Drives one :class:`reflow.edge.server.EdgeProtocol` with a fake transport and
wrk's exact request bytes (``GET /path HTTP/1.1``, ``Host: 127.0.0.1:PORT``),
one request per ``data_received`` as wrk sends them on a kept-alive
connection, and prints microseconds per hit (the minimum over several runs).
``--hooks`` adds bench/edge.py's viewer-request and viewer-response functions.

``--profile`` prints cProfile's top functions; ``--loop N`` runs N hits once
and exits (for ``valgrind --tool=callgrind``, whose instruction counts do not
depend on the machine's load: run it twice with different N and divide the
difference by the difference in N to get instructions per hit).
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reflow.edge import Behaviour, Edge, EdgeServer, Hook  # noqa: E402
from reflow.edge.origins import OriginRequest, OriginResponse  # noqa: E402
from reflow.edge.server import EdgeProtocol  # noqa: E402


class _Origin:
    """Answers like bench/edge.py's origin (Python's http.server) with a fixed body."""

    def __init__(self, size: int) -> None:
        self.name = "bench"
        self.body = b"x" * size

    async def fetch(self, request: OriginRequest) -> OriginResponse:
        return OriginResponse(
            200,
            [
                ("Server", "SimpleHTTP/0.6 Python/3.11"),
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Content-type", "application/octet-stream"),
                ("Content-Length", str(len(self.body))),
                ("Last-Modified", "Fri, 04 Dec 2026 22:00:00 GMT"),
                ("Cache-Control", "max-age=3600"),
            ],
            self.body,
        )

    async def close(self) -> None:
        return None


class _Transport:
    """Counts what is written; quacks like the transport EdgeProtocol needs."""

    def __init__(self) -> None:
        self.written = 0
        self.last = b""

    def write(self, data: bytes) -> None:
        self.written += 1
        self.last = data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def close(self) -> None:
        raise AssertionError("closed")

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


def _viewer_request(event: dict[str, Any], context: object) -> Any:
    request = event["Records"][0]["cf"]["request"]
    request["headers"]["x-viewer"] = [{"key": "X-Viewer", "value": "seen"}]
    return request


def _viewer_response(event: dict[str, Any], context: object) -> Any:
    response = event["Records"][0]["cf"]["response"]
    response["headers"]["strict-transport-security"] = [
        {"key": "Strict-Transport-Security", "value": "max-age=63072000"}
    ]
    return response


async def _setup(size: int, hooks: bool) -> tuple[EdgeProtocol, bytes]:
    chosen = []
    if hooks:
        chosen = [
            Hook("vreq", "viewer-request", "/*", _viewer_request),
            Hook("vres", "viewer-response", "/*", _viewer_response),
        ]
    edge = Edge([Behaviour("*", _Origin(size))], chosen)
    server = EdgeServer(edge, port=0)
    protocol = EdgeProtocol(server)
    protocol.connection_made(_Transport())  # type: ignore[arg-type]
    raw = b"GET /file HTTP/1.1\r\nHost: 127.0.0.1:45678\r\n\r\n"
    protocol.data_received(raw)  # the miss: answered in a task
    for _ in range(50):
        await asyncio.sleep(0)
        if not protocol.busy:
            break
    assert not protocol.busy
    return protocol, raw


def run(protocol: EdgeProtocol, raw: bytes, hits: int) -> float:
    """Seconds for ``hits`` hits."""
    feed = protocol.data_received
    started = time.perf_counter()
    for _ in range(hits):
        feed(raw)
    return time.perf_counter() - started


def main() -> None:
    """Print µs per hit (min of --runs)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--hooks", action="store_true")
    parser.add_argument("--hits", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--loop", type=int, default=0, help="run N hits once, print nothing")
    args = parser.parse_args()
    protocol, raw = asyncio.run(_setup(args.size, args.hooks))
    transport: Any = protocol.transport
    assert isinstance(transport, _Transport)
    before = transport.written
    if args.loop:
        run(protocol, raw, args.loop)
        assert transport.written - before == args.loop
        return
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        run(protocol, raw, args.hits)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    best = min(run(protocol, raw, args.hits) for _ in range(args.runs))
    assert transport.written - before == args.hits * args.runs
    print(
        f"{best / args.hits * 1e6:.3f} µs/hit ({'hooks' if args.hooks else 'plain'}, "
        f"{args.size} B, min of {args.runs} x {args.hits})"
    )
    print(transport.last[:400].decode("latin-1"))


if __name__ == "__main__":
    main()
