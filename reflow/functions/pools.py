"""Where a function's invocations run: inline, or in a pool of worker processes.

Both pools share one shape — ``invoke(payload, request_id, wait=...)`` — and
one :class:`Gate` that enforces ``reserved`` concurrency: over the cap a
synchronous call (``wait=False``) is refused with :class:`ThrottledError`,
an asynchronous one (``wait=True``) waits its turn.

* :class:`InlinePool` runs the handler in the server's own process.
  ``async def`` handlers are awaited under ``asyncio.timeout``; synchronous
  ones run on a small set of reusable threads so that they never block the
  event loop (it waits at most 1 ms for one that ran fast last time, then
  awaits it). A thread cannot be killed, so a synchronous handler past its
  timeout gets an exception raised inside it at its next bytecode
  (``PyThreadState_SetAsyncExc``) and its thread is not reused; the caller
  has its :class:`FunctionTimeoutError` at the deadline either way.
* :class:`ProcessPool` runs it in worker processes forked from the zygote.
  Idle workers are reused (a warm start), new ones are forked on demand (a
  cold start), ``provisioned`` of them are kept ready at all times, and idle
  ones beyond that are retired after the keep-alive. A worker that times
  out is SIGKILLed; one that dies is explained by its exit cause; either way
  it is replaced and the next invocation runs on a fresh worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from reflow.app import FunctionConfig
from reflow.backends.protocols import Blobs
from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.errors import (
    FunctionCrashedError,
    FunctionTimeoutError,
    HandlerError,
    ThrottledError,
)
from reflow.functions import wire
from reflow.functions.context import Authorizer, Context, allow_all, log_stream_for
from reflow.functions.handoff import PENDING, Handoff, new_handoff
from reflow.functions.metrics import FunctionMetrics
from reflow.functions.remote import serve_call
from reflow.functions.sandbox import Worker, Zygote
from reflow.functions.worker import error_shape

__all__ = ["Gate", "InlinePool", "Pool", "ProcessPool"]

_log = logging.getLogger("reflow.functions")


class Gate:
    """Reserved concurrency: at most ``limit`` executions at once (None: no cap)."""

    def __init__(self, name: str, limit: int | None, metrics: FunctionMetrics) -> None:
        self.name = name
        self.limit = limit
        self.active = 0
        self._metrics = metrics
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def enter(self, *, wait: bool) -> None:
        """Take a slot; throttle (``wait=False``) or queue (``wait=True``) when full."""
        if self.limit is not None and self.active >= self.limit:
            # reserved=0 switches the function off: waiting could never end.
            if not wait or self.limit == 0:
                self._metrics.throttles += 1
                raise ThrottledError(self.name, self.limit)
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(future)
            try:
                await future  # leave() hands its slot straight to us
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self.leave()  # the slot was ours already: pass it on
                raise
            return
        self.active += 1

    def leave(self) -> None:
        """Give the slot back, to the longest waiter if there is one."""
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        self.active -= 1


class Pool:
    """What the runtime asks of a pool."""

    config: FunctionConfig
    metrics: FunctionMetrics

    async def start(self) -> None:
        """Prepare workers (provisioned concurrency)."""

    async def invoke(self, payload: Any, request_id: str, *, wait: bool) -> Any:
        """Run the handler once and return its result."""
        raise NotImplementedError

    async def retire_idle(self) -> int:
        """Retire workers idle past the keep-alive; return how many."""
        return 0

    async def close(self) -> None:
        """Stop every worker."""


# --- inline --------------------------------------------------------------------


class _Interrupted(BaseException):
    """Raised inside a synchronous inline handler that ran past its timeout."""


class _Expired(Exception):
    """A synchronous inline call passed the function's deadline (raised by the pool only)."""


