"""A small, strict reader of Prometheus' text exposition format (version 0.0.4).

Written for the tests (``prometheus_client`` is not a dependency). Stricter
than Prometheus itself where the format leaves room: no blank lines, one
``# TYPE`` per family before its first sample, a family's samples together,
only the three escapes in label values, no duplicate series, counters named
``*_total`` and never negative, histograms whose ``le`` buckets rise to
``+Inf`` with non-decreasing counts equal at ``+Inf`` to ``_count``, and
summaries with ``quantile`` labels plus ``_sum`` and ``_count``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

__all__ = ["ExpositionError", "Family", "parse"]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


class ExpositionError(ValueError):
    """The text is not valid exposition format (the message names the line)."""


@dataclass
class Family:
    """One metric family: its type, help text and samples."""

    name: str
    type: str = "untyped"
    help: str | None = None
    typed: bool = False
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def value(self, sample: str | None = None, **labels: str) -> float:
        """The value of the one sample named ``sample`` (default: the family) with ``labels``."""
        wanted = sample or self.name
        found = [v for n, ls, v in self.samples if n == wanted and ls == labels]
        if len(found) != 1:
            raise KeyError(f"{wanted}{labels}: {len(found)} samples")
        return found[0]


def parse(text: str) -> dict[str, Family]:
    """The families in ``text``; ExpositionError at the first violation."""
    if not text.endswith("\n"):
        raise ExpositionError("the exposition must end with a newline")
    families: dict[str, Family] = {}
    finished: set[str] = set()  # families whose samples have ended
    current: str | None = None
    for number, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {number}: {line!r}"
        if not line:
            raise ExpositionError(f"{where}: blank line")
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not _NAME.fullmatch(name):
                    raise ExpositionError(f"{where}: bad metric name")
                family = families.setdefault(name, Family(name))
                if parts[1] == "HELP":
                    if family.help is not None:
                        raise ExpositionError(f"{where}: second HELP")
                    family.help = _unescape(parts[3] if len(parts) > 3 else "", where, help=True)
                else:
                    if len(parts) != 4 or parts[3] not in _TYPES:
                        raise ExpositionError(f"{where}: bad TYPE")
                    if family.samples or family.typed:
                        raise ExpositionError(f"{where}: TYPE after samples or repeated")
                    family.type = parts[3]
                    family.typed = True
            continue
        try:
            name, labels, value = _sample(line, where)
        except IndexError:
            raise ExpositionError(f"{where}: the line ends too early") from None
        family_name = _family_of(name, families)
        if family_name != current:
            if current is not None:
                finished.add(current)
            if family_name in finished:
                raise ExpositionError(f"{where}: samples of {family_name} are not together")
            current = family_name
        family = families.setdefault(family_name, Family(family_name))
        if any(n == name and ls == labels for n, ls, _ in family.samples):
            raise ExpositionError(f"{where}: duplicate series")
        family.samples.append((name, labels, value))
    for family in families.values():
        _check(family)
    return families


def _family_of(name: str, families: dict[str, Family]) -> str:
    for kind, suffixes in _SUFFIXES.items():
        for suffix in suffixes:
            base = name.removesuffix(suffix)
            if base != name and base in families and families[base].type == kind:
                return base
    return name


def _sample(line: str, where: str) -> tuple[str, dict[str, str], float]:
    match = _NAME.match(line)
    if match is None:
        raise ExpositionError(f"{where}: no metric name")
    name, rest = match.group(), line[match.end() :]
    labels: dict[str, str] = {}
    if rest.startswith("{"):
        position = 1
        while rest[position] != "}":
            label = _LABEL.match(rest, position)
            if label is None or rest[label.end() : label.end() + 2] != '="':
                raise ExpositionError(f"{where}: bad label at {position}")
            position = label.end() + 2
            raw = []
            while True:
                if position >= len(rest):
                    raise ExpositionError(f"{where}: unterminated label value")
                char = rest[position]
                if char == '"':
                    break
                if char == "\\":
                    raw.append(rest[position : position + 2])
                    position += 2
                else:
                    raw.append(char)
                    position += 1
            if label.group() in labels:
                raise ExpositionError(f"{where}: repeated label {label.group()}")
            labels[label.group()] = _unescape("".join(raw), where, help=False)
            position += 1
            if rest[position] == ",":
                position += 1
            elif rest[position] != "}":
                raise ExpositionError(f"{where}: expected ',' or '}}'")
        rest = rest[position + 1 :]
    if not rest.startswith(" "):
        raise ExpositionError(f"{where}: no space before the value")
    fields = rest[1:].split(" ")
    if len(fields) not in (1, 2) or (len(fields) == 2 and not re.fullmatch(r"-?\d+", fields[1])):
        raise ExpositionError(f"{where}: expected a value and an optional timestamp")
    text = fields[0]
    if text in ("+Inf", "-Inf", "NaN"):
        return name, labels, float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise ExpositionError(f"{where}: bad value {text!r}")
    return name, labels, float(text)


def _unescape(raw: str, where: str, *, help: bool) -> str:
    out = []
    index = 0
    escapes = {"\\": "\\", "n": "\n"} if help else {"\\": "\\", "n": "\n", '"': '"'}
    while index < len(raw):
        char = raw[index]
        if char == "\\":
            following = raw[index + 1 : index + 2]
            if following not in escapes:
                raise ExpositionError(f"{where}: bad escape \\{following}")
            out.append(escapes[following])
            index += 2
        else:
            if char == "\n":
                raise ExpositionError(f"{where}: raw newline")
            out.append(char)
            index += 1
    return "".join(out)


def _check(family: Family) -> None:
    name = family.name
    if family.type == "counter":
        if not name.endswith("_total"):
            raise ExpositionError(f"counter {name} does not end in _total")
        for sample, _, value in family.samples:
            if sample != name or value < 0 or math.isnan(value):
                raise ExpositionError(f"counter {name}: bad sample {sample} {value}")
    elif family.type == "histogram":
        series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        for sample, labels, value in family.samples:
            if sample == f"{name}_bucket":
                if "le" not in labels:
                    raise ExpositionError(f"{name}_bucket without le")
                rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                bound = float(labels["le"].replace("Inf", "inf"))
                series.setdefault(rest, []).append((bound, value))
            elif sample not in (f"{name}_sum", f"{name}_count"):
                raise ExpositionError(f"histogram {name}: stray sample {sample}")
        for rest, buckets in series.items():
            bounds = [b for b, _ in buckets]
            counts = [c for _, c in buckets]
            if bounds != sorted(set(bounds)) or bounds[-1] != math.inf:
                raise ExpositionError(f"histogram {name}{rest}: le must rise to +Inf")
            if counts != sorted(counts):
                raise ExpositionError(f"histogram {name}{rest}: bucket counts fall")
            labels = dict(rest)
            count = family.value(f"{name}_count", **labels)
            family.value(f"{name}_sum", **labels)
            if count != counts[-1]:
                raise ExpositionError(f"histogram {name}{rest}: +Inf {counts[-1]} != {count}")
    elif family.type == "summary":
        for sample, labels, _ in family.samples:
            if sample == name and "quantile" not in labels:
                raise ExpositionError(f"summary {name}: sample without quantile")
            if sample not in (name, f"{name}_sum", f"{name}_count"):
                raise ExpositionError(f"summary {name}: stray sample {sample}")
