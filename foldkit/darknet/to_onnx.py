"""Darknet cfg + weights → ONNX directly, without PyTorch: the fast converter.

The graph is written node by node from the network plan (:mod:`.specs`) and the weight
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
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from foldkit.darknet import specs as spec
from foldkit.darknet.graph import GraphWriter, activation
from foldkit.darknet.plan import plan_network
from foldkit.darknet.registry import LAYER_TYPES, lookup, require_all
from foldkit.darknet.sizes import layer_scales, require_dynamic
from foldkit.darknet.specs import NetworkPlan
from foldkit.darknet.weights import ConvRecord, read_weights
from foldkit.defaults import DEFAULT_OPSET, HEIGHT_DIM, INPUT_NAME, WIDTH_DIM
from foldkit.errors import FoldkitError
from foldkit.fold.affine import UnsafeFoldError, fold_batchnorm
from foldkit.fold.report import FOLDED, SKIPPED, FoldEntry, FoldReport
from foldkit.onnxio.metadata import EXPORTER_KEY, add_metadata, fold_metadata
from foldkit.onnxio.stream import save_with_arrays
from foldkit.onnxio.validate import validate_model

MIN_OPSET = 13  # Resize with an empty roi, Slice with tensor inputs
_TO_THE_END = np.iinfo(np.int64).max  # a Slice end that is the axis' end at any input size


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


@dataclass
class _At:
    """One layer being written: its index, plan parameters, input tensors and shapes, output shape, node prefix."""

    index: int
    params: Any
    inputs: list[str]
    shapes: list[spec.Shape]
    shape: spec.Shape
    base: str


class _LayerWriter:
    """Writes each planned layer's nodes; remembers each conv's weight tensors so ``share_index`` reuses them."""

    def __init__(self, g: GraphWriter, plan: NetworkPlan, records: dict, fold: bool, report: FoldReport) -> None:
        self.g, self.plan, self.records, self.fold, self.report = g, plan, records, fold, report
        self.conv_ops: dict[int, _WrittenOp] = {}  # conv layer → its written Conv, for share_index

    def write(self, index: int, inputs: list[str], shapes: list[spec.Shape]) -> str:
        layer = self.plan.layers[index]
        at = _At(index, layer.params, inputs, shapes, layer.shape, f"layer{index}")
        return lookup(_WRITERS, layer.params, "ONNX writer")(self, at)

    def _local_avgpool(self, at: _At) -> str:
        p = at.params
        return self.g.node("AveragePool", at.inputs, at.base, kernel_shape=[p.size, p.size], strides=list(p.stride),
                           pads=[p.lead, p.lead, p.trail, p.trail], count_include_pad=0)

    def _depth_maxpool(self, at: _At) -> str:
        g, p, base, (_, h, w) = self.g, at.params, at.base, at.shapes[0]
        split = g.node("Reshape", [at.inputs[0], g.ints([-1, p.in_channels // p.out_channels, p.out_channels, h, w],
                                                        base)], base)
        return g.node("Reshape", [g.reduce("ReduceMax", split, 1, base), g.ints([-1, p.out_channels, h, w], base)],
                      base)

    def _maxpool(self, at: _At) -> str:
        g, p, base = self.g, at.params, at.base
        out = g.node("MaxPool", at.inputs, base, kernel_shape=[p.size, p.size], strides=list(p.pool_stride),
                     pads=[p.lead, p.lead, p.trail, p.trail])
        return _blur(g, out, p.channels, p.antialiasing, p.stride, base) if p.antialiasing else out

    def _route(self, at: _At) -> str:
        g, p, inputs = self.g, at.params, at.inputs
        if p.groups > 1:
            inputs = [_channel_slice(g, x, s[0], p, at.base) for x, s in zip(inputs, at.shapes, strict=True)]
        return inputs[0] if len(inputs) == 1 else g.node("Concat", inputs, at.base, axis=1)

    def _upsample(self, at: _At) -> str:
        g, p, base = self.g, at.params, at.base
        scales = g.const(np.array([1, 1, p.stride, p.stride], dtype=np.float32), f"{base}.scales")
        out = g.node("Resize", [at.inputs[0], g.const(np.zeros(0, np.float32), f"{base}.roi"), scales], base,
                     mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        return out if p.scale == 1.0 else g.mul(out, p.scale, base)

    def _avgpool(self, at: _At) -> str:
        return self.g.node("GlobalAveragePool", at.inputs, at.base)

    def _connected(self, at: _At) -> str:
        g, base = self.g, at.base
        flat = g.node("Flatten", at.inputs, base, axis=1)
        out = _linear_op(g, "Gemm", self.records[at.index], flat, base, self.fold, self.report, {"transB": 1}).output
        out = activation(g, at.params.activation, out, f"{base}.act")
        return g.node("Unsqueeze", [out, g.ints([2, 3], base)], base)

    def _crop(self, at: _At) -> str:
        g, p, base = self.g, at.params, at.base
        bounds = [[p.top, p.left], [p.top + p.height, p.left + p.width], [2, 3]]
        out = g.node("Slice", [at.inputs[0], *(g.ints(b, base) for b in bounds)], base)
        return g.add(g.mul(out, 2.0, base), -1.0, base) if p.adjust else out

    def _activation(self, at: _At) -> str:
        return activation(self.g, at.params.activation, at.inputs[0], f"{at.base}.act")

    def _scale(self, at: _At) -> str:  # [sam] and [scale_channels]: the from map times this layer's input
        product = self.g.node("Mul", [at.inputs[1], at.inputs[0]], at.base)
        return activation(self.g, at.params.activation, product, f"{at.base}.act")

    def _passthrough(self, at: _At) -> str:
        return at.inputs[0]

    def _local(self, at: _At) -> str:
        """Darknet's im2col as strided slices, then one MatMul batched over output positions (L, N, K)·(L, K, F)."""
        g, p, base, record = self.g, at.params, at.base, self.records[at.index]
        x = at.inputs[0]
        if p.pad:
            x = g.node("Pad", [x, g.ints([0, 0, p.pad, p.pad, 0, 0, p.pad, p.pad], base)], base)
        span_y, span_x = p.stride * (p.out_h - 1) + 1, p.stride * (p.out_w - 1) + 1
        windows = []
        for ky in range(p.size):
            for kx in range(p.size):
                bounds = ([ky, kx], [ky + span_y, kx + span_x], [2, 3], [p.stride, p.stride])
                window = g.node("Slice", [x, *(g.ints(b, base) for b in bounds)], base)
                windows.append(g.node("Unsqueeze", [window, g.ints([2], base)], base))
        cols = g.node("Reshape", [g.node("Concat", windows, base, axis=2), g.ints([-1, p.patch, p.locations], base)],
                      base)
        kernels = g.const(np.ascontiguousarray(record.weight.transpose(0, 2, 1)), f"{base}.weight")  # (L, K, F)
        y = g.node("MatMul", [g.node("Transpose", [cols], base, perm=[2, 0, 1]), kernels], base)
        y = g.node("Reshape", [g.node("Transpose", [y], base, perm=[1, 2, 0]),
                               g.ints([-1, p.filters, p.out_h, p.out_w], base)], base)
        y = g.node("Add", [y, g.const(np.ascontiguousarray(record.bias), f"{base}.bias")], base)
        return activation(g, p.activation, y, f"{base}.act")

    def _detection(self, at: _At) -> str:
        """yolov1's head: the input, or with a softmax over each cell's classes (the first cells·classes values)."""
        g, p, base = self.g, at.params, at.base
        if not p.softmax:
            return at.inputs[0]
        count, total = p.cells * p.classes, int(np.prod(at.shape))
        flat = g.node("Flatten", at.inputs, base, axis=1)
        head, rest = (g.node("Slice", [flat, g.ints([a], base), g.ints([b], base), g.ints([1], base)], base)
                      for a, b in ((0, count), (count, total)))
        cells = g.node("Reshape", [head, g.ints([-1, p.cells, p.classes], base)], base)
        probs = g.node("Reshape", [g.node("Softmax", [cells], base, axis=-1), g.ints([-1, count], base)], base)
        return g.node("Reshape", [g.node("Concat", [probs, rest], base, axis=1), g.ints([-1, *at.shape], base)], base)

    def _conv(self, at: _At) -> str:
        g, index, p, x, base = self.g, at.index, at.params, at.inputs[0], at.base
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

    def _softmax(self, at: _At) -> str:
        g, p, x, base = self.g, at.params, at.inputs[0], at.base
        flat = g.node("Flatten", [x], base, axis=1)
        if p.temperature != 1.0:
            flat = g.node("Div", [flat, g.scalar(p.temperature)], base)
        if p.groups == 1:
            return g.node("Softmax", [flat], base, axis=1)
        chunks = g.node("Reshape", [flat, g.ints([0, p.groups, -1], base)], base)
        return g.node("Reshape", [g.node("Softmax", [chunks], base, axis=-1), g.ints([0, -1], base)], base)

    def _shortcut(self, at: _At) -> str:
        g, index, p, inputs, shapes, base = self.g, at.index, at.params, at.inputs, at.shapes, at.base
        channels = shapes[0][0]
        aligned = [inputs[0]]
        for x, (c, _, _), step in zip(inputs[1:], shapes[1:], p.steps, strict=True):
            if step > 1:  # pjreddie's strided rule: every step-th pixel of the larger map (exactly step× larger)
                bounds = [[0, 0], [_TO_THE_END] * 2, [2, 3], [step, step]]
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

    def _reorg(self, at: _At) -> str:
        p, out_shape, x, base = at.params, at.shape, at.inputs[0], at.base
        g, s, c = self.g, p.stride, p.in_shape[0]
        reinterpret = p.darknet_map != p.reverse  # Darknet's buffer seen as (C/s², H·s, W·s) around the map
        if reinterpret:
            x = _reshape_spatial(g, x, c // (s * s), "Mul", s, base)
        if p.reverse:
            out = g.node("DepthToSpace", [x], base, blocksize=s, mode="DCR")
        else:
            out = g.node("SpaceToDepth", [x], base, blocksize=s)
        if not reinterpret:
            return out
        # reinterpreted back: the op's map is s times this layer's in H and W, either way round
        return _reshape_spatial(g, out, out_shape[0], "Div", s, base)


def _reshape_spatial(g: GraphWriter, x: str, channels: int, op: str, factor: int, base: str) -> str:
    """Reshape (N, ·, H, W) to (N, ``channels``, H op factor, W op factor), H and W read from ``x`` at run
    time (Shape, Slice), so the node holds at any input size."""
    hw = g.node("Slice", [g.node("Shape", [x], base), g.ints([2], base), g.ints([4], base)], base)
    target = g.node("Concat", [g.ints([-1, channels], base), g.node(op, [hw, g.ints([factor], base)], base)], base,
                    axis=0)
    return g.node("Reshape", [x, target], base)


_WRITERS: dict[type, Callable[[_LayerWriter, _At], str]] = {
    spec.Conv: _LayerWriter._conv,
    spec.Local: _LayerWriter._local,
    spec.Connected: _LayerWriter._connected,
    spec.MaxPool: _LayerWriter._maxpool,
    spec.DepthMaxPool: _LayerWriter._depth_maxpool,
    spec.LocalAvgPool: _LayerWriter._local_avgpool,
    spec.AvgPool: _LayerWriter._avgpool,
    spec.Route: _LayerWriter._route,
    spec.Shortcut: _LayerWriter._shortcut,
    spec.ScaleChannels: _LayerWriter._scale,
    spec.Sam: _LayerWriter._scale,
    spec.Crop: _LayerWriter._crop,
    spec.Reorg: _LayerWriter._reorg,
    spec.Upsample: _LayerWriter._upsample,
    spec.Softmax: _LayerWriter._softmax,
    spec.Activation: _LayerWriter._activation,
    spec.Detection: _LayerWriter._detection,
    spec.Passthrough: _LayerWriter._passthrough,  # [dropout], [cost], [contrastive]
    spec.YoloHead: _LayerWriter._passthrough,  # heads: the graph outputs their input, the raw map
    spec.GaussianYoloHead: _LayerWriter._passthrough,
    spec.RegionHead: _LayerWriter._passthrough,
}
require_all(_WRITERS, LAYER_TYPES, "ONNX writer")


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
    dynamic_size: bool = False,
) -> DarknetOnnx:
    """Convert a cfg (built-in name or path) with its ``.weights``; ``batch=None`` is dynamic.

    ``dynamic_size`` declares the input's height and width (and each output's spatial dimensions)
    symbolic; the nodes are the same, since none of the layers a dynamic network may have
    (:func:`foldkit.darknet.sizes.require_dynamic`, which refuses the others) bakes in a size: Resize
    upsamples by scales, pools pad by what size and stride alone give.

    The graph is validated (checker with full checks and strict shape inference) before returning.
    ``progress(done, total, label)`` is called after each layer is written.
    """
    if opset < MIN_OPSET:
        raise FoldkitError(f"the direct Darknet converter writes opset {MIN_OPSET} or newer, not {opset}")
    plan = plan_network(model, img_size)
    if dynamic_size:
        require_dynamic(model, plan)
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

    graph_outputs, ends = _graph_outputs(plan, outputs, flat, batch, dynamic_size)
    # a network that hands its input straight out (an [activation] linear) needs a node to name the output
    ends = [(name, g.node("Identity", [internal], name) if internal == INPUT_NAME else internal)
            for name, internal in ends]
    _rename(g.nodes, {internal: name for name, internal in ends})
    size: list[int | str] = [HEIGHT_DIM, WIDTH_DIM] if dynamic_size else [info.height, info.width]
    image = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                          ["batch" if batch is None else batch, info.channels, *size])
    opsets = [helper.make_opsetid("", opset)]
    graph_model = helper.make_model(helper.make_graph(g.nodes, "darknet", [image], graph_outputs), opset_imports=opsets,
                                    producer_name="foldkit", ir_version=helper.find_min_ir_version_for(opsets))
    add_metadata(graph_model, fold_metadata(report) | {EXPORTER_KEY: "direct"} | (metadata or {}))
    validate_model(graph_model, opset=opset, where=str(model), weights=False, arrays=g.arrays)
    return DarknetOnnx(graph_model, g.arrays, report, plan)


