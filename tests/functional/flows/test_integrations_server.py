"""Task integrations inside ``reflow run``: durable flows reach the bus, tables and the edge.

One app, started as a :class:`Platform` on the memory and the SQLite
backends: a flow puts an event that a rule delivers to a function; a flow
writes a table item then updates it under a condition; a flow purges a path
on the running edge, and the next request for it is a miss. The clients are
the functions runtime's, so every call passes its authorisation hook.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reflow.app import App, FunctionConfig
from reflow.config import Settings
from reflow.edge.service import EdgeService
from reflow.errors import PermissionDeniedError
from reflow.flows.server import FlowsService
from reflow.platform import Platform
from tests.functional.edge.test_runtime_hooks import get

DELIVERED: list[Any] = []


def integrations_app() -> App:
    app = App("integrated")
    app.bucket("pages")
    app.edge_origin("*", "bucket:pages", default_ttl=300)
    app.table("articles")

    @app.on({"source": ["flows.test"]})
    def received(event: Any, context: Any) -> None:
        DELIVERED.append(event)

    app.flow(
        "announce",
        {
            "QueryLanguage": "JSONata",
            "StartAt": "Put",
            "States": {
                "Put": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::events:putEvents",
                    "Arguments": {
                        "Entries": [
                            {
                                "Source": "flows.test",
                                "DetailType": "Announced",
                                "Detail": {"id": "{% $states.input.id %}"},
                            }
                        ]
                    },
                    "End": True,
                }
            },
        },
        permissions=["events:put:bus/default"],
    )
    app.flow(
        "handshake",
        {
            "StartAt": "Ask",
            "States": {
                "Ask": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::events:putEvents.waitForTaskToken",
                    "Parameters": {
                        "Entries": [
                            {
                                "Source": "flows.test",
                                "DetailType": "Asked",
                                "Detail": {"token.$": "$$.Task.Token"},
                            }
                        ]
                    },
                    "End": True,
                }
            },
        },
    )
    app.flow(
        "publish",
        {
            "QueryLanguage": "JSONata",
            "StartAt": "Write",
            "States": {
                "Write": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::dynamodb:putItem",
                    "Arguments": {
                        "TableName": "articles",
                        "Item": {"id": {"S": "{% $states.input.id %}"}, "state": {"S": "draft"}},
                        "ConditionExpression": "attribute_not_exists(id)",
                    },
                    "Next": "Publish",
                },
                "Publish": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::dynamodb:updateItem",
                    "Arguments": {
                        "TableName": "articles",
                        "Key": {"id": {"S": "{% $states.context.Execution.Input.id %}"}},
                        "UpdateExpression": (
                            "SET #s = :live, version = if_not_exists(version, :z) + :one"
                        ),
                        "ConditionExpression": "#s = :draft",
                        "ExpressionAttributeNames": {"#s": "state"},
                        "ExpressionAttributeValues": {
                            ":live": {"S": "live"},
                            ":draft": {"S": "draft"},
                            ":z": {"N": "0"},
                            ":one": {"N": "1"},
                        },
                        "ReturnValues": "ALL_NEW",
                    },
                    "End": True,
                },
            },
        },
        permissions=["tables:read:articles"],  # no write: the hook refuses one
    )
    app.flow(
        "purge",
        {
            "QueryLanguage": "JSONata",
            "StartAt": "Invalidate",
            "States": {
                "Invalidate": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::aws-sdk:cloudfront:createInvalidation",
                    "Arguments": {
                        "DistributionId": "E1",
                        "InvalidationBatch": {
                            "CallerReference": "{% $states.context.Execution.Name %}",
                            "Paths": {"Quantity": 1, "Items": ["/news/*"]},
                        },
                    },
                    "Next": "Purge",
                },
                "Purge": {
                    "Type": "Task",
                    "Resource": "reflow:cache:purge",
                    "Arguments": {"Keys": ["home"]},
                    "End": True,
                },
            },
        },
    )
    return app


@pytest.fixture(params=["memory", "sqlite"])
async def platform(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Platform]:
    backend = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'i.db'}"
    settings = Settings.load(
        env={}, backend=backend, admin_port=0, edge_port=0, data_dir=str(tmp_path)
    )
    running = Platform(integrations_app(), settings)
    await running.start(admin=False)
    blobs = running.backend.blobs
    await blobs.put(
        "pages/index.html", b"home", content_type="text/html", metadata={"surrogate-key": "home"}
    )
    await blobs.put("pages/news/a.html", b"a", content_type="text/html")
    await blobs.put("pages/about.html", b"about", content_type="text/html")
    try:
        yield running
    finally:
        await running.stop()


async def finished(platform: Platform, name: str) -> dict[str, Any]:
    service = platform.service("flows")
    assert isinstance(service, FlowsService)
    for _ in range(500):
        described: dict[str, Any] = await service.flows.describe(name)
        if described["status"] != "RUNNING":
            return described
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name} still runs")


async def start(platform: Platform, flow: str, input: Any, name: str) -> dict[str, Any]:
    service = platform.service("flows")
    assert isinstance(service, FlowsService)
    await service.flows.start_execution(flow, input, name=name)
    return await finished(platform, name)


async def test_a_put_event_is_delivered_by_a_rule_to_a_function(platform: Platform) -> None:
    DELIVERED.clear()
    described = await start(platform, "announce", {"id": "n1"}, "ann-1")
    assert described["status"] == "SUCCEEDED", described
    (entry,) = described["output"]["Entries"]
    for _ in range(500):
        if DELIVERED:
            break
        await asyncio.sleep(0.02)
    (event,) = DELIVERED
    assert event["id"] == entry["EventId"]
    assert event["detail"] == {"id": "n1"}
    assert event["detail-type"] == "Announced"
    assert described["id"] in event["resources"]


async def test_put_events_wait_for_task_token_resumes_on_the_answer(
    platform: Platform,
) -> None:
    DELIVERED.clear()
    service = platform.service("flows")
    assert isinstance(service, FlowsService)
    await service.flows.start_execution("handshake", {}, name="hs-1")
    for _ in range(500):
        if DELIVERED:
            break
        await asyncio.sleep(0.02)
    (event,) = DELIVERED
    assert event["detail-type"] == "Asked"
    await service.flows.send_task_success(event["detail"]["token"], {"approved": True})
    described = await finished(platform, "hs-1")
    assert described["status"] == "SUCCEEDED", described
    assert described["output"] == {"approved": True}


async def test_a_flow_writes_then_conditionally_updates_an_item(platform: Platform) -> None:
    described = await start(platform, "publish", {"id": "a1"}, "pub-1")
    assert described["status"] == "SUCCEEDED", described
    assert described["output"]["Attributes"] == {
        "id": {"S": "a1"},
        "state": {"S": "live"},
        "version": {"N": "1"},
    }
    # A second run finds the item: its guarded write fails as DynamoDB's would.
    again = await start(platform, "publish", {"id": "a1"}, "pub-2")
    assert again["status"] == "FAILED"
    assert again["error"] == "DynamoDB.ConditionalCheckFailedException"


async def test_a_flow_purges_the_running_edge_and_the_next_request_misses(
    platform: Platform,
) -> None:
    edge = platform.service("edge")
    assert isinstance(edge, EdgeService)
    for path in ("/index.html", "/news/a.html", "/about.html"):
        await get(edge.port, path)
        _, headers, _ = await get(edge.port, path)
        assert headers["x-cache"] == "Hit"
    described = await start(platform, "purge", {}, "purge-1")
    assert described["status"] == "SUCCEEDED", described
    assert described["output"] == {"Purged": 1}
    _, headers, _ = await get(edge.port, "/news/a.html")
    assert headers["x-cache"] == "Miss"
    _, headers, _ = await get(edge.port, "/index.html")
    assert headers["x-cache"] == "Miss"
    _, headers, _ = await get(edge.port, "/about.html")
    assert headers["x-cache"] == "Hit"


async def test_integrations_pass_the_runtimes_authorisation_hook(platform: Platform) -> None:
    runtime = platform.runtime
    assert runtime is not None
    seen: list[tuple[str, tuple[str, ...], str, str]] = []

    def enforce(function: FunctionConfig, action: str, resource: str) -> None:
        # An enforcing hook: a call passes when a declared permission covers it.
        seen.append((function.name, function.permissions, action, resource))
        for permission in function.permissions:
            service, verb, *scope = permission.split(":", 2)
            pattern = scope[0] if scope else "*"
            if f"{service}:{verb}" == action and fnmatch.fnmatchcase(resource, pattern):
                return
        raise PermissionDeniedError(function.name, action, resource)

    runtime.authorizer = enforce
    described = await start(platform, "publish", {"id": "z9"}, "pub-denied")
    assert described["status"] == "FAILED"
    assert described["error"] == "PermissionDeniedError"
    publish = ("flow:publish", ("tables:read:articles",), "tables:write", "articles")
    assert publish in seen
    described = await start(platform, "announce", {"id": "n2"}, "ann-allowed")
    assert described["status"] == "SUCCEEDED"
    assert ("flow:announce", ("events:put:bus/default",), "events:put", "bus/default") in seen
    # A flow that declares nothing is refused by an enforcing hook.
    DELIVERED.clear()
    service = platform.service("flows")
    assert isinstance(service, FlowsService)
    await service.flows.start_execution("handshake", {}, name="hs-denied")
    described = await finished(platform, "hs-denied")
    assert described["status"] == "FAILED"
    assert described["error"] == "PermissionDeniedError"
    assert ("flow:handshake", (), "events:put", "bus/default") in seen


async def test_an_integration_whose_subsystem_the_app_lacks_fails_with_runtime(
    tmp_path: Path,
) -> None:
    app = App("bare")
    app.flow(
        "read",
        {
            "StartAt": "Get",
            "States": {
                "Get": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::dynamodb:getItem",
                    "Parameters": {"TableName": "articles", "Key": {"id": {"S": "a"}}},
                    "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
                    "End": True,
                },
                "Caught": {"Type": "Succeed"},
            },
        },
    )
    settings = Settings.load(
        env={}, backend="memory://", admin_port=0, edge_port=0, data_dir=str(tmp_path)
    )
    running = Platform(app, settings)
    await running.start(admin=False)
    try:
        described = await start(running, "read", {}, "r1")
    finally:
        await running.stop()
    assert described["status"] == "FAILED"
    assert described["error"] == "States.Runtime"
    assert "context.tables" in described["cause"]
