"""Checking that a model is valid ONNX: the checker with full checks and strict shape inference.

Validating a multi-hundred-megabyte model the obvious way serializes it twice (once for the
checker, once for shape inference). A fold changes initializer *values*, never their types or
shapes, so ``weights=False`` validates a skeleton of the graph instead, in which every
initializer is a typed graph input without data: the same structure, types and shapes, checked
in milliseconds.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import helper

from foldkit.errors import FoldkitError


def default_opset_version(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def skeleton(model: onnx.ModelProto, arrays: Sequence[tuple[str, np.ndarray]] = ()) -> onnx.ModelProto:
    """The model with each initializer replaced by a graph input of the same type and shape.

    ``arrays`` are tensors kept outside the model (to be streamed in on save): declared the same way.
    """
    graph = model.graph
    declared = {i.name for i in graph.input}
    inputs = list(graph.input) + [
        helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        for init in graph.initializer if init.name not in declared
    ] + [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
         for name, a in arrays]
    if not graph.initializer and not arrays:
        return model
    bare = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name)
    bare.opset_import.extend(model.opset_import)
    bare.functions.extend(model.functions)
    bare.graph.CopyFrom(helper.make_graph(list(graph.node), graph.name or "graph", inputs, list(graph.output),
                                          value_info=list(graph.value_info)))
    return bare


def validate_model(
    model: onnx.ModelProto, *, opset: int | None = None, where: str = "<model>", weights: bool = True,
    arrays: Sequence[tuple[str, np.ndarray]] = (),
) -> None:
    """Fail with a one-line :class:`FoldkitError` unless ``model`` has ``opset`` and passes full checks.

    ``weights=False`` checks the skeleton (see the module docstring) rather than the full model;
    ``arrays`` are tensors the model will be saved with but does not hold yet.
    """
    written = default_opset_version(model)
    if opset is not None and written != opset:
        raise FoldkitError(
            f"{where}: the exporter wrote opset {written}, not the requested {opset} "
            f"(ask for opset {written}, or use the torchscript exporter)"
        )
    target = model if weights and not arrays else skeleton(model, arrays)
    try:
        onnx.checker.check_model(target, full_check=True)
        onnx.shape_inference.infer_shapes(target, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FoldkitError(f"{where}: model fails ONNX validation: {first}") from None
