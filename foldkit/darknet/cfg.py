"""Darknet ``.cfg`` text → a list of sections, each option remembering its line.

The grammar is Darknet's own (parser.c / option_list.c): every space, tab and CR is removed
*anywhere* in a line; a line starting with ``#`` or ``;`` (after that) is a comment; ``[name]``
opens a section; ``key=value`` splits at the first ``=``; the first occurrence of a key wins.
Section aliases (``[conv]``, ``[max]``, …) are resolved to their canonical names. Values are
converted when a layer asks for them, so that a bad value is reported with its file and line.

Values are read strictly. Darknet converts with C's ``atoi``/``atof``, which stop at the first
character they cannot use and return what they have so far (0 for nothing): ``1_6`` is 1,
``3.5`` is 3 as an integer, ``１６`` (full-width digits) is 0, ``1e9`` is 1. Python's ``int`` and
``float`` read some of those differently (``1_6`` is 16), so neither reading can be trusted: a
value is accepted only when the whole of it (up to an inline ``#`` comment, where ``atoi`` stops
too) is a plain ASCII number, so that Darknet and foldkit read the same number. Keys whose
values Darknet silently replaces or cannot use (``groups=-4`` becomes 1, ``classes=-1``,
``dilation=0``, a negative ``padding``) are refused with their lower bound.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from foldkit.errors import FoldkitError

SECTION_ALIASES = {
    "conv": "convolutional",
    "max": "maxpool",
    "avg": "avgpool",
    "soft": "softmax",
    "conn": "connected",
    "lrn": "normalization",
    "network": "net",
    "empty": "silence",
}

_WHITESPACE = str.maketrans("", "", " \t\r\n")

# What atoi/atof consume in full: ASCII digits only (no '_', no Unicode digits, no hex, inf or nan).
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
NumberKind = type[int] | type[float]  # (named here: inside Section, ``type`` is a field)
C_INT_MAX = 2**31 - 1  # Darknet stores these keys in a C int; atoi's overflow is undefined

# The smallest value each (section, key) may take; Darknet reads anything lower differently or not at all.
MINIMUM: dict[tuple[str, str], int] = {
    **{(section, key): 1 for section in ("convolutional", "maxpool", "local_avgpool")
       for key in ("filters", "size", "stride", "stride_x", "stride_y", "groups", "dilation")},
    **{(section, key): 1 for section in ("yolo", "region", "Gaussian_yolo", "detection")
       for key in ("classes", "num")},
    ("convolutional", "padding"): 0, ("maxpool", "padding"): 0, ("local_avgpool", "padding"): 0,
    ("connected", "output"): 1, ("reorg", "stride"): 1, ("reorg3d", "stride"): 1,
    ("route", "groups"): 1, ("softmax", "groups"): 1, ("crop", "crop_height"): 1, ("crop", "crop_width"): 1,
    ("net", "width"): 1, ("net", "height"): 1, ("net", "channels"): 1,
}


@dataclass
class Section:
    """One ``[name]`` block: its canonical type, where it starts, and its options by key."""

    type: str
    line: int
    source: str
    options: dict[str, tuple[str, int]] = field(default_factory=dict)
    index: int = -1  # layer index: 0 for the first section after [net]

    def where(self, key: str | None = None) -> str:
        line = self.options[key][1] if key in self.options else self.line
        return f"{self.source}:{line}"

    def error(self, message: str, key: str | None = None) -> FoldkitError:
        layer = f"layer {self.index} " if self.index >= 0 else ""
        return FoldkitError(f"{self.where(key)}: [{self.type}] {layer}{message}")

    def has(self, key: str) -> bool:
        return key in self.options

    def get_str(self, key: str, default: str | None = None) -> str:
        if key not in self.options:
            if default is None:
                raise self.error(f"missing required key '{key}'")
            return default
        return self.options[key][0]

    def get_int(self, key: str, default: int | None = None) -> int:
        if key not in self.options:
            if default is None:
                raise self.error(f"missing required key '{key}'")
            return default
        value = int(self._convert(key, int))
        minimum = MINIMUM.get((self.type, key))
        if minimum is not None and value < minimum:
            raise self.error(f"'{key}={value}' must be at least {minimum}", key)
        return value

    def get_float(self, key: str, default: float | None = None) -> float:
        if key not in self.options:
            if default is None:
                raise self.error(f"missing required key '{key}'")
            return default
        return self._convert(key, float)

    def get_ints(self, key: str, default: list[int] | None = None) -> list[int]:
        return self._list(key, int, default)

    def get_floats(self, key: str, default: list[float] | None = None) -> list[float]:
        return self._list(key, float, default)

    def _convert(self, key: str, kind: NumberKind) -> int | float:
        text = self.options[key][0].split("#", 1)[0]  # atoi/atof stop at an inline comment
        try:
            return _number(text, kind)
        except ValueError as exc:
            raise self.error(f"'{key}={text}' {exc}", key) from None

    def _list(self, key: str, kind: NumberKind, default: list | None) -> list:
        if key not in self.options:
            if default is None:
                raise self.error(f"missing required key '{key}'")
            return default
        text = self.options[key][0].split("#", 1)[0]  # Darknet's list parsers stop at '#'
        values = []
        # Darknet counts the commas and reads an empty item as 0, so "1,,2" or a trailing comma is misread.
        for item in text.split(","):
            try:
                values.append(_number(item, kind))
            except ValueError as exc:
                raise self.error(f"'{key}={text}': item {item!r} {exc}", key) from None
        return values


def _number(text: str, kind: NumberKind) -> int | float:
    """``text`` as Darknet's atoi/atof would read it; ValueError(why) where their reading would differ."""
    pattern = _INT if kind is int else _FLOAT
    if not pattern.fullmatch(text):
        darknet = f" (Darknet would read {_atoi_prefix(text)})" if kind is int else ""
        raise ValueError(f"is not a valid {kind.__name__}: plain ASCII digits only{darknet}")
    value = kind(text)
    if kind is int and abs(value) > C_INT_MAX:
        raise ValueError(f"does not fit Darknet's 32-bit integer (|value| ≤ {C_INT_MAX})")
    if kind is float and abs(value) == float("inf"):
        raise ValueError("overflows a float")
    return value


