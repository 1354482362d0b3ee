"""HTTP/1.1 message rules the edge enforces itself, and response bytes.

httptools (llhttp) does the tokenising; this module holds what the edge adds
on top of it, as plain functions so they can be tested without a socket:

* header field checks (RFC 9110 §5.1, §5.5; RFC 9112 §5.2, §6): names must be
  tokens, values may not hold NUL, CR, LF or other controls besides HTAB,
  ``Content-Length`` must be one run of digits and appear once,
  ``Transfer-Encoding`` must be exactly ``chunked`` and never travel with a
  ``Content-Length`` (the request-smuggling cases);
* path normalisation (RFC 3986 §6.2.2): percent-encodings of unreserved
  characters are decoded, the rest upper-cased, dot segments removed and
  repeated slashes collapsed, so the cache key is the path the origin routes;
* building a response head in one ``bytes``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from http import HTTPStatus

from reflow.errors import InvalidRequestError

__all__ = [
    "MAX_BODY",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_URL",
    "Headers",
    "Request",
    "build_head",
    "build_tail",
    "check_header",
    "check_framing",
    "error_response",
    "normalise_path",
    "reason_phrase",
]

Headers = Sequence[tuple[str, str]]

MAX_URL = 8192  # request-target bytes before 414
MAX_HEADER_BYTES = 32 * 1024  # all header fields together before 431
MAX_HEADERS = 100  # header fields before 431
MAX_BODY = 1024 * 1024  # request body bytes before 413

# RFC 9110 §5.6.2 token characters.
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Field values: visible ASCII, obs-text, SP and HTAB only (RFC 9110 §5.5).
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789abcdefABCDEF")
# Hop-by-hop fields (RFC 9110 §7.6.1) are never stored nor forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)


class Request:
    """A parsed request as the edge sees it (names lowercased, path normalised)."""

    __slots__ = (
        "body",
        "client_ip",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query",
        "viewer_done",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query: str = "",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        keep_alive: bool = True,
        client_ip: str = "",
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers if headers is not None else []
        self.body = body
        self.keep_alive = keep_alive
        self.client_ip = client_ip
        self.viewer_done = False  # the viewer-request hook already ran on the hit path

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lowercase), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


def reason_phrase(status: int) -> str:
    """The standard reason phrase for ``status``."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def check_header(name: bytes, value: bytes) -> None:
    """Refuse a header field whose name is not a token or whose value holds controls."""
    if not _TOKEN.match(name):
        raise InvalidRequestError(400, f"header name {name[:64]!r} is not a token")
    if _BAD_VALUE.search(value):
        raise InvalidRequestError(
            400, f"header {name[:64].decode('latin-1')!r} holds a control character"
        )


def check_framing(headers: Headers) -> int:
    """The body length the headers declare, refusing every ambiguous framing.

    Returns -1 for a chunked body. Raises :class:`InvalidRequestError` with
    400 for duplicate, signed or non-digit lengths and for a length together
    with ``Transfer-Encoding``, and 501 for codings other than ``chunked``.
    """
    lengths = [v for k, v in headers if k == "content-length"]
    codings = [v for k, v in headers if k == "transfer-encoding"]
    if codings:
        if lengths:
            raise InvalidRequestError(400, "both Content-Length and Transfer-Encoding")
        joined = ",".join(codings)
        parts = [p.strip().lower() for p in joined.split(",")]
        if parts != ["chunked"]:
            raise InvalidRequestError(501, f"transfer coding {joined!r} is not supported")
        if joined.strip() != joined or joined.lower() != "chunked":
            raise InvalidRequestError(400, f"Transfer-Encoding {joined!r} is not plain 'chunked'")
        return -1
    if not lengths:
        return 0
    if len(lengths) > 1:
        raise InvalidRequestError(400, "Content-Length appears more than once")
    text = lengths[0]
    if not text or not text.isascii() or not text.isdigit() or len(text) > 18:
        raise InvalidRequestError(400, f"Content-Length {text[:32]!r} is not a run of digits")
    return int(text)


def normalise_path(target: str) -> tuple[str, str]:
    """Split an origin-form request target into a normalised path and the raw query.

    Raises 400 for targets that are not origin-form or that encode NUL.
    """
    lowered = target[:8].lower()
    if lowered.startswith("http://") or lowered.startswith("https://"):
        # absolute-form (RFC 9112 §3.2.2): the path is what the origin routes.
        rest = target.split("//", 1)[1]
        slash = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=-1)
        target = "/" if slash < 0 else rest[slash:]
        if not target.startswith("/"):
            target = "/" + target
    if not target.startswith("/"):
        raise InvalidRequestError(400, f"request target {target[:64]!r} is not origin-form")
    path, _, query = target.partition("?")
    path = path.partition("#")[0]
    raw = path.encode("latin-1", "replace")
    out = bytearray()
    index, size = 0, len(raw)
    while index < size:
        byte = raw[index]
        if byte == 0x25:  # '%'
            pair = raw[index + 1 : index + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise InvalidRequestError(400, "malformed percent-encoding in path")
            decoded = int(pair, 16)
            if decoded == 0:
                raise InvalidRequestError(400, "path encodes NUL")
            if decoded in _UNRESERVED:
                out.append(decoded)
            else:
                out += b"%" + pair.upper()
            index += 3
            continue
        if byte < 0x21 or byte > 0x7E:
            raise InvalidRequestError(400, "path holds a character that must be percent-encoded")
        out.append(byte)
        index += 1
    return _remove_dot_segments(out.decode("ascii")), query


def _remove_dot_segments(path: str) -> str:
    segments = path.split("/")
    kept: list[str] = []
    for segment in segments[1:]:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment not in (".", ""):
            kept.append(segment)
    trailing = segments[-1] in ("", ".", "..") and len(segments) > 2
    result = "/" + "/".join(kept)
    if trailing and kept:
        result += "/"
    return result


def build_head(
    status: int,
    reason: str,
    headers: Headers,
    content_length: int | None,
    *,
    keep_alive: bool,
) -> bytes:
    """The status line and header block of a response, ready to write."""
    lines = [f"HTTP/1.1 {status} {reason}\r\n"]
    for name, value in headers:
        lines.append(f"{name}: {value}\r\n")
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}\r\n")
    if not keep_alive:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1", "replace")


def build_tail(headers: Headers, content_length: int | None, *, keep_alive: bool) -> bytes:
    """The header lines after a pre-rendered prefix, through the blank line.

    ``build_head(s, r, a + b, ...)`` equals the rendering of ``s, r, a`` followed
    by ``build_tail(b, ...)``.
    """
    lines = [f"{name}: {value}\r\n" for name, value in headers]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}\r\n")
    if not keep_alive:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1", "replace")


def error_response(status: int, message: str, *, keep_alive: bool = False) -> bytes:
    """A small plain-text error response (closing the connection by default)."""
    body = f"{status} {reason_phrase(status)}: {message}\n".encode("latin-1", "replace")
    head = build_head(
        status,
        reason_phrase(status),
        [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")],
        len(body),
        keep_alive=keep_alive,
    )
    return head + body
