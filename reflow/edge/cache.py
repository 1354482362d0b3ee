"""The shared-cache policy of RFC 9111, as pure functions over plain values.

Nothing here touches a socket, a disk or a clock: every function that needs
the time takes ``now`` (seconds since the epoch) as a parameter, so the rules
can be tested with plain numbers. The server and the store call in here; this
module never calls out.

What is decided here, and where the RFC says so:

* **Storing** (RFC 9111 §3): only ``GET``/``HEAD`` responses with a final
  status are stored; ``no-store`` never is; ``private``, a request carrying
  ``Authorization`` (unless ``public``, ``s-maxage`` or ``must-revalidate``
  allow it, §3.5) and ``Set-Cookie`` are refused unless the behaviour says
  otherwise; without explicit freshness only heuristically cacheable statuses
  (RFC 9110 §15.1) are stored. ``Vary: *`` is never stored.
* **Freshness lifetime** (§4.2.1): ``s-maxage`` beats ``max-age`` beats
  ``Expires - Date``, else the behaviour's default TTL (a short negative TTL
  for 404/410); then clamped into the behaviour's ``[min_ttl, max_ttl]`` as a
  CDN does. A duplicated or malformed ``max-age``/``s-maxage`` makes the
  response stale at once (§4.2.1: "consider ... invalid freshness
  information to be stale").
* **Age** (§4.2.3): ``corrected_initial_age`` from the ``Age`` header, ``Date``
  and the request/response times; the current age adds the resident time.
* **Reuse** (§4.2, §4.2.4, RFC 5861): fresh → hit; ``no-cache`` → always
  revalidate; stale within ``stale-while-revalidate`` → serve and refresh in
  the background; otherwise revalidate, and on an origin error serve stale
  within ``stale-if-error``. ``must-revalidate``, ``proxy-revalidate`` and
  ``s-maxage`` forbid serving stale in a shared cache (§5.2.2.2, §5.2.2.8,
  §5.2.2.10).
* **Request directives** are ignored, as CloudFront does: a viewer must not be
  able to push every request through to the origin with ``no-cache``.
* **Conditional requests** (RFC 9110 §13): ``If-None-Match`` by weak comparison
  wins over ``If-Modified-Since``; a match gives 304.
* **Ranges** (RFC 9110 §14): one ``bytes=`` range gives 206, an unsatisfiable
  one 416. Several ranges are *ignored* and the full 200 is served, which
  §14.2 allows ("a server MAY ignore the Range header field"); it also spares
  the edge the many-small-ranges amplification. ``If-Range`` that does not
  match strongly also falls back to 200.
"""

from __future__ import annotations

import datetime
import email.utils
import importlib.util
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from urllib.parse import parse_qsl, quote

__all__ = [
    "HEURISTIC_STATUSES",
    "NEGATIVE_STATUSES",
    "Action",
    "CachePolicy",
    "Freshness",
    "RangeResult",
    "Verdict",
    "accepts_gzip",
    "choose_coding",
    "assess",
    "compressible_type",
    "cache_key",
    "corrected_initial_age",
    "format_http_date",
    "freshness_lifetime",
    "not_modified",
    "parse_cache_control",
    "parse_http_date",
    "parse_range",
    "secondary_key",
    "vary_fields",
    "weak_etag_match",
]

# RFC 9110 §15.1: statuses "heuristically cacheable" (storable without
# explicit freshness). 206 is left out: the edge always fetches whole objects.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
# Statuses cached with the behaviour's short negative TTL instead of the default.
NEGATIVE_STATUSES = frozenset({404, 410})
# Statuses that may be stored at all when the response gives explicit freshness.
_UNDERSTOOD = HEURISTIC_STATUSES | {302, 303, 307, 400, 403, 500, 502, 503, 504}

Headers = Sequence[tuple[str, str]]  # (lowercase name, value), in order


