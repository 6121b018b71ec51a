"""Fold normalizations and per-channel affine ops into the linear op beside them, in any ONNX graph.

One small matcher per pattern; each either returns a plan (which initializers to rewrite and
which node to drop) or the reason it cannot fold, and every ``BatchNormalization`` (and every
per-sample norm, and every per-channel ``Mul``/``Add`` after a conv) ends up in the report.
Patterns:

* Conv → BatchNormalization, ConvTranspose → BatchNormalization (groups included),
  Gemm → BatchNormalization (alpha, beta, transA/transB, any broadcastable C),
  MatMul [→ Add] → BatchNormalization with a constant 2-D matrix;
* BatchNormalization → Conv, only when the conv does not pad (padding would not be shifted);
* Conv/ConvTranspose → Mul or Add by a per-output-channel constant (what tf2onnx writes for BN).

Weights shared with another node are folded into a private copy, so the other node's result never
changes. All arithmetic is :mod:`foldkit.fold.affine`'s: float64, one cast.
"""

from __future__ import annotations

import copy
import os
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from foldkit.onnxio.files import load_onnx
from foldkit.fold.affine import AffineFold, batchnorm_scale_shift, fold_affine, fold_affine_input
from foldkit.fold.constants import constant_names, fold_constants, remove_unused_initializers
from foldkit.fold.report import FOLDED, NOT_FOLDABLE, SKIPPED, FoldEntry, FoldReport
from foldkit.onnxio.store import TensorStore
from foldkit.onnxio.validate import skeleton

PER_SAMPLE_NORMS = {
    "InstanceNormalization": "InstanceNormalization normalizes each sample and channel with its own statistics "
    "(ONNX's has no running statistics); there is no fixed per-channel map to fold",
    "LayerNormalization": "LayerNormalization normalizes each sample with its own statistics; there is no "
    "fixed per-channel map to fold",
    "GroupNormalization": "GroupNormalization normalizes each sample with its own statistics over channel groups; "
    "there is no fixed per-channel map to fold",
}
_CONVS = ("Conv", "ConvTranspose")


@dataclass
class _Plan:
    """A fold ready to apply: new weight/bias for ``linear``, and the node whose output it takes over."""

    linear: onnx.NodeProto
    result: AffineFold
    absorbed: onnx.NodeProto  # the node removed; ``linear``'s output takes its output name
    pattern: str
    bias_input: int = 2  # where the bias goes in ``linear``'s inputs
    make_gemm: bool = False  # MatMul with no bias becomes Gemm(A, B', C=bias)
    new_beta: float | None = None  # Gemm: beta to set when C was absent or beta was 0
    keep_linear_output: bool = False  # BN → Conv: the BN is removed, the conv keeps its output
    absorbed_input: str = ""  # BN → Conv: the conv now reads what the BN read
    weight_node: onnx.NodeProto | None = None  # holds the weight, if not ``linear`` (MatMul before an Add)


