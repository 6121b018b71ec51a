"""Refuse a planned network too large to allocate, before anything is allocated.

A typo in a cfg (``filters=1000000000``, an upsample ``stride=100000``) plans fine, since shapes
are only integers, but building it would exhaust memory or take minutes to fail. The estimate
counts float32 parameters (as the ``.weights`` file holds them) and every layer's output for one
image, which the PyTorch model keeps during a forward pass.
"""

from __future__ import annotations

import math

from foldkit.darknet.cfg import Section
from foldkit.darknet.layout import stored_floats
from foldkit.darknet.specs import NetworkPlan
from foldkit.limits import gib, limit_text, memory_limit

FLOAT_BYTES = 4


def estimate_bytes(plan: NetworkPlan) -> tuple[int, int]:
    """(parameter count, activation values per image) of a planned network."""
    return stored_floats(plan), sum(math.prod(layer.shape) for layer in plan.layers)


def check_memory(plan: NetworkPlan, sections: list[Section], limit: int | None = None) -> None:
    """Raise a FoldkitError with the estimate when over ``limit``, naming the layer that crosses it (file, line).

    ``limit`` defaults to the one memory rule's (:func:`foldkit.limits.memory_limit`).
    """
    limit = memory_limit() if limit is None else limit
    parameters, activations = estimate_bytes(plan)
    total = (parameters + activations) * FLOAT_BYTES
    if total <= limit:
        return
    index = _first_layer_over(plan, limit)
    shape = "×".join(map(str, plan.layers[index].shape))
    raise sections[index + 1].error(
        f"(output {shape}) takes the network over {limit_text(limit)}: the whole network needs "
        f"about {gib(total)}, {parameters:,} parameters and {activations:,} activation values per image in float32"
    )


def _first_layer_over(plan: NetworkPlan, limit: int) -> int:
    """The layer at which the running estimate first exceeds ``limit`` (it grows with each layer: bisect)."""
    low, high = 0, len(plan.layers) - 1
    while low < high:
        middle = (low + high) // 2
        parameters, activations = estimate_bytes(NetworkPlan(plan.info, plan.layers[:middle + 1]))
        if (parameters + activations) * FLOAT_BYTES > limit:
            high = middle
        else:
            low = middle + 1
    return low