# The longest the event loop blocks waiting for a synchronous inline handler
# before it falls back to awaiting it (Linux timer slack may add up to 50 µs).
# Not shorter: a wait whose timeout is the CPU's earliest timer reprograms the
# timer hardware, ~8 µs more per call in a VM (measured 100 µs vs 1 ms).
SYNC_WAIT = 1e-3
# The loop waits like that only when the function's previous run took less.
FAST_RUN = 50e-6
# With the C hand-off (reflow.functions.handoff), the first part of that wait
# is a spin with the GIL released: the loop sees the result without being put
# to sleep and woken (a wake-up of an idle vCPU costs tens of µs in a VM).
# As long as a fast run may take, and a little more.
LOOP_SPIN = 60e-6
# After each call the handler thread spins this long for the next one before
# it parks: a busy function's calls then cost no wake-up either, and an idle
# one costs at most this much CPU after its last call.
HANDLER_SPIN = 100e-6


def _cpus() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


if _cpus() < 2:  # one CPU: a spinning thread only delays the other
    LOOP_SPIN = HANDLER_SPIN = 0.0

# What a handler thread's call ends with: its result, its exception, how long it ran.
_Outcome = tuple[Any, BaseException | None, float]


class _HandlerThread(threading.Thread):
    """A reusable thread that runs one synchronous handler call at a time.

    Calls come and results go through a :class:`~reflow.functions.handoff.Handoff`.
    :meth:`call` waits for the result synchronously, at most
    :data:`SYNC_WAIT`; a call not done by then is *detached* (atomically, in
    the hand-off), and so are those started with :meth:`start_call`. The
    thread settles :attr:`future` with a detached call's outcome through the
    event loop (``call_soon_threadsafe``); whoever detaches a call through
    :meth:`call` sets :attr:`future` before it next yields to the loop, which
    is before the settling callback can run.

    :meth:`interrupt` raises an exception *asynchronously* in this thread, and
    that is only safe while the thread is inside the handler. Delivered to a
    thread that has gone back to waiting in C (the hand-off), the exception
    stays pending for good, and on CPython 3.11 a pending one keeps the
    interpreter-wide eval breaker set, so every thread of the process stalls
    at every bytecode, fighting over the GIL (seen as a test run hanging with
    its timeout thread unable to fire). So the thread says under ``_lock``
    when it enters and leaves the call, and :meth:`interrupt` raises only
    while it is inside; the thread then runs bytecode after the call (taking
    the lock, calling :meth:`retired`) before it can block again, which
    consumes the exception.
    """

    def __init__(self, handoff: Handoff | None = None) -> None:
        super().__init__(name="reflow-inline", daemon=True)
        self.handoff = handoff if handoff is not None else new_handoff()
        self.poisoned = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[_Outcome] | None = None
        self._lock = threading.Lock()
        self._in_call = False

    def call(
        self, function: Callable[..., Any], args: tuple[Any, ...], loop: asyncio.AbstractEventLoop
    ) -> _Outcome | None:
        """Run ``function(*args)`` here and wait for it, at most :data:`SYNC_WAIT`.

        None: it is still running, detached; set :attr:`future` (before
        yielding to ``loop``) and await it for the outcome.
        """
        self.loop = loop
        self.future = None
        outcome = self.handoff.call((function, args), LOOP_SPIN, SYNC_WAIT)
        return None if outcome is PENDING else outcome

    def start_call(
        self, function: Callable[..., Any], args: tuple[Any, ...], future: asyncio.Future[_Outcome]
    ) -> None:
        """Run ``function(*args)`` here; its outcome settles ``future``."""
        self.loop = future.get_loop()
        self.future = future
        self.handoff.send((function, args))

    def run(self) -> None:
        handoff = self.handoff
        clock = time.perf_counter
        try:
            item = handoff.wait(HANDLER_SPIN)
            while item is not None:
                function, args = item
                with self._lock:
                    if self.retired():  # interrupted while the call was queued
                        return
                    self._in_call = True
                started = clock()
                try:
                    result = function(*args)
                except BaseException as exc:  # delivered to the caller
                    outcome: _Outcome = (None, exc, clock() - started)
                else:
                    outcome = (result, None, clock() - started)
                finally:
                    with self._lock:
                        self._in_call = False
                if self.retired():
                    return
                item = handoff.finish(outcome, HANDLER_SPIN)
                if item is PENDING:  # detached: the caller awaits `future`
                    loop = self.loop
                    if loop is not None:
                        # A closed loop has nobody left to tell.
                        with contextlib.suppress(RuntimeError):
                            loop.call_soon_threadsafe(self._deliver, outcome)
                    # No spin: the caller sleeps in the event loop, and it
                    # may need the CPU this thread would spin on.
                    item = handoff.wait(0.0)
        except _Interrupted:
            return  # the interruption landed after the handler returned: done anyway

    def _deliver(self, outcome: _Outcome) -> None:
        """Settle :attr:`future` (on the loop's thread)."""
        future = self.future
        if future is not None and not future.done():
            future.set_result(outcome)

    def retired(self) -> bool:
        """Whether :meth:`interrupt` has been called (read afresh each time)."""
        return self.poisoned

    def interrupt(self) -> None:
        """Raise :class:`_Interrupted` inside the running handler; retire the thread."""
        with self._lock:
            self.poisoned = True
            if self._in_call and self.ident is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self.ident), ctypes.py_object(_Interrupted)
                )
        # Wake a thread waiting for work so that it sees `poisoned` and ends.
        self.handoff.close()