class _Graph:
    """Who produces and who reads each value, which values are constant, and weight use counts."""

    def __init__(self, model: onnx.ModelProto, allow_initializer_inputs: bool, store: TensorStore) -> None:
        graph = model.graph
        self.model = model
        self.store = store
        self.allow_initializer_inputs = allow_initializer_inputs
        self.constants = constant_names(graph, initializer_inputs_are_constant=allow_initializer_inputs)
        self.initializers = {init.name: init for init in graph.initializer}
        self.graph_inputs = {i.name for i in graph.input}
        self.graph_outputs = {o.name for o in graph.output}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.ranks = _known_ranks(model)
        self._names = {n for node in graph.node for n in (*node.input, *node.output)} | set(self.initializers)
        self.removed: set[int] = set()

    def value(self, name: str) -> np.ndarray | None:
        return self.store.get(self.initializers[name]) if name in self.constants else None

    def why_not_constant(self, name: str, role: str) -> str:
        if name in self.graph_inputs:
            hint = (" (it has an initializer too; --allow-initializer-inputs treats such inputs as constants)"
                    if name in self.initializers else "")
            return f"{role} '{name}' is a graph input, not a constant{hint}"
        producer = self.producer.get(name)
        what = f"computed by {producer.op_type} '{producer.name}'" if producer else "not a known constant"
        return f"{role} '{name}' is {what}, not a constant"

    def sole_reader(self, value: str, reader: onnx.NodeProto) -> str:
        """'' if ``reader`` is the only consumer of ``value`` and it is no graph output; else why not."""
        if value in self.graph_outputs:
            return f"'{value}' is a graph output, so it must stay as it is"
        others = [n for n in self.consumers[value] if n is not reader]
        if others:
            names = ", ".join(f"{n.op_type} '{n.name}'" for n in others[:3])
            return f"'{value}' is also read by {names}; folding would change what they see"
        return ""

    def fresh_name(self, base: str) -> str:
        name, k = base, 1
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    def set_initializer(self, node: onnx.NodeProto, position: int, array: np.ndarray, label: str) -> str:
        """Give ``node`` input ``position`` the value ``array``; a shared tensor gets a private copy.

        Returns a note when a private copy was made.
        """
        graph = self.model.graph
        old = node.input[position] if position < len(node.input) else ""
        shared = old and sum(1 for n in self.consumers[old] if id(n) not in self.removed) > 1
        if old and not shared and old in self.initializers:
            self.store.put(self.initializers[old], array)
            return ""
        name = self.fresh_name(f"{old}_folded" if old else f"{node.name or node.output[0]}_{label}")
        tensor = graph.initializer.add()
        tensor.name = name
        self.store.put(tensor, array)
        self.initializers[name] = tensor
        self.constants.add(name)
        while len(node.input) <= position:
            node.input.append("")
        node.input[position] = name
        self.consumers[name].append(node)
        if old:
            self.consumers[old] = [n for n in self.consumers[old] if n is not node]
        return f"{label} '{old}' is shared with other nodes: folded into a private copy '{name}'" if shared else ""


def fold_onnx(
    model: onnx.ModelProto | str | os.PathLike,
    *,
    allow_initializer_inputs: bool = False,
    inplace: bool = False,
    store: TensorStore | None = None,
) -> tuple[onnx.ModelProto, FoldReport]:
    """Fold every normalization and per-channel affine op that folds exactly; report every one.

    ``model`` is a ModelProto (copied unless ``inplace``) or a path. Opset imports and IR version
    are kept, unused initializers removed. ``allow_initializer_inputs`` treats initializers that
    are also listed as graph inputs as constants (as onnxsim does); by default they are inputs a
    caller may override, so nothing that reads them folds. ``store`` is where tensor values are
    read and written (default: inside the TensorProtos).
    """
    if not isinstance(model, onnx.ModelProto):
        model = load_onnx(model)
    elif not inplace:
        model = copy.deepcopy(model)
    store = store or TensorStore()
    report = FoldReport()
    evaluated = fold_constants(model, initializer_inputs_are_constant=allow_initializer_inputs, store=store)
    if evaluated:
        report.notes.append(f"evaluated {evaluated} constant node(s) into initializers")
    graph = _Graph(model, allow_initializer_inputs, store)
    for node in list(model.graph.node):
        if id(node) in graph.removed:
            continue
        if node.op_type in PER_SAMPLE_NORMS:
            report.add(FoldEntry(node.name, node.op_type, NOT_FOLDABLE, PER_SAMPLE_NORMS[node.op_type]))
        elif node.op_type == "BatchNormalization":
            _fold_batchnorm(graph, node, report)
        elif node.op_type in ("Mul", "Add"):
            _fold_channel_affine(graph, node, report)
    kept = [node for node in model.graph.node if id(node) not in graph.removed]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    remove_unused_initializers(model)
    return model, report


# --- BatchNormalization ------------------------------------------------------------------------

def _fold_batchnorm(graph: _Graph, bn: onnx.NodeProto, report: FoldReport) -> None:
    entry = report.add(FoldEntry(bn.name or bn.output[0], bn.op_type, SKIPPED))
    reason, scale_shift = _batchnorm_map(graph, bn)
    if reason:
        entry.reason = reason
        return
    scale, shift = scale_shift
    plan, before_reason = _plan_linear_then_bn(graph, bn, scale, shift)
    if plan is None:
        plan, after_reason = _plan_bn_then_conv(graph, bn, scale, shift)
        if plan is None:
            entry.reason = before_reason if after_reason is None else f"{before_reason}; and after it: {after_reason}"
            return
    _apply(graph, plan, entry)


