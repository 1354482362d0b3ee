"""Validation of a Distributed Map's ProcessorConfig, ItemReader and ResultWriter.

Called by :mod:`reflow.flows.validate` for every Map state; problems are
``(json path, message)`` pairs like the rest of validation. What is checked
follows the Step Functions docs (ItemReader (Map), ResultWriter (Map),
ItemProcessor): known fields only, the readers and writer reflow runs, the
InputType/CSV options and their values, MaxItems, the writer's field
combinations and WriterConfig values, and that a reader or writer comes with
``Mode: DISTRIBUTED``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reflow.flows import jsonata, paths
from reflow.flows.errors import PathSyntaxError
from reflow.flows.items import GET_OBJECT, LIST_OBJECTS, OUTPUT_TYPES, TRANSFORMATIONS
from reflow.flows.model import JSONATA

__all__ = ["PUT_OBJECT", "check_distributed"]

PUT_OBJECT = "arn:aws:states:::s3:putObject"
_INPUT_TYPES = {"JSON", "JSONL", "CSV"}
_HEADER_LOCATIONS = {"FIRST_ROW", "GIVEN"}
_DELIMITERS = {"COMMA", "PIPE", "SEMICOLON", "SPACE", "TAB"}
_READER_CONFIG = {"InputType", "CSVHeaderLocation", "CSVHeaders", "CSVDelimiter"}
_READER_CONFIG |= {"MaxItems", "MaxItemsPath"}

Problems = list[tuple[str, str]]


def check_distributed(state: Mapping[str, Any], path: str, language: str, found: Problems) -> None:
    """Append the problems of ``state``'s ProcessorConfig, ItemReader and ResultWriter."""
    processor = state.get("ItemProcessor")
    config = processor.get("ProcessorConfig") if isinstance(processor, Mapping) else None
    mode = "INLINE"
    if config is not None:
        where = f"{path}.ItemProcessor.ProcessorConfig"
        if not isinstance(config, Mapping):
            found.append((where, "must be an object"))
        else:
            mode = config.get("Mode", "INLINE")
            if mode not in ("INLINE", "DISTRIBUTED"):
                found.append((f"{where}.Mode", "must be INLINE or DISTRIBUTED"))
            kind = config.get("ExecutionType")
            if kind is not None and kind not in ("STANDARD", "EXPRESS"):
                found.append((f"{where}.ExecutionType", "must be STANDARD or EXPRESS"))
            if mode == "DISTRIBUTED" and kind is None:
                found.append((f"{where}.ExecutionType", "is required in DISTRIBUTED mode"))
            for key in config:
                if key not in ("Mode", "ExecutionType"):
                    found.append((f"{where}.{key}", f"unknown field {key!r}"))
    for field in ("ItemReader", "ResultWriter"):
        if field in state and mode != "DISTRIBUTED":
            found.append(
                (f"{path}.{field}", "needs ItemProcessor.ProcessorConfig.Mode DISTRIBUTED")
            )
    if "ItemReader" in state:
        _reader(state["ItemReader"], f"{path}.ItemReader", language, found)
    if "ResultWriter" in state:
        _writer(state["ResultWriter"], f"{path}.ResultWriter", language, found)


def _arguments(raw: Mapping[str, Any], where: str, language: str, found: Problems) -> None:
    wrong, right = (
        ("Parameters", "Arguments") if language == JSONATA else ("Arguments", "Parameters")
    )
    if wrong in raw:
        found.append((f"{where}.{wrong}", f"is not allowed here: use {right}"))
    value = raw.get(right)
    if (
        value is not None
        and not isinstance(value, Mapping)
        and not (language == JSONATA and jsonata.is_expression(value))
    ):
        found.append((f"{where}.{right}", "must be an object"))


