"""Learned rounding (AdaRound) and the float-layers step, on seeded tiny layers and models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from foldkit.quantize import QuantizeOptions, quantize_onnx
from foldkit.quantize.adaround import Grid, learn_rounding
from foldkit.quantize.adaround_model import adaround_onnx, patches_at
from foldkit.quantize.calibration import load_calibration
from foldkit.quantize.options import FLOAT_LAYERS
from foldkit.quantize.static import StaticQuantizer
from tests.onnx_graphs import make_model


def _relu_patches(rng: np.random.Generator, mixing: np.ndarray, count: int) -> np.ndarray:
    """Correlated, non-negative rows, like a conv's im2col inputs after a ReLU (one distribution per ``mixing``)."""
    return np.maximum(rng.standard_normal((count, len(mixing))) @ mixing + 0.3, 0)


@pytest.mark.parametrize("reduce_range", [False, True])
def test_learned_rounding_lowers_the_output_error_on_unseen_inputs(reduce_range: bool) -> None:
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((16, 8, 3, 3)) * 0.1).astype(np.float32)
    grid = Grid.of(weight, reduce_range)
    mixing = rng.standard_normal((72, 72)) / np.sqrt(72)
    train, test = _relu_patches(rng, mixing, 2048), _relu_patches(rng, mixing, 2048)
    flat = weight.reshape(16, -1).astype(np.float64)
    result = learn_rounding(weight, grid, train, train @ flat.T, seed=0)
    nearest = grid.nearest(weight)
    assert result.learned_mse < 0.8 * result.nearest_mse  # on what it learned from ...

    def error(integers: np.ndarray) -> float:
        residual = test @ (integers * grid.scale[:, None]).T - test @ flat.T
        return float(np.mean(np.square(residual - residual.mean(axis=0))))

    assert error(result.integers) < 0.8 * error(nearest)  # ... and on inputs it never saw
    # every weight is one of its two grid neighbours, and the weights that set each scale stay put
    ratio = grid.ratio(weight)
    assert np.all((result.integers == np.floor(ratio)) | (result.integers == np.floor(ratio) + 1)
                  | (np.abs(nearest) == grid.qmax))
    assert np.all(np.abs(result.integers).max(axis=1) == grid.qmax)
    assert 0 < result.flipped < 0.5


def _two_conv_model(rng: np.random.Generator) -> onnx.ModelProto:
    initializers = {"w1": (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
                    "b1": np.zeros(8, np.float32),
                    "w2": (rng.standard_normal((4, 8, 3, 3)) * 0.2).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["h"], name="relu"),
             helper.make_node("Conv", ["h", "w2"], ["y"], name="conv_b", strides=[2, 2], pads=[1, 0, 1, 0])]
    return make_model(nodes, [("x", np.float32, [1, 3, 12, 12])], [("y", np.float32, None)], initializers)


def _weight_integers(path: Path) -> dict[str, np.ndarray]:
    """The int8 weights of a QDQ model, by the float weight they quantize."""
    model = onnx.load(str(path))
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {node.output[0].removesuffix("_DequantizeLinear_Output"): values[node.input[0]].astype(np.int64)
            for node in model.graph.node
            if node.op_type == "DequantizeLinear" and values.get(node.input[0], np.zeros(0)).ndim == 4}


@pytest.mark.parametrize("reduce_range", [False, True])
def test_ort_writes_exactly_the_learned_integers(tmp_path: Path, reduce_range: bool) -> None:
    rng = np.random.default_rng(1)
    model = _two_conv_model(rng)
    data = load_calibration((1, 3, 12, 12), calib=_npy(tmp_path, rng.random((10, 3, 12, 12))), held_out=2)
    plain = StaticQuantizer(model, tmp_path, "plain", data, "x", reduce_range=reduce_range).quantize()
    heard: list[str] = []
    rounded, report = adaround_onnx(model, onnx.load(str(plain)), data.calibration, "x",
                                    reduce_range=reduce_range, iterations=200, progress=heard.append)
    assert [layer.node for layer in report.layers] == ["conv_a", "conv_b"]
    assert [line.split(" (")[0] for line in heard] == ["learned rounding 1/2: conv_a", "learned rounding 2/2: conv_b"]
    written = _weight_integers(StaticQuantizer(rounded, tmp_path, "rounded", data, "x",
                                               reduce_range=reduce_range).quantize())
    originals = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    learned = {i.name: numpy_helper.to_array(i) for i in rounded.graph.initializer}
    flipped = 0
    for name in ("w1", "w2"):
        grid = Grid.of(originals[name], reduce_range)  # the grid of the original weights ...
        integers = np.round(grid.ratio(learned[name])).reshape(originals[name].shape)
        assert np.abs(grid.ratio(learned[name]) - integers.reshape(len(integers), -1)).max() < 1e-4  # ... holds them
        assert np.array_equal(written[name], integers)  # and ORT's quantizer writes those very integers
        flipped += int((integers != grid.nearest(originals[name]).reshape(integers.shape)).sum())
    assert flipped > 0  # not merely nearest rounding
    assert "b2" not in learned and any(name.endswith("_bias_adarounded") for name in learned)


def _npy(folder: Path, values: np.ndarray) -> Path:
    path = folder / "calib.npy"
    np.save(path, values.astype(np.float32))
    return path


