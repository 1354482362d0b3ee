"""The inside of a ``process`` worker: receive an event, run the handler, answer.

A worker is born one of two ways. Normally the zygote (``zygote.py``) forks
it, so the app module is already imported and its module-level init already
done: the child only connects to the runtime's socket and waits for work.
For comparison, and where fork is not wanted, ``python -m
reflow.functions.worker TARGET FUNCTION SOCKET TOKEN`` starts a fresh
interpreter that imports the app itself (a cold start by spawning).

Either way the worker caps its address space (``RLIMIT_AS``), says hello with
its token and pid, then serves one invocation at a time until the runtime
closes the socket. A handler exception becomes Lambda's error shape; a
``MemoryError`` additionally asks the runtime to retire the worker, since a
process that ran out of memory is not trusted to run the next event.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import resource
import socket
import sys
import time
import traceback
from typing import Any

from reflow.app import FunctionConfig
from reflow.functions import wire
from reflow.functions.context import Context, log_stream_for
from reflow.functions.remote import PROBE, raise_remote

__all__ = ["connect", "limit_memory", "main", "serve"]

_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def limit_memory(memory_mb: int) -> None:
    """Cap the address space at what is mapped now plus ``memory_mb`` MiB.

    The image already mapped (interpreter, imported modules) is shared with
    the zygote through copy-on-write, so the handler's budget is counted on
    top of it; a handler that allocates past it gets ``MemoryError``.
    """
    with open("/proc/self/statm", encoding="ascii") as statm:
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
    limit = mapped + memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def connect(path: str, token: int) -> socket.socket:
    """Connect to the runtime's socket and introduce this worker."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(wire.encode(wire.HELLO, {"id": token, "pid": os.getpid()}))
    return sock


def serve(sock: socket.socket, function: FunctionConfig, region: str = "local") -> None:
    """Answer invocations on ``sock`` until it closes."""
    handler = function.handler
    log_stream = log_stream_for()  # one per execution environment, as in Lambda
    loop: asyncio.AbstractEventLoop | None = None
    # Built before any handler runs, so that reporting an out-of-memory error
    # does not itself need memory.
    out_of_memory = wire.encode(
        wire.ERROR,
        {
            "errorType": "MemoryError",
            "errorMessage": f"the handler ran out of memory (memory_mb={function.memory_mb})",
            "stackTrace": [],
            "retire": True,
        },
    )

    # The clients the runtime said it serves, in the last INVOKE frame that said.
    available: list[str] = []
    # Every frame of the socket is read through this one buffered reader.
    frames = wire.FrameReader(sock)

    def remote(client: str, method: str, args: dict[str, Any]) -> Any:
        if method == PROBE and client in available:
            # Answered from the frame: no round trip. Should the client stop
            # before it is called, the runtime refuses that call instead.
            return None
        sock.sendall(wire.encode(wire.CALL, {"c": client, "m": method, "a": args}))
        frame = frames.read()
        if frame is None:
            raise ConnectionError("the runtime closed the connection during a platform call")
        reply = frame[1]
        if "error" in reply:
            raise_remote(reply["error"])
        return reply["ok"]

    try:
        while True:
            frame = frames.read()
            if frame is None:
                return
            _, body = frame
            if "k" in body:  # sent when it changes; otherwise the last list holds
                available = body["k"]
            context = Context(
                function,
                request_id=body["r"],
                deadline=time.monotonic() + float(body["t"]),
                region=region,
                remote=remote,
                log_stream_name=log_stream,
            )
            try:
                result = handler(body["p"], context)
                if inspect.isawaitable(result):
                    if loop is None:
                        loop = asyncio.new_event_loop()
                    result = loop.run_until_complete(_awaited(result))
                answer = _encode_result(result)
            except MemoryError:
                answer = out_of_memory
            except Exception as exc:
                answer = wire.encode(wire.ERROR, error_shape(exc))
            sock.sendall(answer)
    finally:
        if loop is not None:
            loop.close()


async def _awaited(result: Any) -> Any:
    return await result


def _encode_result(result: Any) -> bytes:
    try:
        return wire.encode(wire.RESULT, result)
    except (TypeError, ValueError) as exc:
        # Lambda's name for a return value that cannot be serialised.
        return wire.encode(
            wire.ERROR,
            {
                "errorType": "Runtime.MarshalError",
                "errorMessage": f"Unable to marshal response: {exc}",
                "stackTrace": [],
            },
        )


def error_shape(exc: BaseException) -> dict[str, Any]:
    """Lambda's ``{"errorType", "errorMessage", "stackTrace"}`` for an exception."""
    # The runtime's own frames (this module, the pools) are noise to the
    # handler's author; Lambda shows only the function's.
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(_RUNTIME_DIR)
    ]
    return {
        "errorType": type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": [line.rstrip("\n") for line in traceback.format_list(frames)],
    }


def main(argv: list[str] | None = None) -> None:
    """Spawned worker: import the app, connect, serve (``TARGET FUNCTION SOCKET TOKEN MB``)."""
    from reflow.loader import load_app

    target, name, path, token, memory_mb = argv or sys.argv[1:6]
    function = load_app(target).functions[name]
    sock = connect(path, int(token))
    limit_memory(int(memory_mb))
    with contextlib.closing(sock):
        serve(sock, function)


if __name__ == "__main__":
    main()
