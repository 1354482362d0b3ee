"""dynamodb:putItem/getItem/updateItem/deleteItem in memory, over reflow tables.

Cases follow the DynamoDB API reference (request and response shapes,
AttributeValues, ReturnValues, expression syntax) and Step Functions' error
names for its DynamoDB integration.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from reflow.backends import Backend
from reflow.flows import Execution, run_async
from reflow.state.tables import Table
from reflow.testing.clock import FakeClock

DDB = "arn:aws:states:::dynamodb:"


def _flow(*steps: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """Tasks in a row, each one's answer kept under its name (JSONata)."""
    states: dict[str, Any] = {}
    for index, (verb, arguments) in enumerate(steps):
        state: dict[str, Any] = {
            "Type": "Task",
            "Resource": DDB + verb,
            "Arguments": arguments,
            "Output": "{% $merge([$states.input, {'" + f"s{index}" + "': $states.result}]) %}",
        }
        if index + 1 < len(steps):
            state["Next"] = f"S{index + 1}"
        else:
            state["End"] = True
        states[f"S{index}"] = state
    return {"QueryLanguage": "JSONata", "StartAt": "S0", "States": states}


@pytest.fixture
def tables(backend: Backend, clock: FakeClock) -> dict[str, Table]:
    return {
        "articles": Table("articles", backend.kv, clock=clock),
        "events": Table("events", backend.kv, key="pk", sort_key="sk", clock=clock),
    }


async def _run(tables: dict[str, Table], *steps: tuple[str, dict[str, Any]]) -> Execution:
    return await run_async(_flow(*steps), {}, tables=tables)


