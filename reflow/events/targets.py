"""Where a rule delivers: functions, flows, another bus, HTTP webhooks, or a callable.

A target is anything with ``kind``, ``name`` and ``async deliver(payload,
delivery)``. Delivery succeeds when ``deliver`` returns and fails when it
raises; the bus's delivery workers do the retrying, back-off and
dead-lettering, so a target makes exactly one attempt per call.

``delivery`` carries the event id, which stays the same on every
redelivery: function targets pass it as the invocation's request id, webhooks
send it as the ``X-Reflow-Event-Id`` header, so receivers can de-duplicate.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from reflow.errors import EventError, NotAvailableError, SecretNotFoundError
from reflow.functions.secrets import is_secret_name, read_secret
from reflow.functions.secrets import secrets_dir as default_secrets_dir

if TYPE_CHECKING:
    from reflow.events.bus import EventBus
    from reflow.events.delivery import Delivery
    from reflow.functions.runtime import Runtime

__all__ = [
    "BusTarget",
    "CallableTarget",
    "DeliveryFailedError",
    "FlowTarget",
    "FunctionTarget",
    "Target",
    "WebhookTarget",
    "check_webhook_options",
    "execution_name",
]


class DeliveryFailedError(EventError):
    """A target refused or failed a delivery (``.target`` names it)."""

    def __init__(self, target: str, problem: str) -> None:
        self.target = target
        self.problem = problem
        super().__init__(f"target {target}: {problem}")


class Target(Protocol):
    """A rule's destination; one call to ``deliver`` is one attempt."""

    @property
    def kind(self) -> str:
        """``"function"``, ``"flow"``, ``"bus"``, ``"webhook"`` or ``"callable"``."""
        ...

    @property
    def name(self) -> str:
        """What the target is called (function name, URL, ...)."""
        ...

    async def deliver(self, payload: Any, delivery: Delivery) -> None:
        """Deliver ``payload``; raise to have the bus retry."""
        ...


@dataclass(frozen=True)
class CallableTarget:
    """A Python callable ``(payload, delivery)`` (plain or async); for embedding and tests."""

    name: str
    call: Callable[[Any, Delivery], Any]
    kind: str = "callable"

    async def deliver(self, payload: Any, delivery: Delivery) -> None:
        """Call it; await the result if it is awaitable."""
        result = self.call(payload, delivery)
        if inspect.isawaitable(result):
            await result


@dataclass(frozen=True)
class FunctionTarget:
    """A function of the App, invoked synchronously through the functions runtime."""

    runtime: Runtime
    name: str
    kind: str = "function"

    async def deliver(self, payload: Any, delivery: Delivery) -> None:
        """Invoke the function with the event id as its request id."""
        await self.runtime.invoke(self.name, payload, request_id=delivery.event_id, wait=True)


@dataclass(frozen=True)
class BusTarget:
    """Another bus: the event is put there, keeping its id."""

    bus: EventBus
    name: str
    kind: str = "bus"

    async def deliver(self, payload: Any, delivery: Delivery) -> None:
        """Put the original event on the other bus (its id is kept)."""
        await self.bus.put([delivery.event], bus=self.name)


@dataclass(frozen=True)
class FlowTarget:
    """A state machine: each delivery starts one execution, named per (rule, event).

    The name is ``<rule>:<event id>`` (``<replay-name>:<rule>:<event id>`` for
    a replayed event), see :func:`execution_name`: a redelivery finds the
    execution its earlier attempt started, two rules sending one event to the
    same flow start one execution each, and a replay runs the flow again.

    ``start(flow, input, execution_name)`` starts it (see
    :func:`reflow.events.service.flow_starter`). Without one, delivering
    fails with :class:`NotAvailableError`, which the bus retries and finally
    dead-letters: nothing is lost, and a redrive starts the executions once
    flows can be started.
    """

    name: str
    start: Callable[[str, Any, str], Awaitable[Any]] | None = None
    kind: str = "flow"

    async def deliver(self, payload: Any, delivery: Delivery) -> None:
        """Start the flow with the payload, named after the rule and the event id."""
        if self.start is None:
            raise NotAvailableError("flows", "no flows service to start executions with")
        name = execution_name(delivery.event_id, rule=delivery.rule, replay=delivery.replay)
        await self.start(self.name, payload, name)


