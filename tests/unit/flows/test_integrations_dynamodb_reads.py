"""aws-sdk:dynamodb:query and :scan in memory, over reflow tables.

Cases follow the DynamoDB API reference for Query and Scan (key conditions,
Limit before FilterExpression, Count vs ScannedCount, ExclusiveStartKey /
LastEvaluatedKey paging, Select) and Step Functions' names for the AWS SDK
integration's errors (``DynamoDb.…``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.backends import Backend, memory_backend
from reflow.flows import Execution, run_async
from reflow.flows.dynamodb_expressions import ExpressionError, Expressions
from reflow.flows.validate_resources import problem
from reflow.state.tables import Table
from reflow.testing.clock import FakeClock

SDK = "arn:aws:states:::aws-sdk:dynamodb:"


def _flow(verb: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "QueryLanguage": "JSONata",
        "StartAt": "Read",
        "States": {
            "Read": {"Type": "Task", "Resource": SDK + verb, "Arguments": arguments, "End": True}
        },
    }


async def _call(tables: dict[str, Table], verb: str, **arguments: Any) -> Execution:
    return await run_async(_flow(verb, arguments), {}, tables=tables)


async def _answer(tables: dict[str, Table], verb: str, **arguments: Any) -> dict[str, Any]:
    execution = await _call(tables, verb, **arguments)
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert isinstance(execution.output, dict)
    return execution.output


def _values(**values: Any) -> dict[str, Any]:
    """ExpressionAttributeValues from plain values (str: S, bool: BOOL, number: N)."""
    typed: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, bool):
            typed[f":{name}"] = {"BOOL": value}
        elif isinstance(value, str):
            typed[f":{name}"] = {"S": value}
        else:
            typed[f":{name}"] = {"N": str(value)}
    return typed


def _sort_keys(answer: dict[str, Any]) -> list[Any]:
    return [
        int(item["sk"]["N"]) if "N" in item["sk"] else item["sk"]["S"] for item in answer["Items"]
    ]


@pytest.fixture
async def tables(backend: Backend, clock: FakeClock) -> dict[str, Table]:
    events = Table("events", backend.kv, key="pk", sort_key="sk", clock=clock)
    for n in range(10):
        await events.put({"pk": "u1", "sk": n, "odd": n % 2 == 1, "body": {"n": n, "x": "y"}})
    await events.put({"pk": "u2", "sk": 0})
    for word in ("apple", "apricot", "banana"):
        await events.put({"pk": "words", "sk": word})
    articles = Table("articles", backend.kv, clock=clock)
    for n in range(7):
        await articles.put({"id": f"a{n}", "n": n})
    return {"events": events, "articles": articles}


# -- parsing key conditions ------------------------------------------------------------


def _terms(text: str, **values: Any) -> list[tuple[str, str, list[Any]]]:
    exprs = Expressions({"#k": "pk"}, {f":{k}": (v, "N") for k, v in values.items()})
    return [(t.attribute, t.op, [v for v, _ in t.values]) for t in exprs.key_condition(text)]


def test_key_conditions_parse_into_terms() -> None:
    assert _terms("pk = :a", a=1) == [("pk", "=", [1])]
    assert _terms("#k = :a AND sk BETWEEN :b AND :c", a=1, b=2, c=3) == [
        ("pk", "=", [1]),
        ("sk", "BETWEEN", [2, 3]),
    ]
    assert _terms("(sk >= :b) and (pk = :a)", a=1, b=2) == [("sk", ">=", [2]), ("pk", "=", [1])]
    assert _terms("pk = :a AND begins_with(sk, :b)", a=1, b=2)[1] == ("sk", "begins_with", [2])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("pk = :a OR sk = :a", "Invalid operator used in KeyConditionExpression: OR"),
        ("pk IN (:a)", "Invalid operator used in KeyConditionExpression: IN"),
        ("pk <> :a", "Invalid operator used in KeyConditionExpression: <>"),
        ("NOT pk = :a", "Invalid operator used in KeyConditionExpression: NOT"),
        ("contains(pk, :a)", "Invalid operator used in KeyConditionExpression: contains"),
        ("pk.inner = :a", "not the document path pk.inner"),
        ("pk = sk", "expected a :placeholder"),
        ("pk = :nope", "attribute value: :nope"),
    ],
)
def test_key_conditions_outside_the_grammar_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        _terms(text, a=1)
    assert problem in str(caught.value)


# -- Query -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "values", "expected"),
    [
        ("pk = :p", {}, list(range(10))),
        ("pk = :p AND sk = :a", {"a": 4}, [4]),
        ("pk = :p AND sk < :a", {"a": 3}, [0, 1, 2]),
        ("pk = :p AND sk <= :a", {"a": 3}, [0, 1, 2, 3]),
        ("pk = :p AND sk > :a", {"a": 7}, [8, 9]),
        ("pk = :p AND sk >= :a", {"a": 7}, [7, 8, 9]),
        ("pk = :p AND sk BETWEEN :a AND :b", {"a": 3, "b": 5}, [3, 4, 5]),
        ("sk BETWEEN :a AND :a AND pk = :p", {"a": 6}, [6]),
        ("pk = :p AND sk > :s", {"s": "a"}, []),  # strings never compare with numbers
    ],
)
async def test_query_sort_key_conditions(
    tables: dict[str, Table], condition: str, values: dict[str, Any], expected: list[int]
) -> None:
    answer = await _answer(
        tables,
        "query",
        TableName="events",
        KeyConditionExpression=condition,
        ExpressionAttributeValues=_values(p="u1", **values),
    )
    assert _sort_keys(answer) == expected
    assert answer["Count"] == answer["ScannedCount"] == len(expected)
    assert "LastEvaluatedKey" not in answer


async def test_query_begins_with_and_backwards(tables: dict[str, Table]) -> None:
    answer = await _answer(
        tables,
        "query",
        TableName="events",
        KeyConditionExpression="#p = :p AND begins_with(#s, :a)",
        ExpressionAttributeNames={"#p": "pk", "#s": "sk"},
        ExpressionAttributeValues=_values(p="words", a="ap"),
        ScanIndexForward=False,
    )
    assert _sort_keys(answer) == ["apricot", "apple"]


async def test_query_answers_typed_items(tables: dict[str, Table]) -> None:
    answer = await _answer(
        tables,
        "query",
        TableName="events",
        KeyConditionExpression="pk = :p AND sk = :a",
        ExpressionAttributeValues=_values(p="u1", a=3),
        ConsistentRead=True,
    )
    assert answer == {
        "Items": [
            {
                "pk": {"S": "u1"},
                "sk": {"N": "3"},
                "odd": {"BOOL": True},
                "body": {"M": {"n": {"N": "3"}, "x": {"S": "y"}}},
            }
        ],
        "Count": 1,
        "ScannedCount": 1,
    }


async def test_limit_applies_before_the_filter(tables: dict[str, Table]) -> None:
    answer = await _answer(
        tables,
        "query",
        TableName="events",
        KeyConditionExpression="pk = :p",
        FilterExpression="odd = :t",
        ExpressionAttributeValues=_values(p="u1", t=True),
        Limit=4,
    )
    assert _sort_keys(answer) == [1, 3]
    assert (answer["Count"], answer["ScannedCount"]) == (2, 4)
    # The last item read, which the filter dropped, is where the next page starts.
    assert answer["LastEvaluatedKey"] == {"pk": {"S": "u1"}, "sk": {"N": "3"}}


async def test_a_page_whose_items_the_filter_all_drops_still_continues(
    tables: dict[str, Table],
) -> None:
    answer = await _answer(
        tables,
        "query",
        TableName="events",
        KeyConditionExpression="pk = :p",
        FilterExpression="odd = :t",
        ExpressionAttributeValues=_values(p="u1", t=True),
        Limit=1,
    )
    assert (answer["Items"], answer["Count"], answer["ScannedCount"]) == ([], 0, 1)
    assert answer["LastEvaluatedKey"] == {"pk": {"S": "u1"}, "sk": {"N": "0"}}


async def _pages(tables: dict[str, Table], verb: str, **arguments: Any) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    while True:
        answer = await _answer(tables, verb, **arguments)
        pages.append(answer)
        if "LastEvaluatedKey" not in answer:
            return pages
        arguments["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


@pytest.mark.parametrize("forward", [True, False])
async def test_query_pages_through_last_evaluated_key(
    tables: dict[str, Table], forward: bool
) -> None:
    pages = await _pages(
        tables,
        "query",
        TableName="events",
        KeyConditionExpression="pk = :p AND sk >= :a",
        FilterExpression="odd = :t",
        ExpressionAttributeValues=_values(p="u1", a=2, t=False),
        Limit=3,
        ScanIndexForward=forward,
    )
    # 8 items read (2…9) in pages of 3, 3, 2; a full last page would need one more read.
    assert [p["ScannedCount"] for p in pages] == [3, 3, 2]
    found = [sk for page in pages for sk in _sort_keys(page)]
    assert found == ([2, 4, 6, 8] if forward else [8, 6, 4, 2])
    assert sum(p["Count"] for p in pages) == 4


async def test_a_limit_that_ends_the_range_exactly_answers_one_more_empty_page(
    tables: dict[str, Table],
) -> None:
    pages = await _pages(
        tables,
        "query",
        TableName="events",
        KeyConditionExpression="pk = :p AND sk < :a",
        ExpressionAttributeValues=_values(p="u1", a=4),
        Limit=2,
    )
    assert [_sort_keys(p) for p in pages] == [[0, 1], [2, 3], []]


async def test_query_projection_and_select_count(tables: dict[str, Table]) -> None:
    common = {
        "TableName": "events",
        "KeyConditionExpression": "pk = :p AND sk < :a",
        "ExpressionAttributeValues": _values(p="u1", a=2),
    }
    projected = await _answer(tables, "query", **common, ProjectionExpression="sk, body.n")
    assert projected["Items"] == [
        {"sk": {"N": "0"}, "body": {"M": {"n": {"N": "0"}}}},
        {"sk": {"N": "1"}, "body": {"M": {"n": {"N": "1"}}}},
    ]
    counted = await _answer(tables, "query", **common, Select="COUNT")
    assert counted == {"Count": 2, "ScannedCount": 2}


async def test_query_of_a_table_without_sort_key_reads_one_item(
    tables: dict[str, Table],
) -> None:
    key = {"id": {"S": "a3"}}
    common = {
        "TableName": "articles",
        "KeyConditionExpression": "id = :id",
        "ExpressionAttributeValues": {":id": key["id"]},
    }
    answer = await _answer(tables, "query", **common, Limit=1)
    assert answer["Items"] == [{"id": {"S": "a3"}, "n": {"N": "3"}}]
    after = await _answer(tables, "query", **common, ExclusiveStartKey=key)
    assert (after["Items"], after["ScannedCount"]) == ([], 0)


# -- Scan --------------------------------------------------------------------------------


async def test_scan_pages_with_a_filter_and_counts(tables: dict[str, Table]) -> None:
    pages = await _pages(
        tables,
        "scan",
        TableName="articles",
        FilterExpression="n >= :three",
        ExpressionAttributeValues=_values(three=3),
        Limit=3,
    )
    assert [p["ScannedCount"] for p in pages] == [3, 3, 1]
    assert [p["Count"] for p in pages] == [0, 3, 1]
    ids = [item["id"]["S"] for page in pages for item in page["Items"]]
    assert ids == ["a3", "a4", "a5", "a6"]


async def test_scan_without_limit_reads_everything_in_key_order(
    tables: dict[str, Table],
) -> None:
    answer = await _answer(tables, "scan", TableName="articles", Select="COUNT")
    assert answer == {"Count": 7, "ScannedCount": 7}
    everything = await _answer(tables, "scan", TableName="events")
    assert everything["Count"] == 14
    assert "LastEvaluatedKey" not in everything


async def test_scan_segments_split_the_table_and_keep_partitions_whole(
    tables: dict[str, Table],
) -> None:
    seen: list[tuple[str, Any]] = []
    for segment in range(3):
        pages = await _pages(
            tables, "scan", TableName="events", Segment=segment, TotalSegments=3, Limit=4
        )
        found = [(i["pk"]["S"], next(iter(i["sk"].values()))) for p in pages for i in p["Items"]]
        partitions = {pk for pk, _ in found}
        assert not partitions & {pk for pk, _ in seen}  # a partition is in one segment
        seen.extend(found)
    assert len(seen) == len(set(seen)) == 14


async def test_scan_pages_stop_near_one_megabyte(backend: Backend, clock: FakeClock) -> None:
    big = Table("big", backend.kv, clock=clock)
    for n in range(12):
        await big.put({"id": f"b{n:02d}", "blob": "x" * 100_000})
    pages = await _pages({"big": big}, "scan", TableName="big", Select="COUNT")
    assert [p["ScannedCount"] for p in pages] == [11, 1]


# -- errors ------------------------------------------------------------------------------


async def test_an_unknown_table_is_resource_not_found_with_the_sdk_prefix(
    tables: dict[str, Table],
) -> None:
    for verb in ("query", "scan"):
        arguments: dict[str, Any] = {"TableName": "nope"}
        if verb == "query":
            arguments |= {
                "KeyConditionExpression": "pk = :p",
                "ExpressionAttributeValues": _values(p="x"),
            }
        execution = await _call(tables, verb, **arguments)
        assert execution.error == "DynamoDb.ResourceNotFoundException"
        assert "Table: nope not found" in (execution.cause or "")


def _query(condition: str, **extra: Any) -> dict[str, Any]:
    return {"TableName": "events", "KeyConditionExpression": condition, **extra}


@pytest.mark.parametrize(
    ("verb", "arguments", "problem"),
    [
        ("query", {"TableName": "events"}, "needs a KeyConditionExpression"),
        (
            "query",
            _query("pk = :p AND odd = :t", ExpressionAttributeValues=_values(p="u1", t=True)),
            "'odd' is not a key of table 'events' (partition key 'pk', sort key 'sk')",
        ),
        (
            "query",
            _query("sk = :a", ExpressionAttributeValues=_values(a=1)),
            "missed key schema element: pk",
        ),
        (
            "query",
            _query("pk > :p", ExpressionAttributeValues=_values(p="u1")),
            "partition key 'pk' takes only =, not >",
        ),
        (
            "query",
            _query(
                "pk = :p AND sk > :a AND sk < :a", ExpressionAttributeValues=_values(p="u", a=1)
            ),
            "one condition per key",
        ),
        (
            "query",
            _query("pk = :p OR sk = :p", ExpressionAttributeValues=_values(p="u1")),
            "Invalid operator used in KeyConditionExpression: OR",
        ),
        (
            "query",
            _query("pk = :p", ExpressionAttributeValues=_values(p="u1", extra=1)),
            "unused in expressions: keys: {:extra}",
        ),
        (
            "query",
            _query(
                "pk = :p AND begins_with(sk, :a)", ExpressionAttributeValues=_values(p="u", a=1)
            ),
            "operator or function: begins_with, operand type: N",
        ),
        (
            "query",
            _query(
                "pk = :p AND sk BETWEEN :a AND :b",
                ExpressionAttributeValues=_values(p="u", a=5, b=1),
            ),
            "upper bound to be greater than or equal to lower bound",
        ),
        (
            "query",
            _query("pk = :p", ExpressionAttributeValues={":p": {"BOOL": True}}),
            "keys are S or N",
        ),
        (
            "query",
            _query(
                "pk = :p",
                ExpressionAttributeValues=_values(p="u1"),
                ExclusiveStartKey={"pk": {"S": "u2"}, "sk": {"N": "1"}},
            ),
            "is not the partition queried",
        ),
        (
            "query",
            _query("pk = :p", ExpressionAttributeValues=_values(p="u1"), ScanIndexForward="no"),
            "ScanIndexForward",
        ),
        (
            "query",
            _query("pk = :p", ExpressionAttributeValues=_values(p="u1"), IndexName="by-odd"),
            "IndexName 'by-odd'",
        ),
        ("scan", {"TableName": "events", "Limit": 0}, "Limit must be an integer"),
        ("scan", {"TableName": "events", "Select": "SOME"}, "Select 'SOME'"),
        (
            "scan",
            {"TableName": "events", "Select": "COUNT", "ProjectionExpression": "pk"},
            "Cannot specify the ProjectionExpression when choosing to get COUNT",
        ),
        (
            "scan",
            {"TableName": "events", "Select": "SPECIFIC_ATTRIBUTES"},
            "needs a ProjectionExpression",
        ),
        (
            "scan",
            {"TableName": "events", "ExclusiveStartKey": {"pk": {"S": "u1"}}},
            "exactly the key attributes ['pk', 'sk']",
        ),
        ("scan", {"TableName": "events", "Segment": 0}, "TotalSegments parameter is required"),
        ("scan", {"TableName": "events", "Segment": 3, "TotalSegments": 3}, "Segment must be"),
        ("scan", {"TableName": "events", "FilterExpression": "odd = = :t"}, "FilterExpression"),
        ("scan", {"TableName": "events", "Segments": 2}, "unsupported parameters ['Segments']"),
        (
            "scan",
            {"TableName": "events", "ExclusiveStartKey": {"pk": {"S": "u1"}, "sk": {"BOOL": True}}},
            "key",
        ),
    ],
)
async def test_malformed_reads_are_validation_errors_with_the_sdk_prefix(
    tables: dict[str, Table], verb: str, arguments: dict[str, Any], problem: str
) -> None:
    execution = await _call(tables, verb, **arguments)
    assert execution.error == "DynamoDb.DynamoDbException", execution.cause
    assert "Error Code: ValidationException" in (execution.cause or "")
    assert problem in (execution.cause or "")


async def test_sdk_errors_are_caught_by_their_names(tables: dict[str, Table]) -> None:
    definition = _flow("scan", {"TableName": "nope"})
    definition["States"]["Read"]["Catch"] = [
        {"ErrorEquals": ["DynamoDb.ResourceNotFoundException"], "Next": "Caught"}
    ]
    definition["States"]["Caught"] = {"Type": "Pass", "Output": "caught", "End": True}
    execution = await run_async(definition, {}, tables=tables)
    assert execution.output == "caught"


def test_the_read_resources_validate_as_request_response_only() -> None:
    assert problem(SDK + "query") is None
    assert problem(SDK + "scan") is None
    assert "request-response only" in (problem(SDK + "query.waitForTaskToken") or "")
    assert "did you mean" in (problem(SDK + "Query") or "")


# -- a property ----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    sort_keys=st.sets(st.integers(-50, 50), max_size=25),
    limit=st.integers(1, 6),
    low=st.integers(-60, 60),
    forward=st.booleans(),
    verb=st.sampled_from(["query", "scan"]),
)
def test_paging_with_any_limit_yields_one_unpaged_read(
    sort_keys: set[int], limit: int, low: int, forward: bool, verb: str
) -> None:
    async def run() -> tuple[list[Any], list[Any]]:
        table = Table("p", memory_backend().kv, key="pk", sort_key="sk")
        for sk in sort_keys:
            await table.put({"pk": "a", "sk": sk, "even": sk % 2 == 0})
        await table.put({"pk": "b", "sk": 0, "even": True})
        arguments: dict[str, Any] = {"TableName": "p", "FilterExpression": "even = :t"}
        values = _values(t=True)
        if verb == "query":
            arguments |= {"KeyConditionExpression": "pk = :p AND sk >= :low"}
            arguments |= {"ScanIndexForward": forward}
            values |= _values(p="a", low=low)
        arguments["ExpressionAttributeValues"] = values
        tables = {"p": table}
        whole = await _answer(tables, verb, **arguments)
        pages = await _pages(tables, verb, **arguments, Limit=limit)
        return whole["Items"], [item for page in pages for item in page["Items"]]

    whole, paged = asyncio.run(run())
    assert paged == whole