def _put(item: dict[str, Any], **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("putItem", {"TableName": "articles", "Item": item, **extra})


def _get(key: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("getItem", {"TableName": "articles", "Key": {"id": {"S": key}}, **extra})


def _update(key: str, expression: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return (
        "updateItem",
        {
            "TableName": "articles",
            "Key": {"id": {"S": key}},
            "UpdateExpression": expression,
            **extra,
        },
    )


TYPED = {
    "id": {"S": "a1"},
    "title": {"S": "Hello"},
    "views": {"N": "42"},
    "score": {"N": "4.5"},
    "live": {"BOOL": True},
    "note": {"NULL": True},
    "author": {"M": {"name": {"S": "Ada"}, "age": {"N": "36"}}},
    "blocks": {"L": [{"S": "p"}, {"N": "1"}]},
    "tags": {"SS": ["x", "y"]},
    "sizes": {"NS": ["1", "2.5"]},
}


async def test_put_then_get_round_trips_typed_values(tables: dict[str, Table]) -> None:
    execution = await _run(tables, _put(TYPED), _get("a1"))
    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.output["s0"] == {}
    item = execution.output["s1"]["Item"]
    # Sets are stored as JSON lists: they read back as lists.
    assert item == {
        **TYPED,
        "tags": {"L": [{"S": "x"}, {"S": "y"}]},
        "sizes": {"L": [{"N": "1"}, {"N": "2.5"}]},
    }
    stored = await tables["articles"].get("a1")
    assert stored is not None
    assert stored["views"] == 42 and stored["score"] == 4.5 and stored["note"] is None
    assert stored["author"] == {"name": "Ada", "age": 36}


async def test_get_of_an_absent_item_answers_without_item(tables: dict[str, Table]) -> None:
    execution = await _run(tables, _get("nope"))
    assert execution.output["s0"] == {}


async def test_get_with_a_projection(tables: dict[str, Table]) -> None:
    execution = await _run(
        tables,
        _put(TYPED),
        _get(
            "a1",
            ProjectionExpression="title, #a.#n, blocks[1]",
            ExpressionAttributeNames={"#a": "author", "#n": "name"},
        ),
    )
    assert execution.output["s1"]["Item"] == {
        "title": {"S": "Hello"},
        "author": {"M": {"name": {"S": "Ada"}}},
        "blocks": {"L": [{"N": "1"}]},
    }


async def test_put_with_a_false_condition_fails_with_conditional_check(
    tables: dict[str, Table],
) -> None:
    guarded = _put(
        {"id": {"S": "a1"}, "v": {"N": "2"}}, ConditionExpression="attribute_not_exists(id)"
    )
    execution = await _run(tables, _put({"id": {"S": "a1"}, "v": {"N": "1"}}), guarded)
    assert execution.error == "DynamoDB.ConditionalCheckFailedException"
    assert "The conditional request failed" in (execution.cause or "")
    assert await tables["articles"].get("a1") == {"id": "a1", "v": 1}


async def test_put_returns_the_old_item_with_all_old(tables: dict[str, Table]) -> None:
    execution = await _run(
        tables,
        _put({"id": {"S": "a1"}, "v": {"N": "1"}}),
        _put({"id": {"S": "a1"}, "v": {"N": "2"}}, ReturnValues="ALL_OLD"),
    )
    assert execution.output["s1"] == {"Attributes": {"id": {"S": "a1"}, "v": {"N": "1"}}}


async def test_update_set_arithmetic_if_not_exists_list_append_remove(
    tables: dict[str, Table],
) -> None:
    await tables["articles"].put({"id": "a1", "views": 1, "log": ["a"], "draft": True})
    expression = (
        "SET views = views + :one, likes = if_not_exists(likes, :zero) - :one, "
        "#l = list_append(#l, :more), author.name = :n REMOVE draft"
    )
    execution = await _run(
        tables,
        _put({"id": {"S": "a2"}, "author": {"M": {}}}),
        (
            "updateItem",
            {
                "TableName": "articles",
                "Key": {"id": {"S": "a1"}},
                "UpdateExpression": "SET author = :m",
                "ExpressionAttributeValues": {":m": {"M": {}}},
            },
        ),
        _update(
            "a1",
            expression,
            ExpressionAttributeNames={"#l": "log"},
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":zero": {"N": "0"},
                ":more": {"L": [{"S": "b"}]},
                ":n": {"S": "Ada"},
            },
            ReturnValues="ALL_NEW",
        ),
    )
    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.output["s2"] == {
        "Attributes": {
            "id": {"S": "a1"},
            "views": {"N": "2"},
            "likes": {"N": "-1"},
            "log": {"L": [{"S": "a"}, {"S": "b"}]},
            "author": {"M": {"name": {"S": "Ada"}}},
        }
    }


async def test_update_add_and_delete_on_numbers_and_sets(tables: dict[str, Table]) -> None:
    await tables["articles"].put({"id": "a1", "tags": ["x", "y"]})
    execution = await _run(
        tables,
        _update(
            "a1",
            "ADD hits :two, tags :new DELETE sizes :gone",
            ExpressionAttributeValues={
                ":two": {"N": "2"},
                ":new": {"SS": ["y", "z"]},
                ":gone": {"NS": ["1"]},
            },
            ReturnValues="UPDATED_NEW",
        ),
        _update(
            "a1", "DELETE tags :all", ExpressionAttributeValues={":all": {"SS": ["x", "y", "z"]}}
        ),
    )
    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.output["s0"] == {
        "Attributes": {"hits": {"N": "2"}, "tags": {"L": [{"S": "x"}, {"S": "y"}, {"S": "z"}]}}
    }
    # A set left empty is removed, as DynamoDB keeps no empty set.
    assert await tables["articles"].get("a1") == {"id": "a1", "hits": 2}


async def test_update_return_values_old_and_updated_old(tables: dict[str, Table]) -> None:
    await tables["articles"].put({"id": "a1", "views": 1, "title": "t"})
    execution = await _run(
        tables,
        _update(
            "a1",
            "SET views = :v",
            ExpressionAttributeValues={":v": {"N": "5"}},
            ReturnValues="UPDATED_OLD",
        ),
        _update(
            "a1",
            "SET views = :v",
            ExpressionAttributeValues={":v": {"N": "6"}},
            ReturnValues="ALL_OLD",
        ),
        _update("a1", "REMOVE title", ReturnValues="NONE"),
    )
    assert execution.output["s0"] == {"Attributes": {"views": {"N": "1"}}}
    assert execution.output["s1"] == {
        "Attributes": {"id": {"S": "a1"}, "views": {"N": "5"}, "title": {"S": "t"}}
    }
    assert execution.output["s2"] == {}


async def test_update_creates_an_absent_item_from_its_key(tables: dict[str, Table]) -> None:
    execution = await _run(
        tables,
        _update(
            "new",
            "SET n = if_not_exists(n, :z) + :one",
            ExpressionAttributeValues={":z": {"N": "0"}, ":one": {"N": "1"}},
        ),
    )
    assert execution.status == "SUCCEEDED", execution.cause
    assert await tables["articles"].get("new") == {"id": "new", "n": 1}


async def test_a_conditional_update_that_fails_changes_nothing(tables: dict[str, Table]) -> None:
    await tables["articles"].put({"id": "a1", "status": "draft", "v": 1})
    execution = await _run(
        tables,
        _update(
            "a1",
            "SET v = v + :one",
            ConditionExpression="#s = :live",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":one": {"N": "1"}, ":live": {"S": "live"}},
        ),
    )
    assert execution.error == "DynamoDB.ConditionalCheckFailedException"
    assert await tables["articles"].get("a1") == {"id": "a1", "status": "draft", "v": 1}


async def test_concurrent_increments_are_all_counted(tables: dict[str, Table]) -> None:
    increment = _flow(
        _update(
            "c",
            "SET n = if_not_exists(n, :z) + :one",
            ExpressionAttributeValues={":z": {"N": "0"}, ":one": {"N": "1"}},
        )
    )
    runs = await asyncio.gather(*(run_async(increment, {}, tables=tables) for _ in range(25)))
    assert {run.status for run in runs} == {"SUCCEEDED"}
    assert await tables["articles"].get("c") == {"id": "c", "n": 25}


class Interleaved:
    """A table whose first read is followed by another writer's change to the item."""

    def __init__(self, table: Table, change: dict[str, Any]) -> None:
        self.table = table
        self.change = change
        self.reads = 0

    async def get(self, key: Any) -> Any:
        found = await self.table.get(key)
        self.reads += 1
        if self.reads == 1:
            await self.table.update(key, set=self.change)
        return found

    async def update(self, key: Any, **options: Any) -> Any:
        return await self.table.update(key, **options)


async def test_an_update_raced_by_another_writer_reads_and_computes_again(
    tables: dict[str, Table],
) -> None:
    await tables["articles"].put({"id": "c", "n": 1, "other": "a"})
    raced = Interleaved(tables["articles"], {"n": 10})
    step = _update(
        "c",
        "SET n = n + :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
        ReturnValues="UPDATED_OLD",
    )
    execution = await run_async(_flow(step), {}, tables={"articles": raced})
    assert execution.status == "SUCCEEDED", execution.cause
    assert raced.reads == 2
    assert execution.output["s0"] == {"Attributes": {"n": {"N": "10"}}}
    assert await tables["articles"].get("c") == {"id": "c", "n": 11, "other": "a"}


async def test_a_raced_update_whose_condition_no_longer_holds_fails(
    tables: dict[str, Table],
) -> None:
    await tables["articles"].put({"id": "c", "state": "draft"})
    raced = Interleaved(tables["articles"], {"state": "live"})
    step = _update(
        "c",
        "SET #s = :review",
        ConditionExpression="#s = :draft",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":review": {"S": "review"}, ":draft": {"S": "draft"}},
    )
    execution = await run_async(_flow(step), {}, tables={"articles": raced})
    assert execution.error == "DynamoDB.ConditionalCheckFailedException"
    assert await tables["articles"].get("c") == {"id": "c", "state": "live"}


