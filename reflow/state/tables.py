"""Tables: JSON items with conditional writes, queries, transactions, TTL and streams.

A :class:`Table` is DynamoDB's data model over the ``KV`` primitive. Every item
is a JSON object stored under a key derived from its key attributes (see
``keys.py``), so a query on one partition is a prefix scan in sort-key order.

Atomicity: every write is read → check → compare-and-set. The item is read
with its KV version, the condition is evaluated on it in Python, and the new
item is written only if the version is unchanged (``KV.transact`` with
``expect_version``); if another writer got there first the whole step is
retried on the fresh item. That makes conditional writes, ``update(add=…)``
and ``transact`` correct with any number of processes on SQLite or Redis,
since the compare-and-set is atomic in the engine.

Streamed tables add the change record to the same KV transaction as an outbox
entry (``streams.py`` explains why, and how it reaches the Log exactly once).

TTL: with ``ttl_attribute="expires"``, an item whose ``expires`` (seconds since
the epoch, on the table's ``Clock``) has passed is invisible to reads, queries
and conditions at once; :meth:`Table.expire` deletes such items and emits
their ``REMOVE`` records (marked ``expired``), as DynamoDB's TTL sweeper does.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reflow.backends.protocols import KV, Check, Delete, Item, Operation, Put
from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.errors import (
    ConditionFailedError,
    InvalidItemError,
    InvalidKeyError,
    TransactionConflictError,
    VersionConflictError,
)
from reflow.state.conditions import Condition, attr
from reflow.state.keys import encode_key_value, item_prefix, table_prefix
from reflow.state.streams import StreamRecord, outbox_key

__all__ = [
    "CheckOp",
    "DeleteOp",
    "Page",
    "PutOp",
    "Table",
    "UpdateOp",
    "WriteOp",
    "transact",
]

Document = dict[str, Any]
KeyInput = Mapping[str, Any] | str | int | float
_AFTER_ANY_ENCODED = "~"  # sorts after every character an encoded key can hold


@dataclass(frozen=True)
class Page:
    """A page of items; pass ``cursor`` back to get the next one (None: no more)."""

    items: list[Document]
    cursor: str | None = None


@dataclass(frozen=True)
class PutOp:
    """In a transaction: store ``item``, replacing any with its key."""

    item: Mapping[str, Any]
    condition: Condition | None = None


@dataclass(frozen=True)
class UpdateOp:
    """In a transaction: update the item at ``key`` (created if absent)."""

    key: KeyInput
    set: Mapping[str, Any] = field(default_factory=dict)
    add: Mapping[str, int | float] = field(default_factory=dict)
    remove: Sequence[str] = ()
    condition: Condition | None = None


@dataclass(frozen=True)
class DeleteOp:
    """In a transaction: delete the item at ``key``."""

    key: KeyInput
    condition: Condition | None = None


@dataclass(frozen=True)
class CheckOp:
    """In a transaction: write nothing, but require ``condition`` of the item at ``key``."""

    key: KeyInput
    condition: Condition


WriteOp = PutOp | UpdateOp | DeleteOp | CheckOp


@dataclass
class _Plan:
    """What one write does to one item, decided from the item as read."""

    kv_key: str
    keys: Document
    version: int
    raw: Document | None  # as stored, even if expired
    current: Document | None  # as callers see it (None when absent or expired)
    new: Document | None
    check_only: bool = False

    @property
    def changes(self) -> bool:
        if self.check_only:
            return False
        if self.new is None:
            return self.raw is not None
        return self.new != self.raw


class Table:
    """One table: items keyed by ``key`` (and ``sort_key``), stored in a ``KV``."""

    def __init__(
        self,
        name: str,
        kv: KV,
        *,
        key: str = "id",
        sort_key: str | None = None,
        ttl_attribute: str | None = None,
        stream: bool = False,
        clock: Clock = SYSTEM_CLOCK,
        max_attempts: int = 1000,
    ) -> None:
        self.name = name
        self.key = key
        self.sort_key = sort_key
        self.ttl_attribute = ttl_attribute
        self.stream = stream
        self._kv = kv
        self._clock = clock
        self._max_attempts = max_attempts
        self._items = item_prefix(name)
        self._sequence_key = f"{table_prefix(name)}seq"

    # -- single-item operations ----------------------------------------------

    async def get(self, key: KeyInput) -> Document | None:
        """The item at ``key``, or None when absent or expired."""
        kv_key, _ = self._locate(key)
        return self._visible(self._decode(await self._kv.get(kv_key)))

    async def put(
        self,
        item: Mapping[str, Any],
        *,
        condition: Condition | None = None,
        return_old: bool = False,
    ) -> Document | None:
        """Store ``item`` whole; with ``return_old``, return the item it replaced.

        Raises :class:`ConditionFailedError` (with the current item) when
        ``condition`` is false for the item now stored under that key.
        """
        new = self._checked_item(item)
        kv_key, keys = self._locate(new)
        if condition is None and not return_old and not self.stream:
            # Nothing to check, report or record: a blind write, one round trip.
            await self._kv.put(kv_key, _dumps(new))
            return None
        plans = await _apply([(self, PutOp(new, condition), (kv_key, keys))])
        return plans[0].current if return_old else None

    async def update(
        self,
        key: KeyInput,
        *,
        set: Mapping[str, Any] | None = None,  # noqa: A002 - DynamoDB's word for it
        add: Mapping[str, int | float] | None = None,
        remove: Iterable[str] = (),
        condition: Condition | None = None,
    ) -> Document:
        """Change some attributes of the item at ``key`` and return the new item.

        ``set`` assigns, ``add`` adds to numbers (an absent attribute counts
        as 0), ``remove`` deletes attributes. An absent item is created from
        its key, as DynamoDB's UpdateItem does; guard with
        ``attr(key).exists()`` to refuse that.
        """
        op = UpdateOp(key, dict(set or {}), dict(add or {}), tuple(remove), condition)
        plans = await _apply([(self, op, self._locate(key))])
        new = plans[0].new
        assert new is not None  # an update always leaves an item
        return new

    async def delete(self, key: KeyInput, *, condition: Condition | None = None) -> Document | None:
        """Delete the item at ``key``; return it (None when there was none)."""
        plans = await _apply([(self, DeleteOp(key, condition), self._locate(key))])
        return plans[0].current

    async def put_versioned(
        self, item: Mapping[str, Any], *, attribute: str = "version"
    ) -> Document:
        """Optimistic locking: store ``item`` only if nobody changed it since it was read.

        ``item[attribute]`` is the version it was read at (absent: a new item,
        which must not exist yet). The stored item carries the next version;
        a concurrent change raises :class:`ConditionFailedError` with the
        item as it now stands, for the caller to merge and retry.
        """
        expected = item.get(attribute)
        if expected is None:
            condition = attr(self.key).not_exists()
            version = 1
        elif isinstance(expected, int) and not isinstance(expected, bool):
            condition = attr(attribute) == expected
            version = expected + 1
        else:
            raise InvalidItemError(
                self.name, attribute, f"a version must be an integer, got {expected!r}"
            )
        stored = {**item, attribute: version}
        await self.put(stored, condition=condition)
        return stored

    async def expire(self, *, limit: int | None = None) -> int:
        """Delete items whose TTL has passed (emitting REMOVE records); return how many."""
        if self.ttl_attribute is None:
            return 0
        removed = 0
        start_after: str | None = None
        while limit is None or removed < limit:
            chunk = await self._kv.scan(self._items, start_after=start_after, limit=200)
            if not chunk:
                break
            start_after = chunk[-1].key
            for stored in chunk:
                doc = self._decode(stored)
                if doc is None or not self._expired(doc):
                    continue
                # Re-checked under compare-and-set: a rewrite since the scan wins.
                op = CheckOp(self._key_document(doc), attr(self.key).not_exists())
                where = (stored.key, self._key_document(doc))
                plans = await _apply([(self, op, where)], expire=True)
                removed += 1 if plans[0].new is None and plans[0].raw is not None else 0
        return removed

    # -- reading many -----------------------------------------------------------

    async def query(
        self,
        partition: str | int | float,
        *,
        between: tuple[Any, Any] | None = None,
        after: Any = None,
        before: Any = None,
        begins_with: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
        cursor: str | None = None,
    ) -> Page:
        """Items of one partition in sort-key order (descending with ``reverse``).

        ``between=(low, high)`` is inclusive, and either end may be None (open);
        ``after`` and ``before`` are exclusive bounds; ``begins_with`` applies
        to a string sort key. Bounds combine (all must hold). When every bound
        given is of one kind, only sort keys of that kind are in range:
        ``after=5`` never yields a string sort key. ``limit`` caps the page;
        its ``cursor`` continues.
        """
        pk = encode_key_value(self.name, self.key, partition)
        if self.sort_key is None:
            item = await self.get({self.key: partition})
            return Page([item] if item is not None else [])
        base = f"{self._items}{pk}/"
        prefix = base
        if begins_with is not None:
            if not isinstance(begins_with, str):
                raise InvalidKeyError(self.name, self.sort_key, "begins_with needs a string")
            prefix += "s" + begins_with.encode("utf-8").hex()
        low, high = between if between is not None else (None, None)
        encoded = {
            name: base + encode_key_value(self.name, self.sort_key, value)
            for name, value in (("low", low), ("high", high), ("after", after), ("before", before))
            if value is not None
        }
        kinds = {key[len(base)] for key in encoded.values()}
        if len(kinds) == 1 and prefix == base:
            prefix += kinds.pop()  # like with like: numbers and strings never compare
        start = _latest(_just_before(encoded.get("low")), encoded.get("after"))
        high_key = encoded.get("high")
        below = encoded.get("before")
        bound = base + cursor if cursor is not None else None
        if not reverse:
            start = _latest(start, bound)
            return await self._collect(prefix, start, high_key, below, limit, base)
        # KV scans only go forward: a reverse page reads its range and flips it.
        below = bound if below is None or (bound is not None and bound < below) else below
        page = await self._collect(prefix, start, high_key, below, None, base)
        items = list(reversed(page.items))
        if limit is not None and len(items) > limit:
            items = items[:limit]
            return Page(items, self._kv_key(items[-1])[len(base) :])
        return Page(items)

    def cursor_after(self, key: KeyInput, *, query: bool = False) -> str:
        """The cursor that resumes a scan (with ``query``: a query of the key's
        partition) just after the item at ``key``, which need not exist."""
        kv_key = self._locate(key)[0]
        if query and self.sort_key is not None:
            return kv_key.rsplit("/", 1)[1]
        return kv_key[len(self._items) :]

    async def scan(self, *, limit: int | None = None, cursor: str | None = None) -> Page:
        """Every item, in key order, a page at a time."""
        start = self._items + cursor if cursor is not None else None
        return await self._collect(self._items, start, None, None, limit, self._items)

    async def _collect(
        self,
        prefix: str,
        start_after: str | None,
        high: str | None,
        below: str | None,
        limit: int | None,
        cursor_base: str,
    ) -> Page:
        items: list[Document] = []
        last_key = ""
        while True:
            want = 200 if limit is None else max(1, min(200, limit - len(items)))
            chunk = await self._kv.scan(prefix, start_after=start_after, limit=want)
            if not chunk:
                return Page(items)
            for stored in chunk:
                if (high is not None and stored.key > high) or (
                    below is not None and stored.key >= below
                ):
                    return Page(items)
                doc = self._visible(self._decode(stored))
                if doc is not None:
                    items.append(doc)
                    last_key = stored.key
                    if limit is not None and len(items) >= limit:
                        return Page(items, last_key[len(cursor_base) :])
            start_after = chunk[-1].key

    # -- transactions -------------------------------------------------------------

    async def transact(self, operations: Sequence[WriteOp]) -> list[Document | None]:
        """Apply every write to this table, or none of them (see :func:`transact`)."""
        return await transact([(self, op) for op in operations])

    def _located(self, op: WriteOp) -> tuple[WriteOp, tuple[str, Document]]:
        """``op`` with its item checked, and the KV key and key attributes it names."""
        if isinstance(op, PutOp):
            op = PutOp(self._checked_item(op.item), op.condition)
            return op, self._locate(op.item)
        return op, self._locate(op.key)

    # -- the write path -------------------------------------------------------------

    def _plan(
        self,
        op: WriteOp,
        kv_key: str,
        keys: Document,
        found: Item | None,
        index: int,
        total: int,
        expire: bool,
    ) -> _Plan:
        raw = self._decode(found)
        current = self._visible(raw)
        plan = _Plan(kv_key, keys, found.version if found else 0, raw, current, current)
        if expire:  # TTL sweep: delete only what is still expired
            plan.new = None if raw is not None and current is None else current
            return plan
        if op.condition is not None and not op.condition.evaluate(current):
            where = f" (write {index + 1} of {total})" if total > 1 else ""
            raise ConditionFailedError(self.name, f"{op.condition}{where}", current)
        if isinstance(op, PutOp):
            plan.new = dict(op.item)
        elif isinstance(op, UpdateOp):
            plan.new = self._updated(current, keys, op)
        elif isinstance(op, DeleteOp):
            plan.new = None
        else:
            plan.check_only = True
        return plan

    async def _records(self, plans: list[_Plan]) -> list[Operation]:
        """Outbox entries for the change records of ``plans``.

        The sequence numbers are drawn *after* the items were read: that is
        what makes sequence order equal write order per item (streams.py).
        """
        pending: list[tuple[str, Document, Document | None, Document | None, bool]] = []
        for plan in plans:
            if not plan.changes:
                continue
            if plan.raw is not None and plan.current is None:
                pending.append(("REMOVE", plan.keys, plan.raw, None, True))
            if plan.new is None:
                if plan.current is not None:
                    pending.append(("REMOVE", plan.keys, plan.current, None, False))
            else:
                name = "INSERT" if plan.current is None else "MODIFY"
                pending.append((name, plan.keys, plan.current, plan.new, False))
        if not pending:
            return []
        last = await self._kv.incr(self._sequence_key, len(pending))
        now = self._clock.time()
        operations: list[Operation] = []
        for offset, (name, keys, old, new, expired) in enumerate(pending):
            sequence = last - len(pending) + 1 + offset
            record = StreamRecord(self.name, name, keys, old, new, sequence, now, expired)
            operations.append(
                Put(outbox_key(self.name, sequence), record.to_bytes(), expect_version=0)
            )
        return operations

    def _updated(self, current: Document | None, keys: Document, op: UpdateOp) -> Document:
        new: Document = dict(current) if current is not None else dict(keys)
        for name, value in op.set.items():
            if name in keys and value != keys[name]:
                raise InvalidKeyError(
                    self.name, name, "a key attribute cannot be changed by update"
                )
            new[name] = value
        for name, amount in op.add.items():
            if name in keys:
                raise InvalidKeyError(
                    self.name, name, "a key attribute cannot be changed by update"
                )
            if not _is_number(amount):
                raise InvalidItemError(self.name, name, f"add needs a number, got {amount!r}")
            base = new.get(name, 0)
            if not _is_number(base):
                raise InvalidItemError(
                    self.name, name, f"add applies to numbers; the item holds {base!r}"
                )
            new[name] = base + amount
        for name in op.remove:
            if name in keys:
                raise InvalidKeyError(self.name, name, "a key attribute cannot be removed")
            new.pop(name, None)
        _dumps_checked(self.name, new)
        return new

    # -- keys and items -------------------------------------------------------------

    def _locate(self, key: KeyInput) -> tuple[str, Document]:
        """The KV key and the key attributes of the item ``key`` names."""
        if not isinstance(key, Mapping):
            if self.sort_key is not None:
                raise InvalidKeyError(
                    self.name,
                    self.sort_key,
                    "this table has a sort key: pass a mapping with both keys",
                )
            key = {self.key: key}
        if self.key not in key:
            raise InvalidKeyError(self.name, self.key, "the partition key attribute is missing")
        keys: Document = {self.key: key[self.key]}
        kv_key = self._items + encode_key_value(self.name, self.key, key[self.key])
        if self.sort_key is not None:
            if self.sort_key not in key:
                raise InvalidKeyError(self.name, self.sort_key, "the sort key attribute is missing")
            keys[self.sort_key] = key[self.sort_key]
            kv_key += "/" + encode_key_value(self.name, self.sort_key, key[self.sort_key])
        return kv_key, keys

    def _kv_key(self, item: Mapping[str, Any]) -> str:
        return self._locate(item)[0]

    def _key_document(self, item: Mapping[str, Any]) -> Document:
        return self._locate(item)[1]

    def _checked_item(self, item: Mapping[str, Any]) -> Document:
        if not isinstance(item, Mapping):
            raise InvalidItemError(
                self.name, "<item>", f"an item must be a mapping, got {type(item).__name__}"
            )
        for name in item:
            if not isinstance(name, str):
                raise InvalidItemError(self.name, repr(name), "attribute names must be strings")
        doc = dict(item)
        _dumps_checked(self.name, doc)
        return doc

    def _decode(self, found: Item | None) -> Document | None:
        if found is None:
            return None
        doc = json.loads(found.value)
        assert isinstance(doc, dict)
        return doc

    def _expired(self, doc: Mapping[str, Any]) -> bool:
        if self.ttl_attribute is None:
            return False
        when = doc.get(self.ttl_attribute)
        # DynamoDB ignores a TTL attribute that is not a number; so do we.
        if isinstance(when, bool) or not isinstance(when, int | float):
            return False
        return when <= self._clock.time()

    def _visible(self, doc: Document | None) -> Document | None:
        return None if doc is None or self._expired(doc) else doc

    def __repr__(self) -> str:
        sort = f", sort_key={self.sort_key!r}" if self.sort_key else ""
        return f"Table({self.name!r}, key={self.key!r}{sort})"


async def transact(writes: Sequence[tuple[Table, WriteOp]]) -> list[Document | None]:
    """Apply writes to items of one or several tables, all or none.

    Each write (or ``CheckOp``) may carry a condition; if any is false,
    :class:`ConditionFailedError` names it (``write N of M``) with that
    item's current state, and nothing is written. An item may appear only
    once. Returns each item as it now stands (a ``CheckOp``'s as it was
    checked). The tables must share one KV store.
    """
    entries: list[tuple[Table, WriteOp, tuple[str, Document]]] = []
    seen: set[str] = set()
    for table, op in writes:
        if entries and table._kv is not entries[0][0]._kv:
            raise InvalidKeyError(table.name, table.key, "a transaction spans one backend")
        located, where = table._located(op)
        if where[0] in seen:
            raise InvalidKeyError(
                table.name, table.key, f"item {where[1]} appears twice in one transaction"
            )
        seen.add(where[0])
        entries.append((table, located, where))
    if not entries:
        return []
    plans = await _apply(entries)
    return [p.current if p.check_only else p.new for p in plans]


async def _apply(
    entries: Sequence[tuple[Table, WriteOp, tuple[str, Document]]], *, expire: bool = False
) -> list[_Plan]:
    """Read, check, and compare-and-set ``entries`` together, retrying on lost races."""
    kv = entries[0][0]._kv
    attempts = entries[0][0]._max_attempts
    for attempt in range(attempts):
        if attempt:
            await _backoff(attempt)
        kv_keys = [kv_key for _, _, (kv_key, _) in entries]
        # One key: `get`, which engines batch across concurrent callers (Redis
        # pipelines every get queued in one loop turn); several: one get_many.
        stored = [await kv.get(kv_keys[0])] if len(kv_keys) == 1 else await kv.get_many(kv_keys)
        plans = [
            table._plan(op, kv_key, keys, found, index, len(entries), expire)
            for index, ((table, op, (kv_key, keys)), found) in enumerate(
                zip(entries, stored, strict=True)
            )
        ]
        operations = _operations(plans)
        if not operations:
            return plans
        for table in dict.fromkeys(table for table, _, _ in entries):
            if table.stream:
                mine = [
                    p for p, (owner, _, _) in zip(plans, entries, strict=True) if owner is table
                ]
                operations.extend(await table._records(mine))
        try:
            await _commit(kv, operations)
        except (VersionConflictError, TransactionConflictError):
            continue
        return plans
    raise TransactionConflictError(entries[0][2][0], None, None)


def _operations(plans: list[_Plan]) -> list[Operation]:
    operations: list[Operation] = []
    for plan in plans:
        if plan.check_only or not plan.changes:
            # Unchanged items still take part: their version must hold.
            if len(plans) > 1:
                operations.append(Check(plan.kv_key, plan.version))
        elif plan.new is None:
            operations.append(Delete(plan.kv_key, expect_version=plan.version))
        else:
            operations.append(Put(plan.kv_key, _dumps(plan.new), expect_version=plan.version))
    if all(isinstance(op, Check) for op in operations):
        return []
    return operations


async def _commit(kv: KV, operations: list[Operation]) -> None:
    if len(operations) == 1 and not isinstance(operations[0], Check):
        op = operations[0]
        # One key: a plain compare-and-set is one round trip on every engine.
        if isinstance(op, Put):
            await kv.put(op.key, op.value, expect_version=op.expect_version)
        else:
            await kv.delete(op.key, expect_version=op.expect_version)
        return
    await kv.transact(operations)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _dumps(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def _dumps_checked(table: str, doc: Mapping[str, Any]) -> None:
    try:
        _dumps(doc)
    except (TypeError, ValueError) as exc:
        raise InvalidItemError(table, "<item>", f"not storable as JSON: {exc}") from None


def _latest(*bounds: str | None) -> str | None:
    """The greatest of the exclusive lower bounds given (None: unbounded)."""
    given = [bound for bound in bounds if bound is not None]
    return max(given) if given else None


def _just_before(kv_key: str | None) -> str | None:
    """A string that sorts immediately before ``kv_key`` among encoded keys.

    Scans take an exclusive ``start_after``; an inclusive lower bound is the
    key with its last character lowered by one and padded with a character
    above any an encoded key holds.
    """
    if kv_key is None:
        return None
    return kv_key[:-1] + chr(ord(kv_key[-1]) - 1) + _AFTER_ANY_ENCODED


async def _backoff(attempt: int) -> None:
    # Contention jitter, not domain time: it spreads racing writers apart on the
    # real event loop, so it deliberately does not read the injected Clock.
    await asyncio.sleep(random.uniform(0, min(0.02, 0.0005 * 2 ** min(attempt, 10))))
