"""The readers of ``bench/publish.py``: N keep-alive connections polling one page.

Run as its own process (pinned to the other core than the server): each
connection (connection I on the I-th of ``--ports``, in turn) sends
``GET PATH`` over raw HTTP/1.1 keep-alive, reads the answer, notes the
page's version (the number after ``version=`` in the body, 0 for a page
that is not there yet), sleeps ``--interval`` and asks again.

Every answer is kept as a triple (time sent, time received, version) on the
system-wide monotonic clock, so that the publisher's and the render
function's moments compare with them. The process speaks on stdout:
``ready`` once every connection has had an answer, then ``all N`` each time
every connection has seen version N or newer. A line on stdin (or its end)
stops it; it then writes each connection's triples to ``OUT/conn-I.bin``
(``array('d')``, machine order) and prints ``done``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import sys
import time
from array import array
from pathlib import Path

VERSION = re.compile(rb"version=(\d+);")


class Reader:
    """One connection's loop and what it saw."""

    def __init__(self, port: int, path: str, interval: float) -> None:
        self.port = port
        self.request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
        self.interval = interval
        self.samples = array("d")
        self.newest = -1

    async def run(self, stop: asyncio.Event, seen: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        # Spread the connections over one interval: in step, they would all poll at
        # once and leave the rest of each interval unwatched.
        await asyncio.sleep(random.uniform(0, self.interval))
        try:
            while not stop.is_set():
                sent = time.monotonic()
                writer.write(self.request)
                status, body = await self._answer(reader)
                received = time.monotonic()
                match = VERSION.search(body) if status == 200 else None
                version = int(match.group(1)) if match else 0
                self.samples.extend((sent, received, float(version)))
                if version > self.newest:
                    self.newest = version
                    seen.set()
                if self.interval > 0:
                    await asyncio.sleep(self.interval)
        finally:
            writer.close()

    @staticmethod
    async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            return status, await reader.readexactly(int(headers["content-length"]))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    return status, body
                body += chunk[:-2]
        raise RuntimeError(f"an answer without a length: {head!r}")


async def main(args: argparse.Namespace) -> None:
    stop, seen = asyncio.Event(), asyncio.Event()
    ports = [int(port) for port in args.ports.split(",")]
    # Connection I polls port I mod len(ports): the same readers watch every side at once.
    readers = [
        Reader(ports[i % len(ports)], args.path, args.interval) for i in range(args.connections)
    ]
    tasks = [asyncio.create_task(r.run(stop, seen)) for r in readers]
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.readline)
    announced_ready, announced = False, -1
    while not stdin_closed.done():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(seen.wait(), 0.05)
        seen.clear()
        for task in tasks:
            if task.done():
                task.result()  # a reader that failed fails the run
        oldest = min(r.newest for r in readers)
        if not announced_ready and oldest >= 0:
            announced_ready = True
            print("ready", flush=True)
        if oldest > announced and oldest > 0:
            announced = oldest
            print(f"all {oldest}", flush=True)
    stop.set()
    await asyncio.gather(*tasks)
    out = Path(args.out)
    for index, r in enumerate(readers):
        with open(out / f"conn-{index}.bin", "wb") as file:
            r.samples.tofile(file)
    print("done", flush=True)


def load(out: Path, connections: int) -> list[list[tuple[float, float, int]]]:
    """Each connection's (sent, received, version) triples, as :func:`main` wrote them."""
    result = []
    for index in range(connections):
        flat = array("d")
        data = (out / f"conn-{index}.bin").read_bytes()
        flat.frombytes(data)
        result.append([(flat[i], flat[i + 1], int(flat[i + 2])) for i in range(0, len(flat), 3)])
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ports", required=True, help="comma-separated; connections take turns")
    parser.add_argument("--path", required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--out", required=True)
    asyncio.run(main(parser.parse_args()))
