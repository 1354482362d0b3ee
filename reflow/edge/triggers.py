"""The four edge hooks, in Lambda@Edge's event shape, with its rules enforced.

A hook is a handler ``(event, context) -> dict`` registered with
``@app.edge(hook, path=...)``. The edge builds the event exactly as
CloudFront does — ``event["Records"][0]["cf"]`` holding ``config``,
``request`` (``clientIp``, ``method``, ``uri``, ``querystring``, ``headers``
as ``{lowercase: [{"key", "value"}]}``, optional ``body``) and, for the two
response hooks, ``response`` (``status`` as a string, ``statusDescription``,
``headers``) — so functions written for Lambda@Edge run unchanged.

What a hook may change is enforced on what it returns, and a violation is a
:class:`HookError` naming the hook and the field:

* ``viewer-request`` / ``origin-request``: ``uri``, ``querystring``,
  ``headers`` (and ``body`` when included); ``clientIp`` and ``method`` are
  read-only. Returning an object with a ``status`` generates a response
  instead (redirects, 403s, generated pages).
* ``origin-response``: the request is read-only; status, description,
  headers and body of the response may change.
* ``viewer-response``: the request is read-only; status, description and
  headers may change, the body may not.

Each hook has a time limit. Synchronous handlers run inline on the event
loop (the fast path); the watchdog thread (:mod:`reflow.edge.watchdog`)
interrupts a handler that overruns, so a runaway loop becomes a 5xx, not a
hang. Async handlers are awaited under ``asyncio.wait_for``. A hook with an
``invoke`` callable (set by :func:`reflow.edge.service.hooks_from_app` for
functions declared with ``isolation="process"``) runs through the functions
runtime instead — in a worker, with the runtime's metrics, limits and
``Context`` — and so never on the synchronous hit path.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from reflow.edge.metrics import Histogram
from reflow.edge.shapes import FUNCTION_HOOKS, from_function_result, to_function_event
from reflow.edge.tracked import CfHeaders, Intact, added_if_intact
from reflow.edge.watchdog import WATCHDOG, Overrun
from reflow.errors import FunctionError, HookError, NotAvailableError

_monotonic = time.monotonic

__all__ = [
    "REQUEST_HOOKS",
    "RESPONSE_HOOKS",
    "EdgeContext",
    "Hook",
    "HookResult",
    "compile_path_pattern",
    "request_to_cf",
    "response_to_cf",
]

REQUEST_HOOKS = ("viewer-request", "origin-request")
RESPONSE_HOOKS = ("origin-response", "viewer-response")
# Headers a hook may not set or change on a response (Lambda@Edge's read-only list).
_READ_ONLY_RESPONSE_HEADERS = frozenset({"content-length", "transfer-encoding", "via"})
_READ_ONLY_REQUEST_HEADERS = frozenset({"content-length", "transfer-encoding", "via"})
# Lambda@Edge's limits on generated responses: 40 KB from viewer hooks, 1 MB from origin hooks.
BODY_LIMITS = {
    "viewer-request": 40 * 1024,
    "origin-request": 1024 * 1024,
    "origin-response": 1024 * 1024,
    "viewer-response": 40 * 1024,
}


def compile_path_pattern(pattern: str) -> re.Pattern[str]:
    """A CloudFront path pattern (``*`` any run of characters, ``?`` one) as a regex."""
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


def headers_to_cf(headers: list[tuple[str, str]]) -> CfHeaders:
    """``[(name, value)]`` as Lambda@Edge's ``{lowercase: [{"key", "value"}]}``."""
    out: CfHeaders = {}
    for name, value in headers:
        out.setdefault(name.lower(), []).append({"key": name, "value": value})
    return out


