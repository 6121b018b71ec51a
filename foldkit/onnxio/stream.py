"""Write an ONNX file whose large tensors are streamed in, never gathered into one bytes object.

``onnx.save`` serializes the whole model into one bytes object first: for a 250 MB model that is
250 MB more memory and a full copy. Protobuf's encoding is just concatenated fields, so the model
can be written as: the model's own fields, then the graph field's header, the graph's own
fields, and one ``initializer`` entry per tensor — each a small encoded ``TensorProto`` header
followed by its raw bytes, taken from a numpy array's buffer or copied by the kernel from a range
of another file. The result is an ordinary ONNX file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from foldkit.onnxio.files import write_atomic
from foldkit.onnxio.wire import (
    GRAPH_INITIALIZER_FIELD,
    MODEL_GRAPH_FIELD,
    TENSOR_RAW_DATA_FIELD,
    encode_varint,
    length_delimited_key,
)


@dataclass(frozen=True)
class FileRange:
    """Bytes to copy from an open file: they never pass through Python."""

    fd: int
    offset: int
    length: int


Payload = memoryview | FileRange


def _length(payload: Payload) -> int:
    return payload.length if isinstance(payload, FileRange) else payload.nbytes


def raw_tensor_entry(header: TensorProto, payload: Payload) -> tuple[bytes, Payload]:
    """A TensorProto without data (name, type, dims, …) plus its raw data, as an encoded entry."""
    prefix = length_delimited_key(TENSOR_RAW_DATA_FIELD) + encode_varint(_length(payload))
    return header.SerializeToString() + prefix, payload


def array_entry(name: str, array: np.ndarray) -> tuple[bytes, Payload]:
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    header = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=list(array.shape))
    return raw_tensor_entry(header, array.reshape(-1).view(np.uint8).data)


def _entry_key(head: bytes, payload: Payload | None) -> bytes:
    """The tag and length of one graph initializer entry: the encoded header plus its payload."""
    length = len(head) + (_length(payload) if payload is not None else 0)
    return length_delimited_key(GRAPH_INITIALIZER_FIELD) + encode_varint(length)


def write_model(model: onnx.ModelProto, initializers: list[tuple[bytes, Payload | None]], target) -> None:
    """Write ``model`` (its graph's own initializers included) plus the streamed ``initializers``, atomically.

    Each streamed initializer is (encoded TensorProto fields, payload or None for none).
    """
    entries = [(_entry_key(head, p), head, p) for head, p in initializers]
    graph_bytes = model.graph.SerializeToString()
    graph_length = len(graph_bytes) + sum(len(k) + len(h) + (_length(p) if p is not None else 0) for k, h, p in entries)
    shell = onnx.ModelProto()
    shell.CopyFrom(model)
    shell.ClearField("graph")

    def writer(tmp) -> None:
        with open(tmp, "wb") as handle:
            handle.write(shell.SerializeToString())
            handle.write(length_delimited_key(MODEL_GRAPH_FIELD) + encode_varint(graph_length))
            handle.write(graph_bytes)
            for prefix, head, payload in entries:
                handle.write(prefix + head)
                if isinstance(payload, FileRange):
                    handle.flush()
                    _copy_range(payload, handle.fileno())
                elif payload is not None:
                    handle.write(payload)

    write_atomic(target, writer)


def _copy_range(source: FileRange, destination: int) -> None:
    offset, remaining = source.offset, source.length
    while remaining:
        try:
            copied = os.copy_file_range(source.fd, destination, remaining, offset)
        except OSError:  # another file system, or no copy_file_range: read and write
            copied = os.write(destination, os.pread(source.fd, min(remaining, 1 << 24), offset))
        if copied == 0:
            raise OSError(f"could not copy {remaining} bytes at offset {offset}")
        offset, remaining = offset + copied, remaining - copied


def save_with_arrays(model: onnx.ModelProto, arrays: list[tuple[str, np.ndarray]], target: str | os.PathLike) -> None:
    """Write ``model`` with ``arrays`` appended as initializers, atomically; ``model`` is not changed.

    ``model`` should hold only small tensors itself: it is serialized in the usual way.
    """
    write_model(model, [array_entry(name, array) for name, array in arrays], target)
