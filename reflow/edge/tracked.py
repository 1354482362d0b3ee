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
from functools import partial
from operator import itemgetter
from typing import Any

__all__ = [
    "CfHeaders",
    "HeaderCopies",
    "Intact",
    "TemplateCache",
    "added_if_intact",
    "copier",
    "intact_check",
]

CfHeaders = dict[str, list[dict[str, str]]]
# A template's entries in one C call: ``getter(headers) == expected`` (see intact_check).
Intact = tuple[Callable[[Any], Any], Any]
_Shape = tuple[tuple[int, ...], ...]
# Copy functions by the shape of a template (header count, entries per header, keys per
# entry): few shapes occur, and compiling one per template would cost more than it saves.
_COPIERS: dict[_Shape, Callable[[tuple[str, ...]], CfHeaders]] = {}
_MAX_COPIERS = 256


def copier(template: Any) -> Callable[[], CfHeaders] | None:
    """A function that makes a fresh, equal copy of ``template``, or None.

    The copy is one dict display of the template's own strings, e.g.
    ``{s[0]: [{s[1]: s[2], s[3]: s[4]}]}`` (several times cheaper than
    converting the pairs again, and its strings are the template's, so the
    comparison after a call is by identity). The generated source holds
    only indices, never a header's bytes. None when the template is not all
    strings in ``{name: [{key: value}]}`` form.
    """
    if type(template) is not dict:
        return None
    shape: list[tuple[int, ...]] = []
    strings: list[str] = []
    for name, entries in template.items():
        if type(name) is not str or type(entries) is not list:
            return None
        strings.append(name)
        sizes = []
        for entry in entries:
            if type(entry) is not dict:
                return None
            for key, value in entry.items():
                if type(key) is not str or type(value) is not str:
                    return None
                strings += (key, value)
            sizes.append(len(entry))
        shape.append(tuple(sizes))
    key = tuple(shape)
    make = _COPIERS.get(key)
    if make is None:
        make = _compile(key)
        if len(_COPIERS) < _MAX_COPIERS:
            _COPIERS[key] = make
    return partial(make, tuple(strings))


def _compile(shape: _Shape) -> Callable[[tuple[str, ...]], CfHeaders]:
    index = 0
    parts = []
    for sizes in shape:
        name = index
        index += 1
        entries = []
        for size in sizes:
            pairs = [f"s[{index + 2 * i}]: s[{index + 2 * i + 1}]" for i in range(size)]
            index += 2 * size
            entries.append("{" + ", ".join(pairs) + "}")
        parts.append(f"s[{name}]: [{', '.join(entries)}]")
    made: Callable[[tuple[str, ...]], CfHeaders] = eval(  # noqa: S307 (indices only)
        "lambda s: {" + ", ".join(parts) + "}"
    )
    return made


def intact_check(template: CfHeaders) -> Intact | None:
    """``(getter, expected)`` with ``getter(d) == expected`` iff ``d`` holds every entry equal.

    ``getter`` is an :func:`operator.itemgetter` of the template's names (it
    raises KeyError for a missing one) and ``expected`` what it returns for the
    template itself. About a third cheaper than ``template.items() <= d.items()``,
    which makes a (name, entries) tuple per entry on both sides. None for an
    empty template (nothing to compare).
    """
    if not template:
        return None
    getter = itemgetter(*template)
    return getter, getter(template)


def added_if_intact(
    headers: Any, template: CfHeaders, intact: Intact | None = None
) -> dict[str, Any] | None:
    """The entries a function added, if every templated entry came back equal.

    Returns the added names with their raw entries (still to be validated), in
    the order the function left them, or ``None`` when a templated entry was
    changed or removed, or ``headers`` is not a dict. ``intact`` is
    :func:`intact_check` of ``template``, when the caller keeps one.
    """
    if type(headers) is not dict:
        return None
    if intact is None:
        # dict_items comparison runs in C and short-cuts on identical objects, which
        # the untouched entries of the fresh copy are not, but their strings are.
        if not template.items() <= headers.items():
            return None
    else:
        try:
            if intact[0](headers) != intact[1]:
                return None
        except KeyError:
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

    __slots__ = ("convert", "fresh", "intact", "pairs", "spare", "template")

    def __init__(self, pairs: list[tuple[str, str]], convert: Callable[..., CfHeaders]) -> None:
        self.pairs = pairs
        self.convert = convert
        self.template = convert(pairs)
        self.intact = intact_check(self.template)
        self.spare: CfHeaders | None = None
        # A fresh copy of the template without checks: for one-header request templates
        # this is ~6x cheaper than handing back a used copy (give_back's comparison).
        made = copier(self.template)
        self.fresh: Callable[[], CfHeaders] = made if made is not None else partial(convert, pairs)

    def take(self) -> CfHeaders:
        """Headers for one call: the spare copy, or a fresh one."""
        spare = self.spare
        if spare is None:
            return self.fresh()
        self.spare = None
        return spare

    def give_back(self, handed: CfHeaders) -> None:
        """Keep ``handed`` for the next call if it is still equal to the template."""
        added = added_if_intact(handed, self.template, self.intact)
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
        # The copies :meth:`get` returned last: a caller may check ``last.pairs == headers``
        # itself first (a remembered request's header list holds the very same tuples,
        # so that is a few identity checks, and no call).
        self.last: HeaderCopies | None = None

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
        self.last = copies
        return copies
