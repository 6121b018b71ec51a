"""Cross-layer equalization (Nagel et al., 2019) of conv pairs in a folded ONNX graph.

For conv A → f → conv B, where every op in f maps each channel on its own and is positively
homogeneous (f(s·x) = s·f(x) for s > 0: ReLU, LeakyReLU, MaxPool, nothing at all), dividing A's
output channel i (weights and bias) by s_i and multiplying B's input channel i by s_i leaves the
network's function unchanged. Choosing s_i = sqrt(r_A,i / r_B,i), with r the channel's largest
|weight|, gives both sides the same range, so no channel is starved by one large neighbour when
ranges are quantized. Across sigmoid, tanh, mish, swish (x·sigmoid(x)) or anything else, f(s·x)
≠ s·f(x) and scaling would change the network: such pairs are refused, with the reason.

The arithmetic is float64, cast once; a fold must come first (a BatchNormalization between the
convs is not homogeneous in this sense: it has a shift).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

# Each maps channel i to channel i and satisfies f(s·x) = s·f(x) for every s > 0.
POSITIVELY_HOMOGENEOUS = {
    "Relu": "ReLU", "LeakyRelu": "LeakyReLU", "MaxPool": "MaxPool", "Identity": "Identity", "Dropout": "Dropout",
}
NOT_HOMOGENEOUS = {
    "Sigmoid": "sigmoid is not positively homogeneous: sigmoid(s·x) ≠ s·sigmoid(x)",
    "Tanh": "tanh is not positively homogeneous: tanh(s·x) ≠ s·tanh(x)",
    "Mish": "mish is not positively homogeneous: mish(s·x) ≠ s·mish(x)",
    "Softplus": "softplus (as in mish) is not positively homogeneous",
    "HardSigmoid": "hard sigmoid has a fixed offset and saturation, so it is not positively homogeneous",
    "HardSwish": "hard swish is not positively homogeneous",
    "Clip": "clip saturates at fixed bounds, so it is not positively homogeneous",
    "Elu": "ELU is not positively homogeneous on its negative side",
    "Selu": "SELU is not positively homogeneous on its negative side",
}
SCALE_ITERATIONS = 20  # sweeps over all pairs; chains (A→B→C) share convs and converge in a few
_TOLERANCE = 1e-6


@dataclass
class EqualizedPair:
    first: str
    second: str
    path: list[str]  # op types between them
    max_scale: float = 1.0
    min_scale: float = 1.0


@dataclass
class RefusedPair:
    first: str
    reason: str


@dataclass
class EqualizationReport:
    pairs: list[EqualizedPair] = field(default_factory=list)
    refused: list[RefusedPair] = field(default_factory=list)
    sweeps: int = 0

    def summary(self) -> str:
        text = f"equalized {len(self.pairs)} conv pair(s) in {self.sweeps} sweep(s)"
        if self.refused:
            kinds: dict[str, int] = defaultdict(int)
            for refusal in self.refused:
                kinds[refusal.reason] += 1
            text += "; refused: " + "; ".join(f"{n}× {reason}" for reason, n in kinds.items())
        return text


def equalize_onnx(model: onnx.ModelProto) -> tuple[onnx.ModelProto, EqualizationReport]:
    """A copy of ``model`` with every eligible conv pair equalized, and what was done or refused."""
    model = copy.deepcopy(model)
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    outputs = {o.name for o in graph.output}
    report = EqualizationReport()
    pairs: list[tuple[onnx.NodeProto, onnx.NodeProto]] = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        second, path, reason = _follow(node, consumers, outputs)
        if second is None:
            report.refused.append(RefusedPair(node.name, reason))
            continue
        reason = _weights_reason(node, initializers, consumers) or _weights_reason(second, initializers, consumers)
        if reason:
            report.refused.append(RefusedPair(node.name, reason))
            continue
        pairs.append((node, second))
        report.pairs.append(EqualizedPair(node.name, second.name, path))
    arrays = {name: numpy_helper.to_array(initializers[name]).astype(np.float64)
              for first, second in pairs for node in (first, second) for name in node.input[1:] if name}
    cumulative: dict[int, np.ndarray] = {}
    for sweep in range(SCALE_ITERATIONS):
        largest_change = 0.0
        for first, second in pairs:
            scale = _scales(arrays[first.input[1]], arrays[second.input[1]])
            _apply(arrays, first, second, scale)
            cumulative[id(first)] = cumulative.get(id(first), 1.0) * scale
            largest_change = max(largest_change, float(np.abs(np.log(scale)).max(initial=0.0)))
        report.sweeps = sweep + 1
        if largest_change < _TOLERANCE:
            break
    for (first, _), entry in zip(pairs, report.pairs, strict=True):
        scale = cumulative.get(id(first), np.ones(1))
        entry.max_scale, entry.min_scale = float(np.max(scale)), float(np.min(scale))
    for name, array in arrays.items():
        initializers[name].CopyFrom(numpy_helper.from_array(array.astype(np.float32), name))
    return model, report


def _follow(conv: onnx.NodeProto, consumers, outputs) -> tuple[onnx.NodeProto | None, list[str], str]:
    """The conv that ``conv``'s output reaches through positively homogeneous ops only, or why not."""
    tensor, path = conv.output[0], list[str]()
    while True:
        readers = consumers.get(tensor, [])
        if tensor in outputs:
            return None, path, "its output is a graph output"
        if len(readers) != 1:
            kinds = sorted(r.op_type for r in readers)
            if kinds == ["Mul", "Sigmoid"]:
                return None, path, "swish (x·sigmoid(x)) is not positively homogeneous"
            if kinds == ["Mul", "Softplus"]:
                return None, path, "mish (x·tanh(softplus(x))) is not positively homogeneous"
            if not readers:
                return None, path, "its output is not read"
            return None, path, f"its output is read by {len(readers)} nodes ({', '.join(kinds)}), not one conv"
        reader = readers[0]
        if reader.op_type == "Conv" and reader.input[0] == tensor:
            return reader, path, ""
        if reader.op_type in NOT_HOMOGENEOUS:
            return None, path, NOT_HOMOGENEOUS[reader.op_type]
        if reader.op_type not in POSITIVELY_HOMOGENEOUS or reader.input[0] != tensor:
            return None, path, (f"{reader.op_type} is not known to be channel-wise and positively homogeneous; "
                                "scaling across it could change the output")
        path.append(reader.op_type)
        tensor = reader.output[0]


