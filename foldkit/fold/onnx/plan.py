"""What a pattern hands the pass: a :class:`Plan` to apply, a :class:`Refusal`, or nothing.

The shape every pattern follows is ``match(graph, node) → Plan | Refusal | None``: None when the
pattern is not there at all, a refusal when it is there but cannot fold (the reason goes in the
report), a plan when it folds. ``apply`` then edits the graph. Matching never edits anything, so
the pass may try several patterns on one node.

:func:`plan_output_fold` is the one planner for "scale a linear op's output channels, add a
shift" that the Conv/ConvTranspose/Gemm/MatMul → norm patterns and Conv → Mul/Add share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnx

from foldkit.fold.affine import AffineFold, fold_affine, output_channels
from foldkit.fold.onnx.graph import GraphView, Refusal
from foldkit.fold.onnx.layout import LAYOUTS, weight_axis_and_groups


@dataclass
class Plan:
    """A computed fold: where its weight and bias go, and which node it removes."""

    pattern: str  # as reported, e.g. "Conv → BatchNormalization"
    result: AffineFold
    linear: onnx.NodeProto  # receives the bias (and the weight, unless ``weight_owner`` is set)
    absorbed: onnx.NodeProto  # the node the fold removes
    bias_input: int = 2
    weight_owner: onnx.NodeProto | None = None  # holds the weight when that is another node (MatMul before Add)


class Pattern(Protocol):
    """One fold pattern; the pass tries the registered ones on each node of an ``anchors`` type."""

    anchors: tuple[str, ...]  # op types of the node a match starts from
    norm_first: bool  # the absorbed node comes before the linear op (BatchNormalization → Conv)

    def match(self, graph: GraphView, node: onnx.NodeProto) -> Plan | Refusal | None: ...

    def apply(self, graph: GraphView, plan: Plan) -> list[str]:
        """Edit the graph as planned; returns notes for the report (private copies made)."""
        ...


def write_fold(graph: GraphView, plan: Plan) -> list[str]:
    """Write the plan's weight and bias into their nodes and remove the absorbed node."""
    notes = [graph.set_initializer(plan.weight_owner or plan.linear, 1, plan.result.weight, "weight"),
             graph.set_initializer(plan.linear, plan.bias_input, plan.result.bias, "bias")]
    graph.remove(plan.absorbed)
    return [note for note in notes if note]


def apply_output_fold(graph: GraphView, plan: Plan) -> list[str]:
    """Write the fold; the linear op then writes what the absorbed node wrote."""
    notes = write_fold(graph, plan)
    graph.take_over_output(plan.linear, plan.absorbed)
    return notes


def plan_output_fold(graph: GraphView, linear: onnx.NodeProto, absorbed: onnx.NodeProto, scale: np.ndarray,
                     shift: np.ndarray, pattern: str, *, own_bias: bool = True, bias: np.ndarray | None = None,
                     shift_divisor: float = 1.0) -> Plan | Refusal:
    """Scale ``linear``'s output channels by ``scale`` and add ``shift``, removing ``absorbed``.

    The existing bias is ``linear``'s own bias input when ``own_bias`` (and it has one), else
    ``bias`` (a bias found elsewhere, or None: none). ``shift_divisor`` undoes a factor the op
    applies to its bias (Gemm's beta). The layout comes from :data:`~foldkit.fold.onnx.layout.LAYOUTS`.
    """
    weight = graph.constant(linear.input[1], f"{linear.op_type} weight")
    if isinstance(weight, Refusal):
        return weight
    layout = LAYOUTS[linear.op_type]
    lowest, highest = layout.weight_ranks
    if weight.ndim < lowest or (highest is not None and weight.ndim > highest):
        ranks = f"{lowest}-D" if lowest == highest else f"{lowest}-D or higher"
        return Refusal(f"{linear.op_type} '{linear.name}' weight has shape {list(weight.shape)}; only a {ranks} "
                       "weight folds")
    axis, groups = weight_axis_and_groups(linear)
    channels = output_channels(weight.shape, axis, groups)
    if scale.size != channels:
        return Refusal(f"{linear.op_type} '{linear.name}' has {channels} output channels, the next op {scale.size}")
    if own_bias and len(linear.input) > layout.bias_input and linear.input[layout.bias_input]:
        own = graph.constant(linear.input[layout.bias_input], f"{linear.op_type} bias")
        if isinstance(own, Refusal):
            return own
        bias = own
    result = fold_affine(weight, bias, scale, shift / shift_divisor, axis=axis, groups=groups)
    return Plan(pattern, result, linear, absorbed, bias_input=layout.bias_input)
