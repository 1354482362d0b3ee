"""``arn:aws:states:::dynamodb:putItem|getItem|updateItem|deleteItem`` over reflow tables.

Requests and responses have DynamoDB's shapes: typed AttributeValues
(``{"S": "a"}``, ``{"N": "1"}``, ``BOOL``, ``NULL``, ``M``, ``L``, ``SS``,
``NS``) in ``Key``, ``Item`` and ``ExpressionAttributeValues``, and in the
answer's ``Item`` / ``Attributes``. Reflow tables hold plain JSON, so a value
is stored as its JSON form (a set as a list) and read back as ``S``, ``N``,
``BOOL``, ``NULL``, ``M`` or ``L``; binary (``B``, ``BS``) is refused.

Supported parameters: ``TableName``, ``Key``, ``Item``,
``ConditionExpression``, ``UpdateExpression``, ``ProjectionExpression``,
``ExpressionAttributeNames``/``Values``, ``ReturnValues`` (putItem and
deleteItem: ``NONE``/``ALL_OLD``; updateItem: also ``UPDATED_OLD``,
``ALL_NEW``, ``UPDATED_NEW``) and ``ConsistentRead`` (reads are always
consistent). The expression subset is :mod:`reflow.flows.dynamodb_expressions`.

Errors, named as Step Functions names them: a false condition is
``DynamoDB.ConditionalCheckFailedException``, an unknown table
``DynamoDB.ResourceNotFoundException``, anything malformed (an unsupported
expression, a bad AttributeValue, a missing key attribute, an unused
placeholder) ``DynamoDB.AmazonDynamoDBException`` whose cause says
``Error Code: ValidationException``.

An UpdateExpression is computed in Python on the item as read, then written
with :meth:`~reflow.state.tables.Table.update` under the request's condition
plus a guard that every attribute the expression reads or writes still holds
what was read; a concurrent change to one of them makes it read and compute
again, so ``SET n = n + :one`` is atomic like DynamoDB's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from reflow.errors import ConditionFailedError, InvalidItemError, InvalidKeyError
from reflow.flows import dynamodb_items as typed
from reflow.flows.dynamodb_expressions import (
    MISSING,
    ExpressionError,
    Expressions,
    ParsedCondition,
    Path,
    Update,
    resolve,
    same,
)
from reflow.flows.errors import StatesError

if TYPE_CHECKING:
    from reflow.flows.tasks import TaskContext

__all__ = ["check_unused", "operation", "parse_field", "prepare", "project"]

_RETRIES = 100
_RETURN = {
    "putItem": ("NONE", "ALL_OLD"),
    "deleteItem": ("NONE", "ALL_OLD"),
    "updateItem": ("NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW"),
    "getItem": (),
}
_PARAMETERS = {
    "putItem": {"Item", "ConditionExpression", "ReturnValues"},
    "getItem": {"Key", "ProjectionExpression", "ConsistentRead"},
    "updateItem": {"Key", "UpdateExpression", "ConditionExpression", "ReturnValues"},
    "deleteItem": {"Key", "ConditionExpression", "ReturnValues"},
}
_COMMON = {"TableName", "ExpressionAttributeNames", "ExpressionAttributeValues"}
Operation = Callable[[Any, Any, "TaskContext"], Awaitable[Any]]


# -- the operations --------------------------------------------------------------------


def operation(verb: str) -> Operation:
    """The task body for ``dynamodb:VERB`` (called with the tables client and payload)."""

    async def run(tables: Any, payload: Any, context: TaskContext) -> Any:
        table, exprs = prepare(f"dynamodb:{verb}", tables, payload, _PARAMETERS[verb])
        returns = payload.get("ReturnValues", "NONE")
        if _RETURN[verb] and returns not in _RETURN[verb]:
            raise typed.invalid(f"ReturnValues {returns!r} is not one of {list(_RETURN[verb])}")
        try:
            return await _OPERATIONS[verb](table, payload, exprs, returns)
        except ExpressionError as error:
            raise typed.invalid(str(error)) from None
        except (InvalidKeyError, InvalidItemError) as error:
            raise typed.invalid(f"One or more parameter values were invalid: {error}") from None

    return run


def prepare(api: str, tables: Any, payload: Any, parameters: set[str]) -> tuple[Any, Expressions]:
    """The table a request names and its placeholders, once its parameters are checked.

    ``parameters`` are the ones ``api`` takes besides ``TableName`` and the
    ``ExpressionAttributeNames``/``Values``; any other is a ValidationException.
    """
    if not isinstance(payload, Mapping):
        raise typed.invalid(f"{api} needs an object of parameters")
    unknown = sorted(set(payload) - parameters - _COMMON)
    if unknown:
        raise typed.invalid(f"{api}: unsupported parameters {unknown}")
    name = payload.get("TableName")
    if not isinstance(name, str) or not name:
        raise typed.invalid("TableName is required: a non-empty string")
    try:
        table = tables[name]
    except KeyError:
        raise typed.error(
            "ResourceNotFoundException",
            f"Requested resource not found: Table: {name} not found",
        ) from None
    return table, _expressions(payload)


def _expressions(payload: Mapping[str, Any]) -> Expressions:
    names = payload.get("ExpressionAttributeNames", {})
    if not isinstance(names, Mapping) or not all(
        isinstance(k, str) and k.startswith("#") and isinstance(v, str) and v
        for k, v in names.items()
    ):
        raise typed.invalid("ExpressionAttributeNames must map #placeholders to attribute names")
    values = payload.get("ExpressionAttributeValues", {})
    if not isinstance(values, Mapping) or not all(
        isinstance(k, str) and k.startswith(":") for k in values
    ):
        raise typed.invalid("ExpressionAttributeValues must map :placeholders to AttributeValues")
    values_typed = {
        k: typed.unmarshal(v, f"ExpressionAttributeValues.{k}") for k, v in values.items()
    }
    return Expressions(names, values_typed)


def parse_field(
    exprs: Expressions, payload: Mapping[str, Any], field: str, parse: Callable[[str], Any]
) -> Any:
    """The expression in ``payload[field]`` parsed by ``parse`` (None when absent)."""
    text = payload.get(field)
    if text is None:
        return None
    if not isinstance(text, str):
        raise typed.invalid(f"{field} must be a string")
    try:
        return parse(text)
    except ExpressionError as error:
        raise typed.invalid(f"{field}: {error}") from None


def check_unused(exprs: Expressions) -> None:
    """Refuse placeholders that no expression of the request used."""
    problem = exprs.unused()
    if problem is not None:
        raise typed.invalid(problem)


def _failed() -> StatesError:
    return typed.error("ConditionalCheckFailedException", "The conditional request failed")


async def _put(table: Any, payload: Mapping[str, Any], exprs: Expressions, returns: str) -> Any:
    item = typed.item(payload.get("Item"), "Item")
    condition = parse_field(exprs, payload, "ConditionExpression", exprs.condition)
    check_unused(exprs)
    try:
        old = await table.put(item, condition=condition, return_old=returns == "ALL_OLD")
    except ConditionFailedError:
        raise _failed() from None
    return {"Attributes": typed.out(old)} if old else {}


async def _get(table: Any, payload: Mapping[str, Any], exprs: Expressions, returns: str) -> Any:
    key = typed.item(payload.get("Key"), "Key")
    paths = parse_field(exprs, payload, "ProjectionExpression", exprs.projection)
    check_unused(exprs)
    found = await table.get(key)
    if found is None:
        return {}
    return {"Item": typed.out(found if paths is None else project(found, paths))}


def project(item: Mapping[str, Any], paths: list[Path]) -> dict[str, Any]:
    """The parts of ``item`` at ``paths`` (list elements kept in their order, compacted)."""
    out: dict[str, Any] = {}
    for path in paths:
        value = resolve(item, path)
        if value is MISSING:
            continue
        into: Any = out
        for index, part in enumerate(path[:-1]):
            nested: Any = [] if isinstance(path[index + 1], int) else {}
            if isinstance(into, dict):
                into = into.setdefault(str(part), nested)
            else:
                into.append(nested)
                into = nested
        if isinstance(into, dict):
            into[str(path[-1])] = value
        else:
            into.append(value)
    return out


async def _delete(table: Any, payload: Mapping[str, Any], exprs: Expressions, returns: str) -> Any:
    key = typed.item(payload.get("Key"), "Key")
    condition = parse_field(exprs, payload, "ConditionExpression", exprs.condition)
    check_unused(exprs)
    try:
        old = await table.delete(key, condition=condition)
    except ConditionFailedError:
        raise _failed() from None
    return {"Attributes": typed.out(old)} if returns == "ALL_OLD" and old else {}


async def _update(table: Any, payload: Mapping[str, Any], exprs: Expressions, returns: str) -> Any:
    key = typed.item(payload.get("Key"), "Key")
    update: Update = parse_field(exprs, payload, "UpdateExpression", exprs.update) or Update()
    condition: ParsedCondition | None = parse_field(
        exprs, payload, "ConditionExpression", exprs.condition
    )
    check_unused(exprs)
    touched = sorted({str(path[0]) for path in [*update.targets, *update.reads]})
    for _ in range(_RETRIES):
        old = await table.get(key)
        if condition is not None and not condition.evaluate(old):
            raise _failed()
        new = update.apply(old, key)
        before = {name: resolve(old, (name,)) for name in touched}
        guard = ParsedCondition(_unchanged(before, condition), "the item changed meanwhile")
        changed = {n: new[n] for n in touched if n in new and not same(new[n], before[n])}
        removed = [n for n in touched if n not in new and before[n] is not MISSING]
        try:
            stored = await table.update(key, set=changed, remove=removed, condition=guard)
        except ConditionFailedError as error:
            if condition is not None and not condition.evaluate(error.item):
                raise _failed() from None
            continue  # an attribute we read changed under us: read and compute again
        targets = sorted({str(path[0]) for path in update.targets})
        return _update_answer(returns, old, stored, before, touched, targets)
    raise typed.error("TransactionConflictException", "the item kept changing; gave up")


def _unchanged(
    before: Mapping[str, Any], condition: ParsedCondition | None
) -> Callable[[Mapping[str, Any] | None], bool]:
    def test(item: Mapping[str, Any] | None) -> bool:
        if condition is not None and not condition.evaluate(item):
            return False
        for name, value in before.items():
            now = resolve(item, (name,))
            if (now is MISSING) != (value is MISSING):
                return False
            if now is not MISSING and not same(now, value):
                return False
        return True

    return test


def _update_answer(
    returns: str,
    old: Mapping[str, Any] | None,
    stored: Mapping[str, Any],
    before: Mapping[str, Any],
    touched: list[str],
    targets: list[str],
) -> Any:
    if returns == "NONE":
        return {}
    if returns == "ALL_NEW":
        return {"Attributes": typed.out(stored)}
    if returns == "ALL_OLD":
        if old is None:
            return {}
        # Untouched attributes may have changed meanwhile: the old item is the stored one
        # with the attributes this update changed put back as they were.
        restored = {n: v for n, v in stored.items() if n not in touched}
        restored.update({n: v for n, v in before.items() if v is not MISSING})
        return {"Attributes": typed.out(restored)}
    source = before if returns == "UPDATED_OLD" else stored
    picked = {n: source[n] for n in targets if n in source and source[n] is not MISSING}
    return {"Attributes": typed.out(picked)} if picked else {}


_OPERATIONS: dict[str, Callable[[Any, Mapping[str, Any], Expressions, str], Awaitable[Any]]] = {
    "putItem": _put,
    "getItem": _get,
    "updateItem": _update,
    "deleteItem": _delete,
}
