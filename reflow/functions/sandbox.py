"""The runtime's side of process isolation: the zygote and its workers.

:class:`Zygote` starts ``python -m reflow.functions.zygote`` (a fresh,
single-threaded interpreter that imports the app once) and listens on a Unix
socket in a private temporary folder. Asking it for a worker writes one JSON
line to the zygote; the zygote forks, and the child connects to the socket
and says hello with the request's token. The zygote, being the parent, reaps
every worker and reports how it ended, which is how a crash is explained
("killed by SIGSEGV", "exited with status 1").

:class:`Worker` is one connected worker: :meth:`Worker.call` sends one
framed invocation and waits for the one frame that answers it.

The runtime's end of each worker's socket is a :class:`Connection`: a raw
non-blocking socket read with ``loop.sock_recv`` and written with
``loop.sock_sendall``, not an asyncio stream. Both try the system call at
once and wait on the selector only when it would block, so a frame that is
already there costs one ``recv`` and no trip through the event loop; a
stream's protocol callbacks and waiter futures cost ~17 µs more per frame
with both processes on one CPU (docs/functions.md), and a warm invocation is
two frames, each platform call two more.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from reflow.errors import FunctionError
from reflow.functions import wire
from reflow.functions.remote import available_clients

__all__ = ["Connection", "SandboxError", "Worker", "Zygote"]

_log = logging.getLogger("reflow.functions")

START_TIMEOUT = 60.0  # importing a heavy app on a loaded machine can take a while
# How long accepting pauses after a failed accept (out of file descriptors),
# as asyncio's own servers do, rather than spinning on the error.
ACCEPT_RETRY = 1.0


class SandboxError(FunctionError):
    """The zygote could not start, or could not give a worker."""

    def __init__(self, target: str, problem: str) -> None:
        self.target = target
        self.problem = problem
        super().__init__(f"process sandbox for {target!r}: {problem}")


class Connection:
    """The runtime's end of a worker's socket: whole frames in, whole frames out.

    :meth:`read` asks the socket for whatever is there, usually a whole
    frame in one ``recv``, and keeps what follows it for the next read (like
    :class:`wire.FrameReader` on the worker's side). End of stream, a reset
    and a corrupt header all raise :class:`ConnectionError`: the worker is
    gone or cannot be trusted, which is what its caller needs to know.

    :meth:`close` may come while a read or a write waits on the selector (a
    pool closing with calls in flight): the socket is shut down at once,
    which wakes that wait with end of stream, and its descriptor is closed
    when the wait has ended, never while the event loop still watches it.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._waits = 0  # reads and writes waiting on the selector
        self._closing = False

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closing

    async def read(self) -> tuple[int, Any]:
        """The next frame, as (kind, body)."""
        buffer = self._buffer
        while True:
            try:
                frame = wire.pop_frame(buffer)
            except ValueError as exc:
                raise ConnectionError(f"the stream is corrupt: {exc}") from None
            if isinstance(frame, tuple):
                return frame
            await self._fill(frame)

    async def _fill(self, size: int) -> None:
        buffer = self._buffer
        while len(buffer) < size:
            if self._closing:
                raise ConnectionError("the connection is closed")
            self._waits += 1
            try:
                chunk = await self._loop.sock_recv(
                    self._sock, max(wire.READ_SIZE, size - len(buffer))
                )
            finally:
                self._done_waiting()
            if not chunk:
                raise ConnectionError("the worker closed its connection")
            buffer += chunk

    async def send(self, frame: bytes) -> None:
        """Write one encoded frame (at once, unless the socket's buffer is full)."""
        if self._closing:
            raise ConnectionError("the connection is closed")
        self._waits += 1
        try:
            await self._loop.sock_sendall(self._sock, frame)
        finally:
            self._done_waiting()

    def at_eof(self) -> bool:
        """Whether the worker has closed its end (a peek: nothing is consumed)."""
        if self._closing:
            return True
        if self._buffer:
            return False
        try:
            return not self._sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return False  # open, with nothing to read: an idle worker
        except OSError:
            return True  # reset

    def close(self) -> None:
        """Shut the socket (the worker sees end of stream); release it once unwatched."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        if not self._waits:
            self._sock.close()

    def _done_waiting(self) -> None:
        self._waits -= 1
        if self._closing and not self._waits:
            self._sock.close()


class Worker:
    """One live worker process, connected over a Unix socket."""

    def __init__(self, pid: int, connection: Connection, *, init_seconds: float) -> None:
        self.pid = pid
        self.connection = connection
        self.init_seconds = init_seconds
        self.invocations = 0
        self.last_used = 0.0  # on the runtime's clock, set by the pool
        self.told: list[str] = []  # the clients the worker was last told are served

    async def call(
        self,
        request_id: str,
        timeout: float,
        payload: Any,
        on_call: Callable[[Any], Awaitable[Any]] | None = None,
    ) -> tuple[int, Any]:
        """Send one invocation and wait for its answer frame.

        Platform calls the handler makes meanwhile (``CALL`` frames) are
        answered with ``on_call``'s result.
        """
        frame: dict[str, Any] = {"r": request_id, "t": timeout, "p": payload}
        # The clients the worker may take as served without probing, sent
        # only when they differ from what this worker was last told (it
        # keeps the last list), so a steady state costs the frame nothing.
        available = available_clients() if on_call is not None else []
        if available != self.told:
            frame["k"] = self.told = available
        connection = self.connection
        await connection.send(wire.encode(wire.INVOKE, frame))
        while True:
            kind, body = await connection.read()
            if kind != wire.CALL:
                self.invocations += 1
                return kind, body
            if on_call is None:
                # The fields let the worker raise the same NotAvailableError as inline.
                client = str(body.get("c", "platform")) if isinstance(body, dict) else "platform"
                reason = "this invocation has no platform clients (no runtime to serve them)"
                reply: Any = {
                    "error": {
                        "type": "NotAvailableError",
                        "message": f"{client}: {reason}",
                        "fields": {"client": client, "reason": reason},
                    }
                }
            else:
                reply = await on_call(body)
            await connection.send(wire.encode(wire.REPLY, reply))

    def kill(self) -> None:
        """SIGKILL the worker (a timeout, or a worker in an unknown state)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)

    def at_eof(self) -> bool:
        """Whether the worker's end of the socket is closed (it died, or was killed)."""
        return self.connection.at_eof()

    async def close(self) -> None:
        """Close the socket; a healthy worker exits when it sees end of stream."""
        self.connection.close()

    def __repr__(self) -> str:
        return f"Worker(pid={self.pid}, invocations={self.invocations})"


