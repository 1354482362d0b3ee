"""``arn:aws:states:::aws-sdk:dynamodb:query`` and ``…:scan`` over reflow tables.

Step Functions offers Query and Scan only as AWS SDK integrations, so these
take the DynamoDB API's parameters and answer its shape — ``Items`` (typed
AttributeValues), ``Count``, ``ScannedCount`` and, while more may follow,
``LastEvaluatedKey`` — and fail with the SDK integration's error names:
``DynamoDb.ResourceNotFoundException`` for an unknown table, and
``DynamoDb.DynamoDbException`` whose cause says ``Error Code:
ValidationException`` for anything malformed.

Query: ``KeyConditionExpression`` (the partition key ``=``, and at most one
sort-key condition: ``=``, ``<``, ``<=``, ``>``, ``>=``, ``BETWEEN``,
``begins_with``) becomes a key range of :meth:`~reflow.state.tables.Table.query`;
``ScanIndexForward: false`` reads it backwards. Scan reads the table in key
order; ``Segment``/``TotalSegments`` split it by a stable hash of the
partition key, so every item (and every item of one partition) belongs to
exactly one segment. Both take ``FilterExpression``, ``ProjectionExpression``,
``ExpressionAttributeNames``/``Values``, ``Limit``, ``ExclusiveStartKey``,
``Select`` (``ALL_ATTRIBUTES``, ``SPECIFIC_ATTRIBUTES``, ``COUNT``) and
``ConsistentRead`` (reads are always consistent).

As in DynamoDB, ``Limit`` caps the items *read*, before the filter:
``ScannedCount`` counts them and ``Count`` the ones the filter kept, so a
page may hold fewer items than ``Limit`` — even none — and still carry a
``LastEvaluatedKey``. A page also stops once the items read pass about 1 MB
(as JSON), as DynamoDB's pages do. ``ExclusiveStartKey`` is the key of the
last item read, whether or not the filter kept it or it still exists.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reflow.errors import InvalidItemError, InvalidKeyError
from reflow.flows import dynamodb_items as typed
from reflow.flows.dynamodb_expressions import (
    ExpressionError,
    Expressions,
    KeyTerm,
    ParsedCondition,
    Path,
    same,
)
from reflow.flows.dynamodb_values import compare
from reflow.flows.errors import StatesError
from reflow.flows.integrations_dynamodb import check_unused, parse_field, prepare, project
from reflow.state.keys import encode_key_value
from reflow.state.tables import Document, Page

if TYPE_CHECKING:
    from reflow.flows.tasks import TaskContext

__all__ = ["PAGE_BYTES", "VERBS", "operation"]

PAGE_BYTES = 1024 * 1024
"""Without ``Limit``, a page stops once the items read pass this size (as JSON)."""

VERBS = ("query", "scan")
_READS = {
    "FilterExpression",
    "ProjectionExpression",
    "Limit",
    "ExclusiveStartKey",
    "Select",
    "ConsistentRead",
    "IndexName",
}
_PARAMETERS = {
    "query": _READS | {"KeyConditionExpression", "ScanIndexForward"},
    "scan": _READS | {"Segment", "TotalSegments"},
}
_SELECT = ("ALL_ATTRIBUTES", "ALL_PROJECTED_ATTRIBUTES", "SPECIFIC_ATTRIBUTES", "COUNT")
_CHUNK = 100  # items per table read when Limit does not say how many
Fetch = Callable[[int | None, str | None], Awaitable[Page]]
Operation = Callable[[Any, Any, "TaskContext"], Awaitable[Any]]


def operation(verb: str) -> Operation:
    """The task body for ``aws-sdk:dynamodb:VERB`` (``query`` or ``scan``)."""
    read = _query if verb == "query" else _scan

    async def run(tables: Any, payload: Any, context: TaskContext) -> Any:
        try:
            table, exprs = prepare(f"dynamodb:{verb}", tables, payload, _PARAMETERS[verb])
            try:
                return await read(table, payload, exprs)
            except ExpressionError as error:
                raise typed.invalid(str(error)) from None
            except (InvalidKeyError, InvalidItemError) as error:
                raise typed.invalid(f"One or more parameter values were invalid: {error}") from None
        except StatesError as error:
            raise typed.for_sdk(error) from None

    return run


# -- Query ---------------------------------------------------------------------------


async def _query(table: Any, payload: Mapping[str, Any], exprs: Expressions) -> Any:
    if "KeyConditionExpression" not in payload:
        raise typed.invalid("Query needs a KeyConditionExpression (the partition key = :value)")
    terms: list[KeyTerm] = parse_field(
        exprs, payload, "KeyConditionExpression", exprs.key_condition
    )
    options = _parse_common(table, payload, exprs)
    forward = payload.get("ScanIndexForward", True)
    if not isinstance(forward, bool):
        raise typed.invalid("ScanIndexForward must be a boolean")
    partition, bounds = _key_range(table, terms)
    cursor = None
    start = options.start
    if start is not None:
        if not same(start[table.key], partition):
            raise typed.invalid(
                "The provided starting key is invalid: ExclusiveStartKey "
                f"{table.key}={start[table.key]!r} is not the partition queried "
                f"({table.key}={partition!r})"
            )
        if table.sort_key is None:  # the one item of the partition was read already
            return _answer(table, options, [], None)
        cursor = table.cursor_after(start, query=True)

    def fetch(limit: int | None, after: str | None) -> Awaitable[Page]:
        return table.query(  # type: ignore[no-any-return]
            partition, **bounds, limit=limit, reverse=not forward, cursor=after
        )

    # A backward page reads its whole range whatever its limit: read it once.
    chunk = None if not forward else _CHUNK
    read, last = await _read(fetch, cursor, options.limit, chunk, None)
    return _answer(table, options, read, last)


def _key_range(table: Any, terms: list[KeyTerm]) -> tuple[Any, dict[str, Any]]:
    """The partition value and the sort-key bounds (``Table.query`` options) of ``terms``."""
    keys = _key_names(table)
    named = ", ".join(
        f"{role} {name!r}" for role, name in zip(("partition key", "sort key"), keys, strict=False)
    )
    by_key: dict[str, KeyTerm] = {}
    for term in terms:
        if term.attribute not in keys:
            raise ExpressionError(
                f"KeyConditionExpression: Query key condition not supported: "
                f"{term.attribute!r} is not a key of table {table.name!r} ({named})"
            )
        if term.attribute in by_key:
            raise ExpressionError(
                "KeyConditionExpression: KeyConditionExpressions must only contain one "
                f"condition per key; {term.attribute!r} has two"
            )
        by_key[term.attribute] = term
    part = by_key.get(table.key)
    if part is None:
        raise ExpressionError(
            f"KeyConditionExpression: Query condition missed key schema element: {table.key}"
        )
    if part.op != "=":
        raise ExpressionError(
            f"KeyConditionExpression: Query key condition not supported: the partition key "
            f"{table.key!r} takes only =, not {part.op}"
        )
    partition, kind = part.values[0]
    _key_value(table.key, partition, kind)
    sort = by_key.get(table.sort_key) if table.sort_key else None
    if sort is None:
        return partition, {}
    for value, kind in sort.values:
        _key_value(sort.attribute, value, kind)
    first = sort.values[0][0]
    if sort.op == "begins_with":
        if not isinstance(first, str):
            raise ExpressionError(
                "KeyConditionExpression: Incorrect operand type for operator or function; "
                f"operator or function: begins_with, operand type: {sort.values[0][1]}"
            )
        return partition, {"begins_with": first}
    if sort.op == "BETWEEN":
        second = sort.values[1][0]
        if compare(">", first, second):
            raise ExpressionError(
                "KeyConditionExpression: The BETWEEN operator requires upper bound to be "
                f"greater than or equal to lower bound; lower bound: {first!r}, "
                f"upper bound: {second!r}"
            )
        if not compare("<=", first, second):
            raise ExpressionError(
                "KeyConditionExpression: the BETWEEN bounds are of different types: "
                f"{sort.values[0][1]} and {sort.values[1][1]}"
            )
        return partition, {"between": (first, second)}
    bounds = {
        "=": {"between": (first, first)},
        "<": {"before": first},
        "<=": {"between": (None, first)},
        ">": {"after": first},
        ">=": {"between": (first, None)},
    }
    return partition, bounds[sort.op]


def _key_value(attribute: str, value: Any, kind: str) -> None:
    if kind not in ("S", "N"):
        raise ExpressionError(
            f"KeyConditionExpression: One or more parameter values were invalid: the key "
            f"{attribute!r} is compared with a value of type {kind}; keys are S or N"
        )


# -- Scan ----------------------------------------------------------------------------


async def _scan(table: Any, payload: Mapping[str, Any], exprs: Expressions) -> Any:
    options = _parse_common(table, payload, exprs)
    in_segment = _segment(table, payload)
    cursor = table.cursor_after(options.start) if options.start is not None else None

    def fetch(limit: int | None, after: str | None) -> Awaitable[Page]:
        return table.scan(limit=limit, cursor=after)  # type: ignore[no-any-return]

    read, last = await _read(fetch, cursor, options.limit, _CHUNK, in_segment)
    return _answer(table, options, read, last)


def _segment(table: Any, payload: Mapping[str, Any]) -> Callable[[Document], bool] | None:
    segment, total = payload.get("Segment"), payload.get("TotalSegments")
    if segment is None and total is None:
        return None
    if segment is None or total is None:
        given, missing = (
            ("Segment", "TotalSegments") if total is None else ("TotalSegments", "Segment")
        )
        raise typed.invalid(
            f"The {missing} parameter is required but was not present in the request "
            f"when {given} parameter is present"
        )
    if not _integer(total) or not 1 <= total <= 1_000_000:
        raise typed.invalid(f"TotalSegments must be an integer from 1 to 1000000, got {total!r}")
    if not _integer(segment) or not 0 <= segment < total:
        raise typed.invalid(
            f"Segment must be an integer from 0 to TotalSegments - 1 ({total - 1}), got {segment!r}"
        )

    def member(item: Document) -> bool:
        encoded = encode_key_value(table.name, table.key, item[table.key])
        return bool(zlib.crc32(encoded.encode()) % total == segment)

    return member


# -- what both share -----------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    """The parameters Query and Scan share, checked."""

    select: str
    paths: list[Path] | None
    condition: ParsedCondition | None
    limit: int | None
    start: Document | None


def _parse_common(table: Any, payload: Mapping[str, Any], exprs: Expressions) -> _Options:
    if "IndexName" in payload:
        raise typed.invalid(
            f"IndexName {payload['IndexName']!r}: reflow tables have no secondary indexes; "
            f"query or scan the table itself"
        )
    condition = parse_field(exprs, payload, "FilterExpression", exprs.condition)
    paths = parse_field(exprs, payload, "ProjectionExpression", exprs.projection)
    check_unused(exprs)
    select = payload.get("Select", "SPECIFIC_ATTRIBUTES" if paths else "ALL_ATTRIBUTES")
    if select not in _SELECT:
        raise typed.invalid(f"Select {select!r} is not one of {list(_SELECT)}")
    if select == "ALL_PROJECTED_ATTRIBUTES":
        raise typed.invalid("Select ALL_PROJECTED_ATTRIBUTES needs an IndexName")
    if paths is not None and select != "SPECIFIC_ATTRIBUTES":
        raise typed.invalid(
            f"Cannot specify the ProjectionExpression when choosing to get {select}"
        )
    if paths is None and select == "SPECIFIC_ATTRIBUTES":
        raise typed.invalid("Select SPECIFIC_ATTRIBUTES needs a ProjectionExpression")
    limit = payload.get("Limit")
    if limit is not None and (not _integer(limit) or limit < 1):
        raise typed.invalid(f"Limit must be an integer of at least 1, got {limit!r}")
    if not isinstance(payload.get("ConsistentRead", False), bool):
        raise typed.invalid("ConsistentRead must be a boolean")
    start = None
    if "ExclusiveStartKey" in payload:
        start = typed.item(payload["ExclusiveStartKey"], "ExclusiveStartKey")
        keys = set(_key_names(table))
        if set(start) != keys:
            raise typed.invalid(
                "The provided starting key is invalid: ExclusiveStartKey must hold exactly "
                f"the key attributes {sorted(keys)}, not {sorted(start)}"
            )
    return _Options(select, paths, condition, limit, start)


def _key_names(table: Any) -> list[str]:
    """The table's key attributes: the partition key, then the sort key if it has one."""
    return [table.key] + ([table.sort_key] if table.sort_key else [])


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


