"""The eighteen ``States.*`` intrinsic functions and their small parser.

An intrinsic call is written in the value of a ``.$`` key, for example
``States.Format('Hello, {}', $.name)``. The grammar is tiny, so it is parsed
by hand into :class:`Call` trees (memoised by text) and evaluated against the
data, the context object and the variables. :func:`render` prints a tree
back, so ``parse(render(parse(t)))`` is the same tree.

Arguments are string literals in single quotes (``\\'``, ``\\{``, ``\\}``
and ``\\\\`` escape), numbers, ``true``/``false``/``null``, paths and nested
calls. Failures raise ``States.IntrinsicFailure``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import random
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from reflow.flows import paths
from reflow.flows.errors import INTRINSIC_FAILURE, PathSyntaxError, StatesError

__all__ = ["FUNCTIONS", "Call", "PathArg", "evaluate", "is_intrinsic", "parse", "render"]

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_FUNCTION_NAME = re.compile(r"States\.[A-Za-z0-9]+")
_PATH_CHARS = re.compile(r"\$[^\s,()]*")
_MAX_RANGE = 1000
_MAX_BASE64_INPUT = 10_000
_ESCAPED = {"{": "\ue000", "}": "\ue001"}
_UNESCAPE = str.maketrans({"\ue000": "{", "\ue001": "}"})


@dataclass(frozen=True)
class PathArg:
    """A path used as an argument (resolved at evaluation time)."""

    text: str


@dataclass(frozen=True)
class Call:
    """``States.Name(arg, …)``."""

    name: str
    args: tuple[Any, ...]


def is_intrinsic(text: object) -> bool:
    """Whether ``text`` looks like an intrinsic call (``States.X(…)``)."""
    return isinstance(text, str) and text.startswith("States.")


@lru_cache(maxsize=2048)
def parse(text: str) -> Call:
    """Parse one intrinsic call; raises :class:`PathSyntaxError` where it breaks."""
    parser = _Parser(text)
    call = parser.call()
    parser.skip_space()
    if parser.position != len(text):
        raise PathSyntaxError(text, f"unexpected text after the call at offset {parser.position}")
    return call


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    def fail(self, problem: str) -> PathSyntaxError:
        return PathSyntaxError(self.text, f"{problem} at offset {self.position}")

    def skip_space(self) -> None:
        while self.position < len(self.text) and self.text[self.position] == " ":
            self.position += 1

    def call(self) -> Call:
        match = _FUNCTION_NAME.match(self.text, self.position)
        if match is None:
            raise self.fail("expected a States.* function name")
        name = match.group()
        if name not in FUNCTIONS:
            raise self.fail(f"unknown intrinsic function {name}")
        self.position = match.end()
        if not self.text.startswith("(", self.position):
            raise self.fail(f"expected '(' after {name}")
        self.position += 1
        args: list[Any] = []
        self.skip_space()
        if self.text.startswith(")", self.position):
            self.position += 1
            return Call(name, ())
        while True:
            self.skip_space()
            # Only States.Format's template gives braces a meaning; elsewhere \{ is just {.
            args.append(self.argument(template=name == "States.Format" and not args))
            self.skip_space()
            if self.text.startswith(",", self.position):
                self.position += 1
                continue
            if self.text.startswith(")", self.position):
                self.position += 1
                return Call(name, tuple(args))
            raise self.fail("expected ',' or ')'")

    def argument(self, *, template: bool = False) -> Any:
        text, position = self.text, self.position
        if position >= len(text):
            raise self.fail("expected an argument")
        char = text[position]
        if char == "'":
            return self.string(template=template)
        if char == "$":
            match = _PATH_CHARS.match(text, position)
            assert match is not None
            try:
                paths.compile_path(match.group())
            except PathSyntaxError as error:
                raise self.fail(f"bad path argument ({error.problem})") from None
            self.position = match.end()
            return PathArg(match.group())
        if text.startswith("States.", position):
            return self.call()
        for word, value in (("true", True), ("false", False), ("null", None)):
            if text.startswith(word, position):
                self.position += len(word)
                return value
        match = _NUMBER.match(text, position)
        if match is not None:
            self.position = match.end()
            number = match.group()
            return float(number) if any(c in number for c in ".eE") else int(number)
        raise self.fail(f"unexpected {char!r}")

    def string(self, *, template: bool = False) -> str:
        text = self.text
        self.position += 1
        out: list[str] = []
        while self.position < len(text):
            char = text[self.position]
            if char == "\\":
                if self.position + 1 >= len(text):
                    raise self.fail("a backslash ends the text")
                following = text[self.position + 1]
                # Escaped braces become private-use markers, so States.Format can
                # tell them from placeholders while a plain backslash stays plain.
                out.append(_ESCAPED.get(following, following) if template else following)
                self.position += 2
                continue
            if char == "'":
                self.position += 1
                return "".join(out)
            out.append(char)
            self.position += 1
        raise self.fail("a string literal is never closed")


def render(call: Call) -> str:
    """Print ``call`` back as intrinsic syntax."""
    return f"{call.name}({', '.join(_render_arg(arg) for arg in call.args)})"


def _render_arg(arg: Any) -> str:
    if isinstance(arg, Call):
        return render(arg)
    if isinstance(arg, PathArg):
        return arg.text
    if isinstance(arg, str):
        escaped = re.sub(r"[\\']", lambda m: "\\" + m.group(), arg)
        escaped = escaped.replace("\ue000", "\\{").replace("\ue001", "\\}")
        return f"'{escaped}'"
    return json.dumps(arg)


def evaluate(
    text_or_call: str | Call,
    data: Any,
    context: Any = None,
    variables: Mapping[str, Any] | None = None,
) -> Any:
    """Evaluate an intrinsic call; raises ``States.IntrinsicFailure`` on bad arguments."""
    call = parse(text_or_call) if isinstance(text_or_call, str) else text_or_call
    args = [_value(arg, data, context, variables) for arg in call.args]
    try:
        return FUNCTIONS[call.name](*args)
    except StatesError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, binascii.Error) as error:
        raise StatesError(INTRINSIC_FAILURE, f"{call.name}: {error}") from None


def _value(arg: Any, data: Any, context: Any, variables: Mapping[str, Any] | None) -> Any:
    if isinstance(arg, Call):
        return evaluate(arg, data, context, variables)
    if isinstance(arg, PathArg):
        return paths.evaluate(arg.text, data, context, variables)
    return arg


def _fail(name: str, problem: str) -> StatesError:
    return StatesError(INTRINSIC_FAILURE, f"{name}: {problem}")


def _require(name: str, value: Any, kind: type | tuple[type, ...], what: str) -> None:
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise _fail(name, f"{what} must be {_kind_name(kind)}, got {json.dumps(value)}")


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", list: "an array", dict: "an object"}
    return " or ".join(names.get(k, k.__name__) for k in _kinds(kind))


def _integer(name: str, value: Any, what: str) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    _require(name, value, int, what)
    return int(value)


def _format(template: Any, *args: Any) -> str:
    _require("States.Format", template, str, "the template")
    pieces = re.split(r"(\{\})", template)
    out: list[str] = []
    remaining = list(args)
    for piece in pieces:
        if piece == "{}":
            if not remaining:
                raise _fail("States.Format", "more placeholders than arguments")
            out.append(_format_arg(remaining.pop(0)))
        else:
            out.append(piece.translate(_UNESCAPE))
    if remaining:
        raise _fail("States.Format", "more arguments than placeholders")
    return "".join(out)


def _format_arg(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        raise _fail("States.Format", "arguments must be strings, numbers, booleans or null")
    return json.dumps(value)


def _string_to_json(text: Any) -> Any:
    _require("States.StringToJson", text, str, "the argument")
    try:
        return json.loads(text)
    except ValueError as error:
        raise _fail("States.StringToJson", f"not JSON: {error}") from None


def _json_to_string(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _array(*values: Any) -> list[Any]:
    return list(values)


def _array_partition(array: Any, size: Any) -> list[list[Any]]:
    _require("States.ArrayPartition", array, list, "the first argument")
    chunk = _integer("States.ArrayPartition", size, "the chunk size")
    if chunk <= 0:
        raise _fail("States.ArrayPartition", "the chunk size must be positive")
    return [array[i : i + chunk] for i in range(0, len(array), chunk)]


def _array_contains(array: Any, value: Any) -> bool:
    _require("States.ArrayContains", array, list, "the first argument")
    return any(_same(item, value) for item in array)


def _same(a: Any, b: Any) -> bool:
    # JSON equality: true is not 1, and 1 equals 1.0.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _array_range(start: Any, end: Any, step: Any) -> list[int]:
    first = _integer("States.ArrayRange", start, "the start")
    last = _integer("States.ArrayRange", end, "the end")
    stride = _integer("States.ArrayRange", step, "the step")
    if stride == 0:
        raise _fail("States.ArrayRange", "the step must not be 0")
    values = list(range(first, last + (1 if stride > 0 else -1), stride))
    if len(values) > _MAX_RANGE:
        raise _fail("States.ArrayRange", f"at most {_MAX_RANGE} items may be generated")
    return values


def _array_get_item(array: Any, index: Any) -> Any:
    _require("States.ArrayGetItem", array, list, "the first argument")
    position = _integer("States.ArrayGetItem", index, "the index")
    if not 0 <= position < len(array):
        raise _fail("States.ArrayGetItem", f"index {position} is out of bounds")
    return array[position]


def _array_length(array: Any) -> int:
    _require("States.ArrayLength", array, list, "the argument")
    return len(array)


def _array_unique(array: Any) -> list[Any]:
    _require("States.ArrayUnique", array, list, "the argument")
    out: list[Any] = []
    for item in array:
        if not any(_same(item, seen) for seen in out):
            out.append(item)
    return out


def _base64_encode(text: Any) -> str:
    _require("States.Base64Encode", text, str, "the argument")
    if len(text) > _MAX_BASE64_INPUT:
        raise _fail("States.Base64Encode", f"input over {_MAX_BASE64_INPUT} characters")
    return base64.b64encode(text.encode()).decode("ascii")


def _base64_decode(text: Any) -> str:
    _require("States.Base64Decode", text, str, "the argument")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True).decode()
    except (binascii.Error, UnicodeError) as error:
        raise _fail("States.Base64Decode", f"not base64: {error}") from None


_HASHES = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384"}
_HASHES["SHA-512"] = "sha512"


def _hash(data: Any, algorithm: Any) -> str:
    _require("States.Hash", algorithm, str, "the algorithm")
    if algorithm not in _HASHES:
        raise _fail("States.Hash", f"algorithm must be one of {', '.join(_HASHES)}")
    text = data if isinstance(data, str) else _json_to_string(data)
    return hashlib.new(_HASHES[algorithm], text.encode()).hexdigest()


def _json_merge(first: Any, second: Any, deep: Any) -> dict[str, Any]:
    _require("States.JsonMerge", first, dict, "the first argument")
    _require("States.JsonMerge", second, dict, "the second argument")
    if deep is not False:
        raise _fail("States.JsonMerge", "only a shallow merge (false) is supported")
    return {**first, **second}


def _math_random(start: Any, end: Any, seed: Any = None) -> int:
    low = _integer("States.MathRandom", start, "the start")
    high = _integer("States.MathRandom", end, "the end")
    if high <= low:
        raise _fail("States.MathRandom", "the end must be greater than the start")
    generator = random.Random(_integer("States.MathRandom", seed, "the seed")) if seed else random
    return generator.randrange(low, high)


def _math_add(a: Any, b: Any) -> int:
    return _integer("States.MathAdd", a, "the first argument") + _integer(
        "States.MathAdd", b, "the second argument"
    )


def _string_split(text: Any, delimiters: Any) -> list[str]:
    _require("States.StringSplit", text, str, "the first argument")
    _require("States.StringSplit", delimiters, str, "the delimiters")
    if not delimiters:
        return [text]
    pattern = "[" + re.escape(delimiters) + "]"
    return [part for part in re.split(pattern, text) if part]


def _uuid() -> str:
    return str(uuid.uuid4())


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "States.Format": _format,
    "States.StringToJson": _string_to_json,
    "States.JsonToString": _json_to_string,
    "States.Array": _array,
    "States.ArrayPartition": _array_partition,
    "States.ArrayContains": _array_contains,
    "States.ArrayRange": _array_range,
    "States.ArrayGetItem": _array_get_item,
    "States.ArrayLength": _array_length,
    "States.ArrayUnique": _array_unique,
    "States.Base64Encode": _base64_encode,
    "States.Base64Decode": _base64_decode,
    "States.Hash": _hash,
    "States.JsonMerge": _json_merge,
    "States.MathRandom": _math_random,
    "States.MathAdd": _math_add,
    "States.StringSplit": _string_split,
    "States.UUID": _uuid,
}
"""Every intrinsic function by its ASL name."""