class InlinePool(Pool):
    """Runs a function in this process: awaited if async, on a thread if not.

    A synchronous handler runs on a reusable :class:`_HandlerThread`. When
    the function's previous run took under :data:`FAST_RUN`, the loop waits
    for the thread synchronously, at most :data:`SYNC_WAIT` (the GIL is
    released meanwhile; with the C hand-off it spins for the first
    :data:`LOOP_SPIN` of it): a fast handler then costs two thread hand-offs
    and nothing else. A call not done by then, or of a function that ran
    slower last time, is awaited through a future under ``asyncio.timeout``,
    so a slow or blocking handler never holds the loop for longer than that
    bound.
    """

    def __init__(
        self,
        config: FunctionConfig,
        metrics: FunctionMetrics,
        *,
        clock: Clock = SYSTEM_CLOCK,
        region: str = "local",
        authorizer: Authorizer = allow_all,
        blobs: Blobs | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.gate = Gate(config.name, config.reserved, metrics)
        self._clock = clock
        self._region = region
        self._authorizer = authorizer
        self._blobs = blobs
        self._log_stream = log_stream_for(clock)
        self._is_async = config.is_async
        self._idle: list[_HandlerThread] = []
        self._threads: set[_HandlerThread] = set()
        self._fast = True  # whether the last run took under FAST_RUN

    async def invoke(self, payload: Any, request_id: str, *, wait: bool) -> Any:
        """Run the handler here: awaited, or on a handler thread."""
        config = self.config
        await self.gate.enter(wait=wait)
        metrics = self.metrics
        metrics.started()
        started = time.perf_counter()
        failed = True
        try:
            loop = asyncio.get_running_loop()
            context = Context(
                config,
                request_id=request_id,
                clock=self._clock,
                region=self._region,
                authorizer=self._authorizer,
                blobs=self._blobs,
                loop=loop,
                log_stream_name=self._log_stream,
            )
            try:
                if self._is_async:
                    async with asyncio.timeout(config.timeout) as scope:
                        result = await config.handler(payload, context)
                else:
                    result = await self._on_thread(payload, context, loop)
            except _Expired:
                metrics.timeouts += 1
                raise FunctionTimeoutError(config.name, config.timeout) from None
            except TimeoutError as exc:
                if self._is_async and scope.expired():
                    metrics.timeouts += 1
                    raise FunctionTimeoutError(config.name, config.timeout) from None
                raise _handler_error(config.name, exc) from exc
            except Exception as exc:
                raise _handler_error(config.name, exc) from exc
            failed = False
            return result
        finally:
            metrics.finished(time.perf_counter() - started, error=failed)
            self.gate.leave()

    async def _on_thread(
        self, payload: Any, context: Context, loop: asyncio.AbstractEventLoop
    ) -> Any:
        deadline = loop.time() + self.config.timeout
        thread = self._idle.pop() if self._idle else self._new_thread()
        handler = self.config.handler
        if self._fast:
            # A bounded wait (the GIL released), with no await, so nothing
            # else can have taken the thread meanwhile. Not a spin on
            # os.sched_yield: on a CPU shared with other processes one yield
            # can lose the CPU for milliseconds.
            outcome = thread.call(handler, (payload, context), loop)
            if outcome is not None:
                return self._collect(thread, outcome)
            # Detached: the thread settles the future through the loop,
            # which runs nothing of it before this coroutine next yields.
            future: asyncio.Future[_Outcome] = loop.create_future()
            thread.future = future
        else:
            future = loop.create_future()
            thread.start_call(handler, (payload, context), future)
        try:
            async with asyncio.timeout_at(deadline):
                outcome = await asyncio.shield(future)
        except BaseException as exc:  # the deadline or a cancellation
            if not future.done():
                # Still running: stop it as well as Python allows.
                thread.interrupt()
                self._threads.discard(thread)
                if isinstance(exc, TimeoutError):
                    raise _Expired from None
                raise
            outcome = future.result()
            if isinstance(exc, asyncio.CancelledError):
                self._release(thread, outcome)  # it ended anyway: the thread is reusable
                raise
        return self._collect(thread, outcome)

    def _collect(self, thread: _HandlerThread, outcome: _Outcome) -> Any:
        """The ended call's result, or its exception raised; the thread goes back idle."""
        result, error, _ = outcome
        self._release(thread, outcome)
        if error is not None:
            raise error
        return result

    def _release(self, thread: _HandlerThread, outcome: _Outcome) -> None:
        self._fast = outcome[2] < FAST_RUN
        self._idle.append(thread)

    def _new_thread(self) -> _HandlerThread:
        thread = _HandlerThread()
        thread.start()
        self._threads.add(thread)
        return thread

    async def close(self) -> None:
        """Stop the handler threads (a thread stuck in C is left to die with the process)."""
        threads, self._threads, self._idle = self._threads, set(), []
        for thread in threads:
            thread.handoff.close()
        for thread in threads:
            await asyncio.to_thread(thread.join, 5.0)


def _handler_error(name: str, exc: BaseException) -> HandlerError:
    shape = error_shape(exc)
    return HandlerError(name, shape["errorType"], shape["errorMessage"], shape["stackTrace"])


# --- process -------------------------------------------------------------------


class ProcessPool(Pool):
    """Worker processes for one function, forked from the app's zygote."""

    def __init__(
        self,
        config: FunctionConfig,
        metrics: FunctionMetrics,
        zygote: Zygote,
        *,
        clock: Clock = SYSTEM_CLOCK,
        keep_alive: float = 600.0,
        spawn: bool = False,
        region: str = "local",
        authorizer: Authorizer = allow_all,
        blobs: Blobs | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.gate = Gate(config.name, config.reserved, metrics)
        self.zygote = zygote
        self._region = region
        self._authorizer = authorizer
        self._blobs = blobs
        self.keep_alive = keep_alive
        self.spawn = spawn
        self._clock = clock
        # The server-side contexts' stream (the worker names its own for the handler).
        self._log_stream = log_stream_for(clock)
        self._idle: list[Worker] = []  # a stack: the most recently used is reused first
        self._workers: set[Worker] = set()
        self._topping: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def workers(self) -> int:
        """Live workers, busy or idle."""
        return len(self._workers)

    @property
    def idle(self) -> int:
        """Workers waiting for an invocation."""
        return len(self._idle)

    async def start(self) -> None:
        """Fork the provisioned workers."""
        await self._top_up()

    async def _top_up(self) -> None:
        while not self._closed and len(self._workers) < self.config.provisioned:
            worker = await self._new_worker()
            self.metrics.init_durations.append(worker.init_seconds)
            self._park(worker)

    def _schedule_top_up(self) -> None:
        if self.config.provisioned and (self._topping is None or self._topping.done()):
            self._topping = asyncio.create_task(self._top_up_quietly())

    async def _top_up_quietly(self) -> None:
        try:
            await self._top_up()
        except Exception:
            # The next invocation will cold-start instead, and say why if it fails.
            _log.exception("could not replace provisioned workers of %s", self.config.name)

    async def _new_worker(self) -> Worker:
        worker = await self.zygote.new_worker(self.config.name, spawn=self.spawn)
        self._workers.add(worker)
        return worker

    def _take_idle(self) -> Worker | None:
        """The most recently used idle worker that is still alive."""
        while self._idle:
            worker = self._idle.pop()
            if not worker.at_eof():
                return worker
            # It died while idle (killed from outside, the OOM killer): no
            # invocation should pay for that, so it is dropped before use.
            self._workers.discard(worker)
            worker.connection.close()
            self._schedule_top_up()
        return None

    def _park(self, worker: Worker) -> None:
        worker.last_used = self._clock.monotonic()
        self._idle.append(worker)

    async def _discard(self, worker: Worker, *, kill: bool) -> None:
        self._workers.discard(worker)
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        if kill:
            worker.kill()
        await worker.close()
        if not self._closed:
            self._schedule_top_up()

    async def invoke(self, payload: Any, request_id: str, *, wait: bool) -> Any:
        """Run the handler in a worker: a warm one if idle, else a fresh fork."""
        config = self.config
        await self.gate.enter(wait=wait)
        metrics = self.metrics
        metrics.started()
        started = time.perf_counter()
        failed = True
        try:
            worker = self._take_idle()
            if worker is None:
                worker = await self._new_worker()
                metrics.cold_start(worker.init_seconds)
            kind, body = await self._call(worker, payload, request_id)
            if kind == wire.ERROR:
                if body.get("retire"):
                    await self._discard(worker, kill=True)
                else:
                    self._park(worker)
                raise HandlerError(
                    config.name,
                    str(body.get("errorType")),
                    str(body.get("errorMessage")),
                    body.get("stackTrace") or (),
                )
            self._park(worker)
            failed = False
            return body
        finally:
            metrics.finished(time.perf_counter() - started, error=failed)
            self.gate.leave()

    async def _call(self, worker: Worker, payload: Any, request_id: str) -> tuple[int, Any]:
        config = self.config
        server_side: list[Context] = []

        async def on_call(body: Any) -> Any:
            # The handler's platform calls run here, on the trusted side,
            # through a context of this invocation (built on first use).
            if not server_side:
                server_side.append(
                    Context(
                        config,
                        request_id=request_id,
                        clock=self._clock,
                        region=self._region,
                        authorizer=self._authorizer,
                        blobs=self._blobs,
                        loop=asyncio.get_running_loop(),
                        log_stream_name=self._log_stream,
                    )
                )
            return await serve_call(server_side[0], body)

        try:
            async with asyncio.timeout(config.timeout) as scope:
                return await worker.call(request_id, config.timeout, payload, on_call)
        except TimeoutError:
            if not scope.expired():
                raise
            self.metrics.timeouts += 1
            await self._discard(worker, kill=True)
            raise FunctionTimeoutError(config.name, config.timeout) from None
        except ConnectionError:  # end of stream or a reset: the worker is gone
            await self._discard(worker, kill=True)
            self.metrics.crashes += 1
            cause = await self.zygote.exit_cause(worker.pid)
            raise FunctionCrashedError(
                config.name, f"worker {worker.pid} {cause or 'closed its connection'}"
            ) from None
        except BaseException:
            # Cancelled mid-call: the worker's state is unknown, so it goes.
            await self._discard(worker, kill=True)
            raise

    async def retire_idle(self) -> int:
        """Close idle workers beyond ``provisioned`` unused for ``keep_alive`` seconds."""
        now = self._clock.monotonic()
        retired = 0
        # The bottom of the stack has waited longest.
        while (
            self._idle
            and len(self._workers) > self.config.provisioned
            and now - self._idle[0].last_used >= self.keep_alive
        ):
            worker = self._idle.pop(0)
            self._workers.discard(worker)
            await worker.close()
            retired += 1
        return retired

    async def close(self) -> None:
        """Close every worker; each exits when its socket closes."""
        self._closed = True
        if self._topping is not None:
            self._topping.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._topping
        for worker in list(self._workers):
            await worker.close()
        self._workers.clear()
        self._idle.clear()
