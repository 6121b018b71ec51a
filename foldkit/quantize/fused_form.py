"""The int8 model in the form OpenVINO fuses: no Q/DQ pair between a conv and the activation after it.

ONNX Runtime's quantizer puts a QuantizeLinear → DequantizeLinear pair on a conv's output also where
a LeakyReLU alone reads it, because ORT's CPU kernels have no int8 conv+LeakyReLU: it runs
QLinearConv (its output rounded to u8 over the pre-activation range) and then QLinearLeakyRelu, a
lookup op. That pre-activation rounding is the largest int8 error left in the trained yolov3-tiny
(docs/int8.md), and the lookup op is about a tenth of yolov3's int8 time. OpenVINO's low-precision
transformations fuse DequantizeLinear → Conv → activation → QuantizeLinear into one int8
convolution: without the pair, the conv stays int8, the output is rounded once, after the
activation, and nothing runs in between. ORT, given this form, runs those convs in float: it is the
file for OpenVINO, not for ORT.
"""

from __future__ import annotations

import copy
from collections import defaultdict

import onnx

FUSED_ACTIVATIONS = ("LeakyRelu", "Relu")  # what OpenVINO's CPU plugin fuses into an int8 convolution


def fuse_conv_activations(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of the QDQ ``model`` with the Q/DQ pair between each conv and its activation removed, and
    the convs it was removed after.

    Only where the conv's output goes nowhere but that pair, and the pair's output nowhere but the
    activation (as its input), so removing it changes nothing else; graph outputs are left alone.
    The initializers only the removed nodes read are removed with them.
    """
    model = copy.deepcopy(model)
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
    outputs = {o.name for o in graph.output}
    removed: list[onnx.NodeProto] = []
    fused: list[str] = []
    for activation in [n for n in graph.node if n.op_type in FUSED_ACTIVATIONS]:
        pair = _pair_before(activation, producers)
        if pair is None:
            continue
        conv, quantize, dequantize = pair
        private = (readers[conv.output[0]] == [quantize] and readers[quantize.output[0]] == [dequantize]
                   and readers[dequantize.output[0]] == [activation])
        if not private or {conv.output[0], quantize.output[0], dequantize.output[0]} & outputs:
            continue
        activation.input[0] = conv.output[0]
        removed += [quantize, dequantize]
        fused.append(conv.name)
    for node in removed:
        graph.node.remove(node)
    _drop_unread(graph, {name for node in removed for name in node.input})
    return model, fused


def _pair_before(activation: onnx.NodeProto, producers: dict[str, onnx.NodeProto]
                 ) -> tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto] | None:
    """(conv, QuantizeLinear, DequantizeLinear) when the activation reads conv → Q → DQ, else None."""
    dequantize = producers.get(activation.input[0])
    if dequantize is None or dequantize.op_type != "DequantizeLinear":
        return None
    quantize = producers.get(dequantize.input[0])
    if quantize is None or quantize.op_type != "QuantizeLinear":
        return None
    conv = producers.get(quantize.input[0])
    return (conv, quantize, dequantize) if conv is not None and conv.op_type == "Conv" else None


def _drop_unread(graph: onnx.GraphProto, names: set[str]) -> None:
    """The initializers among ``names`` (a removed node's scale and zero point) that nothing reads now."""
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name in names and i.name not in read]:
        graph.initializer.remove(init)
