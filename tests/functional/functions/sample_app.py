"""An app whose functions misbehave on request, for the process-isolation tests."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from typing import Any

from reflow import App

app = App("sample")

# Module-level init: a forked worker inherits it instead of redoing it.
WARM = {"initialised_in": os.getpid()}


@app.function(isolation="process", timeout=5)
def echo(event: Any, context: Any) -> dict[str, Any]:
    """Answer with the event and a few context attributes."""
    return {
        "event": event,
        "pid": os.getpid(),
        "init_pid": WARM["initialised_in"],
        "function_name": context.function_name,
        "request_id": context.aws_request_id,
        "remaining": context.get_remaining_time_in_millis(),
        "memory": context.memory_limit_in_mb,
    }


@app.function(isolation="process", timeout=5)
async def echo_async(event: Any, context: Any) -> Any:
    """An async handler in a worker."""
    return {"async": event, "pid": os.getpid()}


@app.function(isolation="process", timeout=0.5)
def sleepy(event: Any, context: Any) -> str:
    """Sleep for event["seconds"]."""
    time.sleep(float(event["seconds"]))
    return "awake"


@app.function(isolation="process", timeout=5, memory_mb=64)
def hungry(event: Any, context: Any) -> int:
    """Allocate event["mb"] megabytes."""
    block = bytearray(int(event["mb"]) * 1024 * 1024)
    return len(block)


@app.function(isolation="process", timeout=5)
def misbehave(event: Any, context: Any) -> Any:
    """Crash the way the event says; otherwise answer with the pid."""
    how = event.get("how")
    if how == "exit":
        os._exit(1)
    if how == "segfault":
        ctypes.string_at(0)
    if how == "raise":
        raise ValueError("bad input: " + str(event.get("detail")))
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return {"pid": os.getpid()}


@app.function(isolation="process", timeout=5, provisioned=4)
def warm(event: Any, context: Any) -> int:
    """Hold the worker for event["hold"] seconds."""
    time.sleep(float(event.get("hold", 0)))
    return os.getpid()


@app.function(isolation="process", timeout=5, provisioned=4, reserved=4)
def capped(event: Any, context: Any) -> int:
    """Like warm, under a reserved concurrency of 4."""
    time.sleep(float(event.get("hold", 0)))
    return os.getpid()


@app.function(isolation="process", timeout=10, retries=2, on_success="flow:done")
def once_slow(event: Any, context: Any) -> int:
    """Hold the worker for a while the first time (while the marker file exists)."""
    marker = event["marker"]
    if os.path.exists(marker):
        os.unlink(marker)
        time.sleep(float(event["hold"]))
    return os.getpid()


@app.function(isolation="process", timeout=5, permissions=["blobs:write:site/*"])
def store(event: Any, context: Any) -> dict[str, Any]:
    """Write and read back an object through context.blobs (proxied to the runtime)."""
    key = event["key"]
    info = context.blobs.sync.put(key, event["text"].encode(), content_type="text/plain")
    blob = context.blobs.sync.get(key)
    listed = [i.key for i in context.blobs.sync.list("site/")]
    return {"etag": info.etag, "text": blob.data.decode(), "listed": listed}


@app.function(isolation="process", timeout=5)
async def store_async(event: Any, context: Any) -> Any:
    """The same through the async methods; then try a client that is not there."""
    await context.blobs.put(event["key"], b"\x00\xffbinary")
    head = await context.blobs.head(event["key"])
    missing = "none"
    try:
        _ = context.tables
    except Exception as exc:
        missing = type(exc).__name__
    return {"size": head.size, "missing": missing, "deleted": await context.blobs.delete("nope")}


@app.function(isolation="process", environment={"GREETING": "bonjour"})
def configured(event: Any, context: Any) -> str | None:
    """Read the function's environment, as a Lambda handler reads its variables."""
    return os.environ.get("GREETING")


@app.function(isolation="process", timeout=5)
async def emits(event: Any, context: Any) -> Any:
    """Use a client some subsystem registered, from a worker (async and sync)."""
    first = await context.events.put_events([{"source": "cms", "n": event["n"]}])
    second = context.events.sync.put_events([{"source": "cms", "n": event["n"] + 1}])
    return {"first": first, "second": second}
