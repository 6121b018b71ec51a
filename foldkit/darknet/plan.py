"""Planning a Darknet network: a built-in name or cfg path → its checked, framework-free plan.

The one entry every route uses (the PyTorch builder, the direct converter, ``inspect``): parse
the cfg, plan its layers (:mod:`foldkit.darknet.planner`), then refuse a network too large to
allocate before anything is allocated (:mod:`foldkit.darknet.budget`). A size the network's
arithmetic refuses is refused with the network stride when it is not a multiple of it
(:mod:`foldkit.darknet.sizes`).
"""

from __future__ import annotations

import os

from foldkit.darknet.budget import check_memory
from foldkit.darknet.builtin import resolve_cfg
from foldkit.darknet.cfg import parse_cfg
from foldkit.darknet.planner import plan_sections
from foldkit.darknet.sizes import as_pair, stride_hint
from foldkit.darknet.specs import NetworkPlan
from foldkit.errors import FoldkitError


def plan_network(model: str | os.PathLike, img_size: int | tuple[int, int] | None = None) -> NetworkPlan:
    """Plan a built-in network or a cfg file; ``img_size`` (int or (height, width)) overrides ``[net]``'s."""
    size = None if img_size is None else as_pair(img_size)
    sections = parse_cfg(resolve_cfg(model))
    try:
        plan = plan_sections(sections, size)
    except FoldkitError as refused:
        hint = "" if size is None else stride_hint(sections, size)
        if not hint:
            raise
        raise FoldkitError(f"{refused}{hint}") from None
    check_memory(plan, sections)
    return plan
