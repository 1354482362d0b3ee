"""The exception tree of reflow.

Every error reflow raises on purpose derives from :class:`ReflowError`, and
each area of the platform has one base of its own, so callers can catch as
broadly or as narrowly as they need. Errors carry the offending field, path or
name as attributes, not only inside the message, so tools can point at it::

    ReflowError
    ├── ConfigError                    a setting is missing or malformed (.setting)
    ├── AppError                       registering handlers on an App
    │   ├── RegistrationError          bad decorator use (.name, .problem)
    │   └── AppFrozenError             registering after the app started
    ├── BackendError                   the storage engines under everything
    │   ├── BackendUnavailableError    cannot reach / open the backend (.url)
    │   ├── VersionConflictError       compare-and-set lost (.key, .expected, .actual)
    │   └── TransactionConflictError   a multi-key transaction was refused (.key)
    ├── EventError
    │   ├── InvalidPatternError        an EventBridge pattern is malformed (.path, .rule)
    │   ├── InvalidEventError          an event envelope is malformed (.field)
    │   ├── EventTooLargeError         over the 256 KB limit (.size, .limit)
    │   └── InvalidScheduleError       a rate()/cron() expression is malformed
    ├── FunctionError
    │   ├── FunctionNotFoundError      no function of that name (.name)
    │   ├── ThrottledError             over the reserved concurrency (.name)
    │   ├── FunctionTimeoutError       ran past its timeout (.name, .timeout)
    │   ├── FunctionCrashedError       the worker died (.name, .cause)
    │   ├── HandlerError               the handler raised (.error_type, .error_message)
    │   └── NotAvailableError          a platform client whose subsystem is absent
    ├── EdgeError
    │   ├── InvalidRequestError        an HTTP request broke the protocol (.status)
    │   ├── OriginError                the origin failed or timed out (.origin)
    │   └── HookError                  an edge function broke its contract (.hook, .field)
    ├── FlowError
    │   ├── InvalidDefinitionError     a state machine is malformed (.problems)
    │   ├── ExecutionNotFoundError     no execution of that name (.name)
    │   └── ExecutionAlreadyExistsError
    ├── StateError
    │   ├── ConditionFailedError       a conditional write was refused (.item)
    │   ├── ItemNotFoundError          (.table, .key)
    │   ├── InvalidKeyError            an item lacks its key attributes (.table, .field)
    │   ├── InvalidItemError           an item or update is not storable (.table, .field)
    │   ├── InvalidRateError           a rate is not N/unit (.rate)
    │   └── InsufficientError          a bounded decrement would pass its floor (.key)
    └── SecurityError
        ├── PermissionDeniedError      a handler used a resource it did not declare
        └── SecretNotFoundError        no readable secret of that name (.name, .reason)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "AppError",
    "AppFrozenError",
    "BackendError",
    "BackendUnavailableError",
    "ConditionFailedError",
    "ConfigError",
    "EdgeError",
    "EventError",
    "EventTooLargeError",
    "ExecutionAlreadyExistsError",
    "ExecutionNotFoundError",
    "FlowError",
    "FunctionCrashedError",
    "FunctionError",
    "FunctionNotFoundError",
    "FunctionTimeoutError",
    "HandlerError",
    "HookError",
    "InvalidDefinitionError",
    "InsufficientError",
    "InvalidEventError",
    "InvalidItemError",
    "InvalidKeyError",
    "InvalidPatternError",
    "InvalidRateError",
    "InvalidRequestError",
    "InvalidScheduleError",
    "ItemNotFoundError",
    "NotAvailableError",
    "OriginError",
    "PermissionDeniedError",
    "RegistrationError",
    "ReflowError",
    "SecretNotFoundError",
    "SecurityError",
    "StateError",
    "ThrottledError",
    "TransactionConflictError",
    "VersionConflictError",
]


class ReflowError(Exception):
    """The root of every error reflow raises on purpose."""


# --- configuration ---------------------------------------------------------


class ConfigError(ReflowError):
    """A setting from the environment or reflow.toml is missing or malformed."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting}: {problem}")


# --- the App model ---------------------------------------------------------


class AppError(ReflowError):
    """Base for mistakes in how handlers are registered on an App."""


