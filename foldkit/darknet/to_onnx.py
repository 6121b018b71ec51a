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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from foldkit.darknet import layers as spec
from foldkit.darknet.graph import GraphWriter, activation
from foldkit.darknet.layers import NetworkPlan
from foldkit.darknet.plan import plan_network
from foldkit.darknet.weights import ConvRecord, read_weights
from foldkit.defaults import DEFAULT_OPSET, INPUT_NAME
from foldkit.errors import FoldkitError
from foldkit.fold.affine import UnsafeFoldError, fold_batchnorm
from foldkit.fold.report import FOLDED, SKIPPED, FoldEntry, FoldReport
from foldkit.onnxio.metadata import EXPORTER_KEY, add_metadata, fold_metadata
from foldkit.onnxio.stream import save_with_arrays
from foldkit.onnxio.validate import validate_model

MIN_OPSET = 13  # Resize with an empty roi, Slice with tensor inputs


@dataclass
class _WrittenOp:
    """A written Conv/Gemm: its output, and the tensors a ``share_index`` layer reuses."""

    output: str
    weights: list[str]  # the op's inputs after the data: weight and (unless an unfolded BN follows) bias
    norm: list[str] | None = None  # scale, B, mean, var of the BatchNormalization node kept when fold=False
    eps: float = 0.0


def _linear_op(g: GraphWriter, op: str, record: ConvRecord, x: str, base: str, fold: bool, report: FoldReport,
               attrs: dict) -> _WrittenOp:
    """Conv or Gemm with its bias, or with its BatchNorm folded in (or kept as a node when ``fold=False``)."""
    if record.gamma is None:
        params = [g.const(record.weight, f"{base}.weight"), g.const(record.bias, f"{base}.bias")]
        return _WrittenOp(g.node(op, [x, *params], f"{base}.{op.lower()}", **attrs), params)
    assert record.mean is not None and record.var is not None
    if fold:
        try:
            folded = fold_batchnorm(record.weight, None, (record.gamma, record.bias, record.mean, record.var),
                                    record.eps)
        except UnsafeFoldError as unsafe:  # NaN/Inf or variance + eps <= 0: written unfolded, reported
            report.add(FoldEntry(f"{base}.bn", "BatchNormalization", SKIPPED, reason=str(unsafe)))
        else:
            params = [g.const(folded.weight, f"{base}.weight"), g.const(folded.bias, f"{base}.bias")]
            out = g.node(op, [x, *params], f"{base}.{op.lower()}", **attrs)
            report.add(FoldEntry(f"{base}.bn", "BatchNormalization", FOLDED, target=f"{base}.{op.lower()}",
                                 pattern=f"{op} → BatchNormalization", max_amplification=folded.max_amplification,
                                 warnings=folded.warnings))
            return _WrittenOp(out, params)
    params = [g.const(record.weight, f"{base}.weight")]
    norm = [g.const(a, f"{base}.bn.{n}") for a, n in
            ((record.gamma, "scale"), (record.bias, "B"), (record.mean, "mean"), (record.var, "var"))]
    written = _WrittenOp(g.node(op, [x, *params], f"{base}.{op.lower()}", **attrs), params, norm, record.eps)
    written.output = _norm_node(g, written, written.output, base)
    return written


def _norm_node(g: GraphWriter, written: _WrittenOp, x: str, base: str) -> str:
    if written.norm is None:
        return x
    return g.node("BatchNormalization", [x, *written.norm], f"{base}.bn", epsilon=written.eps)


def _blur(g: GraphWriter, x: str, channels: int, antialiasing: int, stride: tuple[int, int], base: str) -> str:
    one = spec.blur_kernel(antialiasing).astype(np.float32)
    kernel = np.broadcast_to(one, (channels, 1, *one.shape))
    pad = spec.blur_padding(antialiasing)
    return g.node("Conv", [x, g.const(kernel, f"{base}.blur")], f"{base}.blur",
                  kernel_shape=list(one.shape), strides=list(stride), pads=[pad] * 4, group=channels)


def _channel_slice(g: GraphWriter, x: str, channels: int, p: spec.Route, base: str) -> str:
    width = channels // p.groups
    bounds = [[p.group_id * width], [(p.group_id + 1) * width], [1]]
    return g.node("Slice", [x, *(g.ints(b, f"{base}.slice") for b in bounds)], base)


