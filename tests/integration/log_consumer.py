"""A consumer process for the SIGKILL fault tests (run as a script, not collected).

    python log_consumer.py URL DATA_DIR STREAM GROUP CONSUMER --lease S --ack-first K

With ``--produce`` it instead appends ``produced-<n>`` entries to STREAM as
fast as it can, printing ``APPENDED <id>`` after each append returned, until
it is killed (GROUP and CONSUMER are then unused).

Otherwise it opens the backend, then reads one entry at a time with a lease and acks
it, printing ``GOT <id> <deliveries>`` before each ack and ``ACKED <id>``
after it. After ``K`` acks it reads one more entry, prints
``HOLDING <id> <deliveries>`` and waits forever without acking, for the test
to kill it. Every line is flushed at once so the test can follow along.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from reflow.backends import open_backend


def say(*words: object) -> None:
    print(*words, flush=True)


async def produce(args: argparse.Namespace) -> None:
    backend = await open_backend(args.url, data_dir=Path(args.data_dir))
    try:
        say("READY")
        n = 0
        while True:
            entry_id = await backend.log.append(args.stream, f"produced-{n}".encode())
            say("APPENDED", entry_id)
            n += 1
    finally:
        await backend.close()


async def consume(args: argparse.Namespace) -> None:
    backend = await open_backend(args.url, data_dir=Path(args.data_dir))
    try:
        say("READY")
        acked = 0
        while True:
            entries = await backend.log.read(
                args.stream, args.group, args.consumer, count=1, lease=args.lease, block=1.0
            )
            if not entries:
                continue
            (entry,) = entries
            if acked >= args.ack_first:
                say("HOLDING", entry.id, entry.deliveries)
                await asyncio.Event().wait()  # until SIGKILL
            say("GOT", entry.id, entry.deliveries)
            await backend.log.ack(args.stream, args.group, [entry.id])
            acked += 1
            say("ACKED", entry.id)
    finally:
        await backend.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("url", "data_dir", "stream", "group", "consumer"):
        parser.add_argument(name)
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--ack-first", type=int, default=sys.maxsize)
    parser.add_argument("--produce", action="store_true")
    args = parser.parse_args()
    asyncio.run(produce(args) if args.produce else consume(args))


if __name__ == "__main__":
    main()
