"""Where a table's items live in the KV store, and how key values sort.

A table ``articles`` owns every KV key under ``t/articles/``:

* ``t/articles/i/<partition>`` — an item of a table without a sort key;
* ``t/articles/i/<partition>/<sort>`` — an item of a table with one;
* ``t/articles/o/<sequence>`` — the change-stream outbox (see ``streams.py``);
* ``t/articles/seq``, ``t/articles/relay…`` — the stream's bookkeeping.

Key values are encoded so that the KV store's byte order *is* the sort key's
order, which lets ``query`` be a prefix scan: a string becomes ``s`` and the
hex of its UTF-8 bytes (hex keeps byte order, and a string's prefix encodes to
a prefix, so ``begins_with`` is a prefix too); a number becomes ``n`` and the
16 hex digits of its IEEE-754 double with the sign bit flipped (and every bit
flipped for negatives), the classic order-preserving trick. Numbers sort
before strings. Integers beyond ±2**53 are refused: as doubles they would
collide with their neighbours.
"""

from __future__ import annotations

import struct
from typing import Any

from reflow.errors import InvalidKeyError

__all__ = [
    "KeyValue",
    "encode_key_value",
    "item_prefix",
    "outbox_prefix",
    "table_prefix",
]

KeyValue = str | int | float
_SAFE_INTEGER = 2**53


def table_prefix(table: str) -> str:
    """Every KV key of ``table`` starts with this."""
    return f"t/{table}/"


def item_prefix(table: str) -> str:
    """Every item key of ``table`` starts with this."""
    return f"t/{table}/i/"


def outbox_prefix(table: str) -> str:
    """Every change-stream outbox key of ``table`` starts with this."""
    return f"t/{table}/o/"


def encode_key_value(table: str, field: str, value: Any) -> str:
    """The order-preserving text of a key attribute's value.

    Raises :class:`InvalidKeyError` naming ``table`` and ``field`` for values
    that cannot be keys (absent, bool, null, maps, lists, huge integers, NaN).
    """
    if isinstance(value, str):
        if not value:
            raise InvalidKeyError(table, field, "a string key must not be empty")
        return "s" + value.encode("utf-8").hex()
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "null" if value is None else type(value).__name__
        raise InvalidKeyError(table, field, f"a key must be a string or a number, got {kind}")
    if isinstance(value, int) and abs(value) > _SAFE_INTEGER:
        raise InvalidKeyError(table, field, f"integer key {value} is beyond ±2**53")
    number = float(value) + 0.0  # + 0.0 folds -0.0 into 0.0: one key for both
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidKeyError(table, field, f"a numeric key must be finite, got {value}")
    (bits,) = struct.unpack(">Q", struct.pack(">d", number))
    bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | (1 << 63)
    return f"n{bits:016x}"