def headers_from_cf(
    hook: str, where: str, headers: Any, *, lowercase: bool = False
) -> list[tuple[str, str]]:
    """Lambda@Edge headers back to ``[(name, value)]``, checking their shape.

    ``lowercase`` returns the lowercase names (the dict keys) instead of each ``key``.
    """
    if not isinstance(headers, dict):
        raise HookError(hook, where, "must be an object of lowercase names to lists")
    out: list[tuple[str, str]] = []
    valid = _VALID_NAMES
    for lower, entries in headers.items():
        if lower not in valid:
            # First sight of this name: check it once, remember it (bounded).
            if (
                type(lower) is not str
                or (not lower.islower() and lower != lower.lower())
                or not _TOKEN.match(lower)
            ):
                _explain(hook, where, lower, [])
            if len(valid) < 4096:
                valid[lower] = True
        if type(entries) is not list:
            raise HookError(hook, f"{where}.{lower}", "must be a list of {key, value} objects")
        for item in entries:
            try:
                value = item["value"]
                key = item.get("key", lower)
            except (TypeError, KeyError, AttributeError):
                _explain(hook, where, lower, entries)
            if (
                type(value) is not str
                or type(key) is not str
                # isprintable() is one C call for the usual value; the three scans
                # decide for the rest (HTAB and obs-text are allowed, CR/LF/NUL not).
                or (not value.isprintable() and ("\n" in value or "\r" in value or "\x00" in value))
                or (key is not lower and key != lower and _lower(key) != lower)
            ):
                _explain(hook, where, lower, entries)
            out.append((lower if lowercase else key, value))
    return out


# One added header already checked, by (name, key, value, lowercase): a function
# usually adds the same constant header on every call (bounded; never mutated).
_CHECKED_ADDED: dict[tuple[object, str, str, bool], list[tuple[str, str]]] = {}


def added_from_cf(
    hook: str, where: str, added: dict[Any, Any], *, lowercase: bool = False
) -> list[tuple[str, str]]:
    """:func:`headers_from_cf` for the headers a function added, remembered when it is one.

    The list returned may be shared between calls: do not change it.
    """
    if len(added) == 1:
        for lower, entries in added.items():
            if type(entries) is list and len(entries) == 1:
                item = entries[0]
                if type(item) is dict and len(item) == 2:
                    key = item.get("key")
                    value = item.get("value")
                    if type(key) is str and type(value) is str:
                        memo = (lower, key, value, lowercase)
                        checked = _CHECKED_ADDED.get(memo)
                        if checked is None:
                            checked = headers_from_cf(hook, where, added, lowercase=lowercase)
                            if len(_CHECKED_ADDED) < 1024:
                                _CHECKED_ADDED[memo] = checked
                        return checked
    return headers_from_cf(hook, where, added, lowercase=lowercase)


def added_checked(
    hook: str,
    where: str,
    headers: Any,
    template: CfHeaders,
    intact: Intact | None,
    read_only: frozenset[str],
    *,
    lowercase: bool = False,
) -> tuple[list[tuple[str, str]], tuple[str, ...]] | None:
    """:func:`added_if_intact` and :func:`added_from_cf` in one call.

    The checked headers a function added and their lowercase names, or None
    when a templated entry was changed or removed, ``headers`` is not a dict
    or a ``read_only`` name was added (the full checks then decide). A bad
    added header raises HookError as :func:`headers_from_cf` does.
    """
    if type(headers) is not dict:
        return None
    if intact is None or len(headers) != len(template) + 1:
        added = added_if_intact(headers, template, intact)
        if added is None or not read_only.isdisjoint(added):
            return None
        return added_from_cf(hook, where, added, lowercase=lowercase), tuple(added)
    # The usual case, one header added, inline (it runs twice per hooked hit).
    try:
        if intact[0](headers) != intact[1]:
            return None
    except KeyError:
        return None
    # Functions append and dicts keep order, so it is usually the last key.
    name = next(reversed(headers))
    if name in template:
        (name,) = headers.keys() - template.keys()
    if name in read_only:
        return None
    entries = headers[name]
    if type(entries) is list and len(entries) == 1:
        item = entries[0]
        if type(item) is dict and len(item) == 2 and "key" in item and "value" in item:
            key = item["key"]
            value = item["value"]
            if type(key) is str and type(value) is str:
                memo = (name, key, value, lowercase)
                checked = _CHECKED_ADDED.get(memo)
                if checked is None:
                    checked = headers_from_cf(hook, where, {name: entries}, lowercase=lowercase)
                    if len(_CHECKED_ADDED) < 1024:
                        _CHECKED_ADDED[memo] = checked
                return checked, (name,)
    return headers_from_cf(hook, where, {name: entries}, lowercase=lowercase), (name,)


_VALID_NAMES: dict[object, bool] = {}
_LOWERED: dict[str, str] = {}


def _lower(key: str) -> str:
    lowered = _LOWERED.get(key)
    if lowered is None:
        lowered = key.lower()
        if len(_LOWERED) < 4096:
            _LOWERED[key] = lowered
    return lowered