async def _read(
    fetch: Fetch,
    cursor: str | None,
    limit: int | None,
    chunk: int | None,
    in_segment: Callable[[Document], bool] | None,
) -> tuple[list[Document], Document | None]:
    """The items one page evaluates, and the last of them when more may follow."""
    read: list[Document] = []
    size = 0
    while True:
        want = chunk if limit is None or in_segment is not None else limit - len(read)
        page = await fetch(want, cursor)
        for index, item in enumerate(page.items):
            if in_segment is not None and not in_segment(item):
                continue
            read.append(item)
            size += len(json.dumps(item))
            if len(read) == limit or size >= PAGE_BYTES:
                more = index + 1 < len(page.items) or page.cursor is not None
                return read, item if more else None
        if page.cursor is None:
            return read, None
        cursor = page.cursor


def _answer(
    table: Any, options: _Options, read: list[Document], last: Document | None
) -> dict[str, Any]:
    kept = [item for item in read if options.condition is None or options.condition.evaluate(item)]
    answer: dict[str, Any] = {}
    if options.select != "COUNT":
        paths = options.paths
        answer["Items"] = [
            typed.out(item if paths is None else project(item, paths)) for item in kept
        ]
    answer |= {"Count": len(kept), "ScannedCount": len(read)}
    if last is not None:
        answer["LastEvaluatedKey"] = typed.out({name: last[name] for name in _key_names(table)})
    return answer
