"""MatMul [→ Add] → BatchNormalization with a constant 2-D matrix.

``X·B`` followed by the norm is ``X·(B·s)`` plus the shift: B's columns are scaled. A bare MatMul
becomes ``Gemm(X, B·s, C=t)``; with an Add of a constant bias between them, the MatMul keeps its
op and the Add's bias becomes ``c·s + t``. The norm's channel axis must be the product's last
axis, so the product must be known to be 2-D and the bias must add per column ([N], [1, N],
[M, N] or a scalar); a bias of higher rank makes the Add's output 3-D, where the norm's channels
are rows, not columns.
"""

from __future__ import annotations

import numpy as np
import onnx

from foldkit.fold.onnx.batchnorm import ChannelMap, batchnorm_map
from foldkit.fold.onnx.graph import GraphView, Refusal
from foldkit.fold.onnx.patterns.linear_bn import LinearThenBatchNorm
from foldkit.fold.onnx.plan import Plan, plan_output_fold


class MatMulBatchNorm(LinearThenBatchNorm):
    op_type = "MatMul"

    def match(self, graph: GraphView, bn: onnx.NodeProto) -> Plan | Refusal | None:
        source = graph.producer.get(bn.input[0])
        if source is not None and source.op_type == "Add":
            return self._match_add(graph, source, bn)
        return super().match(graph, bn)

    def plan(self, graph: GraphView, matmul: onnx.NodeProto, bn: onnx.NodeProto, norm: ChannelMap,
             name: str = "", bias: np.ndarray | None = None) -> Plan | Refusal:
        if graph.ranks.get(matmul.output[0]) != 2:
            return Refusal(f"MatMul '{matmul.name}' output is not known to be 2-D, so BN's channel axis may not be "
                           "its last")
        return plan_output_fold(graph, matmul, bn, norm.scale, norm.shift, name or self.name, bias=bias)

    def _match_add(self, graph: GraphView, add: onnx.NodeProto, bn: onnx.NodeProto) -> Plan | Refusal:
        matmuls = [(node, bias_input) for data_input, bias_input in ((0, 1), (1, 0))
                   if (node := graph.producer.get(add.input[data_input])) is not None and node.op_type == "MatMul"]
        if not matmuls:
            return Refusal(f"its input comes from Add '{add.name}', which does not add a bias to a MatMul")
        matmul, bias_input = matmuls[-1]
        for value, reader in ((matmul.output[0], add), (add.output[0], bn)):
            if reason := graph.sole_reader(value, reader):
                return Refusal(reason)
        norm = batchnorm_map(graph, bn)
        if isinstance(norm, Refusal):
            return norm
        bias = graph.constant(add.input[bias_input], "Add bias")
        if isinstance(bias, Refusal):
            return bias
        columns = norm.scale.size
        if bias.ndim > 2 or (bias.size not in (1, columns) and bias.shape[-1:] != (columns,)):
            return Refusal(f"Add '{add.name}' bias of shape {list(bias.shape)} does not broadcast per column")
        plan = self.plan(graph, matmul, bn, norm, "MatMul → Add → BatchNormalization", bias)
        if isinstance(plan, Plan):
            plan.linear, plan.weight_owner, plan.bias_input = add, matmul, bias_input
        return plan

    def apply(self, graph: GraphView, plan: Plan) -> list[str]:
        if plan.weight_owner is None:
            plan.linear.op_type = "Gemm"  # Gemm(X, B·s, C=t): the bias needs Gemm's C
        return super().apply(graph, plan)
