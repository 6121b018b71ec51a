"""``foldkit fold --simplify``: onnx-simplifier after the fold, always proven by parity."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper
from onnx_graphs import make_model

from foldkit.cli import main


def _conv_bn_with_dead_weight(path) -> None:
    """Conv → BN → Relu → Identity, plus a Shape/Gather chain onnxsim evaluates away."""
    rng = np.random.default_rng(0)
    channels = 4
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"]),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("Identity", ["r"], ["y"]),
    ]
    initializers = {
        "w": rng.standard_normal((channels, 3, 3, 3)).astype(np.float32),
        "g": rng.uniform(0.5, 1.5, channels).astype(np.float32),
        "b": rng.standard_normal(channels).astype(np.float32),
        "m": rng.standard_normal(channels).astype(np.float32),
        "v": rng.uniform(1e-3, 2.0, channels).astype(np.float32),
    }
    model = make_model(nodes, [("x", np.float32, [1, 3, 8, 8])], [("y", np.float32, [1, channels, 8, 8])],
                       initializers)
    onnx.save(model, path)


def test_simplify_folds_then_simplifies_and_proves_parity(tmp_path, capsys):
    source, target = tmp_path / "in.onnx", tmp_path / "out.onnx"
    _conv_bn_with_dead_weight(source)
    before = source.read_bytes()
    assert main(["fold", str(source), "-o", str(target), "--simplify"]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out  # --simplify always runs the parity check against the original
    ops = [n.op_type for n in onnx.load(target).graph.node]
    assert ops == ["Conv", "Relu"]  # BN folded by foldkit, Identity removed by onnxsim
    assert source.read_bytes() == before
