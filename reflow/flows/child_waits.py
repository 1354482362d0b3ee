"""Callback tasks and nested executions inside durable Parallel branches and Map iterations.

A child (see :mod:`reflow.flows.iterations`) that reaches a
``.waitForTaskToken`` task, or a ``startExecution.sync`` task whose child
execution still runs, *parks*: it saves what it waits for in its own record
(``wait``, as a top-level execution does) and stops. Once every child of the
state has ended or parked, the parent's transition ends too — it saves the
parent as waiting for its children (``{"kind": "children"}``), not runnable —
and no worker holds anything while a human takes a week to answer.

Waking: answering a child's token (its token key names the child's record)
writes the answer into the child's record *and* marks the parent ready in
one ``KV.transact``, so neither can be lost without the other; the service
then queues the parent. A child's ``TimeoutSeconds``/``HeartbeatSeconds``
timers and a nested execution's end are durable timers of the parent: they
mark it ready (or, for a nested ``.sync`` execution, the parent's fallback
look comes due). The parent's redone transition enters the state again; its
children resume from their records: a finished one gives its outcome, an
answered one goes on with the answer, one whose time ran out fails with
``States.Timeout``/``States.HeartbeatTimeout``, one still waiting parks again.

Should an answer come while the parent's transition is still running (other
children busy), the same transaction moves the parent's record on: that
transition's own save is then refused, and the redo (queued by the answer)
picks the answer up.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from reflow.backends import KV, Put
from reflow.errors import TransactionConflictError, VersionConflictError
from reflow.flows import interpreter as core
from reflow.flows.children import StartChild, StopChild
from reflow.flows.errors import HEARTBEAT_TIMEOUT, TIMEOUT
from reflow.flows.history import History
from reflow.flows.model import StateMachine
from reflow.flows.store import RUNNING, ExecutionRecord, ExecutionStore, record_key

if TYPE_CHECKING:
    from reflow.flows.executor import Executor

__all__ = [
    "CALLBACK_SUFFIX",
    "CHILD_PREFIX",
    "Host",
    "Parked",
    "answer_child",
    "beat_child",
    "child_token",
    "expired",
    "parent_of",
    "poke",
]

CALLBACK_SUFFIX = ".waitForTaskToken"
CHILD_PREFIX = "flows/c/"
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


class Parked(Exception):
    """A child (or every unfinished child of a state) waits for a token or an execution.

    ``at``: when to look again at the earliest nested execution waited for (a
    fallback, as at the top level), or None; ``children``: the names of the
    nested executions waited for (their end wakes the parent).
    """

    def __init__(self, at: float | None = None, children: list[str] | None = None) -> None:
        super().__init__("parked")
        self.at = at
        self.children = list(children or ())


class Host(Protocol):
    """What the durable runner lends children for callbacks and nested executions."""

    store: ExecutionStore
    machines: Mapping[str, StateMachine]
    start_child: StartChild | None
    stop_child: StopChild | None

    def calls(self, resource: str) -> bool:
        """Whether a callback task on ``resource`` (suffix removed) calls something."""

    async def deliver(
        self,
        wait: Mapping[str, Any],
        cursor: core.Cursor,
        context: Mapping[str, Any],
        executor: Executor,
    ) -> core.Outcome:
        """Hand the callback task's payload (with its token) to its function."""


def child_token(execution_id: str, state: str, visit: int, attempt: int) -> str:
    """A child's callback token: the same on every redo, distinct per (child, state,
    visit, attempt) — the child's execution id is distinct per child."""
    seed = f"{execution_id}/{state}@{visit}/{attempt}"
    return hashlib.sha256(seed.encode()).hexdigest()[:40]


def parent_of(key: str) -> str:
    """The top-level execution a child record key belongs to."""
    return key[len(CHILD_PREFIX) :].split("/", 1)[0]


