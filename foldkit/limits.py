"""The one memory rule: refuse work that cannot fit before allocating it, with the estimate in the message.

A cfg with ``filters=1000000000`` or a ``--batch`` of a million would otherwise end in a
MemoryError deep inside numpy or torch, or in the kernel's OOM killer; foldkit says up front
how much it would need. Every estimate (a Darknet network's parameters and activations, an input
batch, a traced export) is held against the same limit: :data:`~foldkit.defaults.MEMORY_FRACTION`
of this machine's physical memory.
"""

from __future__ import annotations

import os

from foldkit.defaults import MEMORY_FRACTION, UNKNOWN_MEMORY_BYTES
from foldkit.errors import FoldkitError


def physical_memory_bytes() -> int:
    """Installed memory, or a generous :data:`~foldkit.defaults.UNKNOWN_MEMORY_BYTES` where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return UNKNOWN_MEMORY_BYTES


def memory_limit() -> int:
    """The most bytes one piece of work may be estimated to need on this machine."""
    return int(MEMORY_FRACTION * physical_memory_bytes())


def gib(count: float) -> str:
    """``count`` bytes as GiB for a message."""
    return f"{count / 2**30:,.1f} GiB"


def limit_text(limit: int) -> str:
    """How a refusal names the limit: its size and where it comes from."""
    return f"foldkit's limit of {gib(limit)} ({MEMORY_FRACTION:.0%} of this machine's memory)"


def ensure_fits(nbytes: float, what: str, limit: int | None = None) -> None:
    """Raise FoldkitError when ``nbytes`` exceeds ``limit`` (default :func:`memory_limit`)."""
    limit = memory_limit() if limit is None else limit
    if nbytes > limit:
        raise FoldkitError(f"{what} would need about {gib(nbytes)}, more than {limit_text(limit)}")
