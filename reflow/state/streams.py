"""Change streams: every write to a streamed table, exactly once, in order per item.

The crash window, and how it is closed
--------------------------------------
A write touches two primitives — the item in the ``KV`` and the record in the
``Log`` — and no backend offers one transaction over both. Writing the item
then appending could lose the record (crash in between); appending first
could publish a write that never happened. So a table write never touches the
Log: it puts the record into an **outbox** key (``t/<table>/o/<sequence>``)
in the *same* ``KV.transact`` as the item. The record exists if and only if
the write does.

A :class:`StreamRelay` then moves outbox records to the Log stream
``table/<table>``, each item's records in sequence order (runs of distinct
items are appended concurrently, so the engine can batch them). After each
batch it deletes the moved outbox keys and records the id of the latest
entry it appended (the *mark*) in
one KV transaction. A relay that dies between appending and that
transaction leaves records both in the Log and in the outbox; the next relay
reads the Log after the mark, collects the sequence numbers already there,
and deletes those outbox keys without appending them again. Only one relay
per table runs at a time (a KV lease with a TTL, renewed every batch), so
every record reaches the stream exactly once.

Order: sequence numbers come from a per-table KV counter, drawn *after* the
writer read the item it is about to compare-and-set. Two writes to the same
item are serialised by that compare-and-set, so the later one drew its number
after the earlier one committed: per item, sequence order is write order, and
the relay appends each item's records in sequence order. Across items there
is no order (a slow writer may commit a smaller number after a larger one was
relayed, and a run of distinct items is appended concurrently — in sequence
order on engines that serve requests in order), which is all DynamoDB
Streams promises too.

Consumers read through Log consumer groups, so one that crashes resumes from
its last acknowledged record: whatever it held unacknowledged is delivered
again when its lease runs out. Per-item order holds with one consumer per
group (as with one reader per shard).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reflow.backends.protocols import KV, Delete, Log, Operation, Put, entry_id_key
from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.errors import TransactionConflictError, VersionConflictError
from reflow.state.keys import outbox_prefix, table_prefix

__all__ = [
    "DEFAULT_RETENTION",
    "EVENT_NAMES",
    "StreamConsumer",
    "StreamRecord",
    "StreamRelay",
    "outbox_key",
    "stream_name",
    "to_event",
]

DEFAULT_RETENTION = 24 * 3600.0
EVENT_NAMES = ("INSERT", "MODIFY", "REMOVE")
DETAIL_TYPES = {"INSERT": "Item Inserted", "MODIFY": "Item Modified", "REMOVE": "Item Removed"}


def stream_name(table: str) -> str:
    """The Log stream a table's change records are relayed to."""
    return f"table/{table}"


def outbox_key(table: str, sequence: int) -> str:
    """The KV key of a record waiting in the outbox; zero-padded so keys sort by sequence."""
    return f"{outbox_prefix(table)}{sequence:020d}"


