"""Write an ONNX file whose large tensors come straight from numpy arrays, without copying them.

``onnx.save`` serializes the whole model into one bytes object first: for a 250 MB model that is
250 MB more memory and a full copy. Protobuf's encoding is just concatenated fields, so the model
can be written as: the model's own fields, then the graph field's header, the graph's own
fields, and one ``initializer`` entry per tensor — each a small encoded ``TensorProto`` header
followed by the raw bytes, written from the array's buffer. The result is an ordinary ONNX file.
"""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper

from foldkit.fileio import write_atomic

_MODEL_GRAPH_FIELD = 7
_GRAPH_INITIALIZER_FIELD = 5
_TENSOR_RAW_DATA_FIELD = 9
_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int) -> bytes:
    return _varint(field << 3 | _LENGTH_DELIMITED)


def _tensor_parts(name: str, array: np.ndarray) -> tuple[bytes, memoryview]:
    """The encoded TensorProto header (name, type, dims) and the raw little-endian data."""
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    header = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=list(array.shape))
    data = memoryview(array.reshape(-1).view(np.uint8))
    return header.SerializeToString() + _key(_TENSOR_RAW_DATA_FIELD) + _varint(data.nbytes), data


def save_with_arrays(model: onnx.ModelProto, arrays: list[tuple[str, np.ndarray]], target: str | os.PathLike) -> None:
    """Write ``model`` with ``arrays`` appended as initializers, atomically; ``model`` is not changed.

    ``model`` should hold only small tensors itself: it is serialized in the usual way.
    """
    parts = [_tensor_parts(name, array) for name, array in arrays]
    entries = [(_key(_GRAPH_INITIALIZER_FIELD) + _varint(len(head) + data.nbytes), head, data) for head, data in parts]
    graph_bytes = model.graph.SerializeToString()
    graph_length = len(graph_bytes) + sum(len(key) + len(head) + data.nbytes for key, head, data in entries)
    shell = onnx.ModelProto()
    shell.CopyFrom(model)  # cheap: the large tensors are not in it
    shell.ClearField("graph")

    def writer(tmp) -> None:
        with open(tmp, "wb") as handle:
            _write(handle, shell.SerializeToString(), _key(_MODEL_GRAPH_FIELD), _varint(graph_length), graph_bytes)
            for key, head, data in entries:
                _write(handle, key, head, data)

    write_atomic(target, writer)


def _write(handle: BinaryIO, *chunks) -> None:
    for chunk in chunks:
        handle.write(chunk)
