"""Bias correction: remove the per-channel mean shift that int8 weights add to each conv's output.

Rounding a conv's weights W to W_q adds conv(x, W_q − W) to its output, and because the inputs
after a ReLU or a LeakyReLU have a non-zero mean, that term has a non-zero mean per output
channel: a systematic shift, not noise, that the layers after it amplify. Following Nagel et al.
(2019) (the empirical variant), the shift is measured on the calibration inputs as the quantized
model sees them (its own, already quantized, activations) and subtracted from the float model's
bias; the model is then quantized again. The expectation is exact, padding included: for each
kernel tap, the mean of the inputs that tap sees over every output position.

Conv only (the layers of the networks foldkit converts); other ops are left as they are.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from foldkit.runtime import create_session


@dataclass
class CorrectedLayer:
    node: str
    max_shift: float  # largest |mean shift| removed, in output units
    output_rms: float  # root mean square of the output's channel means, for scale


@dataclass
class BiasCorrectionReport:
    layers: list[CorrectedLayer] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # node → why

    def summary(self) -> str:
        largest = max(self.layers, key=lambda layer: layer.max_shift, default=None)
        text = f"bias-corrected {len(self.layers)} conv(s)"
        if largest is not None:
            text += f"; largest shift {largest.max_shift:.3g} in '{largest.node}'"
        return text + (f"; skipped {len(self.skipped)}" if self.skipped else "")


def correct_biases(
    float_model: onnx.ModelProto, qdq_model: onnx.ModelProto, inputs: np.ndarray, input_name: str
) -> tuple[onnx.ModelProto, BiasCorrectionReport]:
    """A copy of ``float_model`` whose conv biases absorb the mean shift measured in ``qdq_model``."""
    report = BiasCorrectionReport()
    producers = {out: node for node in qdq_model.graph.node for out in node.output}
    q_initializers = {init.name: init for init in qdq_model.graph.initializer}
    convs = {}
    for node in qdq_model.graph.node:
        if node.op_type != "Conv":
            continue
        delta_source = producers.get(node.input[1])
        if delta_source is None or delta_source.op_type != "DequantizeLinear":
            report.skipped[node.name] = "its weights are not quantized"
            continue
        if any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for a in node.attribute):
            report.skipped[node.name] = "auto_pad is set"
            continue
        convs[node.name] = (node, _dequantize(delta_source, q_initializers))
    input_means = _mean_inputs(qdq_model, [node.input[0] for node, _ in convs.values()], inputs, input_name)

    corrected = copy.deepcopy(float_model)
    initializers = {init.name: init for init in corrected.graph.initializer}
    for node in corrected.graph.node:
        if node.name not in convs:
            continue
        q_node, quantized_weight = convs.pop(node.name)
        weight = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float64)
        shift = _mean_shift(quantized_weight - weight, input_means[q_node.input[0]], q_node)
        bias = shift_conv_bias(corrected, node, initializers, shift, "corrected")
        channel_means = _mean_shift(weight, input_means[q_node.input[0]], q_node) + bias
        report.layers.append(CorrectedLayer(node.name, float(np.abs(shift).max()),
                                            float(np.sqrt(np.mean(np.square(channel_means))))))
    for name in convs:
        report.skipped[name] = "not found in the float model"
    return corrected, report


def shift_conv_bias(model: onnx.ModelProto, node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto],
                    shift: np.ndarray, suffix: str) -> np.ndarray:
    """Subtract ``shift`` from the conv's bias (adding a bias ``{node}_bias_{suffix}`` when it has none);
    return the bias before."""
    name = node.input[2] if len(node.input) > 2 and node.input[2] else ""
    bias = numpy_helper.to_array(initializers[name]).astype(np.float64) if name else np.zeros(len(shift))
    if not name:
        name = f"{node.name}_bias_{suffix}"
        model.graph.initializer.append(onnx.TensorProto(name=name))
        initializers[name] = model.graph.initializer[-1]
        node.input.extend([""] * (3 - len(node.input)))
        node.input[2] = name
    initializers[name].CopyFrom(numpy_helper.from_array((bias - shift).astype(np.float32), name))
    return bias


def _dequantize(node: onnx.NodeProto, initializers) -> np.ndarray:
    """What a weight DequantizeLinear produces, computed here in float64."""
    values = numpy_helper.to_array(initializers[node.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float64)
    zero = (numpy_helper.to_array(initializers[node.input[2]]).astype(np.float64)
            if len(node.input) > 2 and node.input[2] else np.zeros_like(scale))
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * values.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (values - zero) * scale


def _mean_inputs(model: onnx.ModelProto, names: list[str], inputs: np.ndarray,
                 input_name: str) -> dict[str, np.ndarray]:
    """Per tensor in ``names``: its mean over the samples (C×H×W), as ``model`` computes it."""
    probe = copy.deepcopy(model)
    known = {o.name for o in probe.graph.output}
    wanted = list(dict.fromkeys(names))
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted if n not in known)
    session = create_session(probe, providers="cpu", opt_level="disable")
    sums: dict[str, np.ndarray] = {}
    for sample in inputs:
        values = session.run(wanted, {input_name: sample[None]})
        for name, value in zip(wanted, values, strict=True):
            total = value.astype(np.float64).sum(axis=0)
            sums[name] = sums[name] + total if name in sums else total
    return {name: total / len(inputs) for name, total in sums.items()}


def _attribute(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == name), default)


def _tap_means(mean_map: np.ndarray, conv: onnx.NodeProto, kernel: tuple[int, ...]) -> np.ndarray:
    """M[i, p, q]: the mean of input channel i under kernel tap (p, q) over every output position."""
    kh, kw = kernel
    top, left, bottom, right = _attribute(conv, "pads", [0, 0, 0, 0])
    sh, sw = _attribute(conv, "strides", [1, 1])
    dh, dw = _attribute(conv, "dilations", [1, 1])
    padded = np.pad(mean_map, ((0, 0), (top, bottom), (left, right)))
    out_h = (padded.shape[1] - dh * (kh - 1) - 1) // sh + 1
    out_w = (padded.shape[2] - dw * (kw - 1) - 1) // sw + 1
    taps = np.empty((mean_map.shape[0], kh, kw))
    for p in range(kh):
        for q in range(kw):
            window = padded[:, p * dh:p * dh + sh * (out_h - 1) + 1:sh, q * dw:q * dw + sw * (out_w - 1) + 1:sw]
            taps[:, p, q] = window.mean(axis=(1, 2))
    return taps


def _mean_shift(delta: np.ndarray, mean_map: np.ndarray, conv: onnx.NodeProto) -> np.ndarray:
    """E[conv(x, ΔW)] per output channel (bias excluded), groups included."""
    groups = next((a.i for a in conv.attribute if a.name == "group"), 1)
    taps = _tap_means(mean_map, conv, delta.shape[2:])
    per_group_in = delta.shape[1]
    per_group_out = delta.shape[0] // groups
    return np.concatenate([
        np.einsum("cipq,ipq->c", delta[g * per_group_out:(g + 1) * per_group_out],
                  taps[g * per_group_in:(g + 1) * per_group_in])
        for g in range(groups)
    ])
