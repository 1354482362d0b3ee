"""ResultWriter's WriterConfig: Transformation (NONE/COMPACT/FLATTEN) and OutputType (JSON/JSONL).

From the Step Functions docs (ResultWriter (Map)): NONE lists the child
executions unchanged with their metadata (the default when exporting),
COMPACT their outputs only, FLATTEN their outputs with array outputs
flattened; a failed child is listed as with NONE whatever the
transformation. JSON writes one array, JSONL one value a line. A
ResultWriter may be a WriterConfig alone (nothing exported: the state's
output is the formatted list), Resource with Parameters, or all three.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reflow.backends import memory_backend
from reflow.backends.memory import MemoryBlobs
from reflow.backends.protocols import Blobs
from reflow.errors import InvalidDefinitionError
from reflow.flows import TaskContext, parse, run_async
from reflow.flows.items import transform
from reflow.flows.service import FlowService
from reflow.testing import FakeClock

PUT = "arn:aws:states:::s3:putObject"


def flow(
    writer: dict[str, Any], *, jsonata: bool = False, tolerated: int | None = None
) -> dict[str, Any]:
    """A Distributed Map over the input's ``items``; each child runs the task ``work``."""
    mapped: dict[str, Any] = {
        "Type": "Map",
        "ItemProcessor": {
            "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "W",
            "States": {"W": {"Type": "Task", "Resource": "work", "End": True}},
        },
        "ResultWriter": writer,
        "End": True,
    }
    if jsonata:
        mapped["Items"] = "{% $states.input.items %}"
    else:
        mapped["ItemsPath"] = "$.items"
    if tolerated is not None:
        mapped["ToleratedFailureCount"] = tolerated
    definition: dict[str, Any] = {"StartAt": "M", "States": {"M": mapped}}
    if jsonata:
        definition["QueryLanguage"] = "JSONata"
    return definition


def work(event: Any, context: TaskContext) -> Any:
    """Returns ``event["out"]``; fails when the event says ``bad``."""
    if event.get("bad"):
        raise ValueError(f"item {event['id']} is bad")
    return event["out"]


ITEMS = [{"id": 1, "out": [1, 2]}, {"id": 2, "out": {"k": "v"}}, {"id": 3, "out": [[3]]}]


def exporting(config: dict[str, Any] | None, *, jsonata: bool = False) -> dict[str, Any]:
    writer: dict[str, Any] = {"Resource": PUT}
    writer["Arguments" if jsonata else "Parameters"] = {"Bucket": "out", "Prefix": "res"}
    if config is not None:
        writer["WriterConfig"] = config
    return writer


async def read(blobs: Blobs, key: str) -> bytes:
    blob = await blobs.get(key)
    assert blob is not None, key
    return blob.data


async def files(blobs: Blobs, output: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    manifest = json.loads(await read(blobs, f"out/{output['ResultWriterDetails']['Key']}"))
    listed: dict[str, list[dict[str, Any]]] = manifest["ResultFiles"]
    return listed


# --- transform, as a property --------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=6,
)
_entries = st.lists(
    st.one_of(
        _json.map(lambda v: {"Status": "SUCCEEDED", "Output": json.dumps(v), "Name": "n"}),
        st.just({"Status": "FAILED", "Error": "E", "Cause": "c", "Name": "n"}),
    ),
    max_size=6,
)


@given(_entries)
def test_transform_compact_flatten_and_none(entries: list[dict[str, Any]]) -> None:
    assert transform(entries, "NONE") == entries
    compact = transform(entries, "COMPACT")
    assert len(compact) == len(entries)
    expected_flat: list[Any] = []
    for entry, value in zip(entries, compact, strict=True):
        if entry["Status"] == "SUCCEEDED":
            assert value == json.loads(entry["Output"])
            output = json.loads(entry["Output"])
            expected_flat.extend(output if isinstance(output, list) else [output])
        else:
            assert value == entry  # a failed child stays its description
            expected_flat.append(entry)
    assert transform(entries, "FLATTEN") == expected_flat


# --- in memory -----------------------------------------------------------------------


async def test_without_writer_config_the_files_are_unchanged_descriptions() -> None:
    blobs = MemoryBlobs(FakeClock())
    execution = await run_async(
        flow(exporting(None)), {"items": ITEMS}, functions={"work": work}, blobs=blobs
    )
    assert execution.status == "SUCCEEDED", execution.cause
    [succeeded] = (await files(blobs, execution.output))["SUCCEEDED"]
    assert succeeded["Key"].endswith("/SUCCEEDED_0.json")
    entries = json.loads(await read(blobs, f"out/{succeeded['Key']}"))
    assert [json.loads(e["Output"]) for e in entries] == [i["out"] for i in ITEMS]
    assert all("ExecutionArn" in e for e in entries)


@pytest.mark.parametrize("jsonata", [False, True])
async def test_compact_jsonl_writes_one_output_a_line(jsonata: bool) -> None:
    blobs = MemoryBlobs(FakeClock())
    config = {"Transformation": "COMPACT", "OutputType": "JSONL"}
    execution = await run_async(
        flow(exporting(config, jsonata=jsonata), jsonata=jsonata),
        {"items": ITEMS},
        functions={"work": work},
        blobs=blobs,
    )
    assert execution.status == "SUCCEEDED", execution.cause
    assert set(execution.output) == {"MapRunArn", "ResultWriterDetails"}
    [succeeded] = (await files(blobs, execution.output))["SUCCEEDED"]
    assert succeeded["Key"].endswith("/SUCCEEDED_0.jsonl")
    data = await read(blobs, f"out/{succeeded['Key']}")
    assert succeeded["Size"] == len(data)
    lines = data.decode().splitlines()
    assert [json.loads(line) for line in lines] == [[1, 2], {"k": "v"}, [[3]]]