def _batchnorm_map(graph: _Graph, bn: onnx.NodeProto) -> tuple[str, tuple | None]:
    """BN's per-channel (scale, shift) in float64, or why it is not a fixed map."""
    attrs = {a.name: helper.get_attribute_value(a) for a in bn.attribute}
    if attrs.get("training_mode", 0):
        return "BatchNormalization has training_mode=1: it normalizes with batch statistics", None
    if attrs.get("is_test", 1) == 0:
        return "BatchNormalization has is_test=0 (training mode): it normalizes with batch statistics", None
    if attrs.get("spatial", 1) == 0:
        return "BatchNormalization with spatial=0 (per-element statistics) is not a per-channel map", None
    used_outputs = [o for o in bn.output[1:] if o and (graph.consumers.get(o) or o in graph.graph_outputs)]
    if used_outputs:
        return f"its optional outputs ({', '.join(used_outputs)}) are used, so the node must stay", None
    params = []
    for role, name in zip(("scale", "B", "mean", "var"), bn.input[1:5]):
        value = graph.value(name)
        if value is None:
            return graph.why_not_constant(name, f"BatchNormalization {role}"), None
        params.append(value)
    sizes = {p.size for p in params}
    if len(sizes) != 1 or any(p.ndim != 1 for p in params):
        return f"BatchNormalization parameters have shapes {[list(p.shape) for p in params]}, not one [C] each", None
    return "", batchnorm_scale_shift(*params, eps=attrs.get("epsilon", 1e-5))


def _plan_linear_then_bn(graph: _Graph, bn: onnx.NodeProto, scale, shift) -> tuple[_Plan | None, str]:
    """Conv/ConvTranspose/Gemm/MatMul[+Add] → BN."""
    source = graph.producer.get(bn.input[0])
    if source is None:
        return None, f"its input '{bn.input[0]}' is a graph input, not the output of a linear op"
    if source.op_type == "Add":
        return _plan_matmul_add(graph, source, bn, scale, shift)
    if source.op_type not in (*_CONVS, "Gemm", "MatMul"):
        return None, f"its input comes from {source.op_type} '{source.name}', not from Conv/ConvTranspose/Gemm/MatMul"
    if reason := graph.sole_reader(source.output[0], bn):
        return None, f"{source.op_type} '{source.name}' output {reason}"
    return _plan_output_fold(graph, source, bn, scale, shift, f"{source.op_type} → BatchNormalization")


def _plan_output_fold(graph: _Graph, linear, absorbed, scale, shift, pattern: str) -> tuple[_Plan | None, str]:
    """Scale the output channels of Conv/ConvTranspose/Gemm/MatMul ``linear`` by ``scale``, add ``shift``."""
    weight_name = linear.input[1]
    weight = graph.value(weight_name)
    if weight is None:
        return None, graph.why_not_constant(weight_name, f"{linear.op_type} weight")
    attrs = {a.name: helper.get_attribute_value(a) for a in linear.attribute}
    groups, axis, bias_input, shift_by = 1, 0, 2, 1.0
    if linear.op_type == "ConvTranspose":
        groups, axis = attrs.get("group", 1), 1
    elif linear.op_type == "Gemm":
        axis = 0 if attrs.get("transB", 0) else 1
        beta = attrs.get("beta", 1.0)
        shift_by = beta if (len(linear.input) > 2 and linear.input[2] and beta != 0) else 1.0
    elif linear.op_type == "MatMul":
        if weight.ndim != 2:
            return None, f"MatMul '{linear.name}' matrix has {weight.ndim} dimensions; only a 2-D matrix folds"
        if graph.ranks.get(linear.output[0]) != 2:
            return None, f"MatMul '{linear.name}' output is not known to be 2-D, so BN's channel axis may not be its last"
        axis = 1
    if linear.op_type in _CONVS and weight.ndim < 3:
        return None, f"{linear.op_type} '{linear.name}' weight has shape {list(weight.shape)}"
    channels = weight.shape[0] if axis == 0 else weight.shape[1] * groups
    if scale.size != channels:
        return None, f"{linear.op_type} '{linear.name}' has {channels} output channels, the next op {scale.size}"
    bias = None
    if len(linear.input) > bias_input and linear.input[bias_input]:
        bias = graph.value(linear.input[bias_input])
        if bias is None:
            return None, graph.why_not_constant(linear.input[bias_input], f"{linear.op_type} bias")
        if linear.op_type == "Gemm" and attrs.get("beta", 1.0) == 0:
            bias = None  # beta = 0 ignores C: the folded C replaces it and beta becomes 1
    result = fold_affine(weight, bias, scale, shift / shift_by, axis=axis, groups=groups)
    plan = _Plan(linear, result, absorbed, pattern, bias_input=bias_input)
    if linear.op_type == "Gemm" and (bias is None):
        plan.new_beta = 1.0
    if linear.op_type == "MatMul":
        plan.make_gemm = True
    return plan, ""


