"""Shared state for stateless functions: tables, change streams, rate limits, counters.

The front door of ``reflow.state``: everything here is written against the
``KV`` and ``Log`` primitives, so it runs unchanged on memory, SQLite and Redis.
"""

from __future__ import annotations

from reflow.state.conditions import Attr, Condition, attr
from reflow.state.counters import Counters
from reflow.state.limits import Decision, Rate, RateLimiter, parse_rate
from reflow.state.service import StateService
from reflow.state.streams import (
    DEFAULT_RETENTION,
    StreamConsumer,
    StreamRecord,
    StreamRelay,
    to_event,
)
from reflow.state.tables import (
    CheckOp,
    DeleteOp,
    Page,
    PutOp,
    Table,
    UpdateOp,
    WriteOp,
    transact,
)

__all__ = [
    "DEFAULT_RETENTION",
    "Attr",
    "CheckOp",
    "Condition",
    "Counters",
    "Decision",
    "DeleteOp",
    "Page",
    "PutOp",
    "Rate",
    "RateLimiter",
    "StateService",
    "StreamConsumer",
    "StreamRecord",
    "StreamRelay",
    "Table",
    "UpdateOp",
    "WriteOp",
    "attr",
    "parse_rate",
    "to_event",
    "transact",
]