def _reader(raw: Any, where: str, language: str, found: Problems) -> None:
    if not isinstance(raw, Mapping):
        found.append((where, "must be an object"))
        return
    for key in raw:
        if key not in ("Resource", "ReaderConfig", "Parameters", "Arguments"):
            found.append((f"{where}.{key}", f"unknown field {key!r}"))
    resource = raw.get("Resource")
    if resource not in (GET_OBJECT, LIST_OBJECTS):
        found.append((f"{where}.Resource", f"must be {GET_OBJECT} or {LIST_OBJECTS}"))
    _arguments(raw, where, language, found)
    config = raw.get("ReaderConfig", {})
    if not isinstance(config, Mapping):
        found.append((f"{where}.ReaderConfig", "must be an object"))
        return
    at = f"{where}.ReaderConfig"
    for key in config:
        if key not in _READER_CONFIG:
            found.append((f"{at}.{key}", f"unknown field {key!r}"))
    input_type = config.get("InputType")
    if input_type is not None and input_type not in _INPUT_TYPES:
        found.append((f"{at}.InputType", "must be JSON, JSONL or CSV"))
    if resource == LIST_OBJECTS and input_type is not None:
        found.append((f"{at}.InputType", "does not apply to listObjectsV2"))
    csv_fields = {"CSVHeaderLocation", "CSVHeaders", "CSVDelimiter"} & set(config)
    if csv_fields and input_type != "CSV":
        for key in sorted(csv_fields):
            found.append((f"{at}.{key}", "applies to InputType CSV only"))
    location = config.get("CSVHeaderLocation", "FIRST_ROW")
    if location not in _HEADER_LOCATIONS:
        found.append((f"{at}.CSVHeaderLocation", "must be FIRST_ROW or GIVEN"))
    headers = config.get("CSVHeaders")
    if location == "GIVEN" and not (
        isinstance(headers, list) and headers and all(isinstance(h, str) for h in headers)
    ):
        found.append((f"{at}.CSVHeaders", "must be a list of strings with CSVHeaderLocation GIVEN"))
    if location == "FIRST_ROW" and headers is not None:
        found.append((f"{at}.CSVHeaders", "is only allowed with CSVHeaderLocation GIVEN"))
    if config.get("CSVDelimiter", "COMMA") not in _DELIMITERS:
        found.append((f"{at}.CSVDelimiter", "must be COMMA, PIPE, SEMICOLON, SPACE or TAB"))
    _max_items(config, at, language, found)


def _max_items(config: Mapping[str, Any], at: str, language: str, found: Problems) -> None:
    if "MaxItems" in config and "MaxItemsPath" in config:
        found.append((at, "MaxItems and MaxItemsPath are mutually exclusive"))
    value = config.get("MaxItems")
    dynamic = language == JSONATA and jsonata.is_expression(value)
    if (
        value is not None
        and not dynamic
        and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
    ):
        found.append((f"{at}.MaxItems", "must be a non-negative integer"))
    if "MaxItemsPath" in config:
        if language == JSONATA:
            found.append((f"{at}.MaxItemsPath", "is a JSONPath field: use MaxItems"))
            return
        try:
            paths.compile_path(config["MaxItemsPath"])
        except (PathSyntaxError, TypeError, AttributeError) as error:
            found.append((f"{at}.MaxItemsPath", f"malformed path: {error}"))


def _writer(raw: Any, where: str, language: str, found: Problems) -> None:
    if not isinstance(raw, Mapping):
        found.append((where, "must be an object"))
        return
    for key in raw:
        if key not in ("Resource", "Parameters", "Arguments", "WriterConfig"):
            found.append((f"{where}.{key}", f"unknown field {key!r}"))
    # The docs' combinations: WriterConfig alone (nothing written), Resource with
    # Parameters/Arguments, or all three.
    if "Resource" in raw or "WriterConfig" not in raw:
        if raw.get("Resource") != PUT_OBJECT:
            found.append((f"{where}.Resource", f"must be {PUT_OBJECT}"))
        _arguments(raw, where, language, found)
    else:
        for key in ("Parameters", "Arguments"):
            if key in raw:
                found.append((f"{where}.{key}", "needs Resource"))
    if "WriterConfig" in raw:
        _writer_config(raw["WriterConfig"], f"{where}.WriterConfig", found)


def _writer_config(config: Any, at: str, found: Problems) -> None:
    if not isinstance(config, Mapping):
        found.append((at, "must be an object"))
        return
    for key in config:
        if key not in ("Transformation", "OutputType"):
            found.append((f"{at}.{key}", f"unknown field {key!r}"))
    if config.get("Transformation", "NONE") not in TRANSFORMATIONS:
        found.append((f"{at}.Transformation", "must be NONE, COMPACT or FLATTEN"))
    if config.get("OutputType", "JSON") not in OUTPUT_TYPES:
        found.append((f"{at}.OutputType", "must be JSON or JSONL"))
