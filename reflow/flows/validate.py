"""Validation of a raw ASL definition: every problem, each with its JSON path.

:func:`problems` walks the definition (and every Parallel branch and Map
processor) and returns ``(path, message)`` pairs rather than stopping at the
first, so one run tells the author everything to fix. Paths read like
``States.Render.Next``; inside a branch, ``States.Fan.Branches[0].States.A``.

It checks fields per state type and per query language (JSONPath fields in a
JSONata state and the reverse), required fields, ``Next`` targets,
reachability, that every state can end (``Next`` or ``End``, except Choice,
Succeed and Fail), Retry/Catch values, paths, intrinsic calls, JSONata
expressions and that a Task's ``Resource`` is one reflow runs
(:mod:`reflow.flows.validate_resources`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reflow.flows import intrinsics, jsonata, paths, validate_map, validate_resources
from reflow.flows.choice import COMPARISONS, TYPE_TESTS
from reflow.flows.errors import ALL, PathSyntaxError
from reflow.flows.model import JSONATA, JSONPATH

__all__ = ["STATE_FIELDS", "problems"]

Problems = list[tuple[str, str]]

_COMMON = {"Type", "Comment", "QueryLanguage"}
_FLOW = {"Next", "End"}
_IO_PATH = {"InputPath", "OutputPath"}
_ERRORS = {"Retry", "Catch"}

STATE_FIELDS: dict[str, dict[str, set[str]]] = {
    "Pass": {
        JSONPATH: _COMMON | _FLOW | _IO_PATH | {"Parameters", "Result", "ResultPath", "Assign"},
        JSONATA: _COMMON | _FLOW | {"Output", "Assign"},
    },
    "Task": {
        JSONPATH: _COMMON
        | _FLOW
        | _IO_PATH
        | _ERRORS
        | {"Resource", "Parameters", "ResultSelector", "ResultPath", "Assign", "Credentials"}
        | {"TimeoutSeconds", "TimeoutSecondsPath", "HeartbeatSeconds", "HeartbeatSecondsPath"},
        JSONATA: _COMMON
        | _FLOW
        | _ERRORS
        | {"Resource", "Arguments", "Output", "Assign", "Credentials"}
        | {"TimeoutSeconds", "HeartbeatSeconds"},
    },
    "Choice": {
        JSONPATH: _COMMON | _IO_PATH | {"Choices", "Default", "Assign"},
        JSONATA: _COMMON | {"Choices", "Default", "Output", "Assign"},
    },
    "Wait": {
        JSONPATH: _COMMON
        | _FLOW
        | _IO_PATH
        | {"Seconds", "Timestamp", "SecondsPath", "TimestampPath", "Assign"},
        JSONATA: _COMMON | _FLOW | {"Seconds", "Timestamp", "Output", "Assign"},
    },
    "Succeed": {JSONPATH: _COMMON | _IO_PATH, JSONATA: _COMMON | {"Output"}},
    "Fail": {
        JSONPATH: _COMMON | {"Error", "Cause", "ErrorPath", "CausePath"},
        JSONATA: _COMMON | {"Error", "Cause"},
    },
    "Parallel": {
        JSONPATH: _COMMON
        | _FLOW
        | _IO_PATH
        | _ERRORS
        | {"Branches", "Parameters", "ResultSelector", "ResultPath", "Assign"},
        JSONATA: _COMMON | _FLOW | _ERRORS | {"Branches", "Arguments", "Output", "Assign"},
    },
    "Map": {
        JSONPATH: _COMMON
        | _FLOW
        | _IO_PATH
        | _ERRORS
        | {"ItemProcessor", "Iterator", "ItemsPath", "ItemSelector", "Parameters"}
        | {"ResultSelector", "ResultPath", "Assign", "MaxConcurrency", "MaxConcurrencyPath"}
        | {"ToleratedFailureCount", "ToleratedFailureCountPath", "ToleratedFailurePercentage"}
        | {"ToleratedFailurePercentagePath", "ItemBatcher", "ItemReader", "ResultWriter", "Label"},
        JSONATA: _COMMON
        | _FLOW
        | _ERRORS
        | {"ItemProcessor", "Items", "ItemSelector", "Output", "Assign", "MaxConcurrency"}
        | {"ToleratedFailureCount", "ToleratedFailurePercentage", "ItemBatcher", "ItemReader"}
        | {"ResultWriter", "Label"},
    },
}
"""The fields each state type accepts, per query language."""

_PATH_FIELDS = (
    "InputPath",
    "OutputPath",
    "ItemsPath",
    "SecondsPath",
    "TimestampPath",
    "TimeoutSecondsPath",
    "HeartbeatSecondsPath",
    "MaxConcurrencyPath",
    "ToleratedFailureCountPath",
    "ToleratedFailurePercentagePath",
)
_NULLABLE_PATHS = {"InputPath", "OutputPath", "ResultPath"}
_TOP_FIELDS = {"StartAt", "States", "Comment", "Version", "TimeoutSeconds", "QueryLanguage"}
_BRANCH_FIELDS = {"StartAt", "States", "Comment", "QueryLanguage", "ProcessorConfig"}
_RETRY_FIELDS = {"ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate"}
_RETRY_FIELDS |= {"MaxDelaySeconds", "JitterStrategy", "Comment"}
_CATCH_FIELDS = {
    JSONPATH: {"ErrorEquals", "Next", "ResultPath", "Assign", "Comment"},
    JSONATA: {"ErrorEquals", "Next", "Output", "Assign", "Comment"},
}
_OPERATORS = set(COMPARISONS) | {name + "Path" for name in COMPARISONS if name != "StringMatches"}
_OPERATORS |= set(TYPE_TESTS) | {"IsPresent"}
_MAX_NAME = 80


def problems(definition: Any) -> Problems:
    """Every problem in ``definition`` as ``(json_path, message)`` pairs."""
    found: Problems = []
    if not isinstance(definition, Mapping):
        return [("$", "a state machine definition must be a JSON object")]
    language = definition.get("QueryLanguage", JSONPATH)
    if language not in (JSONPATH, JSONATA):
        found.append(("QueryLanguage", f"must be {JSONPATH} or {JSONATA}, not {language!r}"))
        language = JSONPATH
    timeout = definition.get("TimeoutSeconds")
    if timeout is not None and not _positive_int(timeout):
        found.append(("TimeoutSeconds", "must be a positive integer"))
    _machine(definition, "", language, _TOP_FIELDS, found)
    return found


def _machine(
    machine: Mapping[str, Any], prefix: str, language: str, allowed: set[str], found: Problems
) -> None:
    for key in machine:
        if key not in allowed:
            found.append((prefix + key, f"unknown field {key!r}"))
    states = machine.get("States")
    start = machine.get("StartAt")
    if not isinstance(states, Mapping) or not states:
        found.append((prefix + "States", "must be a non-empty object of states"))
        states = {}
    if not isinstance(start, str):
        found.append((prefix + "StartAt", "is required and must be a state name"))
    elif states and start not in states:
        found.append((prefix + "StartAt", f"names {start!r}, which does not exist"))
    for name, state in states.items():
        path = f"{prefix}States.{name}"
        if len(name) > _MAX_NAME:
            found.append((path, f"a state name may have at most {_MAX_NAME} characters"))
        if not isinstance(state, Mapping):
            found.append((path, "a state must be a JSON object"))
            continue
        _state(name, state, path, language, states, found)
    if isinstance(start, str) and start in states:
        reachable = _reachable(start, states)
        for name in states:
            if name not in reachable:
                found.append((f"{prefix}States.{name}", f"state {name!r} is unreachable"))


def _targets(state: Mapping[str, Any]) -> list[str]:
    targets = [state["Next"]] if isinstance(state.get("Next"), str) else []
    if isinstance(state.get("Default"), str):
        targets.append(state["Default"])
    for rule in state.get("Choices") or []:
        if isinstance(rule, Mapping) and isinstance(rule.get("Next"), str):
            targets.append(rule["Next"])
    for catcher in state.get("Catch") or []:
        if isinstance(catcher, Mapping) and isinstance(catcher.get("Next"), str):
            targets.append(catcher["Next"])
    return targets


def _reachable(start: str, states: Mapping[str, Any]) -> set[str]:
    seen = {start}
    pending = [start]
    while pending:
        state = states.get(pending.pop())
        if not isinstance(state, Mapping):
            continue
        for target in _targets(state):
            if target in states and target not in seen:
                seen.add(target)
                pending.append(target)
    return seen


def _state(
    name: str,
    state: Mapping[str, Any],
    path: str,
    inherited: str,
    states: Mapping[str, Any],
    found: Problems,
) -> None:
    kind = state.get("Type")
    if kind not in STATE_FIELDS:
        found.append((f"{path}.Type", f"must be one of {', '.join(STATE_FIELDS)}, not {kind!r}"))
        return
    language = state.get("QueryLanguage", inherited)
    if language not in (JSONPATH, JSONATA):
        found.append((f"{path}.QueryLanguage", f"must be {JSONPATH} or {JSONATA}"))
        return
    if inherited == JSONATA and language == JSONPATH:
        found.append(
            (f"{path}.QueryLanguage", "a state may not use JSONPath when its machine uses JSONata")
        )
    allowed = STATE_FIELDS[kind][language]
    other = JSONATA if language == JSONPATH else JSONPATH
    for key in state:
        if key in allowed:
            continue
        if key in STATE_FIELDS[kind][other]:
            found.append((f"{path}.{key}", f"{key} is a {other} field; this state uses {language}"))
        else:
            found.append((f"{path}.{key}", f"unknown field {key!r} for a {kind} state"))
    _flow(kind, state, path, states, found)
    if language == JSONPATH:
        _jsonpath_fields(state, path, found)
    else:
        _jsonata_fields(state, path, found)
    if "Assign" in state:
        _assign(state["Assign"], f"{path}.Assign", language, found)
    for key in ("Retry", "Catch"):
        if key in state:
            _errors_list(key, state[key], f"{path}.{key}", language, states, found)
    check = _KIND_CHECKS.get(kind)
    if check is not None:
        check(state, path, language, states, found)


def _flow(
    kind: str, state: Mapping[str, Any], path: str, states: Mapping[str, Any], found: Problems
) -> None:
    if kind in ("Choice", "Succeed", "Fail"):
        return
    has_next, end = "Next" in state, state.get("End")
    if has_next and end:
        found.append((path, "a state may not have both Next and End"))
    elif not has_next and end is not True:
        found.append((path, "a state must have Next or End: true"))
    if "End" in state and not isinstance(end, bool):
        found.append((f"{path}.End", "must be a boolean"))
    if has_next:
        _target(state["Next"], f"{path}.Next", path, states, found)


def _target(target: Any, field: str, path: str, states: Mapping[str, Any], found: Problems) -> None:
    name = path.rsplit("States.", 1)[-1]
    if not isinstance(target, str):
        found.append((field, "must be a state name"))
    elif target not in states:
        found.append((field, f'state "{name}" names "{target}", which does not exist'))


def _check_path(value: Any, field: str, found: Problems, *, reference: bool = False) -> None:
    if not isinstance(value, str):
        found.append((field, "must be a path string"))
        return
    try:
        compiled = paths.compile_path(value)
    except PathSyntaxError as error:
        found.append((field, f"malformed path {value!r}: {error.problem}"))
        return
    if reference and (compiled.root != "$" or not compiled.definite):
        found.append((field, f"{value!r} must be a reference path (fields and indices under $)"))


def _jsonpath_fields(state: Mapping[str, Any], path: str, found: Problems) -> None:
    for key in _PATH_FIELDS:
        if key in state and not (key in _NULLABLE_PATHS and state[key] is None):
            _check_path(state[key], f"{path}.{key}", found)
    if "ResultPath" in state and state["ResultPath"] is not None:
        _check_path(state["ResultPath"], f"{path}.ResultPath", found, reference=True)
    for key in ("Parameters", "ResultSelector", "ItemSelector"):
        if key in state:
            _payload_template(state[key], f"{path}.{key}", found)
    for key in ("ErrorPath", "CausePath"):
        # The Fail state's two …Path fields may also hold an intrinsic call.
        if key in state:
            _dynamic_value(state[key], f"{path}.{key}", found)


def _payload_template(value: Any, path: str, found: Problems) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and key.endswith(".$"):
                _dynamic_value(item, f"{path}.{key}", found)
            else:
                _payload_template(item, f"{path}.{key}", found)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _payload_template(item, f"{path}[{index}]", found)


def _dynamic_value(value: Any, path: str, found: Problems) -> None:
    if not isinstance(value, str):
        found.append((path, "a '.$' field must hold a path or an intrinsic function call"))
    elif intrinsics.is_intrinsic(value):
        try:
            intrinsics.parse(value)
        except PathSyntaxError as error:
            found.append((path, f"malformed intrinsic call: {error.problem}"))
    else:
        _check_path(value, path, found)


def _jsonata_fields(state: Mapping[str, Any], path: str, found: Problems) -> None:
    for key in ("Arguments", "Output", "Items", "ItemSelector", "Error", "Cause"):
        if key in state:
            _jsonata_template(state[key], f"{path}.{key}", found)
    for key in ("Seconds", "Timestamp", "TimeoutSeconds", "HeartbeatSeconds", "MaxConcurrency"):
        if key in state and isinstance(state[key], str) and jsonata.is_expression(state[key]):
            _jsonata_template(state[key], f"{path}.{key}", found)
    if "Arguments" in state and not (
        isinstance(state["Arguments"], Mapping) or jsonata.is_expression(state["Arguments"])
    ):
        found.append((f"{path}.Arguments", "must be an object or a JSONata expression"))


def _jsonata_template(value: Any, path: str, found: Problems) -> None:
    if isinstance(value, str) and jsonata.is_expression(value):
        try:
            jsonata.compile_expression(jsonata.strip(value))
        except PathSyntaxError as error:
            found.append((path, f"malformed JSONata: {error.problem}"))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _jsonata_template(item, f"{path}.{key}", found)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _jsonata_template(item, f"{path}[{index}]", found)


def _assign(value: Any, path: str, language: str, found: Problems) -> None:
    if not isinstance(value, Mapping):
        found.append((path, "must be an object of variable names to values"))
        return
    for key in value:
        name = key[:-2] if language == JSONPATH and key.endswith(".$") else key
        if not name.isidentifier() or name == "states":
            found.append((f"{path}.{key}", f"{name!r} is not a valid variable name"))
    if language == JSONPATH:
        _payload_template(value, path, found)
    else:
        _jsonata_template(value, path, found)


def _errors_list(
    key: str,
    value: Any,
    path: str,
    language: str,
    states: Mapping[str, Any],
    found: Problems,
) -> None:
    if not isinstance(value, list):
        found.append((path, "must be an array"))
        return
    for index, entry in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(entry, Mapping):
            found.append((where, "must be an object"))
            continue
        allowed = _RETRY_FIELDS if key == "Retry" else _CATCH_FIELDS[language]
        for field in entry:
            if field not in allowed:
                found.append((f"{where}.{field}", f"unknown field {field!r} in {key}"))
        errors = entry.get("ErrorEquals")
        if (
            not isinstance(errors, list)
            or not errors
            or not all(isinstance(e, str) for e in errors)
        ):
            found.append((f"{where}.ErrorEquals", "must be a non-empty array of error names"))
        elif ALL in errors:
            if len(errors) != 1:
                found.append((f"{where}.ErrorEquals", f"{ALL} must appear alone"))
            if index != len(value) - 1:
                found.append((f"{where}.ErrorEquals", f"{ALL} must be in the last {key} entry"))
        if key == "Retry":
            _retrier(entry, where, found)
        else:
            if "Next" not in entry:
                found.append((f"{where}.Next", "is required"))
            else:
                _target(entry["Next"], f"{where}.Next", path.rsplit(".", 1)[0], states, found)
            if language == JSONPATH and entry.get("ResultPath") is not None:
                _check_path(entry["ResultPath"], f"{where}.ResultPath", found, reference=True)
            if "Assign" in entry:
                _assign(entry["Assign"], f"{where}.Assign", language, found)
            if "Output" in entry:
                _jsonata_template(entry["Output"], f"{where}.Output", found)


def _retrier(entry: Mapping[str, Any], where: str, found: Problems) -> None:
    interval = entry.get("IntervalSeconds", 1)
    if not _positive_int(interval):
        found.append((f"{where}.IntervalSeconds", "must be a positive integer"))
    attempts = entry.get("MaxAttempts", 3)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
        found.append((f"{where}.MaxAttempts", "must be a non-negative integer"))
    rate = entry.get("BackoffRate", 2.0)
    if not _number(rate) or rate < 1.0:
        found.append((f"{where}.BackoffRate", "must be a number greater than or equal to 1.0"))
    if "MaxDelaySeconds" in entry and not _positive_int(entry["MaxDelaySeconds"]):
        found.append((f"{where}.MaxDelaySeconds", "must be a positive integer"))
    if entry.get("JitterStrategy", "NONE") not in ("FULL", "NONE"):
        found.append((f"{where}.JitterStrategy", "must be FULL or NONE"))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _non_negative_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _percentage(value: Any) -> bool:
    return _number(value) and 0 <= value <= 100


def _dynamic(value: Any, language: str) -> bool:
    return language == JSONATA and jsonata.is_expression(value)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_task(
    state: Mapping[str, Any], path: str, language: str, states: Mapping[str, Any], found: Problems
) -> None:
    resource = state.get("Resource")
    if not isinstance(resource, str) or not resource:
        found.append((f"{path}.Resource", "is required and must be a string"))
    else:
        wrong = validate_resources.problem(resource)
        if wrong is not None:
            found.append((f"{path}.Resource", wrong))
        jsonata_mode = language == JSONATA
        for field, message in validate_resources.payload_problems(
            resource, state, jsonata_mode=jsonata_mode
        ):
            found.append((f"{path}.{field}", message))
    for key in ("TimeoutSeconds", "HeartbeatSeconds"):
        value = state.get(key)
        if value is None or (language == JSONATA and jsonata.is_expression(value)):
            continue
        if not _positive_int(value):
            found.append((f"{path}.{key}", "must be a positive integer"))
        if f"{key}Path" in state:
            found.append((f"{path}.{key}", f"{key} and {key}Path are mutually exclusive"))
    timeout, heartbeat = state.get("TimeoutSeconds"), state.get("HeartbeatSeconds")
    if isinstance(timeout, int) and isinstance(heartbeat, int) and 0 < timeout <= heartbeat:
        found.append((f"{path}.HeartbeatSeconds", "must be smaller than TimeoutSeconds"))


def _check_wait(
    state: Mapping[str, Any], path: str, language: str, states: Mapping[str, Any], found: Problems
) -> None:
    given = [k for k in ("Seconds", "Timestamp", "SecondsPath", "TimestampPath") if k in state]
    if len(given) != 1:
        found.append(
            (
                path,
                "a Wait state needs exactly one of Seconds, Timestamp, "
                "SecondsPath or TimestampPath",
            )
        )
    seconds = state.get("Seconds")
    if "Seconds" in state and not _dynamic(seconds, language) and not _non_negative_int(seconds):
        found.append((f"{path}.Seconds", "must be a non-negative integer"))
    stamp = state.get("Timestamp")
    if "Timestamp" in state and not (language == JSONATA and jsonata.is_expression(stamp)):
        from reflow.flows.choice import parse_timestamp

        if parse_timestamp(stamp) is None:
            found.append((f"{path}.Timestamp", "must be an RFC 3339 timestamp"))


def _check_fail(
    state: Mapping[str, Any], path: str, language: str, states: Mapping[str, Any], found: Problems
) -> None:
    for key in ("Error", "Cause"):
        if key in state and f"{key}Path" in state:
            found.append((path, f"{key} and {key}Path are mutually exclusive"))
        if key in state and not isinstance(state[key], str):
            found.append((f"{path}.{key}", "must be a string"))


def _check_choice(
    state: Mapping[str, Any], path: str, language: str, states: Mapping[str, Any], found: Problems
) -> None:
    choices = state.get("Choices")
    if not isinstance(choices, list) or not choices:
        found.append((f"{path}.Choices", "must be a non-empty array of rules"))
        return
    for index, rule in enumerate(choices):
        where = f"{path}.Choices[{index}]"
        if not isinstance(rule, Mapping):
            found.append((where, "a Choice rule must be an object"))
            continue
        if "Next" not in rule:
            found.append((f"{where}.Next", "a top-level Choice rule needs Next"))
        if language == JSONATA:
            for key in rule:
                if key not in ("Condition", "Next", "Output", "Assign", "Comment"):
                    found.append((f"{where}.{key}", f"unknown field {key!r} in a JSONata rule"))
            condition = rule.get("Condition")
            if condition is None:
                found.append((f"{where}.Condition", "is required in a JSONata rule"))
            elif isinstance(condition, bool):
                pass
            elif not jsonata.is_expression(condition):
                found.append((f"{where}.Condition", "must be a {% %} expression or a boolean"))
            else:
                _jsonata_template(condition, f"{where}.Condition", found)
            if "Output" in rule:
                _jsonata_template(rule["Output"], f"{where}.Output", found)
            if "Assign" in rule:
                _assign(rule["Assign"], f"{where}.Assign", language, found)
        else:
            _rule(rule, where, found, top=True)
    if "Default" in state:
        _target(state["Default"], f"{path}.Default", path, states, found)
    for index, rule in enumerate(choices):
        if isinstance(rule, Mapping) and "Next" in rule:
            _target(rule["Next"], f"{path}.Choices[{index}].Next", path, states, found)


def _rule(rule: Mapping[str, Any], where: str, found: Problems, *, top: bool) -> None:
    allowed_extra = {"Next", "Comment", "Assign"} if top else {"Comment"}
    combinators = [k for k in ("And", "Or", "Not") if k in rule]
    operators = [k for k in rule if k in _OPERATORS]
    for key in rule:
        known = key in _OPERATORS or key in ("And", "Or", "Not", "Variable")
        if not known and key not in allowed_extra:
            found.append((f"{where}.{key}", f"unknown field {key!r} in a Choice rule"))
    if combinators:
        if len(combinators) > 1 or operators or "Variable" in rule:
            found.append((where, "a rule with And, Or or Not may have nothing else"))
        key = combinators[0]
        children = rule[key]
        if key == "Not":
            if not isinstance(children, Mapping):
                found.append((f"{where}.Not", "must be one rule"))
            else:
                _rule(children, f"{where}.Not", found, top=False)
        elif not isinstance(children, list) or not children:
            found.append((f"{where}.{key}", "must be a non-empty array of rules"))
        else:
            for index, child in enumerate(children):
                if isinstance(child, Mapping):
                    _rule(child, f"{where}.{key}[{index}]", found, top=False)
                else:
                    found.append((f"{where}.{key}[{index}]", "must be a rule object"))
        return
    if len(operators) != 1:
        found.append((where, "a rule needs exactly one comparison operator (or And/Or/Not)"))
        return
    if "Variable" not in rule:
        found.append((f"{where}.Variable", "is required"))
    else:
        _check_path(rule["Variable"], f"{where}.Variable", found)
    name = operators[0]
    operand = rule[name]
    if name.endswith("Path"):
        _check_path(operand, f"{where}.{name}", found)
    elif name in TYPE_TESTS or name == "IsPresent" or name == "BooleanEquals":
        if not isinstance(operand, bool):
            found.append((f"{where}.{name}", "must be a boolean"))
    elif name.startswith("Numeric"):
        if not _number(operand):
            found.append((f"{where}.{name}", "must be a number"))
    elif name.startswith("Timestamp"):
        from reflow.flows.choice import parse_timestamp

        if parse_timestamp(operand) is None:
            found.append((f"{where}.{name}", "must be an RFC 3339 timestamp"))
    elif not isinstance(operand, str):
        found.append((f"{where}.{name}", "must be a string"))


def _check_parallel(
    state: Mapping[str, Any], path: str, language: str, states: Mapping[str, Any], found: Problems
) -> None:
    branches = state.get("Branches")
    if not isinstance(branches, list) or not branches:
        found.append((f"{path}.Branches", "must be a non-empty array of state machines"))
        return
    for index, branch in enumerate(branches):
        where = f"{path}.Branches[{index}]."
        if not isinstance(branch, Mapping):
            found.append((where[:-1], "a branch must be an object with StartAt and States"))
            continue
        _nested(branch, where, language, found)


def _nested(machine: Mapping[str, Any], prefix: str, language: str, found: Problems) -> None:
    inner = machine.get("QueryLanguage", language)
    if language == JSONATA and inner == JSONPATH:
        found.append((prefix + "QueryLanguage", "may not switch back to JSONPath under JSONata"))
    language = inner if inner in (JSONPATH, JSONATA) else language
    _machine(machine, prefix, language, _BRANCH_FIELDS, found)


def _check_map(
    state: Mapping[str, Any], path: str, language: str, states: Mapping[str, Any], found: Problems
) -> None:
    processor = state.get("ItemProcessor", state.get("Iterator"))
    if "ItemProcessor" in state and "Iterator" in state:
        found.append((path, "a Map state may not have both ItemProcessor and Iterator"))
    if not isinstance(processor, Mapping):
        found.append((f"{path}.ItemProcessor", "is required: the state machine run per item"))
    else:
        key = "ItemProcessor" if "ItemProcessor" in state else "Iterator"
        _nested(processor, f"{path}.{key}.", language, found)
    if "ItemSelector" in state and "Parameters" in state:
        found.append((path, "ItemSelector and Parameters are mutually exclusive"))
    for key in ("MaxConcurrency", "ToleratedFailureCount"):
        value = state.get(key)
        if value is not None and not _dynamic(value, language) and not _non_negative_int(value):
            found.append((f"{path}.{key}", "must be a non-negative integer"))
    share = state.get("ToleratedFailurePercentage")
    if share is not None and not _dynamic(share, language) and not _percentage(share):
        found.append((f"{path}.ToleratedFailurePercentage", "must be a number from 0 to 100"))
    validate_map.check_distributed(state, path, language, found)
    batcher = state.get("ItemBatcher")
    if batcher is not None:
        if not isinstance(batcher, Mapping):
            found.append((f"{path}.ItemBatcher", "must be an object"))
        else:
            known = {"MaxItemsPerBatch", "MaxItemsPerBatchPath", "MaxInputBytesPerBatch"}
            known |= {"MaxInputBytesPerBatchPath", "BatchInput"}
            for key in batcher:
                if key not in known:
                    found.append((f"{path}.ItemBatcher.{key}", f"unknown field {key!r}"))


_KIND_CHECKS = {
    "Task": _check_task,
    "Wait": _check_wait,
    "Fail": _check_fail,
    "Choice": _check_choice,
    "Parallel": _check_parallel,
    "Map": _check_map,
}
