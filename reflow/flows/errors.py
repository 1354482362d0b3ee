"""The run-time errors of an execution, named as Step Functions names them.

These are not :class:`reflow.errors.ReflowError` subclasses raised to
callers: they travel inside the interpreter and end as a state's or an
execution's ``error`` / ``cause``. ``StatesError.name`` is the ASL error
name (``States.Runtime``, ``States.IntrinsicFailure`` …) that Retry and Catch
match against.
"""

from __future__ import annotations

__all__ = [
    "ALL",
    "BRANCH_FAILED",
    "DATA_LIMIT_EXCEEDED",
    "EXCEED_TOLERATED_FAILURE",
    "HEARTBEAT_TIMEOUT",
    "INTRINSIC_FAILURE",
    "ITEM_READER_FAILED",
    "NO_CHOICE_MATCHED",
    "PARAMETER_PATH_FAILURE",
    "PathSyntaxError",
    "QUERY_EVALUATION_ERROR",
    "RESULT_PATH_MATCH_FAILURE",
    "RUNTIME",
    "StatesError",
    "StatesRuntimeError",
    "TASK_FAILED",
    "TIMEOUT",
]

ALL = "States.ALL"
RUNTIME = "States.Runtime"
TASK_FAILED = "States.TaskFailed"
TIMEOUT = "States.Timeout"
HEARTBEAT_TIMEOUT = "States.HeartbeatTimeout"
BRANCH_FAILED = "States.BranchFailed"
NO_CHOICE_MATCHED = "States.NoChoiceMatched"
INTRINSIC_FAILURE = "States.IntrinsicFailure"
QUERY_EVALUATION_ERROR = "States.QueryEvaluationError"
PARAMETER_PATH_FAILURE = "States.ParameterPathFailure"
RESULT_PATH_MATCH_FAILURE = "States.ResultPathMatchFailure"
EXCEED_TOLERATED_FAILURE = "States.ExceedToleratedFailureThreshold"
ITEM_READER_FAILED = "States.ItemReaderFailed"
DATA_LIMIT_EXCEEDED = "States.DataLimitExceeded"


class StatesError(Exception):
    """An ASL error raised while running a state: ``name`` and ``cause``."""

    def __init__(self, name: str, cause: str = "") -> None:
        self.name = name
        self.cause = cause
        super().__init__(f"{name}: {cause}" if cause else name)


class StatesRuntimeError(StatesError):
    """``States.Runtime``: a path or value that cannot be processed."""

    def __init__(self, cause: str) -> None:
        super().__init__(RUNTIME, cause)


class PathSyntaxError(ValueError):
    """A path or intrinsic call does not parse (a definition problem)."""

    def __init__(self, text: str, problem: str) -> None:
        self.text = text
        self.problem = problem
        super().__init__(f"{text!r}: {problem}")