_BAD_VALUE = re.compile(r"[\r\n\x00]")


_NOT_QUERY = re.compile(r"[^\x21-\x7e]|#")
# RFC 9110 §5.6.2 token: what a header name may be (no spaces, colons, CR or LF).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


def _explain(hook: str, where: str, lower: Any, entries: list[Any]) -> None:
    """Raise the precise HookError for a malformed header entry (the slow path)."""
    if not isinstance(lower, str) or lower != lower.lower():
        raise HookError(hook, f"{where}.{lower}", "header names must be lowercase keys")
    if not _TOKEN.match(lower):
        raise HookError(hook, f"{where}.{lower!r}", "a header name must be an HTTP token")
    for index, item in enumerate(entries):
        if not isinstance(item, dict) or not isinstance(item.get("value"), str):
            raise HookError(
                hook, f"{where}.{lower}[{index}]", "must be an object with a string 'value'"
            )
        key = item.get("key", lower)
        if not isinstance(key, str) or key.lower() != lower:
            raise HookError(
                hook, f"{where}.{lower}[{index}].key", f"{key!r} does not match {lower!r}"
            )
        if _BAD_VALUE.search(item["value"]):
            raise HookError(hook, f"{where}.{lower}[{index}].value", "holds CR, LF or NUL")
    raise HookError(hook, f"{where}.{lower}", "is malformed")  # pragma: no cover


def request_to_cf(
    method: str,
    uri: str,
    querystring: str,
    headers: list[tuple[str, str]],
    client_ip: str,
    body: bytes | None = None,
) -> dict[str, Any]:
    """A request as Lambda@Edge's ``cf.request``."""
    request: dict[str, Any] = {
        "clientIp": client_ip,
        "method": method,
        "uri": uri,
        "querystring": querystring,
        "headers": headers_to_cf(headers),
    }
    if body is not None:
        import base64

        request["body"] = {
            "inputTruncated": False,
            "action": "read-only",
            "encoding": "base64",
            "data": base64.b64encode(body).decode("ascii"),
        }
    return request


def response_to_cf(status: int, reason: str, headers: list[tuple[str, str]]) -> dict[str, Any]:
    """A response as Lambda@Edge's ``cf.response`` (``status`` is a string)."""
    return {"status": str(status), "statusDescription": reason, "headers": headers_to_cf(headers)}


@dataclass(slots=True)  # made twice per hooked hit: slots make that ~40% cheaper
class HookResult:
    """What a hook returned, checked: a request, or a response (status, headers, body)."""

    request: dict[str, Any] | None = None
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    # Set only by the ``*_given`` runs: every header handed to the function came
    # back untouched, ``headers`` is empty and these (checked) ones were added.
    added: list[tuple[str, str]] | None = None
    # With ``added``: the headers object the function returned (checked) and the
    # lowercase names it added to it.
    returned_headers: Any = None
    added_names: tuple[str, ...] = ()


class EdgeContext:
    """The ``context`` a hook receives (a subset of Lambda's)."""

    __slots__ = ("_authorize", "aws_request_id", "deadline", "function_name", "function_version")

    def __init__(
        self,
        function_name: str,
        deadline: float,
        authorize: Callable[[str, str], None] | None = None,
    ) -> None:
        self.function_name = function_name
        self.deadline = deadline
        self.aws_request_id = ""
        self.function_version = "$LATEST"
        self._authorize = authorize

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the hook's time limit."""
        return max(0, int((self.deadline - time.monotonic()) * 1000))

    def authorize(self, action: str, resource: str) -> None:
        """Pass ``action`` on ``resource`` through the hook's authorisation hook.

        :func:`reflow.edge.service.hooks_from_app` binds the runtime's hook to
        the function's config; a hook built without one allows everything,
        as ``reflow.functions.context.allow_all`` does.
        """
        authorize = self._authorize
        if authorize is not None:
            authorize(action, resource)

    @property
    def limits(self) -> Any:
        """``context.limits``: rate limits and counters, for ``async def`` hooks.

        One backend round trip per call (a Lua script on Redis), so a
        viewer-request hook can refuse a client before the cache is consulted.
        Each call passes :meth:`authorize` first, as from a function's context.
        """
        from reflow.functions.context import registered_client

        factory = registered_client("limits")
        if factory is None:
            raise NotAvailableError("limits", "the state service is not running in this process")
        # The limits client needs only ``authorize`` of the context it is made for.
        return factory(self)  # type: ignore[arg-type]


