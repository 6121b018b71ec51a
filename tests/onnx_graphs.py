"""Small hand-built ONNX graphs for the fold tests, and running them for real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator


def tensor_type(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def make_model(nodes, inputs, outputs, initializers, opset: int = 17, graph_inputs_extra=()) -> onnx.ModelProto:
    """``inputs``/``outputs``: (name, dtype, shape); ``initializers``: {name: array}."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, tensor_type(d), s) for n, d, s in inputs] + list(graph_inputs_extra),
        [helper.make_tensor_value_info(n, tensor_type(d), s) for n, d, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    inferred = onnx.shape_inference.infer_shapes(model).graph
    known = {v.name: v for v in [*inferred.value_info, *inferred.output] if v.type.tensor_type.HasField("shape")}
    for output in model.graph.output:  # outputs given without a shape take the inferred one
        if not output.type.tensor_type.HasField("shape") and output.name in known:
            output.type.CopyFrom(known[output.name].type)
    onnx.checker.check_model(model, full_check=True)
    return model


def bn_params(rng, channels: int, dtype=np.float32, tiny: bool = True) -> dict[str, np.ndarray]:
    var = rng.uniform(0.2, 2.0, channels)
    if tiny:
        var[0] = 1e-4
    return {
        "gamma": rng.uniform(0.5, 1.5, channels).astype(dtype),
        "beta": rng.standard_normal(channels).astype(dtype),
        "mean": rng.standard_normal(channels).astype(dtype),
        "var": var.astype(dtype),
    }


def bn_node(x: str, y: str, name: str = "bn", prefix: str = "", **attrs) -> onnx.NodeProto:
    return helper.make_node("BatchNormalization", [x, *(prefix + p for p in ("gamma", "beta", "mean", "var"))], [y],
                            name=name, **attrs)


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], *, reference: bool = False) -> list[np.ndarray]:
    """Run with ORT (every graph optimization off) or ONNX's reference evaluator."""
    if reference:
        return [np.asarray(o) for o in ReferenceEvaluator(model).run(None, feeds)]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def max_rel_error(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max() / np.abs(y.astype(np.float64)).max())
               for x, y in zip(a, b, strict=True))


def conv_bn_model(path: Path, *, var: float | None = None, mean: float | None = None, channels: int = 4,
                  seed: int = 0, size: int = 8) -> Path:
    """A Conv→BN→Relu model; ``var``/``mean`` overwrite every channel's statistics when given."""
    rng = np.random.default_rng(seed)
    params = {
        "W": rng.standard_normal((channels, 3, 3, 3)).astype(np.float32),
        "gamma": rng.uniform(0.5, 1.5, channels).astype(np.float32),
        "beta": rng.standard_normal(channels).astype(np.float32),
        "mean": np.full(channels, mean, np.float32) if mean is not None else rng.standard_normal(channels).astype(
            np.float32),
        "var": np.full(channels, var, np.float32) if var is not None else rng.uniform(0.5, 2, channels).astype(
            np.float32),
    }
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             bn_node("c", "b"), helper.make_node("Relu", ["b"], ["y"], name="relu")]
    model = make_model(nodes, [("x", np.float32, [1, 3, size, size])], [("y", np.float32, None)], params)
    onnx.save(model, str(path))
    return path
