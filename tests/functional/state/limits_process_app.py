"""An app whose handlers use ``context.limits`` from worker processes (test_limits_process.py)."""

from __future__ import annotations

from typing import Any

from reflow import App

app = App("limitsproc")


@app.function(isolation="process", timeout=10, permissions=["limits:hit:limit/ip:*"])
async def throttle(event: dict[str, Any], context: Any) -> Any:
    """An async worker handler: one rate-limit hit, awaited through the proxy."""
    decision = await context.limits.hit(f"ip:{event['ip']}", rate="2/minute")
    return {"allowed": decision["allowed"], "remaining": decision["remaining"]}


@app.function(isolation="process", timeout=10, permissions=["limits:write:counter/stock:*"])
def reserve(event: dict[str, Any], context: Any) -> Any:
    """A synchronous worker handler: counters through ``context.limits.sync``."""
    return context.limits.sync.incr("stock:sku-1", event["n"])
