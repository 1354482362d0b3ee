"""Which Task ``Resource`` values reflow runs, checked when a definition is validated.

A misspelt resource (``arn:aws:states:::events:putEvent``,
``…:dynamodb:putitem``, ``…:lambda:invoke.wait``) would otherwise be
accepted and fail only when the task runs. :func:`problem` says what is wrong
with one resource, or None when reflow can run it:

* a plain name (``"double"``) — anything not starting with ``arn:`` or
  ``reflow:`` — is left alone: ``run(functions=…)`` or the app maps it, and a
  definition does not know those names;
* ``reflow:function:NAME`` and ``reflow:cache:purge``;
* ``arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]``, whose shape
  is checked (partition ``aws``, 7 or 8 fields, a 12-digit account, a name
  of 1–64 letters, digits, ``-`` or ``_``);
* the service integrations under ``arn:aws:states:::`` that reflow runs
  (:func:`integrations_run`), each with the patterns Step Functions gives it:
  ``.sync``/``.sync:2`` for ``states:startExecution`` only, and
  ``.waitForTaskToken`` for all but DynamoDB (the optimized ``dynamodb:*`` and
  the ``aws-sdk:dynamodb:query``/``scan`` reads are request-response only).

A function resource (a plain name, ``reflow:function:``, a Lambda ARN) may
also end in ``.waitForTaskToken``: the durable runner strips it and hands
the function the token.

:func:`payload_problems` checks what a Task hands an integration that needs
a field: ``arn:aws:states:::lambda:invoke`` needs ``FunctionName`` (Lambda's
``Invoke`` requires it) — in ``Parameters`` as ``FunctionName`` or
``FunctionName.$``, or in a JSONata ``Arguments`` object. ``Arguments``
written as one ``{% … %}`` expression is only known when the task runs, and
is accepted.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from reflow.flows import integrations, nested

__all__ = ["INTEGRATION_PREFIX", "integrations_run", "payload_problems", "problem"]

INTEGRATION_PREFIX = "arn:aws:states:::"
"""Empty region and account: the namespace of Step Functions' service integrations."""

_FUNCTION_PREFIX = "reflow:function:"
_SYNC, _SYNC2 = ".sync", ".sync:2"
_LAMBDA_SHAPE = "arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]"
_REGION = re.compile(r"[a-z0-9-]+")  # not AWS's region list: reflow's own ARNs use "local"
_ACCOUNT = re.compile(r"\d{12}")
_LAMBDA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_QUALIFIER = re.compile(r"\$LATEST|[A-Za-z0-9_-]{1,128}")


def _callback() -> str:
    # Imported here: durable.py sits above validation in the import graph.
    from reflow.flows.durable import CALLBACK_SUFFIX

    return CALLBACK_SUFFIX


@cache
def integrations_run() -> dict[str, tuple[str, ...]]:
    """Each integration ARN reflow runs and its pattern suffixes (``""``: request-response).

    The ARNs come from the modules that run them; the patterns follow Step
    Functions' table of optimized integrations (AWS SDK integrations take
    request-response and ``.waitForTaskToken``).
    """
    from reflow.flows.tasks import _LAMBDA_INVOKE

    callback = _callback()
    table: dict[str, tuple[str, ...]] = {
        _LAMBDA_INVOKE: ("", callback),
        nested.START_EXECUTION: ("", _SYNC, _SYNC2, callback),
        integrations.PUT_EVENTS: ("", callback),
    }
    table.update({arn: ("",) for arn in integrations.DYNAMODB})
    # Reads answer at once; waiting for a token after one has no use, so not offered.
    table.update({arn: ("",) for arn in integrations.DYNAMODB_SDK})
    table[integrations.CLOUDFRONT_INVALIDATION] = ("", callback)
    return table


def problem(resource: str) -> str | None:
    """What is wrong with the Task ``resource``, or None when reflow can run it."""
    if resource.startswith(INTEGRATION_PREFIX):
        return _integration(resource)
    if resource.startswith("arn:"):
        return _arn(resource)
    if resource.startswith("reflow:"):
        return _reflow(resource)
    return None


def payload_problems(
    resource: str, state: Mapping[str, Any], *, jsonata_mode: bool
) -> list[tuple[str, str]]:
    """What is missing from what the Task ``state`` hands the integration ``resource``.

    Each problem is ``(field, message)``, ``field`` relative to the state
    (``"Parameters"``, ``"Arguments"``). Only a resource :func:`problem`
    accepts is looked at.
    """
    from reflow.flows.tasks import _LAMBDA_INVOKE

    base, _ = _without_callback(resource)
    if base != _LAMBDA_INVOKE or problem(resource) is not None:
        return []
    needs = f"{_LAMBDA_INVOKE} needs FunctionName, the function to invoke"
    if jsonata_mode:
        arguments = state.get("Arguments")
        if arguments is None:
            return [("Arguments", f"{needs}: give Arguments with FunctionName")]
        if isinstance(arguments, Mapping):
            if "FunctionName" not in arguments:
                return [("Arguments", needs)]
            return _function_name(arguments["FunctionName"], "Arguments.FunctionName")
        # A whole {% … %} expression is only known when the task runs; anything else
        # is reported by the JSONata field checks (an object or an expression).
        return []
    parameters = state.get("Parameters")
    if parameters is None:
        return [("Parameters", f"{needs}: give Parameters with FunctionName or FunctionName.$")]
    if not isinstance(parameters, Mapping):
        return [("Parameters", f"{needs}: Parameters must be an object holding it")]
    if "FunctionName" in parameters:
        return _function_name(parameters["FunctionName"], "Parameters.FunctionName")
    if "FunctionName.$" not in parameters:
        return [("Parameters", f"{needs} (or FunctionName.$, a path to it)")]
    return []


