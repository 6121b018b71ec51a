"""AdaRound on an ONNX model: every plain conv's weights replaced by learned points of ORT's int8 grid.

For each conv whose weights the int8 model quantizes (one group, explicit pads), input patches
are sampled at seeded random output positions of every calibration input, as the current int8
model feeds them to the layer, and the layer's rounding is learned on them
(:mod:`foldkit.quantize.adaround`): the float weights on those inputs are the target, so each
layer answers for its own weights' error only. All layers learn from the same int8 run (one run,
not one per layer); a target that included the upstream error (Nagel's asymmetric variant) would
have every layer compensate the same upstream error at once, and on yolov3-tiny that cost 6 dB.
The float weights are rewritten as s·q, exactly on the grid ORT's per-channel s8 quantizer puts
them on, so the quantized model carries the learned integers; each bias absorbs the mean shift
the learned rounding leaves on the sampled inputs (bias correction, for the new weights).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from foldkit.quantize.adaround import Grid, learn_rounding
from foldkit.quantize.bias_correction import shift_conv_bias
from foldkit.quantize.options import Progress
from foldkit.runtime import create_session

POSITIONS = 4096  # sampled output positions per layer, over all calibration inputs


@dataclass
class RoundedLayer:
    node: str
    weights: int
    nearest_mse: float  # the layer's output MSE on the sampled positions, nearest rounding
    learned_mse: float
    flipped: float  # fraction of weights rounded away from the nearest


@dataclass
class AdaRoundReport:
    layers: list[RoundedLayer] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # node → why
    seconds: float = 0.0

    def summary(self) -> str:
        ratios = [layer.learned_mse / layer.nearest_mse for layer in self.layers if layer.nearest_mse > 0]
        text = f"learned rounding of {len(self.layers)} conv(s) in {self.seconds:.0f} s"
        if ratios:
            text += f"; layer output MSE × {min(ratios):.2f}–{max(ratios):.2f} of nearest rounding's"
        return text + (f"; skipped {len(self.skipped)}" if self.skipped else "")


def adaround_onnx(float_model: onnx.ModelProto, qdq_model: onnx.ModelProto, inputs: np.ndarray, input_name: str,
                  *, reduce_range: bool, seed: int = 0, iterations: int | None = None,
                  progress: Progress | None = None) -> tuple[onnx.ModelProto, AdaRoundReport]:
    """A copy of ``float_model`` whose conv weights are learned int8 grid points (ORT's grid for them).

    ``qdq_model``: ``float_model`` quantized, whose activations the layers learn on. ``progress``
    hears one line per layer: on a large network this step runs for minutes.
    """
    started = time.perf_counter()
    report = AdaRoundReport()
    float_convs = {node.name: node for node in float_model.graph.node if node.op_type == "Conv"}
    convs = _eligible(qdq_model, float_convs, report)
    patches = _sample_patches(qdq_model, convs, _kernels(float_model, convs), inputs, input_name,
                              np.random.default_rng(seed))
    rounded = copy.deepcopy(float_model)
    initializers = {init.name: init for init in rounded.graph.initializer}
    for node in (node for node in rounded.graph.node if node.name in patches):
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if progress:
            progress(f"learned rounding {len(report.layers) + 1}/{len(patches)}: {node.name} ({weight.size} weights)")
        grid = Grid.of(weight, reduce_range)
        target = patches[node.name] @ weight.reshape(len(weight), -1).T.astype(np.float64)
        options = {} if iterations is None else {"iterations": iterations}
        result = learn_rounding(weight, grid, patches[node.name], target, seed=seed, **options)
        initializers[node.input[1]].CopyFrom(numpy_helper.from_array(
            grid.weights(result.integers, weight.shape), node.input[1]))
        shift_conv_bias(rounded, node, initializers, result.bias_shift, "adarounded")
        report.layers.append(RoundedLayer(node.name, int(weight.size), result.nearest_mse, result.learned_mse,
                                          result.flipped))
    report.seconds = time.perf_counter() - started
    return rounded, report


def _eligible(qdq_model: onnx.ModelProto, float_convs: dict[str, onnx.NodeProto],
              report: AdaRoundReport) -> list[onnx.NodeProto]:
    """The int8 model's convs with quantized weights that this module can see as a matrix product."""
    producers = {out: node for node in qdq_model.graph.node for out in node.output}
    chosen = []
    for node in qdq_model.graph.node:
        if node.op_type != "Conv":
            continue
        source = producers.get(node.input[1])
        why = ("its weights are not quantized" if source is None or source.op_type != "DequantizeLinear"
               else "grouped conv" if _attribute(node, "group", [1]) != [1]
               else "auto_pad is set" if any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET")
                                             for a in node.attribute)
               else "not found in the float model" if node.name not in float_convs else "")
        if why:
            report.skipped[node.name] = why
        else:
            chosen.append(node)
    return chosen