_EXECUTION_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")


def execution_name(event_id: str, *, rule: str | None = None, replay: str | None = None) -> str:
    """The flow execution name of one delivery: ``[<replay>:][<rule>:]<event id>``.

    Execution names are 1-80 letters, digits and ``_ . : -``. Rule names
    never contain ``:``, so the name is unambiguous; when it would not be a
    valid name (an event id may be any string, a long rule and id may pass
    80 characters, a replay name may hold a ``:``) it maps to
    ``event-<digest>`` of all three parts, still the same on every
    redelivery and different for each rule and replay.
    """
    parts = [part for part in (replay, rule, event_id) if part is not None]
    text = ":".join(parts)
    if _EXECUTION_NAME.match(text) and not any(":" in part for part in parts[:-1]):
        return text
    digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:40]
    return f"event-{digest}"


# --- webhooks ------------------------------------------------------------------

DEFAULT_WEBHOOK_TIMEOUT = 10.0
MAX_WEBHOOK_TIMEOUT = 300.0
# ``secret:<name>`` header values are the files context.secrets reads
# (REFLOW_SECRETS_DIR, default /run/secrets): see reflow.functions.secrets.

# Set by the target itself; a declared header may not replace them.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "connection",
        "transfer-encoding",
        "x-reflow-event-id",
        "x-reflow-rule",
    }
)
# Headers that carry credentials: their value must come from the environment
# or a secret, never be written into the code.
_CREDENTIAL_HINTS = ("auth", "token", "secret", "key", "password", "signature", "cookie")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP field name (RFC 9110)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _is_credential(header: str) -> bool:
    lowered = header.lower()
    return any(hint in lowered for hint in _CREDENTIAL_HINTS)


def check_webhook_options(timeout: Any, headers: Any) -> tuple[float, dict[str, str]]:
    """Validate a webhook's declared ``timeout`` and ``headers``; raise ``ValueError``.

    A header value is a literal, ``env:<VARIABLE>`` (read from the process
    environment at each delivery) or ``secret:<name>`` (read from the file
    ``<secrets dir>/<name>``). Headers that carry credentials (names with
    ``auth``, ``token``, ``key``, ``secret``, ``password``, ``signature`` or
    ``cookie`` in them, such as ``Authorization``) must use ``env:`` or
    ``secret:``: a literal credential in the code is refused.
    """
    if timeout is None:
        seconds = DEFAULT_WEBHOOK_TIMEOUT
    elif isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ValueError(f"timeout must be a number of seconds, got {timeout!r}")
    elif not 0 < timeout <= MAX_WEBHOOK_TIMEOUT:
        raise ValueError(f"timeout must be > 0 and <= {MAX_WEBHOOK_TIMEOUT:g} s, got {timeout!r}")
    else:
        seconds = float(timeout)
    if headers is None:
        return seconds, {}
    if not isinstance(headers, Mapping):
        raise ValueError(f"headers must map header names to values, got {headers!r}")
    checked: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP field name")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by the webhook target itself")
        if name.lower() in seen:
            raise ValueError(f"header {name!r} is given twice")
        seen.add(name.lower())
        if not isinstance(value, str) or not value:
            raise ValueError(f"header {name!r} must have a non-empty string value")
        if any(ch in value for ch in "\r\n\0"):
            raise ValueError(f"header {name!r} must not contain line breaks")
        kind, sep, ref = value.partition(":")
        if sep and kind == "env":
            if not _ENV_NAME.match(ref):
                raise ValueError(f"header {name!r}: {ref!r} is not an environment variable name")
        elif sep and kind == "secret":
            if not is_secret_name(ref):
                raise ValueError(f"header {name!r}: {ref!r} is not a secret name")
        elif _is_credential(name):
            raise ValueError(
                f"header {name!r} carries a credential: take it from the environment "
                f"('env:VARIABLE') or a secret ('secret:name'), not a literal in the code"
            )
        if not value.isascii() and not _latin1(value):
            raise ValueError(f"header {name!r} must be ISO-8859-1 text")
        checked[name] = value
    return seconds, checked


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _header_value(
    url: str, name: str, value: str, environ: Mapping[str, str], secrets_dir: Path
) -> str:
    """A declared header's value at delivery time (a literal, or read from its source)."""
    kind, sep, ref = value.partition(":")
    if sep and kind == "env":
        found = environ.get(ref)
        if not found:
            raise DeliveryFailedError(url, f"header {name}: environment variable {ref} is not set")
    elif sep and kind == "secret":
        try:
            found = read_secret(ref, secrets_dir)
        except (SecretNotFoundError, ValueError) as exc:
            raise DeliveryFailedError(url, f"header {name}: {exc}") from None
        if not found:
            raise DeliveryFailedError(url, f"header {name}: secret {ref!r} is empty")
    else:
        return value
    if any(ch in found for ch in "\r\n\0"):
        # Never echo the value: it is a credential.
        raise DeliveryFailedError(
            url, f"header {name}: the value from {kind} {ref} has line breaks"
        )
    return found