class RegistrationError(AppError):
    """A decorator was used wrongly; raised at import time, not at run time."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"{name}: {problem}")


class AppFrozenError(AppError):
    """The app has started; its registrations can no longer change."""

    def __init__(self, app: str, what: str) -> None:
        self.app = app
        self.what = what
        super().__init__(f"app {app!r} is frozen (it has started); cannot register {what}")


# --- backends --------------------------------------------------------------


class BackendError(ReflowError):
    """Base for failures of the storage engines (SQLite, Redis, files)."""


class BackendUnavailableError(BackendError):
    """The backend named by a URL cannot be reached or opened."""

    def __init__(self, url: str, problem: str) -> None:
        self.url = url
        self.problem = problem
        super().__init__(f"backend {url}: {problem}")


class VersionConflictError(BackendError):
    """A compare-and-set found another version than the one expected."""

    def __init__(self, key: str, expected: int | None, actual: int | None) -> None:
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"key {key!r}: expected version {_version_text(expected)}, "
            f"found {_version_text(actual)}"
        )


class TransactionConflictError(BackendError):
    """A multi-key transaction was refused as a whole because one check failed."""

    def __init__(self, key: str, expected: int | None, actual: int | None) -> None:
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"transaction refused, nothing written: key {key!r} expected version "
            f"{_version_text(expected)}, found {_version_text(actual)}"
        )


def _version_text(version: int | None) -> str:
    return "none (absent)" if not version else str(version)


# --- events ----------------------------------------------------------------


class EventError(ReflowError):
    """Base for the event bus: patterns, envelopes, schedules, delivery."""


class InvalidPatternError(EventError):
    """An EventBridge event pattern is malformed.

    ``path`` is the dotted path of the offending field inside the pattern
    (empty for the pattern as a whole); ``rule`` says what it breaks.
    """

    def __init__(self, path: str, rule: str) -> None:
        self.path = path
        self.rule = rule
        where = f"at {path}" if path else "pattern"
        super().__init__(f"{where}: {rule}")


class InvalidEventError(EventError):
    """An event envelope lacks a required attribute or has a malformed one."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"event {field}: {problem}")


class EventTooLargeError(EventError):
    """An event is larger than the bus accepts."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"event is {size} bytes; the limit is {limit} bytes")


class InvalidScheduleError(EventError):
    """A schedule expression is not a valid rate() or cron() expression."""

    def __init__(self, expression: str, problem: str) -> None:
        self.expression = expression
        self.problem = problem
        super().__init__(f"schedule {expression!r}: {problem}")


# --- functions -------------------------------------------------------------


class FunctionError(ReflowError):
    """Base for the functions runtime."""


class FunctionNotFoundError(FunctionError):
    """No function is registered under that name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no function named {name!r}")


class ThrottledError(FunctionError):
    """A synchronous call found the function at its reserved concurrency."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        super().__init__(f"function {name!r} is at its reserved concurrency of {limit}")


class FunctionTimeoutError(FunctionError):
    """A handler ran past its timeout and was stopped."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        super().__init__(f"function {name!r} timed out after {timeout:g} s")


class FunctionCrashedError(FunctionError):
    """The worker process running a handler died."""

    def __init__(self, name: str, cause: str) -> None:
        self.name = name
        self.cause = cause
        super().__init__(f"function {name!r} crashed: {cause}")


