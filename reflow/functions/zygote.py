"""The zygote: a warm, single-threaded parent that forks workers on request.

Run as ``python -m reflow.functions.zygote TARGET SOCKET`` by the runtime
(``sandbox.py``), it imports the app module once — paying the interpreter
start, the imports and the module-level init a single time — then waits for
requests on stdin. A cold start is then an ``os.fork()`` of this warm
process: the child inherits everything already imported and only connects
to the runtime's socket.

Why a separate process: ``fork()`` copies one thread and every lock in
whatever state it was, so forking the server (an asyncio loop, thread pools,
open connections) is unsafe. The zygote never starts a thread or an event
loop, so its children start clean.

The control protocol is JSON lines. In: ``{"op": "fork"|"spawn", "id": N,
"function": NAME}``. Out: ``{"op": "ready"}`` once, ``{"op": "forked", "id": N,
"pid": P}`` per worker, ``{"op": "exit", "pid": P, "cause": TEXT}`` when a worker
ends (the zygote is the parent that reaps them, so it reports how each died),
``{"op": "error", ...}`` when a request cannot be served. When stdin closes
the zygote kills its workers and exits.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import selectors
import signal
import sys
import time
from typing import Any

__all__ = ["describe_status", "main"]


def describe_status(status: int) -> str:
    """A wait status in words: ``exited with status 1``, ``killed by SIGSEGV``."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by {name}"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"ended with wait status {status}"


class _Zygote:
    def __init__(self, target: str, socket_path: str) -> None:
        self.target = target
        self.socket_path = socket_path
        self.children: set[int] = set()
        self.out = sys.stdout.buffer

    def send(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message).encode() + b"\n")
        self.out.flush()

    def run(self) -> None:
        started = time.perf_counter()
        # Everything a worker needs is imported here, once, so that a fork
        # inherits it instead of importing it (asyncio alone costs ~20 ms).
        from reflow.functions import worker  # noqa: F401
        from reflow.loader import load_app

        try:
            self.app = load_app(self.target)
        except Exception as exc:
            self.send({"op": "error", "id": None, "message": f"{type(exc).__name__}: {exc}"})
            raise SystemExit(1) from None
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_write)
        self.wake_fds = (wake_read, wake_write)
        # Move everything imported so far out of the collector's reach: a
        # collection in a child would otherwise write to (and so copy) every
        # page of inherited objects, which is most of a cold start's cost.
        gc.freeze()
        self.send({"op": "ready", "pid": os.getpid(), "init_ms": _ms(started)})
        selector = selectors.DefaultSelector()
        selector.register(0, selectors.EVENT_READ, "control")
        selector.register(wake_read, selectors.EVENT_READ, "child")
        pending = b""
        try:
            while True:
                for key, _ in selector.select():
                    if key.data == "child":
                        os.read(wake_read, 4096)
                        self.reap()
                        continue
                    chunk = os.read(0, 65536)
                    if not chunk:
                        return
                    pending += chunk
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        self.handle(json.loads(line))
                # A child may end between select() calls without a wake-up byte
                # surviving (the pipe is drained above), so reap on every turn.
                self.reap()
        finally:
            for pid in self.children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send({"op": "exit", "pid": pid, "cause": describe_status(status)})

    def handle(self, request: dict[str, Any]) -> None:
        name = request["function"]
        function = self.app.functions.get(name)
        if function is None:
            self.send({"op": "error", "id": request["id"], "message": f"no function {name!r}"})
            return
        try:
            if request["op"] == "spawn":
                pid = self.spawn(request, function.memory_mb, dict(function.environment))
            else:
                pid = os.fork()
                if pid == 0:
                    self.become_worker(request["id"], function)
        except OSError as exc:  # EAGAIN, ENOMEM: refuse this one, keep serving
            self.send({"op": "error", "id": request["id"], "message": f"fork failed: {exc}"})
            return
        self.children.add(pid)
        self.send({"op": "forked", "id": request["id"], "pid": pid})

    def spawn(self, request: dict[str, Any], memory_mb: int, environment: dict[str, str]) -> int:
        argv = [
            sys.executable,
            "-m",
            "reflow.functions.worker",
            self.target,
            request["function"],
            self.socket_path,
            str(request["id"]),
            str(memory_mb),
        ]
        env = {**os.environ, **environment}
        return os.posix_spawn(sys.executable, argv, env)

    def become_worker(self, token: int, function: Any) -> None:
        """The child's side of the fork: never returns."""
        code = 0
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in self.wake_fds:
                os.close(fd)
            # The control pipes belong to the zygote; the handler's prints go to stderr.
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
            os.dup2(2, 1)
            os.environ.update(function.environment)
            from reflow.functions import worker  # already imported by run()

            sock = worker.connect(self.socket_path, token)
            worker.limit_memory(function.memory_mb)
            worker.serve(sock, function)
        except SystemExit as exc:  # a handler called sys.exit(): keep its status
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            code = 70
        finally:
            os._exit(code)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def main(argv: list[str] | None = None) -> None:
    """Import the app named by ``TARGET`` and serve fork requests for ``SOCKET``."""
    target, socket_path = (argv or sys.argv[1:3])[:2]
    _Zygote(target, socket_path).run()


if __name__ == "__main__":
    main()
