"""Darknet cfg + weights → ONNX directly, without PyTorch: the fast converter.

The graph is written node by node from the network plan (:mod:`.layers`) and the weight
records (:mod:`.weights`), BatchNorm folded by the shared fold arithmetic (float64, one cast).
It computes what the PyTorch model of the same plan computes (the tests hold the two to the
same outputs) but skips importing torch, initializing and tracing a module and serializing its
parameters twice — so converting yolov3 costs little more than reading the weights and writing
the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from foldkit.darknet import layers as spec
from foldkit.darknet.layers import NetworkPlan, plan_network
from foldkit.defaults import DEFAULT_OPSET, INPUT_NAME, LEAKY_SLOPE
from foldkit.darknet.weights import ConvRecord, read_weights
from foldkit.errors import FoldkitError
from foldkit.fold.affine import UnsafeFoldError, fold_batchnorm
from foldkit.fold.report import FOLDED, SKIPPED, FoldEntry, FoldReport
from foldkit.onnxio.metadata import add_metadata, fold_metadata
from foldkit.onnxio.stream import save_with_arrays
from foldkit.onnxio.validate import validate_model

MIN_OPSET = 13  # Resize with an empty roi, Slice with tensor inputs


class _GraphWriter:
    """Collects nodes, and the initializers as (name, array) pairs, with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.arrays: list[tuple[str, np.ndarray]] = []
        self._count = 0

    def name(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    def const(self, array: np.ndarray, base: str) -> str:
        name = self.name(base)
        self.arrays.append((name, np.ascontiguousarray(array)))
        return name

    def node(self, op: str, inputs: list[str], base: str, **attrs) -> str:
        output = self.name(base)
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output


def _activation(g: _GraphWriter, name: str, x: str, base: str, opset: int) -> str:
    if name == "linear":
        return x
    if name == "leaky":
        return g.node("LeakyRelu", [x], base, alpha=LEAKY_SLOPE)
    if name in ("relu", "tanh"):
        return g.node(name.capitalize(), [x], base)
    if name == "logistic":
        return g.node("Sigmoid", [x], base)
    if name == "swish":
        return g.node("Mul", [x, g.node("Sigmoid", [x], base)], base)
    if name == "mish":
        if opset >= 18:
            return g.node("Mish", [x], base)
        return g.node("Mul", [x, g.node("Tanh", [g.node("Softplus", [x], base)], base)], base)
    raise FoldkitError(f"activation {name!r} has no ONNX writer")


def _conv(g: _GraphWriter, p: spec.Conv, record: ConvRecord, x: str, base: str, fold: bool, report: FoldReport,
          opset: int) -> str:
    attrs = dict(kernel_shape=[p.size, p.size], strides=list(p.stride), pads=[p.padding] * 4,
                 dilations=[p.dilation, p.dilation], group=p.groups)
    folded, refusal = None, ""
    if fold and record.gamma is not None:
        try:
            norm = (record.gamma, record.bias, record.mean, record.var)
            folded = fold_batchnorm(record.weight, None, norm, record.eps)
        except UnsafeFoldError as unsafe:  # NaN/Inf or variance + eps <= 0: written unfolded, reported
            refusal = str(unsafe)
    if record.gamma is None:
        out = g.node("Conv", [x, g.const(record.weight, f"{base}.weight"), g.const(record.bias, f"{base}.bias")],
                     f"{base}.conv", **attrs)
    elif folded is not None:
        out = g.node("Conv", [x, g.const(folded.weight, f"{base}.weight"), g.const(folded.bias, f"{base}.bias")],
                     f"{base}.conv", **attrs)
        report.add(FoldEntry(f"{base}.bn", "BatchNormalization", FOLDED, target=f"{base}.conv",
                             pattern="Conv → BatchNormalization", max_amplification=folded.max_amplification,
                             warnings=folded.warnings))
    else:
        conv = g.node("Conv", [x, g.const(record.weight, f"{base}.weight")], f"{base}.conv", **attrs)
        params = [g.const(a, f"{base}.bn.{n}") for a, n in
                  ((record.gamma, "scale"), (record.bias, "B"), (record.mean, "mean"), (record.var, "var"))]
        out = g.node("BatchNormalization", [conv, *params], f"{base}.bn", epsilon=record.eps)
        if refusal:
            report.add(FoldEntry(f"{base}.bn", "BatchNormalization", SKIPPED, reason=refusal))
    return _activation(g, p.activation, out, f"{base}.act", opset)


def _layer(g: _GraphWriter, layer: spec.Layer, inputs: list[str], channels: list[int], base: str, records, fold,
           report, opset) -> str:
    p = layer.params
    if isinstance(p, spec.Conv):
        return _conv(g, p, next(records), inputs[0], base, fold, report, opset)
    if isinstance(p, spec.MaxPool):
        return g.node("MaxPool", inputs, base, kernel_shape=[p.size, p.size], strides=list(p.stride),
                      pads=[p.lead, p.lead, p.trail, p.trail])
    if isinstance(p, spec.Route):
        if p.groups > 1:
            inputs = [_channel_slice(g, x, c, p, base) for x, c in zip(inputs, channels)]
        return inputs[0] if len(inputs) == 1 else g.node("Concat", inputs, base, axis=1)
    if isinstance(p, spec.Shortcut):
        total = inputs[0]
        for other in inputs[1:]:
            total = g.node("Add", [total, other], base)
        return _activation(g, p.activation, total, f"{base}.act", opset)
    if isinstance(p, spec.Upsample):
        scales = g.const(np.array([1, 1, p.stride, p.stride], dtype=np.float32), f"{base}.scales")
        out = g.node("Resize", [inputs[0], g.const(np.zeros(0, np.float32), f"{base}.roi"), scales], base,
                     mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        return out if p.scale == 1.0 else g.node("Mul", [out, g.const(np.array(p.scale, np.float32), base)], base)
    if isinstance(p, spec.AvgPool):
        return g.node("GlobalAveragePool", inputs, base)
    if isinstance(p, spec.Softmax):
        flat = g.node("Flatten", inputs, base, axis=1)
        if p.temperature != 1.0:
            flat = g.node("Div", [flat, g.const(np.array(p.temperature, np.float32), base)], base)
        return g.node("Softmax", [flat], base, axis=1)
    return inputs[0]  # [yolo], [dropout], [cost]


def _channel_slice(g: _GraphWriter, x: str, channels: int, p: spec.Route, base: str) -> str:
    width = channels // p.groups
    bounds = [np.array([v], dtype=np.int64) for v in (p.group_id * width, (p.group_id + 1) * width, 1)]
    return g.node("Slice", [x, *(g.const(b, f"{base}.slice") for b in bounds)], base)


@dataclass
class DarknetOnnx:
    """A converted network: the graph without its tensors, the tensors, the fold report, the plan.

    Keeping the tensors as arrays lets :meth:`save` stream them into the file without copies;
    :meth:`model` assembles an ordinary ``ModelProto`` when one is wanted.
    """

    graph_model: onnx.ModelProto
    arrays: list[tuple[str, np.ndarray]]
    fold_report: FoldReport | None
    plan: NetworkPlan

    def save(self, path: str | os.PathLike) -> None:
        save_with_arrays(self.graph_model, self.arrays, path)

    def model(self) -> onnx.ModelProto:
        full = onnx.ModelProto()
        full.CopyFrom(self.graph_model)
        full.graph.initializer.extend(numpy_helper.from_array(array, name) for name, array in self.arrays)
        return full


def darknet_to_onnx(
    model: str | os.PathLike,
    weights: str | os.PathLike,
    *,
    img_size: int | tuple[int, int] | None = None,
    batch: int | None = 1,
    opset: int = DEFAULT_OPSET,
    fold: bool = True,
    bn_variant: str = "alexeyab",
    metadata: dict[str, str] | None = None,
) -> DarknetOnnx:
    """Convert a cfg (built-in name or path) with its ``.weights``; ``batch=None`` is dynamic.

    The graph is validated (checker with full checks and strict shape inference) before returning.
    """
    if opset < MIN_OPSET:
        raise FoldkitError(f"the direct Darknet converter writes opset {MIN_OPSET} or newer, not {opset}")
    plan = plan_network(model, img_size)
    _, records = read_weights(plan, weights, bn_variant=bn_variant)
    info = plan.info
    g = _GraphWriter()
    report = FoldReport() if fold else None
    record_iter = iter(records)
    outputs: list[str] = []
    for index, layer in enumerate(plan.layers):
        channels = [info.channels if s < 0 else plan.layers[s].shape[0] for s in layer.sources]
        inputs = [INPUT_NAME if s < 0 else outputs[s] for s in layer.sources]
        outputs.append(_layer(g, layer, inputs, channels, f"layer{index}", record_iter, fold, report or FoldReport(),
                              opset))

    batch_dim = "batch" if batch is None else batch
    if info.heads:
        ends = [(f"head{k}", outputs[head.layer], plan.layers[head.layer].shape) for k, head in enumerate(info.heads)]
        graph_outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch_dim, *shape])
                         for name, _, shape in ends]
    else:
        last = plan.layers[-1]
        shape = [batch_dim, last.shape[0]] if isinstance(last.params, spec.Softmax) else [batch_dim, *last.shape]
        ends = [("output", outputs[-1], None)]
        graph_outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)]
    _rename(g.nodes, {internal: name for name, internal, _ in ends})
    image = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch_dim, info.channels, info.height, info.width])
    opsets = [helper.make_opsetid("", opset)]
    graph_model = helper.make_model(helper.make_graph(g.nodes, "darknet", [image], graph_outputs), opset_imports=opsets,
                                    producer_name="foldkit", ir_version=helper.find_min_ir_version_for(opsets))
    add_metadata(graph_model, fold_metadata(report) | {"foldkit.exporter": "direct"} | (metadata or {}))
    validate_model(graph_model, opset=opset, where=str(model), weights=False, arrays=g.arrays)
    return DarknetOnnx(graph_model, g.arrays, report, plan)


def _rename(nodes: list[onnx.NodeProto], names: dict[str, str]) -> None:
    """Give the tensors that leave the graph their public names (head0, …, output)."""
    for node in nodes:
        for i, name in enumerate(node.output):
            if name in names:
                node.output[i] = names[name]
        for i, name in enumerate(node.input):
            if name in names:
                node.input[i] = names[name]
