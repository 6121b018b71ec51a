"""Checking that a model is valid ONNX: the checker with full checks and strict shape inference.

Validating a multi-hundred-megabyte model the obvious way serializes it twice (once for the
checker, once for shape inference). A fold changes initializer *values*, never their types or
shapes, so ``weights=False`` validates a skeleton of the graph instead, in which every
initializer is a typed graph input without data: the same structure, types and shapes, checked
in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


MAX_BYTES = 2**63 - 1  # numpy's index range (an intp) in bytes

_SUB_BYTE_TYPES = {getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1")
                   if hasattr(onnx.TensorProto, n)}


def _check_tensor(tensor: onnx.TensorProto, where: str, raw_length: int | None) -> None:
    """A tensor's type is defined and its data holds exactly as many values as its dims say."""
    name = tensor.name if isinstance(tensor.name, str) else repr(tensor.name)
    if tensor.data_type == onnx.TensorProto.UNDEFINED or tensor.data_type not in onnx.TensorProto.DataType.values():
        raise FoldkitError(f"{where}: tensor '{name}' has an undefined element type ({tensor.data_type})")
    if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.data_type in _SUB_BYTE_TYPES:
        return
    if any(d < 0 for d in tensor.dims):
        raise FoldkitError(f"{where}: tensor '{name}' has negative dims {list(tensor.dims)}")
    # Python integers: a product of dims overflows neither here nor silently to 0; numpy cannot even
    # describe an array whose nonzero dims multiply past its index range, empty or not.
    count = math.prod(tensor.dims)
    itemsize = 1 if tensor.data_type == onnx.TensorProto.STRING else helper.tensor_dtype_to_np_dtype(
        tensor.data_type).itemsize
    if math.prod(d for d in tensor.dims if d) * itemsize > MAX_BYTES:
        raise FoldkitError(f"{where}: tensor '{name}' has dims {list(tensor.dims)}, more than any array can address "
                           "(2^63 bytes)")
    if raw_length is None and tensor.HasField("raw_data"):
        raw_length = len(tensor.raw_data)
    if raw_length is not None and tensor.data_type != onnx.TensorProto.STRING:
        if raw_length != count * itemsize:
            raise FoldkitError(f"{where}: tensor '{name}' has {raw_length} bytes of data, but its dims "
                               f"{list(tensor.dims)} need {count * itemsize}")
        return
    field = helper.tensor_dtype_to_field(tensor.data_type)
    per_value = 2 if tensor.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128) else 1
    held = len(getattr(tensor, field)) // per_value
    if held != count:
        raise FoldkitError(f"{where}: tensor '{name}' holds {held} values, but its dims {list(tensor.dims)} "
                           f"need {count}")


def _check_text(value: str | bytes, what: str, where: str) -> None:
    if isinstance(value, bytes):  # protobuf hands back bytes for a string field that is not UTF-8
        raise FoldkitError(f"{where}: {what} {value!r} is not valid UTF-8")


def check_model_data(model: onnx.ModelProto, where: str, raw_lengths: dict[str, int] | None = None) -> None:
    """Refuse, with a one-line error, what would crash a pass deep inside: names that are not UTF-8,
    tensors of undefined type, and tensor data whose length disagrees with the dims.

    ``raw_lengths`` gives the ``raw_data`` length of initializers whose bytes were left in the file
    (:mod:`foldkit.onnxio.lazy`). Runs over subgraphs too; cheap (no tensor data is copied).
    """
    raw_lengths = raw_lengths or {}

    def walk(graph: onnx.GraphProto) -> None:
        for tensor in graph.initializer:
            _check_text(tensor.name, "initializer name", where)
            _check_tensor(tensor, where, raw_lengths.get(tensor.name))
        for value in [*graph.input, *graph.output, *graph.value_info]:
            _check_text(value.name, "value name", where)
        for node in graph.node:
            for text, what in ((node.name, "node name"), (node.op_type, "op_type"), (node.domain, "domain"),
                               *((n, "tensor name") for n in [*node.input, *node.output])):
                _check_text(text, what, where)
            for attribute in node.attribute:
                _check_text(attribute.name, "attribute name", where)
                for tensor in [attribute.t] if attribute.HasField("t") else []:
                    _check_tensor(tensor, where, None)
                for tensor in attribute.tensors:
                    _check_tensor(tensor, where, None)
                for subgraph in [attribute.g] if attribute.HasField("g") else []:
                    walk(subgraph)
                for subgraph in attribute.graphs:
                    walk(subgraph)

    walk(model.graph)
    if not model.graph.output:
        raise FoldkitError(f"{where}: the graph declares no outputs; there is nothing to compute")
