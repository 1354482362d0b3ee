"""The Map state: items, ItemSelector, ItemBatcher, concurrency and tolerated failures.

:func:`fan_out` turns a Map state and its input into a :class:`Branches`
action (one :class:`Child` per item or batch); :func:`gather` turns the
children's outcomes back into the state's result, or the failure that counts.
Parallel states use :func:`gather` too.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from reflow.flows import jsonata, paths, templates
from reflow.flows.actions import Branches, Child, Cursor, Distributed, Failure, Outcome, Result
from reflow.flows.errors import (
    EXCEED_TOLERATED_FAILURE,
    QUERY_EVALUATION_ERROR,
    StatesError,
    StatesRuntimeError,
)
from reflow.flows.model import UNSET, MapState

__all__ = ["expand", "fan_out", "gather"]


def _states(cursor: Cursor, context: Mapping[str, Any]) -> dict[str, Any]:
    return {"input": cursor.input, "context": context}


def gather(action: Branches, outcomes: Sequence[Outcome]) -> Outcome:
    """The outcome of a set of branches: their outputs in order, or the failure that counts.

    Without a tolerance the first failure fails the whole; with
    ``ToleratedFailureCount``/``Percentage`` the failures are counted, failed
    iterations appear as their error output, and only exceeding the
    threshold fails (``States.ExceedToleratedFailureThreshold``).
    """
    failures = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, Failure)]
    if not failures:
        return Result([o.value for o in outcomes if isinstance(o, Result)])
    if action.tolerated_count is None and action.tolerated_percentage is None:
        first = failures[0][1]
        return first
    count = len(failures)
    over_count = action.tolerated_count is not None and count > action.tolerated_count
    over_share = action.tolerated_percentage is not None and (
        count * 100.0 / max(1, len(outcomes)) > action.tolerated_percentage
    )
    if over_count or over_share:
        return Failure(
            EXCEED_TOLERATED_FAILURE,
            f"{count} of {len(outcomes)} items failed, over the tolerated threshold",
        )
    return Result(
        [
            o.value if isinstance(o, Result) else {"Error": o.error, "Cause": o.cause}
            for o in outcomes
        ]
    )


def fan_out(
    state: MapState, cursor: Cursor, context: Mapping[str, Any], effective: Any
) -> Branches:
    """The children of a Map state: one per item (or batch) of its selected array.

    A Distributed Map (``ProcessorConfig.Mode`` DISTRIBUTED, or an
    ItemReader/ResultWriter) has no children yet: the returned action carries
    a :class:`Distributed` for the executor, which reads the items and calls
    :func:`expand`.
    """
    config = (state.processor.definition.get("ProcessorConfig") if state.processor else None) or {}
    distributed = (
        config.get("Mode") == "DISTRIBUTED"
        or state.item_reader is not None
        or state.result_writer is not None
    )
    items = None
    if state.item_reader is None:
        items = _items(state, cursor, context, effective)
    action = Branches(
        "Map",
        (),
        max_concurrency=_map_number(
            state, state.max_concurrency, state.max_concurrency_path, effective, cursor, context
        )
        or 0,
        tolerated_count=_map_number(
            state,
            state.tolerated_failure_count,
            state.tolerated_failure_count_path,
            effective,
            cursor,
            context,
        ),
        tolerated_percentage=_map_number(
            state,
            state.tolerated_failure_percentage,
            state.tolerated_failure_percentage_path,
            effective,
            cursor,
            context,
        ),
    )
    if not distributed:
        assert items is not None
        return dataclasses.replace(
            action, children=_children(state, cursor, context, effective, items, True)
        )
    reader = None
    max_items = None
    if state.item_reader is not None:
        reader = _resolve_io(state, state.item_reader, cursor, context, effective)
        reader_config = state.item_reader.get("ReaderConfig") or {}
        max_items = _map_number(
            state,
            reader_config.get("MaxItems", UNSET),
            reader_config.get("MaxItemsPath"),
            effective,
            cursor,
            context,
        )
    writer = None
    if state.result_writer is not None:
        writer = _resolve_io(state, state.result_writer, cursor, context, effective)
    if action.tolerated_count is None and action.tolerated_percentage is None:
        # A Map Run tolerates no failed child unless told otherwise.
        action = dataclasses.replace(action, tolerated_count=0)
    return dataclasses.replace(
        action,
        distributed=Distributed(
            reader,
            int(max_items) if max_items else None,
            writer,
            str(config.get("ExecutionType", "STANDARD")),
            state,
            cursor,
            context,
            effective,
            items,
        ),
    )


def expand(action: Branches, items: list[Any]) -> Branches:
    """A Distributed Map's action with its children, once the executor read ``items``.

    MaxItems, ItemSelector and ItemBatcher apply as for an inline Map; the
    children do not see the parent's variables (they are executions of
    their own).
    """
    source = action.distributed
    assert source is not None
    if source.max_items:
        items = items[: source.max_items]
    children = _children(
        source.state, source.cursor, source.context, source.effective, items, False
    )
    return dataclasses.replace(action, children=children)


def _items(state: MapState, cursor: Cursor, context: Mapping[str, Any], effective: Any) -> Any:
    if state.jsonata:
        states = _states(cursor, context)
        items = (
            jsonata.evaluate_template(state.items, states, cursor.variables)
            if state.items is not UNSET
            else cursor.input
        )
    else:
        items = paths.evaluate(state.items_path, effective, context, cursor.variables)
    if not isinstance(items, list):
        problem = f"Map state '{state.name}' needs an array of items, got {json.dumps(items)[:80]}"
        if state.jsonata:
            raise StatesError(QUERY_EVALUATION_ERROR, problem)
        raise StatesRuntimeError(problem)
    return items


def _children(
    state: MapState,
    cursor: Cursor,
    context: Mapping[str, Any],
    effective: Any,
    items: list[Any],
    inherit: bool,
) -> tuple[Child, ...]:
    selected = [
        _select_item(state, cursor, context, effective, index, item)
        for index, item in enumerate(items)
    ]
    selected = _batch(state, selected, effective, cursor, context)
    assert state.processor is not None
    variables = cursor.variables if inherit else {}
    return tuple(
        Child(state.processor, item, variables, index) for index, item in enumerate(selected)
    )


def _resolve_io(
    state: MapState,
    raw: Mapping[str, Any],
    cursor: Cursor,
    context: Mapping[str, Any],
    effective: Any,
) -> dict[str, Any]:
    """An ItemReader/ResultWriter with its Parameters (JSONPath) or Arguments (JSONata) resolved."""
    if state.jsonata:
        arguments = jsonata.evaluate_template(
            raw.get("Arguments", {}), _states(cursor, context), cursor.variables
        )
    else:
        arguments = templates.render(
            raw.get("Parameters", {}), effective, context, cursor.variables
        )
    if not isinstance(arguments, dict):
        raise StatesRuntimeError(
            f"Map state '{state.name}': reader/writer arguments must be an object"
        )
    return {
        "Resource": raw.get("Resource", ""),
        "ReaderConfig": dict(raw.get("ReaderConfig") or {}),
        "WriterConfig": dict(raw.get("WriterConfig") or {}),
        "Arguments": arguments,
    }


def _map_number(
    state: MapState,
    value: Any,
    path: str | None,
    effective: Any,
    cursor: Cursor,
    context: Mapping[str, Any],
) -> Any:
    if path is not None:
        value = paths.evaluate(path, effective, context, cursor.variables)
    elif state.jsonata and jsonata.is_expression(value):
        value = jsonata.evaluate(value, _states(cursor, context), cursor.variables)
    if value is UNSET or value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise StatesRuntimeError(f"Map state '{state.name}': {value!r} is not a valid number")
    return value


def _select_item(
    state: MapState,
    cursor: Cursor,
    context: Mapping[str, Any],
    effective: Any,
    index: int,
    item: Any,
) -> Any:
    if state.item_selector is UNSET:
        return item
    item_context = {**context, "Map": {"Item": {"Index": index, "Value": item}}}
    if state.jsonata:
        states = _states(cursor, item_context)
        return jsonata.evaluate_template(state.item_selector, states, cursor.variables)
    return templates.render(state.item_selector, effective, item_context, cursor.variables)


def _batch(
    state: MapState, items: list[Any], effective: Any, cursor: Cursor, context: Mapping[str, Any]
) -> list[Any]:
    batcher = state.item_batcher
    if not batcher:
        return items
    most = batcher.get("MaxItemsPerBatch")
    if "MaxItemsPerBatchPath" in batcher:
        most = paths.evaluate(batcher["MaxItemsPerBatchPath"], effective, context, cursor.variables)
    limit = batcher.get("MaxInputBytesPerBatch")
    if "MaxInputBytesPerBatchPath" in batcher:
        limit = paths.evaluate(
            batcher["MaxInputBytesPerBatchPath"], effective, context, cursor.variables
        )
    batch_input = batcher.get("BatchInput")
    if batch_input is not None and not state.jsonata:
        batch_input = templates.render(batch_input, effective, context, cursor.variables)
    elif batch_input is not None:
        batch_input = jsonata.evaluate_template(
            batch_input, _states(cursor, context), cursor.variables
        )
    batches: list[list[Any]] = []
    size = 0
    for item in items:
        item_size = len(json.dumps(item, separators=(",", ":")))
        full = batches and (
            (most is not None and len(batches[-1]) >= most)
            or (limit is not None and size + item_size > limit)
        )
        if not batches or full:
            batches.append([])
            size = 0
        batches[-1].append(item)
        size += item_size
    out: list[Any] = []
    for batch in batches:
        entry: dict[str, Any] = {"Items": batch}
        if batch_input is not None:
            entry["BatchInput"] = batch_input
        out.append(entry)
    return out
