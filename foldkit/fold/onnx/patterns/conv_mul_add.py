"""Conv/ConvTranspose → Mul or Add by a per-output-channel constant (what tf2onnx writes for BN).

A constant that broadcasts along the channel axis only (``[C]`` as ``[1, C, 1, 1]``, or a scalar)
is a per-channel map: Mul is ``(s, 0)``, Add is ``(1, t)``. Any other Mul/Add is an ordinary op
and is not reported.
"""

from __future__ import annotations

import numpy as np
import onnx

from foldkit.fold.affine import output_channels
from foldkit.fold.onnx.graph import GraphView, Refusal
from foldkit.fold.onnx.layout import CONVS, weight_axis_and_groups
from foldkit.fold.onnx.plan import Plan, apply_output_fold, plan_output_fold


def per_channel_values(const: np.ndarray, rank: int | None) -> np.ndarray | None:
    """The constant as per-channel values if it broadcasts along axis 1 of an NC… tensor only."""
    if rank is None or rank < 3 or const.ndim > rank:
        return None
    shape = (1,) * (rank - const.ndim) + const.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1):
        return None
    return const.astype(np.float64).reshape(-1)


class ConvMulAdd:
    anchors: tuple[str, ...] = ("Mul", "Add")
    norm_first: bool = False

    def match(self, graph: GraphView, node: onnx.NodeProto) -> Plan | Refusal | None:
        for data_index in (0, 1):
            source = graph.producer.get(node.input[data_index])
            if source is not None and source.op_type in CONVS:
                break
        else:
            return None
        const = graph.constant_or_none(node.input[1 - data_index])
        if const is None:
            return None  # not an affine map with fixed parameters: nothing a user would expect folded
        channels = per_channel_values(const, graph.ranks.get(source.output[0]))
        if channels is None:
            return None  # not a per-channel constant: an ordinary Mul/Add
        if reason := graph.sole_reader(source.output[0], node):
            return Refusal(f"{source.op_type} '{source.name}' output {reason}")
        size = _output_channels(graph, source) or channels.size
        values = np.broadcast_to(channels, (size,)) if channels.size == 1 else channels
        ones, zeros = np.ones(values.size), np.zeros(values.size)
        scale, shift = (values, zeros) if node.op_type == "Mul" else (ones, values)
        return plan_output_fold(graph, source, node, scale, shift, f"{source.op_type} → {node.op_type}")

    def apply(self, graph: GraphView, plan: Plan) -> list[str]:
        return apply_output_fold(graph, plan)


def _output_channels(graph: GraphView, conv: onnx.NodeProto) -> int | None:
    """The conv's output channels from its weight's dims (no values read), if it is an initializer."""
    weight = graph.initializers.get(conv.input[1])
    if weight is None or len(weight.dims) < 3:
        return None
    axis, groups = weight_axis_and_groups(conv)
    return output_channels(tuple(weight.dims), axis, groups)
