"""BatchNormalization → Conv (pre-activation order): exact only when the conv does not pad.

``conv(x·s + t) = conv_{W·s}(x) + Σ W·t``: the weight is scaled along its input channels and each
output's bias gains its filter's sum times the shift. Padded zeros are not shifted by the norm,
so a padding conv would differ at the borders: refused. The norm must feed that one conv and
nothing else, since the conv then reads what the norm read and the norm's output is gone.
"""

from __future__ import annotations

import onnx

from foldkit.fold.affine import fold_affine_input
from foldkit.fold.onnx.batchnorm import batchnorm_map
from foldkit.fold.onnx.graph import GraphView, Refusal, attributes
from foldkit.fold.onnx.plan import Plan, write_fold


class BatchNormConv:
    anchors: tuple[str, ...] = ("BatchNormalization",)
    norm_first: bool = True
    name = "BatchNormalization → Conv"

    def match(self, graph: GraphView, bn: onnx.NodeProto) -> Plan | Refusal | None:
        readers = graph.consumers.get(bn.output[0], [])
        if len(readers) != 1 or readers[0].op_type != "Conv" or readers[0].input[0] != bn.output[0]:
            return None  # the norm feeds something else (too): not this pattern
        conv = readers[0]
        if reason := graph.sole_reader(bn.output[0], conv):
            return Refusal(reason)
        attrs = attributes(conv)
        pads = list(attrs.get("pads", []))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if any(pads) or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            padding = f"pads={pads}" if any(pads) else f"auto_pad={auto_pad}"
            return Refusal(f"the Conv '{conv.name}' after it pads ({padding}); padded zeros are not shifted by the "
                           "BN, so folding forward is not exact at the borders")
        weight = graph.constant(conv.input[1], "Conv weight")
        if isinstance(weight, Refusal):
            return weight
        norm = batchnorm_map(graph, bn)
        if isinstance(norm, Refusal):
            return norm
        groups = attrs.get("group", 1)
        if weight.ndim < 3:
            return Refusal(f"Conv '{conv.name}' weight has shape {list(weight.shape)}")
        if weight.shape[1] * groups != norm.scale.size:
            channels = weight.shape[1] * groups
            return Refusal(f"Conv '{conv.name}' reads {channels} channels, the BN has {norm.scale.size}")
        bias = graph.constant(conv.input[2], "Conv bias") if len(conv.input) > 2 and conv.input[2] else None
        if isinstance(bias, Refusal):
            return bias
        result = fold_affine_input(weight, bias, norm.scale, norm.shift, groups=groups)
        return Plan(self.name, result, conv, bn)

    def apply(self, graph: GraphView, plan: Plan) -> list[str]:
        notes = write_fold(graph, plan)
        conv, bn = plan.linear, plan.absorbed
        conv.input[0] = bn.input[0]  # the conv keeps its output and now reads what the norm read
        graph.consumers[bn.input[0]].append(conv)
        return notes