def _attribute(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    return next((list(a.ints) if a.ints else [a.i] for a in node.attribute if a.name == name), default)


def _kernels(model: onnx.ModelProto, convs: list[onnx.NodeProto]) -> dict[str, tuple[int, int]]:
    dims = {init.name: init.dims for init in model.graph.initializer}
    by_name = {node.name: node for node in model.graph.node}
    return {n.name: (int(dims[by_name[n.name].input[1]][2]), int(dims[by_name[n.name].input[1]][3])) for n in convs}


def _sample_patches(qdq_model: onnx.ModelProto, convs: list[onnx.NodeProto], kernels: dict[str, tuple[int, int]],
                    inputs: np.ndarray, input_name: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per conv: im2col rows (C·kh·kw) of its int8 input at :data:`POSITIONS` sampled output positions."""
    run = _Probe(qdq_model, [node.input[0] for node in convs], input_name)
    per_input = -(-POSITIONS // len(inputs))
    rows: dict[str, list[np.ndarray]] = {node.name: [] for node in convs}
    for sample in inputs:
        values = run(sample)
        for node in convs:
            x = values[node.input[0]]
            out_h, out_w = _output_size(x.shape[1:], node, kernels[node.name])
            picks = rng.choice(out_h * out_w, size=min(per_input, out_h * out_w), replace=False)
            rows[node.name].append(patches_at(x, node, kernels[node.name], np.divmod(picks, out_w)))
    return {name: np.concatenate(pieces) for name, pieces in rows.items()}


class _Probe:
    """Runs a model and returns the named intermediate tensors (first sample of the batch)."""

    def __init__(self, model: onnx.ModelProto, names: list[str], input_name: str) -> None:
        probe = copy.deepcopy(model)
        known = {o.name for o in probe.graph.output}
        self.names = list(dict.fromkeys(names))
        probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in self.names if n not in known)
        self.session = create_session(probe, providers="cpu", opt_level="disable")
        self.input_name = input_name

    def __call__(self, sample: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.names, {self.input_name: sample[None]})
        return {name: value[0] for name, value in zip(self.names, values, strict=True)}


def _output_size(size: tuple[int, ...], node: onnx.NodeProto, kernel: tuple[int, int]) -> tuple[int, int]:
    top, left, bottom, right = _attribute(node, "pads", [0, 0, 0, 0])
    sh, sw = _attribute(node, "strides", [1, 1])
    dh, dw = _attribute(node, "dilations", [1, 1])
    return ((size[0] + top + bottom - dh * (kernel[0] - 1) - 1) // sh + 1,
            (size[1] + left + right - dw * (kernel[1] - 1) - 1) // sw + 1)


def patches_at(x: np.ndarray, node: onnx.NodeProto, kernel: tuple[int, int],
               positions: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """im2col rows of ``x`` (C×H×W) for the conv ``node`` at output ``positions`` (rows, cols): N × C·kh·kw."""
    top, left, bottom, right = _attribute(node, "pads", [0, 0, 0, 0])
    sh, sw = _attribute(node, "strides", [1, 1])
    dh, dw = _attribute(node, "dilations", [1, 1])
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right)))
    ys = positions[0][:, None] * sh + np.arange(kernel[0]) * dh
    xs = positions[1][:, None] * sw + np.arange(kernel[1]) * dw
    taps = padded[:, ys[:, :, None], xs[:, None, :]]  # C × N × kh × kw
    return taps.transpose(1, 0, 2, 3).reshape(len(ys), -1).astype(np.float64)
