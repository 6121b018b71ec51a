"""The ONNX fold on real exports and random graphs, and `foldkit fold` end to end."""

import json
import warnings
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from onnx_graphs import bn_node, bn_params, make_model, max_rel_error
from onnx_graphs import run as run_graph

from foldkit import build_model, randomize_batchnorm
from foldkit.cli import main
from foldkit.fold.onnx import fold_onnx
from foldkit.onnxio.files import save_onnx
from foldkit.runtime import create_session, random_inputs, run


def _torch_export(model, size, dynamo: bool) -> onnx.ModelProto:
    x = torch.rand(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            return torch.onnx.export(model, (x,), dynamo=True, optimize=False, opset_version=18,
                                     verbose=False).model_proto
        import io

        buffer = io.BytesIO()
        torch.onnx.export(model, (x,), buffer, dynamo=False, do_constant_folding=False, opset_version=17)
        return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize("name,size", [("yolov3-tiny", 64), pytest.param("darknet53", 64, marks=pytest.mark.slow),
                                       pytest.param("yolov3", 64, marks=pytest.mark.slow)])
@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)])  # dynamo: the optional route
def test_every_bn_of_torch_exports_folds(name, size, dynamo):
    model = build_model(name, size, seed=0)
    randomize_batchnorm(model, (2, 3, size, size), seed=0)
    exported = _torch_export(model, size, dynamo)
    n_bn = Counter(n.op_type for n in exported.graph.node)["BatchNormalization"]
    assert n_bn == sum(1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    folded, report = fold_onnx(exported)
    assert len(report.folded) == n_bn and not report.not_folded, report.format()
    assert Counter(n.op_type for n in folded.graph.node)["BatchNormalization"] == 0
    session = create_session(exported, providers="cpu", opt_level="disable")
    feeds = random_inputs(session, seed=1)
    after = create_session(folded, providers="cpu", opt_level="disable")
    assert max_rel_error(list(run(after, feeds).values()), list(run(session, feeds).values())) <= 1e-4


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["Conv", "ConvTranspose", "Gemm"]),
    groups=st.sampled_from([1, 2, 3]),
    per_group_in=st.integers(1, 3),
    per_group_out=st.integers(1, 3),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    dtype=st.sampled_from([np.float32, np.float16]),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_linear_bn_graphs_match_in_ort(kind, groups, per_group_in, per_group_out, kernel, stride, dilation,
                                              dtype, bias, seed):
    rng = np.random.default_rng(seed)
    cin, cout = per_group_in * groups, per_group_out * groups
    inits = bn_params(rng, cout, dtype)
    if kind == "Gemm":
        inits["W"] = rng.standard_normal((cout, cin)).astype(dtype)
        attrs, x_shape = {"transB": 1, "alpha": float(rng.uniform(0.5, 2))}, [2, cin]
    else:
        shape = (cout, per_group_in, kernel, kernel) if kind == "Conv" else (cin, per_group_out, kernel, kernel)
        inits["W"] = rng.standard_normal(shape).astype(dtype)
        attrs = {"group": groups, "strides": [stride, stride], "dilations": [dilation, dilation]}
        x_shape = [1, cin, 6, 6]
    inputs = ["x", "W"]
    if bias:
        inits["B"] = rng.standard_normal(cout).astype(dtype)
        inputs.append("B")
    nodes = [helper.make_node(kind, inputs, ["l"], name="linear", **attrs), bn_node("l", "y")]
    model = make_model(nodes, [("x", dtype, x_shape)], [("y", dtype, None)], inits, opset=15)
    folded, report = fold_onnx(model)
    assert report.entries[0].status == "folded", report.format()
    feeds = {"x": rng.random(x_shape).astype(dtype)}
    tolerance = 1e-5 if dtype == np.float32 else 1e-2
    assert max_rel_error(run_graph(folded, feeds), run_graph(model, feeds)) <= tolerance


@pytest.fixture(scope="module")
def unfolded_tiny(tmp_path_factory):
    model = build_model("yolov3-tiny", 64, seed=3)
    randomize_batchnorm(model, (2, 3, 64, 64), seed=3)
    path = tmp_path_factory.mktemp("fold") / "tiny.onnx"
    save_onnx(_torch_export(model, 64, dynamo=False), path)
    return path