def expired(wait: Mapping[str, Any], now: float, state: str) -> core.Failure | None:
    """The failure of a token wait whose TimeoutSeconds or HeartbeatSeconds ran out."""
    if wait.get("timeout_at") is not None and now >= wait["timeout_at"]:
        return core.Failure(TIMEOUT, f"Task '{state}' ran past its TimeoutSeconds")
    if wait.get("heartbeat_at") is not None and now >= wait["heartbeat_at"]:
        return core.Failure(HEARTBEAT_TIMEOUT, f"Task '{state}' sent no heartbeat")
    return None


def append_events(record: ExecutionRecord, history: History) -> None:
    """Add ``history``'s events to a child record's saved events."""
    fresh = history.stored()
    if fresh:
        encoded = _ENCODE(fresh)[1:-1].encode()
        record.tail = record.tail + b"," + encoded if record.tail else encoded


def _poked(record: ExecutionRecord) -> None:
    """Mark a parent waiting for its children as ready (anything else: left as is)."""
    wait = record.wait
    if record.status == RUNNING and wait is not None and wait["kind"] == "children":
        record.wait = {**wait, "ready": True}


async def poke(store: ExecutionStore, name: str) -> bool:
    """Make parent ``name`` look at its children again: mark it ready if it waits for
    them, else move its record on (a transition still running is then redone)."""
    for _ in range(20):
        loaded = await store.load(name)
        if loaded is None or loaded[0].status != RUNNING:
            return False
        record, version = loaded
        _poked(record)
        prepared = store.prepare(record, [])
        try:
            await store.kv.put(record_key(name), prepared.value, expect_version=version)
        except VersionConflictError:
            continue
        return True
    return False


async def answer_child(
    store: ExecutionStore, key: str, token: str, outcome: core.Outcome, event: str, now: float
) -> bool:
    """Record a child's callback answer and mark its parent ready, in one transaction.

    False when the child no longer waits for ``token`` (answered, timed out, or the
    state is over).
    """
    kv: KV = store.kv
    name = parent_of(key)
    for _ in range(20):
        item = await kv.get(key)
        loaded = await store.load(name)
        if item is None or loaded is None or loaded[0].status != RUNNING:
            return False
        child = ExecutionRecord.from_json(item.value)
        wait = child.wait
        if child.status != RUNNING or wait is None or wait.get("token") != token:
            return False
        if wait["kind"] != "token":
            return False  # answered already
        history = History()
        if isinstance(outcome, core.Failure):
            child.wait = {"kind": "outcome", "error": outcome.error, "cause": outcome.cause}
            history.add(event, now, name=child.state, error=outcome.error, cause=outcome.cause)
        else:
            child.wait = {"kind": "outcome", "result": outcome.value}
            history.add(event, now, name=child.state, output=outcome.value)
        append_events(child, history)
        parent, version = loaded
        _poked(parent)
        prepared = store.prepare(parent, [])
        try:
            await kv.transact(
                [
                    Put(key, child.to_json(), expect_version=item.version),
                    Put(record_key(name), prepared.value, expect_version=version),
                ]
            )
        except (TransactionConflictError, VersionConflictError):
            continue  # one of them moved on: read both again
        return True
    return False


async def beat_child(kv: KV, key: str, token: str, now: float) -> float | None:
    """A heartbeat for a child's token: its new heartbeat deadline (None: no
    HeartbeatSeconds); raises LookupError when the child no longer waits for it."""
    for _ in range(20):
        item = await kv.get(key)
        child = ExecutionRecord.from_json(item.value) if item is not None else None
        wait = child.wait if child is not None else None
        if item is None or child is None or wait is None or wait.get("token") != token:
            raise LookupError(token)
        if child.status != RUNNING or wait["kind"] != "token":
            raise LookupError(token)
        if wait.get("heartbeat") is None:
            return None
        wait["heartbeat_at"] = now + wait["heartbeat"]
        try:
            await kv.put(key, child.to_json(), expect_version=item.version)
        except VersionConflictError:
            continue
        return float(wait["heartbeat_at"])
    raise LookupError(token)
