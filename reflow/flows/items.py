"""A Distributed Map's ItemReader and ResultWriter over a reflow bucket.

A bucket named ``NAME`` is the key prefix ``NAME/`` in the backend's
:class:`~reflow.backends.protocols.Blobs` (as ``App.bucket`` declares it), so
``{"Bucket": "in", "Key": "rows.csv"}`` is the blob ``in/rows.csv``.

Readers (``ItemReader.Resource``):

* ``arn:aws:states:::s3:getObject`` with ``ReaderConfig.InputType``
  ``JSON`` (the object is one JSON array; the default), ``JSONL`` (one JSON
  value a line) or ``CSV`` (``CSVHeaderLocation`` ``FIRST_ROW``, the
  default, or ``GIVEN`` with ``CSVHeaders``; ``CSVDelimiter`` COMMA, PIPE,
  SEMICOLON, SPACE or TAB): each row an object of header to text;
* ``arn:aws:states:::s3:listObjectsV2`` with ``Prefix``: one item per object,
  ``{"Etag", "Key", "LastModified", "Size", "StorageClass"}`` (Key relative
  to the bucket, LastModified in epoch seconds).

Anything wrong with the source fails the state with ``States.ItemReaderFailed``.

The writer (``ResultWriter``, ``Arguments``/``Parameters`` ``Bucket`` and
``Prefix``) stores under ``PREFIX/MAP_RUN_ID/``: ``SUCCEEDED_0.json``,
``FAILED_0.json`` and ``PENDING_0.json`` (JSON arrays of the child
executions' descriptions, only the non-empty ones are written) and
``manifest.json`` listing them; the Map state's result is then
``{"MapRunArn", "ResultWriterDetails": {"Bucket", "Key"}}``.

``WriterConfig`` shapes what is written (the Step Functions docs, ResultWriter
(Map)): ``Transformation`` ``NONE`` (the default: each child execution's
description, Input/Output as JSON text), ``COMPACT`` (a succeeded child's
output only) or ``FLATTEN`` (as COMPACT, an output that is an array spliced in
element by element); a failed child is always listed as with NONE.
``OutputType`` ``JSON`` (one array; ``*_0.json``) or ``JSONL`` (one value a
line; ``*_0.jsonl``). A ResultWriter with only a WriterConfig writes nothing:
the Map state's result is then the transformed list (:func:`transform`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from reflow.backends.protocols import Blobs
from reflow.flows.errors import ITEM_READER_FAILED, StatesError

__all__ = [
    "GET_OBJECT",
    "LIST_OBJECTS",
    "OUTPUT_TYPES",
    "TRANSFORMATIONS",
    "read_items",
    "transform",
    "write_results",
]

GET_OBJECT = "arn:aws:states:::s3:getObject"
LIST_OBJECTS = "arn:aws:states:::s3:listObjectsV2"
TRANSFORMATIONS = ("NONE", "COMPACT", "FLATTEN")
OUTPUT_TYPES = ("JSON", "JSONL")
_DELIMITERS = {"COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "SPACE": " ", "TAB": "\t"}


def _fail(message: str) -> StatesError:
    return StatesError(ITEM_READER_FAILED, message)


def _bucket(arguments: Mapping[str, Any]) -> str:
    bucket = arguments.get("Bucket")
    if not isinstance(bucket, str) or not bucket or "/" in bucket:
        raise _fail(f"ItemReader Bucket must be a bucket name, got {bucket!r}")
    return bucket


async def read_items(blobs: Blobs | None, reader: Mapping[str, Any]) -> list[Any]:
    """The items ``reader`` (a resolved ItemReader) names, read from ``blobs``."""
    if blobs is None:
        raise _fail("no Blobs to read from: pass blobs= to run (or use the service)")
    resource = reader["Resource"]
    arguments = reader["Arguments"]
    bucket = _bucket(arguments)
    if resource == LIST_OBJECTS:
        prefix = arguments.get("Prefix", "")
        if not isinstance(prefix, str):
            raise _fail(f"ItemReader Prefix must be a string, got {prefix!r}")
        listed = await blobs.list(f"{bucket}/{prefix}")
        return [
            {
                "Etag": info.etag,
                "Key": info.key[len(bucket) + 1 :],
                "LastModified": int(info.modified),
                "Size": info.size,
                "StorageClass": "STANDARD",
            }
            for info in listed
        ]
    if resource != GET_OBJECT:
        raise _fail(f"ItemReader Resource {resource!r} is not supported")
    key = arguments.get("Key")
    if not isinstance(key, str) or not key:
        raise _fail(f"ItemReader Key must be an object key, got {key!r}")
    blob = await blobs.get(f"{bucket}/{key}")
    if blob is None:
        raise _fail(f"no object {key!r} in bucket {bucket!r}")
    try:
        text = blob.data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _fail(f"{bucket}/{key} is not UTF-8 text: {error}") from None
    config = reader["ReaderConfig"]
    kind = config.get("InputType", "JSON")
    if kind == "JSON":
        return _json_array(text, f"{bucket}/{key}")
    if kind == "JSONL":
        return _json_lines(text, f"{bucket}/{key}")
    if kind == "CSV":
        return _csv_rows(text, config, f"{bucket}/{key}")
    raise _fail(f"ReaderConfig InputType {kind!r} is not supported")


def _json_array(text: str, where: str) -> list[Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise _fail(f"{where} is not JSON: {error}") from None
    if not isinstance(value, list):
        raise _fail(f"{where} must hold a JSON array, got {type(value).__name__}")
    return value


def _json_lines(text: str, where: str) -> list[Any]:
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue  # blank lines (a trailing newline) are no items
        try:
            items.append(json.loads(line))
        except ValueError as error:
            raise _fail(f"{where} line {number} is not JSON: {error}") from None
    return items


def _csv_rows(text: str, config: Mapping[str, Any], where: str) -> list[Any]:
    delimiter = _DELIMITERS.get(config.get("CSVDelimiter", "COMMA"))
    if delimiter is None:
        raise _fail(f"CSVDelimiter {config.get('CSVDelimiter')!r} is not supported")
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    location = config.get("CSVHeaderLocation", "FIRST_ROW")
    if location == "FIRST_ROW":
        if not rows:
            raise _fail(f"{where} has no header row")
        headers, rows = rows[0], rows[1:]
    elif location == "GIVEN":
        given = config.get("CSVHeaders")
        if not isinstance(given, list) or not all(isinstance(h, str) for h in given):
            raise _fail("CSVHeaderLocation GIVEN needs CSVHeaders, a list of strings")
        headers = given
    else:
        raise _fail(f"CSVHeaderLocation {location!r} is not FIRST_ROW or GIVEN")
    items = []
    for number, row in enumerate(rows, 1):
        if not row:
            continue
        if len(row) > len(headers):
            raise _fail(f"{where} row {number} has more fields than headers")
        # A short row leaves its missing trailing columns empty.
        items.append({header: row[i] if i < len(row) else "" for i, header in enumerate(headers)})
    return items


def transform(entries: Sequence[Mapping[str, Any]], transformation: str) -> list[Any]:
    """The child executions' descriptions ``entries`` as ``transformation`` lists them.

    NONE keeps the descriptions; COMPACT keeps a succeeded child's output
    (parsed from its JSON text); FLATTEN does too but splices an output that
    is an array into the list. A failed child stays its description whatever
    the transformation (the docs: as if Transformation were NONE).
    """
    if transformation == "NONE":
        return [dict(entry) for entry in entries]
    listed: list[Any] = []
    for entry in entries:
        if entry["Status"] != "SUCCEEDED":
            listed.append(dict(entry))
            continue
        output = json.loads(entry["Output"])
        if transformation == "FLATTEN" and isinstance(output, list):
            listed.extend(output)
        else:
            listed.append(output)
    return listed


def _encode(values: Sequence[Any], output_type: str) -> bytes:
    if output_type == "JSONL":
        return "".join(json.dumps(v, separators=(",", ":")) + "\n" for v in values).encode()
    return json.dumps(list(values), separators=(",", ":")).encode()


async def write_results(
    blobs: Blobs | None,
    writer: Mapping[str, Any],
    map_run_arn: str,
    entries: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Write the child executions' ``entries`` and the manifest; the Map state's result."""
    if blobs is None:
        raise StatesError("States.ResultWriterFailed", "no Blobs to write results to")
    arguments = writer["Arguments"]
    bucket = arguments.get("Bucket")
    if not isinstance(bucket, str) or not bucket or "/" in bucket:
        raise StatesError("States.ResultWriterFailed", f"Bucket {bucket!r} is not a bucket name")
    config = writer.get("WriterConfig") or {}
    transformation = config.get("Transformation", "NONE")
    output_type = config.get("OutputType", "JSON")
    suffix = "jsonl" if output_type == "JSONL" else "json"
    prefix = str(arguments.get("Prefix", "")).strip("/")
    run_id = map_run_arn.rsplit(":", 1)[-1]
    base = f"{prefix}/{run_id}" if prefix else run_id
    files: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
    for status in ("SUCCEEDED", "FAILED"):
        chosen = [e for e in entries if (e["Status"] == "SUCCEEDED") == (status == "SUCCEEDED")]
        if not chosen:
            continue
        key = f"{base}/{status}_0.{suffix}"
        data = _encode(transform(chosen, transformation), output_type)
        content_type = "application/jsonl" if output_type == "JSONL" else "application/json"
        await blobs.put(f"{bucket}/{key}", data, content_type=content_type)
        files[status].append({"Key": key, "Size": len(data)})
    manifest = {"DestinationBucket": bucket, "MapRunArn": map_run_arn, "ResultFiles": files}
    manifest_key = f"{base}/manifest.json"
    await blobs.put(
        f"{bucket}/{manifest_key}",
        json.dumps(manifest, separators=(",", ":")).encode(),
        content_type="application/json",
    )
    return {
        "MapRunArn": map_run_arn,
        "ResultWriterDetails": {"Bucket": bucket, "Key": manifest_key},
    }
