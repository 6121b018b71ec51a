"""Which input sizes a planned network takes: its stride, and whether its graph may leave H and W free.

Darknet itself resizes a network to any width and height (``resize_network`` recomputes every
layer's output with the same integer formulas the planner uses); what a size must satisfy is only
that arithmetic: a route may not concatenate maps of different sizes, a strided shortcut needs an
integer ratio, a head's channels are fixed. So a *fixed* size is exactly as permissive as the
planner (planning at that size is the check), and a refusal there says whether the size is a
multiple of the network stride, which is what every YOLO cfg needs.

The *stride* is how much smaller the deepest spatial map is than the input, per axis: the product
of the strides (conv, maxpool, reorg; upsample divides) along the network, computed from the plan.
Global layers (``[avgpool]``, ``[connected]``, ``[softmax]``) end spatial maps; what comes after
them has no stride.

A *dynamic* graph (height and width as symbolic dimensions) is possible when no layer's ONNX
depends on the size of the map it reads: :func:`require_dynamic` refuses, naming the cfg line, a
layer that flattens or reshapes a spatial map to fixed lengths or holds weights or offsets per
position, and checks that the network also plans one stride larger than its own size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from foldkit.darknet import specs as spec
from foldkit.darknet.builtin import resolve_cfg
from foldkit.darknet.cfg import Section, parse_cfg
from foldkit.darknet.planner import plan_sections
from foldkit.darknet.registry import LAYER_TYPES, lookup, require_all
from foldkit.defaults import DYNAMIC_SIZE
from foldkit.errors import FoldkitError

Scale = tuple[Fraction, Fraction] | None  # how much smaller than the input a layer's map is; None: not spatial
ImageSize = int | tuple[int, int]


def _same(p: Any) -> tuple[int, int] | None:
    return (1, 1)


def _global(p: Any) -> tuple[int, int] | None:
    return None


def _strided(p: Any) -> tuple[int, int] | None:
    return p.stride


# Each layer's factor on the map's scale: (y, x), or None where the output is no longer a spatial map.
_FACTORS: dict[type, Callable[[Any], tuple[int, int] | None]] = {
    spec.Conv: _strided,
    spec.Local: lambda p: (p.stride, p.stride),
    spec.Connected: _global,
    spec.MaxPool: _strided,
    spec.DepthMaxPool: _same,
    spec.LocalAvgPool: _strided,
    spec.AvgPool: _global,
    spec.Route: _same,
    spec.Shortcut: _same,
    spec.ScaleChannels: _same,
    spec.Sam: _same,
    spec.Crop: _same,
    spec.Reorg: lambda p: (p.stride, p.stride),  # reverse: divided, see _scale
    spec.Upsample: lambda p: (p.stride, p.stride),  # divided, see _scale
    spec.Softmax: _global,
    spec.Activation: _same,
    spec.Detection: _global,
    spec.Passthrough: _same,
    spec.YoloHead: _same,
    spec.GaussianYoloHead: _same,
    spec.RegionHead: _same,
}
require_all(_FACTORS, LAYER_TYPES, "stride arithmetic")


def _scale(layer: spec.Layer, sources: list[Scale]) -> Scale:
    """A layer's map scale: its inputs' largest (a strided shortcut's own input), times its factor."""
    spatial = [s for s in sources if s is not None]
    factor = lookup(_FACTORS, layer.params, "stride arithmetic")(layer.params)
    if factor is None or not spatial:
        return None
    y, x = max(spatial)
    shrinks = not (isinstance(layer.params, spec.Upsample)
                   or (isinstance(layer.params, spec.Reorg) and layer.params.reverse))
    return (y * factor[0], x * factor[1]) if shrinks else (y / factor[0], x / factor[1])


def layer_scales(plan: spec.NetworkPlan) -> list[Scale]:
    """Every layer's map scale relative to the input, None for layers after a global one."""
    scales: list[Scale] = []
    for layer in plan.layers:
        inputs = [(Fraction(1), Fraction(1)) if s < 0 else scales[s] for s in layer.sources]
        scales.append(_scale(layer, inputs))
    return scales


def network_stride(plan: spec.NetworkPlan) -> tuple[int, int]:
    """(y, x): how many input pixels one pixel of the deepest spatial map spans (1 for a network without one)."""
    spatial = [s for s in layer_scales(plan) if s is not None]
    if not spatial:
        return (1, 1)
    return (math.ceil(max(s[0] for s in spatial)), math.ceil(max(s[1] for s in spatial)))


# Why a layer's ONNX depends on the size of the spatial map it reads (checked only where it reads one).
_SIZE_BOUND: dict[type, Callable[[Any], str | None]] = {
    spec.Connected: lambda p: f"flattens its input to a fixed length ({p.inputs} values) for its weights",
    spec.Local: lambda p: f"has its own weights at each of its {p.out_h}×{p.out_w} output positions",
    spec.Crop: lambda p: f"crops a fixed {p.height}×{p.width} window at offsets computed from the input size",
    spec.Detection: lambda p: f"is YOLOv1's fixed grid of {p.cells} cells",
    spec.Softmax: lambda p: "takes its softmax over the flattened C·H·W values, whose count follows the size",
    spec.DepthMaxPool: lambda p: "reshapes its input to its fixed height and width",
}


def size_bound_reason(layer: spec.Layer, reads_map: bool) -> str | None:
    """Why this layer cannot take another input size, or None when it can."""
    rule = _SIZE_BOUND.get(type(layer.params))
    return rule(layer.params) if rule is not None and reads_map else None


def as_pair(size: ImageSize) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else size


def stride_hint(sections: list[Section], size: tuple[int, int]) -> str:
    """What to add to a refusal at ``size``: that it is not a multiple of the network stride, when it is not."""
    try:
        stride = network_stride(plan_sections(sections))
    except FoldkitError:
        return ""
    if size[0] % stride[0] or size[1] % stride[1]:
        return f" (input {size[0]}x{size[1]} is not a multiple of the network stride {stride_text(stride)})"
    return ""


def require_dynamic(model: str | os.PathLike, plan: spec.NetworkPlan) -> tuple[int, int]:
    """The network stride, if the network's graph can leave height and width free; else a one-line refusal.

    Names the first size-bound layer with its cfg line, then checks that the network also plans
    one stride larger than ``plan``'s size (Darknet's arithmetic must hold at more than one size).
    """
    sections = parse_cfg(resolve_cfg(model))
    scales = layer_scales(plan)
    for index, layer in enumerate(plan.layers):
        reads_map = any(s < 0 or scales[s] is not None for s in layer.sources)
        reason = size_bound_reason(layer, reads_map)
        if reason is not None:
            raise sections[index + 1].error(f"{reason}: the network cannot take another input size; export it "
                                            "with a fixed --img-size")
    stride = network_stride(plan)
    other = (plan.info.height + stride[0], plan.info.width + stride[1])
    try:
        plan_sections(sections, other)
    except FoldkitError as refused:
        raise FoldkitError(f"{refused} (planned at {other[0]}x{other[1]} to check a dynamic input size)") from None
    return stride


def stride_text(stride: tuple[int, int]) -> str:
    """The stride as metadata and messages write it: ``32``, or ``HxW`` where the axes differ."""
    return str(stride[0]) if stride[0] == stride[1] else f"{stride[0]}x{stride[1]}"


def is_dynamic(size: object) -> bool:
    """Whether an ``img_size`` asks for a dynamic height and width (``"dynamic"``)."""
    return size == DYNAMIC_SIZE
