"""What a handler reaches through ``context.tables`` and ``context.limits``, behind the hook.

Every table call passes ``context.authorize(action, table)`` first —
``tables:read`` for ``get``, ``query`` and ``scan``, ``tables:write`` for the
writes — so a function's declared permissions
(``permissions=["tables:write:articles"]``) govern it once enforcement lands
in ``reflow.security``, without any handler changing. The hook allows
everything until then.

``context.limits`` (:class:`LimitsClient`) does the same: ``limits:hit`` on
``limit/<key>`` for a rate-limit hit, ``limits:read`` / ``limits:write`` on
``counter/<key>`` for the counters. Rate limits and counters live in
separate namespaces in the backend, so their resources carry a kind prefix
(as the bus's ``bus/<name>`` and the cache's ``key/…`` / ``path/…`` do).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from reflow.state.conditions import Condition
from reflow.state.counters import Counters
from reflow.state.limits import Decision, Rate, RateLimiter
from reflow.state.replication import GlobalTable
from reflow.state.tables import Document, KeyInput, Page, Table, WriteOp

__all__ = ["GlobalTableClient", "LimitsClient", "TableClient", "TablesClient"]

Authorize = Callable[[str, str], None]


class TableClient:
    """One table as a handler sees it: the :class:`Table` API, each call authorised."""

    def __init__(self, table: Table, authorize: Authorize) -> None:
        self._table = table
        self._authorize = authorize
        self.name = table.name
        self.key = table.key
        self.sort_key = table.sort_key

    async def get(self, key: KeyInput) -> Document | None:
        """See :meth:`Table.get`."""
        self._authorize("tables:read", self.name)
        return await self._table.get(key)

    async def put(
        self,
        item: Mapping[str, Any],
        *,
        condition: Condition | None = None,
        return_old: bool = False,
    ) -> Document | None:
        """See :meth:`Table.put`."""
        self._authorize("tables:write", self.name)
        return await self._table.put(item, condition=condition, return_old=return_old)

    async def update(
        self,
        key: KeyInput,
        *,
        set: Mapping[str, Any] | None = None,  # noqa: A002 - DynamoDB's word for it
        add: Mapping[str, int | float] | None = None,
        remove: Iterable[str] = (),
        condition: Condition | None = None,
    ) -> Document:
        """See :meth:`Table.update`."""
        self._authorize("tables:write", self.name)
        return await self._table.update(key, set=set, add=add, remove=remove, condition=condition)

    async def delete(self, key: KeyInput, *, condition: Condition | None = None) -> Document | None:
        """See :meth:`Table.delete`."""
        self._authorize("tables:write", self.name)
        return await self._table.delete(key, condition=condition)

    async def put_versioned(
        self, item: Mapping[str, Any], *, attribute: str = "version"
    ) -> Document:
        """See :meth:`Table.put_versioned`."""
        self._authorize("tables:write", self.name)
        return await self._table.put_versioned(item, attribute=attribute)

    async def query(self, partition: str | int | float, **options: Any) -> Page:
        """See :meth:`Table.query`."""
        self._authorize("tables:read", self.name)
        return await self._table.query(partition, **options)

    async def scan(self, *, limit: int | None = None, cursor: str | None = None) -> Page:
        """See :meth:`Table.scan`."""
        self._authorize("tables:read", self.name)
        return await self._table.scan(limit=limit, cursor=cursor)

    def cursor_after(self, key: KeyInput, *, query: bool = False) -> str:
        """See :meth:`Table.cursor_after` (reads nothing: no authorisation)."""
        return self._table.cursor_after(key, query=query)

    async def transact(self, operations: Sequence[WriteOp]) -> list[Document | None]:
        """See :meth:`Table.transact`."""
        self._authorize("tables:write", self.name)
        return await self._table.transact(operations)

    def __repr__(self) -> str:
        return f"TableClient({self.name!r})"


class TablesClient(Mapping[str, "TableClient | GlobalTableClient"]):
    """``context.tables``: the app's tables by name, each behind the hook."""

    def __init__(self, tables: Mapping[str, Table | GlobalTable], authorize: Authorize) -> None:
        self._clients: dict[str, TableClient | GlobalTableClient] = {
            name: GlobalTableClient(table, authorize)
            if isinstance(table, GlobalTable)
            else TableClient(table, authorize)
            for name, table in tables.items()
        }

    def __getitem__(self, name: str) -> TableClient | GlobalTableClient:
        try:
            return self._clients[name]
        except KeyError:
            known = ", ".join(sorted(self._clients)) or "none"
            raise KeyError(f"no table named {name!r}; the app declares: {known}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._clients)

    def __len__(self) -> int:
        return len(self._clients)


class GlobalTableClient:
    """A global table as a handler sees it (``reflow.state.replication``), each call authorised.

    Writes are last-writer-wins per item across regions, so the operations
    that need one region's serial order — ``transact``, ``put_versioned``,
    ``update(add=…)`` — are not offered.
    """

    def __init__(self, table: GlobalTable, authorize: Authorize) -> None:
        self._table = table
        self._authorize = authorize
        self.name = table.name
        self.key = table.table.key
        self.sort_key = table.table.sort_key

    async def get(self, key: KeyInput) -> Document | None:
        """See :meth:`GlobalTable.get`."""
        self._authorize("tables:read", self.name)
        return await self._table.get(key)

    async def put(self, item: Mapping[str, Any], *, condition: Condition | None = None) -> None:
        """See :meth:`GlobalTable.put`."""
        self._authorize("tables:write", self.name)
        await self._table.put(item, condition=condition)

    async def update(
        self,
        key: KeyInput,
        *,
        set: Mapping[str, Any] | None = None,  # noqa: A002 - DynamoDB's word for it
        remove: Iterable[str] = (),
        condition: Condition | None = None,
    ) -> Document:
        """See :meth:`GlobalTable.update`."""
        self._authorize("tables:write", self.name)
        return await self._table.update(key, set=set, remove=tuple(remove), condition=condition)

    async def delete(self, key: KeyInput, *, condition: Condition | None = None) -> None:
        """See :meth:`GlobalTable.delete`."""
        self._authorize("tables:write", self.name)
        await self._table.delete(key, condition=condition)

    async def query(self, partition: str | int | float, **options: Any) -> Page:
        """See :meth:`GlobalTable.query`."""
        self._authorize("tables:read", self.name)
        return await self._table.query(partition, **options)

    async def scan(self, *, limit: int | None = None, cursor: str | None = None) -> Page:
        """See :meth:`GlobalTable.scan`."""
        self._authorize("tables:read", self.name)
        return await self._table.scan(limit=limit, cursor=cursor)

    def cursor_after(self, key: KeyInput, *, query: bool = False) -> str:
        """See :meth:`Table.cursor_after` (reads nothing: no authorisation)."""
        return self._table.table.cursor_after(key, query=query)

    def __repr__(self) -> str:
        return f"GlobalTableClient({self.name!r})"


class LimitsClient:
    """``context.limits``: rate limits and bounded counters, each call authorised.

    One per invocation (or per edge hook call): it authorises against the
    calling function, so it must not be shared between contexts.
    """

    __slots__ = ("_authorize", "_counters", "_limiter")

    def __init__(self, limiter: RateLimiter, counters: Counters, authorize: Authorize) -> None:
        self._limiter = limiter
        self._counters = counters
        self._authorize = authorize

    async def hit(self, key: str, rate: str | Rate = "100/minute", *, cost: int = 1) -> Decision:
        """See :meth:`RateLimiter.hit` (action ``limits:hit`` on ``limit/<key>``)."""
        self._authorize("limits:hit", f"limit/{key}")
        return await self._limiter.hit(key, rate, cost=cost)

    async def incr(self, key: str, by: int = 1) -> int:
        """See :meth:`Counters.incr` (action ``limits:write`` on ``counter/<key>``)."""
        self._authorize("limits:write", f"counter/{key}")
        return await self._counters.incr(key, by)

    async def decrement_if(self, key: str, by: int = 1, *, minimum: int = 0) -> int:
        """See :meth:`Counters.decrement_if` (action ``limits:write`` on ``counter/<key>``)."""
        self._authorize("limits:write", f"counter/{key}")
        return await self._counters.decrement_if(key, by, minimum=minimum)

    async def counter(self, key: str) -> int:
        """A counter's value, see :meth:`Counters.get` (``limits:read`` on ``counter/<key>``)."""
        self._authorize("limits:read", f"counter/{key}")
        return await self._counters.get(key)

    def __repr__(self) -> str:
        return "LimitsClient()"
