"""The in-memory object store: LRU within a byte budget, Vary variants, surrogate keys.

Each stored response is an :class:`Entry`. Entries live under their primary
cache key in a :class:`Variants` set (one per key, RFC 9111 §4.1): the set
knows which request headers the origin varied on and maps their values to
the entry for them. The whole store is one ``OrderedDict`` of keys in
least-recently-used order; when the bytes held pass the budget, the oldest
keys go first.

Two indexes serve purges: surrogate key → entries, and path → primary keys.
Purging by prefix scans the paths (O(paths)); by key or exact path it is a
dictionary lookup. A hard purge removes entries; a soft purge marks them so
the next request serves them stale while one background refresh runs.

The store keeps a ``generation`` counter that every purge bumps: a fetch that
was in flight across a purge must not store what it fetched, or a purged body
could come back (see :mod:`reflow.edge.origins`).
"""

from __future__ import annotations

import gzip as gzip_module
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from reflow.edge.cache import Freshness, secondary_key
from reflow.edge.http import Headers, build_head
from reflow.edge.tracked import HeaderCopies
from reflow.edge.triggers import headers_to_cf

__all__ = ["Entry", "HookView", "Store", "Variants"]

# Per-entry bookkeeping charged against the budget on top of body and headers.
_OVERHEAD = 512
# Purges remembered for fetches in flight (see Store.purged_since); a fetch that
# spans more purges than this is treated as purged.
_RECENT_PURGES = 4096


