"""The pure core: :func:`step` moves an execution one decision forward.

Nothing here does I/O or reads a clock. An execution's position is a
:class:`Cursor` (state name, raw input, variables, retry counts); the caller
passes it with the context object (``$$``) and, when the state is waiting on
something, the :class:`Outcome` of that something. :func:`step` returns an
*action* saying what to do next:

* :class:`Invoke` — call the task's resource with a payload, then step again
  with its :class:`Result` or :class:`Failure`;
* :class:`Sleep` — wait (seconds, or until an epoch time), then step again
  with ``Result(None)``;
* :class:`Branches` — run child state machines (Parallel branches, Map
  iterations), then step again with :func:`gather` of their outcomes;
* :class:`Retry` — wait the retrier's back-off, then enter the state again
  with the returned cursor;
* :class:`Goto` — continue at another state; :class:`Succeed` / :class:`Fail`
  — this machine (execution, branch or iteration) is over.

The executor (:mod:`reflow.flows.executor`) does what the actions say. The
value types live in :mod:`reflow.flows.actions` and the Map state's fan-out
and gathering in :mod:`reflow.flows.mapping`; both are re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from reflow.flows import jsonata, paths, templates
from reflow.flows.actions import (
    Action,
    Branches,
    Child,
    Cursor,
    Fail,
    Failure,
    Goto,
    Invoke,
    Outcome,
    Result,
    Retry,
    Sleep,
    Succeed,
)
from reflow.flows.choice import matches, parse_timestamp
from reflow.flows.errors import (
    NO_CHOICE_MATCHED,
    QUERY_EVALUATION_ERROR,
    RUNTIME,
    StatesError,
    StatesRuntimeError,
)
from reflow.flows.mapping import fan_out, gather
from reflow.flows.model import (
    JSONATA,
    UNSET,
    Catcher,
    ChoiceRule,
    ChoiceState,
    FailState,
    MapState,
    ParallelState,
    PassState,
    State,
    StateMachine,
    SucceedState,
    TaskState,
    WaitState,
)
from reflow.flows.retry import find_catcher, find_retrier

__all__ = [
    "Action",
    "Branches",
    "Child",
    "Cursor",
    "Fail",
    "Failure",
    "Goto",
    "Invoke",
    "Outcome",
    "Result",
    "Retry",
    "Sleep",
    "Succeed",
    "gather",
    "start",
    "step",
]


def start(machine: StateMachine, input: Any, variables: Mapping[str, Any] | None = None) -> Cursor:
    """The cursor at the machine's ``StartAt`` state."""
    return Cursor(machine.start_at, input, dict(variables or {}))


def step(
    machine: StateMachine,
    cursor: Cursor,
    context: Mapping[str, Any],
    outcome: Outcome | None = None,
) -> Action:
    """The next action for ``cursor``: entering its state, or finishing it with ``outcome``."""
    state = machine.states[cursor.state]
    try:
        if outcome is None:
            return _enter(state, cursor, context)
        if isinstance(outcome, Failure):
            return _handle_error(state, cursor, context, outcome.error, outcome.cause)
        return _complete(state, cursor, context, outcome.value)
    except StatesError as error:
        return _handle_error(state, cursor, context, error.name, error.cause)


# -- entering a state -------------------------------------------------------------


