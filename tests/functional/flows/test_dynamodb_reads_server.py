"""aws-sdk:dynamodb:query and :scan inside ``reflow run``, on memory, SQLite and Redis.

A durable flow pages through a Query with a Choice loop on
``LastEvaluatedKey`` — the way a Step Functions user drains a partition —
summing ``Count`` and ``ScannedCount``; another scans with a filter; a
third catches the SDK integration's error for an unknown table. The tables
are the app's own, reached through the functions runtime's clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reflow.app import App
from reflow.config import Settings
from reflow.flows.server import FlowsService
from reflow.platform import Platform
from reflow.state.running import StateRunner
from tests.unit.state.conftest import KINDS, state_backend_url

QUERY = "arn:aws:states:::aws-sdk:dynamodb:query"
SCAN = "arn:aws:states:::aws-sdk:dynamodb:scan"


def reads_app() -> App:
    app = App("reads")
    app.table("orders", key="customer", sort_key="placed")
    app.flow(
        "drain",
        {
            "QueryLanguage": "JSONata",
            "StartAt": "Page",
            "States": {
                "Page": {
                    "Type": "Task",
                    "Resource": QUERY,
                    "Arguments": (
                        "{% $merge([{'TableName': 'orders',"
                        " 'KeyConditionExpression': 'customer = :c AND placed >= :from',"
                        " 'FilterExpression': '#s = :open',"
                        " 'ExpressionAttributeNames': {'#s': 'status'},"
                        " 'ExpressionAttributeValues': {':c': {'S': $states.input.customer},"
                        " ':from': {'N': '3'}, ':open': {'S': 'open'}},"
                        " 'Limit': 4},"
                        " $exists($states.input.next)"
                        " ? {'ExclusiveStartKey': $states.input.next} : {}]) %}"
                    ),
                    "Output": (
                        "{% {'customer': $states.input.customer,"
                        " 'next': $states.result.LastEvaluatedKey,"
                        " 'pages': $states.input.pages + 1,"
                        " 'count': $states.input.count + $states.result.Count,"
                        " 'scanned': $states.input.scanned + $states.result.ScannedCount,"
                        " 'ids': $append($states.input.ids,"
                        " $states.result.Items.placed.N)} %}"
                    ),
                    "Next": "More?",
                },
                "More?": {
                    "Type": "Choice",
                    "Choices": [{"Condition": "{% $exists($states.input.next) %}", "Next": "Page"}],
                    "Default": "Done",
                },
                "Done": {"Type": "Succeed"},
            },
        },
        permissions=["tables:read:orders"],
    )
    app.flow(
        "big-orders",
        {
            "QueryLanguage": "JSONata",
            "StartAt": "Scan",
            "States": {
                "Scan": {
                    "Type": "Task",
                    "Resource": SCAN,
                    "Arguments": {
                        "TableName": "orders",
                        "FilterExpression": "total > :t",
                        "ProjectionExpression": "customer, placed",
                        "ExpressionAttributeValues": {":t": {"N": "50"}},
                    },
                    "End": True,
                }
            },
        },
    )
    app.flow(
        "missing",
        {
            "QueryLanguage": "JSONata",
            "StartAt": "Scan",
            "States": {
                "Scan": {
                    "Type": "Task",
                    "Resource": SCAN,
                    "Arguments": {"TableName": "nope"},
                    "Catch": [
                        {"ErrorEquals": ["DynamoDb.ResourceNotFoundException"], "Next": "Caught"}
                    ],
                    "End": True,
                },
                "Caught": {"Type": "Pass", "Output": "{% $states.input.Error %}", "End": True},
            },
        },
    )
    return app


@pytest.fixture(params=KINDS)
async def platform(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Platform]:
    settings = Settings.load(
        env={},
        backend=state_backend_url(request.param, tmp_path),
        admin_port=0,
        edge_port=0,
        data_dir=str(tmp_path),
    )
    running = Platform(reads_app(), settings)
    await running.start(admin=False)
    state = running.service("state")
    assert isinstance(state, StateRunner) and state.service is not None
    orders = state.service.tables["orders"]
    for placed in range(12):
        status = "open" if placed % 3 else "shipped"
        await orders.put(
            {"customer": "c1", "placed": placed, "status": status, "total": placed * 10}
        )
    await orders.put({"customer": "c2", "placed": 5, "status": "open", "total": 99})
    try:
        yield running
    finally:
        await running.stop()


async def run_flow(platform: Platform, flow: str, input: Any, name: str) -> dict[str, Any]:
    service = platform.service("flows")
    assert isinstance(service, FlowsService)
    await service.flows.start_execution(flow, input, name=name)
    for _ in range(1000):
        described: dict[str, Any] = await service.flows.describe(name)
        if described["status"] != "RUNNING":
            return described
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} still runs")


async def test_a_flow_drains_a_partition_page_by_page(platform: Platform) -> None:
    start = {"customer": "c1", "pages": 0, "count": 0, "scanned": 0, "ids": []}
    described = await run_flow(platform, "drain", start, "drain-1")
    assert described["status"] == "SUCCEEDED", described
    output = described["output"]
    # placed 3…11 is 9 items read, 4 a page: 4, 4, 1; the open ones are those not divisible by 3.
    assert output["pages"] == 3
    assert output["scanned"] == 9
    assert output["ids"] == ["4", "5", "7", "8", "10", "11"]
    assert output["count"] == 6


async def test_a_flow_scans_with_a_filter_and_a_projection(platform: Platform) -> None:
    described = await run_flow(platform, "big-orders", {}, "big-1")
    assert described["status"] == "SUCCEEDED", described
    output = described["output"]
    assert (output["Count"], output["ScannedCount"]) == (7, 13)
    found = {(i["customer"]["S"], i["placed"]["N"]) for i in output["Items"]}
    assert found == {("c1", str(n)) for n in range(6, 12)} | {("c2", "5")}
    assert all(set(item) == {"customer", "placed"} for item in output["Items"])


async def test_an_unknown_table_is_caught_by_its_sdk_error_name(platform: Platform) -> None:
    described = await run_flow(platform, "missing", {}, "missing-1")
    assert described["status"] == "SUCCEEDED", described
    assert described["output"] == "DynamoDb.ResourceNotFoundException"
