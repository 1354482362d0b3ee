"""Retries waiting out their back-off, parked in ``KV`` until they are due.

A delivery that failed is retried after a back-off (seconds to minutes). If
the retry record waited for its time in the rule's delivery stream, a worker
reading it would have to hold it until then, and a worker holds a bounded
number of records: enough of them waiting would keep the rule's fresh events
from being read at all. So a retry is **parked** instead: written to ``KV``
under ``events.retry/<due-ms>-<random>/<stream>`` — keys in due order, for
every rule alike — before the failed record is acknowledged, and moved back
to its stream by a **waker** once it is due, where any worker of the rule
delivers it at once.

Moving is exactly-once across processes and safe against crashes. A parked
value is ``<claimed-until>\n<record>`` with ``0`` when nobody moves it. A
waker first claims the key with a compare-and-set on its version (``until``
= now + a lease, on the Clock), then appends the record, then deletes the
key at the version it wrote. Two wakers never both move a record; a waker
killed after its claim leaves a claim that another takes over once its
lease has run out; one killed after the append but before the delete leaves
a record that is moved a second time (a duplicate attempt of the same event
id, as at-least-once allows).

Each bus runs one waker per process, for all its rules (and any other
stream's parked records: a record goes back to its own stream, whoever
moves it). It sleeps on the Clock until the earliest parked record is due,
wakes at once when its own process parks an earlier one, and looks again
every ``look_every`` seconds of real time for records parked by other
processes (one of which may have died). So an idle process costs one
``KV`` scan per ``look_every``, however many rules it runs.

:meth:`ParkedRetries.list` reads what is parked, in due order, without
claiming anything (``reflow events retries``, ``GET /api/events/retries``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reflow.backends.protocols import KV, Item, Log
from reflow.clock import Clock
from reflow.errors import VersionConflictError

__all__ = ["RETRY_PREFIX", "ParkedRetries", "ParkedRetry"]

_log = logging.getLogger("reflow.events")

CLAIM_LEASE = 30.0  # seconds a waker has to move a record it claimed
LOOK_EVERY = 10.0  # real seconds between looks for records other processes parked
SCAN_BATCH = 64
RETRY_PREFIX = "events.retry/"
# The rest of a parked key after the prefix: due time, a random part, stream.
_TAIL = re.compile(r"(\d{15})-[0-9a-f]{32}/(.+)")


@dataclass(frozen=True)
class ParkedRetry:
    """One parked retry as listed: where it goes back to, when, and what it carries.

    ``record`` is the parked delivery record (``rule``, ``event``,
    ``attempt``, ``error``, ...), or ``None`` if it is not JSON (a record
    another stream parked).
    """

    key: str
    stream: str
    due: float  # epoch seconds
    claimed_until: float  # 0: nobody is moving it
    record: dict[str, Any] | None

    @property
    def rule(self) -> str | None:
        """The rule the retry belongs to, if the record names one."""
        rule = (self.record or {}).get("rule")
        return str(rule) if rule is not None else None

    @property
    def event_id(self) -> str | None:
        """The id of the event being retried."""
        event = (self.record or {}).get("event")
        return str(event["id"]) if isinstance(event, dict) and "id" in event else None

    @property
    def attempt(self) -> int | None:
        """The number of the attempt it will be."""
        attempt = (self.record or {}).get("attempt")
        return int(attempt) if attempt is not None else None

    @property
    def error(self) -> dict[str, Any] | None:
        """The failure of the previous attempt (``type``, ``message``), if kept."""
        error = (self.record or {}).get("error")
        return error if isinstance(error, dict) else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (for the CLI and the admin API)."""
        due = datetime.fromtimestamp(self.due, UTC).isoformat(timespec="milliseconds")
        return {
            "key": self.key,
            "stream": self.stream,
            "rule": self.rule,
            "event_id": self.event_id,
            "attempt": self.attempt,
            "due": due.replace("+00:00", "Z"),
            "due_at": self.due,
            "claimed_until": self.claimed_until or None,
            "error": self.error,
        }