@dataclass(frozen=True)
class CachePolicy:
    """A behaviour's cache policy: what goes in the key, and how long things live.

    ``query_strings``, ``headers`` and ``cookies`` name what is part of the
    cache key (and therefore all that is forwarded to the origin); ``"all"``
    for query strings keys on every parameter, sorted. TTLs are in seconds.
    """

    default_ttl: float = 86400.0
    min_ttl: float = 0.0
    max_ttl: float = 31536000.0
    negative_ttl: float = 10.0
    query_strings: tuple[str, ...] | str = ()
    headers: tuple[str, ...] = ()
    cookies: tuple[str, ...] = ()
    store_authorized: bool = False
    store_set_cookie: bool = False
    store_private: bool = False
    compress: bool = True


# --- parsing header values ----------------------------------------------------


def parse_cache_control(values: Iterable[str]) -> tuple[dict[str, str | None], frozenset[str]]:
    """Directives of every ``Cache-Control`` line, lowercased, and those that repeat.

    Quoted arguments are unquoted; a directive without ``=`` maps to None.
    """
    directives: dict[str, str | None] = {}
    repeated: set[str] = set()
    for value in values:
        for name, argument in _split_directives(value):
            if name in directives:
                repeated.add(name)
            directives[name] = argument
    return directives, frozenset(repeated)


def _split_directives(value: str) -> Iterable[tuple[str, str | None]]:
    index, size = 0, len(value)
    while index < size:
        while index < size and value[index] in " \t,":
            index += 1
        start = index
        while index < size and value[index] not in "=,":
            index += 1
        name = value[start:index].strip().lower()
        argument: str | None = None
        if index < size and value[index] == "=":
            index += 1
            if index < size and value[index] == '"':
                index += 1
                chars: list[str] = []
                while index < size and value[index] != '"':
                    if value[index] == "\\" and index + 1 < size:
                        index += 1
                    chars.append(value[index])
                    index += 1
                index += 1  # the closing quote
                argument = "".join(chars)
                while index < size and value[index] != ",":
                    index += 1
            else:
                start = index
                while index < size and value[index] != ",":
                    index += 1
                argument = value[start:index].strip()
        if name:
            yield name, argument


def _delta_seconds(argument: str | None) -> int | None:
    """RFC 9111 §1.2.2 delta-seconds: digits only; huge values cap at 2**31."""
    if argument is None or not argument.isdigit() or not argument.isascii():
        return None
    return min(int(argument), 2**31)


def parse_http_date(text: str | None) -> float | None:
    """An HTTP-date (IMF-fixdate, RFC 850 or asctime) as epoch seconds, else None."""
    if not text:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None  # type: ignore[unreachable]
    if parsed.tzinfo is None:
        # asctime dates carry no zone; every HTTP-date is in GMT (RFC 9110 §5.6.7).
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def format_http_date(when: float) -> str:
    """``when`` as an IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``)."""
    return email.utils.formatdate(when, usegmt=True)


