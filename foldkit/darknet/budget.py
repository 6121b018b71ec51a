"""Refuse a planned network too large to allocate, before anything is allocated.

A typo in a cfg (``filters=1000000000``, an upsample ``stride=100000``) plans fine, since shapes
are only integers, but building it would exhaust memory or take minutes to fail. The estimate
counts float32 parameters (as the ``.weights`` file holds them) and every layer's output for one
image, which the PyTorch model keeps during a forward pass.
"""

from __future__ import annotations

import math

from foldkit.darknet.cfg import Section
from foldkit.darknet.layers import NetworkPlan
from foldkit.darknet.weights import expected_floats
from foldkit.defaults import MAX_NETWORK_BYTES

FLOAT_BYTES = 4


def estimate_bytes(plan: NetworkPlan) -> tuple[int, int]:
    """(parameter count, activation values per image) of a planned network."""
    return expected_floats(plan), sum(math.prod(layer.shape) for layer in plan.layers)


def check_memory(plan: NetworkPlan, sections: list[Section], limit: int = MAX_NETWORK_BYTES) -> None:
    """Raise a FoldkitError with the estimate, naming the file and line of the largest layer, when over ``limit``."""
    parameters, activations = estimate_bytes(plan)
    total = (parameters + activations) * FLOAT_BYTES
    if total <= limit:
        return
    index = max(range(len(plan.layers)), key=lambda i: math.prod(plan.layers[i].shape))
    shape = "×".join(map(str, plan.layers[index].shape))
    raise sections[index + 1].error(
        f"(output {shape}, the largest) makes the network need about {_gib(total)}: {parameters:,} parameters "
        f"and {activations:,} activation values per image in float32, over foldkit's limit of {_gib(limit)}"
    )


def _gib(count: int) -> str:
    return f"{count / 2**30:,.1f} GiB"