class ParkedRetries:
    """Parked retries: park a record until a time, move due ones back to their stream."""

    def __init__(
        self,
        kv: KV,
        log: Log,
        *,
        clock: Clock,
        lease: float = CLAIM_LEASE,
        look_every: float = LOOK_EVERY,
    ) -> None:
        self.kv = kv
        self.log = log
        self.clock = clock
        self.lease = lease
        self.look_every = look_every
        self.moved = 0  # records this process moved back, for inspection
        # Made by run(), in the loop that waits on it (a bus may be started
        # again in another loop).
        self._nudge: asyncio.Event | None = None

    async def park(self, stream: str, record: bytes, due: float) -> str:
        """Keep ``record`` until ``due`` (epoch seconds), then append it to ``stream``.

        Durable when this returns.
        """
        key = f"{RETRY_PREFIX}{max(0, int(due * 1000)):015d}-{uuid.uuid4().hex}/{stream}"
        await self.kv.put(key, b"0\n" + record)
        if self._nudge is not None:
            self._nudge.set()  # it may be due before what the waker sleeps towards
        return key

    async def list(
        self, *, streams: set[str] | None = None, limit: int | None = None
    ) -> list[ParkedRetry]:
        """What is parked, soonest due first; only for ``streams`` if given."""
        return await parked(self.kv, streams=streams, limit=limit)

    async def run(self) -> None:
        """The waker: move records back to the stream as they fall due, forever."""
        nudge = self._nudge = asyncio.Event()
        while True:
            nudge.clear()
            try:
                wake_at = await self.move_due()
            except Exception:
                # A backend hiccup: parked records stay parked; look again later.
                _log.exception("moving due retries back to their streams failed")
                wake_at = None
            await self._wait(wake_at, nudge)

    async def move_due(self) -> float | None:
        """Move every record due now; return when to look next (None: nothing parked)."""
        after: str | None = None
        soonest: float | None = None  # the end of another waker's claim, if any
        while True:
            items = await self.kv.scan(RETRY_PREFIX, start_after=after, limit=SCAN_BATCH)
            now = self.clock.time()
            for item in items:
                due = self._due(item)
                if due is None:
                    continue
                if due > now:
                    # Keys are in due order: the rest fall due later still.
                    return due if soonest is None else min(due, soonest)
                claimed_until = await self._move(item, now)
                if claimed_until is not None:
                    soonest = claimed_until if soonest is None else min(soonest, claimed_until)
            if len(items) < SCAN_BATCH:
                return soonest
            after = items[-1].key

    def _due(self, item: Item) -> float | None:
        tail = _TAIL.fullmatch(item.key, len(RETRY_PREFIX))
        return int(tail.group(1)) / 1000 if tail is not None else None

    async def _move(self, item: Item, now: float) -> float | None:
        """Move one due record to the stream; return the claim's end if another waker has it."""
        header, _, record = item.value.partition(b"\n")
        claimed_until = float(header)
        if claimed_until > now:
            return claimed_until
        claim = f"{now + self.lease!r}\n".encode() + record
        try:
            version = await self.kv.put(item.key, claim, expect_version=item.version)
        except VersionConflictError:
            return None  # another waker claimed it first
        await self.log.append(item.key.split("/", 2)[2], record)
        self.moved += 1
        with contextlib.suppress(VersionConflictError):
            # A conflict: our claim ran out and another waker took the record
            # over (and moved it again); it deletes the key.
            await self.kv.delete(item.key, expect_version=version)
        return None

    async def _wait(self, wake_at: float | None, nudge: asyncio.Event) -> None:
        """Wait until ``wake_at`` (Clock), a park here, or ``look_every`` real seconds."""
        waits: list[asyncio.Task[None]] = [asyncio.create_task(_wait_for(nudge))]
        if wake_at is not None:
            waits.append(asyncio.create_task(self.clock.sleep(wake_at - self.clock.time())))
        try:
            await asyncio.wait(waits, timeout=self.look_every, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)


async def parked(
    kv: KV, *, streams: set[str] | None = None, limit: int | None = None
) -> list[ParkedRetry]:
    """The retries parked in ``kv``, soonest due first (see :meth:`ParkedRetries.list`)."""
    found: list[ParkedRetry] = []
    after: str | None = None
    while limit is None or len(found) < limit:
        items = await kv.scan(RETRY_PREFIX, start_after=after, limit=SCAN_BATCH)
        for item in items:
            retry = _listed(item)
            if retry is not None and (streams is None or retry.stream in streams):
                found.append(retry)
        if len(items) < SCAN_BATCH:
            break
        after = items[-1].key
    return found if limit is None else found[:limit]


def _listed(item: Item) -> ParkedRetry | None:
    tail = _TAIL.fullmatch(item.key, len(RETRY_PREFIX))
    if tail is None:
        return None
    header, _, data = item.value.partition(b"\n")
    try:
        claimed_until = float(header)
    except ValueError:
        claimed_until = 0.0
    try:
        record = json.loads(data)
    except ValueError:
        record = None
    return ParkedRetry(
        key=item.key,
        stream=tail.group(2),
        due=int(tail.group(1)) / 1000,
        claimed_until=claimed_until,
        record=record if isinstance(record, dict) else None,
    )


async def _wait_for(event: asyncio.Event) -> None:
    await event.wait()