class HandlerError(FunctionError):
    """A handler raised; its exception's class name and message are kept."""

    def __init__(
        self, name: str, error_type: str, error_message: str, trace: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.error_type = error_type
        self.error_message = error_message
        self.trace = tuple(trace)
        super().__init__(f"function {name!r} raised {error_type}: {error_message}")


class NotAvailableError(FunctionError):
    """A platform client was used whose subsystem is not available here."""

    def __init__(self, client: str, reason: str) -> None:
        self.client = client
        self.reason = reason
        super().__init__(f"context.{client} is not available: {reason}")


# --- edge ------------------------------------------------------------------


class EdgeError(ReflowError):
    """Base for the edge server, its cache and its hooks."""


class InvalidRequestError(EdgeError):
    """An HTTP request broke the protocol; the connection is closed after it."""

    def __init__(self, status: int, problem: str) -> None:
        self.status = status
        self.problem = problem
        super().__init__(f"{status}: {problem}")


class OriginError(EdgeError):
    """The origin failed, refused or timed out."""

    def __init__(self, origin: str, problem: str) -> None:
        self.origin = origin
        self.problem = problem
        super().__init__(f"origin {origin}: {problem}")


class HookError(EdgeError):
    """An edge function returned something its hook may not return."""

    def __init__(self, hook: str, field: str, problem: str) -> None:
        self.hook = hook
        self.field = field
        self.problem = problem
        super().__init__(f"{hook} hook, {field}: {problem}")


# --- flows -----------------------------------------------------------------


class FlowError(ReflowError):
    """Base for state machines and their executions."""


class InvalidDefinitionError(FlowError):
    """A state machine definition is malformed; ``problems`` lists every one.

    Each problem is a ``(json_path, message)`` pair.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        lines = [f"{path}: {message}" for path, message in self.problems]
        count = len(lines)
        head = f"invalid state machine ({count} problem{'s' if count != 1 else ''})"
        super().__init__(head + "".join(f"\n  {line}" for line in lines))


class ExecutionNotFoundError(FlowError):
    """No execution of that name or id exists."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no execution named {name!r}")


class ExecutionAlreadyExistsError(FlowError):
    """An execution of that name exists with a different input."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"an execution named {name!r} already exists with another input")


# --- state -----------------------------------------------------------------


class StateError(ReflowError):
    """Base for tables, counters, rate limits and replication."""


class ConditionFailedError(StateError):
    """A conditional write was refused; ``item`` is the item as it stands."""

    def __init__(self, table: str, condition: str, item: Mapping[str, Any] | None) -> None:
        self.table = table
        self.condition = condition
        self.item = dict(item) if item is not None else None
        super().__init__(f"table {table!r}: condition {condition} failed")


class ItemNotFoundError(StateError):
    """No item has that key."""

    def __init__(self, table: str, key: Mapping[str, Any]) -> None:
        self.table = table
        self.key = dict(key)
        super().__init__(f"table {table!r}: no item with key {self.key}")


class InvalidKeyError(StateError):
    """An item or key lacks a key attribute, or has one of the wrong type."""

    def __init__(self, table: str, field: str, problem: str) -> None:
        self.table = table
        self.field = field
        self.problem = problem
        super().__init__(f"table {table!r}, {field}: {problem}")


class InvalidItemError(StateError):
    """An item or an update cannot be stored: not JSON, or an attribute of the wrong type."""

    def __init__(self, table: str, field: str, problem: str) -> None:
        self.table = table
        self.field = field
        self.problem = problem
        super().__init__(f"table {table!r}, {field}: {problem}")


class InvalidRateError(StateError):
    """A rate string is not ``N/unit`` (``100/minute``, ``10/5s``)."""

    def __init__(self, rate: str, problem: str) -> None:
        self.rate = rate
        self.problem = problem
        super().__init__(f"rate {rate!r}: {problem}")


class InsufficientError(StateError):
    """A bounded decrement would take a counter below its minimum; nothing changed."""

    def __init__(self, key: str, available: int, wanted: int, minimum: int) -> None:
        self.key = key
        self.available = available
        self.wanted = wanted
        self.minimum = minimum
        super().__init__(
            f"counter {key!r}: taking {wanted} from {available} would go below {minimum}"
        )


# --- security --------------------------------------------------------------


class SecurityError(ReflowError):
    """Base for permissions, secrets, signing and event schemas."""


class PermissionDeniedError(SecurityError):
    """A handler reached a resource its declared permissions do not cover."""

    def __init__(self, function: str, action: str, resource: str) -> None:
        self.function = function
        self.action = action
        self.resource = resource
        super().__init__(
            f"function {function!r} may not {action} {resource!r}: no declared permission covers it"
        )


class SecretNotFoundError(SecurityError):
    """No secret of that name can be read (``context.secrets.get``).

    ``reason`` says why (no such file, not readable, not UTF-8) and never
    contains any part of a secret's value.
    """

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"secret {name!r} not found: {reason}")