def test_fold_command_checks_reports_and_never_touches_the_input(unfolded_tiny, tmp_path, capsys):
    before = unfolded_tiny.read_bytes()
    out, report = tmp_path / "folded.onnx", tmp_path / "report.json"
    assert main(["fold", str(unfolded_tiny), "-o", str(out), "--report", str(report), "--check"]) == 0
    printed = capsys.readouterr().out
    assert "BatchNormalization" in printed and "PASSED" in printed and "11 folded, 0 not folded" in printed
    assert unfolded_tiny.read_bytes() == before
    data = json.loads(report.read_text())
    assert data["folded"] == 11 and all(e["max_amplification"] > 0 for e in data["entries"])
    assert Counter(n.op_type for n in onnx.load(str(out)).graph.node)["BatchNormalization"] == 0


def test_fold_command_parity_failure_writes_nothing(unfolded_tiny, tmp_path, capsys):
    out = tmp_path / "folded.onnx"
    assert main(["fold", str(unfolded_tiny), "-o", str(out), "--check", "--rtol", "0", "--atol", "0"]) == 1
    assert "FAILED" in capsys.readouterr().out and not out.exists()


def test_fold_command_refuses_to_overwrite_its_input(unfolded_tiny, capsys):
    assert main(["fold", str(unfolded_tiny), "-o", str(unfolded_tiny)]) == 2
    assert "refusing to overwrite the input" in capsys.readouterr().err


def test_external_data_models_fold(tmp_path):
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"), bn_node("c", "y")]
    inits = {"W": rng.standard_normal((64, 32, 3, 3)).astype(np.float32), **bn_params(rng, 64)}
    model = make_model(nodes, [("x", np.float32, [1, 32, 5, 5])], [("y", np.float32, None)], inits)
    source = tmp_path / "ext.onnx"
    onnx.save_model(model, str(source), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").stat().st_size > 64 * 32 * 9 * 4
    out = tmp_path / "out.onnx"
    assert main(["fold", str(source), "-o", str(out), "--check"]) == 0
    assert Counter(n.op_type for n in onnx.load(str(out)).graph.node) == {"Conv": 1}


def test_lazy_open_and_save_round_trips(unfolded_tiny, tmp_path):
    from foldkit.onnxio.lazy import open_lazy

    with open_lazy(unfolded_tiny) as lazy:
        assert len(lazy.store.locations) >= 13  # the conv weights stay in the file
        assert all(not t.raw_data for t in lazy.model.graph.initializer if t.name in lazy.store.locations)
        lazy.save(tmp_path / "copy.onnx")
    assert onnx.load(str(tmp_path / "copy.onnx")) == onnx.load(str(unfolded_tiny))


def test_lazy_fold_equals_in_memory_fold(unfolded_tiny, tmp_path):
    from foldkit.onnxio.lazy import open_lazy

    in_memory, _ = fold_onnx(onnx.load(str(unfolded_tiny)))
    with open_lazy(unfolded_tiny) as lazy:
        fold_onnx(lazy.model, inplace=True, store=lazy.store)
        lazy.save(tmp_path / "lazy.onnx")
    assert onnx.load(str(tmp_path / "lazy.onnx")) == in_memory


def test_the_pass_takes_a_lazy_model_and_no_paths(unfolded_tiny, tmp_path):
    from foldkit.onnxio.lazy import open_lazy

    in_memory, report = fold_onnx(onnx.load(str(unfolded_tiny)))
    with open_lazy(unfolded_tiny) as lazy:
        folded, lazy_report = fold_onnx(lazy)
        assert folded is lazy.model  # folded in place: its untouched tensors stay in the file
        lazy.save(tmp_path / "lazy.onnx")
    assert onnx.load(str(tmp_path / "lazy.onnx")) == in_memory
    assert lazy_report.to_dict() == report.to_dict() and len(report.folded) == 11
    with pytest.raises(TypeError, match="open_for_fold"):  # file reading is the pipeline's job
        fold_onnx(str(unfolded_tiny))


def test_not_onnx_files_fall_back_to_the_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not protobuf \xff\xff\xff")
    assert main(["fold", str(bad), "-o", str(tmp_path / "o.onnx")]) == 2
    assert "not a valid ONNX model" in capsys.readouterr().err
    assert not (tmp_path / "o.onnx").exists()
