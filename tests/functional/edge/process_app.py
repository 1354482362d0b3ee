"""An app whose edge functions run in worker processes, for test_runtime_hooks.py."""

from __future__ import annotations

import os
import time
from typing import Any

from reflow import App

app = App("edgeproc")
app.bucket("pages")
app.edge_origin("*", "bucket:pages", default_ttl=300)


@app.edge("viewer-response", path="/*")
@app.function(isolation="process", timeout=5)
def stamp_pid(event: dict[str, Any], context: Any) -> Any:
    """Tag the response with the worker's pid and the function's request id."""
    response = event["Records"][0]["cf"]["response"]
    response["headers"]["x-worker-pid"] = [{"key": "X-Worker-Pid", "value": str(os.getpid())}]
    response["headers"]["x-request-id"] = [{"key": "X-Request-Id", "value": context.aws_request_id}]
    return response


@app.edge("viewer-request", path="/inline/*")
def inline_tag(event: dict[str, Any], context: Any) -> Any:
    """An inline hook: stays in the server process, on the synchronous hit path."""
    request = event["Records"][0]["cf"]["request"]
    request["headers"]["x-inline-pid"] = [{"key": "X-Inline-Pid", "value": str(os.getpid())}]
    return request


@app.edge("viewer-request", path="/crash/*")
@app.function(isolation="process", timeout=5)
def crash(event: dict[str, Any], context: Any) -> Any:
    """Kill the worker: the edge must answer a 5xx, not hang."""
    os._exit(3)


@app.edge("viewer-request", path="/slow/*")
@app.function(isolation="process", timeout=1)
def slow(event: dict[str, Any], context: Any) -> Any:
    """Sleep past its 1 s timeout (the worker is killed at it)."""
    time.sleep(60)
    return event["Records"][0]["cf"]["request"]


@app.function(isolation="process", timeout=5)
def purge_from_worker(event: dict[str, Any], context: Any) -> Any:
    """Purge through the proxied ``context.cache`` of a worker process."""
    return context.cache.sync.purge(keys=event.get("keys", []), paths=event.get("paths", []))


@app.function(timeout=5)
async def purge_inline(event: dict[str, Any], context: Any) -> Any:
    """Purge from an inline async handler."""
    return await context.cache.purge(keys=event.get("keys", []), paths=event.get("paths", []))


@app.function(timeout=5)
def purge_inline_sync(event: dict[str, Any], context: Any) -> Any:
    """Purge from an inline synchronous handler (it runs on a handler thread)."""
    return context.cache.purge_sync(paths=event["paths"], soft=True)
