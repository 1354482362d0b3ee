"""The App: what a reflow application declares.

An :class:`App` is a registry. Its decorators record a frozen ``*Config`` for
each handler and hand the function back unchanged, so a handler stays a plain
function that tests can call directly. Everything is checked at decoration
time: a handler without ``(event, context)``, a name used twice, an unknown
edge hook or an unreadable flow file raises :class:`RegistrationError` when
the module is imported, naming the function and the problem, not when the
first event arrives.

Decorators stack. ``@app.on(...)`` and the other trigger decorators register
the handler as a function with default settings unless ``@app.function(...)``
has registered it (in either order), so::

    @app.on({"source": ["cms"]})
    @app.function(timeout=30)
    def render(event, context): ...

is one function, ``render``, with a rule that targets it. Once the app has
started (``freeze()``), registrations are refused with :class:`AppFrozenError`.

This module imports only the standard library: loading an app must not pull
in the engines that run it.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit

from reflow.errors import AppFrozenError, RegistrationError

__all__ = [
    "EDGE_HOOKS",
    "HTTP_METHODS",
    "ISOLATION_MODES",
    "App",
    "BucketConfig",
    "ChangeConfig",
    "EdgeOriginConfig",
    "EdgeConfig",
    "FlowConfig",
    "FunctionConfig",
    "Handler",
    "RouteConfig",
    "RuleConfig",
    "ScheduleConfig",
    "TableConfig",
]

Handler = Callable[..., Any]
F = TypeVar("F", bound=Handler)

EDGE_HOOKS = ("viewer-request", "origin-request", "origin-response", "viewer-response")
ISOLATION_MODES = ("inline", "process")
EDGE_SHAPES = ("lambda@edge", "function")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*")

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
_SCHEDULE_RE = re.compile(r"^(rate|cron|at)\((.+)\)$")


# --- the frozen records ----------------------------------------------------


@dataclass(frozen=True)
class FunctionConfig:
    """A function: a handler and how it runs."""

    name: str
    handler: Handler
    timeout: float = 3.0
    memory_mb: int = 128
    isolation: str = "inline"
    provisioned: int = 0
    reserved: int | None = None
    permissions: tuple[str, ...] = ()
    retries: int = 2
    max_event_age: float = 6 * 3600.0
    on_success: str | None = None
    on_failure: str | None = None
    environment: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    implicit: bool = False  # created by a trigger decorator, not by @app.function

    @property
    def is_async(self) -> bool:
        """Whether the handler is an ``async def``."""
        return inspect.iscoroutinefunction(self.handler)


@dataclass(frozen=True)
class RuleConfig:
    """An event rule: a pattern on a bus and the target it delivers to.

    ``target`` is ``function:<name>``, ``flow:<name>``, ``bus:<name>`` or an
    ``http(s)://`` URL; empty means the rule's ``function`` (``@app.on``).
    ``function`` is empty for a rule whose target is not a function.
    ``timeout`` (seconds) and ``headers`` are a webhook target's: header
    values are literals or ``env:<VARIABLE>`` / ``secret:<name>``
    references, looked up at each delivery.
    """

    name: str
    pattern: Mapping[str, Any]
    function: str
    bus: str = "default"
    max_attempts: int = 185
    max_event_age: float = 24 * 3600.0
    input_path: str | None = None
    input_template: Any = None
    dead_letter: bool = True
    target: str = ""
    timeout: float = 10.0
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def target_kind(self) -> tuple[str, str]:
        """``(kind, reference)``: ``("function", "render")``, ``("webhook", url)``, ..."""
        if not self.target:
            return ("function", self.function)
        kind, _, ref = self.target.partition(":")
        if kind in ("http", "https"):
            return ("webhook", self.target)
        return (kind, ref)


@dataclass(frozen=True)
class EdgeConfig:
    """An edge function at one of the four CDN hooks, for paths matching ``path``."""

    name: str
    hook: str
    path: str
    function: str
    shape: str = "lambda@edge"
    include_body: bool = False


@dataclass(frozen=True)
class RouteConfig:
    """An HTTP API route served by a function."""

    name: str
    method: str
    path: str
    function: str


@dataclass(frozen=True)
class ScheduleConfig:
    """A function fired on a ``rate(...)``, ``cron(...)`` or ``at(...)`` schedule."""

    name: str
    expression: str
    function: str
    payload: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class FlowConfig:
    """A state machine definition (Amazon States Language), parsed from JSON.

    ``permissions`` are what its task integrations (``events:putEvents``,
    ``dynamodb:*``, cache purges) declare, in ``app.function``'s format: the
    authorisation hook sees them on the function ``flow:NAME`` they run as.
    """

    name: str
    definition: Mapping[str, Any]
    source: str | None = None  # the file it was read from, if any
    kind: str = "STANDARD"
    permissions: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableConfig:
    """A table: its key attributes, TTL attribute and change stream (``reflow.state``)."""

    name: str
    key: str = "id"
    sort_key: str | None = None
    ttl_attribute: str | None = None
    stream: bool = True
    retention: float = 24 * 3600.0  # seconds the change stream keeps records
    replicate_to: tuple[str, ...] = ()  # regions of a global table (reflow.state.replication)


@dataclass(frozen=True)
class BucketConfig:
    """A bucket: a namespace of the ``Blobs`` primitive (``NAME/...``), an edge origin."""

    name: str
    index: str = "index.html"


# The cache-policy options app.edge_origin accepts, with their types (reflow.edge.cache).
EDGE_POLICY_OPTIONS: Mapping[str, type | tuple[type, ...]] = MappingProxyType(
    {
        "default_ttl": (int, float),
        "min_ttl": (int, float),
        "max_ttl": (int, float),
        "negative_ttl": (int, float),
        "query_strings": (str, tuple, list),
        "headers": (tuple, list),
        "cookies": (tuple, list),
        "store_authorized": bool,
        "store_set_cookie": bool,
        "store_private": bool,
        "compress": bool,
    }
)
_ORIGIN_RE = re.compile(r"^(bucket:[A-Za-z_][A-Za-z0-9_.-]*|http://[^/\s]+(/\S*)?|asgi:\S+:\S+)$")


@dataclass(frozen=True)
class EdgeOriginConfig:
    """A CloudFront-style cache behaviour: a path pattern, its origin and cache policy.

    ``origin`` is ``bucket:NAME``, ``http://host:port`` or ``asgi:module:attr``;
    ``failover`` names a secondary origin tried on connect errors and 5xx.
    """

    path_pattern: str
    origin: str
    failover: str | None = None
    timeout: float = 10.0
    policy: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # How often an http:// origin retries a failed connect (nothing sent yet).
    connect_retries: int = 2


@dataclass(frozen=True)
class ChangeConfig:
    """A function run on every change record of a streamed table."""

    name: str
    table: str
    function: str
    batch_size: int = 10


# --- the App ---------------------------------------------------------------


class App:
    """A reflow application: its functions and what triggers them.

    Decorators register and return the function unchanged; ``freeze()`` (done
    by the runtime when the app starts) makes the registrations final.
    """

    def __init__(self, name: str, *, root: str | Path | None = None) -> None:
        _check_name(name, "app")
        self.name = name
        # Relative flow paths resolve against the file that created the App.
        self.root = Path(root) if root is not None else _caller_dir()
        self._functions: dict[str, FunctionConfig] = {}
        self._rules: dict[str, RuleConfig] = {}
        self._edges: dict[str, EdgeConfig] = {}
        self._routes: dict[str, RouteConfig] = {}
        self._schedules: dict[str, ScheduleConfig] = {}
        self._flows: dict[str, FlowConfig] = {}
        self._tables: dict[str, TableConfig] = {}
        self._changes: dict[str, ChangeConfig] = {}
        self._buckets: dict[str, BucketConfig] = {}
        self._edge_origins: dict[str, EdgeOriginConfig] = {}
        self._frozen = False

    # -- reading what was registered ---------------------------------------

    @property
    def functions(self) -> Mapping[str, FunctionConfig]:
        """Every function by name, including those created by triggers."""
        return MappingProxyType(self._functions)

    @property
    def rules(self) -> Mapping[str, RuleConfig]:
        """Event rules by name."""
        return MappingProxyType(self._rules)

    @property
    def edges(self) -> Mapping[str, EdgeConfig]:
        """Edge functions by name."""
        return MappingProxyType(self._edges)

    @property
    def routes(self) -> Mapping[str, RouteConfig]:
        """HTTP API routes by name."""
        return MappingProxyType(self._routes)

    @property
    def schedules(self) -> Mapping[str, ScheduleConfig]:
        """Schedules by name."""
        return MappingProxyType(self._schedules)

    @property
    def flows(self) -> Mapping[str, FlowConfig]:
        """State machines by name."""
        return MappingProxyType(self._flows)

    @property
    def tables(self) -> Mapping[str, TableConfig]:
        """Tables by name."""
        return MappingProxyType(self._tables)

    @property
    def changes(self) -> Mapping[str, ChangeConfig]:
        """Change-stream handlers by name."""
        return MappingProxyType(self._changes)

    @property
    def buckets(self) -> Mapping[str, BucketConfig]:
        """Buckets by name."""
        return MappingProxyType(self._buckets)

    @property
    def edge_origins(self) -> Mapping[str, EdgeOriginConfig]:
        """Edge cache behaviours by path pattern, in registration order."""
        return MappingProxyType(self._edge_origins)

    @property
    def frozen(self) -> bool:
        """Whether the app has started and refuses new registrations."""
        return self._frozen

    def freeze(self) -> App:
        """Make the registrations final; called when the app starts."""
        self._frozen = True
        return self

    def invoke(self, name: str, payload: Any = None) -> Any:
        """Run function ``name`` once, synchronously, through the functions runtime.

        Blocking, for scripts and tests outside an event loop; its isolation,
        timeout and memory limit apply. Failures raise from the
        ``FunctionError`` tree (``HandlerError``, ``FunctionTimeoutError``, ...).
        """
        # Imported here: this module stays standard-library-only at import time.
        from reflow.functions.runtime import invoke_once

        return invoke_once(self, name, payload)

    @property
    def events(self) -> Any:
        """Put events outside handlers: ``await app.events.put(entries, bus=..., backend=...)``.

        Goes to this app's running events service in this process, or, with
        ``backend=`` (a Backend or a URL), straight to that backend's bus; see
        :class:`reflow.events.service.AppEvents` and docs/bus.md.
        """
        # Imported here: this module stays standard-library-only at import time.
        from reflow.events.service import AppEvents

        return AppEvents(self)

    def summary(self) -> dict[str, list[str]]:
        """Names of everything registered, by kind (for the CLI and admin API)."""
        return {
            "functions": sorted(self._functions),
            "rules": sorted(self._rules),
            "edges": sorted(self._edges),
            "routes": sorted(self._routes),
            "schedules": sorted(self._schedules),
            "flows": sorted(self._flows),
        }

    # -- decorators ---------------------------------------------------------

    # Two overloads so that every spelling keeps the handler's own type for the
    # type checker: ``@app.function`` and ``app.function(handler, ...)`` return
    # the handler, ``@app.function(...)`` returns a decorator that does.
    @overload
    def function(
        self,
        handler: F,
        /,
        *,
        name: str | None = None,
        timeout: float = 3.0,
        memory_mb: int = 128,
        isolation: str = "inline",
        provisioned: int = 0,
        reserved: int | None = None,
        permissions: Sequence[str] = (),
        retries: int = 2,
        max_event_age: float = 6 * 3600.0,
        on_success: str | None = None,
        on_failure: str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> F: ...

    @overload
    def function(
        self,
        handler: None = None,
        /,
        *,
        name: str | None = None,
        timeout: float = 3.0,
        memory_mb: int = 128,
        isolation: str = "inline",
        provisioned: int = 0,
        reserved: int | None = None,
        permissions: Sequence[str] = (),
        retries: int = 2,
        max_event_age: float = 6 * 3600.0,
        on_success: str | None = None,
        on_failure: str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> Callable[[F], F]: ...

    def function(
        self,
        handler: F | None = None,
        /,
        *,
        name: str | None = None,
        timeout: float = 3.0,
        memory_mb: int = 128,
        isolation: str = "inline",
        provisioned: int = 0,
        reserved: int | None = None,
        permissions: Sequence[str] = (),
        retries: int = 2,
        max_event_age: float = 6 * 3600.0,
        on_success: str | None = None,
        on_failure: str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> F | Callable[[F], F]:
        """Register a function; usable bare (``@app.function``) or with options."""

        def register(f: F) -> F:
            fname = name or _handler_name(f)
            self._check_open(f"function {fname!r}")
            _check_name(fname, "function")
            _check_handler(fname, f)
            problems = _function_problems(
                timeout, memory_mb, isolation, provisioned, reserved, retries, max_event_age
            )
            if problems:
                raise RegistrationError(fname, "; ".join(problems))
            perms = _permissions(fname, permissions)
            existing = self._functions.get(fname)
            if existing is not None and not (existing.implicit and existing.handler is f):
                raise RegistrationError(fname, _duplicate(existing.handler, f))
            self._functions[fname] = FunctionConfig(
                name=fname,
                handler=f,
                timeout=float(timeout),
                memory_mb=int(memory_mb),
                isolation=isolation,
                provisioned=int(provisioned),
                reserved=reserved,
                permissions=perms,
                retries=int(retries),
                max_event_age=float(max_event_age),
                on_success=on_success,
                on_failure=on_failure,
                environment=MappingProxyType(dict(environment or {})),
            )
            return f

        if handler is not None:
            return register(handler)
        return register

    def on(
        self,
        pattern: Mapping[str, Any] | str,
        *,
        name: str | None = None,
        bus: str = "default",
        max_attempts: int = 185,
        max_event_age: float = 24 * 3600.0,
        input_path: str | None = None,
        input_template: Any = None,
        dead_letter: bool = True,
    ) -> Callable[[F], F]:
        """Run the decorated function for every event on ``bus`` matching ``pattern``.

        ``pattern`` is an EventBridge event pattern, as a dict or JSON text.
        """
        parsed = _parse_pattern(pattern, name or "rule")

        def register(f: F) -> F:
            function = self._ensure_function(f)
            rname = name or f"{function}.on.{len(self._rules_for(function)) + 1}"
            self._check_open(f"rule {rname!r}")
            _check_name(rname, "rule")
            _check_name(bus, "bus")
            if rname in self._rules:
                raise RegistrationError(rname, "a rule of that name is already registered")
            if max_attempts < 1:
                raise RegistrationError(rname, f"max_attempts must be >= 1, got {max_attempts}")
            if max_event_age <= 0:
                raise RegistrationError(rname, f"max_event_age must be > 0, got {max_event_age}")
            if input_path is not None and not input_path.startswith("$"):
                raise RegistrationError(rname, f"input_path {input_path!r} must start with '$'")
            _validate_pattern(rname, parsed)
            self._rules[rname] = RuleConfig(
                name=rname,
                pattern=parsed,
                function=function,
                bus=bus,
                max_attempts=int(max_attempts),
                max_event_age=float(max_event_age),
                input_path=input_path,
                input_template=copy.deepcopy(input_template),
                dead_letter=dead_letter,
            )
            return f

        return register

    def rule(
        self,
        name: str,
        pattern: Mapping[str, Any] | str,
        *,
        target: str,
        bus: str = "default",
        max_attempts: int = 185,
        max_event_age: float = 24 * 3600.0,
        input_path: str | None = None,
        input_template: Any = None,
        dead_letter: bool = True,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> RuleConfig:
        """Deliver events on ``bus`` matching ``pattern`` to ``target``, without a handler.

        ``target`` is ``"function:<name>"``, ``"flow:<name>"`` (starts an
        execution named ``<rule>:<event id>``), ``"bus:<name>"`` (forwards the
        event, keeping its id) or an ``http://``/``https://`` URL (POSTs the
        input as JSON). The named function or flow must be registered by the
        time the app starts.

        A webhook takes ``timeout`` (seconds, default 10, at most 300) and
        ``headers`` sent with each POST: a value is a literal,
        ``"env:VARIABLE"`` or ``"secret:name"`` (the file ``name`` in
        ``REFLOW_SECRETS_DIR``, default ``/run/secrets``), read at each
        delivery. A credential header (``Authorization``, or a name with
        ``token``, ``key``, ``secret`` ...) must use ``env:`` or ``secret:``.
        """
        self._check_open(f"rule {name!r}")
        _check_name(name, "rule")
        _check_name(bus, "bus")
        if name in self._rules:
            raise RegistrationError(name, "a rule of that name is already registered")
        parsed = _parse_pattern(pattern, name)
        function = _check_rule_target(name, target, bus)
        if max_attempts < 1:
            raise RegistrationError(name, f"max_attempts must be >= 1, got {max_attempts}")
        if max_event_age <= 0:
            raise RegistrationError(name, f"max_event_age must be > 0, got {max_event_age}")
        if input_path is not None and not input_path.startswith("$"):
            raise RegistrationError(name, f"input_path {input_path!r} must start with '$'")
        _validate_pattern(name, parsed)
        webhook = target.startswith(("http://", "https://"))
        if not webhook and (timeout is not None or headers is not None):
            raise RegistrationError(name, "timeout and headers apply to http(s):// targets only")
        from reflow.events.targets import check_webhook_options

        try:
            seconds, checked = check_webhook_options(timeout, headers)
        except ValueError as exc:
            raise RegistrationError(name, str(exc)) from None
        config = RuleConfig(
            name=name,
            pattern=parsed,
            function=function,
            bus=bus,
            max_attempts=int(max_attempts),
            max_event_age=float(max_event_age),
            input_path=input_path,
            input_template=copy.deepcopy(input_template),
            dead_letter=dead_letter,
            target=target,
            timeout=seconds,
            headers=MappingProxyType(checked),
        )
        self._rules[name] = config
        return config

    def edge(
        self,
        hook: str,
        path: str = "/*",
        *,
        name: str | None = None,
        shape: str = "lambda@edge",
        include_body: bool = False,
    ) -> Callable[[F], F]:
        """Run the decorated function at an edge ``hook`` for requests matching ``path``."""
        if hook not in EDGE_HOOKS:
            raise RegistrationError(
                name or "edge", f"unknown hook {hook!r}; expected one of {', '.join(EDGE_HOOKS)}"
            )
        if not isinstance(path, str) or not path.startswith("/"):
            raise RegistrationError(name or "edge", f"path {path!r} must start with '/'")
        if shape not in EDGE_SHAPES:
            raise RegistrationError(
                name or "edge", f"unknown shape {shape!r}; expected one of {', '.join(EDGE_SHAPES)}"
            )

        def register(f: F) -> F:
            function = self._ensure_function(f)
            ename = name or f"{function}.{hook}"
            self._check_open(f"edge function {ename!r}")
            if ename in self._edges:
                raise RegistrationError(
                    ename, "an edge function of that name is already registered"
                )
            self._edges[ename] = EdgeConfig(
                name=ename,
                hook=hook,
                path=path,
                function=function,
                shape=shape,
                include_body=include_body,
            )
            return f

        return register

    def route(self, method: str, path: str, *, name: str | None = None) -> Callable[[F], F]:
        """Serve HTTP ``method`` requests for ``path`` (``/api/articles/{id}``) with a function."""
        verb = method.upper()
        if verb not in HTTP_METHODS:
            raise RegistrationError(
                name or "route", f"unknown method {method!r}; expected one of {HTTP_METHODS}"
            )
        if not path.startswith("/"):
            raise RegistrationError(name or "route", f"path {path!r} must start with '/'")

        def register(f: F) -> F:
            function = self._ensure_function(f)
            rname = name or f"{verb} {path}"
            self._check_open(f"route {rname!r}")
            for other in self._routes.values():
                if other.method == verb and other.path == path:
                    raise RegistrationError(
                        rname, f"{verb} {path} is already served by function {other.function!r}"
                    )
            if rname in self._routes:
                raise RegistrationError(rname, "a route of that name is already registered")
            self._routes[rname] = RouteConfig(name=rname, method=verb, path=path, function=function)
            return f

        return register

    def schedule(
        self,
        expression: str,
        *,
        name: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> Callable[[F], F]:
        """Fire the decorated function on ``rate(5 minutes)`` or ``cron(0 12 * * ? *)``."""
        match = _SCHEDULE_RE.match(expression.strip()) if isinstance(expression, str) else None
        if match is None:
            raise RegistrationError(
                name or "schedule",
                f"schedule {expression!r} is not rate(...), cron(...) or at(...)",
            )
        _validate_schedule(name or "schedule", expression.strip())

        def register(f: F) -> F:
            function = self._ensure_function(f)
            sname = name or f"{function}.schedule"
            self._check_open(f"schedule {sname!r}")
            if sname in self._schedules:
                raise RegistrationError(sname, "a schedule of that name is already registered")
            self._schedules[sname] = ScheduleConfig(
                name=sname,
                expression=expression.strip(),
                function=function,
                payload=MappingProxyType(copy.deepcopy(dict(payload or {}))),
            )
            return f

        return register

    def flow(
        self,
        name: str,
        definition: Mapping[str, Any] | str | Path,
        *,
        kind: str = "STANDARD",
        permissions: Sequence[str] = (),
    ) -> FlowConfig:
        """Register a state machine from an ASL dict, JSON text, or a path to a JSON file.

        ``permissions`` (as ``app.function``'s: ``"service:action[:resource]"``)
        are declared for its task integrations, which run as the function
        ``flow:NAME``.
        """
        self._check_open(f"flow {name!r}")
        _check_name(name, "flow")
        if name in self._flows:
            raise RegistrationError(name, "a flow of that name is already registered")
        if kind.upper() not in ("STANDARD", "EXPRESS"):
            raise RegistrationError(name, f"kind {kind!r} must be STANDARD or EXPRESS")
        perms = _permissions(name, permissions)
        parsed, source = self._load_definition(name, definition)
        _validate_flow(name, parsed)
        config = FlowConfig(
            name=name, definition=parsed, source=source, kind=kind.upper(), permissions=perms
        )
        self._flows[name] = config
        return config

    def table(
        self,
        name: str,
        *,
        key: str = "id",
        sort_key: str | None = None,
        ttl_attribute: str | None = None,
        stream: bool = True,
        retention: float = 24 * 3600.0,
        replicate_to: Sequence[str] = (),
    ) -> TableConfig:
        """Declare a table; handlers reach it as ``context.tables[name]``.

        ``replicate_to=["eu", "us"]`` makes it a global table, replicated
        active-active between those regions (``REFLOW_REGION`` names this one).
        """
        self._check_open(f"table {name!r}")
        _check_name(name, "table")
        if name in self._tables:
            raise RegistrationError(name, "a table of that name is already registered")
        for what, attribute in (("key", key), ("sort_key", sort_key), ("ttl", ttl_attribute)):
            if attribute is not None and (not isinstance(attribute, str) or not attribute):
                raise RegistrationError(name, f"{what} attribute must be a non-empty string")
        if sort_key is not None and sort_key == key:
            raise RegistrationError(name, f"sort_key {sort_key!r} must differ from key")
        if not retention > 0:
            raise RegistrationError(name, f"retention must be > 0 seconds, got {retention}")
        if isinstance(replicate_to, str) or not all(
            isinstance(region, str) and re.fullmatch(r"[a-z][a-z0-9-]{0,31}", region)
            for region in replicate_to
        ):
            raise RegistrationError(
                name, f"replicate_to must list region names, got {replicate_to!r}"
            )
        if replicate_to and not stream:
            raise RegistrationError(
                name, "a replicated table needs its change stream (stream=True)"
            )
        config = TableConfig(
            name,
            key,
            sort_key,
            ttl_attribute,
            bool(stream),
            float(retention),
            tuple(dict.fromkeys(replicate_to)),
        )
        self._tables[name] = config
        return config

    def bucket(self, name: str, *, index: str = "index.html") -> BucketConfig:
        """Declare a bucket (objects under ``NAME/`` in the backend's ``Blobs``)."""
        self._check_open(f"bucket {name!r}")
        _check_name(name, "bucket")
        if name in self._buckets:
            raise RegistrationError(name, "a bucket of that name is already registered")
        if not index or "/" in index:
            raise RegistrationError(name, f"index {index!r} must be a plain file name")
        config = BucketConfig(name, index)
        self._buckets[name] = config
        return config

    def edge_origin(
        self,
        path_pattern: str,
        origin: str,
        *,
        failover: str | None = None,
        timeout: float = 10.0,
        connect_retries: int = 2,
        **policy: Any,
    ) -> EdgeOriginConfig:
        """Serve paths matching ``path_pattern`` (``*``, ``?``) at the edge from ``origin``.

        ``policy`` sets the behaviour's cache policy: ``default_ttl``,
        ``min_ttl``, ``max_ttl``, ``negative_ttl``, ``query_strings`` (names or
        ``"all"``), ``headers``, ``cookies`` (names in the cache key; none by
        default), ``store_authorized``, ``store_set_cookie``, ``store_private``,
        ``compress``. The most specific pattern wins at run time.
        ``connect_retries`` (0-10, default 2) is how often an ``http://`` origin
        retries a failed connect, backing off; a request that reached the origin
        is never retried.
        """
        where = f"edge origin {path_pattern!r}"
        self._check_open(where)
        if not isinstance(path_pattern, str) or not (
            path_pattern.startswith("/") or path_pattern == "*"
        ):
            raise RegistrationError(where, "path pattern must start with '/' (or be '*')")
        if path_pattern in self._edge_origins:
            raise RegistrationError(where, "a behaviour for that pattern is already registered")
        for spec in (origin, failover):
            if spec is not None and (not isinstance(spec, str) or not _ORIGIN_RE.match(spec)):
                raise RegistrationError(
                    where, f"origin {spec!r} must be bucket:NAME, http://host:port or asgi:mod:attr"
                )
        if not 0 < timeout <= 180:
            raise RegistrationError(where, f"timeout must be in (0, 180] seconds, got {timeout}")
        if (
            not isinstance(connect_retries, int)
            or isinstance(connect_retries, bool)
            or not 0 <= connect_retries <= 10
        ):
            raise RegistrationError(
                where, f"connect_retries must be an integer in [0, 10], got {connect_retries!r}"
            )
        for option, value in policy.items():
            expected = EDGE_POLICY_OPTIONS.get(option)
            if expected is None:
                raise RegistrationError(
                    where,
                    f"unknown policy option {option!r}; expected {sorted(EDGE_POLICY_OPTIONS)}",
                )
            if not isinstance(value, expected) or (
                expected is not bool and isinstance(value, bool)
            ):
                raise RegistrationError(where, f"{option} has the wrong type: {value!r}")
            if option.endswith("_ttl") and isinstance(value, (int, float)) and value < 0:
                raise RegistrationError(where, f"{option} must be >= 0, got {value}")
        if policy.get("min_ttl", 0) > policy.get("max_ttl", float("inf")):
            raise RegistrationError(where, "min_ttl must not exceed max_ttl")
        frozen_policy = {k: tuple(v) if isinstance(v, list) else v for k, v in policy.items()}
        config = EdgeOriginConfig(
            path_pattern,
            origin,
            failover,
            float(timeout),
            MappingProxyType(frozen_policy),
            connect_retries,
        )
        self._edge_origins[path_pattern] = config
        return config

    def on_change(
        self, table: str, *, name: str | None = None, batch_size: int = 10
    ) -> Callable[[F], F]:
        """Run the decorated function on every change record of ``table``.

        The table must be declared (``app.table``) with ``stream=True`` before.
        """
        config = self._tables.get(table)
        if config is None:
            raise RegistrationError(name or table, f"no table named {table!r}; declare it first")
        if not config.stream:
            raise RegistrationError(name or table, f"table {table!r} has stream=False")
        if not 1 <= batch_size <= 1000:
            raise RegistrationError(
                name or table, f"batch_size must be in [1, 1000], got {batch_size}"
            )

        def register(f: F) -> F:
            function = self._ensure_function(f)
            cname = name or f"{function}.on_change.{table}"
            self._check_open(f"change handler {cname!r}")
            if cname in self._changes:
                raise RegistrationError(
                    cname, "a change handler of that name is already registered"
                )
            self._changes[cname] = ChangeConfig(cname, table, function, int(batch_size))
            return f

        return register

    # -- internals ----------------------------------------------------------

    def _ensure_function(self, f: Handler) -> str:
        """The name of ``f`` as a function, registering it with defaults if needed."""
        for config in self._functions.values():
            if config.handler is f:
                return config.name
        fname = _handler_name(f)
        self._check_open(f"function {fname!r}")
        _check_name(fname, "function")
        _check_handler(fname, f)
        existing = self._functions.get(fname)
        if existing is not None:
            raise RegistrationError(fname, _duplicate(existing.handler, f))
        self._functions[fname] = FunctionConfig(name=fname, handler=f, implicit=True)
        return fname

    def _rules_for(self, function: str) -> list[RuleConfig]:
        return [r for r in self._rules.values() if r.function == function]

    def _check_open(self, what: str) -> None:
        if self._frozen:
            raise AppFrozenError(self.name, what)

    def _load_definition(
        self, name: str, definition: Mapping[str, Any] | str | Path
    ) -> tuple[dict[str, Any], str | None]:
        if isinstance(definition, Mapping):
            return copy.deepcopy(dict(definition)), None
        text: str
        source: str | None = None
        looks_like_json = isinstance(definition, str) and definition.lstrip().startswith("{")
        if looks_like_json:
            text = str(definition)
        else:
            path = Path(definition)
            if not path.is_absolute():
                path = self.root / path
            source = str(path)
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise RegistrationError(name, f"flow file {source!r} does not exist") from None
            except OSError as exc:
                raise RegistrationError(
                    name, f"flow file {source!r} cannot be read: {exc.strerror}"
                ) from None
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            where = source or "definition"
            raise RegistrationError(
                name,
                f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            ) from None
        if not isinstance(parsed, dict):
            raise RegistrationError(name, "a state machine definition must be a JSON object")
        return parsed, source

    def __repr__(self) -> str:
        counts = ", ".join(f"{len(v)} {k}" for k, v in self.summary().items() if v)
        return f"App({self.name!r}{': ' + counts if counts else ''})"


# --- checks ------------------------------------------------------------------


def _caller_dir() -> Path:
    frame = inspect.currentframe()
    try:
        caller = frame.f_back.f_back if frame and frame.f_back else None
        filename = caller.f_code.co_filename if caller else ""
    finally:
        del frame
    if filename and not filename.startswith("<"):
        return Path(filename).resolve().parent
    return Path.cwd()


def _permissions(owner: str, permissions: Sequence[str]) -> tuple[str, ...]:
    """``permissions`` as a tuple, each checked to be ``"service:action[:resource]"``."""
    perms = tuple(permissions)
    for perm in perms:
        if not isinstance(perm, str) or perm.count(":") < 1:
            raise RegistrationError(
                owner, f"permission {perm!r} is not of the form 'service:action[:resource]'"
            )
    return perms


def _handler_name(f: Handler) -> str:
    name = getattr(f, "__name__", None)
    if not isinstance(name, str) or name == "<lambda>":
        raise RegistrationError(repr(f), "a handler needs a name; pass name=... for lambdas")
    return name


def _check_name(name: str, kind: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RegistrationError(
            str(name),
            f"{kind} name must start with a letter or '_' and contain only letters, "
            "digits, '_', '.', '-' (at most 128 characters)",
        )


def _check_rule_target(rule: str, target: Any, bus: str) -> str:
    """Validate an ``App.rule`` target; the function it names, or ``""``."""
    if not isinstance(target, str):
        raise RegistrationError(rule, f"target {target!r} must be a string")
    kind, sep, ref = target.partition(":")
    if kind in ("http", "https"):
        parts = urlsplit(target)
        if not ref.startswith("//") or not parts.hostname:
            raise RegistrationError(rule, f"target {target!r} is not an http(s) URL with a host")
        return ""
    if not sep or kind not in ("function", "flow", "bus"):
        raise RegistrationError(
            rule,
            f"target {target!r} must be 'function:<name>', 'flow:<name>', "
            "'bus:<name>' or an http(s):// URL",
        )
    if not _NAME_RE.match(ref):
        raise RegistrationError(rule, f"target {target!r} does not name a {kind}")
    if kind == "bus" and ref == bus:
        # Forwarding to its own bus would hand the event straight back to this rule.
        raise RegistrationError(rule, f"target {target!r} is the rule's own bus")
    return ref if kind == "function" else ""


def _check_handler(name: str, f: Handler) -> None:
    """A handler must be callable as ``f(event, context)``."""
    if not callable(f):
        raise RegistrationError(name, f"{f!r} is not callable")
    try:
        signature = inspect.signature(f)
    except (TypeError, ValueError):
        return  # builtins and C callables: nothing to check
    try:
        signature.bind(object(), object())
    except TypeError:
        params = ", ".join(signature.parameters) or "no parameters"
        raise RegistrationError(
            name,
            f"a handler must accept (event, context); {getattr(f, '__qualname__', name)} "
            f"takes ({params})",
        ) from None


def _duplicate(old: Handler, new: Handler) -> str:
    where = _where(old)
    return f"a function of that name is already registered{' at ' + where if where else ''}" + (
        "" if old is not new else " (registered twice)"
    )


def _where(f: Handler) -> str:
    code = getattr(f, "__code__", None)
    if code is None:
        return ""
    return f"{code.co_filename}:{code.co_firstlineno}"


def _function_problems(
    timeout: float,
    memory_mb: int,
    isolation: str,
    provisioned: int,
    reserved: int | None,
    retries: int,
    max_event_age: float,
) -> list[str]:
    problems = []
    if not 0 < timeout <= 900:
        problems.append(f"timeout must be in (0, 900] seconds, got {timeout}")
    if not 16 <= memory_mb <= 10240:
        problems.append(f"memory_mb must be in [16, 10240], got {memory_mb}")
    if isolation not in ISOLATION_MODES:
        problems.append(f"isolation {isolation!r} must be one of {', '.join(ISOLATION_MODES)}")
    if provisioned < 0:
        problems.append(f"provisioned must be >= 0, got {provisioned}")
    if reserved is not None and reserved < 0:
        problems.append(f"reserved must be >= 0, got {reserved}")
    if reserved is not None and provisioned > reserved:
        problems.append(f"provisioned ({provisioned}) cannot exceed reserved ({reserved})")
    if provisioned and isolation == "inline":
        problems.append("provisioned workers need isolation='process'")
    if not 0 <= retries <= 2:
        problems.append(f"retries must be 0, 1 or 2, got {retries}")
    if not 60 <= max_event_age <= 6 * 3600:
        problems.append(f"max_event_age must be in [60, 21600] seconds, got {max_event_age}")
    return problems


def _parse_pattern(pattern: Mapping[str, Any] | str, name: str) -> dict[str, Any]:
    if isinstance(pattern, str):
        try:
            parsed = json.loads(pattern)
        except json.JSONDecodeError as exc:
            raise RegistrationError(name, f"pattern is not valid JSON: {exc.msg}") from None
    else:
        parsed = copy.deepcopy(dict(pattern)) if isinstance(pattern, Mapping) else pattern
    if not isinstance(parsed, dict):
        raise RegistrationError(name, "an event pattern must be a JSON object")
    return parsed


# The deep checks belong to the subsystems (reflow.events compiles patterns and
# parses schedules, reflow.flows validates ASL). They are imported lazily, inside
# these functions, so that importing an app stays cheap; every one of them is
# pure Python over the standard library.


def _validate_pattern(name: str, pattern: Mapping[str, Any]) -> None:
    if not pattern:
        raise RegistrationError(name, "an event pattern must not be empty")
    from reflow.errors import InvalidPatternError
    from reflow.events.patterns import Pattern

    try:
        Pattern(pattern)
    except InvalidPatternError as exc:
        # A RegistrationError names the rule; the InvalidPatternError (with
        # .path and .rule) stays reachable as __cause__.
        raise RegistrationError(name, f"invalid event pattern {exc}") from exc


def _validate_schedule(name: str, expression: str) -> None:
    if not expression:
        raise RegistrationError(name, "a schedule expression must not be empty")
    from reflow.errors import InvalidScheduleError
    from reflow.events.schedules import parse_schedule

    try:
        parse_schedule(expression)
    except InvalidScheduleError as exc:
        raise RegistrationError(name, f"invalid {exc}") from exc


def _validate_flow(name: str, definition: Mapping[str, Any]) -> None:
    """Refuse a malformed state machine now, listing every problem with its path.

    Raises :class:`reflow.errors.InvalidDefinitionError`. The flows package is
    imported here, not at the top, so that app.py stays standard-library only.
    """
    from reflow.flows.validate import problems

    found = problems(definition)
    if found:
        from reflow.errors import InvalidDefinitionError

        raise InvalidDefinitionError([(f"{name}: {path}", message) for path, message in found])


def with_function(config: FunctionConfig, **changes: Any) -> FunctionConfig:
    """A copy of ``config`` with ``changes`` applied (configs are frozen)."""
    return replace(config, **changes)