@dataclass(frozen=True)
class StreamRecord:
    """One change to one item, as DynamoDB Streams' NEW_AND_OLD_IMAGES view gives it."""

    table: str
    event_name: str  # INSERT | MODIFY | REMOVE
    keys: Mapping[str, Any]
    old: Mapping[str, Any] | None
    new: Mapping[str, Any] | None
    sequence: int
    time: float
    expired: bool = False  # a REMOVE done by TTL expiry, not by a caller
    entry_id: str | None = field(default=None, compare=False)  # set when read from the Log
    deliveries: int = field(default=1, compare=False)

    @property
    def event_id(self) -> str:
        """Stable across redeliveries: the idempotency key for consumers."""
        return f"{self.table}:{self.sequence}"

    def to_bytes(self) -> bytes:
        """The record's JSON, as stored in the outbox and the Log."""
        body = {
            "table": self.table,
            "eventName": self.event_name,
            "keys": dict(self.keys),
            "old": self.old,
            "new": self.new,
            "sequence": self.sequence,
            "time": self.time,
            "expired": self.expired,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(
        cls, data: bytes, *, entry_id: str | None = None, deliveries: int = 1
    ) -> StreamRecord:
        """Parse what :meth:`to_bytes` wrote."""
        body = json.loads(data)
        return cls(
            table=body["table"],
            event_name=body["eventName"],
            keys=body["keys"],
            old=body["old"],
            new=body["new"],
            sequence=int(body["sequence"]),
            time=float(body["time"]),
            expired=bool(body.get("expired", False)),
            entry_id=entry_id,
            deliveries=deliveries,
        )


def to_event(
    record: StreamRecord, *, region: str = "local", account: str = "000000000000"
) -> dict[str, Any]:
    """The record as an EventBridge event, for the bus and ``@app.on`` rules.

    ``source`` is ``reflow.tables``; ``detail-type`` is ``Item Inserted``,
    ``Item Modified`` or ``Item Removed``; ``detail`` carries the table, the
    event name, keys, both images and the sequence number. The event id is
    derived from the record, so a redelivered record is the same event.
    """
    when = datetime.fromtimestamp(record.time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "version": "0",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"reflow:{record.event_id}")),
        "source": "reflow.tables",
        "detail-type": DETAIL_TYPES[record.event_name],
        "account": account,
        "region": region,
        "time": when,
        "resources": [f"table/{record.table}"],
        "detail": {
            "table": record.table,
            "eventName": record.event_name,
            "keys": dict(record.keys),
            "oldImage": record.old,
            "newImage": record.new,
            "sequenceNumber": str(record.sequence),
            "expired": record.expired,
        },
    }


class StreamRelay:
    """Moves one table's outbox records to its Log stream, exactly once, in order."""

    def __init__(
        self,
        kv: KV,
        log: Log,
        table: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        retention: float = DEFAULT_RETENTION,
        lease: float = 30.0,
        batch: int = 100,
    ) -> None:
        self._kv = kv
        self._log = log
        self.table = table
        self.stream = stream_name(table)
        self._clock = clock
        self.retention = retention
        self._lease = lease
        self._batch = batch
        self._mark_key = f"{table_prefix(table)}relay-mark"
        self._lease_key = f"{table_prefix(table)}relay-lease"

    async def pump(self) -> int:
        """Move every record now in the outbox; return how many were appended.

        Returns 0 at once when another relay holds the lease.
        """
        try:
            lease_version = await self._kv.put(
                self._lease_key, b"1", expect_version=0, ttl=self._lease
            )
        except VersionConflictError:
            return 0
        moved = 0
        try:
            already = await self._appended_since_mark()
            while True:
                moved_now, lease_version = await self._move_batch(already, lease_version)
                if moved_now < 0:
                    break
                moved += moved_now
            await self._log.trim(self.stream, max_age=self.retention)
        finally:
            with contextlib.suppress(VersionConflictError):
                await self._kv.delete(self._lease_key, expect_version=lease_version)
        return moved

    async def _appended_since_mark(self) -> set[int]:
        """Sequence numbers of records appended after the last recorded mark.

        They are exactly the records a crashed relay appended but did not get
        to delete from the outbox.
        """
        mark = await self._kv.get(self._mark_key)
        start = mark.value.decode() if mark is not None else "-"
        entries = await self._log.range(self.stream, start=start)
        return {
            StreamRecord.from_bytes(e.data).sequence
            for e in entries
            if mark is None or e.id != start
        }

    async def _move_batch(self, already: set[int], lease_version: int) -> tuple[int, int]:
        """Move one batch; ``(-1, v)`` when the outbox is empty or the lease was lost."""
        waiting = await self._kv.scan(outbox_prefix(self.table), limit=self._batch)
        if not waiting:
            return -1, lease_version
        # The batch, in sequence order, is cut into runs in which no item
        # appears twice; a run's appends go concurrently (issued in sequence
        # order, so engines that serve requests in order keep it), runs one
        # after another. Each item's records thus stay in sequence order —
        # the order the stream promises — while the engine can batch a run's
        # appends instead of paying one commit or round trip per record.
        runs: list[list[bytes]] = [[]]
        in_run: set[str] = set()
        for item in waiting:
            record = StreamRecord.from_bytes(item.value)
            if record.sequence in already:
                continue  # a crashed relay appended it already: delete, never re-append
            identity = json.dumps(record.keys, sort_keys=True)
            if identity in in_run:
                runs.append([])
                in_run.clear()
            in_run.add(identity)
            runs[-1].append(item.value)
        ids: list[str] = []
        for run in runs:
            ids.extend(await asyncio.gather(*(self._log.append(self.stream, d) for d in run)))
        appended = len(ids)
        # The mark is the latest id appended: every entry of this batch sorts
        # at or before it, and after the previous mark (recovery relies on it).
        last_id = max(ids, key=entry_id_key) if ids else None
        operations: list[Operation] = [Delete(item.key) for item in waiting]
        if last_id is not None:
            operations.append(Put(self._mark_key, last_id.encode()))
        # Renewing the lease inside the same transaction fences a relay whose
        # lease ran out: its bookkeeping is refused rather than interleaved.
        operations.append(Put(self._lease_key, b"1", expect_version=lease_version, ttl=self._lease))
        try:
            versions = await self._kv.transact(operations)
        except TransactionConflictError:
            return -1, lease_version
        already.difference_update(StreamRecord.from_bytes(i.value).sequence for i in waiting)
        return appended, versions[-1]


