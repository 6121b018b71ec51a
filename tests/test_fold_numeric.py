"""Numbers a fold must refuse: a norm that is no normalization, NaN/Inf anywhere, an overflowing fold.

Each case goes through every way in (``fold_onnx``, ``fold_module``, ``foldkit fold``, the Darknet
direct converter): the node is reported as skipped with the reason, nothing non-finite is
written, and the report is strict JSON.
"""

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from onnx_graphs import bn_node, make_model
from torch import nn

from foldkit import build_model, fold_module
from foldkit.cli import main
from foldkit.darknet.to_onnx import darknet_to_onnx
from foldkit.darknet.weights import save_weights
from foldkit.fold.affine import UnsafeFoldError, batchnorm_scale_shift, fold_affine, fold_batchnorm
from foldkit.fold.onnx import fold_onnx
from foldkit.fold.report import FOLDED, SKIPPED, FoldEntry, FoldReport
from foldkit.onnxio.files import save_onnx


def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


# name → (what to break, words the reason must hold); channel 2 of 4 is broken unless said otherwise
CASES = {
    "negative variance": ("var", -1.0, "variance + epsilon is not positive"),
    "NaN mean": ("mean", np.nan, "mean is not finite"),
    "Inf gamma": ("gamma", np.inf, "scale (gamma) is not finite"),
    "var = eps = 0": ("var", 0.0, "variance + epsilon is not positive"),
    "NaN conv weight": ("W", np.nan, "NaN/Inf"),
    "fp16 overflow": ("W", 60000.0, "overflow float16"),
}


