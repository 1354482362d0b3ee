"""Global tables: one table replicated active-active across regions.

Every region writes to its own backend; a :class:`Replicator` per region
*pulls* the other regions' writes and applies them locally. Design choices,
and why:

* **Storage.** A :class:`GlobalTable` keeps its items in an ordinary streamed
  :class:`~reflow.state.tables.Table`, each item carrying three reserved
  attributes: ``_hlc`` (the write's hybrid-logical-clock stamp, text that
  sorts as the stamps do, see ``hlc.py``), ``_origin`` (the region that made
  the write) and, for a delete, ``_deleted: true``. A delete is a
  **tombstone** — an item kept with its stamp — so a late, older write from
  another region loses to it instead of bringing the item back. Readers of a
  ``GlobalTable`` never see tombstones or the reserved attributes.
* **Conflicts: last writer wins.** A write replaces an item only if its
  stamp is greater than the stored one (compare-and-set on ``_hlc``), and
  stamps are totally ordered — wall time, then counter, then region id — so
  every region picks the same winner whatever order writes arrive in.
  Applying a record twice, or an older one after a newer, changes nothing:
  delivery is at-least-once and apply is idempotent.
* **Shipping: pull.** Region ``eu`` reads region ``us``'s change stream
  (``table/<name>`` in *us*'s Log) through the consumer group ``replica-eu``.
  The group lives in the source region's Log, so the position is durable:
  a region cut off for a while resumes exactly where it stopped (within the
  stream's retention, 24 h by default). Before reading, the puller also
  pumps the source's outbox relay (``StreamRelay`` holds a lease, so this is
  safe alongside the source's own relay). Only records whose ``_origin`` is
  the source are applied: a write ``us`` received from ``ap`` is also in
  *us*'s stream, but ``eu`` takes it from ``ap`` directly — replicated writes
  never re-replicate.
* **Tombstone collection.** After a full drain of a source (its outbox
  relayed, its stream read to the end), a region records in its own KV
  ``g/<table>/seen/<source>`` = the wall time the drain *started*, less a
  grace period for writes stamped but not yet committed (``in_flight``,
  default 60 s, which also absorbs clock skew). A tombstone stamped before
  the minimum of those marks over every ordered pair of regions has been
  seen everywhere, and so has every write it could conflict with; each
  region then deletes its own copy. A region that is cut off holds every
  mark back, so nothing is collected until it has returned and caught up.
* **Lag.** Each applied write's lag is the applying region's clock minus the
  write's stamp; :meth:`Replicator.lag` gives p50 and p99 over recent ones.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reflow.backends.protocols import KV, Log
from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.errors import ConditionFailedError, InvalidItemError, TransactionConflictError
from reflow.state.conditions import Condition, attr
from reflow.state.hlc import HLC, HybridClock
from reflow.state.keys import outbox_prefix
from reflow.state.streams import StreamConsumer, StreamRecord, StreamRelay
from reflow.state.tables import Document, KeyInput, Page, Table

__all__ = ["RESERVED", "GlobalTable", "LagStats", "Region", "Replicator"]

HLC_ATTR, ORIGIN_ATTR, DELETED_ATTR = "_hlc", "_origin", "_deleted"
RESERVED = (HLC_ATTR, ORIGIN_ATTR, DELETED_ATTR)
_ATTEMPTS = 1000


@dataclass(frozen=True)
class Region:
    """A region's storage as another region reaches it."""

    name: str
    kv: KV
    log: Log


