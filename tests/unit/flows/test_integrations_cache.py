"""Cache purges in memory: createInvalidation and reflow:cache:purge on an edge store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from reflow.edge.cache import Freshness
from reflow.edge.purge import PurgePlan, Purger, PurgeResult
from reflow.edge.store import Entry, Store
from reflow.flows import run_async

INVALIDATE = "arn:aws:states:::aws-sdk:cloudfront:createInvalidation"
PURGE = "reflow:cache:purge"
T0 = 1_700_000_000.0


class Edge:
    """An edge's purge (as ``EdgeService.purge``) over a real store and purger."""

    def __init__(self) -> None:
        self.store = Store()
        self.purger = Purger(self.store)
        self.calls: list[PurgePlan] = []

    def add(self, path: str, tags: Sequence[str] = ()) -> None:
        self.store.put(
            Entry(
                key=path,
                path=path,
                status=200,
                reason="OK",
                headers=[("Content-Type", "text/plain")],
                body=b"x",
                freshness=Freshness(response_time=T0, initial_age=0, lifetime=60),
                surrogate_keys=frozenset(tags),
            )
        )

    async def purge(
        self, keys: Sequence[str] = (), paths: Sequence[str] = (), *, soft: bool = False
    ) -> int:
        plan = PurgePlan.of(keys, paths, soft=soft)
        self.calls.append(plan)
        return await self.purger.purge(plan)

    def paths(self) -> list[str]:
        return sorted(entry.path for entry in self.store.entries() if not entry.soft_purged)


def _task(resource: str, arguments: Any) -> dict[str, Any]:
    return {
        "QueryLanguage": "JSONata",
        "StartAt": "Purge",
        "States": {
            "Purge": {"Type": "Task", "Resource": resource, "Arguments": arguments, "End": True}
        },
    }


def _batch(items: list[str], quantity: int | None = None) -> dict[str, Any]:
    return {
        "DistributionId": "E2QWRUHEXAMPLE",
        "InvalidationBatch": {
            "CallerReference": "ref-1",
            "Paths": {"Quantity": len(items) if quantity is None else quantity, "Items": items},
        },
    }


@pytest.fixture
def edge() -> Edge:
    edge = Edge()
    for path in ("/", "/blog/a", "/blog/b", "/img/logo.png"):
        edge.add(path, tags=["blog"] if path.startswith("/blog") else ())
    return edge


async def test_create_invalidation_purges_paths_and_prefixes(edge: Edge) -> None:
    execution = await run_async(
        _task(INVALIDATE, _batch(["/blog/*", "/img/logo.png"])), {}, cache=edge
    )
    assert execution.status == "SUCCEEDED", execution.cause
    assert edge.paths() == ["/"]
    answer = execution.output
    invalidation = answer["Invalidation"]
    assert invalidation["Status"] == "Completed"
    assert invalidation["Id"].startswith("I") and len(invalidation["Id"]) == 14
    assert invalidation["InvalidationBatch"] == {
        "CallerReference": "ref-1",
        "Paths": {"Quantity": 2, "Items": ["/blog/*", "/img/logo.png"]},
    }
    assert invalidation["CreateTime"].endswith("Z")
    assert answer["Location"].endswith(
        f"/distribution/E2QWRUHEXAMPLE/invalidation/{invalidation['Id']}"
    )
    assert edge.calls == [PurgePlan((), ("/blog/*", "/img/logo.png"), False)]


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        (_batch(["/a"], quantity=2), "Quantity"),
        (_batch(["no-slash"]), "must start with '/'"),
        (_batch(["/a*b"]), "'*' is allowed only at the end"),
        ({"InvalidationBatch": {}}, "DistributionId"),
        ({"DistributionId": "E1"}, "InvalidationBatch"),
        ({"DistributionId": "E1", "InvalidationBatch": {"Paths": {}}}, "CallerReference"),
    ],
)
async def test_a_malformed_invalidation_fails_with_invalid_argument(
    edge: Edge, arguments: Any, problem: str
) -> None:
    execution = await run_async(_task(INVALIDATE, arguments), {}, cache=edge)
    assert execution.error == "CloudFront.InvalidArgumentException"
    assert problem in (execution.cause or "")
    assert len(edge.paths()) == 4


async def test_reflow_purge_by_keys_and_paths_returns_the_count(edge: Edge) -> None:
    execution = await run_async(
        _task(PURGE, {"Keys": ["blog"], "Paths": ["/img/logo.png"]}), {}, cache=edge
    )
    assert execution.output == {"Purged": 3}
    assert edge.paths() == ["/"]


async def test_reflow_soft_purge_marks_entries_stale(edge: Edge) -> None:
    execution = await run_async(_task(PURGE, {"Keys": ["blog"], "Soft": True}), {}, cache=edge)
    assert execution.output == {"Purged": 2}
    assert edge.calls[-1].soft is True
    assert edge.paths() == ["/", "/img/logo.png"]


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({}, "nothing to purge"),
        ({"Keys": "blog"}, "Keys must be a list"),
        ({"Paths": ["/a"], "Soft": "yes"}, "Soft"),
        ({"Paths": ["a"]}, "must start with '/'"),
        ({"Paths": ["/a"], "Hard": True}, "unknown fields ['Hard']"),
    ],
)
async def test_a_malformed_purge_fails_clearly(edge: Edge, arguments: Any, problem: str) -> None:
    execution = await run_async(_task(PURGE, arguments), {}, cache=edge)
    assert execution.error == "Cache.InvalidPurgeRequest"
    assert problem in (execution.cause or "")


@pytest.mark.parametrize("resource", [INVALIDATE, PURGE])
async def test_without_an_edge_the_task_fails_saying_what_is_missing(resource: str) -> None:
    execution = await run_async(_task(resource, {"Paths": ["/"]}), {})
    assert execution.error == "States.Runtime"
    assert "edge cache" in (execution.cause or "") and "cache=" in (execution.cause or "")


async def test_reflow_purge_names_the_edges_that_did_not_answer() -> None:
    class Fleet:
        """A cache client whose purge reached one edge and missed another."""

        async def purge(self, keys: Sequence[str], paths: Sequence[str], *, soft: bool) -> int:
            return PurgeResult({"edge-a": 2}, missing=["edge-b"])

    execution = await run_async(_task(PURGE, {"Keys": ["blog"]}), {}, cache=Fleet())
    assert execution.output == {"Purged": 2, "Missing": ["edge-b"]}
