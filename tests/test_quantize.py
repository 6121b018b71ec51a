"""foldkit quantize: calibration sources, equalization, bias correction, the SNR gate, strict reports."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from foldkit import build_model, condition_weights, export_onnx, randomize_batchnorm
from foldkit.errors import FoldkitError
from foldkit.parity import compare_outputs, output_snr_db
from foldkit.quantize import QuantizeOptions, quantize_onnx
from foldkit.quantize.bias_correction import correct_biases
from foldkit.quantize.calibration import SyntheticCalibrationWarning, load_calibration
from foldkit.quantize.equalize import equalize_onnx
from foldkit.quantize.judge import HeldOutJudge, min_snr
from foldkit.quantize.options import BIAS_CORRECTION, EQUALIZE, WEIGHTS_7BIT
from foldkit.quantize.report import QuantizeReport
from foldkit.quantize.static import StaticQuantizer
from tests.onnx_graphs import make_model, run

SHAPE = (1, 3, 16, 16)


def _two_convs(between: list[onnx.NodeProto], rng: np.random.Generator, channels: int = 8) -> onnx.ModelProto:
    """conv a → ``between`` (reads 'a', writes 'h') → conv b, with channel ranges spread over 100×."""
    spread = np.logspace(-1, 1, channels)
    initializers = {
        "w1": (rng.standard_normal((channels, 3, 3, 3)) * spread[:, None, None, None]).astype(np.float32),
        "b1": rng.standard_normal(channels).astype(np.float32),
        "w2": (rng.standard_normal((4, channels, 3, 3)) / spread[None, :, None, None]).astype(np.float32),
        "b2": rng.standard_normal(4).astype(np.float32),
    }
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv_a", pads=[1, 1, 1, 1]), *between,
             helper.make_node("Conv", ["h", "w2", "b2"], ["y"], name="conv_b", pads=[1, 1, 1, 1])]
    return make_model(nodes, [("x", np.float32, SHAPE)], [("y", np.float32, None)], initializers)


def _ranges(model: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray]:
    arrays = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return np.abs(arrays["w1"]).max(axis=(1, 2, 3)), np.abs(arrays["w2"]).max(axis=(0, 2, 3))


# --- the SNR gate ------------------------------------------------------------------------------

def test_output_snr_db_is_signal_over_noise_power() -> None:
    reference = np.array([3.0, 4.0])
    assert output_snr_db(reference, reference + np.array([0.3, 0.4])) == pytest.approx(20.0)
    assert output_snr_db(reference, reference) == float("inf")
    assert output_snr_db(reference, np.array([np.nan, 4.0])) == float("-inf")


def test_min_snr_gate_passes_and_fails() -> None:
    rng = np.random.default_rng(0)
    reference = [rng.standard_normal((2, 50)).astype(np.float32)]
    candidate = [reference[0] + 0.01 * rng.standard_normal((2, 50)).astype(np.float32)]  # about 40 dB
    snr = compare_outputs(candidate, reference).outputs[0].snr_db
    assert 38 < snr < 42
    assert not compare_outputs(candidate, reference).passed  # the default tolerances refuse any int8-like error
    assert compare_outputs(candidate, reference, min_snr=35).passed
    failed = compare_outputs(candidate, reference, min_snr=45)
    assert not failed.passed and "SNR ≥ 45 dB" in failed.format()
    assert json.loads(json.dumps(compare_outputs(reference, reference).to_dict(), allow_nan=False))["outputs"][0][
        "snr_db"] is None  # identical: inf dB, written as null


# --- calibration sources -----------------------------------------------------------------------

def test_calibration_from_images_is_letterboxed(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for index, (height, width) in enumerate([(20, 40), (30, 30), (40, 10), (25, 25)]):
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(tmp_path / f"{index}.png")
    data = load_calibration((1, 3, 32, 32), calib=tmp_path)
    assert data.calibration.shape == (3, 3, 32, 32) and data.held_out.shape == (1, 3, 32, 32)
    assert not data.synthetic and "4 images" in data.source
    # the 20×40 image is scaled to 16×32 and padded gray above and below, like foldkit detect
    assert np.allclose(data.calibration[0, :, :8], data.calibration[0, 0, 0, 0]) and 0 <= data.calibration.min()


def test_calibration_from_npy_and_random(tmp_path: Path) -> None:
    batch = np.random.default_rng(0).random((8, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "batch.npy", batch)
    data = load_calibration((None, 3, 16, 16), calib=tmp_path / "batch.npy", held_out=3)
    np.testing.assert_array_equal(data.calibration, batch[:5])
    np.testing.assert_array_equal(data.held_out, batch[5:])
    with pytest.warns(SyntheticCalibrationWarning, match="smoke tests"):
        noise = load_calibration((1, 3, 16, 16), random_count=4, seed=3)
    assert noise.synthetic and noise.calibration.shape == (4, 3, 16, 16) and len(noise.held_out) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntheticCalibrationWarning)
        again = load_calibration((1, 3, 16, 16), random_count=4, seed=3)
    np.testing.assert_array_equal(noise.calibration, again.calibration)  # seeded


@pytest.mark.parametrize("case", ["wrong shape", "empty folder", "not an image", "no images", "integers"])
def test_bad_calibration_input_is_one_clear_error(tmp_path: Path, case: str) -> None:
    if case == "wrong shape":
        source, culprit = tmp_path / "batch.npy", "batch.npy"
        np.save(source, np.zeros((4, 3, 8, 8), np.float32))
    elif case == "integers":
        source, culprit = tmp_path / "batch.npy", "batch.npy"
        np.save(source, np.zeros((4, 3, 16, 16), np.int64))
    elif case == "empty folder":
        source = culprit = tmp_path
    elif case == "not an image":
        (tmp_path / "cat.jpg").write_text("not a jpeg")
        source, culprit = tmp_path, "cat.jpg"
    else:
        (tmp_path / "notes.txt").write_text("text")
        source = culprit = tmp_path
    expected = "no images found" if case in ("empty folder", "no images") else None
    with pytest.raises(FoldkitError, match=expected) as info:
        load_calibration((1, 3, 16, 16), calib=source)
    assert str(culprit) in str(info.value) and "\n" not in str(info.value)


# --- cross-layer equalization ------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["LeakyRelu", "Relu", "none", "MaxPool"])
def test_equalization_keeps_outputs_and_balances_ranges(activation: str) -> None:
    rng = np.random.default_rng(1)
    between = ([helper.make_node("Identity", ["a"], ["h"])] if activation == "none" else
               [helper.make_node("MaxPool", ["a"], ["h"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])]
               if activation == "MaxPool" else [helper.make_node(activation, ["a"], ["h"])])
    model = _two_convs(between, rng)
    equalized, report = equalize_onnx(model)
    assert [(p.first, p.second) for p in report.pairs] == [("conv_a", "conv_b")]
    assert [(r.first, r.reason) for r in report.refused] == [("conv_b", "its output is a graph output")]
    x = rng.random(SHAPE).astype(np.float32)
    np.testing.assert_allclose(run(equalized, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-5, atol=1e-5)
    before, after = _ranges(model), _ranges(equalized)
    assert (before[0] / before[1]).max() / (before[0] / before[1]).min() > 100  # unbalanced to start with
    np.testing.assert_allclose(after[0], after[1], rtol=1e-5)  # r1 = r2 = sqrt(r1·r2) per channel


@pytest.mark.parametrize("activation, reason", [
    ("Sigmoid", "sigmoid is not positively homogeneous"),
    ("Tanh", "tanh is not positively homogeneous"),
    ("swish", "swish (x·sigmoid(x)) is not positively homogeneous"),
    ("mish", "mish (x·tanh(softplus(x))) is not positively homogeneous"),
    ("Softsign", "Softsign is not known to be channel-wise and positively homogeneous"),
])
def test_equalization_is_refused_across_non_homogeneous_activations(activation: str, reason: str) -> None:
    if activation == "swish":
        between = [helper.make_node("Sigmoid", ["a"], ["s"]), helper.make_node("Mul", ["a", "s"], ["h"])]
    elif activation == "mish":
        between = [helper.make_node("Softplus", ["a"], ["p"]), helper.make_node("Tanh", ["p"], ["t"]),
                   helper.make_node("Mul", ["a", "t"], ["h"])]
    else:
        between = [helper.make_node(activation, ["a"], ["h"])]
    model = _two_convs(between, np.random.default_rng(2))
    equalized, report = equalize_onnx(model)
    assert not report.pairs
    assert [r.first for r in report.refused if r.reason.startswith(reason)] == ["conv_a"]
    assert [i.raw_data for i in equalized.graph.initializer] == [i.raw_data for i in model.graph.initializer]


# --- bias correction ---------------------------------------------------------------------------

def _outlier_conv(folder: Path) -> tuple[onnx.ModelProto, np.ndarray]:
    """A 1×1 conv whose every filter has one weight 100× the rest: int8 rounds the small ones coarsely,
    and the inputs' large mean turns that rounding into a per-channel shift."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((8, 32, 1, 1)) * 0.01
    weight[:, 0] = 1.0
    model = make_model([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")],
                       [("x", np.float32, [1, 32, 8, 8])], [("y", np.float32, None)],
                       {"w": weight.astype(np.float32), "b": np.zeros(8, np.float32)})
    inputs = (2.0 + 0.1 * rng.standard_normal((12, 32, 8, 8))).astype(np.float32)
    np.save(folder / "calib.npy", inputs)
    return model, inputs


def test_bias_correction_removes_the_mean_shift(tmp_path: Path) -> None:
    model, _ = _outlier_conv(tmp_path)
    data = load_calibration((1, 32, 8, 8), calib=tmp_path / "calib.npy", held_out=4)
    plain = StaticQuantizer(model, tmp_path, "plain", data, "x")
    judge = HeldOutJudge(plain.float_path, data.held_out, "x")
    plain_path = plain.quantize()
    corrected, report = correct_biases(model, onnx.load(str(plain_path)), data.calibration, "x")
    assert [layer.node for layer in report.layers] == ["conv"] and report.layers[0].max_shift > 0
    fixed = StaticQuantizer(corrected, tmp_path, "corrected", data, "x").quantize()
    before, after = min_snr(judge.errors(plain_path)), min_snr(judge.errors(fixed))
    assert after > before + 6, (before, after)


def test_quantize_pass_keeps_bias_correction_when_it_helps(tmp_path: Path) -> None:
    model, _ = _outlier_conv(tmp_path)
    onnx.save(model, tmp_path / "conv.onnx")
    report = quantize_onnx(tmp_path / "conv.onnx", tmp_path / "conv.int8.onnx", QuantizeOptions(
        calib=tmp_path / "calib.npy", held_out=4, latency_rounds=2, steps=(BIAS_CORRECTION,)))
    steps = {step.name: step for step in report.steps}
    assert steps["+ bias correction"].kept
    assert steps["+ bias correction"].min_snr_db > steps["ORT quantize_static"].min_snr_db + 6
    assert report.min_snr_db == pytest.approx(steps["+ bias correction"].min_snr_db)
    # one linear layer barely amplifies input noise: the float model's noise SNR is high but finite
    assert report.input_noise_snr_db is not None and 30 < report.input_noise_snr_db < 90
    ops = {node.op_type for node in onnx.load(str(tmp_path / "conv.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert report.latency is not None and report.latency.rounds == 2 and report.latency.ratio > 0
    json.loads(report.to_json())


# --- whole pass on Darknet networks ------------------------------------------------------------

def _exported(tmp_path: Path, conditioned: bool) -> Path:
    net = build_model("yolov3-tiny", 64, seed=0)
    if conditioned:
        condition_weights(net, torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)), seed=0)
    else:
        randomize_batchnorm(net, (2, 3, 64, 64), seed=0)
    path = tmp_path / "tiny.onnx"
    export_onnx(net, path, input_shape=(1, 3, 64, 64), fold=False)
    return path


@pytest.mark.slow  # ~15 s; an unreachable target's refusal stays in the default run (test_quantize_cli)
def test_near_dead_channels_are_flagged_and_target_30_is_reached_or_refused(tmp_path: Path) -> None:
    path = _exported(tmp_path, conditioned=False)
    with pytest.warns(SyntheticCalibrationWarning):
        report = quantize_onnx(path, tmp_path / "out.onnx", QuantizeOptions(
            calib_random=6, held_out=2, target_snr=30.0, latency_rounds=1,
            steps=(WEIGHTS_7BIT, EQUALIZE, BIAS_CORRECTION)))  # the flag and the search are the subject here
    plain = report.steps[0]
    assert plain.name == "ORT quantize_static" and plain.min_snr_db < 20  # int8 garbles it ...
    assert report.sensitivity and report.sensitivity[0].gain_db > 0  # ... and the analysis names who
    assert report.float_layers[0].node.endswith("Pad")  # PyTorch's −∞ max-pool padding stays float
    text = report.format()
    if report.passed:
        assert report.min_snr_db >= 30 and (tmp_path / "out.onnx").exists()
        assert any("target 30 dB" in layer.reason for layer in report.float_layers)
    else:
        assert not (tmp_path / "out.onnx").exists() and "cannot reach 30 dB" in text
    data = json.loads(report.to_json())
    assert data["passed"] == report.passed and data["target_snr_db"] == 30.0
    json.loads(report.to_json(), parse_constant=lambda token: pytest.fail(f"non-strict JSON token {token}"))


def test_target_snr_the_model_already_meets_keeps_everything_int8(tmp_path: Path) -> None:
    path = _exported(tmp_path, conditioned=True)
    with pytest.warns(SyntheticCalibrationWarning):
        report = quantize_onnx(path, tmp_path / "out.onnx", QuantizeOptions(
            calib_random=4, held_out=1, target_snr=-100.0, steps=(), sensitivity="never", latency_rounds=0))
    assert report.passed and report.target_reached and not report.sensitivity and report.latency is None
    assert [layer.node for layer in report.float_layers] == [report.float_layers[0].node]  # the Pad only
    assert report.batchnorm_left == [] and report.fold_summary.startswith("11 folded")


def test_report_json_is_strict_even_for_nan_outputs() -> None:
    from foldkit.quantize.judge import OutputError
    from foldkit.quantize.report import Step

    broken = [OutputError("head0", float("-inf"), float("inf"), float("nan"))]
    report = QuantizeReport("m.onnx", "o.onnx", "minmax", "x", False, steps=[Step("ORT quantize_static", broken, True)],
                            outputs=broken)
    data = json.loads(report.to_json(), parse_constant=lambda token: pytest.fail(f"non-strict JSON token {token}"))
    assert data["outputs"][0]["snr_db"] is None and data["min_snr_db"] is None
    assert data["flags"] and "head0" in data["flags"][0]


def test_unknown_exclude_and_method_are_clear_errors(tmp_path: Path) -> None:
    model, _ = _outlier_conv(tmp_path)
    onnx.save(model, tmp_path / "conv.onnx")
    with pytest.raises(FoldkitError, match="not in the folded model: nope"):
        quantize_onnx(tmp_path / "conv.onnx", tmp_path / "o.onnx", QuantizeOptions(
            calib=tmp_path / "calib.npy", exclude=["nope"]))
    with pytest.raises(FoldkitError, match="unknown calibration method 'best'"):
        quantize_onnx(tmp_path / "conv.onnx", tmp_path / "o.onnx", QuantizeOptions(
            calib=tmp_path / "calib.npy", method="best"))


def test_quantized_model_path_gives_bench_an_int8_file(tmp_path: Path) -> None:
    from foldkit.quantize import quantized_model_path

    model, _ = _outlier_conv(tmp_path)
    onnx.save(model, tmp_path / "conv.onnx")
    (tmp_path / "out").mkdir()
    path = quantized_model_path(tmp_path / "conv.onnx", tmp_path / "out" / "conv.int8.onnx",
                                calib=tmp_path / "calib.npy")
    assert path == tmp_path / "out" / "conv.int8.onnx" and path.is_file()
    weights = [n for n in onnx.load(str(path)).graph.node if n.op_type == "DequantizeLinear"]
    assert weights and run(onnx.load(str(path)), {"x": np.ones((1, 32, 8, 8), np.float32)})[0].shape == (1, 8, 8, 8)