class GlobalTable:
    """A region's replica of a global table: LWW writes stamped by its hybrid clock."""

    def __init__(
        self,
        name: str,
        region: str,
        kv: KV,
        *,
        key: str = "id",
        sort_key: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        hlc: HybridClock | None = None,
    ) -> None:
        self.name = name
        self.region = region
        self.hlc = hlc or HybridClock(region, clock)
        self.table = Table(name, kv, key=key, sort_key=sort_key, stream=True, clock=clock)
        self.kv = kv

    # -- what callers see -----------------------------------------------------------

    async def get(self, key: KeyInput) -> Document | None:
        """The live item at ``key`` without reserved attributes; None if absent or deleted."""
        return _visible(await self.table.get(key))

    async def put(self, item: Mapping[str, Any], *, condition: Condition | None = None) -> HLC:
        """Store ``item`` whole, stamped now; return its stamp.

        ``condition`` is checked against this region's copy (as DynamoDB global
        tables do): a concurrent write elsewhere may still win by its stamp.
        """
        for name in item:
            if name in RESERVED:
                raise InvalidItemError(self.name, name, "the attribute is reserved")
        return await self._write(item, dict(item), condition)

    async def update(
        self,
        key: KeyInput,
        *,
        set: Mapping[str, Any] | None = None,  # noqa: A002 - DynamoDB's word for it
        remove: tuple[str, ...] = (),
        condition: Condition | None = None,
    ) -> Document:
        """Set or remove attributes; the whole item is re-stamped (LWW is per item)."""
        for name in (*(set or {}), *remove):
            if name in RESERVED:
                raise InvalidItemError(self.name, name, "the attribute is reserved")
        located = self._keys(key)
        for _ in range(_ATTEMPTS):
            current = await self.table.get(located)
            visible = _visible(current)
            new = dict(visible) if visible is not None else dict(located)
            new.update(set or {})
            for name in remove:
                new.pop(name, None)
            try:
                await self._commit(current, new, deleted=False, condition=condition)
            except _Lost:
                continue
            return new
        raise TransactionConflictError(f"{self.name}:{located}", None, None)

    async def delete(self, key: KeyInput, *, condition: Condition | None = None) -> HLC:
        """Delete the item at ``key``: a tombstone stamped now replaces it."""
        located = self._keys(key)
        return await self._write(located, dict(located), condition, deleted=True)

    async def scan(self, *, limit: int | None = None, cursor: str | None = None) -> Page:
        """A page of live items in key order; tombstones are skipped after paging,
        so a page may hold fewer than ``limit`` items (as a DynamoDB filter does)."""
        page = await self.table.scan(limit=limit, cursor=cursor)
        return Page([d for raw in page.items if (d := _visible(raw)) is not None], page.cursor)

    async def query(self, partition: str | int | float, **options: Any) -> Page:
        """:meth:`Table.query` over live items (tombstones skipped after paging)."""
        page = await self.table.query(partition, **options)
        return Page([d for raw in page.items if (d := _visible(raw)) is not None], page.cursor)

    async def scan_all(self) -> list[Document]:
        """Every live item (reserved attributes stripped), in key order."""
        return [doc for raw in await self.raw_items() if (doc := _visible(raw)) is not None]

    async def raw_items(self) -> list[Document]:
        """Every stored item *with* its stamp, tombstones included (for checks and tests)."""
        items: list[Document] = []
        cursor: str | None = None
        while True:
            page = await self.table.scan(limit=500, cursor=cursor)
            items.extend(page.items)
            if page.cursor is None:
                return items
            cursor = page.cursor

    # -- replication -------------------------------------------------------------------

    async def apply(self, image: Mapping[str, Any]) -> bool:
        """Apply another region's write (an item with its reserved attributes).

        Returns whether it won (was stored). Idempotent: an image whose stamp
        is not greater than the stored one changes nothing.
        """
        incoming = HLC.parse(str(image.get(HLC_ATTR)))
        self.hlc.observe(incoming)
        for _ in range(_ATTEMPTS):
            current = await self.table.get(self._keys(image))
            if current is not None and HLC.parse(current[HLC_ATTR]) >= incoming:
                return False
            try:
                await self.table.put(dict(image), condition=_unchanged(self.table.key, current))
            except ConditionFailedError:
                continue
            return True
        raise TransactionConflictError(f"{self.name}:{self._keys(image)}", None, None)

    async def collect_tombstones(self, horizon: float) -> int:
        """Delete tombstones stamped before ``horizon`` (seconds); return how many."""
        collected = 0
        for raw in await self.raw_items():
            if not raw.get(DELETED_ATTR) or HLC.parse(raw[HLC_ATTR]).seconds >= horizon:
                continue
            try:
                # Only if still that tombstone: a newer write since the scan stays.
                await self.table.delete(self._keys(raw), condition=attr(HLC_ATTR) == raw[HLC_ATTR])
            except ConditionFailedError:
                continue
            collected += 1
        return collected

    # -- the write path ------------------------------------------------------------------

    async def _write(
        self,
        item: Mapping[str, Any],
        new: Document,
        condition: Condition | None,
        *,
        deleted: bool = False,
    ) -> HLC:
        located = self._keys(item)
        for _ in range(_ATTEMPTS):
            current = await self.table.get(located)
            try:
                return await self._commit(current, new, deleted=deleted, condition=condition)
            except _Lost:
                continue
        raise TransactionConflictError(f"{self.name}:{located}", None, None)

    async def _commit(
        self,
        current: Document | None,
        new: Document,
        *,
        deleted: bool,
        condition: Condition | None,
    ) -> HLC:
        visible = _visible(current)
        if condition is not None and not condition.evaluate(visible):
            raise ConditionFailedError(self.name, str(condition), visible)
        if current is not None:
            # Stamp after everything this key holds: a local write always wins locally.
            self.hlc.observe(HLC.parse(current[HLC_ATTR]))
        stamp = self.hlc.now()
        stored = {**new, HLC_ATTR: str(stamp), ORIGIN_ATTR: self.region}
        if deleted:
            stored[DELETED_ATTR] = True
        try:
            await self.table.put(stored, condition=_unchanged(self.table.key, current))
        except ConditionFailedError:
            raise _Lost from None
        return stamp

    def _keys(self, key: KeyInput) -> Document:
        if isinstance(key, Mapping):
            keys = {self.table.key: key.get(self.table.key)}
            if self.table.sort_key is not None:
                keys[self.table.sort_key] = key.get(self.table.sort_key)
            return keys
        return {self.table.key: key}

    def __repr__(self) -> str:
        return f"GlobalTable({self.name!r}, region={self.region!r})"