def _graph_outputs(plan: NetworkPlan, outputs: list[str], flat: list[bool], batch: int | None,
                   dynamic_size: bool) -> tuple[list[onnx.ValueInfoProto], list[tuple[str, str]]]:
    """The declared outputs (heads, or the last layer) and (public name, internal tensor) pairs.

    With ``dynamic_size`` an output that is still a spatial map gets symbolic ``NAME_height`` and
    ``NAME_width``; one after a global layer ([avgpool], [connected], [softmax]) keeps its fixed shape.
    """
    batch_dim: int | str = "batch" if batch is None else batch
    scales = layer_scales(plan) if dynamic_size else [None] * len(plan.layers)

    def dims(name: str, index: int) -> list[int | str]:
        shape = plan.layers[index].shape
        if flat[index]:
            return [batch_dim, shape[0]]
        spatial = [f"{name}_{HEIGHT_DIM}", f"{name}_{WIDTH_DIM}"] if scales[index] is not None else list(shape[1:])
        return [batch_dim, shape[0], *spatial]

    if plan.info.heads:
        ends = [(f"head{k}", head.layer) for k, head in enumerate(plan.info.heads)]
    else:
        ends = [("output", len(plan.layers) - 1)]
    declared = [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims(name, i)) for name, i in ends]
    return declared, [(name, outputs[i]) for name, i in ends]


def _rename(nodes: list[onnx.NodeProto], names: dict[str, str]) -> None:
    """Give the tensors that leave the graph their public names (head0, …, output)."""
    for node in nodes:
        for i, name in enumerate(node.output):
            if name in names:
                node.output[i] = names[name]
        for i, name in enumerate(node.input):
            if name in names:
                node.input[i] = names[name]