def _atoi_prefix(text: str) -> int:
    """What C's atoi returns for ``text``: the leading ASCII integer, or 0."""
    match = re.match(r"[+-]?[0-9]+", text)
    return int(match.group()) if match else 0


def parse_cfg_text(text: str, source: str = "<cfg>") -> list[Section]:
    """Parse cfg text into sections; ``[net]`` is first and the rest are layers 0, 1, …."""
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.translate(_WHITESPACE)
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]") or len(line) < 3:
                raise FoldkitError(f"{source}:{number}: malformed section header {raw.strip()!r}")
            name = line[1:-1]
            sections.append(Section(SECTION_ALIASES.get(name, name), number, source))
            continue
        if not sections:
            raise FoldkitError(f"{source}:{number}: option {raw.strip()!r} before the first section")
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise FoldkitError(f"{source}:{number}: expected 'key=value', found {raw.strip()!r}")
        if value == "":
            raise FoldkitError(f"{source}:{number}: '{key}=' has no value")
        sections[-1].options.setdefault(key, (value, number))  # the first occurrence wins
    if not sections:
        raise FoldkitError(f"{source}: no sections found; not a Darknet cfg")
    if sections[0].type != "net":
        raise FoldkitError(f"{sections[0].where()}: the first section must be [net], found [{sections[0].type}]")
    if len(sections) == 1:
        raise FoldkitError(f"{sections[0].where()}: the cfg has only [net] and no layers")
    for index, section in enumerate(sections[1:]):
        section.index = index
    return sections


def parse_cfg(path: str | os.PathLike) -> list[Section]:
    """Read and parse a cfg file, with errors that name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise FoldkitError(f"{path}: no such file") from None
    except OSError as exc:
        raise FoldkitError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_cfg_text(text, str(path))