async def test_delete_with_condition_and_all_old(tables: dict[str, Table]) -> None:
    await tables["articles"].put({"id": "a1", "v": 3})
    key = {"id": {"S": "a1"}}
    execution = await _run(
        tables,
        (
            "deleteItem",
            {
                "TableName": "articles",
                "Key": key,
                "ConditionExpression": "v > :v",
                "ExpressionAttributeValues": {":v": {"N": "5"}},
            },
        ),
    )
    assert execution.error == "DynamoDB.ConditionalCheckFailedException"
    execution = await _run(
        tables, ("deleteItem", {"TableName": "articles", "Key": key, "ReturnValues": "ALL_OLD"})
    )
    assert execution.output["s0"] == {"Attributes": {"id": {"S": "a1"}, "v": {"N": "3"}}}
    assert await tables["articles"].get("a1") is None


async def test_a_table_with_a_sort_key(tables: dict[str, Table]) -> None:
    key = {"pk": {"S": "u1"}, "sk": {"N": "2"}}
    execution = await _run(
        tables,
        ("putItem", {"TableName": "events", "Item": {**key, "x": {"S": "y"}}}),
        ("getItem", {"TableName": "events", "Key": key}),
        ("getItem", {"TableName": "events", "Key": {"pk": {"S": "u1"}}}),
    )
    assert execution.error == "DynamoDB.AmazonDynamoDBException"
    assert "ValidationException" in (execution.cause or "") and "sk" in (execution.cause or "")


