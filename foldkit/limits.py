"""Refusing work that cannot fit in memory before allocating it, with the estimate in the message.

A cfg with ``filters=1000000000`` or a ``--batch`` of a million would otherwise end in a
MemoryError deep inside numpy or torch, or in the kernel's OOM killer; foldkit says up front
how much it would need.
"""

from __future__ import annotations

import os

from foldkit.errors import FoldkitError

MEMORY_FRACTION = 0.5  # the share of physical memory one allocation estimate may claim


def physical_memory_bytes() -> int:
    """Installed memory, or a generous 1 TiB where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def ensure_fits(nbytes: float, what: str) -> None:
    """Raise FoldkitError when ``nbytes`` exceeds :data:`MEMORY_FRACTION` of physical memory."""
    limit = MEMORY_FRACTION * physical_memory_bytes()
    if nbytes > limit:
        raise FoldkitError(f"{what} would need about {nbytes / 2**30:,.1f} GiB, more than the "
                           f"{limit / 2**30:,.1f} GiB foldkit allows itself ({MEMORY_FRACTION:.0%} of this "
                           "machine's memory)")