def _first(headers: Headers, name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _all(headers: Headers, name: str) -> list[str]:
    return [value for key, value in headers if key == name]


# --- freshness and age --------------------------------------------------------


def freshness_lifetime(
    status: int,
    directives: Mapping[str, str | None],
    repeated: frozenset[str],
    headers: Headers,
    policy: CachePolicy,
) -> float:
    """Seconds the response stays fresh in a shared cache (RFC 9111 §4.2.1)."""
    for name in ("s-maxage", "max-age"):
        if name in directives:
            seconds = _delta_seconds(directives[name])
            if seconds is None or name in repeated:
                return 0.0  # invalid freshness information: stale at once
            return _clamp(float(seconds), policy)
    expires_values = _all(headers, "expires")
    if expires_values:
        expires = parse_http_date(expires_values[0]) if len(expires_values) == 1 else None
        if expires is None:
            return 0.0  # §5.3: an invalid Expires means "already expired"
        date = parse_http_date(_first(headers, "date"))
        if date is None:
            return 0.0
        return _clamp(max(0.0, expires - date), policy)
    default = policy.negative_ttl if status in NEGATIVE_STATUSES else policy.default_ttl
    return _clamp(default, policy)


def _clamp(seconds: float, policy: CachePolicy) -> float:
    return min(max(seconds, policy.min_ttl), policy.max_ttl)


def corrected_initial_age(headers: Headers, request_time: float, response_time: float) -> float:
    """The age of the response when it arrived (RFC 9111 §4.2.3)."""
    age_value = 0
    age_text = _first(headers, "age")
    if age_text is not None and age_text.strip().isdigit():
        age_value = min(int(age_text.strip()), 2**31)
    date = parse_http_date(_first(headers, "date"))
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    response_delay = max(0.0, response_time - request_time)
    return max(apparent_age, age_value + response_delay)


class Action(Enum):
    """What to do with a stored response for a request (RFC 9111 §4)."""

    HIT = "hit"  # fresh: serve it
    STALE_REFRESH = "stale"  # stale-while-revalidate: serve it, refresh in the background
    REVALIDATE = "revalidate"  # ask the origin first (conditionally)


@dataclass(frozen=True)
class Freshness:
    """A stored response's clock: when it arrived, how old it was, how long it lives.

    ``fresh_until`` is precomputed so that the hit path is a single comparison.
    """

    response_time: float
    initial_age: float
    lifetime: float
    no_cache: bool = False
    may_serve_stale: bool = True
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0

    @property
    def fresh_until(self) -> float:
        """The epoch second at which the response becomes stale."""
        if self.no_cache:
            return -math.inf
        return self.response_time + self.lifetime - self.initial_age

    def age(self, now: float) -> float:
        """Current age in seconds (RFC 9111 §4.2.3)."""
        return self.initial_age + max(0.0, now - self.response_time)

    def is_fresh(self, now: float) -> bool:
        """Whether the response may be served without contacting the origin."""
        return not self.no_cache and self.age(now) < self.lifetime

    def decide(self, now: float) -> Action:
        """Hit, serve-stale-and-refresh, or revalidate first."""
        if self.is_fresh(now):
            return Action.HIT
        staleness = self.age(now) - self.lifetime
        if not self.no_cache and self.may_serve_stale and staleness < self.stale_while_revalidate:
            return Action.STALE_REFRESH
        return Action.REVALIDATE

    def usable_on_error(self, now: float) -> bool:
        """Whether stale-if-error lets the stale response stand in for an origin error."""
        if not self.may_serve_stale:
            return False
        return self.age(now) - self.lifetime < self.stale_if_error

    def refreshed(self, response_time: float, initial_age: float, lifetime: float) -> Freshness:
        """The same response, revalidated by a 304 at ``response_time``."""
        return Freshness(
            response_time=response_time,
            initial_age=initial_age,
            lifetime=lifetime,
            no_cache=self.no_cache,
            may_serve_stale=self.may_serve_stale,
            stale_while_revalidate=self.stale_while_revalidate,
            stale_if_error=self.stale_if_error,
        )


@dataclass(frozen=True)
class Verdict:
    """Whether a response is stored, why not, and with which freshness and Vary."""

    store: bool
    reason: str
    freshness: Freshness | None = None
    vary: tuple[str, ...] = ()


def assess(
    method: str,
    status: int,
    headers: Headers,
    *,
    request_time: float,
    response_time: float,
    policy: CachePolicy,
    authorized: bool = False,
) -> Verdict:
    """Decide whether a response may be stored, and compute its freshness."""
    if method not in ("GET", "HEAD"):
        return Verdict(False, f"method {method} is not cacheable")
    directives, repeated = parse_cache_control(_all(headers, "cache-control"))
    if "no-store" in directives:
        return Verdict(False, "no-store")
    if "private" in directives and not policy.store_private:
        return Verdict(False, "private")
    if (
        authorized
        and not policy.store_authorized
        and not ({"public", "s-maxage", "must-revalidate"} & directives.keys())
    ):
        return Verdict(False, "request carried Authorization")
    if _first(headers, "set-cookie") is not None and not policy.store_set_cookie:
        return Verdict(False, "response sets a cookie")
    vary = vary_fields(headers)
    if vary is None:
        return Verdict(False, "Vary: *")
    explicit = (
        "max-age" in directives
        or "s-maxage" in directives
        or "public" in directives
        or _first(headers, "expires") is not None
    )
    if status not in HEURISTIC_STATUSES and not (explicit and status in _UNDERSTOOD):
        return Verdict(False, f"status {status} is not cacheable without explicit freshness")
    lifetime = freshness_lifetime(status, directives, repeated, headers, policy)
    strict = bool({"must-revalidate", "proxy-revalidate", "s-maxage"} & directives.keys())
    freshness = Freshness(
        response_time=response_time,
        initial_age=corrected_initial_age(headers, request_time, response_time),
        lifetime=lifetime,
        no_cache="no-cache" in directives,
        may_serve_stale=not strict,
        stale_while_revalidate=float(_delta_seconds(directives.get("stale-while-revalidate")) or 0),
        stale_if_error=float(_delta_seconds(directives.get("stale-if-error")) or 0),
    )
    return Verdict(True, "stored", freshness, vary)


# --- keys -----------------------------------------------------------------------


def vary_fields(headers: Headers) -> tuple[str, ...] | None:
    """The lowercased field names a response varies on, sorted; None for ``Vary: *``."""
    names: set[str] = set()
    for value in _all(headers, "vary"):
        for part in value.split(","):
            name = part.strip().lower()
            if name == "*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


def secondary_key(vary: Sequence[str], request_headers: Headers) -> tuple[str, ...]:
    """The request's values of the Vary fields, whitespace-normalised (RFC 9111 §4.1)."""
    values = []
    for name in vary:
        joined = ",".join(" ".join(v.split()) for v in _all(request_headers, name))
        values.append(joined)
    return tuple(values)


def cache_key(
    path: str, query: str, request_headers: Headers, policy: CachePolicy
) -> tuple[str, str]:
    """The cache key and the query string to forward, from the behaviour's key policy.

    Only what is in the key reaches the origin, so a header or parameter left
    out of the key cannot change a cached response (no cache poisoning).
    """
    forwarded = ""
    if policy.query_strings and query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if policy.query_strings != "all":
            allowed = set(policy.query_strings)
            pairs = [(k, v) for k, v in pairs if k in allowed]
        pairs.sort()
        forwarded = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
    key = path if not forwarded else f"{path}?{forwarded}"
    extra = []
    for name in policy.headers:
        extra.append(f"h:{name}={','.join(_all(request_headers, name))}")
    if policy.cookies:
        jar = _cookies(request_headers)
        for name in policy.cookies:
            extra.append(f"c:{name}={jar.get(name, '')}")
    if extra:
        key = key + "\x00" + "\x00".join(extra)
    return key, forwarded


def _cookies(request_headers: Headers) -> dict[str, str]:
    jar: dict[str, str] = {}
    for value in _all(request_headers, "cookie"):
        for part in value.split(";"):
            name, sep, cookie = part.strip().partition("=")
            if sep and name not in jar:
                jar[name] = cookie
    return jar


# --- conditional requests and ranges -----------------------------------------------


def _entity_tags(value: str) -> list[str]:
    return [tag.strip() for tag in value.split(",") if tag.strip()]


def weak_etag_match(a: str, b: str) -> bool:
    """RFC 9110 §8.8.3.2 weak comparison: equal opaque tags, W/ ignored."""
    return a.removeprefix("W/") == b.removeprefix("W/")


def not_modified(request_headers: Headers, etag: str | None, last_modified: float | None) -> bool:
    """Whether a GET/HEAD's preconditions say the stored response is unchanged (→ 304).

    ``If-None-Match`` is evaluated with weak comparison and, when present,
    ``If-Modified-Since`` is ignored (RFC 9110 §13.2.2).
    """
    if_none_match = _all(request_headers, "if-none-match")
    if if_none_match:
        tags = [t for value in if_none_match for t in _entity_tags(value)]
        if "*" in tags:
            return etag is not None
        return etag is not None and any(weak_etag_match(t, etag) for t in tags)
    since = parse_http_date(_first(request_headers, "if-modified-since"))
    if since is None or last_modified is None:
        return False
    return last_modified <= since


@dataclass(frozen=True)
class RangeResult:
    """The outcome of a Range header: ``status`` 200 (ignore), 206 or 416."""

    status: int
    start: int = 0
    end: int = -1  # inclusive last byte

    @property
    def length(self) -> int:
        """Bytes in the selected range."""
        return self.end - self.start + 1


def parse_range(
    value: str | None,
    size: int,
    *,
    if_range: str | None = None,
    etag: str | None = None,
    last_modified: float | None = None,
) -> RangeResult:
    """Evaluate a ``Range`` header against a representation of ``size`` bytes."""
    whole = RangeResult(200, 0, size - 1)
    if value is None:
        return whole
    if if_range is not None and not _if_range_holds(if_range, etag, last_modified):
        return whole
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return whole  # unknown units are ignored (RFC 9110 §14.2)
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 1:
        return whole  # several ranges: ignored by design, see the module docstring
    first, dash, last = parts[0].partition("-")
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return whole  # syntactically invalid: ignore
    if not first.isascii() or not last.isascii():
        return whole
    if first == "":
        if last == "":
            return whole
        suffix = int(last)
        if suffix == 0 or size == 0:
            return RangeResult(416)
        return RangeResult(206, max(0, size - suffix), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return whole  # invalid range-spec: ignore
    if start >= size:
        return RangeResult(416)
    return RangeResult(206, start, min(end, size - 1))


def _if_range_holds(if_range: str, etag: str | None, last_modified: float | None) -> bool:
    value = if_range.strip()
    if value.startswith('"') or value.startswith("W/"):
        # Strong comparison: a weak tag never matches (RFC 9110 §13.1.5).
        return etag is not None and not etag.startswith("W/") and value == etag
    when = parse_http_date(value)
    return when is not None and last_modified is not None and when == last_modified


# --- content coding ---------------------------------------------------------------------

_TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/xml",
        "application/xhtml+xml",
        "application/rss+xml",
        "application/atom+xml",
        "image/svg+xml",
    }
)


