"""The ONNX fold pass: each pattern exact, each refusal explained, the graph still valid."""

from collections import Counter

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx_graphs import bn_node, bn_params, make_model, max_rel_error, run

from foldkit.fold.onnx import fold_onnx
from foldkit.fold.report import FOLDED, NOT_FOLDABLE, SKIPPED

F32 = np.float32


def _ops(model):
    return Counter(n.op_type for n in model.graph.node)


def _fold_and_compare(model, feeds, *, rtol=1e-5, reference=False, **kwargs):
    folded, report = fold_onnx(model, **kwargs)
    onnx.checker.check_model(folded, full_check=True)
    onnx.shape_inference.infer_shapes(folded, strict_mode=True)
    assert folded.opset_import == model.opset_import and folded.ir_version == model.ir_version
    error = max_rel_error(run(folded, feeds, reference=reference), run(model, feeds, reference=reference))
    assert error <= rtol, error
    names = [n for node in folded.graph.node for n in node.output if n]
    assert len(names) == len(set(names))
    return folded, report


def _conv_bn(rng, *, cin=3, cout=5, opset=17, bias=True, pads=(1, 1, 1, 1), dtype=F32, bn_dtype=None, bn_attrs=None,
             group=1, tiny=True):
    weight = rng.standard_normal((cout, cin // group, 3, 3)).astype(dtype)
    inits = {"W": weight, **bn_params(rng, cout, bn_dtype or dtype, tiny)}
    inputs = ["x", "W"]
    if bias:
        inits["B"] = rng.standard_normal(cout).astype(dtype)
        inputs.append("B")
    nodes = [helper.make_node("Conv", inputs, ["c"], name="conv", pads=list(pads), group=group),
             bn_node("c", "y", **(bn_attrs or {}))]
    return make_model(nodes, [("x", dtype, [2, cin, 7, 7])], [("y", dtype, [2, cout, 7, 7])], inits, opset)


@pytest.mark.parametrize("opset", [7, 9, 11, 14, 15, 22])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_bn_across_opsets(opset, bias):
    rng = np.random.default_rng(opset)
    model = _conv_bn(rng, opset=opset, bias=bias)
    feeds = {"x": rng.random((2, 3, 7, 7), dtype=F32)}
    folded, report = _fold_and_compare(model, feeds)
    assert _ops(folded) == {"Conv": 1}
    entry = report.entries[0]
    assert entry.status == FOLDED and entry.pattern == "Conv → BatchNormalization" and entry.target == "conv"
    assert entry.max_amplification > 30
    assert [o.name for o in folded.graph.output] == ["y"]


@pytest.mark.parametrize("group", [1, 2, 4])
def test_conv_transpose_with_groups(group):
    rng = np.random.default_rng(group)
    cin, cout = 4, 6 if group != 4 else 8
    inits = {"W": rng.standard_normal((cin, cout // group, 3, 3)).astype(F32), **bn_params(rng, cout)}
    nodes = [helper.make_node("ConvTranspose", ["x", "W"], ["c"], name="deconv", group=group, strides=[2, 2]),
             bn_node("c", "y")]
    model = make_model(nodes, [("x", F32, [1, cin, 4, 4])], [("y", F32, None)], inits)
    folded, report = _fold_and_compare(model, {"x": rng.random((1, cin, 4, 4), dtype=F32)})
    assert report.entries[0].status == FOLDED and _ops(folded) == {"ConvTranspose": 1}


@pytest.mark.parametrize("alpha,beta,trans_a,trans_b,c_shape", [
    (1.0, 1.0, 0, 0, (6,)), (0.5, 2.0, 0, 1, (1, 6)), (1.5, 0.25, 1, 1, (4, 6)), (2.0, 3.0, 0, 0, ()),
    (1.0, 0.0, 0, 1, (6,)), (1.0, 1.0, 0, 0, None), (0.7, 1.3, 0, 1, (4, 1)),
])
def test_gemm_bn_honours_alpha_beta_and_transposes(alpha, beta, trans_a, trans_b, c_shape):
    rng = np.random.default_rng(11)
    a_shape = (5, 4) if trans_a else (4, 5)
    inits = {"B": rng.standard_normal((6, 5) if trans_b else (5, 6)).astype(F32), **bn_params(rng, 6)}
    inputs = ["a", "B"]
    if c_shape is not None:
        inits["C"] = rng.standard_normal(c_shape).astype(F32)
        inputs.append("C")
    nodes = [helper.make_node("Gemm", inputs, ["g"], name="gemm", alpha=alpha, beta=beta, transA=trans_a,
                              transB=trans_b),
             bn_node("g", "y")]
    model = make_model(nodes, [("a", F32, list(a_shape))], [("y", F32, [4, 6])], inits)
    folded, report = _fold_and_compare(model, {"a": rng.standard_normal(a_shape).astype(F32)})
    assert report.entries[0].status == FOLDED and _ops(folded) == {"Gemm": 1}


@pytest.mark.parametrize("with_add", [False, True])
def test_matmul_and_matmul_add_bn(with_add):
    rng = np.random.default_rng(12)
    inits = {"M": rng.standard_normal((5, 6)).astype(F32), **bn_params(rng, 6)}
    nodes = [helper.make_node("MatMul", ["a", "M"], ["m"], name="matmul")]
    if with_add:
        inits["bias"] = rng.standard_normal(6).astype(F32)
        nodes.append(helper.make_node("Add", ["m", "bias"], ["ma"], name="add"))
    nodes.append(bn_node("ma" if with_add else "m", "y"))
    model = make_model(nodes, [("a", F32, [3, 5])], [("y", F32, [3, 6])], inits)
    folded, report = _fold_and_compare(model, {"a": rng.standard_normal((3, 5)).astype(F32)})
    assert report.entries[0].status == FOLDED
    assert _ops(folded) == ({"MatMul": 1, "Add": 1} if with_add else {"Gemm": 1})


def test_matmul_on_3d_input_is_refused():
    rng = np.random.default_rng(13)
    inits = {"M": rng.standard_normal((5, 6)).astype(F32), **bn_params(rng, 6)}
    nodes = [helper.make_node("MatMul", ["a", "M"], ["m"], name="matmul"), bn_node("m", "y")]
    model = make_model(nodes, [("a", F32, [2, 6, 5])], [("y", F32, [2, 6, 6])], inits)
    folded, report = fold_onnx(model)
    assert report.entries[0].status == SKIPPED and "not known to be 2-D" in report.entries[0].reason


@pytest.mark.parametrize("pads,folds", [((0, 0, 0, 0), True), ((1, 1, 1, 1), False)])
@pytest.mark.parametrize("group", [1, 3])
def test_bn_before_conv_only_without_padding(pads, folds, group):
    rng = np.random.default_rng(14)
    inits = {"W": rng.standard_normal((6, 6 // group, 3, 3)).astype(F32), "B": rng.standard_normal(6).astype(F32),
             **bn_params(rng, 6)}
    nodes = [bn_node("x", "n"),
             helper.make_node("Conv", ["n", "W", "B"], ["y"], name="conv", pads=list(pads), group=group)]
    model = make_model(nodes, [("x", F32, [1, 6, 6, 6])], [("y", F32, None)], inits)
    folded, report = _fold_and_compare(model, {"x": rng.random((1, 6, 6, 6), dtype=F32)})
    entry = report.entries[0]
    if folds:
        assert entry.status == FOLDED and entry.pattern == "BatchNormalization → Conv" and _ops(folded) == {"Conv": 1}
    else:
        assert entry.status == SKIPPED and "pads" in entry.reason and "not exact at the borders" in entry.reason


def test_conv_mul_add_from_tf2onnx_style_graphs():
    rng = np.random.default_rng(15)
    inits = {"W": rng.standard_normal((5, 3, 3, 3)).astype(F32),
             "scale": rng.uniform(0.5, 2, (1, 5, 1, 1)).astype(F32),
             "shift": rng.standard_normal((5, 1, 1)).astype(F32),
             "scalar": np.array(1.5, dtype=F32)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "scale"], ["m"], name="mul"),
             helper.make_node("Add", ["shift", "m"], ["a"], name="add"),
             helper.make_node("Mul", ["a", "scalar"], ["y"], name="mul2")]
    model = make_model(nodes, [("x", F32, [1, 3, 6, 6])], [("y", F32, [1, 5, 6, 6])], inits)
    folded, report = _fold_and_compare(model, {"x": rng.random((1, 3, 6, 6), dtype=F32)})
    assert [(e.node, e.status) for e in report.entries] == [("mul", FOLDED), ("add", FOLDED), ("mul2", FOLDED)]
    assert _ops(folded) == {"Conv": 1}


def test_mul_by_a_spatial_constant_is_left_alone_and_unreported():
    rng = np.random.default_rng(16)
    inits = {"W": rng.standard_normal((2, 1, 1, 1)).astype(F32), "mask": rng.random((1, 1, 4, 4)).astype(F32)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"]), helper.make_node("Mul", ["c", "mask"], ["y"])]
    model = make_model(nodes, [("x", F32, [1, 1, 4, 4])], [("y", F32, [1, 2, 4, 4])], inits)
    folded, report = fold_onnx(model)
    assert report.entries == [] and _ops(folded) == {"Conv": 1, "Mul": 1}


def test_shared_weight_is_folded_into_a_private_copy():
    rng = np.random.default_rng(17)
    inits = {"W": rng.standard_normal((4, 4, 1, 1)).astype(F32), **bn_params(rng, 4)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c1"], name="conv1"), bn_node("c1", "y1"),
             helper.make_node("Conv", ["x", "W"], ["y2"], name="conv2")]
    model = make_model(nodes, [("x", F32, [1, 4, 3, 3])], [("y1", F32, None), ("y2", F32, None)], inits)
    folded, report = _fold_and_compare(model, {"x": rng.random((1, 4, 3, 3), dtype=F32)})
    entry = report.entries[0]
    assert entry.status == FOLDED and "private copy" in entry.reason
    conv2 = next(n for n in folded.graph.node if n.name == "conv2")
    original = numpy_helper.to_array(next(i for i in folded.graph.initializer if i.name == conv2.input[1]))
    np.testing.assert_array_equal(original, inits["W"])  # the other conv's weight is untouched


def test_conv_output_read_twice_is_refused():
    rng = np.random.default_rng(18)
    inits = {"W": rng.standard_normal((4, 3, 1, 1)).astype(F32), **bn_params(rng, 4)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"), bn_node("c", "b"),
             helper.make_node("Add", ["b", "c"], ["y"], name="residual")]
    model = make_model(nodes, [("x", F32, [1, 3, 3, 3])], [("y", F32, None)], inits)
    folded, report = _fold_and_compare(model, {"x": rng.random((1, 3, 3, 3), dtype=F32)})
    assert report.entries[0].status == SKIPPED and "also read by Add 'residual'" in report.entries[0].reason


def test_conv_output_that_is_a_graph_output_is_refused():
    rng = np.random.default_rng(19)
    model = _conv_bn(rng)
    model.graph.output.append(helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, None))
    folded, report = fold_onnx(model)
    assert report.entries[0].status == SKIPPED and "'c' is a graph output" in report.entries[0].reason
    assert _ops(folded)["BatchNormalization"] == 1


def test_training_mode_bn_is_refused():
    rng = np.random.default_rng(20)
    model = _conv_bn(rng, opset=15)
    model.graph.node[1].attribute.append(helper.make_attribute("training_mode", 1))
    _, report = fold_onnx(model)
    assert report.entries[0].status == SKIPPED and "training_mode=1" in report.entries[0].reason


def test_bn_with_used_optional_outputs_is_refused():
    rng = np.random.default_rng(21)
    model = _conv_bn(rng, opset=9)
    model.graph.node[1].output.extend(["rm", "rv"])
    model.graph.output.append(helper.make_tensor_value_info("rm", onnx.TensorProto.FLOAT, None))
    _, report = fold_onnx(model)
    assert "optional outputs (rm) are used" in report.entries[0].reason


def test_non_constant_parameters_are_refused_and_the_flag_allows_initializer_inputs():
    rng = np.random.default_rng(22)
    model = _conv_bn(rng)
    # an initializer also listed as a graph input: a default the caller may override
    model.graph.input.append(helper.make_tensor_value_info("gamma", onnx.TensorProto.FLOAT, [5]))
    _, report = fold_onnx(model)
    assert report.entries[0].status == SKIPPED
    assert ("'gamma' is a graph input" in report.entries[0].reason
            and "--allow-initializer-inputs" in report.entries[0].reason)
    feeds = {"x": rng.random((2, 3, 7, 7), dtype=F32)}
    folded, report = _fold_and_compare(model, feeds, allow_initializer_inputs=True)
    assert report.entries[0].status == FOLDED
    # a weight that is a plain graph input cannot fold at all
    model = _conv_bn(rng)
    model.graph.initializer.remove(next(i for i in model.graph.initializer if i.name == "W"))
    model.graph.input.append(helper.make_tensor_value_info("W", onnx.TensorProto.FLOAT, [5, 3, 3, 3]))
    _, report = fold_onnx(model)
    assert "Conv weight 'W' is a graph input, not a constant" in report.entries[0].reason


def test_channel_mismatch_is_refused():
    rng = np.random.default_rng(23)
    inits = {"W": rng.standard_normal((4, 3, 1, 1)).astype(F32), **bn_params(rng, 4)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("Reshape", ["c", "shape"], ["r"]), bn_node("r", "y")]
    inits["shape"] = np.array([1, 4, 9], dtype=np.int64)
    model = make_model(nodes, [("x", F32, [1, 3, 3, 3])], [("y", F32, None)], inits)
    _, report = fold_onnx(model)
    assert report.entries[0].status == SKIPPED and "comes from Reshape" in report.entries[0].reason


def test_weights_in_constant_nodes_fold():
    rng = np.random.default_rng(24)
    model = _conv_bn(rng, bias=False)
    weight = next(i for i in model.graph.initializer if i.name == "W")
    model.graph.initializer.remove(weight)
    model.graph.node.insert(0, helper.make_node("Constant", [], ["W"], value=weight))
    folded, report = _fold_and_compare(model, {"x": rng.random((2, 3, 7, 7), dtype=F32)})
    assert report.entries[0].status == FOLDED and _ops(folded) == {"Conv": 1}


def test_per_sample_norms_are_reported_not_foldable():
    rng = np.random.default_rng(25)
    inits = {"W": rng.standard_normal((4, 3, 1, 1)).astype(F32), "s": np.ones(4, F32), "b": np.zeros(4, F32)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"]),
             helper.make_node("InstanceNormalization", ["c", "s", "b"], ["y"], name="inorm")]
    model = make_model(nodes, [("x", F32, [1, 3, 3, 3])], [("y", F32, None)], inits)
    _, report = fold_onnx(model)
    assert report.entries[0].status == NOT_FOLDABLE and "its own statistics" in report.entries[0].reason


@pytest.mark.parametrize("dtype,bn_dtype", [(np.float16, np.float16), (np.float16, np.float32)])
def test_fp16_fold_is_rounded_once_element_by_element(dtype, bn_dtype):
    rng = np.random.default_rng(26)
    model = _conv_bn(rng, opset=15, dtype=dtype, bn_dtype=bn_dtype)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    folded, report = fold_onnx(model)
    out = {i.name: numpy_helper.to_array(i) for i in folded.graph.initializer}
    conv = folded.graph.node[0]
    s = inits["gamma"].astype(np.float64) / np.sqrt(inits["var"].astype(np.float64) + 1e-5)
    expected_w = (inits["W"].astype(np.float64) * s[:, None, None, None]).astype(dtype)
    expected_b = ((inits["B"].astype(np.float64) - inits["mean"].astype(np.float64)) * s + inits["beta"]).astype(dtype)
    assert out[conv.input[1]].dtype == dtype and out[conv.input[2]].dtype == dtype
    np.testing.assert_array_equal(out[conv.input[1]], expected_w)
    np.testing.assert_array_equal(out[conv.input[2]], expected_b)
    feeds = {"x": rng.random((2, 3, 7, 7)).astype(dtype)}
    assert max_rel_error(run(folded, feeds), run(model, feeds)) < 5e-3


@pytest.mark.parametrize("dtype", [np.float64, ml_dtypes.bfloat16])
def test_fp64_and_bf16_models_fold(dtype):
    rng = np.random.default_rng(27)
    model = _conv_bn(rng, opset=22, dtype=dtype)
    feeds = {"x": rng.random((2, 3, 7, 7)).astype(dtype)}
    folded, report = _fold_and_compare(model, feeds, reference=True, rtol=1e-6 if dtype == np.float64 else 2e-2)
    assert report.entries[0].status == FOLDED
    assert numpy_helper.to_array(folded.graph.initializer[0]).dtype == np.dtype(dtype)


def test_amplification_warning_in_fp16():
    rng = np.random.default_rng(28)
    model = _conv_bn(rng, opset=15, dtype=np.float16)
    var = next(i for i in model.graph.initializer if i.name == "var")
    values = numpy_helper.to_array(var).copy()
    values[0] = 0.0  # amplification 1/√1e-5 ≈ 316
    var.CopyFrom(numpy_helper.from_array(values, "var"))
    _, report = fold_onnx(model)
    assert report.entries[0].max_amplification > 300
    assert any("less accurate" in w for w in report.warnings)


def test_input_model_is_not_modified():
    rng = np.random.default_rng(29)
    model = _conv_bn(rng)
    before = model.SerializeToString()
    fold_onnx(model)
    assert model.SerializeToString() == before


def test_matmul_add_bias_that_makes_the_product_3d_is_refused():
    # [6,5]·[5,6] + bias [2,1,6] is [2,6,6]: the BN's channels are then the product's rows, not its columns
    rng = np.random.default_rng(30)
    inits = {"M": rng.standard_normal((5, 6)).astype(F32), "bias": rng.standard_normal((2, 1, 6)).astype(F32),
             **bn_params(rng, 6)}
    nodes = [helper.make_node("MatMul", ["a", "M"], ["m"], name="matmul"),
             helper.make_node("Add", ["m", "bias"], ["ma"], name="add"), bn_node("ma", "y")]
    model = make_model(nodes, [("a", F32, [6, 5])], [("y", F32, [2, 6, 6])], inits)
    folded, report = _fold_and_compare(model, {"a": rng.standard_normal((6, 5)).astype(F32)})
    entry = report.entries[0]
    assert entry.status == SKIPPED and "bias of shape [2, 1, 6] does not broadcast per column" in entry.reason
    assert _ops(folded) == {"MatMul": 1, "Add": 1, "BatchNormalization": 1}


@pytest.mark.parametrize("bias_shape", [(6,), (1, 6), (4, 6), ()])
def test_matmul_add_bias_of_any_2d_broadcast_folds_exactly(bias_shape):
    rng = np.random.default_rng(31)
    inits = {"M": rng.standard_normal((5, 6)).astype(F32), "bias": rng.standard_normal(bias_shape).astype(F32),
             **bn_params(rng, 6)}
    nodes = [helper.make_node("MatMul", ["a", "M"], ["m"], name="matmul"),
             helper.make_node("Add", ["bias", "m"], ["ma"], name="add"), bn_node("ma", "y")]
    model = make_model(nodes, [("a", F32, [4, 5])], [("y", F32, [4, 6])], inits)
    folded, report = _fold_and_compare(model, {"a": rng.standard_normal((4, 5)).astype(F32)})
    assert report.entries[0].status == FOLDED and report.entries[0].target == "matmul + add"
    assert _ops(folded) == {"MatMul": 1, "Add": 1}


@pytest.mark.parametrize("random_op,inputs,attrs", [
    ("RandomNormal", [], {"shape": [1, 4]}),
    ("RandomUniform", [], {"shape": [1, 4], "seed": 1.0}),
    ("RandomNormalLike", ["c"], {}),
    ("RandomUniformLike", ["c"], {"dtype": onnx.TensorProto.FLOAT}),
    ("Bernoulli", ["p"], {}),
])
def test_random_ops_are_never_evaluated_at_fold_time(random_op, inputs, attrs):
    # a random op over constants must draw at every run: evaluating it once would freeze one draw
    inits = {"c": np.ones((1, 4), F32), "p": np.full((1, 4), 0.5, F32), "k": np.full((1, 4), 2.0, F32)}
    nodes = [helper.make_node(random_op, inputs, ["r"], name="random", **attrs),
             helper.make_node("Identity", ["k"], ["k2"], name="alias"),  # deterministic: evaluated
             helper.make_node("Add", ["x", "r"], ["xr"]), helper.make_node("Mul", ["xr", "k2"], ["y"])]
    model = make_model(nodes, [("x", F32, [1, 4])], [("y", F32, [1, 4])], inits)
    folded, report = fold_onnx(model)
    assert _ops(folded) == {random_op: 1, "Add": 1, "Mul": 1}
    assert report.notes == ["evaluated 1 constant node(s) into initializers"]


def test_bn_before_conv_whose_output_is_also_a_graph_output_is_refused():
    rng = np.random.default_rng(32)
    inits = {"W": rng.standard_normal((4, 4, 1, 1)).astype(F32), **bn_params(rng, 4)}
    nodes = [bn_node("x", "n"), helper.make_node("Conv", ["n", "W"], ["y"], name="conv")]
    model = make_model(nodes, [("x", F32, [1, 4, 3, 3])], [("y", F32, None), ("n", F32, None)], inits)
    folded, report = _fold_and_compare(model, {"x": rng.random((1, 4, 3, 3), dtype=F32)})
    onnx.checker.check_model(folded, full_check=True)
    assert report.entries[0].status == SKIPPED and "'n' is a graph output" in report.entries[0].reason
    assert _ops(folded) == {"BatchNormalization": 1, "Conv": 1}


def test_bn_before_conv_with_another_reader_is_not_that_pattern():
    rng = np.random.default_rng(33)
    inits = {"W": rng.standard_normal((4, 4, 1, 1)).astype(F32), **bn_params(rng, 4)}
    nodes = [bn_node("x", "n"), helper.make_node("Conv", ["n", "W"], ["c"], name="conv"),
             helper.make_node("Relu", ["n"], ["r"], name="relu"), helper.make_node("Add", ["c", "r"], ["y"])]
    model = make_model(nodes, [("x", F32, [1, 4, 3, 3])], [("y", F32, None)], inits)
    folded, report = _fold_and_compare(model, {"x": rng.random((1, 4, 3, 3), dtype=F32)})
    # the norm feeds the conv and a Relu: folding it into the conv would leave the Relu without an input
    assert report.entries[0].status == SKIPPED
    assert report.entries[0].reason == "its input 'x' is a graph input, not the output of a linear op"
    assert _ops(folded) == {"BatchNormalization": 1, "Conv": 1, "Relu": 1, "Add": 1}