def _read_only(headers: Any, names: frozenset[str]) -> list[tuple[str, str]]:
    """The values of the read-only headers in Lambda@Edge's header shape."""
    if not isinstance(headers, dict) or names.isdisjoint(headers):
        return []
    out = []
    for name in names & headers.keys():
        for item in headers[name] or ():
            if isinstance(item, dict):
                out.append((name, str(item.get("value"))))
    return sorted(out)


class _Snapshot:
    """What a hook must leave unchanged, taken before it runs (no deep copies)."""

    __slots__ = ("body", "client_ip", "method", "request_headers", "response_headers")

    def __init__(self, request: dict[str, Any], response: dict[str, Any] | None) -> None:
        self.client_ip = request.get("clientIp")
        self.method = request.get("method")
        self.body = request.get("body")
        self.request_headers = _read_only(request.get("headers"), _READ_ONLY_REQUEST_HEADERS)
        self.response_headers = (
            _read_only(response.get("headers"), _READ_ONLY_RESPONSE_HEADERS)
            if response is not None
            else []
        )

    @classmethod
    def of(cls, request: dict[str, Any], response: dict[str, Any] | None) -> _Snapshot:
        """The read-only parts of ``request`` and ``response``."""
        return cls(request, response)

    @classmethod
    def of_given(
        cls,
        client_ip: Any,
        method: Any,
        body: Any,
        request_template: CfHeaders | None,
        response_template: CfHeaders | None,
    ) -> _Snapshot:
        """The read-only parts, from values taken before the call and the header templates."""
        snapshot = cls.__new__(cls)
        snapshot.client_ip = client_ip
        snapshot.method = method
        snapshot.body = body
        snapshot.request_headers = _read_only(request_template, _READ_ONLY_REQUEST_HEADERS)
        snapshot.response_headers = _read_only(response_template, _READ_ONLY_RESPONSE_HEADERS)
        return snapshot


