"""Darknet ``.cfg`` text → a list of sections, each option remembering its line.

The grammar is Darknet's own (parser.c / option_list.c): every space, tab and CR is removed
*anywhere* in a line; a line starting with ``#`` or ``;`` (after that) is a comment; ``[name]``
opens a section; ``key=value`` splits at the first ``=``; the first occurrence of a key wins.
Section aliases (``[conv]``, ``[max]``, …) are resolved to their canonical names. Values are
converted when a layer asks for them, so that a bad value is reported with its file and line.
"""

from __future__ import annotations

import os
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
        return self._convert(key, int)

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

    def _convert(self, key: str, kind: type):
        value = self.options[key][0].split("#", 1)[0]  # atoi/atof stop at an inline comment
        try:
            return kind(value)
        except ValueError:
            raise self.error(f"'{key}={value}' is not a valid {kind.__name__}", key) from None

    def _list(self, key: str, kind: type, default: list | None) -> list:
        if key not in self.options:
            if default is None:
                raise self.error(f"missing required key '{key}'")
            return default
        text = self.options[key][0].split("#", 1)[0]  # Darknet's list parsers stop at '#'
        try:
            return [kind(item) for item in text.split(",") if item != ""]
        except ValueError:
            raise self.error(f"'{key}={text}' is not a list of {kind.__name__}s", key) from None


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
