"""The event: a CloudEvents 1.0 envelope, and the EventBridge view that patterns match.

reflow keeps events as CloudEvents (``id``, ``source``, ``type``,
``specversion``, ``time``, ``subject``, ``datacontenttype``, ``dataschema``,
``data`` and extension attributes), because that is the format other
systems speak. Patterns are EventBridge patterns, so they are matched
against the EventBridge view of the event, which :meth:`Event.to_eventbridge`
builds and :meth:`Event.from_eventbridge` reads back:

=================  ===================================================
EventBridge        CloudEvents
=================  ===================================================
``version``        always ``"0"``
``id``             ``id``
``detail-type``    ``type``
``source``         ``source``
``account``        extension ``account`` (default ``"000000000000"``) [d]
``region``         extension ``region`` (default ``"local"``) [d]
``time``           ``time`` (RFC 3339, UTC, ``Z``); absent when unset
``resources``      extension ``resources`` (a list of strings; ``[]``) [d]
``detail``         ``data`` (``{}`` when there is none)
=================  ===================================================

[d] An extension equal to its default is not kept (it reads back the same),
so the mapping is one-to-one.

The view also carries ``subject``, ``datacontenttype``, ``dataschema`` and
every other extension at its top level, under its CloudEvents name, so that
the mapping loses nothing and patterns can match on them too. docs/events.md
describes the mapping with examples.

An :class:`Event` validates itself on construction (an
:class:`~reflow.errors.InvalidEventError` names the attribute) and refuses to
be larger than 256 KB as JSON (:class:`~reflow.errors.EventTooLargeError`):
the size counted is that of its compact CloudEvents JSON text in UTF-8 (what
the bus stores), which is more than EventBridge counts for a PutEvents entry
(the UTF-8 bytes of ``Source``, ``DetailType``, ``Detail``, each resource,
and 14 for ``Time``). Counting needs the event encoded, the largest part of
building one, so callers that count the stored text themselves or read an
event the bus checked when it was put skip it (``check_size=False``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from reflow.clock import Clock
from reflow.errors import EventTooLargeError, InvalidEventError

__all__ = ["DEFAULT_ACCOUNT", "DEFAULT_REGION", "MAX_EVENT_SIZE", "Event", "json_size"]

MAX_EVENT_SIZE = 256 * 1024
"""The largest event accepted, in bytes of its JSON (EventBridge's limit)."""

DEFAULT_ACCOUNT = "000000000000"
DEFAULT_REGION = "local"
SPEC_VERSION = "1.0"

_CORE = frozenset(
    {"id", "source", "type", "specversion", "time", "subject", "datacontenttype", "dataschema"}
)
_VIEW_KEYS = frozenset(
    {"version", "id", "detail-type", "source", "account", "region", "time", "resources", "detail"}
)
# CloudEvents 1.0: attribute names are lower-case ASCII letters and digits.
_NAME_RE = re.compile(r"^[a-z0-9]{1,64}$")
_INT32 = (-(2**31), 2**31 - 1)

Extension = str | int | bool | tuple[str, ...]
_UNSET = object()
# Set while a caller that counts the encoded size itself builds an Event
# (``check_size=False``): per task and thread, so no other construction
# skips the check.
_SIZE_CHECKED: ContextVar[bool] = ContextVar("reflow_event_size_checked", default=False)
_DEFAULTS: dict[str, Any] = {
    "account": DEFAULT_ACCOUNT,
    "region": DEFAULT_REGION,
    "resources": [],
}


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, eq=True)
class Event:
    """A CloudEvents 1.0 event (immutable).

    ``source`` and ``type`` are required; ``id`` defaults to a fresh UUID.
    ``time`` must be timezone-aware. ``data`` is any JSON value.
    ``extensions`` maps lower-case alphanumeric names to strings, integers
    or booleans (the CloudEvents types), plus ``resources``, a list of
    strings, which carries EventBridge's field of that name.
    """

    source: str
    type: str
    data: Any = None
    id: str = field(default_factory=_new_id)
    time: datetime | None = None
    subject: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    specversion: str = SPEC_VERSION
    extensions: Mapping[str, Extension] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("id", "source", "type"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidEventError(name, "must be a non-empty string")
        if self.specversion != SPEC_VERSION:
            raise InvalidEventError(
                "specversion", f"must be {SPEC_VERSION!r}, got {self.specversion!r}"
            )
        for name in ("subject", "datacontenttype", "dataschema"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidEventError(name, "must be a non-empty string when set")
        if self.time is not None:
            if not isinstance(self.time, datetime):
                raise InvalidEventError("time", "must be a datetime")
            if self.time.tzinfo is None or self.time.utcoffset() is None:
                raise InvalidEventError("time", "must be timezone-aware (use UTC)")
        object.__setattr__(self, "extensions", _check_extensions(self.extensions))
        if _SIZE_CHECKED.get():
            return  # the caller counts the encoded event itself (see from_cloudevent)
        size = json_size(self.to_json())
        if size > MAX_EVENT_SIZE:
            raise EventTooLargeError(size, MAX_EVENT_SIZE)

    def __hash__(self) -> int:
        return hash((self.id, self.source, self.type))

    def stamped(self, clock: Clock) -> Event:
        """This event with ``time`` set from ``clock`` when it has none (as the bus does)."""
        if self.time is not None:
            return self
        return replace(self, time=datetime.fromtimestamp(clock.time(), UTC))

    # --- CloudEvents JSON (structured mode) --------------------------------

    def to_cloudevent(self) -> dict[str, Any]:
        """The CloudEvents JSON form: attributes and extensions at the top, then ``data``."""
        out: dict[str, Any] = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        if self.time is not None:
            out["time"] = _format_time(self.time)
        for name in ("subject", "datacontenttype", "dataschema"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for name, value in self.extensions.items():
            out[name] = list(value) if isinstance(value, tuple) else value
        if self.data is not None:
            out["data"] = self.data
        return out

    def to_json(self) -> str:
        """The CloudEvents JSON text (compact)."""
        try:
            return json.dumps(self.to_cloudevent(), separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise InvalidEventError("data", f"is not JSON-serialisable: {exc}") from None

    @classmethod
    def from_cloudevent(cls, document: Mapping[str, Any], *, check_size: bool = True) -> Event:
        """Read a CloudEvents JSON object (structured mode).

        ``check_size=False`` skips encoding the event to count its size, for
        a caller that has counted it already — an event read back from the
        bus was checked when it was put — or that counts the text it is
        about to store (the bus's ``put``). Every other check still runs.
        """
        if not check_size:
            token = _SIZE_CHECKED.set(True)
            try:
                return cls.from_cloudevent(document)
            finally:
                _SIZE_CHECKED.reset(token)
        if not isinstance(document, Mapping):
            raise InvalidEventError("", "a CloudEvent must be a JSON object")
        if "data_base64" in document:
            raise InvalidEventError("data_base64", "binary data is not supported; send JSON data")
        extensions = {k: v for k, v in document.items() if k not in _CORE and k != "data"}
        return cls(
            source=document.get("source"),  # type: ignore[arg-type]  # validated in __post_init__
            type=document.get("type"),  # type: ignore[arg-type]
            data=document.get("data"),
            id=document.get("id"),  # type: ignore[arg-type]
            time=_parse_time(document.get("time"), "time"),
            subject=document.get("subject"),
            datacontenttype=document.get("datacontenttype"),
            dataschema=document.get("dataschema"),
            specversion=document.get("specversion", SPEC_VERSION),
            extensions=extensions,
        )

    # --- the EventBridge view -------------------------------------------------

    def to_eventbridge(self) -> dict[str, Any]:
        """The EventBridge event that patterns match (see the module docstring's table)."""
        ext = dict(self.extensions)
        view: dict[str, Any] = {
            "version": "0",
            "id": self.id,
            "detail-type": self.type,
            "source": self.source,
            "account": ext.pop("account", DEFAULT_ACCOUNT),
            "region": ext.pop("region", DEFAULT_REGION),
        }
        if self.time is not None:
            view["time"] = _format_time(self.time)
        resources = ext.pop("resources", ())
        view["resources"] = list(resources) if isinstance(resources, tuple) else [resources]
        view["detail"] = {} if self.data is None else self.data
        for name in ("subject", "datacontenttype", "dataschema"):
            value = getattr(self, name)
            if value is not None:
                view[name] = value
        view.update(ext)
        return view

    @classmethod
    def from_eventbridge(cls, view: Mapping[str, Any], *, check_size: bool = True) -> Event:
        """Read an EventBridge event (as PutEvents or a rule target would see it).

        ``check_size``: as for :meth:`from_cloudevent`.
        """
        if not check_size:
            token = _SIZE_CHECKED.set(True)
            try:
                return cls.from_eventbridge(view)
            finally:
                _SIZE_CHECKED.reset(token)
        if not isinstance(view, Mapping):
            raise InvalidEventError("", "an EventBridge event must be a JSON object")
        version = view.get("version", "0")
        if version != "0":
            raise InvalidEventError("version", f"must be '0', got {version!r}")
        extensions: dict[str, Any] = {
            k: v
            for k, v in view.items()
            if k not in _VIEW_KEYS and k not in ("subject", "datacontenttype", "dataschema")
        }
        for name, default in (("account", DEFAULT_ACCOUNT), ("region", DEFAULT_REGION)):
            value = view.get(name, default)
            if value != default:
                extensions[name] = value
        resources = view.get("resources", [])
        if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
            raise InvalidEventError("resources", "must be an array of strings")
        if resources:
            extensions["resources"] = resources
        return cls(
            source=view.get("source"),  # type: ignore[arg-type]  # validated in __post_init__
            type=view.get("detail-type"),  # type: ignore[arg-type]
            data=view.get("detail", {}),
            id=view.get("id") or _new_id(),
            time=_parse_time(view.get("time"), "time"),
            subject=view.get("subject"),
            datacontenttype=view.get("datacontenttype"),
            dataschema=view.get("dataschema"),
            extensions=extensions,
        )


def json_size(text: str) -> int:
    """The size in bytes of JSON ``text`` as UTF-8, without encoding ASCII text."""
    # isascii() is a flag lookup on CPython's compact strings: most events
    # are ASCII, and then the byte count is the length.
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _check_extensions(extensions: Mapping[str, Any]) -> Mapping[str, Extension]:
    if not isinstance(extensions, Mapping):
        raise InvalidEventError("extensions", "must be a mapping of name to value")
    checked: dict[str, Extension] = {}
    for name, value in extensions.items():
        where = f"extensions.{name}"
        if _DEFAULTS.get(name, _UNSET) == value or (name == "resources" and value == ()):
            continue  # the EventBridge default: leaving it out keeps the mapping one-to-one
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise InvalidEventError(
                where, "an extension name is 1-64 lower-case ASCII letters or digits"
            )
        if name in _CORE or name == "data":
            raise InvalidEventError(where, "is a CloudEvents attribute, not an extension")
        if name in ("version", "detail"):
            raise InvalidEventError(where, "would clash with the EventBridge field of that name")
        if name == "resources" and isinstance(value, list | tuple):
            if not all(isinstance(item, str) for item in value):
                raise InvalidEventError(where, "must be a list of strings")
            checked[name] = tuple(value)
        elif isinstance(value, bool | str):
            checked[name] = value
        elif isinstance(value, int):
            if not _INT32[0] <= value <= _INT32[1]:
                raise InvalidEventError(where, "an integer extension must fit in 32 bits")
            checked[name] = value
        else:
            raise InvalidEventError(
                where, f"must be a string, integer or boolean, not {type(value).__name__}"
            )
    return MappingProxyType(checked)


def _format_time(moment: datetime) -> str:
    text = moment.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def _parse_time(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEventError(name, "must be an RFC 3339 timestamp string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEventError(name, f"{value!r} is not an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise InvalidEventError(name, f"{value!r} lacks a time zone offset")
    return moment