def _states(cursor: Cursor, context: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {"input": cursor.input, "context": context, **extra}


def _effective_input(state: State, cursor: Cursor, context: Mapping[str, Any]) -> Any:
    if state.input_path is None:
        return {}
    if state.input_path == "$":
        return cursor.input
    return paths.evaluate(state.input_path, cursor.input, context, cursor.variables)


def _enter(state: State, cursor: Cursor, context: Mapping[str, Any]) -> Action:
    if state.query_language == JSONATA:
        return _enter_jsonata(state, cursor, context)
    # Dispatch on the state's class: this runs once per transition.
    return _ENTER_JSONPATH[type(state)](state, cursor, context)


def _enter_pass(state: Any, cursor: Cursor, context: Mapping[str, Any]) -> Action:
    effective = _effective_input(state, cursor, context)
    if state.result is not UNSET:
        result = state.result
    elif state.parameters is not UNSET:
        result = templates.render(state.parameters, effective, context, cursor.variables)
    else:
        result = effective
    return _finish_jsonpath(state, cursor, context, result, result)


def _enter_task(state: Any, cursor: Cursor, context: Mapping[str, Any]) -> Action:
    effective = _effective_input(state, cursor, context)
    return Invoke(
        state.resource,
        _payload(state, effective, cursor, context),
        _seconds(state.timeout_seconds, state.timeout_seconds_path, effective, cursor, context),
        _seconds(state.heartbeat_seconds, state.heartbeat_seconds_path, effective, cursor, context),
    )


def _enter_choice(state: Any, cursor: Cursor, context: Mapping[str, Any]) -> Action:
    return _choose(state, cursor, context, _effective_input(state, cursor, context))


def _enter_wait(state: Any, cursor: Cursor, context: Mapping[str, Any]) -> Action:
    return _wait(state, cursor, context, _effective_input(state, cursor, context))


def _enter_succeed(state: Any, cursor: Cursor, context: Mapping[str, Any]) -> Action:
    effective = _effective_input(state, cursor, context)
    return Succeed(_output_path(state, effective, cursor, context), cursor.variables)


def _enter_parallel(state: Any, cursor: Cursor, context: Mapping[str, Any]) -> Action:
    payload = _payload(state, _effective_input(state, cursor, context), cursor, context)
    return Branches(
        "Parallel", tuple(Child(branch, payload, cursor.variables) for branch in state.branches)
    )


def _enter_map(state: Any, cursor: Cursor, context: Mapping[str, Any]) -> Action:
    return fan_out(state, cursor, context, _effective_input(state, cursor, context))


def _payload(state: State, effective: Any, cursor: Cursor, context: Mapping[str, Any]) -> Any:
    if state.parameters is UNSET:
        return effective
    return templates.render(state.parameters, effective, context, cursor.variables)


def _seconds(
    value: Any, path: str | None, data: Any, cursor: Cursor, context: Mapping[str, Any]
) -> float | None:
    if path is not None:
        value = paths.evaluate(path, data, context, cursor.variables)
    if value is UNSET or value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise StatesRuntimeError(f"a timeout must be a positive number of seconds, got {value!r}")
    return float(value)


def _output_path(state: State, value: Any, cursor: Cursor, context: Mapping[str, Any]) -> Any:
    if state.output_path is None:
        return {}
    if state.output_path == "$":
        return value
    return paths.evaluate(state.output_path, value, context, cursor.variables)


def _choose(
    state: ChoiceState, cursor: Cursor, context: Mapping[str, Any], effective: Any
) -> Action:
    for rule in state.choices:
        if matches(rule, effective, context, cursor.variables):
            return _goto_after_choice(state, cursor, context, effective, rule)
    if state.default is not None:
        return _goto_after_choice(state, cursor, context, effective, None)
    return Fail(NO_CHOICE_MATCHED, f"No Choice rule matched in state '{state.name}'")


def _goto_after_choice(
    state: ChoiceState,
    cursor: Cursor,
    context: Mapping[str, Any],
    effective: Any,
    rule: ChoiceRule | None,
) -> Action:
    variables = _assign_jsonpath(state.assign, effective, cursor, context)
    if rule is not None and rule.assign:
        updates = templates.render(rule.assign, effective, context, cursor.variables)
        variables = {**variables, **updates}
    target = rule.next if rule is not None else state.default
    assert target is not None
    output = _output_path(state, effective, cursor, context)
    return Goto(Cursor(target, output, variables))


def _wait(state: WaitState, cursor: Cursor, context: Mapping[str, Any], effective: Any) -> Action:
    if state.seconds is not UNSET or state.seconds_path is not None:
        seconds = state.seconds
        if state.seconds_path is not None:
            seconds = paths.evaluate(state.seconds_path, effective, context, cursor.variables)
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise StatesRuntimeError(f"Wait seconds must be a non-negative number, got {seconds!r}")
        return Sleep(seconds=float(seconds))
    stamp = state.timestamp
    if state.timestamp_path is not None:
        stamp = paths.evaluate(state.timestamp_path, effective, context, cursor.variables)
    when = parse_timestamp(stamp)
    if when is None:
        raise StatesRuntimeError(f"Wait timestamp must be an RFC 3339 timestamp, got {stamp!r}")
    return Sleep(until=when.timestamp())


def _fail_state(state: FailState, cursor: Cursor, context: Mapping[str, Any]) -> Action:
    error, cause = state.error, state.cause
    if state.jsonata:
        states = _states(cursor, context)
        error = jsonata.evaluate_template(error, states, cursor.variables)
        cause = jsonata.evaluate_template(cause, states, cursor.variables)
    if state.error_path is not None:
        error = templates.resolve(state.error_path, cursor.input, context, cursor.variables)
    if state.cause_path is not None:
        cause = templates.resolve(state.cause_path, cursor.input, context, cursor.variables)
    for field_name, value in (("Error", error), ("Cause", cause)):
        if value is not UNSET and value is not None and not isinstance(value, str):
            raise StatesRuntimeError(f"the Fail state's {field_name} must be a string")
    return Fail(error if isinstance(error, str) else "", cause if isinstance(cause, str) else "")


_ENTER_JSONPATH: dict[type[State], Callable[[Any, Cursor, Mapping[str, Any]], Action]] = {
    PassState: _enter_pass,
    TaskState: _enter_task,
    ChoiceState: _enter_choice,
    WaitState: _enter_wait,
    SucceedState: _enter_succeed,
    FailState: lambda state, cursor, context: _fail_state(state, cursor, context),
    ParallelState: _enter_parallel,
    MapState: _enter_map,
}


# -- JSONata states ---------------------------------------------------------------


def _enter_jsonata(state: State, cursor: Cursor, context: Mapping[str, Any]) -> Action:
    states = _states(cursor, context)
    variables = cursor.variables
    if isinstance(state, PassState | SucceedState):
        return _finish_jsonata(state, cursor, context, None, has_result=False)
    if isinstance(state, TaskState):
        payload = (
            jsonata.evaluate_template(state.arguments, states, variables)
            if state.arguments is not UNSET
            else cursor.input
        )
        timeout = jsonata.evaluate_template(state.timeout_seconds, states, variables)
        heartbeat = jsonata.evaluate_template(state.heartbeat_seconds, states, variables)
        return Invoke(
            state.resource,
            payload,
            _seconds(timeout, None, None, cursor, context),
            _seconds(heartbeat, None, None, cursor, context),
        )
    if isinstance(state, ChoiceState):
        for rule in state.choices:
            condition = jsonata.evaluate_template(rule.operand, states, variables)
            if not isinstance(condition, bool):
                raise StatesError(
                    QUERY_EVALUATION_ERROR,
                    f"a Choice Condition must be a boolean, got {json.dumps(condition)}",
                )
            if condition:
                return _jsonata_choice(state, cursor, context, rule)
        if state.default is not None:
            return _jsonata_choice(state, cursor, context, None)
        return Fail(NO_CHOICE_MATCHED, f"No Choice rule matched in state '{state.name}'")
    if isinstance(state, WaitState):
        if state.seconds is not UNSET:
            seconds = jsonata.evaluate_template(state.seconds, states, variables)
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
                raise StatesError(
                    QUERY_EVALUATION_ERROR, f"Wait Seconds must be a non-negative number: {seconds}"
                )
            return Sleep(seconds=float(seconds))
        stamp = jsonata.evaluate_template(state.timestamp, states, variables)
        when = parse_timestamp(stamp)
        if when is None:
            raise StatesError(QUERY_EVALUATION_ERROR, f"Wait Timestamp is not RFC 3339: {stamp}")
        return Sleep(until=when.timestamp())
    if isinstance(state, FailState):
        return _fail_state(state, cursor, context)
    if isinstance(state, ParallelState):
        payload = (
            jsonata.evaluate_template(state.arguments, states, variables)
            if state.arguments is not UNSET
            else cursor.input
        )
        return Branches(
            "Parallel", tuple(Child(branch, payload, variables) for branch in state.branches)
        )
    assert isinstance(state, MapState)
    return fan_out(state, cursor, context, cursor.input)


def _jsonata_choice(
    state: ChoiceState, cursor: Cursor, context: Mapping[str, Any], rule: ChoiceRule | None
) -> Action:
    states = _states(cursor, context)
    variables = dict(cursor.variables)
    output: Any = cursor.input
    if state.output is not UNSET:
        output = jsonata.evaluate_template(state.output, states, cursor.variables)
    updates = _assign_jsonata(state.assign, states, cursor.variables)
    if rule is not None:
        if rule.output is not UNSET:
            output = jsonata.evaluate_template(rule.output, states, cursor.variables)
        updates.update(_assign_jsonata(rule.assign, states, cursor.variables))
    variables.update(updates)
    target = rule.next if rule is not None else state.default
    assert target is not None
    return Goto(Cursor(target, output, variables))


def _assign_jsonata(
    assign: Mapping[str, Any] | None, states: Mapping[str, Any], variables: Mapping[str, Any]
) -> dict[str, Any]:
    if not assign:
        return {}
    # Every value sees the variables as they were on entry: assignments are simultaneous.
    return {
        key: jsonata.evaluate_template(value, states, variables) for key, value in assign.items()
    }


def _finish_jsonata(
    state: State, cursor: Cursor, context: Mapping[str, Any], result: Any, *, has_result: bool
) -> Action:
    extra = {"result": result} if has_result else {}
    states = _states(cursor, context, **extra)
    if state.output is not UNSET:
        output = jsonata.evaluate_template(state.output, states, cursor.variables)
    else:
        output = result if has_result else cursor.input
    variables = {**cursor.variables, **_assign_jsonata(state.assign, states, cursor.variables)}
    return _transition(state, output, variables)


# -- finishing a state --------------------------------------------------------------


def _transition(state: State, output: Any, variables: Mapping[str, Any]) -> Action:
    if state.end or state.next is None:
        return Succeed(output, variables)
    return Goto(Cursor(state.next, output, variables))


def _assign_jsonpath(
    assign: Mapping[str, Any] | None, data: Any, cursor: Cursor, context: Mapping[str, Any]
) -> Mapping[str, Any]:
    if not assign:
        # Variables are never changed in place, so an unchanged set is shared.
        return cursor.variables
    updates = templates.render(assign, data, context, cursor.variables)
    return {**cursor.variables, **updates}


def _finish_jsonpath(
    state: State, cursor: Cursor, context: Mapping[str, Any], result: Any, assign_data: Any
) -> Action:
    variables = _assign_jsonpath(state.assign, assign_data, cursor, context)
    if state.result_path is None:
        combined = cursor.input
    else:
        combined = paths.set_reference(cursor.input, state.result_path, result)
    output = _output_path(state, combined, cursor, context)
    return _transition(state, output, variables)


def _complete(state: State, cursor: Cursor, context: Mapping[str, Any], value: Any) -> Action:
    if isinstance(state, WaitState):
        if state.jsonata:
            return _finish_jsonata(state, cursor, context, None, has_result=False)
        effective = _effective_input(state, cursor, context)
        variables = _assign_jsonpath(state.assign, effective, cursor, context)
        return _transition(state, _output_path(state, effective, cursor, context), variables)
    if state.jsonata:
        return _finish_jsonata(state, cursor, context, value, has_result=True)
    result = value
    if state.result_selector is not UNSET:
        result = templates.render(state.result_selector, value, context, cursor.variables)
    return _finish_jsonpath(state, cursor, context, result, result)


# -- errors ---------------------------------------------------------------------------


def _handle_error(
    state: State, cursor: Cursor, context: Mapping[str, Any], error: str, cause: str
) -> Action:
    if error == RUNTIME:
        return Fail(error, cause)
    index = find_retrier(error, state.retry)
    if index is not None:
        attempts = list(cursor.attempts) or [0] * len(state.retry)
        retrier = state.retry[index]
        if attempts[index] < retrier.max_attempts:
            attempt = attempts[index]
            attempts[index] += 1
            return Retry(cursor._replace(attempts=tuple(attempts)), retrier, attempt, error, cause)
    catcher = find_catcher(error, state.catch)
    if catcher is None:
        return Fail(error, cause)
    try:
        return _caught(state, cursor, context, catcher, error, cause)
    except StatesError as failure:
        return Fail(failure.name, failure.cause)


def _caught(
    state: State,
    cursor: Cursor,
    context: Mapping[str, Any],
    catcher: Catcher,
    error: str,
    cause: str,
) -> Action:
    error_output = {"Error": error, "Cause": cause}
    if state.jsonata:
        states = _states(cursor, context, errorOutput=error_output)
        output = (
            jsonata.evaluate_template(catcher.output, states, cursor.variables)
            if catcher.output is not UNSET
            else error_output
        )
        updates = _assign_jsonata(catcher.assign, states, cursor.variables)
        variables: Mapping[str, Any] = {**cursor.variables, **updates}
    else:
        variables = _assign_jsonpath(catcher.assign, error_output, cursor, context)
        if catcher.result_path is None:
            output = cursor.input
        else:
            output = paths.set_reference(cursor.input, catcher.result_path, error_output)
    return Goto(Cursor(catcher.next, output, variables), caught=Failure(error, cause))
