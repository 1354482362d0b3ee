"""The framing between the runtime and a worker process.

One frame is a 5-byte header — a big-endian unsigned 32-bit body length and
one byte of kind — followed by a JSON body. Payloads are JSON because
Lambda's are: a handler receives what ``json.loads`` gives and returns what
``json.dumps`` accepts. The framing is deliberately tiny: a warm invocation
is one frame each way over a Unix socket.

Frames:

* ``HELLO`` (worker → runtime, once): ``{"id": token, "pid": pid}``
* ``INVOKE`` (runtime → worker): ``{"r": request_id, "t": timeout_s, "p": payload,
  "k": [client, ...]}`` — ``k`` names the platform clients the runtime serves
  now, so the worker need not ask (``remote.available_clients``); it is sent
  only when it differs from the worker's last list, which holds until then
* ``RESULT`` (worker → runtime): the handler's return value
* ``ERROR`` (worker → runtime): Lambda's error shape ``{"errorType",
  "errorMessage", "stackTrace"}`` plus ``"retire": true`` when the worker
  must not be reused (after a ``MemoryError``)
* ``CALL`` (worker → runtime, during an invocation): a platform client call
  ``{"c": client, "m": method, "a": {arguments}}``, answered by
* ``REPLY`` (runtime → worker): ``{"ok": result}`` or ``{"error": {...}}``
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

__all__ = [
    "CALL",
    "ERROR",
    "HEADER",
    "HELLO",
    "INVOKE",
    "REPLY",
    "READ_SIZE",
    "RESULT",
    "FrameReader",
    "decode",
    "encode",
    "pop_frame",
    "read_frame",
]

HEADER = struct.Struct("!IB")
HELLO, INVOKE, RESULT, ERROR, CALL, REPLY = 1, 2, 3, 4, 5, 6
MAX_FRAME = 64 * 1024 * 1024  # a bound so that a corrupt header cannot ask for terabytes

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_loads = json.loads


def encode(kind: int, body: Any) -> bytes:
    """One frame carrying ``body`` as JSON."""
    data = _dumps(body).encode()
    return HEADER.pack(len(data), kind) + data


def decode(data: bytes | bytearray) -> Any:
    """A frame body back to Python values."""
    return _loads(data)


def read_frame(sock: socket.socket) -> tuple[int, Any] | None:
    """Read one frame from a blocking socket; None at end of stream."""
    header = _read_exactly(sock, HEADER.size)
    if header is None:
        return None
    length, kind = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
    body = _read_exactly(sock, length) if length else b""
    if body is None:
        return None
    return kind, decode(body)


class FrameReader:
    """Frames from a blocking socket, each read in as few system calls as it arrived in.

    :func:`read_frame` asks for the header and then the body, two ``recv``
    calls per frame; this asks for whatever is there, usually a whole frame,
    and keeps what follows it for the next :meth:`read`. A worker reads every
    frame of its socket through one of these (a buffered byte would be lost
    to any other reader).
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def read(self) -> tuple[int, Any] | None:
        """The next frame; None at end of stream."""
        buffer = self._buffer
        while not isinstance(frame := pop_frame(buffer), tuple):
            while len(buffer) < frame:
                chunk = self._sock.recv(max(READ_SIZE, frame - len(buffer)))
                if not chunk:
                    return None
                buffer += chunk
        return frame


# What one recv asks for at least: more than a typical frame, so one call reads it.
READ_SIZE = 64 * 1024


def pop_frame(buffer: bytearray) -> tuple[int, Any] | int:
    """The first frame of ``buffer``, taken out of it; or, while it has not all
    arrived, how many bytes the buffer must hold before asking again.

    A header announcing more than :data:`MAX_FRAME` raises ``ValueError``.
    Both ends read through this: :class:`FrameReader` (the worker's blocking
    socket) and ``sandbox.Connection`` (the runtime's non-blocking one).
    """
    if len(buffer) < HEADER.size:
        return HEADER.size
    length: int
    kind: int
    length, kind = HEADER.unpack_from(buffer)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
    end = HEADER.size + length
    if len(buffer) < end:
        return end
    body = buffer[HEADER.size : end]
    del buffer[:end]
    return kind, decode(body)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    buffer = bytearray()
    while len(buffer) < size:
        chunk = sock.recv(size - len(buffer))
        if not chunk:
            return None
        buffer += chunk
    return bytes(buffer)