def _function_name(value: Any, field: str) -> list[tuple[str, str]]:
    """A literal ``FunctionName``: a name or ARN, a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        return [(field, "must be a function name or ARN (a non-empty string)")]
    return []


def _patterns(allowed: tuple[str, ...]) -> str:
    named = ["request-response" if pattern == "" else pattern for pattern in allowed]
    if len(named) == 1:
        return f"{named[0]} only"
    return ", ".join(named[:-1]) + " and " + named[-1]


def _integration(resource: str) -> str | None:
    api, dot, suffix = resource[len(INTEGRATION_PREFIX) :].partition(".")
    pattern = dot + suffix
    table = integrations_run()
    arn = INTEGRATION_PREFIX + api
    if arn not in table:
        apis = [name[len(INTEGRATION_PREFIX) :] for name in table]
        hint = [name for name in apis if name.lower() == api.lower()]
        hint = hint or difflib.get_close_matches(api, apis, n=1)
        guess = f" (did you mean {INTEGRATION_PREFIX}{hint[0]}?)" if hint else ""
        if not guess and pattern == _callback():
            # What the durable runner does with a callback task no function takes.
            guess = f" (to only wait for the token, name no function: e.g. approval{pattern})"
        return (
            f"{api or resource!r} is not a service integration reflow runs{guess}; "
            f"it runs {', '.join(apis)}"
        )
    allowed = table[arn]
    if pattern not in ("", _SYNC, _SYNC2, _callback()):
        return (
            f"unknown integration pattern {pattern!r}: a resource ends in "
            f"{_SYNC}, {_SYNC2}, {_callback()} or nothing (request-response); "
            f"{api} takes {_patterns(allowed)}"
        )
    if pattern not in allowed:
        return f"{api} does not support {pattern}: it takes {_patterns(allowed)}"
    return None


def _without_callback(resource: str) -> tuple[str, str | None]:
    """The resource without a ``.waitForTaskToken`` suffix; or why its suffix is refused."""
    callback = _callback()
    if resource.endswith(callback):
        return resource[: -len(callback)], None
    for pattern in (_SYNC2, _SYNC):
        if resource.endswith(pattern):
            return resource, f"this resource takes {callback} but not {pattern}"
    return resource, None


def _arn(resource: str) -> str | None:
    parts = resource.split(":")
    if len(parts) < 6 or not parts[2]:
        return f"malformed ARN {resource!r}: expected arn:PARTITION:SERVICE:REGION:ACCOUNT:…"
    partition, service = parts[1], parts[2]
    if partition != "aws":
        return f"partition {partition!r}: reflow runs arn:aws:… resources only"
    if service == "lambda":
        return _lambda(resource)
    if service == "states":
        return (
            "a service integration is written arn:aws:states:::SERVICE:API "
            "(empty region and account); activities are not supported"
        )
    return (
        f"reflow does not run {service} resources: a Task runs a function (a name, "
        f"reflow:function:NAME or {_LAMBDA_SHAPE}) or a service integration "
        f"({INTEGRATION_PREFIX}SERVICE:API)"
    )


def _lambda(resource: str) -> str | None:
    base, refused = _without_callback(resource)
    if refused is not None:
        return refused
    parts = base.split(":")
    wrong = None
    if len(parts) not in (7, 8) or parts[5] != "function":
        count = len(parts) not in (7, 8)
        wrong = f"{len(parts)} fields" if count else f"{parts[5]!r} where 'function' belongs"
    elif not _REGION.fullmatch(parts[3]):
        wrong = f"region {parts[3]!r}"
    elif not _ACCOUNT.fullmatch(parts[4]):
        wrong = f"account {parts[4]!r} is not 12 digits"
    elif not _LAMBDA_NAME.fullmatch(parts[6]):
        wrong = f"function name {parts[6]!r} is not 1 to 64 letters, digits, - or _"
    elif len(parts) == 8 and not _QUALIFIER.fullmatch(parts[7]):
        wrong = f"qualifier {parts[7]!r} is not $LATEST, a version or an alias"
    if wrong is None:
        return None
    return f"malformed Lambda function ARN ({wrong}): expected {_LAMBDA_SHAPE}"


def _reflow(resource: str) -> str | None:
    base, refused = _without_callback(resource)
    if refused is not None:
        return refused
    if base == integrations.CACHE_PURGE:
        return None
    if base.startswith(_FUNCTION_PREFIX):
        name = base[len(_FUNCTION_PREFIX) :]
        if not name or ":" in name or any(char.isspace() for char in name):
            return f"{_FUNCTION_PREFIX}NAME needs a function name (no ':' or spaces)"
        return None
    return (
        f"{resource!r} is not a reflow resource: reflow runs "
        f"{_FUNCTION_PREFIX}NAME and {integrations.CACHE_PURGE}"
    )