@dataclass(frozen=True)
class Hook:
    """One edge function at one hook, for paths matching ``path``."""

    name: str
    hook: str
    path: str
    handler: Callable[..., Any]
    timeout: float = 5.0
    include_body: bool = False
    distribution: str = "reflow"
    shape: str = "lambda@edge"  # or "function": CloudFront Functions' event (reflow.edge.shapes)
    # Runs the function through the functions runtime (process isolation) instead of
    # calling ``handler`` here; the event goes in, the function's result comes back.
    invoke: Callable[[dict[str, Any]], Awaitable[Any]] | None = field(default=None, compare=False)
    # The registered function's name (metrics label it so); ``name`` when not given.
    function: str = ""
    # Where the time spent in the function is counted (the edge sets it).
    timer: Histogram | None = field(default=None, compare=False, repr=False)
    # The authorisation hook bound to the function's config, (action, resource) -> None
    # or PermissionDeniedError: what ``context.limits`` passes each call through.
    authorize: Callable[[str, str], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # One context per hook, its deadline reset per call: synchronous calls run
        # one at a time on the serving thread, so they never share it at once.
        object.__setattr__(self, "_context", EdgeContext(self.name, 0.0, self.authorize))
        # What the ``*_given`` runs return on their fast path, refilled by each such run
        # (making a HookResult per hooked hit cost ~1k instructions each).
        object.__setattr__(self, "_given", HookResult())
        if self.shape == "function" and self.hook not in FUNCTION_HOOKS:
            raise HookError(self.hook, self.name, 'shape="function" serves viewer hooks only')
        if self.shape not in ("lambda@edge", "function"):
            raise HookError(self.hook, self.name, f"unknown shape {self.shape!r}")

    @property
    def matcher(self) -> re.Pattern[str]:
        """The compiled path pattern."""
        return compile_path_pattern(self.path)

    def event(
        self, request: dict[str, Any], response: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The Lambda@Edge event for this hook."""
        cf: dict[str, Any] = {
            "config": {
                "distributionDomainName": "localhost",
                "distributionId": self.distribution,
                "eventType": self.hook,
                "requestId": "",
            },
            "request": request,
        }
        if response is not None:
            cf["response"] = response
        return {"Records": [{"cf": cf}]}

    @property
    def is_async(self) -> bool:
        """Whether the hook must be awaited (``async def``, or through the runtime).

        Such a hook cannot run on the synchronous hit path.
        """
        return self.invoke is not None or inspect.iscoroutinefunction(self.handler)

    def call_sync(self, event: dict[str, Any]) -> Any:
        """Run a synchronous handler inline, interrupted by the watchdog past its limit."""
        if self.invoke is not None:
            # The edge never takes the synchronous path for such a hook (is_async).
            raise HookError(self.hook, self.name, "runs in the functions runtime: await call()")
        context: EdgeContext = self._context  # type: ignore[attr-defined]
        started = _monotonic()
        context.deadline = deadline = started + self.timeout
        try:
            try:
                return WATCHDOG.call(deadline, self.handler, event, context)
            finally:
                timer = self.timer
                if timer is not None:
                    # Histogram.observe, inline: it runs twice per hooked hit.
                    elapsed = _monotonic() - started
                    timer.counts[bisect_left(timer.bounds, elapsed)] += 1
                    timer.sum += elapsed
        except (Exception, Overrun) as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> NoReturn:
        """Raise the HookError for ``exc``, raised by a synchronous call of the handler."""
        if isinstance(exc, Overrun):
            raise HookError(
                self.hook, self.name, f"ran past its {self.timeout:g} s limit"
            ) from None
        if isinstance(exc, HookError):
            raise exc
        raise HookError(self.hook, self.name, f"raised {type(exc).__name__}: {exc}") from exc

    async def call(self, event: dict[str, Any]) -> Any:
        """Run the handler under the hook's time limit; HookError when it fails or overruns."""
        if self.invoke is not None:
            return await self._call_runtime(event)
        started = _monotonic()
        timed_here = self.is_async  # call_sync times a synchronous handler itself
        if not timed_here:
            result = self.call_sync(event)
            if not inspect.isawaitable(result):
                return result
        else:
            context = EdgeContext(self.name, started + self.timeout, self.authorize)
            result = self.handler(event, context)
        try:
            return await asyncio.wait_for(result, self.timeout)
        except TimeoutError:
            raise HookError(
                self.hook, self.name, f"ran past its {self.timeout:g} s limit"
            ) from None
        except HookError:
            raise
        except Exception as exc:
            raise HookError(self.hook, self.name, f"raised {type(exc).__name__}: {exc}") from exc
        finally:
            if timed_here and self.timer is not None:
                self.timer.observe(_monotonic() - started)

    async def _call_runtime(self, event: dict[str, Any]) -> Any:
        assert self.invoke is not None
        started = _monotonic()
        try:
            return await asyncio.wait_for(self.invoke(event), self.timeout)
        except TimeoutError:
            raise HookError(
                self.hook, self.name, f"ran past its {self.timeout:g} s limit"
            ) from None
        except FunctionError as exc:
            # Timeouts, crashes, throttling and handler exceptions, as the runtime saw them.
            raise HookError(self.hook, self.name, f"{type(exc).__name__}: {exc}") from exc
        finally:
            if self.timer is not None:
                self.timer.observe(_monotonic() - started)

    async def run(
        self, request: dict[str, Any], response: dict[str, Any] | None = None
    ) -> HookResult:
        """Call the hook with ``request``/``response`` (which it may mutate); check the result."""
        snapshot = _Snapshot.of(request, response)
        if self.shape == "function":
            event = to_function_event(self.hook, self.distribution, request, response)
            result = from_function_result(self.hook, await self.call(event), request)
            return self.check(snapshot, result)
        return self.check(snapshot, await self.call(self.event(request, response)))

    def run_sync(
        self, request: dict[str, Any], response: dict[str, Any] | None = None
    ) -> HookResult:
        """:meth:`run` for a synchronous handler, without the event loop."""
        snapshot = _Snapshot.of(request, response)
        if self.shape == "function":
            event = to_function_event(self.hook, self.distribution, request, response)
            result = from_function_result(self.hook, self.call_sync(event), request)
            return self.check(snapshot, result)
        return self.check(snapshot, self.call_sync(self.event(request, response)))

    def run_request_given(
        self, request: dict[str, Any], template: CfHeaders, intact: Intact | None = None
    ) -> HookResult:
        """:meth:`run_sync` for a request hook given a fresh copy of ``template``'s headers.

        When the function returns the request with every templated header equal,
        only the headers it added are checked (``HookResult.added``); anything
        else gets the full checks of :meth:`check`. ``intact`` is
        :func:`reflow.edge.tracked.intact_check` of ``template``, when kept.

        The fast path's HookResult is this hook's own, refilled by its next
        ``*_given`` run: read it before running the hook again.
        """
        if self.shape == "function" or self.invoke is not None:
            return self.run_sync(request)  # (call_sync refuses a runtime function)
        # A cf.request always has these four (request_to_cf); subscripts are cheaper.
        client_ip = request["clientIp"]
        method = request["method"]
        body = request.get("body")
        uri = request["uri"]
        querystring = request["querystring"]
        # self.event(request), inline (one call fewer per hooked hit).
        config = {
            "distributionDomainName": "localhost",
            "distributionId": self.distribution,
            "eventType": self.hook,
            "requestId": "",
        }
        # self.call_sync(event), inline (a call fewer per hooked hit).
        context: EdgeContext = self._context  # type: ignore[attr-defined]
        started = _monotonic()
        context.deadline = deadline = started + self.timeout
        try:
            try:
                result = WATCHDOG.call(
                    deadline,
                    self.handler,
                    {"Records": [{"cf": {"config": config, "request": request}}]},
                    context,
                )
            finally:
                timer = self.timer
                if timer is not None:
                    elapsed = _monotonic() - started
                    timer.counts[bisect_left(timer.bounds, elapsed)] += 1
                    timer.sum += elapsed
        except (Exception, Overrun) as exc:
            self._failed(exc)
        if (
            type(result) is dict
            and "status" not in result
            and result.get("clientIp") == client_ip
            and result.get("method") == method
            and result.get("body") is body
        ):
            checked = added_checked(
                self.hook,
                "request.headers",
                result.get("headers"),
                template,
                intact,
                _READ_ONLY_REQUEST_HEADERS,
                lowercase=True,
            )
            if checked is not None:
                if result.get("uri") is not uri or result.get("querystring") is not querystring:
                    # Changed (the edge's own values passed its parser and normaliser).
                    self._check_target(result)
                given: HookResult = self._given  # type: ignore[attr-defined]
                given.request = result
                given.added = checked[0]
                return given
        return self.check(_Snapshot.of_given(client_ip, method, body, template, None), result)

    def run_response_given(
        self,
        request: dict[str, Any],
        response: dict[str, Any],
        template: CfHeaders,
        intact: Intact | None = None,
    ) -> HookResult:
        """:meth:`run_sync` for a response hook given a fresh copy of ``template``'s headers.

        Status, description and body left as given plus equal templated headers
        means only the added headers are checked (``HookResult.added``).
        ``intact`` and the HookResult's lifetime as for :meth:`run_request_given`.
        """
        if self.shape == "function" or self.invoke is not None:
            return self.run_sync(request, response)
        status: str = response["status"]
        reason: str = response["statusDescription"]
        # self.event(request, response), inline.
        config = {
            "distributionDomainName": "localhost",
            "distributionId": self.distribution,
            "eventType": self.hook,
            "requestId": "",
        }
        cf = {"config": config, "request": request, "response": response}
        # self.call_sync(event), inline (a call fewer per hooked hit).
        context: EdgeContext = self._context  # type: ignore[attr-defined]
        started = _monotonic()
        context.deadline = deadline = started + self.timeout
        try:
            try:
                result = WATCHDOG.call(deadline, self.handler, {"Records": [{"cf": cf}]}, context)
            finally:
                timer = self.timer
                if timer is not None:
                    elapsed = _monotonic() - started
                    timer.counts[bisect_left(timer.bounds, elapsed)] += 1
                    timer.sum += elapsed
        except (Exception, Overrun) as exc:
            self._failed(exc)
        if (
            type(result) is dict
            and result.get("status") is status
            and result.get("statusDescription") is reason
            and result.get("body") is None
        ):
            returned = result.get("headers")
            checked = added_checked(
                self.hook,
                "response.headers",
                returned,
                template,
                intact,
                _READ_ONLY_RESPONSE_HEADERS,
            )
            if checked is not None:
                given: HookResult = self._given  # type: ignore[attr-defined]
                given.status = int(status)
                given.reason = reason
                given.added, given.added_names = checked
                given.returned_headers = returned
                return given
        snapshot = _Snapshot.of_given(
            request.get("clientIp"), request.get("method"), request.get("body"), None, template
        )
        return self.check(snapshot, result)

    def check(self, snapshot: _Snapshot, result: Any) -> HookResult:
        """Enforce what this hook may return and change."""
        if self.hook in REQUEST_HOOKS:
            return self._check_request_result(snapshot, result)
        return self._check_response_result(snapshot, result)

    def _check_request_result(self, original: _Snapshot, result: Any) -> HookResult:
        if not isinstance(result, dict):
            raise HookError(
                self.hook,
                "return",
                f"must return a request or a response, got {type(result).__name__}",
            )
        if "status" in result:
            return self._generated(result)
        if result.get("clientIp") != original.client_ip:
            raise HookError(self.hook, "request.clientIp", "is read-only")
        if result.get("method") != original.method:
            raise HookError(self.hook, "request.method", "is read-only")
        self._check_target(result)
        headers = headers_from_cf(
            self.hook, "request.headers", result.get("headers", {}), lowercase=True
        )
        if (
            _read_only(result.get("headers"), _READ_ONLY_REQUEST_HEADERS)
            != original.request_headers
        ):
            raise HookError(
                self.hook,
                "request.headers",
                f"{sorted(_READ_ONLY_REQUEST_HEADERS)} are read-only",
            )
        if "body" in result and not self.include_body and result["body"] != original.body:
            raise HookError(self.hook, "request.body", "needs include_body=True to change")
        return HookResult(request=result, headers=headers)

    def _check_target(self, result: dict[str, Any]) -> None:
        """Check the ``uri`` and ``querystring`` a request hook returned."""
        uri = result.get("uri")
        if not isinstance(uri, str) or not uri.startswith("/"):
            raise HookError(
                self.hook, "request.uri", f"must be a path starting with '/', got {uri!r}"
            )
        querystring = result.get("querystring", "")
        if not isinstance(querystring, str):
            raise HookError(self.hook, "request.querystring", "must be a string")
        if _NOT_QUERY.search(querystring):
            # It goes into the origin's request line: a space, CR or LF would split it.
            raise HookError(
                self.hook, "request.querystring", "must be percent-encoded visible ASCII"
            )

    def _check_response_result(self, original: _Snapshot, result: Any) -> HookResult:
        if not isinstance(result, dict) or "status" not in result:
            raise HookError(self.hook, "return", "must return the response object")
        checked = self._generated(result, allow_body=self.hook == "origin-response")
        after = _read_only(result.get("headers"), _READ_ONLY_RESPONSE_HEADERS)
        if after != original.response_headers:
            raise HookError(
                self.hook,
                "response.headers",
                f"{sorted(_READ_ONLY_RESPONSE_HEADERS)} are read-only",
            )
        return checked

    def _generated(self, result: dict[str, Any], *, allow_body: bool = True) -> HookResult:
        status_value = result.get("status")
        status_text = str(status_value) if isinstance(status_value, (str, int)) else ""
        if not status_text.isdigit() or not 100 <= int(status_text) <= 599:
            raise HookError(
                self.hook, "response.status", f"must be an HTTP status, got {status_value!r}"
            )
        headers = headers_from_cf(self.hook, "response.headers", result.get("headers", {}))
        body: bytes | None = None
        if "body" in result and result["body"] is not None:
            if not allow_body:
                raise HookError(self.hook, "response.body", "is read-only in this hook")
            body = _decode_body(self.hook, result)
            limit = BODY_LIMITS[self.hook]
            if len(body) > limit:
                raise HookError(
                    self.hook, "response.body", f"is {len(body)} bytes; the limit is {limit}"
                )
        reason = result.get("statusDescription") or ""
        if not isinstance(reason, str) or "\r" in reason or "\n" in reason:
            raise HookError(self.hook, "response.statusDescription", "must be one line of text")
        return HookResult(status=int(status_text), reason=reason, headers=headers, body=body)


def _decode_body(hook: str, result: dict[str, Any]) -> bytes:
    body = result["body"]
    if not isinstance(body, str):
        raise HookError(hook, "response.body", "must be a string")
    encoding = result.get("bodyEncoding", "text")
    if encoding == "base64":
        import base64
        import binascii

        try:
            return base64.b64decode(body, validate=True)
        except binascii.Error:
            raise HookError(hook, "response.body", "is not valid base64") from None
    if encoding != "text":
        raise HookError(
            hook, "response.bodyEncoding", f"must be 'text' or 'base64', got {encoding!r}"
        )
    return body.encode("utf-8")
