"""The ``.weights`` layout: which arrays each planned layer stores, in file order (Darknet's parser.c, load_weights).

Reading, writing and the memory budget all count from this one description. Every registered
layer type has an entry (most store nothing), so a new type cannot be skipped by accident.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from foldkit.darknet import specs
from foldkit.darknet.registry import LAYER_TYPES, lookup, require_all

Records = list[tuple[str, int]]


def _norm(n: int, batch_normalize: bool) -> Records:
    return [("gamma", n), ("mean", n), ("var", n)] if batch_normalize else []


def _conv(p: specs.Conv) -> Records:
    if p.share_from is not None:  # share_index: runs another layer's record
        return []
    n = p.filters
    return [("bias", n), *_norm(n, p.batch_normalize), ("weight", n * (p.in_channels // p.groups) * p.size ** 2)]


def _connected(p: specs.Connected) -> Records:  # the BN arrays come after the weights here
    return [("bias", p.outputs), ("weight", p.outputs * p.inputs), *_norm(p.outputs, p.batch_normalize)]


def _local(p: specs.Local) -> Records:  # pjreddie's parser.c: one bias per output value, then the kernels
    return [("bias", p.filters * p.locations), ("weight", p.locations * p.filters * p.patch)]


def _shortcut(p: specs.Shortcut) -> Records:
    return [("weight", p.weight_count)] if p.weight_count else []


def _nothing(p: object) -> Records:
    return []


_RECORDS: dict[type, Callable[[Any], Records]] = {
    specs.Conv: _conv,
    specs.Local: _local,
    specs.Connected: _connected,
    specs.Shortcut: _shortcut,
    **{kind: _nothing for kind in (
        specs.MaxPool, specs.DepthMaxPool, specs.LocalAvgPool, specs.AvgPool, specs.Route, specs.ScaleChannels,
        specs.Sam, specs.Crop, specs.Reorg, specs.Upsample, specs.Softmax, specs.Activation, specs.Passthrough,
        specs.Detection, specs.YoloHead, specs.GaussianYoloHead, specs.RegionHead)},
}
require_all(_RECORDS, LAYER_TYPES, ".weights layout")


def weight_records(params: object) -> Records:
    """One layer's ``.weights`` record as (array, float count) in file order; empty for layers without one."""
    return lookup(_RECORDS, params, ".weights layout")(params)


def stored_floats(plan: specs.NetworkPlan) -> int:
    """How many float32 values the body of this network's ``.weights`` file holds."""
    return sum(count for layer in plan.layers for _, count in weight_records(layer.params))
