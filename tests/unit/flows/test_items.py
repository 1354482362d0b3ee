"""The Distributed Map item readers and writer over Blobs (reflow.flows.items).

Formats from the Step Functions docs (ItemReader (Map)): JSON array, JSON
Lines, CSV with FIRST_ROW or GIVEN headers (RFC 4180 quoting), and the
listObjectsV2 listing.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflow.backends.memory import MemoryBlobs
from reflow.flows.errors import StatesError
from reflow.flows.items import GET_OBJECT, LIST_OBJECTS, read_items, write_results
from reflow.testing import FakeClock

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
CELLS = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\x00"), max_size=6
)


def reader(kind: str, **config: Any) -> dict[str, Any]:
    return {
        "Resource": GET_OBJECT,
        "ReaderConfig": {"InputType": kind, **config},
        "Arguments": {"Bucket": "b", "Key": "k"},
    }


def read(data: str, spec: dict[str, Any]) -> list[Any]:
    async def go() -> list[Any]:
        blobs = MemoryBlobs(FakeClock())
        await blobs.put("b/k", data.encode())
        return await read_items(blobs, spec)

    return asyncio.run(go())


@settings(max_examples=60, deadline=None)
@given(st.lists(JSON_VALUES, max_size=6))
def test_any_list_written_as_json_lines_reads_back_unchanged(values: list[Any]) -> None:
    text = "".join(json.dumps(value) + "\n" for value in values)
    assert read(text, reader("JSONL")) == values
    assert read(json.dumps(values), reader("JSON")) == values


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.text(alphabet="abcxyz_", min_size=1, max_size=5), min_size=1, max_size=4, unique=True
    ),
    st.data(),
)
def test_any_table_written_as_csv_reads_back_as_header_to_text(
    headers: list[str], data: Any
) -> None:
    rows = data.draw(
        st.lists(st.lists(CELLS, min_size=len(headers), max_size=len(headers)), max_size=5)
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(headers)
    writer.writerows(rows)
    expected = [dict(zip(headers, row, strict=True)) for row in rows]
    assert read(out.getvalue(), reader("CSV", CSVHeaderLocation="FIRST_ROW")) == expected
    body = out.getvalue().split("\n", 1)[1] if "\n" in out.getvalue() else ""
    given_headers = reader("CSV", CSVHeaderLocation="GIVEN", CSVHeaders=headers)
    assert read(body, given_headers) == expected


def test_a_csv_row_longer_than_the_header_fails_and_a_short_one_is_padded() -> None:
    with pytest.raises(StatesError) as caught:
        read("a,b\n1,2,3\n", reader("CSV"))
    assert caught.value.name == "States.ItemReaderFailed"
    assert read("a,b\n1\n", reader("CSV")) == [{"a": "1", "b": ""}]


def test_given_header_location_needs_headers() -> None:
    with pytest.raises(StatesError, match="CSVHeaders"):
        read("1,2\n", reader("CSV", CSVHeaderLocation="GIVEN"))


def test_semicolon_and_tab_delimiters() -> None:
    assert read("a;b\n1;2\n", reader("CSV", CSVDelimiter="SEMICOLON")) == [{"a": "1", "b": "2"}]
    assert read("a\tb\n1\t2\n", reader("CSV", CSVDelimiter="TAB")) == [{"a": "1", "b": "2"}]


def test_unknown_input_type_and_resource_fail_with_item_reader_failed() -> None:
    for spec in (reader("MANIFEST"), {**reader("JSON"), "Resource": "arn:aws:states:::s3:other"}):
        with pytest.raises(StatesError) as caught:
            read("[]", spec)
        assert caught.value.name == "States.ItemReaderFailed"


async def test_listing_is_in_key_order_relative_to_the_bucket_and_within_the_prefix() -> None:
    clock = FakeClock(start=1_700_000_000)
    blobs = MemoryBlobs(clock)
    for key in ("b/p/2", "b/p/1", "b/q/1", "bb/p/1"):
        await blobs.put(key, key.encode())
    spec = {
        "Resource": LIST_OBJECTS,
        "ReaderConfig": {},
        "Arguments": {"Bucket": "b", "Prefix": "p/"},
    }
    listed = await read_items(blobs, spec)
    assert [item["Key"] for item in listed] == ["p/1", "p/2"]
    assert listed[0]["Size"] == 5
    assert listed[0]["LastModified"] == 1_700_000_000
    assert listed[0]["Etag"].startswith('"') and listed[0]["Etag"].endswith('"')
    whole = {**spec, "Arguments": {"Bucket": "b"}}
    assert [item["Key"] for item in await read_items(blobs, whole)] == ["p/1", "p/2", "q/1"]


async def test_a_bucket_name_with_a_slash_is_refused() -> None:
    blobs = MemoryBlobs(FakeClock())
    with pytest.raises(StatesError, match="Bucket"):
        await read_items(blobs, {**reader("JSON"), "Arguments": {"Bucket": "a/b", "Key": "k"}})


async def test_writer_without_prefix_writes_under_the_map_run_id() -> None:
    blobs = MemoryBlobs(FakeClock())
    entry = {"Status": "SUCCEEDED", "Output": "1"}
    result = await write_results(
        blobs, {"Arguments": {"Bucket": "out"}}, "arn:aws:states:x:mapRun:f/M:run-1", [entry]
    )
    assert result["ResultWriterDetails"] == {"Bucket": "out", "Key": "run-1/manifest.json"}
    stored = await blobs.get("out/run-1/SUCCEEDED_0.json")
    assert stored is not None and json.loads(stored.data) == [entry]
    assert await blobs.get("out/run-1/FAILED_0.json") is None
