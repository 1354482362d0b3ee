"""An app whose handlers put events from worker processes, for test_bus_process_events.py."""

from __future__ import annotations

import os
from typing import Any

from reflow import App, Event

app = App("busproc")
seen: list[dict[str, Any]] = []  # filled in the test's process by the inline rule below


@app.function(isolation="process", timeout=10)
def announce(event: dict[str, Any], context: Any) -> Any:
    """A synchronous worker handler: one event through ``put_sync``, one as an Event."""
    first = context.events.put_sync(
        {"source": "worker", "detail-type": "Announced", "detail": {"n": event["n"]}}
    )
    second = context.events.sync.put(
        [Event(source="worker", type="Announced", data={"n": event["n"] + 1})], bus="default"
    )
    return {"ids": first + second, "pid": os.getpid()}


@app.function(isolation="process", timeout=10)
async def announce_async(event: dict[str, Any], context: Any) -> Any:
    """An async worker handler awaiting ``put`` of an iterable of events on the audit bus."""
    entries = ({"source": "worker", "detail-type": "Audited", "detail": {"n": n}} for n in [1])
    ids = await context.events.put(entries, bus="audit")
    return {"ids": ids, "pid": os.getpid()}


@app.function(isolation="process", timeout=10)
def announce_bad(event: dict[str, Any], context: Any) -> Any:
    """Put an invalid event: the runtime's validation error comes back typed."""
    try:
        context.events.put_sync({"source": "worker", "detail-type": 5, "detail": {}})
    except Exception as exc:
        return {"type": type(exc).__name__, "message": str(exc)}
    return {"type": None}


@app.on({"source": ["worker"]}, name="collect")
def collect(event: dict[str, Any], context: Any) -> None:
    """Inline: records what the workers put, with the pid that delivered it."""
    seen.append({"event": event, "pid": os.getpid()})


@app.on({"source": ["worker"]}, name="collect-audit", bus="audit")
def collect_audit(event: dict[str, Any], context: Any) -> None:
    """Inline, on the audit bus."""
    seen.append({"event": event, "pid": os.getpid()})
