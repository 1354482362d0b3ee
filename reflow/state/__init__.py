"""Shared state for stateless functions: tables, change streams, rate limits, counters.

The front door of ``reflow.state``: everything here is written against the
``KV`` and ``Log`` primitives, so it runs unchanged on memory, SQLite and Redis.
"""

from __future__ import annotations

from reflow.state.conditions import Attr, Condition, attr
from reflow.state.streams import (
    DEFAULT_RETENTION,
    StreamConsumer,
    StreamRecord,
    StreamRelay,
    to_event,
)
from reflow.state.tables import CheckOp, DeleteOp, Page, PutOp, Table, UpdateOp, WriteOp

__all__ = [
    "DEFAULT_RETENTION",
    "Attr",
    "CheckOp",
    "Condition",
    "DeleteOp",
    "Page",
    "PutOp",
    "StreamConsumer",
    "StreamRecord",
    "StreamRelay",
    "Table",
    "UpdateOp",
    "WriteOp",
    "attr",
    "to_event",
]
