"""From a definition (dict or JSON text) to a validated :class:`StateMachine`.

:func:`parse` first runs :func:`reflow.flows.validate.problems` and raises
:class:`reflow.errors.InvalidDefinitionError` listing every problem; only a
valid definition is turned into the frozen model, so the builders here can
trust the shapes they read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from reflow.errors import InvalidDefinitionError
from reflow.flows.model import (
    JSONATA,
    JSONPATH,
    UNSET,
    Catcher,
    ChoiceRule,
    ChoiceState,
    FailState,
    MapState,
    ParallelState,
    PassState,
    Retrier,
    State,
    StateMachine,
    SucceedState,
    TaskState,
    WaitState,
)
from reflow.flows.validate import problems

__all__ = ["load", "parse"]


def load(definition: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    """The definition as a dict; JSON text is decoded (errors become problems)."""
    if isinstance(definition, Mapping):
        return dict(definition)
    try:
        loaded = json.loads(definition)
    except ValueError as error:
        raise InvalidDefinitionError([("$", f"not valid JSON: {error}")]) from None
    if not isinstance(loaded, dict):
        raise InvalidDefinitionError([("$", "a state machine definition must be a JSON object")])
    return loaded


def parse(definition: str | bytes | Mapping[str, Any]) -> StateMachine:
    """Validate and build ``definition``; raises InvalidDefinitionError with every problem."""
    raw = load(definition)
    found = problems(raw)
    if found:
        raise InvalidDefinitionError(found)
    timeout = raw.get("TimeoutSeconds")
    return _machine(
        raw,
        raw.get("QueryLanguage", JSONPATH),
        timeout=float(timeout) if timeout is not None else None,
    )


def _machine(raw: Mapping[str, Any], inherited: str, timeout: float | None = None) -> StateMachine:
    language = raw.get("QueryLanguage", inherited)
    states = {name: _state(name, body, language) for name, body in raw["States"].items()}
    return StateMachine(
        start_at=raw["StartAt"],
        states=states,
        query_language=language,
        comment=raw.get("Comment"),
        timeout_seconds=timeout,
        version=raw.get("Version"),
        definition=raw,
    )


def _common(name: str, raw: Mapping[str, Any], language: str) -> dict[str, Any]:
    common: dict[str, Any] = {
        "name": name,
        "type": raw["Type"],
        "query_language": language,
        "comment": raw.get("Comment"),
        "next": raw.get("Next"),
        "end": bool(raw.get("End", False)),
        "input_path": raw.get("InputPath", "$"),
        "output_path": raw.get("OutputPath", "$"),
        "parameters": raw.get("Parameters", UNSET),
        "result_selector": raw.get("ResultSelector", UNSET),
        "result_path": raw.get("ResultPath", "$"),
        "arguments": raw.get("Arguments", UNSET),
        "output": raw.get("Output", UNSET),
        "assign": raw.get("Assign"),
        "retry": tuple(_retrier(entry) for entry in raw.get("Retry", ())),
        "catch": tuple(_catcher(entry) for entry in raw.get("Catch", ())),
    }
    return common


def _retrier(raw: Mapping[str, Any]) -> Retrier:
    delay = raw.get("MaxDelaySeconds")
    return Retrier(
        error_equals=tuple(raw["ErrorEquals"]),
        interval_seconds=float(raw.get("IntervalSeconds", 1)),
        max_attempts=int(raw.get("MaxAttempts", 3)),
        backoff_rate=float(raw.get("BackoffRate", 2.0)),
        max_delay_seconds=float(delay) if delay is not None else None,
        jitter_strategy=raw.get("JitterStrategy", "NONE"),
    )


def _catcher(raw: Mapping[str, Any]) -> Catcher:
    return Catcher(
        error_equals=tuple(raw["ErrorEquals"]),
        next=raw["Next"],
        result_path=raw.get("ResultPath", "$"),
        output=raw.get("Output", UNSET),
        assign=raw.get("Assign"),
    )


def _rule(raw: Mapping[str, Any], language: str) -> ChoiceRule:
    extra: dict[str, Any] = {
        "next": raw.get("Next"),
        "output": raw.get("Output", UNSET),
        "assign": raw.get("Assign"),
    }
    if language == JSONATA:
        return ChoiceRule(operator="Condition", operand=raw["Condition"], **extra)
    for combinator in ("And", "Or"):
        if combinator in raw:
            children = tuple(_rule(child, language) for child in raw[combinator])
            return ChoiceRule(operator=combinator, children=children, **extra)
    if "Not" in raw:
        return ChoiceRule(operator="Not", children=(_rule(raw["Not"], language),), **extra)
    operator = next(key for key in raw if key not in ("Variable", "Next", "Comment", "Assign"))
    return ChoiceRule(operator=operator, variable=raw["Variable"], operand=raw[operator], **extra)


def _state(name: str, raw: Mapping[str, Any], inherited: str) -> State:
    language = raw.get("QueryLanguage", inherited)
    common = _common(name, raw, language)
    kind = raw["Type"]
    if kind == "Pass":
        return PassState(result=raw.get("Result", UNSET), **common)
    if kind == "Task":
        return TaskState(
            resource=raw["Resource"],
            timeout_seconds=raw.get("TimeoutSeconds", UNSET),
            timeout_seconds_path=raw.get("TimeoutSecondsPath"),
            heartbeat_seconds=raw.get("HeartbeatSeconds", UNSET),
            heartbeat_seconds_path=raw.get("HeartbeatSecondsPath"),
            **common,
        )
    if kind == "Choice":
        return ChoiceState(
            choices=tuple(_rule(rule, language) for rule in raw["Choices"]),
            default=raw.get("Default"),
            **common,
        )
    if kind == "Wait":
        return WaitState(
            seconds=raw.get("Seconds", UNSET),
            timestamp=raw.get("Timestamp", UNSET),
            seconds_path=raw.get("SecondsPath"),
            timestamp_path=raw.get("TimestampPath"),
            **common,
        )
    if kind == "Succeed":
        return SucceedState(**common)
    if kind == "Fail":
        return FailState(
            error=raw.get("Error", UNSET),
            cause=raw.get("Cause", UNSET),
            error_path=raw.get("ErrorPath"),
            cause_path=raw.get("CausePath"),
            **common,
        )
    if kind == "Parallel":
        branches = tuple(_machine(branch, language) for branch in raw["Branches"])
        return ParallelState(branches=branches, **common)
    return _map(raw, language, common)


def _map(raw: Mapping[str, Any], language: str, common: dict[str, Any]) -> MapState:
    processor = raw.get("ItemProcessor", raw.get("Iterator"))
    # The older Map form spells ItemSelector as Parameters; both select each item.
    selector = raw.get("ItemSelector", raw.get("Parameters", UNSET))
    common["parameters"] = UNSET
    return MapState(
        processor=_machine(processor, language),
        items_path=raw.get("ItemsPath", "$"),
        items=raw.get("Items", UNSET),
        item_selector=selector,
        max_concurrency=raw.get("MaxConcurrency", 0),
        max_concurrency_path=raw.get("MaxConcurrencyPath"),
        tolerated_failure_count=raw.get("ToleratedFailureCount", UNSET),
        tolerated_failure_count_path=raw.get("ToleratedFailureCountPath"),
        tolerated_failure_percentage=raw.get("ToleratedFailurePercentage", UNSET),
        tolerated_failure_percentage_path=raw.get("ToleratedFailurePercentagePath"),
        item_batcher=raw.get("ItemBatcher"),
        item_reader=raw.get("ItemReader"),
        result_writer=raw.get("ResultWriter"),
        label=raw.get("Label"),
        **common,
    )
