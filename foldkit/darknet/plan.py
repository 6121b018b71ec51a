"""Planning a Darknet network: a built-in name or cfg path → its checked, framework-free plan.

The one entry every route uses (the PyTorch builder, the direct converter, ``inspect``): parse
the cfg, plan its layers (:mod:`foldkit.darknet.planner`), then refuse a network too large to
allocate before anything is allocated (:mod:`foldkit.darknet.budget`).
"""

from __future__ import annotations

import os

from foldkit.darknet.budget import check_memory
from foldkit.darknet.builtin import resolve_cfg
from foldkit.darknet.cfg import parse_cfg
from foldkit.darknet.planner import plan_sections
from foldkit.darknet.specs import NetworkPlan


def plan_network(model: str | os.PathLike, img_size: int | tuple[int, int] | None = None) -> NetworkPlan:
    """Plan a built-in network or a cfg file; ``img_size`` (int or (height, width)) overrides ``[net]``'s."""
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    sections = parse_cfg(resolve_cfg(model))
    plan = plan_sections(sections, img_size)
    check_memory(plan, sections)
    return plan