def compressible_type(content_type: str | None) -> bool:
    """Whether a media type is text worth compressing (``text/*`` and text-like types)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media in _TEXT_TYPES


def accepts_gzip(request_headers: Headers) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (RFC 9110 §12.5.3: ``q=0`` refuses)."""
    for name, value in request_headers:
        if name != "accept-encoding":
            continue
        for item in value.split(","):
            coding, _, params = item.strip().partition(";")
            coding = coding.strip().lower()
            if coding not in ("gzip", "x-gzip", "*"):
                continue
            weight = params.strip().lower()
            if weight.startswith("q="):
                try:
                    if float(weight[2:]) <= 0:
                        continue
                except ValueError:
                    continue
            return True
    return False


# Content codings the edge can make, in order of preference when weights tie.
# Brotli needs the ``brotli`` package; without it the edge offers gzip alone.
CODINGS: tuple[str, ...] = (
    ("br", "gzip") if importlib.util.find_spec("brotli") is not None else ("gzip",)
)
_CHOSEN: dict[str, str | None] = {}


def choose_coding(request_headers: Headers) -> str | None:
    """The content coding to answer with: ``br``, ``gzip`` or None (identity).

    RFC 9110 §12.5.3: each coding's weight is its ``q`` (1 when absent; ``x-gzip``
    is gzip), ``*`` weighs every coding not named, ``q=0`` refuses. The highest
    positive weight wins; on a tie Brotli, the smaller, is preferred. Decisions
    are remembered per header value (bounded): clients repeat theirs.
    """
    value = None
    for name, field_value in request_headers:
        if name == "accept-encoding":
            value = field_value if value is None else f"{value},{field_value}"
    if not value:
        return None
    if value in _CHOSEN:
        return _CHOSEN[value]
    weights: dict[str, float] = {}
    star: float | None = None
    for item in value.split(","):
        coding, _, params = item.strip().partition(";")
        coding = coding.strip().lower()
        if coding == "x-gzip":
            coding = "gzip"
        weight = 1.0
        for param in params.split(";"):
            key, _, number = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(number.strip())
                except ValueError:
                    weight = 0.0  # a malformed weight is not consent
        if coding == "*":
            star = weight
        elif coding in CODINGS:
            weights[coding] = max(weight, weights.get(coding, 0.0))
    best: str | None = None
    best_weight = 0.0
    for coding in CODINGS:
        weight = weights.get(coding, star if star is not None else 0.0)
        if weight > best_weight:
            best, best_weight = coding, weight
    if len(_CHOSEN) < 4096:
        _CHOSEN[value] = best
    return best
