"""Which Lambda@Edge headers a function added, with everything it was given intact.

Building ``{lowercase: [{"key", "value"}]}`` for a hook and validating every
entry it returns was most of the cost of a hooked cache hit, although the usual
function only adds a header or two. The edge keeps a *template* — the headers
as converted once, never handed to a function — and gives the function a fresh
copy. On return, one C-level comparison (``template.items() <= returned.items()``)
says whether every given entry came back equal; then only the names the
function added go through the full checks of
:func:`reflow.edge.triggers.headers_from_cf`, and the stored headers' rendered
lines are reused instead of re-serialised.

Anything else (an edited, replaced or removed entry, a non-dict) answers
``None``, and the caller falls back to the full, order-preserving conversion,
so this fast path never decides a case the slow path would decide differently.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["CfHeaders", "HeaderCopies", "TemplateCache", "added_if_intact"]

CfHeaders = dict[str, list[dict[str, str]]]


def added_if_intact(headers: Any, template: CfHeaders) -> dict[str, Any] | None:
    """The entries a function added, if every templated entry came back equal.

    Returns the added names with their raw entries (still to be validated), in
    the order the function left them, or ``None`` when a templated entry was
    changed or removed, or ``headers`` is not a dict.
    """
    # dict_items comparison runs in C and short-cuts on identical objects, which
    # the untouched entries of the fresh copy are not, but their strings are.
    if type(headers) is not dict or not template.items() <= headers.items():
        return None
    extra = len(headers) - len(template)
    if extra == 0:
        return {}
    if extra == 1:
        # The usual case, one header added. Functions append, and dicts keep order, so
        # it is usually the last key; if not, a set difference in C finds it.
        name = next(reversed(headers))
        if name in template:
            (name,) = headers.keys() - template.keys()
        return {name: headers[name]}
    return {name: entries for name, entries in headers.items() if name not in template}


class HeaderCopies:
    """A template and the copies of it handed to functions, one call at a time.

    :meth:`take` gives a call its headers: the copy the previous call returned
    equal to the template (with what it added removed), or a fresh one.
    :meth:`give_back` checks the copy *after* the call, on the object handed out
    (whatever the function returned), so a copy a function changed — during
    the call or, through a reference it kept, during a later one — is never
    handed out again.
    """

    __slots__ = ("convert", "pairs", "spare", "template")

    def __init__(self, pairs: list[tuple[str, str]], convert: Callable[..., CfHeaders]) -> None:
        self.pairs = pairs
        self.convert = convert
        self.template = convert(pairs)
        self.spare: CfHeaders | None = None

    def take(self) -> CfHeaders:
        """Headers for one call: the spare copy, or a fresh one."""
        spare = self.spare
        if spare is None:
            return self.convert(self.pairs)
        self.spare = None
        return spare

    def give_back(self, handed: CfHeaders) -> None:
        """Keep ``handed`` for the next call if it is still equal to the template."""
        added = added_if_intact(handed, self.template)
        if added is not None:
            self.keep(handed, added)

    def keep(self, handed: CfHeaders, added: Iterable[str]) -> None:
        """Keep ``handed``, already found equal to the template plus ``added``, for reuse.

        Only for a copy checked by :func:`added_if_intact` after the call, with
        nothing run since; otherwise use :meth:`give_back`.
        """
        for name in added:
            del handed[name]
        self.spare = handed


class TemplateCache:
    """Request-header copies by the exact header list (bounded, LRU).

    Clients send the same headers request after request on a connection (and
    load generators always do), so the template is usually built once.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._copies: OrderedDict[tuple[tuple[str, str], ...], HeaderCopies] = OrderedDict()

    def get(
        self, headers: list[tuple[str, str]], convert: Callable[..., CfHeaders]
    ) -> HeaderCopies:
        """The copies for ``headers``, converted with ``convert`` on first sight."""
        key = tuple(headers)
        copies = self._copies.get(key)
        if copies is None:
            copies = HeaderCopies(list(headers), convert)
            self._copies[key] = copies
            if len(self._copies) > self.size:
                self._copies.popitem(last=False)
        return copies
