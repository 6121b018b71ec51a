"""JSON that every parser accepts: non-finite floats become ``null``, never bare NaN/Infinity.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which strict parsers (browsers,
jq, Go, Rust) reject; reports of a failed proof are exactly the ones with such numbers in them.
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


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``value`` with non-finite floats as null; refuses anything else non-standard."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)
