"""JSON that every parser accepts, and JSON from a model read without crashing.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which strict parsers (browsers,
jq, Go, Rust) reject; reports of a failed proof are exactly the ones with such numbers in them:
non-finite floats become ``null``. A file name that is not valid UTF-8 reaches Python as text
with lone surrogates, which ``json`` writes as ``\\udcff`` escapes that those parsers reject too:
such characters are written as ``\\xff``. Reading, a document nested deeper than Python's stack
is a ValueError like any other malformed JSON, not a RecursionError.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (in dicts, lists and tuples too) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def valid_unicode(value: Any) -> Any:
    """``value`` with every string (dict keys too) free of lone surrogates: an undecodable byte shows as ``\\xNN``."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") if any(
            "\ud800" <= c <= "\udfff" for c in value) else value
    if isinstance(value, dict):
        return {valid_unicode(key): valid_unicode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [valid_unicode(item) for item in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``value`` with non-finite floats as null and strings valid Unicode."""
    return json.dumps(valid_unicode(finite_or_none(value)), allow_nan=False, **kwargs)


def loads(text: str | bytes) -> Any:
    """``json.loads``, with a document nested too deeply refused as a ValueError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
