"""JSONata mode: ``{% … %}`` expressions evaluated with jsonata-python.

A string field is an expression when it starts with ``{%`` and ends with
``%}``; templates (objects and arrays) are walked and every such string in
them is evaluated. Expressions see ``$states`` (``input``, ``result``,
``errorOutput``, ``context``) and the workflow variables, plus the functions
Step Functions adds: ``$partition``, ``$range``, ``$hash``, ``$random``,
``$uuid`` and ``$parse``. Any evaluation error becomes
``States.QueryEvaluationError``.

Compiled expressions are memoised by text; jsonata-python keeps bindings per
call (a frame over the compiled environment), so sharing them is safe.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import uuid
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jsonata as _jsonata

from reflow.flows.errors import QUERY_EVALUATION_ERROR, PathSyntaxError, StatesError

__all__ = ["compile_expression", "evaluate", "evaluate_template", "is_expression", "strip"]

_LOCK = threading.Lock()
_HASHES = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384"}
_HASHES["SHA-512"] = "sha512"


def is_expression(value: object) -> bool:
    """Whether ``value`` is a ``{% … %}`` JSONata string."""
    return (
        isinstance(value, str)
        and len(value) >= 4
        and value.startswith("{%")
        and value.endswith("%}")
    )


def strip(value: str) -> str:
    """The expression inside ``{% … %}``."""
    return value[2:-2].strip()


def _fail(problem: str) -> StatesError:
    return StatesError(QUERY_EVALUATION_ERROR, problem)


def _partition(array: Any, size: Any) -> list[Any]:
    if not isinstance(array, list) or not isinstance(size, int | float) or size < 1:
        raise _fail("$partition needs an array and a positive chunk size")
    chunk = int(size)
    return [array[i : i + chunk] for i in range(0, len(array), chunk)]


def _range(start: Any, end: Any, step: Any) -> list[Any]:
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (start, end, step)):
        raise _fail("$range needs numeric start, end and step")
    if step == 0:
        raise _fail("$range step must not be 0")
    values: list[Any] = []
    current = start
    while (step > 0 and current <= end) or (step < 0 and current >= end):
        values.append(int(current) if float(current).is_integer() else current)
        current += step
        if len(values) > 1000:
            raise _fail("$range may generate at most 1000 items")
    return values


def _hash(value: Any, algorithm: Any) -> str:
    if algorithm not in _HASHES:
        raise _fail(f"$hash algorithm must be one of {', '.join(_HASHES)}")
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return hashlib.new(_HASHES[algorithm], text.encode()).hexdigest()


def _random(seed: Any = None) -> float:
    return random.Random(seed).random() if seed is not None else random.random()


def _parse(text: Any) -> Any:
    if not isinstance(text, str):
        raise _fail("$parse needs a string")
    try:
        return json.loads(text)
    except ValueError as error:
        raise _fail(f"$parse: not JSON: {error}") from None


@lru_cache(maxsize=2048)
def compile_expression(text: str) -> Any:
    """Compile one expression (without the ``{% %}``); raises PathSyntaxError."""
    try:
        with _LOCK:
            expression = _jsonata.Jsonata(text)
    except _jsonata.JException as error:
        raise PathSyntaxError(text, f"not a JSONata expression: {error}") from None
    expression.register_lambda("partition", _partition)
    expression.register_lambda("range", _range)
    expression.register_lambda("hash", _hash)
    expression.register_lambda("random", _random)
    expression.register_lambda("uuid", lambda: str(uuid.uuid4()))
    expression.register_lambda("parse", _parse)
    return expression


def evaluate(text: str, states: Mapping[str, Any], variables: Mapping[str, Any]) -> Any:
    """Evaluate a ``{% … %}`` string; errors become ``States.QueryEvaluationError``."""
    try:
        expression = compile_expression(strip(text))
    except PathSyntaxError as error:
        raise _fail(error.problem) from None
    bindings = dict(variables)
    bindings["states"] = states
    try:
        return _plain(expression.evaluate(None, bindings))
    except StatesError:
        raise
    except Exception as error:  # jsonata-python raises many types; all are query failures
        raise _fail(f"{strip(text)}: {error}") from None


def _plain(value: Any) -> Any:
    # jsonata-python returns its own list subclass for sequences; callers want JSON values.
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def evaluate_template(value: Any, states: Mapping[str, Any], variables: Mapping[str, Any]) -> Any:
    """``value`` with every ``{% … %}`` string in it replaced by its value."""
    if isinstance(value, str):
        return evaluate(value, states, variables) if is_expression(value) else value
    if isinstance(value, dict):
        return {key: evaluate_template(item, states, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [evaluate_template(item, states, variables) for item in value]
    return value
