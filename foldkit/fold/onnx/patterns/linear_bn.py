"""What every "linear op → BatchNormalization" pattern shares: find the op, check it, fold, take over.

The op's output channels are scaled by the norm's map and it writes the norm's output; the norm
is removed. Only the op type differs between Conv, ConvTranspose, Gemm and MatMul (and the
layout table says how), so each pattern file names its op and adds what only it needs.
"""

from __future__ import annotations

import onnx

from foldkit.fold.onnx.batchnorm import ChannelMap, batchnorm_map
from foldkit.fold.onnx.graph import GraphView, Refusal
from foldkit.fold.onnx.plan import Plan, apply_output_fold, plan_output_fold


class LinearThenBatchNorm:
    """``op_type`` → BatchNormalization, the norm folded into the op's output channels."""

    anchors: tuple[str, ...] = ("BatchNormalization",)
    norm_first: bool = False
    op_type = ""  # set by each pattern

    @property
    def name(self) -> str:
        return f"{self.op_type} → BatchNormalization"

    def match(self, graph: GraphView, bn: onnx.NodeProto) -> Plan | Refusal | None:
        source = graph.producer.get(bn.input[0])
        if source is None or source.op_type != self.op_type:
            return None
        if reason := graph.sole_reader(source.output[0], bn):
            return Refusal(f"{source.op_type} '{source.name}' output {reason}")
        norm = batchnorm_map(graph, bn)
        return norm if isinstance(norm, Refusal) else self.plan(graph, source, bn, norm)

    def plan(self, graph: GraphView, linear: onnx.NodeProto, bn: onnx.NodeProto, norm: ChannelMap) -> Plan | Refusal:
        return plan_output_fold(graph, linear, bn, norm.scale, norm.shift, self.name)

    def apply(self, graph: GraphView, plan: Plan) -> list[str]:
        return apply_output_fold(graph, plan)