def _weights_reason(conv: onnx.NodeProto, initializers, consumers) -> str:
    for name in conv.input[1:]:
        if name and name not in initializers:
            return f"conv '{conv.name}' reads weights that are not initializers"
        if name and len(consumers[name]) > 1:
            return f"conv '{conv.name}' shares its weights with another node"
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    if group != 1:
        return f"conv '{conv.name}' is grouped (group={group})"
    return ""


def _scales(first_weight: np.ndarray, second_weight: np.ndarray) -> np.ndarray:
    """s_i = sqrt(r1_i / r2_i): A's output channel range r1 and B's input channel range r2 meet at sqrt(r1·r2)."""
    r1 = np.abs(first_weight).reshape(first_weight.shape[0], -1).max(axis=1)
    r2 = np.abs(second_weight).swapaxes(0, 1).reshape(second_weight.shape[1], -1).max(axis=1)
    usable = (r1 > 0) & (r2 > 0)
    return np.where(usable, np.sqrt(np.where(usable, r1, 1.0) / np.where(usable, r2, 1.0)), 1.0)


def _apply(arrays: dict[str, np.ndarray], first: onnx.NodeProto, second: onnx.NodeProto, scale: np.ndarray) -> None:
    weight = arrays[first.input[1]]
    arrays[first.input[1]] = weight / scale.reshape(-1, *[1] * (weight.ndim - 1))
    if len(first.input) > 2 and first.input[2]:
        arrays[first.input[2]] = arrays[first.input[2]] / scale
    second_weight = arrays[second.input[1]]
    arrays[second.input[1]] = second_weight * scale.reshape(1, -1, *[1] * (second_weight.ndim - 2))
