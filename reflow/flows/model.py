"""The parsed state machine: frozen dataclasses, one per state type.

A definition is JSON that is already parsed, so the model is plain values:
:class:`StateMachine` holds its states by name, and each state keeps the
fields of its type with the Amazon States Language's defaults filled in
(``InputPath`` ``"$"``, ``ResultPath`` ``"$"``, ``MaxAttempts`` 3 …).
Templates (``Parameters``, ``Arguments``, ``Output`` …) stay as the JSON
values they are; the interpreter evaluates them. Nested JSON values are not
deep-frozen: treat them as read-only.

``UNSET`` marks an optional field that was absent, where ``None`` would be
a meaningful value (``"ResultPath": null`` discards the result).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "JSONATA",
    "JSONPATH",
    "UNSET",
    "Catcher",
    "ChoiceRule",
    "ChoiceState",
    "FailState",
    "MapState",
    "ParallelState",
    "PassState",
    "Retrier",
    "State",
    "StateMachine",
    "SucceedState",
    "TaskState",
    "Unset",
    "WaitState",
]

JSONPATH: Final = "JSONPath"
JSONATA: Final = "JSONata"


class Unset:
    """The type of :data:`UNSET`: a field the definition left out."""

    _instance: Unset | None = None

    def __new__(cls) -> Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = Unset()


@dataclass(frozen=True, kw_only=True)
class Retrier:
    """One entry of a ``Retry`` list."""

    error_equals: tuple[str, ...]
    interval_seconds: float = 1.0
    max_attempts: int = 3
    backoff_rate: float = 2.0
    max_delay_seconds: float | None = None
    jitter_strategy: str = "NONE"


@dataclass(frozen=True, kw_only=True)
class Catcher:
    """One entry of a ``Catch`` list: where an error goes and what it carries."""

    error_equals: tuple[str, ...]
    next: str
    result_path: str | None = "$"
    output: Any = UNSET
    assign: Mapping[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class ChoiceRule:
    """A Choice rule: a comparison, a combination (And/Or/Not) or a JSONata Condition.

    ``operator`` is the comparison's field name (``StringEquals``,
    ``NumericLessThanPath``, ``IsPresent`` …) or ``And``/``Or``/``Not``/
    ``Condition``; ``operand`` its value; ``children`` the nested rules of a
    combination. ``next`` is set on top-level rules only.
    """

    operator: str
    variable: str | None = None
    operand: Any = None
    children: tuple[ChoiceRule, ...] = ()
    next: str | None = None
    output: Any = UNSET
    assign: Mapping[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class State:
    """The fields every state type shares (each defaulted as ASL defines)."""

    name: str
    type: str
    query_language: str = JSONPATH
    comment: str | None = None
    next: str | None = None
    end: bool = False
    input_path: str | None = "$"
    output_path: str | None = "$"
    parameters: Any = UNSET
    result_selector: Any = UNSET
    result_path: str | None = "$"
    arguments: Any = UNSET
    output: Any = UNSET
    assign: Mapping[str, Any] | None = None
    retry: tuple[Retrier, ...] = ()
    catch: tuple[Catcher, ...] = ()

    @property
    def jsonata(self) -> bool:
        """Whether this state's fields are JSONata rather than JSONPath."""
        return self.query_language == JSONATA


@dataclass(frozen=True, kw_only=True)
class PassState(State):
    """Pass: passes its input (or ``Result``) on, transformed."""

    result: Any = UNSET


@dataclass(frozen=True, kw_only=True)
class TaskState(State):
    """Task: invokes the function its ``Resource`` names."""

    resource: str = ""
    timeout_seconds: Any = UNSET
    timeout_seconds_path: str | None = None
    heartbeat_seconds: Any = UNSET
    heartbeat_seconds_path: str | None = None


@dataclass(frozen=True, kw_only=True)
class ChoiceState(State):
    """Choice: the first matching rule names the next state, else ``Default``."""

    choices: tuple[ChoiceRule, ...] = ()
    default: str | None = None


@dataclass(frozen=True, kw_only=True)
class WaitState(State):
    """Wait: a number of seconds, or until a timestamp."""

    seconds: Any = UNSET
    timestamp: Any = UNSET
    seconds_path: str | None = None
    timestamp_path: str | None = None


@dataclass(frozen=True, kw_only=True)
class SucceedState(State):
    """Succeed: ends the execution (or branch) successfully."""


@dataclass(frozen=True, kw_only=True)
class FailState(State):
    """Fail: ends the execution (or branch) with an error and a cause."""

    error: Any = UNSET
    cause: Any = UNSET
    error_path: str | None = None
    cause_path: str | None = None


@dataclass(frozen=True, kw_only=True)
class ParallelState(State):
    """Parallel: runs every branch on the same input; output is their outputs."""

    branches: tuple[StateMachine, ...] = ()


@dataclass(frozen=True, kw_only=True)
class MapState(State):
    """Map (inline): runs ``processor`` once per item of the selected array."""

    processor: StateMachine | None = None
    items_path: str = "$"
    items: Any = UNSET
    item_selector: Any = UNSET
    max_concurrency: Any = 0
    max_concurrency_path: str | None = None
    tolerated_failure_count: Any = UNSET
    tolerated_failure_count_path: str | None = None
    tolerated_failure_percentage: Any = UNSET
    tolerated_failure_percentage_path: str | None = None
    item_batcher: Mapping[str, Any] | None = None
    item_reader: Mapping[str, Any] | None = None
    result_writer: Mapping[str, Any] | None = None
    label: str | None = None


@dataclass(frozen=True, kw_only=True)
class StateMachine:
    """A parsed, validated state machine (or a Parallel branch / Map processor)."""

    start_at: str
    states: Mapping[str, State]
    query_language: str = JSONPATH
    comment: str | None = None
    timeout_seconds: float | None = None
    version: str | None = None
    definition: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def state(self, name: str) -> State:
        """The state called ``name`` (validation guarantees every ``Next`` exists)."""
        return self.states[name]

    @classmethod
    def parse(cls, definition: str | bytes | Mapping[str, Any]) -> StateMachine:
        """Validate and build ``definition`` (a dict or JSON text).

        Raises :class:`reflow.errors.InvalidDefinitionError` listing every problem.
        """
        from reflow.flows.parse import parse  # parse.py builds this model: import late

        return parse(definition)