@dataclass(eq=False)
class Entry:
    """One stored response and what the hit path needs pre-computed.

    ``headers`` are the response's end-to-end headers as received (original
    case), without ``Age``, ``Content-Length`` or hop-by-hop fields, which the
    edge writes itself.
    """

    key: str
    path: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    freshness: Freshness
    etag: str | None = None
    last_modified: float | None = None
    surrogate_keys: frozenset[str] = frozenset()
    vary: tuple[str, ...] = ()
    secondary: tuple[str, ...] = ()
    soft_purged: bool = False
    size: int = 0
    # The pre-built responses of the current second (the Age header changes each second).
    built_second: int = field(default=-1, repr=False)
    built_get: bytes = field(default=b"", repr=False)
    built_head: bytes = field(default=b"", repr=False)
    # Text bodies are also served compressed (gzip, br), each encoding made once
    # (RFC 9110 §8.4.1) and its hit response pre-built once per second.
    compressible: bool = False
    encoded_bodies: dict[str, bytes] = field(default_factory=dict, repr=False)
    built_encoded: dict[str, tuple[int, bytes, bytes]] = field(default_factory=dict, repr=False)
    # Per encoding (None for identity): the second it was built for and the view a
    # viewer-response hook starts from (see :meth:`hook_view`).
    hook_views: dict[str | None, tuple[int, HookView]] = field(default_factory=dict, repr=False)
    # What the store charged for this entry, and how it learns that the entry grew.
    charged: int = field(default=0, repr=False)
    on_grow: Callable[[Entry, int], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        head = sum(len(k) + len(v) + 4 for k, v in self.headers) + _OVERHEAD
        # The body is held twice: as stored, and inside the pre-built hit response.
        self.size = 2 * len(self.body) + 2 * head
        self.fresh_until = self.freshness.fresh_until

    def response(
        self, now: float, head: bool, x_cache: str = "Hit", coding: str | None = None
    ) -> bytes:
        """The whole response for a hit, pre-built once per second, method and encoding."""
        if coding is not None:
            return self._encoded_response(now, head, x_cache, coding)
        second = int(now)
        if second != self.built_second or x_cache != "Hit":
            age = int(self.freshness.age(now))
            extra = [("Age", str(age)), ("X-Cache", x_cache)]
            head_bytes = build_head(
                self.status, self.reason, self.headers + extra, len(self.body), keep_alive=True
            )
            if x_cache != "Hit":
                return head_bytes if head else head_bytes + self.body
            self.built_second = second
            self.built_head = head_bytes
            self.built_get = head_bytes + self.body
        return self.built_head if head else self.built_get

    @property
    def gzip_body(self) -> bytes | None:
        """The gzip-compressed body, once made."""
        return self.encoded_bodies.get("gzip")

    def gzipped(self) -> bytes:
        """The body gzip-compressed, computed once and kept with the entry."""
        return self.encoded("gzip")

    def encoded(self, coding: str | None) -> bytes:
        """The body in ``coding`` (``gzip``, ``br``; None: as stored), compressed once."""
        if coding is None:
            return self.body
        body = self.encoded_bodies.get(coding)
        if body is None:
            body = compress(self.body, coding)
            self.encoded_bodies[coding] = body
            # Compressed once, but held twice (plain and inside its pre-built response);
            # the store charges it to its budget.
            delta = 2 * len(body)
            self.size += delta
            if self.on_grow is not None:
                self.on_grow(self, delta)
        return body

    def gzip_headers(self) -> list[tuple[str, str]]:
        """The stored headers for the gzip representation."""
        return self.encoded_headers("gzip")

    def encoded_headers(self, coding: str | None) -> list[tuple[str, str]]:
        """The stored headers for ``coding`` (weak ETag, Content-Encoding)."""
        if coding is None:
            return self.headers
        out = []
        for name, value in self.headers:
            if name.lower() == "etag" and not value.startswith("W/"):
                value = "W/" + value  # another representation: never strongly equal
            out.append((name, value))
        out.append(("Content-Encoding", coding))
        return out

    def _encoded_response(self, now: float, head: bool, x_cache: str, coding: str) -> bytes:
        second = int(now)
        built = self.built_encoded.get(coding)
        if built is None or built[0] != second or x_cache != "Hit":
            body = self.encoded(coding)
            extra = [("Age", str(int(self.freshness.age(now)))), ("X-Cache", x_cache)]
            head_bytes = build_head(
                self.status,
                self.reason,
                self.encoded_headers(coding) + extra,
                len(body),
                keep_alive=True,
            )
            if x_cache != "Hit":
                return head_bytes if head else head_bytes + body
            built = (second, head_bytes, head_bytes + body)
            self.built_encoded[coding] = built
        return built[1] if head else built[2]

    def hook_view(self, now: float, coding: str | None) -> HookView:
        """What a viewer-response hook on a hit starts from, built once per second."""
        second = int(now)
        cached = self.hook_views.get(coding)
        if cached is not None and cached[0] == second:
            return cached[1]
        headers = [
            *self.encoded_headers(coding),
            ("Age", str(int(self.freshness.age(now)))),
            ("X-Cache", "Hit"),
        ]
        lines = [f"HTTP/1.1 {self.status} {self.reason}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers)
        view = HookView(
            status=str(self.status),
            copies=HeaderCopies(headers, headers_to_cf),
            prefix="".join(lines).encode("latin-1", "replace"),
            body=self.encoded(coding),
        )
        self.hook_views[coding] = (second, view)
        return view

    def refresh(self, freshness: Freshness) -> None:
        """Adopt a new freshness after a successful revalidation."""
        self.freshness = freshness
        self.fresh_until = freshness.fresh_until
        self.soft_purged = False
        self.built_second = -1
        self.built_encoded.clear()
        self.hook_views.clear()


def compress(body: bytes, coding: str) -> bytes:
    """``body`` in content coding ``gzip`` or ``br`` (deterministic: no timestamps)."""
    if coding == "gzip":
        return gzip_module.compress(body, compresslevel=6, mtime=0)
    if coding == "br":
        # Quality 6 compresses text better than gzip -6 at a similar speed; the
        # top qualities cost tens of milliseconds per 100 KB on the event loop.
        import brotli  # offered only when installed (cache.CODINGS)

        encoded: bytes = brotli.compress(body, quality=6)
        return encoded
    raise ValueError(f"unknown content coding {coding!r}")


@dataclass(frozen=True, eq=False)
class HookView:
    """A hit as a viewer-response hook sees it, with its head pre-rendered.

    ``copies`` holds the headers in Lambda@Edge's shape (a template never
    handed to a function, and the copies that are); ``prefix`` is the status
    line and the header lines. When the hook leaves them all equal, the answer
    is ``prefix`` plus the lines it added: the stored headers are not
    re-serialised.
    """

    status: str
    copies: HeaderCopies
    prefix: bytes
    body: bytes
    # Whole answers by what the hook added (and keep-alive, HEAD): a function that
    # adds the same headers on every call gets the same bytes object back, with
    # nothing rendered or copied (bounded; small bodies only).
    answers: dict[tuple[object, ...], bytes] = field(default_factory=dict)


@dataclass
class Variants:
    """All stored responses under one primary key, by the values of their Vary fields."""

    vary: tuple[str, ...]
    entries: dict[tuple[str, ...], Entry] = field(default_factory=dict)


class Store:
    """Entries by cache key, least recently used evicted first past ``budget`` bytes."""

    def __init__(self, budget: int = 256 * 1024 * 1024) -> None:
        self.budget = budget
        self.bytes = 0
        self.generation = 0
        self.evictions = 0
        # What each recent purge covered, by generation (see purged_since).
        self._recent: deque[tuple[int, str, frozenset[str] | str | None]] = deque(
            maxlen=_RECENT_PURGES
        )
        self._keys: OrderedDict[str, Variants] = OrderedDict()
        self._by_surrogate: dict[str, set[Entry]] = {}
        self._by_path: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return sum(len(v.entries) for v in self._keys.values())

    def get(self, key: str, request_headers: Headers) -> Entry | None:
        """The entry for this key and these request headers, marked recently used."""
        variants = self._keys.get(key)
        if variants is None:
            return None
        self._keys.move_to_end(key)
        if not variants.vary:
            return variants.entries.get(())
        return variants.entries.get(secondary_key(variants.vary, request_headers))

    def put(self, entry: Entry) -> None:
        """Store ``entry``, replacing the same variant; evict past the budget."""
        variants = self._keys.get(entry.key)
        if variants is None or variants.vary != entry.vary:
            # A new Vary set makes the old variants unreachable: drop them (RFC 9111 §4.1).
            if variants is not None:
                self._drop_key(entry.key)
            variants = Variants(entry.vary)
            self._keys[entry.key] = variants
        old = variants.entries.get(entry.secondary)
        if old is not None:
            self._unindex(old)
        variants.entries[entry.secondary] = entry
        self._keys.move_to_end(entry.key)
        self.bytes += entry.size
        entry.charged = entry.size
        entry.on_grow = self._grow
        for tag in entry.surrogate_keys:
            self._by_surrogate.setdefault(tag, set()).add(entry)
        self._by_path.setdefault(entry.path, set()).add(entry.key)
        while self.bytes > self.budget and len(self._keys) > 1:
            oldest = next(iter(self._keys))
            if oldest == entry.key:
                break
            self._drop_key(oldest)
            self.evictions += 1

    def remove(self, entry: Entry) -> None:
        """Remove one entry (if it is still the one stored)."""
        variants = self._keys.get(entry.key)
        if variants is None or variants.entries.get(entry.secondary) is not entry:
            return
        del variants.entries[entry.secondary]
        self._unindex(entry)
        if not variants.entries:
            del self._keys[entry.key]

    def entries(self) -> Iterable[Entry]:
        """Every stored entry (a snapshot)."""
        return [e for v in list(self._keys.values()) for e in v.entries.values()]

    # -- purges -------------------------------------------------------------

    def purge_keys(self, tags: Iterable[str], *, soft: bool = False) -> int:
        """Purge every entry tagged with one of the surrogate ``tags``; return the count."""
        found: set[Entry] = set()
        tags = frozenset(tags)
        for tag in tags:
            found |= self._by_surrogate.get(tag, set())
        return self._purge(found, soft, ("keys", tags))

    def purge_path(self, path: str, *, soft: bool = False) -> int:
        """Purge every variant stored for exactly ``path`` (any query string)."""
        found = self._entries_at(self._by_path.get(path, set()))
        return self._purge(found, soft, ("path", path))

    def purge_prefix(self, prefix: str, *, soft: bool = False) -> int:
        """Purge every entry whose path starts with ``prefix``."""
        keys: set[str] = set()
        for path, at in self._by_path.items():
            if path.startswith(prefix):
                keys |= at
        return self._purge(self._entries_at(keys), soft, ("prefix", prefix))

    def purge_all(self, *, soft: bool = False) -> int:
        """Purge everything."""
        return self._purge(set(self.entries()), soft, ("all", None))

    def _entries_at(self, keys: Iterable[str]) -> set[Entry]:
        found: set[Entry] = set()
        for key in keys:
            variants = self._keys.get(key)
            if variants is not None:
                found.update(variants.entries.values())
        return found

    def purged_since(self, generation: int, path: str, tags: Iterable[str]) -> bool:
        """Whether a purge after ``generation`` covered an object at ``path`` with ``tags``.

        A fetch notes the generation before it asks the origin; if a purge that
        covers what came back ran meanwhile, the answer may be the purged body
        and must not be stored or refresh a stored one. Purges of other objects
        do not count. When the log no longer reaches back that far the answer
        is yes, to be safe.
        """
        if generation == self.generation:
            return False
        recent = self._recent
        if not recent or recent[0][0] > generation + 1:
            return True
        tagged = frozenset(tags)
        for purged, kind, scope in reversed(recent):
            if purged <= generation:
                break
            if kind == "all":
                return True
            if kind == "keys" and isinstance(scope, frozenset) and not scope.isdisjoint(tagged):
                return True
            if kind == "path" and scope == path:
                return True
            if kind == "prefix" and isinstance(scope, str) and path.startswith(scope):
                return True
        return False

    def _purge(
        self, found: set[Entry], soft: bool, scope: tuple[str, frozenset[str] | str | None]
    ) -> int:
        self.generation += 1
        self._recent.append((self.generation, *scope))
        for entry in found:
            if soft:
                entry.soft_purged = True
                entry.fresh_until = float("-inf")
            else:
                self.remove(entry)
        return len(found)

    # -- internals ------------------------------------------------------------

    def _drop_key(self, key: str) -> None:
        variants = self._keys.pop(key)
        for entry in variants.entries.values():
            self._unindex(entry)

    def _grow(self, entry: Entry, delta: int) -> None:
        variants = self._keys.get(entry.key)
        if variants is not None and variants.entries.get(entry.secondary) is entry:
            self.bytes += delta
            entry.charged += delta

    def _unindex(self, entry: Entry) -> None:
        self.bytes -= entry.charged
        entry.charged = 0
        entry.on_grow = None
        for tag in entry.surrogate_keys:
            bucket = self._by_surrogate.get(tag)
            if bucket is not None:
                bucket.discard(entry)
                if not bucket:
                    del self._by_surrogate[tag]
        at = self._by_path.get(entry.path)
        if at is not None:
            variants = self._keys.get(entry.key)
            still = variants is not None and any(e is not entry for e in variants.entries.values())
            if not still:
                at.discard(entry.key)
                if not at:
                    del self._by_path[entry.path]
