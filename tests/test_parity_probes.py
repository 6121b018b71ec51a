"""A proof that can fail: `check` finds the differences that inputs from U[0,1) at batch 1 and 1×1 hide.

Every pair below differs, but only for negative inputs, values above 1, a batch of two or more, or
an H×W above 1×1; before the probes, `check` passed each of them.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx_graphs import make_model

from foldkit.cli import main
from foldkit.parity import compare_onnx_models
from foldkit.probe import InputSpec, make_probes

IMAGE = ("x", np.float32, ["N", 3, "H", "W"])


def unary(path, op: str, **attrs):
    """A one-op model on a dynamic N×3×H×W input (Clip takes its bounds as constant inputs)."""
    inputs, initializers = ["x"], {}
    if op == "Clip":
        inputs, initializers = ["x", "lo", "hi"], {"lo": np.float32(0), "hi": np.float32(1)}
    model = make_model([helper.make_node(op, inputs, ["y"], **attrs)], [IMAGE], [("y", np.float32, None)],
                       initializers)
    path.write_bytes(model.SerializeToString())
    return path


def centred(path, axes: list[int]):
    """x − mean(x over ``axes``): zero wherever those axes have size 1, so 1×1 or batch 1 cannot tell it from 0."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=axes, keepdims=1),
             helper.make_node("Sub", ["x", "m"], ["y"])]
    path.write_bytes(make_model(nodes, [IMAGE], [("y", np.float32, None)], {}, opset=13).SerializeToString())
    return path


def zeros(path):
    nodes = [helper.make_node("Sub", ["x", "x"], ["y"])]
    path.write_bytes(make_model(nodes, [IMAGE], [("y", np.float32, None)], {}).SerializeToString())
    return path


@pytest.mark.parametrize("op", ["Relu", "Abs", "Clip"])
def test_check_fails_activations_that_agree_on_unit_inputs(tmp_path, op):
    identity = unary(tmp_path / "identity.onnx", "Identity")
    report = compare_onnx_models(unary(tmp_path / f"{op}.onnx", op), identity)
    assert not report.passed
    assert report.outputs[0].probe and "uniform [0,1)" not in report.outputs[0].probe  # found off the unit range
    assert compare_onnx_models(unary(tmp_path / "same.onnx", "Identity"), identity).passed


@pytest.mark.parametrize("axes,hidden_at", [([2, 3], "1×1"), ([0], "batch 1")])
def test_check_tries_every_dynamic_dimension_at_two_sizes(tmp_path, axes, hidden_at):
    report = compare_onnx_models(zeros(tmp_path / "zeros.onnx"), centred(tmp_path / "centred.onnx", axes))
    assert not report.passed, f"a difference hidden at {hidden_at} was not found"
    tried = " ".join(p.label for p in report.probes)
    assert "x 1x3x32x32" in tried and "x 2x3x64x64" in tried


def test_a_dimension_fixed_in_either_model_stays_fixed(tmp_path):
    fixed = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", np.float32, [1, 3, 8, 8])],
                       [("y", np.float32, None)], {})
    (tmp_path / "fixed.onnx").write_bytes(fixed.SerializeToString())
    report = compare_onnx_models(tmp_path / "fixed.onnx", unary(tmp_path / "relu.onnx", "Relu"))
    assert report.passed and {p.label.split("; ")[1] for p in report.probes} == {"x 1x3x8x8"}


def test_probes_cover_signs_magnitudes_and_sizes():
    specs = [InputSpec("x", np.float32, ("batch", 3, None, None)), InputSpec("ids", np.int64, ("batch", 5))]
    probes = make_probes(specs, seed=3)
    values = np.concatenate([p.feeds["x"].ravel() for p in probes])
    assert values.min() < -10 and values.max() > 10 and ((values > 0) & (values < 1)).any()
    assert {p.feeds["x"].shape[0] for p in probes} == {1, 2}
    assert all(p.feeds["ids"].shape[0] == p.feeds["x"].shape[0] for p in probes)  # one name, one size
    assert {p.feeds["x"].shape[2] for p in probes} == {32, 64}
    again = make_probes(specs, seed=3)
    assert all(np.array_equal(a.feeds["x"], b.feeds["x"]) for a, b in zip(probes, again, strict=True))
    declared = make_probes([InputSpec("x", np.float32, (None, 3, "h", "w"))], declared=[1, 3, 416, 416])
    assert {p.feeds["x"].shape[2] for p in declared} == {416, 32}


def test_a_known_input_range_comes_first(tmp_path):
    probes = make_probes([InputSpec("x", np.float32, (1, 4))], value_range=(-2.0, 5.0))
    assert probes[0].label.startswith("uniform [-2,5) (the input's range)") and probes[0].in_range
    assert probes[0].feeds["x"].min() >= -2 and probes[0].feeds["x"].max() < 5


def test_an_overflowing_reference_outside_the_range_is_skipped_and_said(tmp_path):
    exp = unary(tmp_path / "exp.onnx", "Exp")
    report = compare_onnx_models(exp, exp)
    skipped = [p for p in report.probes if p.status == "skipped"]
    assert report.passed and skipped and all("overflow" in p.note for p in skipped)
    assert "[-100,100)" in skipped[0].label


def _rename(path, name: str, shape_op: str | None = None):
    nodes = [helper.make_node(shape_op or "Identity", ["x"], [name])]
    path.write_bytes(make_model(nodes, [IMAGE], [(name, np.float32, None)], {}).SerializeToString())
    return path


def test_check_of_outputs_that_differ_in_names_or_shapes_exits_1(tmp_path, capsys):
    y = _rename(tmp_path / "y.onnx", "y")
    assert main(["check", str(_rename(tmp_path / "z.onnx", "z")), str(y)]) == 1
    out = capsys.readouterr().out
    assert "differ in names" in out and "['z']" in out and "['y']" in out
    assert main(["check", str(_rename(tmp_path / "flat.onnx", "y", "Flatten")), str(y)]) == 1
    out = capsys.readouterr().out
    assert "FAILED: shape 1x3072 in" in out and "1x3x32x32 in" in out


def test_check_takes_the_input_range_and_refuses_a_bad_one(tmp_path, capsys):
    relu, identity = unary(tmp_path / "relu.onnx", "Relu"), unary(tmp_path / "identity.onnx", "Identity")
    assert main(["check", str(relu), str(identity), "--input-range", "2", "3"]) == 1  # normal(0,1) still differs
    assert "uniform [2,3) (the input's range)" in capsys.readouterr().out
    assert main(["check", str(relu), str(identity), "--input-range", "3", "2"]) == 2
    assert "LO < HI" in capsys.readouterr().err


def test_fold_check_runs_the_same_probes(tmp_path):
    from onnx_graphs import conv_bn_model

    from foldkit.pipeline import fold_file

    result = fold_file(conv_bn_model(tmp_path / "m.onnx"), tmp_path / "folded.onnx", check=True)
    assert result.written and result.parity is not None and result.parity.passed
    labels = [p.label for p in result.parity.probes]
    assert len(labels) >= 3 and any(label.startswith("normal(0,1)") for label in labels)
    assert "inputs tried" in result.format()
