"""DynamoDB's typed AttributeValues, and the errors its integration fails with.

A reflow table holds plain JSON, so :func:`unmarshal` turns ``{"S": "a"}``,
``{"N": "1"}``, ``BOOL``, ``NULL``, ``M``, ``L``, ``SS`` and ``NS`` into JSON
values (a set becomes a list; binary ``B``/``BS`` is refused) and
:func:`marshal` turns JSON values back (``S``, ``N``, ``BOOL``, ``NULL``,
``M``, ``L``). Numbers keep their kind: ``"7"`` is an int, ``"2.5"`` a float.

:func:`error` names a DynamoDB exception as Step Functions reports it:
``DynamoDB.<Exception>``, with a ``ValidationException`` reported as
``DynamoDB.AmazonDynamoDBException`` whose cause carries the code;
:func:`for_sdk` renames one for the AWS SDK integrations (``DynamoDb.…``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from reflow.flows.errors import StatesError

__all__ = ["error", "for_sdk", "invalid", "item", "marshal", "out", "unmarshal"]

_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def error(code: str, message: str) -> StatesError:
    """Step Functions' error for the DynamoDB exception ``code``."""
    name = "AmazonDynamoDBException" if code == "ValidationException" else code
    cause = f"{message} (Service: AmazonDynamoDBv2; Status Code: 400; Error Code: {code})"
    return StatesError(f"DynamoDB.{name}", cause)


def for_sdk(error: StatesError) -> StatesError:
    """``error`` as an ``aws-sdk:dynamodb:*`` task reports it.

    Step Functions prefixes the AWS SDK integration's errors ``DynamoDb.``
    (the optimized one's ``DynamoDB.``), and the SDK names an exception
    without a class of its own, ValidationException included, by its
    service-wide base ``DynamoDbException``.
    """
    service, _, name = error.name.partition(".")
    if service != "DynamoDB":
        return error
    name = "DynamoDbException" if name == "AmazonDynamoDBException" else name
    cause = error.cause.replace("Service: AmazonDynamoDBv2", "Service: DynamoDb")
    return StatesError(f"DynamoDb.{name}", cause)


def invalid(message: str) -> StatesError:
    """A ValidationException saying ``message``."""
    return error("ValidationException", message)


# -- AttributeValues -------------------------------------------------------------------


def unmarshal(value: Any, where: str) -> tuple[Any, str]:
    """A typed AttributeValue as a JSON value, and its type (``S``, ``N``, ``SS``…)."""
    if not isinstance(value, Mapping) or len(value) != 1:
        raise invalid(f"{where}: an AttributeValue is an object with exactly one type key")
    ((kind, inner),) = value.items()
    if kind == "S" and isinstance(inner, str):
        return inner, kind
    if kind == "N" and isinstance(inner, str):
        return _number(inner, where), kind
    if kind == "BOOL" and isinstance(inner, bool):
        return inner, kind
    if kind == "NULL" and inner is True:
        return None, kind
    if kind == "M" and isinstance(inner, Mapping):
        return {k: unmarshal(v, f"{where}.{k}")[0] for k, v in inner.items()}, kind
    if kind == "L" and isinstance(inner, list):
        return [unmarshal(v, f"{where}[{i}]")[0] for i, v in enumerate(inner)], kind
    if kind in ("SS", "NS") and isinstance(inner, list) and all(isinstance(v, str) for v in inner):
        if not inner:
            raise invalid(f"{where}: a string or number set may not be empty")
        elements = inner if kind == "SS" else [_number(v, where) for v in inner]
        if len({repr(v) for v in elements}) != len(elements):
            raise invalid(f"{where}: Input collection contains duplicates")
        return elements, kind
    if kind in ("B", "BS"):
        raise invalid(f"{where}: binary values ({kind}) are not supported by reflow tables")
    raise invalid(f"{where}: {{{kind!r}: {inner!r}}} is not a valid AttributeValue")


def _number(text: str, where: str) -> int | float:
    if not _NUMBER.fullmatch(text):
        raise invalid(f"{where}: {text!r} is not a number")
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    number = float(text)
    if not math.isfinite(number):
        raise invalid(f"{where}: {text!r} is out of range")
    return number


def marshal(value: Any) -> dict[str, Any]:
    """A JSON value as a typed AttributeValue."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        return {"N": str(int(value)) if value.is_integer() else repr(value)}
    if isinstance(value, str):
        return {"S": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, list):
        return {"L": [marshal(v) for v in value]}
    return {"M": {k: marshal(v) for k, v in value.items()}}


def item(value: Any, where: str) -> dict[str, Any]:
    """A map of AttributeValues (``Item``, ``Key``) as a JSON object."""
    if not isinstance(value, Mapping) or not value:
        raise invalid(f"{where} is required: a map of attribute name to AttributeValue")
    return {name: unmarshal(v, f"{where}.{name}")[0] for name, v in value.items()}


def out(doc: Mapping[str, Any] | None) -> dict[str, Any]:
    """A stored item as a map of AttributeValues."""
    return {name: marshal(value) for name, value in (doc or {}).items()}