@dataclass(frozen=True)
class WebhookTarget:
    """An HTTP(S) endpoint: POST the payload as JSON; any 2xx status is success.

    ``headers`` are sent with every request (values as
    :func:`check_webhook_options` reads them: ``env:`` and ``secret:``
    values are looked up at each delivery, so a rotated credential is used
    at once). ``environ`` defaults to the process environment and
    ``secrets_dir`` to ``REFLOW_SECRETS_DIR`` or ``/run/secrets``.
    """

    url: str
    timeout: float = DEFAULT_WEBHOOK_TIMEOUT
    headers: Mapping[str, str] = field(default_factory=dict)
    environ: Mapping[str, str] | None = None
    secrets_dir: Path | None = None
    kind: str = "webhook"

    @property
    def name(self) -> str:
        """The URL."""
        return self.url

    def header_lines(self) -> str:
        """The declared headers as request lines, their values resolved now."""
        environ = os.environ if self.environ is None else self.environ
        secrets = self.secrets_dir or default_secrets_dir(environ)
        return "".join(
            f"{name}: {_header_value(self.url, name, value, environ, secrets)}\r\n"
            for name, value in self.headers.items()
        )

    async def deliver(self, payload: Any, delivery: Delivery) -> None:
        """POST the payload; raise :class:`DeliveryFailedError` unless the reply is 2xx."""
        extra = self.header_lines()
        try:
            async with asyncio.timeout(self.timeout):
                status = await self._post(payload, delivery, extra)
        except TimeoutError:
            raise DeliveryFailedError(self.url, f"no reply within {self.timeout:g} s") from None
        except OSError as exc:
            raise DeliveryFailedError(self.url, f"cannot connect: {exc}") from None
        if not 200 <= status < 300:
            raise DeliveryFailedError(self.url, f"replied with status {status}")

    async def _post(self, payload: Any, delivery: Delivery, extra: str) -> int:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DeliveryFailedError(self.url, "the URL must be http:// or https://")
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        body = json.dumps(payload, separators=(",", ":")).encode()
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        head = (
            f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-Reflow-Event-Id: {delivery.event_id}\r\n"
            f"X-Reflow-Rule: {delivery.rule}\r\n"
            f"{extra}"
            "Connection: close\r\n\r\n"
        )
        reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=secure or None)
        try:
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
            status_line = await reader.readline()
        finally:
            writer.close()
            await writer.wait_closed()
        fields = status_line.split()
        if len(fields) < 2 or not fields[1].isdigit():
            raise DeliveryFailedError(self.url, f"malformed status line {status_line[:80]!r}")
        return int(fields[1])