def test_patches_are_the_convolution_im2col_rows() -> None:
    rng = np.random.default_rng(2)
    model = _two_conv_model(rng)
    x = rng.standard_normal((8, 12, 12))
    weight = numpy_helper.to_array(model.graph.initializer[2]).astype(np.float64)
    node = model.graph.node[2]  # stride 2, padded top and bottom only
    torch = pytest.importorskip("torch")
    expected = torch.nn.functional.conv2d(torch.from_numpy(np.pad(x, ((0, 0), (1, 1), (0, 0))))[None],
                                          torch.from_numpy(weight), stride=2)[0].numpy()
    rows, cols = np.meshgrid(np.arange(expected.shape[1]), np.arange(expected.shape[2]), indexing="ij")
    patches = patches_at(x, node, (3, 3), (rows.ravel(), cols.ravel()))
    assert np.allclose(patches @ weight.reshape(4, -1).T, expected.reshape(4, -1).T, atol=1e-12)


def _outlier_first_layer() -> tuple[onnx.ModelProto, np.ndarray]:
    """conv_a's filters each hold one weight 100× the rest, which int8 rounds to a few steps; conv_b is benign."""
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((8, 16, 1, 1)) * 0.01
    w1[:, 0] = 1.0
    initializers = {"w1": w1.astype(np.float32), "b1": np.zeros(8, np.float32),
                    "w2": (rng.standard_normal((4, 8, 3, 3)) * 0.3).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv_a"),
             helper.make_node("Conv", ["a", "w2"], ["y"], name="conv_b", pads=[1, 1, 1, 1])]
    model = make_model(nodes, [("x", np.float32, [1, 16, 8, 8])], [("y", np.float32, None)], initializers)
    inputs = rng.standard_normal((16, 16, 8, 8)) * np.r_[0.01, np.ones(15)][None, :, None, None]
    return model, inputs


@pytest.mark.parametrize("budget", [100.0, 0.01])
def test_float_layers_step_keeps_the_sensitive_layer_float_within_the_budget(tmp_path: Path, budget: float) -> None:
    model, inputs = _outlier_first_layer()
    onnx.save(model, tmp_path / "m.onnx")
    report = quantize_onnx(tmp_path / "m.onnx", tmp_path / "m.int8.onnx", QuantizeOptions(
        calib=_npy(tmp_path, inputs), held_out=6, steps=(FLOAT_LAYERS,), latency_rounds=0,
        latency_budget=budget))
    assert report.sensitivity[0].node == "conv_a" and report.sensitivity[0].gain_db > 6
    tried = [step for step in report.steps if step.name == "+ conv_a in float"]
    assert tried and "conv_a in float" in tried[0].note
    written = onnx.load(str(tmp_path / "m.int8.onnx"))
    producers = {out: node.op_type for node in written.graph.node for out in node.output}
    conv_a = next(node for node in written.graph.node if node.name == "conv_a")
    if budget > 1:
        assert tried[0].kept and [layer.node for layer in report.float_layers] == ["conv_a"]
        assert "float-layers step" in report.float_layers[0].reason and "p50" in report.float_layers[0].reason
        assert producers.get(conv_a.input[1]) is None  # its weights are the float initializer, no DequantizeLinear
        assert report.min_snr_db > report.steps[0].min_snr_db + 6
    else:
        assert not tried[0].kept and "over budget" in tried[0].note and not report.float_layers
        assert producers[conv_a.input[1]] == "DequantizeLinear"


def test_float_layers_step_leaves_the_last_int8_layer_int8(tmp_path: Path) -> None:
    """A one-conv model: floating its conv gains the most and, with a generous budget, fits it (it did on an AMX
    Xeon at 1×); but the whole model in float is no int8 model, so the step stops and says why."""
    from tests.test_quantize import _outlier_conv

    model, _ = _outlier_conv(tmp_path)
    onnx.save(model, tmp_path / "conv.onnx")
    report = quantize_onnx(tmp_path / "conv.onnx", tmp_path / "conv.int8.onnx", QuantizeOptions(
        calib=tmp_path / "calib.npy", steps=(FLOAT_LAYERS,), latency_rounds=0, latency_budget=100.0))
    assert report.sensitivity[0].node == "conv" and report.sensitivity[0].gain_db > 0
    assert not report.float_layers and "float layers: conv stays int8, the model's last int8 layer" in report.notes
    written = onnx.load(str(tmp_path / "conv.int8.onnx"))
    assert [n.op_type for n in written.graph.node].count("DequantizeLinear") >= 2  # input and weights


def test_float_layers_step_ranks_a_shortlist_of_a_large_model(tmp_path: Path) -> None:
    """yolov3-tiny has 13 int8 convs, over the rank-every-layer limit: the first conv (reads the image), the two
    head convs (write the outputs) and the 4 with the worst-rounded inputs are ranked, not all 13, and the
    notes say so; the report's sensitivity table stays for a full ranking."""
    from foldkit.darknet.export import export_darknet
    from foldkit.quantize.step_float_layers import RANK_EVERY_LAYER_UP_TO, SHORTLIST_WORST_INPUTS

    export_darknet("yolov3-tiny", tmp_path / "tiny.onnx", img_size=64, fold=True)
    inputs = np.random.default_rng(0).random((10, 3, 64, 64), dtype=np.float32)
    report = quantize_onnx(tmp_path / "tiny.onnx", tmp_path / "tiny.int8.onnx", QuantizeOptions(
        calib=_npy(tmp_path, inputs), held_out=4, steps=(FLOAT_LAYERS,), latency_rounds=0, sensitivity="never"))
    assert RANK_EVERY_LAYER_UP_TO < 13
    ranked = [note for note in report.notes if note.startswith("float layers: ranked")]
    assert len(ranked) == 1 and f"ranked {3 + SHORTLIST_WORST_INPUTS} of 13 int8 layers" in ranked[0]
    model = onnx.load(str(tmp_path / "tiny.onnx"))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    heads = [n.name for n in model.graph.node if n.op_type == "Conv" and set(n.output) & {"head0", "head1"}]
    assert len(heads) == 2 and all(f"{name} " in ranked[0] for name in [convs[0], *heads])
    assert not report.sensitivity
