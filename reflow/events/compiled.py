"""A bucket's plan turned into straight-line Python: one function per hot bucket.

:meth:`RuleSet.match <reflow.events.ruleset.RuleSet.match>` walks a
bucket's plan (:class:`~reflow.events.buckets.Bucket`) slot by slot: for
each, it unpacks the slot's tuple, walks the event down the slot's path
from the top, looks the path's class up or computes it, and ``&`` s in the
alternatives the class lets through. With the benchmark's rules that loop
is half of the time an event takes at 10,000 rules, spent on the loop's own
bookkeeping rather than on the event. :func:`compile_bucket` writes the
same steps out for one bucket, with everything known before the event
(the slots' masks, memories and indexes, the keys of each path) bound as
names of the generated function, and each node of the event read once
however many paths go through it (``detail``, then ``detail.article``, are
fetched once for all the paths below them).

The generated function does exactly what the loop does (the loop stays, for
buckets not yet compiled): the same order of slots, the same skipping of
slots no surviving alternative needs, the same early stop, the same
classes shared with the other buckets of the event through ``classes``.
Generated text holds no value from a rule: keys and masks are referred to by
generated names only, so no pattern can inject code.

A bucket is compiled only after it has been run :data:`COMPILE_AFTER` times
since it last changed: compiling costs about a millisecond per bucket, which
a bucket reached once or twice between changes would never earn back.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping
from typing import Any

from reflow.events.conditions import Field, Membership, Path, consistent_choice, leaf_entries
from reflow.events.paths import PathIndex

__all__ = [
    "COMPILE_AFTER",
    "MISSING",
    "SLOW",
    "Runner",
    "compile_bucket",
    "leaf_class",
    "one_element_each",
]

MISSING = object()  # the path leads nowhere
SLOW = object()  # something other than an object on the way: read it with leaf_entries

# How many runs of a bucket since its last change before it is compiled.
COMPILE_AFTER = 8

Entry = tuple[list[Any], list[Membership] | None]
Runner = Callable[[Mapping[str, Any], dict[PathIndex, int], dict[Path, Entry], list[Any]], None]
"""``runner(event, classes, tied, found)``: appends the owners of the bits that pass."""

_SCALARS = frozenset({str, int, float, bool, type(None)})


def leaf_class(
    index: PathIndex, node: Any, event: Mapping[str, Any], path: Path, tied: dict[Path, Entry]
) -> int:
    """The class of what the event holds at ``path``, ``node`` being what a plain walk found.

    ``node`` is :data:`MISSING` when an object on the way lacked the key,
    :data:`SLOW` when something other than an object stood on the way (then
    the path is read again with :func:`leaf_entries`, arrays and all), and
    otherwise the value at the end of the path.
    """
    if node is MISSING:
        return index.absent
    kind = type(node)
    if index.numbers_only and (kind is int or kind is float):
        # A number on a path of ranges only: its slot's class (NaN is in no range).
        return (index.number_class(node) if node == node else 0) | index.present
    if kind in _SCALARS:
        if kind is str and index.memo is None and not index.simple:
            # Values here do not recur (paths, addresses): computed at once.
            return index.compute(node) | index.present
        if kind is str and index.simple:
            found = index.exact.get(node, 0) | index.present
            if index.but_all:
                found |= index.but_all & ~index.but_excluded.get(node, 0)
            return found
        return index.value_class(node) | index.present
    if kind is list:
        # An array of scalars at the end of a plain walk: its elements are the values.
        for item in node:
            if type(item) not in _SCALARS:
                break
        else:
            return index.classify(node)
    values, members = leaf_entries(event, path)
    if members is not None:
        tied[path] = (values, members)
    return index.classify(values)


def one_element_each(alternative: tuple[Field, ...], tied: dict[Path, Entry]) -> bool:
    """Whether the fields of ``alternative`` can hold from one element of each array of objects.

    Every field of an alternative still standing was read, so ``tied``
    holds every one of its paths whose values sit in arrays of objects.
    """
    options = []
    for item in alternative:
        entry = tied.get(item.path)
        if entry is not None:
            values, members = entry
            assert members is not None
            options.append(item.witnesses(values, members))
    return len(options) < 2 or consistent_choice(options)


def slot_answer(
    slot: Any,
    node: Any,
    key: Any,
    event: Mapping[str, Any],
    classes: dict[PathIndex, int],
    tied: dict[Path, Entry],
    everyone: int,
    runs: int,
) -> int:
    """What a slot lets through when its value memory does not know ``node``.

    The class of the node (shared with the other slots and buckets of the
    event through ``classes``), reduced to the slot's conditions, then the
    slot's answer for that class; remembered under ``key`` unless it is
    ``None`` (not a scalar).
    """
    index = slot.index
    found = classes.get(index)
    if found is None:
        if type(node) is str and index.simple:
            found = index.exact.get(node, 0) | index.present
            if index.but_all:
                found |= index.but_all & ~index.but_excluded.get(node, 0)
        else:
            found = leaf_class(index, node, event, slot.path, tied)
        classes[index] = found
    seen = found & slot.relevant
    kept: int | None = slot.memo.get(seen)
    if kept is None:
        kept = slot.keep(seen, everyone)
    if key is not None:
        slot.remember(key, kept, runs)
    return kept


def compile_bucket(
    everyone: int,
    plan: tuple[tuple[int, Path, int, dict[int, int], Any], ...],
    owners: list[Any],
    tally: list[int],
) -> Runner:
    """Straight-line code for a bucket's ``plan`` (see :class:`~reflow.events.buckets.Bucket`).

    ``owners`` is who each bit stands for (bit n at n + 1); ``tally[0]``
    counts the runs of the generated code, which the slots' value memories
    use to tell whether values recur. What a value memory does not know is
    worked out by :func:`slot_answer`, outside the generated code, which
    keeps the code short (it is compiled for every hot bucket).
    """
    names: dict[str, Any] = {
        "MISSING": MISSING,
        "SLOW": SLOW,
        "UNREAD": _UNREAD,
        "PLAIN": _PLAIN,
        "EVERYONE": everyone,
        "OWNERS": owners,
        "ONES": [0] + [1 << position for position in range(len(owners))],
        "TALLY": tally,
        "answer": slot_answer,
        "one_element_each": one_element_each,
        "bisect_left": bisect_left,
    }
    prefixes: dict[Path, str] = {(): "event"}  # path prefix -> the local holding its node
    body: list[str] = []
    for number, (users, path, _relevant, _memo, slot) in enumerate(plan):
        names.update({f"U{number}": users, f"S{number}": slot, f"V{number}": slot.values})
        leaf = f"K{number}_{len(path) - 1}"
        names[leaf] = path[-1]
        body += [f"    if alive & U{number}:"]
        body += _walk(path, number, prefixes, names)
        body += [f"        node = {_step(prefixes[path[:-1]], leaf)}", "        kind = type(node)"]
        table = slot.number_table(everyone)
        if table is not None:
            # Only ranges (and exists) here: a number's answer is its place
            # among this slot's own bounds, found by bisection.
            names[f"B{number}"], names[f"T{number}"] = table
            body += [
                "        if (kind is int or kind is float) and node == node:",
                f"            position = bisect_left(B{number}, node)",
                f"            if position < {len(table[0])} and B{number}[position] == node:",
                f"                kept = T{number}[2 * position + 1]",
                "            else:",
                f"                kept = T{number}[2 * position]",
                "        el",
            ]
        else:
            body += ["        "]
        # A scalar (or nothing) is looked up in the slot's value memory first.
        answer = f"answer(S{number}, node, {{}}, event, classes, tied, EVERYONE, TALLY[0])"
        body[-1] += "if kind is str or node is MISSING:"
        body += [
            f"            kept = V{number}.get(node)",
            "            if kept is None:",
            f"                kept = {answer.format('node')}",
            "        elif kind in PLAIN:",
            "            key = (kind, node)",
            f"            kept = V{number}.get(key)",
            "            if kept is None:",
            f"                kept = {answer.format('key')}",
            "        else:",
            f"            kept = {answer.format('None')}",
            "        alive &= kept",
            "        if not alive:",
            "            return",
        ]
    lines = ["def run(event, classes, tied, found):", "    TALLY[0] += 1", "    alive = EVERYONE"]
    # Every prefix node starts unread; read on first use by a slot that is evaluated.
    unread = [local for prefix, local in prefixes.items() if prefix]
    if unread:
        lines.append(f"    {' = '.join(unread)} = UNREAD")
    lines += body
    # The surviving bits from the top: bit_length names the owner, a table the bit.
    lines += [
        "    append = found.append",
        "    if tied:",
        "        while alive:",
        "            top = alive.bit_length()",
        "            alive ^= ONES[top]",
        "            owner = OWNERS[top]",
        "            if one_element_each(owner[2], tied):",
        "                append(owner)",
        "        return",
        "    while alive:",
        "        top = alive.bit_length()",
        "        alive ^= ONES[top]",
        "        append(OWNERS[top])",
    ]
    source = "\n".join(lines) + "\n"
    code = compile(source, "<reflow.events.compiled bucket>", "exec")
    exec(code, names)  # noqa: S102 - generated above from names only, no rule text
    runner: Runner = names["run"]
    return runner


_UNREAD = object()  # a prefix node not fetched yet


# Scalars other than strings, remembered under (type, value): True, 1 and 1.0
# are equal in Python but not to every condition.
_PLAIN = frozenset({int, float, bool, type(None)})


def _step(parent: str, key: str) -> str:
    """An expression: the node under ``key`` of the node held by local ``parent``."""
    if parent == "event":
        return f"event.get({key}, MISSING) if type(event) is dict else SLOW"
    return (
        f"{parent}.get({key}, MISSING) if type({parent}) is dict "
        f"else (MISSING if {parent} is MISSING else SLOW)"
    )


def _walk(path: Path, number: int, prefixes: dict[Path, str], names: dict[str, Any]) -> list[str]:
    """Lines that make sure every proper prefix of ``path`` has its node read (once)."""
    lines: list[str] = []
    indent = "        "
    # The deepest prefix's check wraps the shallower ones: once the deepest is
    # read, so are all above it.
    chain: list[Path] = [path[:depth] for depth in range(1, len(path))]
    for prefix in chain:
        if prefix not in prefixes:
            prefixes[prefix] = f"n{len(prefixes)}"
    opened = 0
    for prefix in reversed(chain):
        lines.append(f"{indent}{'    ' * opened}if {prefixes[prefix]} is UNREAD:")
        opened += 1
    for prefix in chain:
        opened -= 1
        key = f"K{number}_{len(prefix) - 1}"
        names[key] = prefix[-1]
        parent = prefixes[prefix[:-1]]
        lines.append(f"{indent}{'    ' * (opened + 1)}{prefixes[prefix]} = {_step(parent, key)}")
    return lines