async def test_flatten_json_splices_array_outputs_and_keeps_failed_children_whole() -> None:
    blobs = MemoryBlobs(FakeClock())
    items = [*ITEMS, {"id": 4, "bad": True}]
    execution = await run_async(
        flow(exporting({"Transformation": "FLATTEN"}), tolerated=1),
        {"items": items},
        functions={"work": work},
        blobs=blobs,
    )
    assert execution.status == "SUCCEEDED", execution.cause
    listed = await files(blobs, execution.output)
    [succeeded] = listed["SUCCEEDED"]
    assert json.loads(await read(blobs, f"out/{succeeded['Key']}")) == [1, 2, {"k": "v"}, [3]]
    [failed_file] = listed["FAILED"]
    [failed] = json.loads(await read(blobs, f"out/{failed_file['Key']}"))
    assert (failed["Status"], failed["Error"], failed["Cause"]) == (
        "FAILED",
        "ValueError",
        "item 4 is bad",
    )
    assert "ExecutionArn" in failed and "Input" in failed


@pytest.mark.parametrize("jsonata", [False, True])
@pytest.mark.parametrize(
    ("transformation", "expected"),
    [("COMPACT", [[1, 2], {"k": "v"}, [[3]]]), ("FLATTEN", [1, 2, {"k": "v"}, [3]])],
)
async def test_writer_config_alone_is_the_state_output_and_writes_nothing(
    jsonata: bool, transformation: str, expected: list[Any]
) -> None:
    blobs = MemoryBlobs(FakeClock())
    writer = {"WriterConfig": {"Transformation": transformation, "OutputType": "JSONL"}}
    execution = await run_async(
        flow(writer, jsonata=jsonata), {"items": ITEMS}, functions={"work": work}, blobs=blobs
    )
    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.output == expected
    assert await blobs.list("") == []


async def test_writer_config_alone_none_lists_the_descriptions() -> None:
    execution = await run_async(
        flow({"WriterConfig": {"Transformation": "NONE"}}),
        {"items": ITEMS[:2]},
        functions={"work": work},
    )
    assert execution.status == "SUCCEEDED", execution.cause
    assert [e["Status"] for e in execution.output] == ["SUCCEEDED", "SUCCEEDED"]
    assert [json.loads(e["Output"]) for e in execution.output] == [[1, 2], {"k": "v"}]
    assert [json.loads(e["Input"])["id"] for e in execution.output] == [1, 2]


async def test_writer_config_alone_over_the_threshold_still_fails() -> None:
    execution = await run_async(
        flow({"WriterConfig": {"Transformation": "COMPACT"}}),
        {"items": [{"id": 1, "bad": True}]},
        functions={"work": work},
    )
    assert execution.error == "States.ExceedToleratedFailureThreshold"


# --- the durable service -------------------------------------------------------------


async def test_the_durable_service_applies_the_writer_config() -> None:
    clock = FakeClock(autojump=True)
    backend = memory_backend(clock)
    try:
        flows = {
            "export": flow(exporting({"Transformation": "FLATTEN", "OutputType": "JSONL"})),
            "preview": flow({"WriterConfig": {"Transformation": "COMPACT"}}),
        }
        service = FlowService(backend, flows, functions={"work": work})
        await service.start_execution("export", {"items": ITEMS}, name="e")
        await service.start_execution("preview", {"items": ITEMS}, name="p")
        await service.drain()
        exported = await service.describe("e")
        assert exported["status"] == "SUCCEEDED", exported
        [succeeded] = (await files(backend.blobs, exported["output"]))["SUCCEEDED"]
        data = await read(backend.blobs, f"out/{succeeded['Key']}")
        assert [json.loads(line) for line in data.decode().splitlines()] == [
            1,
            2,
            {"k": "v"},
            [3],
        ]
        previewed = await service.describe("p")
        assert previewed["status"] == "SUCCEEDED", previewed
        assert previewed["output"] == [[1, 2], {"k": "v"}, [[3]]]
        await service.stop()
    finally:
        await backend.close()


# --- validation ----------------------------------------------------------------------


def problems(definition: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidDefinitionError) as caught:
        parse(definition)
    return sorted(path for path, _ in caught.value.problems)


@pytest.mark.parametrize("jsonata", [False, True])
def test_unknown_values_are_named_by_their_path(jsonata: bool) -> None:
    config = {"Transformation": "SHRINK", "OutputType": "CSV", "Extra": 1}
    where = "States.M.ResultWriter.WriterConfig"
    assert problems(flow(exporting(config, jsonata=jsonata), jsonata=jsonata)) == [
        f"{where}.Extra",
        f"{where}.OutputType",
        f"{where}.Transformation",
    ]


def test_the_field_combinations_of_the_docs() -> None:
    where = "States.M.ResultWriter"
    assert problems(flow({})) == [f"{where}.Resource"]  # an empty ResultWriter
    assert problems(flow({"WriterConfig": "COMPACT"})) == [f"{where}.WriterConfig"]
    parameters_only = {"Parameters": {"Bucket": "b"}, "WriterConfig": {}}
    assert problems(flow(parameters_only)) == [f"{where}.Parameters"]
    # The three accepted combinations parse.
    parse(flow({"WriterConfig": {"Transformation": "FLATTEN", "OutputType": "JSON"}}))
    parse(flow(exporting(None)))
    parse(flow(exporting({"Transformation": "COMPACT", "OutputType": "JSONL"})))
