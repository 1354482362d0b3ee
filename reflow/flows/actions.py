"""The values the pure core trades in: the cursor, outcomes and actions.

:func:`reflow.flows.interpreter.step` takes a :class:`Cursor` and maybe an
:class:`Outcome`, and returns an :data:`Action`; the executor does what the
action says. Everything here is a plain value that could be persisted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from reflow.flows.model import Retrier, StateMachine

__all__ = [
    "Action",
    "Branches",
    "Child",
    "Cursor",
    "Distributed",
    "Fail",
    "Failure",
    "Goto",
    "Invoke",
    "Outcome",
    "Result",
    "Retry",
    "Sleep",
    "Succeed",
]

_NO_VARIABLES: Mapping[str, Any] = MappingProxyType({})


class Cursor(NamedTuple):
    """Where a machine stands: the state, its raw input, the variables, retry counts.

    A named tuple rather than a frozen dataclass: one is made per transition,
    and a tuple is several times cheaper to build.
    """

    state: str
    input: Any
    variables: Mapping[str, Any] = _NO_VARIABLES
    attempts: tuple[int, ...] = ()

    @property
    def retry_count(self) -> int:
        """How many retries of the current state have happened (``$$.State.RetryCount``)."""
        return sum(self.attempts)


@dataclass(frozen=True)
class Result:
    """A task, wait or set of branches finished with ``value``."""

    value: Any


@dataclass(frozen=True)
class Failure:
    """A task or set of branches failed with ASL ``error`` and ``cause``."""

    error: str
    cause: str = ""


Outcome = Result | Failure


@dataclass(frozen=True)
class Invoke:
    """Call ``resource`` with ``payload`` (timeouts in seconds, if any)."""

    resource: str
    payload: Any
    timeout: float | None = None
    heartbeat: float | None = None


@dataclass(frozen=True)
class Sleep:
    """Wait ``seconds``, or until epoch time ``until``."""

    seconds: float | None = None
    until: float | None = None


@dataclass(frozen=True)
class Child:
    """One child run: a branch or a Map iteration (``index`` set for iterations)."""

    machine: StateMachine
    input: Any
    variables: Mapping[str, Any]
    index: int | None = None


@dataclass(frozen=True)
class Distributed:
    """A Distributed Map: where its items come from and where its results go.

    ``reader`` is the state's ItemReader with its ``Arguments`` resolved
    (``{"Resource", "ReaderConfig", "Arguments"}``), or None when the items
    come from the input; ``max_items`` its resolved MaxItems. The executor
    reads the items, then asks :func:`reflow.flows.mapping.expand` (pure) for
    the children, built from ``state``, ``cursor``, ``context`` and
    ``effective`` (the Map state's effective input). ``writer`` is the
    ResultWriter with resolved ``Arguments`` (``{"Bucket", "Prefix"}``).
    """

    reader: Mapping[str, Any] | None
    max_items: int | None
    writer: Mapping[str, Any] | None
    execution_type: str
    state: Any  # the MapState (typed Any: model imports stay one-way)
    cursor: Cursor
    context: Mapping[str, Any]
    effective: Any
    items: Any = None  # the selected array when there is no reader


@dataclass(frozen=True)
class Branches:
    """Run ``children`` (at most ``max_concurrency`` at once; 0 means no limit).

    A Distributed Map's children are made by the executor once it has read
    the items (``distributed``); each runs as a child execution of its own.
    """

    kind: str  # "Parallel" or "Map"
    children: tuple[Child, ...]
    max_concurrency: int = 0
    tolerated_count: int | None = None
    tolerated_percentage: float | None = None
    distributed: Distributed | None = None


@dataclass(frozen=True)
class Retry:
    """Wait the back-off for retry ``attempt`` of ``retrier``, then re-enter with ``cursor``."""

    cursor: Cursor
    retrier: Retrier
    attempt: int
    error: str
    cause: str


@dataclass(frozen=True)
class Goto:
    """Continue at ``cursor.state`` (``caught`` is the error a Catch handled, if any)."""

    cursor: Cursor
    caught: Failure | None = None


@dataclass(frozen=True)
class Succeed:
    """The machine finished with ``output`` (and these variables)."""

    output: Any
    variables: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fail:
    """The machine failed with ``error`` and ``cause``."""

    error: str
    cause: str = ""


Action = Invoke | Sleep | Branches | Retry | Goto | Succeed | Fail
