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
from typing import Any

__all__ = ["CfHeaders", "TemplateCache", "added_if_intact"]

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
    if len(headers) == len(template):
        return {}
    return {name: entries for name, entries in headers.items() if name not in template}


class TemplateCache:
    """Request-header templates by the exact header list (bounded, LRU).

    Clients send the same headers request after request on a connection (and
    load generators always do), so the template is usually built once.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._templates: OrderedDict[tuple[tuple[str, str], ...], CfHeaders] = OrderedDict()

    def get(self, headers: list[tuple[str, str]], convert: Any) -> CfHeaders:
        """The template for ``headers``, converted with ``convert`` on first sight."""
        key = tuple(headers)
        template = self._templates.get(key)
        if template is None:
            template = convert(headers)
            self._templates[key] = template
            if len(self._templates) > self.size:
                self._templates.popitem(last=False)
        return template