class _Lost(Exception):
    """The item changed between read and write; read again."""


def _unchanged(key: str, current: Document | None) -> Condition:
    if current is None:
        return attr(key).not_exists()
    stamp: str = current[HLC_ATTR]
    return attr(HLC_ATTR) == stamp


def _visible(raw: Document | None) -> Document | None:
    if raw is None or raw.get(DELETED_ATTR):
        return None
    return {k: v for k, v in raw.items() if k not in RESERVED}


@dataclass(frozen=True)
class LagStats:
    """Replication lag over recent applied writes, in seconds."""

    count: int
    p50: float
    p99: float


class Replicator:
    """Pulls one global table's writes from every peer region into the local one."""

    def __init__(
        self,
        table: GlobalTable,
        local: Region,
        peers: Mapping[str, Region],
        *,
        clock: Clock = SYSTEM_CLOCK,
        batch: int = 200,
        lease: float = 30.0,
        in_flight: float = 60.0,
        samples: int = 10_000,
        collect_every: float = 60.0,
    ) -> None:
        self.table = table
        self.local = local
        self.peers = dict(peers)
        self._clock = clock
        self._batch = batch
        self._in_flight = in_flight
        self._collect_every = collect_every
        self._lags: deque[float] = deque(maxlen=samples)
        self.applied = 0
        self._stopping = False
        name = table.name
        self._relays = {
            peer: StreamRelay(r.kv, r.log, name, clock=clock, lease=lease)
            for peer, r in self.peers.items()
        }
        self._own_relay = StreamRelay(local.kv, local.log, name, clock=clock, lease=lease)
        self._consumers = {
            peer: StreamConsumer(
                r.log, name, group=f"replica-{local.name}", consumer=local.name, lease=lease
            )
            for peer, r in self.peers.items()
        }

    async def pull(self, peer: str) -> int:
        """Relay ``peer``'s outbox, then apply one batch of its stream; return records read."""
        await self._relays[peer].pump()
        consumer = self._consumers[peer]
        records = await consumer.read(self._batch)
        if records:
            # Applies commute (LWW on totally ordered stamps, idempotent), so a
            # batch is applied concurrently and acknowledged once it all landed;
            # a crash before the ack only means the batch is applied again.
            await asyncio.gather(*(self._apply(peer, record) for record in records))
            await consumer.ack(records)
        return len(records)

    async def drain(self, peer: str) -> int:
        """Pull from ``peer`` until its stream is read to the end; record the mark."""
        started = self._clock.time()
        total = 0
        while (read := await self.pull(peer)) > 0:
            total += read
        if await self._drained(peer):
            await self.local.kv.put(self._seen_key(peer), json.dumps(started).encode())
        return total

    async def step(self) -> int:
        """Relay this region's own outbox and drain every peer once; return records read."""
        # Independent work on different backends: the own relay appends to this
        # region's Log while each peer is drained from its own.
        counts = await asyncio.gather(
            self._own_relay.pump(), *(self.drain(peer) for peer in self.peers)
        )
        return sum(counts[1:])

    async def run(self, *, interval: float = 0.2) -> None:
        """Step until :meth:`stop` (or cancelled), collecting tombstones as marks allow.

        :meth:`stop` lets the batch in hand finish and be acknowledged;
        cancelling leaves it leased, to be delivered again when the lease ends.
        """
        self._stopping = False
        collected_at = self._clock.monotonic()
        while not self._stopping:
            read = await self.step()
            # Collection scans the whole table: every minute, not every step.
            if self._clock.monotonic() - collected_at >= self._collect_every:
                collected_at = self._clock.monotonic()
                await self.collect()
            if read == 0:
                await self._clock.sleep(interval)
            else:
                await asyncio.sleep(0)

    def stop(self) -> None:
        """Make :meth:`run` return after the step in progress."""
        self._stopping = True

    async def caught_up(self) -> bool:
        """Whether every peer's outbox is relayed and its stream read and acknowledged."""
        for peer in self.peers:
            if not await self._drained(peer):
                return False
        return True

    async def horizon(self) -> float | None:
        """Before this time, every region has seen every write (None: not yet known)."""
        regions = [self.local, *self.peers.values()]
        marks: list[float] = []
        for region in regions:
            for source in regions:
                if source is region:
                    continue
                stored = await region.kv.get(self._seen_key(source.name))
                if stored is None:
                    return None
                marks.append(float(json.loads(stored.value)))
        return min(marks, default=self._clock.time()) - self._in_flight

    async def collect(self) -> int:
        """Delete local tombstones every region has seen; return how many."""
        horizon = await self.horizon()
        return 0 if horizon is None else await self.table.collect_tombstones(horizon)

    def lag(self) -> LagStats:
        """p50 and p99 of the lag (apply time minus write stamp) of recent writes."""
        ordered = sorted(self._lags)
        if not ordered:
            return LagStats(0, 0.0, 0.0)
        return LagStats(len(ordered), _rank(ordered, 0.50), _rank(ordered, 0.99))

    def metrics(self) -> dict[str, float]:
        """The lag as metric values (``replication_lag_p50_seconds`` …)."""
        stats = self.lag()
        return {
            "replication_applied_total": float(self.applied),
            "replication_lag_p50_seconds": stats.p50,
            "replication_lag_p99_seconds": stats.p99,
        }

    async def _apply(self, peer: str, record: StreamRecord) -> None:
        image = record.new
        # Tombstone collection (new is None) is local to each region; and a
        # write the peer itself received from elsewhere comes from its origin.
        if image is None or image.get(ORIGIN_ATTR) != peer or HLC_ATTR not in image:
            return
        await self.table.apply(image)
        self.applied += 1
        stamp = HLC.parse(str(image[HLC_ATTR]))
        self._lags.append(max(0.0, self._clock.time() - stamp.seconds))

    async def _drained(self, peer: str) -> bool:
        """Whether nothing of ``peer``'s is left: outbox empty, nothing leased unacked.

        An empty read alone does not say so: another relay may hold the
        outbox lease, or records may be leased to a consumer that died.
        """
        source = self.peers[peer]
        if await source.kv.scan(outbox_prefix(self.table.name), limit=1):
            return False
        consumer = self._consumers[peer]
        return not await source.log.pending(consumer.stream, consumer.group, count=1)

    def _seen_key(self, source: str) -> str:
        return f"g/{self.table.name}/seen/{source}"


def _rank(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
