"""The edge's request logic: behaviours, the cache, origins and hooks, without sockets.

:class:`Edge` answers a parsed :class:`~reflow.edge.http.Request` with the
bytes of a complete response. The server calls :meth:`Edge.fast` first: it
answers a fresh hit synchronously (one dictionary lookup, one freshness
comparison, pre-built bytes) or returns None, and then :meth:`Edge.handle`
does everything else — hooks, conditional requests, ranges, stale serving,
revalidation and misses, collapsed so that concurrent misses on one key make
one origin fetch.

Only what is in the behaviour's cache key reaches the origin, so a header
that is not in the key cannot change what is cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from reflow.clock import SYSTEM_CLOCK, Clock
from reflow.edge.cache import (
    Action,
    CachePolicy,
    assess,
    cache_key,
    choose_coding,
    compressible_type,
    not_modified,
    parse_http_date,
    parse_range,
    secondary_key,
)
from reflow.edge.http import (
    HOP_BY_HOP,
    Headers,
    Request,
    build_head,
    build_tail,
    error_response,
    normalise_path,
)
from reflow.edge.metrics import Metrics
from reflow.edge.origins import Collapser, Origin, OriginRequest, OriginResponse
from reflow.edge.store import Entry, Store
from reflow.edge.tracked import TemplateCache
from reflow.edge.triggers import (
    Hook,
    HookResult,
    compile_path_pattern,
    headers_to_cf,
    request_to_cf,
    response_to_cf,
)
from reflow.errors import EdgeError, HookError, InvalidRequestError, OriginError

__all__ = ["Behaviour", "Edge", "Metrics"]

_MIN_COMPRESS = 256  # bytes; smaller bodies do not gain from gzip
_304_FIELDS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary", "age", "x-cache"}
)
_FRAMING = HOP_BY_HOP | {"content-length"}
_CONDITIONAL = frozenset({"if-none-match", "if-modified-since", "range", "if-range"})
# Whole hooked answers kept per hook view (Entry.hook_view, rebuilt every second).
_ANSWERS = 16
_ANSWER_BYTES = 64 * 1024
_NOT_STORED_HEADERS = HOP_BY_HOP | {
    "content-length",
    "age",
    "surrogate-key",
    "cache-tag",
    "x-cache",
}


@dataclass(frozen=True)
class Behaviour:
    """A path pattern routed to an origin with a cache policy (CloudFront's cache behaviour)."""

    pattern: str
    origin: Origin
    policy: CachePolicy = CachePolicy()

    @property
    def specificity(self) -> tuple[int, int]:
        """Sort key: more literal characters first, then longer patterns."""
        literal = len(self.pattern.replace("*", "").replace("?", ""))
        return (-literal, -len(self.pattern))


@dataclass(frozen=True)
class _Route:
    behaviour: Behaviour
    hooks: dict[str, Hook]
    plain: bool  # no viewer hooks and a key of the path alone: the hit path may answer
    inline_viewer: bool  # viewer hooks, all synchronous, and a key of the path alone


class Edge:
    """Requests in, response bytes out: the cache in front of the behaviours' origins."""

    def __init__(
        self,
        behaviours: Sequence[Behaviour],
        hooks: Sequence[Hook] = (),
        *,
        store: Store | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not behaviours:
            raise EdgeError("an edge needs at least one behaviour (app.edge_origin)")
        self.behaviours = sorted(behaviours, key=lambda b: b.specificity)
        self._behaviour_res = [(compile_path_pattern(b.pattern), b) for b in self.behaviours]
        self.metrics = Metrics()
        # Each hook counts the time spent in its function into this edge's histogram.
        self.hooks = [
            replace(h, timer=self.metrics.hook_timer(h.hook, h.function or h.name))
            for h in sorted(hooks, key=lambda h: -len(h.path.replace("*", "")))
        ]
        self._hook_res = [(compile_path_pattern(h.path), h) for h in self.hooks]
        self.store = store if store is not None else Store()
        self.clock = clock
        self.collapser = Collapser()
        self._routes: dict[str, _Route] = {}
        self._refreshing: set[str] = set()
        # Viewer-request hooks on the hit path compare what they return with these.
        self._request_copies = TemplateCache()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- routing -------------------------------------------------------------

    def route(self, path: str) -> _Route:
        """The behaviour and hooks for ``path`` (memoised)."""
        route = self._routes.get(path)
        if route is None:
            behaviour = next(b for r, b in self._behaviour_res if r.match(path))  # "*" catches all
            hooks: dict[str, Hook] = {}
            for regex, hook in self._hook_res:
                if hook.hook not in hooks and regex.match(path):
                    hooks[hook.hook] = hook
            policy = behaviour.policy
            simple_key = not policy.headers and not policy.cookies
            viewer = [h for name, h in hooks.items() if name.startswith("viewer-")]
            plain = simple_key and not viewer
            inline = simple_key and bool(viewer) and not any(h.is_async for h in viewer)
            route = _Route(behaviour, hooks, plain, inline)
            if len(self._routes) > 10000:
                self._routes.clear()
            self._routes[path] = route
        return route

    # -- the hit path --------------------------------------------------------------

    def fast(self, request: Request, special: bool) -> bytes | None:
        """A fresh hit's bytes, or None when :meth:`handle` must answer.

        ``special`` says the request carries a conditional or Range header.
        """
        route = self._routes.get(request.path) or self.route(request.path)
        if not route.plain:
            if route.inline_viewer and not special:
                return self._fast_hooked(request, route)
            return None
        if special or (request.method != "GET" and request.method != "HEAD"):
            return None
        if request.query and route.behaviour.policy.query_strings:
            return None
        return self.hit(request.path, request.headers, request.method == "HEAD")

    def plain(self, method: str, path: str, query: str, special: bool) -> bool:
        """Whether :meth:`fast` would answer such a request with :meth:`hit` alone.

        A pure function of the request and the edge's behaviours and hooks, which
        never change: the server remembers it per request it has memoised.
        """
        route = self.route(path)
        return (
            route.plain
            and not special
            and (method == "GET" or method == "HEAD")
            and not (query and route.behaviour.policy.query_strings)
        )

    def hit(self, path: str, headers: Headers, head: bool) -> bytes | None:
        """A fresh hit's bytes for a :meth:`plain` request to ``path``, or None."""
        entry = self.store.get(path, headers)
        if entry is None:
            return None
        now = self.clock.time()
        if now >= entry.fresh_until:
            return None
        metrics = self.metrics
        metrics.hits += 1
        coding = choose_coding(headers) if entry.compressible else None
        data = entry.response(now, head, coding=coding)
        metrics.bytes_out += len(data)
        return data

    def _fast_hooked(self, request: Request, route: _Route) -> bytes | None:
        """The hit path with synchronous viewer hooks run inline (no task, no await).

        Once the viewer-request hook has run, a miss continues in :meth:`handle`
        with ``request.viewer_done`` set, so the hook never runs twice.
        """
        if request.method != "GET" and request.method != "HEAD":
            return None
        try:
            cf_request = None  # the request as the viewer-request hook left it
            viewer_request = route.hooks.get("viewer-request")
            if viewer_request is not None:
                request_copies = self._request_copies.last
                if request_copies is None or request_copies.pairs != request.headers:
                    request_copies = self._request_copies.get(request.headers, headers_to_cf)
                # Always a fresh copy, never one handed out before: making one is cheaper
                # than checking a used one again after both hooks (give_back).
                result = viewer_request.run_request_given(
                    {
                        "clientIp": request.client_ip,
                        "method": request.method,
                        "uri": request.path,
                        "querystring": request.query,
                        "headers": request_copies.fresh(),
                    },
                    request_copies.template,
                    request_copies.intact,
                )
                if result.request is None:
                    return self._generated(result, request)
                cf_request = result.request
                path = request.path
                if result.added is not None and cf_request["uri"] is path:
                    # _adopt's usual case, inline: the uri kept, headers only added.
                    request.query = str(cf_request.get("querystring", ""))
                    if result.added:
                        request.headers = [*request.headers, *result.added]
                else:
                    self._adopt(request, result)
                request.viewer_done = True
                if request.path is not path:
                    moved = self.route(request.path)
                    if moved is not route and (
                        moved.behaviour is not route.behaviour or moved.hooks != route.hooks
                    ):
                        return None
            policy = route.behaviour.policy
            if (request.query and policy.query_strings) or (
                # The request came without conditional headers (not ``special``): only
                # what the hook added or set can make it conditional.
                cf_request is not None
                and (
                    _has_conditional(request)
                    if result.added is None
                    else not _CONDITIONAL.isdisjoint(dict(result.added))
                )
            ):
                request.viewer_done = True
                return None
            entry = self.store.get(request.path, request.headers)
            now = self.clock.time()
            if entry is None or now >= entry.fresh_until:
                request.viewer_done = True
                return None
            self.metrics.hits += 1
            head = request.method == "HEAD"
            viewer_response = route.hooks.get("viewer-response")
            coding = choose_coding(request.headers) if entry.compressible else None
            if viewer_response is None:
                data = entry.response(now, head, coding=coding)
            else:
                # entry.hook_view's cached case, inline (a call fewer per hooked hit).
                viewed = entry.hook_views.get(coding)
                if viewed is not None and viewed[0] == int(now):
                    view = viewed[1]
                else:
                    view = entry.hook_view(now, coding)
                body = view.body
                copies = view.copies
                # copies.take(), inline.
                handed = copies.spare
                if handed is None:
                    handed = copies.fresh()
                else:
                    copies.spare = None
                answer = viewer_response.run_response_given(
                    cf_request if cf_request is not None else self._cf_request(request),
                    {"status": view.status, "statusDescription": entry.reason, "headers": handed},
                    copies.template,
                    copies.intact,
                )
                if answer.returned_headers is handed:
                    # Checked just now, after the call, on this very object: copies.keep,
                    # inline (what the function added goes, the copy is kept for reuse).
                    for name in answer.added_names:
                        del handed[name]
                    copies.spare = handed
                else:
                    copies.give_back(handed)
                if answer.added is not None:
                    # Every stored header came back untouched: reuse their rendered
                    # lines, or the whole answer when the same headers were added.
                    key = (*answer.added, request.keep_alive, head)
                    answers = view.answers
                    cached = answers.get(key)
                    if cached is None:
                        data = view.prefix + build_tail(
                            _framing_free(answer.added), len(body), keep_alive=request.keep_alive
                        )
                        if not head:
                            data += body
                        if len(answers) < _ANSWERS and len(data) <= _ANSWER_BYTES:
                            answers[key] = data
                    else:
                        data = cached
                else:
                    data = build_head(
                        answer.status,
                        answer.reason or entry.reason,
                        _framing_free(answer.headers),
                        len(body),
                        keep_alive=request.keep_alive,
                    )
                    if not head:
                        data += body
        except HookError as exc:
            self.metrics.hook_errors += 1
            return error_response(502, str(exc), keep_alive=request.keep_alive)
        self.metrics.bytes_out += len(data)
        return data

    # -- everything else -------------------------------------------------------------

    async def handle(self, request: Request) -> bytes:
        """Answer ``request``: hooks, cache, origin; errors become 4xx/5xx responses."""
        try:
            return await self._handle(request)
        except InvalidRequestError as exc:
            return error_response(exc.status, exc.problem, keep_alive=request.keep_alive)
        except HookError as exc:
            self.metrics.hook_errors += 1
            return error_response(502, str(exc), keep_alive=request.keep_alive)
        except OriginError as exc:
            self.metrics.origin_errors += 1
            status = 504 if "within" in exc.problem else 502
            return error_response(status, str(exc), keep_alive=request.keep_alive)

    async def _handle(self, request: Request) -> bytes:
        route = self.route(request.path)
        viewer_request = route.hooks.get("viewer-request")
        if viewer_request is not None and not request.viewer_done:
            result = await self._run_hook(viewer_request, self._cf_request(request))
            if result.request is None:
                return self._generated(result, request)
            self._adopt(request, result)
            route = self.route(request.path)
        behaviour = route.behaviour
        if request.method not in ("GET", "HEAD"):
            response = await self._fetch_origin(behaviour, route, request, request.query, [])
            return await self._deliver_uncached(route, request, response, "Miss", response.elapsed)
        key, forwarded_query = cache_key(
            request.path, request.query, request.headers, behaviour.policy
        )
        now = self.clock.time()
        entry = self.store.get(key, request.headers)
        x_cache = "Hit"
        timing: float | None = None
        if entry is not None:
            action = Action.STALE_REFRESH if entry.soft_purged else entry.freshness.decide(now)
            if action is Action.STALE_REFRESH:
                x_cache = "Stale"
                self.metrics.stale += 1
                self._refresh_later(behaviour, route, request, key, forwarded_query, entry)
            elif action is Action.REVALIDATE:
                entry, x_cache, fallback = await self._revalidate(
                    behaviour, route, request, key, forwarded_query, entry
                )
                timing = fallback.elapsed
                if entry is None:
                    return await self._deliver_uncached(route, request, fallback, "Miss", timing)
            else:
                self.metrics.hits += 1
        else:
            entry, response = await self._miss(behaviour, route, request, key, forwarded_query)
            x_cache = "Miss"
            timing = response.elapsed
            if entry is None:
                return await self._deliver_uncached(route, request, response, "Miss", timing)
        return await self._deliver(route, request, entry, x_cache, timing)

    async def _miss(
        self, behaviour: Behaviour, route: _Route, request: Request, key: str, query: str
    ) -> tuple[Entry | None, OriginResponse]:
        self.metrics.misses += 1
        for _ in range(3):
            generation = self.store.generation
            requested = self.clock.time()
            # Misses share a fetch only within one purge generation: a request that
            # arrives after a purge never takes an answer asked for before it.
            response, _fetched = await self.collapser.run(
                f"{key}\x00{generation}",
                lambda: self._fetch_origin(behaviour, route, request, query, []),
            )
            tags = _tags(response.headers)  # once per response: the check and the entry
            if self.store.purged_since(generation, request.path, tags):
                continue  # purged while in flight: what came back may be the purged body
            entry = self.store.get(key, request.headers)
            if entry is not None and entry.freshness.response_time >= requested:
                return entry, response  # stored by the collapsed leader
            return self._store(behaviour, request, key, response, requested, tags), response
        raise OriginError(behaviour.origin.name, "purged repeatedly while fetching; try again")

    def _store(
        self,
        behaviour: Behaviour,
        request: Request,
        key: str,
        response: OriginResponse,
        requested: float,
        tags: frozenset[str],
    ) -> Entry | None:
        """Store ``response`` if cacheable; ``tags``: its surrogate keys, parsed by the caller."""
        headers = [(k.lower(), v) for k, v in response.headers]
        verdict = assess(
            "GET",
            response.status,
            headers,
            request_time=requested,
            response_time=self.clock.time(),
            policy=behaviour.policy,
            authorized=request.header("authorization") is not None,
        )
        if not verdict.store or verdict.freshness is None:
            return None
        stored_headers = [
            (k, v) for k, v in response.headers if k.lower() not in _NOT_STORED_HEADERS
        ]
        compressible = (
            behaviour.policy.compress
            and response.status == 200
            and len(response.body) >= _MIN_COMPRESS
            and response.header("content-encoding") is None
            and compressible_type(response.header("content-type"))
        )
        if compressible and "accept-encoding" not in verdict.vary:
            stored_headers.append(("Vary", "Accept-Encoding"))
        entry = Entry(
            key=key,
            path=request.path,
            status=response.status,
            reason=response.reason,
            headers=stored_headers,
            body=response.body,
            freshness=verdict.freshness,
            etag=response.header("etag"),
            last_modified=parse_http_date(response.header("last-modified")),
            surrogate_keys=tags,
            vary=verdict.vary,
            secondary=secondary_key(verdict.vary, request.headers),
            compressible=compressible,
        )
        self.store.put(entry)
        return entry

    async def _revalidate(
        self,
        behaviour: Behaviour,
        route: _Route,
        request: Request,
        key: str,
        query: str,
        entry: Entry,
    ) -> tuple[Entry | None, str, OriginResponse]:
        validators = []
        if entry.etag:
            validators.append(("If-None-Match", entry.etag))
        last_modified = next((v for k, v in entry.headers if k.lower() == "last-modified"), None)
        if last_modified:
            validators.append(("If-Modified-Since", last_modified))
        requested = self.clock.time()
        generation = self.store.generation
        # A conditional fetch is shared only by revalidations of this very variant in
        # this purge generation: a miss must never get its 304.
        collapse = "\x00".join((key, "if", str(generation), *entry.secondary))
        try:
            response, _ = await self.collapser.run(
                collapse, lambda: self._fetch_origin(behaviour, route, request, query, validators)
            )
        except OriginError:
            if entry.freshness.usable_on_error(self.clock.time()):
                self.metrics.stale += 1
                return entry, "Stale", OriginResponse(502, [])
            raise
        if response.status >= 500 and entry.freshness.usable_on_error(self.clock.time()):
            self.metrics.stale += 1
            return entry, "Stale", response
        tags = _tags(response.headers)
        if self.store.purged_since(generation, entry.path, entry.surrogate_keys | tags):
            # Asked before a purge of this object: a 304 or a body from then must not
            # make the purged copy fresh again. Fetch it anew (a background refresh too).
            fresh, answer = await self._miss(behaviour, route, request, key, query)
            return fresh, "Miss", answer
        if response.status == 304:
            self._merge_304(behaviour, entry, response, requested)
            self.metrics.refresh_hits += 1
            return entry, "RefreshHit", response
        self.metrics.misses += 1
        stored = self._store(behaviour, request, key, response, requested, tags)
        if stored is None:
            self.store.remove(entry)
        return stored, "Miss", response

    def _merge_304(
        self, behaviour: Behaviour, entry: Entry, response: OriginResponse, requested: float
    ) -> None:
        # RFC 9111 §4.3.4: the 304's header fields replace the stored ones of the same name.
        updates = {
            k.lower(): (k, v) for k, v in response.headers if k.lower() not in _NOT_STORED_HEADERS
        }
        merged = [(k, v) for k, v in entry.headers if k.lower() not in updates] + list(
            updates.values()
        )
        verdict = assess(
            "GET",
            entry.status,
            [(k.lower(), v) for k, v in merged]
            + [(k.lower(), v) for k, v in response.headers if k.lower() == "age"],
            request_time=requested,
            response_time=self.clock.time(),
            policy=behaviour.policy,
        )
        if verdict.freshness is None:
            self.store.remove(entry)
            return
        entry.headers = merged
        entry.refresh(verdict.freshness)

    def _refresh_later(
        self,
        behaviour: Behaviour,
        route: _Route,
        request: Request,
        key: str,
        query: str,
        entry: Entry,
    ) -> None:
        if key in self._refreshing:
            return  # one background refresh per key at a time
        self._refreshing.add(key)

        async def refresh() -> None:
            try:
                await self._revalidate(behaviour, route, request, key, query, entry)
            except EdgeError:
                pass  # the stale copy stays; the next request tries again
            finally:
                self._refreshing.discard(key)

        task = asyncio.get_running_loop().create_task(refresh())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch_origin(
        self,
        behaviour: Behaviour,
        route: _Route,
        request: Request,
        query: str,
        validators: list[tuple[str, str]],
    ) -> OriginResponse:
        headers = self._forwarded_headers(behaviour.policy, request) + validators
        origin_request = OriginRequest(request.method, request.path, query, headers, request.body)
        hook = route.hooks.get("origin-request")
        if hook is not None:
            cf = request_to_cf(
                origin_request.method, origin_request.path, query, headers, request.client_ip
            )
            result = await self._run_hook(hook, cf)
            if result.request is None:
                return OriginResponse(
                    result.status, result.headers, result.body or b"", result.reason
                )
            origin_request.path, origin_request.query = (
                normalise_path(result.request["uri"])[0],
                result.request.get("querystring", ""),
            )
            origin_request.headers = result.headers
        started = time.perf_counter()
        self.metrics.origin_fetches += 1
        response = await behaviour.origin.fetch(origin_request)
        elapsed = time.perf_counter() - started
        self.metrics.origin_latency.observe(elapsed)
        hook = route.hooks.get("origin-response")
        if hook is not None:
            cf_request = request_to_cf(
                origin_request.method,
                origin_request.path,
                origin_request.query,
                origin_request.headers,
                request.client_ip,
            )
            result = await self._run_hook(
                hook, cf_request, response_to_cf(response.status, response.reason, response.headers)
            )
            body = response.body if result.body is None else result.body
            response = OriginResponse(result.status, result.headers, body, result.reason)
        response.elapsed = elapsed
        return response

    def _forwarded_headers(self, policy: CachePolicy, request: Request) -> list[tuple[str, str]]:
        out = [(name, value) for name, value in request.headers if name in policy.headers]
        if policy.cookies:
            kept = []
            for value in (v for k, v in request.headers if k == "cookie"):
                for part in value.split(";"):
                    name = part.strip().partition("=")[0]
                    if name in policy.cookies:
                        kept.append(part.strip())
            if kept:
                out.append(("cookie", "; ".join(kept)))
        if request.header("authorization") is not None and policy.store_authorized:
            out.append(("authorization", request.header("authorization") or ""))
        return out

    # -- building responses -------------------------------------------------------------

    async def _deliver(
        self,
        route: _Route,
        request: Request,
        entry: Entry,
        x_cache: str,
        timing: float | None = None,
    ) -> bytes:
        now = self.clock.time()
        head = request.method == "HEAD"
        viewer_response = route.hooks.get("viewer-response")
        # Ranges are served from the identity representation only.
        coding = (
            choose_coding(request.headers)
            if entry.compressible and request.header("range") is None
            else None
        )
        if (
            viewer_response is None
            and x_cache == "Hit"
            and timing is None
            and not _has_conditional(request)
        ):
            data = entry.response(now, head, coding=coding)
            self.metrics.bytes_out += len(data)
            return data
        headers = list(entry.encoded_headers(coding)) + [
            ("Age", str(int(entry.freshness.age(now)))),
            ("X-Cache", x_cache),
        ]
        if timing is not None:
            headers.append(("Server-Timing", f"origin;dur={timing * 1000:.1f}"))
        status, reason = entry.status, entry.reason
        body = entry.encoded(coding)
        if entry.status == 200 and not_modified(request.headers, entry.etag, entry.last_modified):
            status, reason, body = 304, "Not Modified", b""
            # RFC 9110 §15.4.5: a 304 carries the validators and caching fields only.
            headers = [(k, v) for k, v in headers if k.lower() in _304_FIELDS]
        elif entry.status == 200 and coding is None:
            selected = parse_range(
                request.header("range"),
                len(entry.body),
                if_range=request.header("if-range"),
                etag=entry.etag,
                last_modified=entry.last_modified,
            )
            if selected.status == 206:
                status, reason = 206, "Partial Content"
                body = entry.body[selected.start : selected.end + 1]
                headers.append(
                    ("Content-Range", f"bytes {selected.start}-{selected.end}/{len(entry.body)}")
                )
            elif selected.status == 416:
                status, reason, body = 416, "Range Not Satisfiable", b""
                headers.append(("Content-Range", f"bytes */{len(entry.body)}"))
            headers.append(("Accept-Ranges", "bytes"))
        return await self._finish(route, request, status, reason, headers, body)

    async def _deliver_uncached(
        self,
        route: _Route,
        request: Request,
        response: OriginResponse,
        x_cache: str,
        timing: float | None = None,
    ) -> bytes:
        headers = [(k, v) for k, v in response.headers if k.lower() not in _NOT_STORED_HEADERS]
        headers.append(("X-Cache", x_cache))
        if timing:
            headers.append(("Server-Timing", f"origin;dur={timing * 1000:.1f}"))
        return await self._finish(
            route, request, response.status, response.reason, headers, response.body
        )

    async def _finish(
        self,
        route: _Route,
        request: Request,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> bytes:
        hook = route.hooks.get("viewer-response")
        if hook is not None:
            result = await self._run_hook(
                hook, self._cf_request(request), response_to_cf(status, reason, headers)
            )
            status, reason = result.status, result.reason or reason
            headers = _framing_free(result.headers)
        length = len(body)
        if status == 304 or status == 204:
            body = b""
        data = build_head(
            status,
            reason,
            headers,
            length if status not in (204, 304) else None,
            keep_alive=request.keep_alive,
        )
        if request.method != "HEAD":
            data += body
        self.metrics.bytes_out += len(data)
        return data

    def _generated(self, result: HookResult, request: Request) -> bytes:
        body = result.body or b""
        data = build_head(
            result.status,
            result.reason or "Generated",
            [*_framing_free(result.headers), ("X-Cache", "FunctionGeneratedResponse")],
            len(body),
            keep_alive=request.keep_alive,
        )
        if request.method != "HEAD":
            data += body
        self.metrics.bytes_out += len(data)
        return data

    # -- hooks -----------------------------------------------------------------------

    def _cf_request(self, request: Request) -> dict[str, object]:
        return request_to_cf(
            request.method, request.path, request.query, request.headers, request.client_ip
        )

    def _adopt(self, request: Request, result: HookResult) -> None:
        assert result.request is not None
        uri = result.request["uri"]
        if uri != request.path:
            request.path = normalise_path(str(uri))[0]
        request.query = str(result.request.get("querystring", ""))
        if result.added is not None:
            # The given headers came back untouched: keep them, append what was added.
            request.headers = [*request.headers, *result.added]
        else:
            request.headers = result.headers  # names already lowercase (headers_from_cf)

    async def _run_hook(
        self, hook: Hook, request: dict[str, object], response: dict[str, object] | None = None
    ) -> HookResult:
        return await hook.run(request, response)

    async def close(self) -> None:
        """Wait for background refreshes and close the origins."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        seen: set[int] = set()
        for behaviour in self.behaviours:
            if id(behaviour.origin) not in seen:
                seen.add(id(behaviour.origin))
                await behaviour.origin.close()


def _framing_free(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A hook's headers without the ones the edge frames the message with.

    The edge writes ``Content-Length`` itself; a second one (or a
    ``Transfer-Encoding``) from a function would make the response ambiguous
    to the client and everything between: the response-splitting case.
    """
    return [(k, v) for k, v in headers if k.lower() not in _FRAMING]


def _has_conditional(request: Request) -> bool:
    # dict() of the pairs and the set check both run in C: no generator per hooked hit.
    return not _CONDITIONAL.isdisjoint(dict(request.headers))


def _tags(headers: list[tuple[str, str]]) -> frozenset[str]:
    """The surrogate keys a response is tagged with (``Surrogate-Key`` / ``Cache-Tag``)."""
    tags: set[str] = set()
    for name, value in headers:
        if name.lower() in ("surrogate-key", "cache-tag"):
            tags.update(tag for tag in value.replace(",", " ").split() if tag)
    return frozenset(tags)
