"""The int8 model in OpenVINO's form: the Q/DQ pair between a conv and its activation removed, nothing else."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from foldkit.quantize import QuantizeOptions, quantize_onnx
from foldkit.quantize.fused_form import fuse_conv_activations
from foldkit.runtime import OpenVINOBackend, create_session, openvino_available
from tests.onnx_graphs import make_model


def _float_model() -> tuple[onnx.ModelProto, np.ndarray]:
    """x → conv_a → LeakyReLU → conv_c → y, and beside it x → conv_b → LeakyReLU → z with conv_b's output also a
    graph output. conv_a's bias pushes most of its output negative (a wide pre-activation range, as trained
    Darknet convs have); conv_c sums 64 of its channels, so their rounding, not y's own, dominates y's error."""
    rng = np.random.default_rng(7)
    weights = {"wa": rng.standard_normal((64, 3, 3, 3)).astype(np.float32) * 2, "ba": np.full(64, -4.0, np.float32),
               "wb": rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "bb": np.zeros(4, np.float32),
               "wc": rng.standard_normal((4, 64, 1, 1)).astype(np.float32) * 0.3, "bc": np.zeros(4, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("LeakyRelu", ["a"], ["a_act"], name="act_a", alpha=0.1),
             helper.make_node("Conv", ["a_act", "wc", "bc"], ["y"], name="conv_c"),
             helper.make_node("Conv", ["x", "wb", "bb"], ["b"], name="conv_b"),
             helper.make_node("LeakyRelu", ["b"], ["z"], name="act_b", alpha=0.1)]
    model = make_model(nodes, [("x", np.float32, [1, 3, 16, 16])],
                       [("y", np.float32, None), ("b", np.float32, None), ("z", np.float32, None)], weights)
    return model, rng.random((24, 3, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fused")
    model, inputs = _float_model()
    onnx.save(model, folder / "m.onnx")
    np.save(folder / "calib.npy", inputs)
    quantize_onnx(folder / "m.onnx", folder / "m.int8.onnx", QuantizeOptions(
        calib=folder / "calib.npy", held_out=8, steps=(), latency_rounds=0, sensitivity="never"))
    return folder, onnx.load(str(folder / "m.int8.onnx")), inputs[-8:]


def _input_producer(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    """The node whose output the node ``name`` reads as its first input."""
    producers = {out: node for node in model.graph.node for out in node.output}
    return producers[next(n for n in model.graph.node if n.name == name).input[0]]


def test_only_the_pair_between_a_conv_and_its_own_activation_goes(quantized) -> None:
    _, qdq, _ = quantized
    fused, convs = fuse_conv_activations(qdq)
    assert convs == ["conv_a"]  # conv_b's output is also a graph output: its pair stays
    assert _input_producer(fused, "act_a").name == "conv_a"  # the activation reads the conv itself
    assert _input_producer(fused, "act_b").op_type == "DequantizeLinear"
    removed = len(qdq.graph.node) - len(fused.graph.node)
    assert removed == 2 and len(qdq.graph.initializer) - len(fused.graph.initializer) == 2  # its scale, zero point
    onnx.checker.check_model(fused, full_check=True)
    again, more = fuse_conv_activations(fused)
    assert more == [] and len(again.graph.node) == len(fused.graph.node)


def test_the_fused_form_rounds_once_after_the_activation_and_so_is_closer_to_float(quantized) -> None:
    folder, qdq, held_out = quantized
    fused, _ = fuse_conv_activations(qdq)

    def outputs(model) -> np.ndarray:
        session = create_session(model, providers="cpu", opt_level="all")
        return np.concatenate([session.run(["y"], {"x": x[None]})[0] for x in held_out]).astype(np.float64)

    reference = outputs(onnx.load(str(folder / "m.onnx")))
    errors = {name: np.mean((outputs(model) - reference) ** 2) for name, model in (("qdq", qdq), ("fused", fused))}
    assert errors["fused"] < 0.8 * errors["qdq"], errors  # measured 0.63×: one rounding of conv_a fewer


@pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed (pip install 'foldkit[openvino]')")
def test_openvino_runs_the_fused_form_with_int8_convolutions_and_ort_s_numbers(quantized, tmp_path) -> None:
    _, qdq, held_out = quantized
    fused, _ = fuse_conv_activations(qdq)
    onnx.save(fused, tmp_path / "fused.onnx")
    backend = OpenVINOBackend(tmp_path / "fused.onnx", precision="default")
    assert set(backend.record()["convolution_precisions"]) <= {"u8", "i8"}  # not a float conv in between
    session = create_session(fused, providers="cpu", opt_level="all")
    ours = np.concatenate([backend.run({"x": x[None]})["y"] for x in held_out]).astype(np.float64)
    orts = np.concatenate([session.run(["y"], {"x": x[None]})[0] for x in held_out]).astype(np.float64)
    noise = np.sum((ours - orts) ** 2)  # the same int8 model; the two runtimes may round a little differently
    assert noise == 0 or 10 * np.log10(np.sum(orts**2) / noise) > 30, noise