async def test_an_unknown_table_is_resource_not_found(tables: dict[str, Table]) -> None:
    execution = await _run(tables, ("getItem", {"TableName": "nope", "Key": {"id": {"S": "a"}}}))
    assert execution.error == "DynamoDB.ResourceNotFoundException"
    assert "nope" in (execution.cause or "")


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        (_update("a", "SET v = :v"), ":v"),
        (_update("a", "SET #x = :v", ExpressionAttributeValues={":v": {"N": "1"}}), "#x"),
        (
            _update(
                "a", "SET v = :v", ExpressionAttributeValues={":v": {"N": "1"}, ":w": {"N": "2"}}
            ),
            "unused",
        ),
        (
            _update("a", "SET v = :v, v = :v", ExpressionAttributeValues={":v": {"N": "1"}}),
            "overlap",
        ),
        (
            _update("a", "SET v = :v SET w = :v", ExpressionAttributeValues={":v": {"N": "1"}}),
            "only be used once",
        ),
        (
            _update("a", "SET v = upper(:v)", ExpressionAttributeValues={":v": {"S": "x"}}),
            "unsupported function",
        ),
        (_update("a", "ADD v :v", ExpressionAttributeValues={":v": {"S": "x"}}), "operand type: S"),
        (
            _update("a", "SET v = w + :v", ExpressionAttributeValues={":v": {"N": "1"}}),
            "does not exist",
        ),
        (
            _update("a", "SET a.b = :v", ExpressionAttributeValues={":v": {"N": "1"}}),
            "invalid for update",
        ),
        (
            _update("a", "SET id = :v", ExpressionAttributeValues={":v": {"S": "b"}}),
            "key attribute",
        ),
        (_get("a", ProjectionExpression="size(a)"), "expected"),
        (_put({"id": {"S": "a"}}, ConditionExpression="attribute_type(id)"), "expected ','"),
        (_put({"id": {"S": "a"}}, ConditionExpression="id = = :v"), "Invalid expression"),
        (_put({"id": {"S": "a"}, "b": {"B": "AA=="}}), "binary"),
        (_put({"id": {"S": "a"}, "b": {"N": "many"}}), "not a number"),
        (_put({"id": {"S": "a"}, "b": {"SS": ["x", "x"]}}), "duplicates"),
        (_put({"id": {"S": "a"}, "b": {"S": "x", "N": "1"}}), "exactly one type key"),
        (_put({"title": {"S": "no key"}}), "id"),
        (("getItem", {"TableName": "articles", "Key": {"id": {"S": "a"}}, "Limit": 1}), "Limit"),
        (_put({"id": {"S": "a"}}, ReturnValues="ALL_NEW"), "ReturnValues"),
    ],
)
async def test_malformed_requests_are_validation_errors(
    tables: dict[str, Table], step: tuple[str, dict[str, Any]], problem: str
) -> None:
    execution = await _run(tables, step)
    assert execution.error == "DynamoDB.AmazonDynamoDBException", execution.cause
    assert "Error Code: ValidationException" in (execution.cause or "")
    assert problem in (execution.cause or "")


async def test_jsonpath_parameters_build_typed_values(tables: dict[str, Table]) -> None:
    definition = {
        "StartAt": "Put",
        "States": {
            "Put": {
                "Type": "Task",
                "Resource": DDB + "putItem",
                "Parameters": {
                    "TableName": "articles",
                    "Item": {"id": {"S.$": "$.id"}, "n": {"N.$": "States.Format('{}', $.n)"}},
                },
                "ResultPath": None,
                "Next": "Get",
            },
            "Get": {
                "Type": "Task",
                "Resource": DDB + "getItem",
                "Parameters": {"TableName": "articles", "Key": {"id": {"S.$": "$.id"}}},
                "ResultSelector": {"n.$": "$.Item.n.N"},
                "End": True,
            },
        },
    }
    execution = await run_async(definition, {"id": "k", "n": 5}, tables=tables)
    assert execution.output == {"n": "5"}


async def test_without_tables_the_task_fails_saying_what_is_missing() -> None:
    execution = await run_async(_flow(_get("a")), {})
    assert execution.error == "States.Runtime"
    assert "tables=" in (execution.cause or "")