class _LayerWriter:
    """Writes each planned layer's nodes; remembers each conv's weight tensors so ``share_index`` reuses them."""

    def __init__(self, g: GraphWriter, plan: NetworkPlan, records: dict, fold: bool, report: FoldReport) -> None:
        self.g, self.plan, self.records, self.fold, self.report = g, plan, records, fold, report
        self.conv_ops: dict[int, _WrittenOp] = {}  # conv layer → its written Conv, for share_index

    def write(self, index: int, inputs: list[str], shapes: list[spec.Shape]) -> str:
        g, layer, base = self.g, self.plan.layers[index], f"layer{index}"
        p = layer.params
        if isinstance(p, spec.Conv):
            return self._conv(index, p, inputs[0], base)
        if isinstance(p, spec.LocalAvgPool):
            return g.node("AveragePool", inputs, base, kernel_shape=[p.size, p.size], strides=list(p.stride),
                          pads=[p.lead, p.lead, p.trail, p.trail], count_include_pad=0)
        if isinstance(p, spec.DepthMaxPool):
            _, h, w = shapes[0]
            split = g.node("Reshape", [inputs[0], g.ints([-1, p.in_channels // p.out_channels, p.out_channels, h, w],
                                                         base)], base)
            return g.node("Reshape", [g.reduce("ReduceMax", split, 1, base), g.ints([-1, p.out_channels, h, w], base)],
                          base)
        if isinstance(p, spec.MaxPool):
            out = g.node("MaxPool", inputs, base, kernel_shape=[p.size, p.size], strides=list(p.pool_stride),
                         pads=[p.lead, p.lead, p.trail, p.trail])
            return _blur(g, out, p.channels, p.antialiasing, p.stride, base) if p.antialiasing else out
        if isinstance(p, spec.Route):
            if p.groups > 1:
                inputs = [_channel_slice(g, x, s[0], p, base) for x, s in zip(inputs, shapes, strict=True)]
            return inputs[0] if len(inputs) == 1 else g.node("Concat", inputs, base, axis=1)
        if isinstance(p, spec.Shortcut):
            return self._shortcut(index, p, inputs, shapes, base)
        if isinstance(p, spec.Upsample):
            scales = g.const(np.array([1, 1, p.stride, p.stride], dtype=np.float32), f"{base}.scales")
            out = g.node("Resize", [inputs[0], g.const(np.zeros(0, np.float32), f"{base}.roi"), scales], base,
                         mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
            return out if p.scale == 1.0 else g.mul(out, p.scale, base)
        if isinstance(p, spec.AvgPool):
            return g.node("GlobalAveragePool", inputs, base)
        if isinstance(p, spec.Softmax):
            return self._softmax(p, inputs[0], base)
        if isinstance(p, spec.Connected):
            flat = g.node("Flatten", inputs, base, axis=1)
            out = _linear_op(g, "Gemm", self.records[index], flat, base, self.fold, self.report, {"transB": 1}).output
            out = activation(g, p.activation, out, f"{base}.act")
            return g.node("Unsqueeze", [out, g.ints([2, 3], base)], base)
        if isinstance(p, spec.Crop):
            bounds = [[p.top, p.left], [p.top + p.height, p.left + p.width], [2, 3]]
            out = g.node("Slice", [inputs[0], *(g.ints(b, base) for b in bounds)], base)
            return g.add(g.mul(out, 2.0, base), -1.0, base) if p.adjust else out
        if isinstance(p, spec.Reorg):
            return self._reorg(p, layer.shape, inputs[0], base)
        if isinstance(p, spec.Activation):
            return activation(g, p.activation, inputs[0], f"{base}.act")
        if isinstance(p, (spec.Sam, spec.ScaleChannels)):
            return activation(g, p.activation, g.node("Mul", [inputs[1], inputs[0]], base), f"{base}.act")
        return inputs[0]  # heads, [dropout], [cost], [contrastive], [detection]

    def _conv(self, index: int, p: spec.Conv, x: str, base: str) -> str:
        g = self.g
        attrs = {"kernel_shape": [p.size, p.size], "strides": list(p.conv_stride), "pads": [p.padding] * 4,
                 "dilations": [p.dilation, p.dilation], "group": p.groups}
        if p.share_from is None:
            self.conv_ops[index] = _linear_op(g, "Conv", self.records[index], x, base, self.fold, self.report, attrs)
            out = self.conv_ops[index].output
        else:  # share_index: the owner's tensors, this layer's geometry
            owner = self.conv_ops[p.share_from]
            out = _norm_node(g, owner, g.node("Conv", [x, *owner.weights], f"{base}.conv", **attrs), base)
        out = activation(g, p.activation, out, f"{base}.act")
        return _blur(g, out, p.filters, p.antialiasing, p.stride, base) if p.antialiasing else out

    def _softmax(self, p: spec.Softmax, x: str, base: str) -> str:
        g = self.g
        flat = g.node("Flatten", [x], base, axis=1)
        if p.temperature != 1.0:
            flat = g.node("Div", [flat, g.scalar(p.temperature)], base)
        if p.groups == 1:
            return g.node("Softmax", [flat], base, axis=1)
        chunks = g.node("Reshape", [flat, g.ints([0, p.groups, -1], base)], base)
        return g.node("Reshape", [g.node("Softmax", [chunks], base, axis=-1), g.ints([0, -1], base)], base)

    def _shortcut(self, index: int, p: spec.Shortcut, inputs: list[str], shapes: list[spec.Shape], base: str) -> str:
        g = self.g
        channels, height, width = shapes[0]
        aligned = [inputs[0]]
        for x, (c, _, _), step in zip(inputs[1:], shapes[1:], p.steps, strict=True):
            if step > 1:  # pjreddie's strided rule: every step-th pixel of the larger map
                bounds = [[0, 0], [height * step, width * step], [2, 3], [step, step]]
                x = g.node("Slice", [x, *(g.ints(b, base) for b in bounds)], base)
            if c > channels:  # AlexeyAB's prefix rule: extra channels are ignored…
                x = g.node("Slice", [x, *(g.ints(b, base) for b in ([0], [channels], [1]))], base)
            elif c < channels:  # …and missing ones add nothing
                x = g.node("Pad", [x, g.ints([0, 0, 0, 0, 0, channels - c, 0, 0], base)], base)
            aligned.append(x)
        if p.weight_count:
            raw = self.records[index].astype(np.float64)
            factors = spec.normalized_shortcut_weights(raw, p).astype(np.float32)
            aligned = [g.node("Mul", [x, g.const(f.reshape(1, -1, 1, 1), f"{base}.w")], base)
                       for x, f in zip(aligned, factors, strict=True)]
        total = aligned[0]
        for other in aligned[1:]:
            total = g.node("Add", [total, other], base)
        return activation(g, p.activation, total, f"{base}.act")

    def _reorg(self, p: spec.Reorg, out_shape: spec.Shape, x: str, base: str) -> str:
        g, s, (c, h, w) = self.g, p.stride, p.in_shape
        reinterpret = p.darknet_map != p.reverse  # Darknet's buffer seen as (C/s², H·s, W·s) around the map
        if reinterpret:
            x = g.node("Reshape", [x, g.ints([-1, c // (s * s), h * s, w * s], base)], base)
        if p.reverse:
            out = g.node("DepthToSpace", [x], base, blocksize=s, mode="DCR")
        else:
            out = g.node("SpaceToDepth", [x], base, blocksize=s)
        return g.node("Reshape", [out, g.ints([-1, *out_shape], base)], base) if reinterpret else out


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
    progress: Callable[[int, int, str], None] | None = None,
) -> DarknetOnnx:
    """Convert a cfg (built-in name or path) with its ``.weights``; ``batch=None`` is dynamic.

    The graph is validated (checker with full checks and strict shape inference) before returning.
    ``progress(done, total, label)`` is called after each layer is written.
    """
    if opset < MIN_OPSET:
        raise FoldkitError(f"the direct Darknet converter writes opset {MIN_OPSET} or newer, not {opset}")
    plan = plan_network(model, img_size)
    _, records = read_weights(plan, weights, bn_variant=bn_variant)
    info = plan.info
    g = GraphWriter(opset)
    report = FoldReport() if fold else None
    writer = _LayerWriter(g, plan, records, fold, report or FoldReport())
    outputs: list[str] = []
    flat: list[bool] = []  # [softmax] outputs (N, C·H·W); layers that pass a tensor on keep its rank
    for index, layer in enumerate(plan.layers):
        shapes = [(info.channels, info.height, info.width) if s < 0 else plan.layers[s].shape for s in layer.sources]
        inputs = [INPUT_NAME if s < 0 else outputs[s] for s in layer.sources]
        outputs.append(writer.write(index, inputs, shapes))
        if progress is not None:
            progress(index + 1, len(plan.layers), f"layer {index} [{layer.kind}]")
        flat.append(isinstance(layer.params, spec.Softmax) or (
            isinstance(layer.params, spec.Passthrough) and layer.sources[0] >= 0 and flat[layer.sources[0]]))

    batch_dim = "batch" if batch is None else batch
    if info.heads:
        ends = [(f"head{k}", outputs[head.layer]) for k, head in enumerate(info.heads)]
        graph_outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                       [batch_dim, *plan.layers[head.layer].shape])
                         for (name, _), head in zip(ends, info.heads, strict=True)]
    else:
        last = plan.layers[-1]
        shape = [batch_dim, last.shape[0]] if flat[-1] else [batch_dim, *last.shape]
        ends = [("output", outputs[-1])]
        graph_outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)]
    # a network that hands its input straight out (an [activation] linear) needs a node to name the output
    ends = [(name, g.node("Identity", [internal], name) if internal == INPUT_NAME else internal)
            for name, internal in ends]
    _rename(g.nodes, {internal: name for name, internal in ends})
    image = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                          [batch_dim, info.channels, info.height, info.width])
    opsets = [helper.make_opsetid("", opset)]
    graph_model = helper.make_model(helper.make_graph(g.nodes, "darknet", [image], graph_outputs), opset_imports=opsets,
                                    producer_name="foldkit", ir_version=helper.find_min_ir_version_for(opsets))
    add_metadata(graph_model, fold_metadata(report) | {EXPORTER_KEY: "direct"} | (metadata or {}))
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