ChangeHandler = Callable[[StreamRecord], Awaitable[object] | object]


class StreamConsumer:
    """Reads a table's change stream through a consumer group, resuming after a crash."""

    def __init__(
        self,
        log: Log,
        table: str,
        *,
        group: str,
        consumer: str,
        lease: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
        ordered: bool = True,
    ) -> None:
        self._log = log
        self.stream = stream_name(table)
        self.group = group
        self.consumer = consumer
        self._lease = lease
        self._clock = clock
        self.ordered = ordered

    async def read(self, count: int = 10, *, block: float = 0.0) -> list[StreamRecord]:
        """Up to ``count`` records: first any whose lease ran out, then new ones.

        While records delivered earlier are still leased (to a consumer that
        died mid-batch, or to this one after a handler failed), an ``ordered``
        consumer reads nothing: reading past them would hand out an item's
        later record before its earlier one. With ``block`` > 0, it waits up
        to that long for them. ``ordered=False`` lets several consumers of a
        group work in parallel, giving up per-item order.
        """
        deadline = self._clock.monotonic() + block
        while self.ordered:
            held = await self._held_for()
            if held <= 0:
                break
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return []
            await self._clock.sleep(min(held, remaining))
        entries = await self._log.read(
            self.stream, self.group, self.consumer, count=count, lease=self._lease, block=block
        )
        return [
            StreamRecord.from_bytes(e.data, entry_id=e.id, deliveries=e.deliveries) for e in entries
        ]

    async def _held_for(self) -> float:
        """Seconds until every record still leased in the group is free again (0: none)."""
        pending = await self._log.pending(self.stream, self.group, count=10_000)
        # The group's consumers share one lease length: this consumer's.
        return max((self._lease - p.idle for p in pending), default=0.0)

    async def ack(self, records: Sequence[StreamRecord]) -> int:
        """Acknowledge records once their effects are durable."""
        ids = [r.entry_id for r in records if r.entry_id is not None]
        return await self._log.ack(self.stream, self.group, ids) if ids else 0

    async def process(self, handler: ChangeHandler, count: int = 10, *, block: float = 0.0) -> int:
        """Run ``handler`` on one batch, acknowledging each record after it returns.

        A handler that raises stops the batch there: the failed record and the
        ones after it stay unacknowledged and come back, in order, when their
        lease runs out. Returns how many records were handled.
        """
        handled = 0
        for record in await self.read(count, block=block):
            result = handler(record)
            if inspect.isawaitable(result):
                await result
            await self.ack([record])
            handled += 1
        return handled


async def pump_forever(relay: StreamRelay, clock: Clock, *, interval: float = 0.2) -> None:
    """Run a relay until cancelled (the platform starts one per streamed table)."""
    while True:
        moved = await relay.pump()
        if moved == 0:
            await clock.sleep(interval)
        else:
            await asyncio.sleep(0)
