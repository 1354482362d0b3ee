"""Distributed Map: ItemReader over a bucket, child executions, ResultWriter files.

The ResultWriter layout follows the Step Functions docs (ResultWriter (Map)):
``PREFIX/MAP_RUN_ID/manifest.json`` naming ``SUCCEEDED_0.json`` /
``FAILED_0.json`` files of child execution descriptions.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from reflow.backends import memory_backend
from reflow.backends.memory import MemoryBlobs
from reflow.backends.protocols import Blobs
from reflow.flows import TaskContext, run_async
from reflow.flows.service import FlowService
from reflow.testing import FakeClock

GET = "arn:aws:states:::s3:getObject"


def flow(processor_states: dict[str, Any], **map_fields: Any) -> dict[str, Any]:
    return {
        "StartAt": "M",
        "States": {
            "M": {
                "Type": "Map",
                "ItemReader": {
                    "Resource": GET,
                    "ReaderConfig": {"InputType": "JSONL"},
                    "Parameters": {"Bucket": "in", "Key": "jobs.jsonl"},
                },
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
                    "StartAt": next(iter(processor_states)),
                    "States": processor_states,
                },
                "ResultWriter": {
                    "Resource": "arn:aws:states:::s3:putObject",
                    "Parameters": {"Bucket": "out", "Prefix": "results"},
                },
                "End": True,
                **map_fields,
            }
        },
    }


def check(event: Any, context: TaskContext) -> Any:
    if event.get("bad"):
        raise ValueError(f"job {event['id']} is bad")
    return {"ok": event["id"]}


WORK = {"W": {"Type": "Task", "Resource": "check", "End": True}}


async def put_jobs(blobs: Blobs, *jobs: dict[str, Any]) -> None:
    text = "".join(json.dumps(job) + "\n" for job in jobs)
    await blobs.put("in/jobs.jsonl", text.encode())


async def read_json(blobs: Blobs, key: str) -> Any:
    blob = await blobs.get(key)
    assert blob is not None, key
    return json.loads(blob.data)


async def test_result_writer_stores_a_manifest_and_the_succeeded_file() -> None:
    clock = FakeClock()
    blobs = MemoryBlobs(clock)
    await put_jobs(blobs, {"id": 1}, {"id": 2})
    execution = await run_async(
        flow(WORK), {}, functions={"check": check}, blobs=blobs, clock=clock
    )
    assert execution.status == "SUCCEEDED", execution.cause
    details = execution.output["ResultWriterDetails"]
    assert details["Bucket"] == "out"
    assert details["Key"].startswith("results/") and details["Key"].endswith("/manifest.json")
    manifest = await read_json(blobs, f"out/{details['Key']}")
    assert manifest["MapRunArn"] == execution.output["MapRunArn"]
    assert manifest["DestinationBucket"] == "out"
    assert manifest["ResultFiles"]["FAILED"] == []
    [succeeded] = manifest["ResultFiles"]["SUCCEEDED"]
    entries = await read_json(blobs, f"out/{succeeded['Key']}")
    assert succeeded["Size"] == len((await blobs.get(f"out/{succeeded['Key']}")).data)  # type: ignore[union-attr]
    assert sorted(json.loads(e["Output"])["ok"] for e in entries) == [1, 2]
    assert {e["Status"] for e in entries} == {"SUCCEEDED"}
    assert all(json.loads(e["Input"])["id"] in (1, 2) for e in entries)
    assert len({e["ExecutionArn"] for e in entries}) == 2


async def test_tolerated_failures_are_written_to_the_failed_file() -> None:
    clock = FakeClock()
    blobs = MemoryBlobs(clock)
    await put_jobs(blobs, {"id": 1}, {"id": 2, "bad": True})
    execution = await run_async(
        flow(WORK, ToleratedFailureCount=1),
        {},
        functions={"check": check},
        blobs=blobs,
        clock=clock,
    )
    assert execution.status == "SUCCEEDED", execution.cause
    manifest = await read_json(blobs, f"out/{execution.output['ResultWriterDetails']['Key']}")
    [failed_file] = manifest["ResultFiles"]["FAILED"]
    [failed] = await read_json(blobs, f"out/{failed_file['Key']}")
    assert failed["Status"] == "FAILED"
    assert failed["Error"] == "ValueError"
    assert failed["Cause"] == "job 2 is bad"
    assert "Output" not in failed


async def test_one_failed_child_over_the_default_threshold_fails_but_results_are_written() -> None:
    clock = FakeClock()
    blobs = MemoryBlobs(clock)
    await put_jobs(blobs, {"id": 1, "bad": True}, {"id": 2})
    execution = await run_async(
        flow(WORK), {}, functions={"check": check}, blobs=blobs, clock=clock
    )
    assert execution.error == "States.ExceedToleratedFailureThreshold"
    assert "MapRunFailed" in execution.event_types()
    listed = await blobs.list("out/")
    [manifest_info] = [info for info in listed if info.key.endswith("manifest.json")]
    manifest = await read_json(blobs, manifest_info.key)
    [failed_file] = manifest["ResultFiles"]["FAILED"]
    [failed] = await read_json(blobs, f"out/{failed_file['Key']}")
    assert failed["Error"] == "ValueError"
    [succeeded_file] = manifest["ResultFiles"]["SUCCEEDED"]
    assert len(await read_json(blobs, f"out/{succeeded_file['Key']}")) == 1


async def test_history_records_the_map_run_and_children_are_separate_executions() -> None:
    clock = FakeClock()
    blobs = MemoryBlobs(clock)
    await put_jobs(blobs, {"id": 1}, {"id": 2}, {"id": 3})
    seen: list[str] = []

    def record(event: Any, context: TaskContext) -> Any:
        seen.append(context.execution_id)
        return event

    definition = flow({"W": {"Type": "Task", "Resource": "record", "End": True}})
    del definition["States"]["M"]["ResultWriter"]
    execution = await run_async(
        definition, {}, functions={"record": record}, blobs=blobs, clock=clock
    )
    assert execution.output == [{"id": 1}, {"id": 2}, {"id": 3}]
    types = execution.event_types()
    assert types.index("MapRunStarted") < types.index("MapRunSucceeded")
    # The children's tasks are not events of the parent: they ran as executions of their own.
    assert "TaskScheduled" not in types
    assert len(set(seen)) == 3 and execution.id not in seen


async def test_children_do_not_see_the_parent_variables() -> None:
    clock = FakeClock()
    blobs = MemoryBlobs(clock)
    await put_jobs(blobs, {"id": 1})
    definition: dict[str, Any] = {
        "StartAt": "Set",
        "States": {
            "Set": {"Type": "Pass", "Assign": {"secret": 42}, "Next": "M"},
            **flow({"P": {"Type": "Pass", "Parameters": {"v.$": "$secret"}, "End": True}})[
                "States"
            ],
        },
    }
    mapped = definition["States"]["M"]
    del mapped["ResultWriter"]
    mapped["ToleratedFailureCount"] = 1
    execution = await run_async(definition, {}, blobs=blobs, clock=clock)
    [failed] = execution.output
    assert failed["Error"] == "States.Runtime"
    assert "secret" in failed["Cause"]


async def test_without_blobs_the_reader_fails_with_item_reader_failed() -> None:
    execution = await run_async(flow(WORK), {}, functions={"check": check}, clock=FakeClock())
    assert execution.error == "States.ItemReaderFailed"
    assert "blobs" in (execution.cause or "")


@pytest.mark.parametrize("concurrency", [1, 2, 0])
async def test_max_concurrency_bounds_the_child_executions_at_once(concurrency: int) -> None:
    clock = FakeClock(autojump=True)
    blobs = MemoryBlobs(clock)
    await put_jobs(blobs, *({"id": i} for i in range(6)))
    running, most = [0], [0]

    async def slow(event: Any, context: TaskContext) -> Any:
        running[0] += 1
        most[0] = max(most[0], running[0])
        await clock.sleep(1)
        running[0] -= 1
        return event["id"]

    definition = flow(
        {"S": {"Type": "Task", "Resource": "slow", "End": True}}, MaxConcurrency=concurrency
    )
    del definition["States"]["M"]["ResultWriter"]
    execution = await run_async(definition, {}, functions={"slow": slow}, blobs=blobs, clock=clock)
    assert execution.output == list(range(6))
    if concurrency:
        assert most[0] <= concurrency


async def test_the_durable_service_reads_and_writes_the_backend_blobs() -> None:
    clock = FakeClock(autojump=True)
    backend = memory_backend(clock)
    try:
        await put_jobs(backend.blobs, {"id": 5}, {"id": 6})
        service = FlowService(backend, {"fan": flow(WORK)}, functions={"check": check})
        await service.start_execution("fan", {}, name="d")
        await service.drain()
        described = await service.describe("d")
        assert described["status"] == "SUCCEEDED", described
        key = described["output"]["ResultWriterDetails"]["Key"]
        manifest = await read_json(backend.blobs, f"out/{key}")
        [succeeded] = manifest["ResultFiles"]["SUCCEEDED"]
        entries = await read_json(backend.blobs, f"out/{succeeded['Key']}")
        assert sorted(json.loads(e["Output"])["ok"] for e in entries) == [5, 6]
    finally:
        await backend.close()


async def test_an_express_flow_in_the_service_reads_the_backend_blobs_too() -> None:
    clock = FakeClock(autojump=True)
    backend = memory_backend(clock)
    try:
        await put_jobs(backend.blobs, {"id": 8})
        definition = flow(WORK)
        del definition["States"]["M"]["ResultWriter"]
        service = FlowService(
            backend, {"fan": definition}, functions={"check": check}, express={"fan"}
        )
        await service.start_execution("fan", {}, name="e")
        for _ in range(100):
            described = await service.describe("e")
            if described["status"] != "RUNNING":
                break
            await asyncio.sleep(0)
        assert described["status"] == "SUCCEEDED", described
        assert described["output"] == [{"ok": 8}]
        await service.stop()
    finally:
        await backend.close()