def _plan_matmul_add(graph: _Graph, add, bn, scale, shift) -> tuple[_Plan | None, str]:
    """MatMul(X, B) → Add(·, c) → BN: scale B's columns, fold into c."""
    matmul, bias_name = None, None
    for i, j in ((0, 1), (1, 0)):
        candidate = graph.producer.get(add.input[i])
        if candidate is not None and candidate.op_type == "MatMul":
            matmul, bias_name = candidate, add.input[j]
    if matmul is None:
        return None, f"its input comes from Add '{add.name}', which does not add a bias to a MatMul"
    for value, reader in ((matmul.output[0], add), (add.output[0], bn)):
        if reason := graph.sole_reader(value, reader):
            return None, reason
    bias = graph.value(bias_name)
    if bias is None:
        return None, graph.why_not_constant(bias_name, "Add bias")
    plan, reason = _plan_output_fold(graph, matmul, bn, scale, shift, "MatMul → Add → BatchNormalization")
    if plan is None:
        return None, reason
    if bias.ndim > 2 or (bias.size not in (1, scale.size) and bias.shape[-1:] != (scale.size,)):
        return None, f"Add '{add.name}' bias of shape {list(bias.shape)} does not broadcast per column"
    plan.result = fold_affine(graph.value(matmul.input[1]), bias, scale, shift, axis=1)
    plan.make_gemm, plan.linear, plan.weight_node = False, add, matmul
    plan.bias_input = 1 if add.input[1] == bias_name else 0
    return plan, ""


def _plan_bn_then_conv(graph: _Graph, bn, scale, shift) -> tuple[_Plan | None, str | None]:
    """BN → Conv (pre-activation order): exact only when the conv does not pad."""
    readers = graph.consumers.get(bn.output[0], [])
    if len(readers) != 1 or readers[0].op_type != "Conv" or readers[0].input[0] != bn.output[0]:
        return None, None
    conv = readers[0]
    if reason := graph.sole_reader(bn.output[0], conv):
        return None, reason
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    pads = list(attrs.get("pads", []))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if any(pads) or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        padding = f"pads={pads}" if any(pads) else f"auto_pad={auto_pad}"
        return None, (f"the Conv '{conv.name}' after it pads ({padding}); padded zeros are not shifted by the BN, "
                      "so folding forward is not exact at the borders")
    weight = graph.value(conv.input[1])
    if weight is None:
        return None, graph.why_not_constant(conv.input[1], "Conv weight")
    groups = attrs.get("group", 1)
    if weight.shape[1] * groups != scale.size:
        return None, f"Conv '{conv.name}' reads {weight.shape[1] * groups} channels, the BN has {scale.size}"
    bias = None
    if len(conv.input) > 2 and conv.input[2]:
        bias = graph.value(conv.input[2])
        if bias is None:
            return None, graph.why_not_constant(conv.input[2], "Conv bias")
    result = fold_affine_input(weight, bias, scale, shift, groups=groups)
    return _Plan(conv, result, bn, "BatchNormalization → Conv", keep_linear_output=True,
                 absorbed_input=bn.input[0]), ""


# --- per-channel Mul / Add after a conv --------------------------------------------------------

