"""The app of the fleet purge tests: one bucket behind the edge, and a function that purges.

``python -m tests.functional.edge.fleet_app BACKEND_URL DATA_DIR`` serves one
edge of it (membership TTL 2 s, renewed every 0.5 s) and prints
``ready <port> <edge id>``; SIGTERM stops it in order.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from reflow import App

app = App("fleet")
app.bucket("pages")
app.edge_origin("*", "bucket:pages", default_ttl=300)

MEMBER_TTL = 2.0


@app.function(timeout=10)
async def purge(event: dict[str, Any], context: Any) -> Any:
    """Purge through ``context.cache``; answer with what the fleet said."""
    result = await context.cache.purge(keys=event.get("keys", []), paths=event.get("paths", []))
    return {"total": int(result), "edges": dict(result.edges), "missing": list(result.missing)}


async def serve(url: str, data_dir: str) -> None:
    """Serve one edge over the backend at ``url`` until SIGTERM."""
    from reflow.backends import open_backend
    from reflow.edge.service import EdgeService

    backend = await open_backend(url, data_dir=Path(data_dir))
    service = EdgeService(
        app, backend, port=0, member_ttl=MEMBER_TTL, member_refresh=MEMBER_TTL / 4
    )
    await service.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"ready {service.port} {service.id}", flush=True)
    try:
        await stop.wait()
    finally:
        await service.stop()
        await backend.close()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
