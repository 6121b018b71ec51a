"""What ``quantize`` accepts, checked before ONNX Runtime's quantizer sees the model.

ORT's static quantizer assumes a float32 network of convolutions or matrix products whose float
outputs are finite; anything else ends deep inside it (``AssertionError: scale issue``, a zip of
mismatched lists, an ORT type error). Each assumption is checked here and refused in one line
naming the model and what breaks it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from foldkit.errors import FoldkitError

QUANTIZABLE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}  # the ops whose weights int8 quantizes
FLOAT_TYPES = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


def admit_float_model(model: onnx.ModelProto, where: str) -> None:
    """Refuse a model ORT's int8 quantizer cannot take: sparse, not float32, or nothing to quantize."""
    graph = model.graph
    if graph.sparse_initializer:
        raise FoldkitError(f"{where}: sparse initializer '{graph.sparse_initializer[0].values.name}': quantize "
                           "takes dense tensors (densify the model first)")
    for value in [*graph.input, *graph.output]:
        elem = value.type.tensor_type.elem_type
        if elem in FLOAT_TYPES:
            raise FoldkitError(f"{where}: '{value.name}' is {onnx.TensorProto.DataType.Name(elem)}; quantize takes a "
                               "float32 model")
    for tensor in graph.initializer:
        if tensor.data_type in FLOAT_TYPES:
            raise FoldkitError(f"{where}: initializer '{tensor.name}' is "
                               f"{onnx.TensorProto.DataType.Name(tensor.data_type)}; quantize takes a float32 model")
    if not any(node.op_type in QUANTIZABLE_OPS for node in graph.node):
        raise FoldkitError(f"{where}: no {', '.join(sorted(QUANTIZABLE_OPS))} node: nothing for int8 to quantize")


def require_finite_outputs(reference: Mapping[str, np.ndarray], where: str) -> None:
    """The float model's outputs on the held-out inputs must be finite: int8 cannot approximate NaN."""
    for name, values in reference.items():
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            raise FoldkitError(f"{where}: the float model computes NaN or Inf in output '{name}' on the calibration "
                               "inputs (a BatchNorm epsilon or variance that is NaN or negative?); nothing to quantize")
