"""Gemm → BatchNormalization: alpha, beta, transA/transB and any broadcastable C.

``Y = α·A·B + β·C`` followed by ``Y·s + t`` is ``α·A·(B·s) + β·(C·s + t/β)``: B's output columns
(rows when transB=1) are scaled, and the shift is divided by β before it joins C. When C is absent
or β = 0 (C ignored), the folded bias becomes C and β is set to 1.
"""

from __future__ import annotations

import onnx

from foldkit.fold.onnx.batchnorm import ChannelMap
from foldkit.fold.onnx.graph import GraphView, Refusal, attributes, set_float_attribute
from foldkit.fold.onnx.patterns.linear_bn import LinearThenBatchNorm
from foldkit.fold.onnx.plan import Plan, plan_output_fold


def _beta_applies(gemm: onnx.NodeProto) -> float | None:
    """β when Gemm adds a C that counts (present, β ≠ 0); None when the folded bias replaces C."""
    beta = attributes(gemm).get("beta", 1.0)
    return beta if len(gemm.input) > 2 and gemm.input[2] and beta != 0 else None


class GemmBatchNorm(LinearThenBatchNorm):
    op_type = "Gemm"

    def plan(self, graph: GraphView, gemm: onnx.NodeProto, bn: onnx.NodeProto, norm: ChannelMap) -> Plan | Refusal:
        beta = _beta_applies(gemm)
        return plan_output_fold(graph, gemm, bn, norm.scale, norm.shift, self.name, own_bias=beta is not None,
                                shift_divisor=beta or 1.0)

    def apply(self, graph: GraphView, plan: Plan) -> list[str]:
        replaces_c = _beta_applies(plan.linear) is None
        notes = super().apply(graph, plan)
        if replaces_c:
            set_float_attribute(plan.linear, "beta", 1.0)
        return notes