def _onnx_case(case: str) -> onnx.ModelProto:
    what, value, _ = CASES[case]
    dtype = np.float16 if case == "fp16 overflow" else np.float32
    rng = np.random.default_rng(7)
    params = {"W": rng.standard_normal((4, 3, 1, 1)), "gamma": rng.uniform(0.5, 1.5, 4),
              "beta": rng.standard_normal(4), "mean": rng.standard_normal(4), "var": rng.uniform(0.5, 2, 4)}
    if case == "fp16 overflow":
        params["gamma"][2] = 300.0  # |s| ≈ 300: 60000·300 overflows float16's 65504
    params[what].reshape(-1)[2 * (params[what].size // 4)] = value
    inits = {k: v.astype(dtype) for k, v in params.items()}
    epsilon = 0.0 if case == "var = eps = 0" else 1e-5
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"), bn_node("c", "y", epsilon=epsilon)]
    return make_model(nodes, [("x", dtype, [1, 3, 2, 2])], [("y", dtype, [1, 4, 2, 2])], inits)


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _assert_unchanged(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    """Nothing was folded and no tensor was written: every value is the input's, NaN where it was NaN."""
    assert [n.op_type for n in after.graph.node] == ["Conv", "BatchNormalization"]
    old, new = _initializers(before), _initializers(after)
    assert old.keys() == new.keys()
    for name in old:
        np.testing.assert_array_equal(new[name], old[name])  # NaN only where the input had it


@pytest.mark.parametrize("case", CASES)
def test_fold_onnx_refuses_unsafe_numbers(case):
    model = _onnx_case(case)
    folded, report = fold_onnx(model)
    (entry,) = report.entries
    assert entry.status == SKIPPED and CASES[case][2] in entry.reason, entry.reason
    assert entry.max_amplification is None and not report.folded
    _assert_unchanged(model, folded)
    data = _strict_json(report.to_json())
    assert data["entries"][0]["status"] == "skipped" and CASES[case][2] in data["entries"][0]["reason"]


@pytest.mark.parametrize("case", CASES)
def test_fold_command_reports_unsafe_numbers_and_writes_no_fold(case, tmp_path, capsys):
    source, out, report_path = tmp_path / "in.onnx", tmp_path / "out.onnx", tmp_path / "report.json"
    model = _onnx_case(case)
    save_onnx(model, source)
    assert main(["fold", str(source), "-o", str(out), "--report", str(report_path)]) == 0
    printed = capsys.readouterr().out
    assert "0 folded, 1 not folded" in printed and "skipped" in printed and CASES[case][2] in printed
    _assert_unchanged(model, onnx.load(str(out)))
    entry = _strict_json(report_path.read_text())["entries"][0]
    assert (entry["status"], entry["node"]) == ("skipped", "bn") and CASES[case][2] in entry["reason"]


def _torch_case(case: str) -> nn.Sequential:
    what, value, _ = CASES[case]
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4)).eval()
    bn = model[1]
    with torch.no_grad():
        bn.running_var.uniform_(0.5, 2)
        bn.running_mean.normal_()
        if case == "fp16 overflow":
            model.half()
            bn.weight[2] = 300.0
        tensor = {"var": bn.running_var, "mean": bn.running_mean, "gamma": bn.weight, "W": model[0].weight}[what]
        tensor.view(-1)[2 * (tensor.numel() // 4)] = value
        if case == "var = eps = 0":
            bn.eps = 0.0
    return model


@pytest.mark.parametrize("case", CASES)
def test_fold_module_refuses_unsafe_numbers(case):
    model = _torch_case(case)
    folded, report = fold_module(model)
    (entry,) = report.entries
    assert entry.status == SKIPPED and CASES[case][2] in entry.reason, entry.reason
    assert isinstance(folded[1], nn.BatchNorm2d) and folded[0].bias is None  # the pair left as it was
    torch.testing.assert_close(folded[0].weight, model[0].weight, equal_nan=True)
    _strict_json(report.to_json())


def test_darknet_direct_converter_writes_an_unsafe_layer_unfolded(tmp_path):
    model = build_model("yolov3-tiny", 64, seed=0)
    with torch.no_grad():
        model.layers[2].norm.running_var[5] = -1.0
    save_weights(model, tmp_path / "w.weights")
    direct = darknet_to_onnx("yolov3-tiny", tmp_path / "w.weights", img_size=64)
    skipped = direct.fold_report.not_folded
    assert [(e.node, e.status) for e in skipped] == [("layer2.bn", SKIPPED)]
    assert "variance + epsilon is not positive" in skipped[0].reason
    assert len(direct.fold_report.folded) == 10  # yolov3-tiny's other BN layers still fold
    assert [n.op_type for n in direct.graph_model.graph.node].count("BatchNormalization") == 1
    assert all(np.isfinite(array).all() for _, array in direct.arrays)


def test_the_refusals_come_from_the_shared_arithmetic():
    ones = np.ones(2)
    with pytest.raises(UnsafeFoldError, match="variance \\+ epsilon is not positive in 1 channel"):
        batchnorm_scale_shift(ones, ones, ones, np.array([1.0, -0.5]), eps=1e-5)
    with pytest.raises(UnsafeFoldError, match="√variance \\+ epsilon is not positive"):
        batchnorm_scale_shift(ones, ones, ones, np.array([1.0, -0.5]), eps=1e-5, eps_outside_sqrt=True)
    with pytest.raises(UnsafeFoldError, match="overflow float16 in 1 value"):
        fold_batchnorm(np.array([1.0, 60000.0], np.float16).reshape(2, 1, 1, 1), None,
                       (np.array([1.0, 300.0]), ones, ones, ones), 0.0)
    safe = fold_affine(np.ones((2, 1, 1, 1), np.float32), None, np.array([2.0, 3.0]), np.zeros(2))
    assert safe.refusal == "" and safe.weight.reshape(-1).tolist() == [2.0, 3.0]
    bias_nan = fold_affine(np.ones((2, 1, 1, 1), np.float32), np.array([0.0, np.nan]), ones, np.zeros(2))
    assert "folded bias would hold 1 NaN/Inf" in bias_nan.refusal


def test_report_json_is_strict_even_for_non_finite_numbers():
    report = FoldReport()
    report.add(FoldEntry("bn", "BatchNormalization", FOLDED, max_amplification=float("inf")))
    report.add(FoldEntry("bn2", "BatchNormalization", FOLDED, max_amplification=float("nan")))
    data = _strict_json(report.to_json())
    assert [e["max_amplification"] for e in data["entries"]] == [None, None]
    assert [e["status"] for e in data["entries"]] == ["folded", "folded"]