class Zygote:
    """A warm parent process for one app, and the socket its workers dial."""

    def __init__(self, target: str, *, python: str = sys.executable) -> None:
        self.target = target
        self.python = python
        self.pid: int | None = None
        self.init_ms = 0.0
        self._tokens = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Worker]] = {}
        self._asked_at: dict[int, float] = {}
        self._exits: dict[int, asyncio.Future[str]] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._greeting: set[asyncio.Task[None]] = set()
        self._control: asyncio.Task[None] | None = None
        self._pid_tokens: dict[int, int] = {}
        self._restarting = asyncio.Lock()
        self._folder = ""
        self._path = ""
        self.restarts = 0

    async def start(self) -> None:
        """Start the zygote and wait until it has imported the app."""
        self._folder = tempfile.mkdtemp(prefix="reflow-fn-")
        self._path = os.path.join(self._folder, "workers.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self._path)
            listener.listen(128)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._accepting = asyncio.create_task(self._accept(listener))
        try:
            await self._start_process()
        except BaseException:
            await self.close()
            raise

    @property
    def running(self) -> bool:
        """Whether the zygote process is alive and reading requests."""
        process = self._process
        return (
            process is not None
            and process.returncode is None
            and self._control is not None
            and not self._control.done()
        )

    async def _start_process(self) -> None:
        env = dict(os.environ)
        # The zygote must find the same modules as this process (tests, src layouts).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        process = self._process = await asyncio.create_subprocess_exec(
            self.python,
            "-m",
            "reflow.functions.zygote",
            self.target,
            self._path,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            # Out of the terminal's process group: Ctrl-C stops the server,
            # which then shuts the zygote and its workers down in order,
            # instead of killing in-flight invocations on the spot.
            start_new_session=True,
        )
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
        except TimeoutError:
            raise SandboxError(self.target, "the zygote did not start in time") from None
        message = json.loads(line) if line else {"op": "error", "message": "it exited"}
        if message.get("op") != "ready":
            raise SandboxError(self.target, f"the zygote failed: {message.get('message')}")
        self.pid = int(message["pid"])
        self.init_ms = float(message["init_ms"])
        self._control = asyncio.create_task(self._read_control())

    async def _ensure_running(self) -> None:
        """Restart a zygote that died (the OOM killer, an operator's kill)."""
        if self.running:
            return
        async with self._restarting:
            if self.running or self._listener is None:
                return
            await self._stop_process()
            self.restarts += 1
            await self._start_process()

    async def new_worker(self, function: str, *, spawn: bool = False) -> Worker:
        """A fresh worker for ``function``: forked (or, with ``spawn``, a new interpreter)."""
        if self._listener is None:
            raise SandboxError(self.target, "the sandbox is closed")
        await self._ensure_running()
        process = self._process
        assert process is not None and process.stdin is not None
        token = next(self._tokens)
        future: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        self._asked_at[token] = time.perf_counter()
        request = {"op": "spawn" if spawn else "fork", "id": token, "function": function}
        process.stdin.write(json.dumps(request).encode() + b"\n")
        try:
            return await asyncio.wait_for(future, START_TIMEOUT)
        except TimeoutError:
            raise SandboxError(self.target, f"no worker for {function!r} in time") from None
        finally:
            self._waiting.pop(token, None)
            self._asked_at.pop(token, None)

    async def exit_cause(self, pid: int, timeout: float = 2.0) -> str | None:
        """How worker ``pid`` ended, once the zygote has reaped it (None if unknown)."""
        future = self._exit_future(pid)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return None

    def _exit_future(self, pid: int) -> asyncio.Future[str]:
        future = self._exits.get(pid)
        if future is None:
            future = self._exits[pid] = asyncio.get_running_loop().create_future()
        return future

    async def _accept(self, listener: socket.socket) -> None:
        """Take workers' connections until the sandbox closes; each is greeted on its own."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError:
                _log.exception("the process sandbox for %s could not accept", self.target)
                await asyncio.sleep(ACCEPT_RETRY)
                continue
            task = asyncio.create_task(self._greet(Connection(sock)))
            self._greeting.add(task)
            task.add_done_callback(self._greeting.discard)

    async def _greet(self, connection: Connection) -> None:
        """Read a new connection's HELLO and hand the worker to whoever asked for it."""
        try:
            _, hello = await connection.read()
        except ConnectionError:
            connection.close()  # it died before it said hello
            return
        except BaseException:
            connection.close()  # the sandbox is closing
            raise
        token = int(hello["id"])
        future = self._waiting.get(token)
        if future is None or future.done():
            connection.close()  # nobody waits for it any more: the worker exits
            return
        asked = self._asked_at.get(token, time.perf_counter())
        future.set_result(
            Worker(int(hello["pid"]), connection, init_seconds=time.perf_counter() - asked)
        )

    async def _read_control(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        while line := await stdout.readline():
            message = json.loads(line)
            op = message.get("op")
            if op == "forked":
                self._pid_tokens[int(message["pid"])] = int(message["id"])
            elif op == "exit":
                pid = int(message["pid"])
                token = self._pid_tokens.pop(pid, None)
                waiting = self._waiting.get(token) if token is not None else None
                if waiting is not None and not waiting.done():
                    problem = f"the worker {message['cause']} before it connected"
                    waiting.set_exception(SandboxError(self.target, problem))
                future = self._exit_future(pid)
                if not future.done():
                    future.set_result(str(message["cause"]))
                # Keep only recent causes: a long-running server reaps thousands.
                if len(self._exits) > 1024:
                    for old in list(self._exits)[:512]:
                        if self._exits[old].done():
                            del self._exits[old]
            elif op == "error" and message.get("id") is not None:
                future_worker = self._waiting.get(int(message["id"]))
                if future_worker is not None and not future_worker.done():
                    future_worker.set_exception(SandboxError(self.target, message["message"]))
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(SandboxError(self.target, "the zygote exited"))

    async def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.stdin is not None:
                process.stdin.close()  # the zygote's cue to kill its workers and exit
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._control is not None:
            with contextlib.suppress(Exception):
                await self._control
            self._control = None

    async def close(self) -> None:
        """Stop the zygote (which kills its workers) and remove the socket."""
        await self._stop_process()
        tasks = list(self._greeting)
        if self._accepting is not None:
            tasks.append(self._accepting)
            self._accepting = None
        for task in tasks:
            task.cancel()
        # Each has closed what it held by the time it ends (nothing is watched any more).
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for future in self._exits.values():
            if not future.done():
                future.cancel()
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = ""
