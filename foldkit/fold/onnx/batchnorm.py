"""Reading a BatchNormalization node as a fixed per-channel map, once, for every pattern around it.

Everything that makes a BatchNormalization unfoldable whatever sits next to it is decided here:
training mode, per-element statistics, used optional outputs, parameters that are not constants,
and numbers that are not a normalization (NaN/Inf, variance + ε ≤ 0; the check itself is
:func:`foldkit.fold.affine.batchnorm_scale_shift`'s, shared with the PyTorch pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from foldkit.fold.affine import UnsafeFoldError, batchnorm_scale_shift
from foldkit.fold.onnx.graph import GraphView, Refusal, attributes

SPEC_EPSILON = 1e-5  # the ONNX spec's default for BatchNormalization's epsilon attribute


@dataclass(frozen=True)
class ChannelMap:
    """``y = x·scale + shift`` per channel, in float64."""

    scale: np.ndarray
    shift: np.ndarray


def batchnorm_map(graph: GraphView, bn: onnx.NodeProto) -> ChannelMap | Refusal:
    """BN's per-channel map, or why it is not a fixed, finite one (computed once per node)."""
    key = ("batchnorm", id(bn))
    if key not in graph.memo:
        graph.memo[key] = _read(graph, bn)
    return graph.memo[key]


def _read(graph: GraphView, bn: onnx.NodeProto) -> ChannelMap | Refusal:
    attrs = attributes(bn)
    if attrs.get("training_mode", 0):
        return Refusal("BatchNormalization has training_mode=1: it normalizes with batch statistics")
    if attrs.get("is_test", 1) == 0:
        return Refusal("BatchNormalization has is_test=0 (training mode): it normalizes with batch statistics")
    if attrs.get("spatial", 1) == 0:
        return Refusal("BatchNormalization with spatial=0 (per-element statistics) is not a per-channel map")
    used_outputs = [o for o in bn.output[1:] if o and (graph.consumers.get(o) or o in graph.graph_outputs)]
    if used_outputs:
        return Refusal(f"its optional outputs ({', '.join(used_outputs)}) are used, so the node must stay")
    if len(bn.input) < 5:
        return Refusal(f"BatchNormalization has {len(bn.input)} inputs, not 5")
    params = []
    for role, name in zip(("scale", "B", "mean", "var"), bn.input[1:5], strict=True):
        value = graph.constant(name, f"BatchNormalization {role}")
        if isinstance(value, Refusal):
            return value
        params.append(value)
    if len({p.size for p in params}) != 1 or any(p.ndim != 1 for p in params):
        return Refusal(f"BatchNormalization parameters have shapes {[list(p.shape) for p in params]}, not one [C] each")
    try:
        gamma, beta, mean, var = params
        return ChannelMap(*batchnorm_scale_shift(gamma, beta, mean, var, eps=attrs.get("epsilon", SPEC_EPSILON)))
    except UnsafeFoldError as refusal:
        return Refusal(str(refusal))