def _fold_channel_affine(graph: _Graph, node: onnx.NodeProto, report: FoldReport) -> None:
    """Conv → Mul(c) or Conv → Add(c) with c constant per output channel."""
    for data_index in (0, 1):
        source = graph.producer.get(node.input[data_index])
        if source is not None and source.op_type in _CONVS:
            break
    else:
        return
    const_name = node.input[1 - data_index]
    const = graph.value(const_name)
    if const is None:
        return  # not an affine map with fixed parameters: nothing a user would expect folded
    rank = graph.ranks.get(source.output[0])
    channels = _per_channel_values(const, rank)
    if channels is None:
        return  # not a per-channel constant: an ordinary Mul/Add
    entry = report.add(FoldEntry(node.name or node.output[0], node.op_type, SKIPPED))
    if reason := graph.sole_reader(source.output[0], node):
        entry.reason = f"{source.op_type} '{source.name}' output {reason}"
        return
    size = _conv_output_channels(graph, source) or channels.size
    values = np.broadcast_to(channels, (size,)) if channels.size == 1 else channels
    ones, zeros = np.ones(values.size), np.zeros(values.size)
    scale, shift = (values, zeros) if node.op_type == "Mul" else (ones, values)
    plan, reason = _plan_output_fold(graph, source, node, scale, shift, f"{source.op_type} → {node.op_type}")
    if plan is None:
        entry.reason = reason
        return
    _apply(graph, plan, entry)


def _conv_output_channels(graph: _Graph, conv: onnx.NodeProto) -> int | None:
    weight = graph.initializers.get(conv.input[1])
    if weight is None or len(weight.dims) < 3:
        return None
    if conv.op_type == "Conv":
        return weight.dims[0]
    groups = next((helper.get_attribute_value(a) for a in conv.attribute if a.name == "group"), 1)
    return weight.dims[1] * groups


def _per_channel_values(const: np.ndarray, rank: int | None) -> np.ndarray | None:
    """The constant as per-channel values if it broadcasts along axis 1 of an NC… tensor only."""
    if rank is None or rank < 3 or const.ndim > rank:
        return None
    shape = (1,) * (rank - const.ndim) + const.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1):
        return None
    return const.astype(np.float64).reshape(-1)


# --- applying a plan ---------------------------------------------------------------------------

def _apply(graph: _Graph, plan: _Plan, entry: FoldEntry) -> None:
    linear, result = plan.linear, plan.result
    weight_owner = plan.weight_node or linear
    notes = [graph.set_initializer(weight_owner, 1, result.weight, "weight")]
    if plan.make_gemm:
        linear.op_type = "Gemm"
    notes.append(graph.set_initializer(linear, plan.bias_input, result.bias, "bias"))
    if plan.new_beta is not None:
        _set_float_attribute(linear, "beta", plan.new_beta)
    absorbed = plan.absorbed
    graph.removed.add(id(absorbed))
    if plan.keep_linear_output:
        linear.input[0] = plan.absorbed_input
        graph.consumers[plan.absorbed_input].append(linear)
    else:
        linear.output[0] = absorbed.output[0]
        graph.producer[absorbed.output[0]] = linear
    entry.status, entry.target, entry.pattern = FOLDED, linear.name or linear.output[0], plan.pattern
    if weight_owner is not linear:
        entry.target = f"{weight_owner.name or weight_owner.output[0]} + {entry.target}"
    entry.max_amplification = result.max_amplification
    entry.warnings.extend(result.warnings)
    entry.reason = "; ".join(n for n in notes if n)


def _set_float_attribute(node: onnx.NodeProto, name: str, value: float) -> None:
    for attr in node.attribute:
        if attr.name == name:
            attr.f = value
            return
    node.attribute.append(helper.make_attribute(name, value))


def _known_ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Ranks of values, from shape inference on the graph's skeleton (unknown ranks are left out)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model), data_prop=False)
    except Exception:  # noqa: BLE001 - a model shape inference cannot read just gives no ranks
        return {}
    ranks = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            ranks[value.name] = len(value.type.tensor_type.shape.dim)
    return ranks


def node_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each op type the main graph has."""
    counts: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        counts[node.op_type] += 1
    return dict(sorted(counts.items()))


