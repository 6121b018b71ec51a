"""Write an ONNX file whose large tensors are streamed in, never gathered into one bytes object.

``onnx.save`` serializes the whole model into one bytes object first: for a 250 MB model that is
250 MB more memory and a full copy. Protobuf's encoding is just concatenated fields, so the model
can be written as: the model's own fields, then the graph field's header, the graph's own
fields, and one ``initializer`` entry per tensor — each a small encoded ``TensorProto`` header
followed by its raw bytes, taken from a numpy array's buffer or copied by the kernel from a range
of another file. The result is an ordinary ONNX file; one over protobuf's 2 GiB limit keeps its
tensors in an external data file beside it instead (the layout ``onnx.save_model`` writes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from foldkit.errors import FoldkitError
from foldkit.onnxio import wire
from foldkit.onnxio.outputs import PathLike, Target, resolve_output
from foldkit.onnxio.staging import OutputTransaction
from foldkit.onnxio.wire import (
    EXTERNAL_ALIGNMENT,
    EXTERNAL_SUFFIX,
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


Entry = tuple[TensorProto, Payload | None]  # a tensor's fields, and its raw data when kept apart


def raw_tensor_entry(header: TensorProto, payload: Payload) -> Entry:
    """A TensorProto without data (name, type, dims, …) plus its raw data."""
    return header, payload


def array_entry(name: str, array: np.ndarray) -> Entry:
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    header = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=list(array.shape))
    return raw_tensor_entry(header, array.reshape(-1).view(np.uint8).data)


def _encoded(header: TensorProto, payload: Payload | None) -> tuple[bytes, bytes]:
    """(graph initializer key, the tensor's fields up to its raw data) of one entry."""
    head = header.SerializeToString()
    if payload is not None:
        head += length_delimited_key(TENSOR_RAW_DATA_FIELD) + encode_varint(_length(payload))
    length = len(head) + (_length(payload) if payload is not None else 0)
    return length_delimited_key(GRAPH_INITIALIZER_FIELD) + encode_varint(length), head


def _external(entries: list[Entry], location: str) -> tuple[list[Entry], list[tuple[int, Payload]]]:
    """Entries whose raw data moves to the file ``location`` (each at a 4 KiB-aligned offset)."""
    moved: list[tuple[int, Payload]] = []
    kept: list[Entry] = []
    offset = 0
    for header, payload in entries:
        if payload is None:
            kept.append((header, None))
            continue
        offset = -(-offset // EXTERNAL_ALIGNMENT) * EXTERNAL_ALIGNMENT
        outside = TensorProto()
        outside.CopyFrom(header)
        outside.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(_length(payload)))):
            outside.external_data.add(key=key, value=value)
        kept.append((outside, None))
        moved.append((offset, payload))
        offset += _length(payload)
    return kept, moved


def _write_payload(handle, payload: Payload) -> None:
    if isinstance(payload, FileRange):
        handle.flush()
        _copy_range(payload, handle.fileno())
    else:
        handle.write(payload)


def _model_size(shell: bytes, graph_bytes: bytes, entries: list[Entry]) -> tuple[int, int]:
    """(graph length, whole file length) of a model written with ``entries`` inline."""
    graph_length = len(graph_bytes)
    for header, payload in entries:
        key, head = _encoded(header, payload)
        graph_length += len(key) + len(head) + (_length(payload) if payload is not None else 0)
    whole = len(shell) + len(length_delimited_key(MODEL_GRAPH_FIELD) + encode_varint(graph_length)) + graph_length
    return graph_length, whole


def write_model(model: onnx.ModelProto, initializers: list[Entry], target: PathLike | Target,
                staged: OutputTransaction | None = None) -> Path:
    """Write ``model`` (its graph's own initializers included) plus the streamed ``initializers``.

    A model over protobuf's limit (:data:`foldkit.onnxio.wire.PROTOBUF_LIMIT`, looked up at each call so a test can
    lower it) keeps its streamed tensors in
    ``TARGET.data`` beside it, staged and renamed with it; one still over the limit without them
    (huge constants inside the graph) is refused before anything is written. Written in
    ``staged`` when given (returns the staged model's path), else in a transaction of its own.
    """
    if staged is None:
        with OutputTransaction() as own:
            return write_model(model, initializers, target, own)
    resolved = target if isinstance(target, Target) else resolve_output(target)
    graph_bytes = model.graph.SerializeToString()
    shell = onnx.ModelProto()
    shell.CopyFrom(model)
    shell.ClearField("graph")
    shell_bytes = shell.SerializeToString()
    moved: list[tuple[int, Payload]] = []
    graph_length, whole = _model_size(shell_bytes, graph_bytes, initializers)
    if whole > wire.PROTOBUF_LIMIT:
        if resolved.stream:
            raise FoldkitError(f"{resolved.given}: the model is {whole / 2**20:,.0f} MiB, over protobuf's 2 GiB; "
                               "its external data cannot go through a stream: give a file path")
        initializers, moved = _external(initializers, f"{resolved.path.name}{EXTERNAL_SUFFIX}")
        graph_length, whole = _model_size(shell_bytes, graph_bytes, initializers)
        if whole > wire.PROTOBUF_LIMIT:
            raise FoldkitError(f"{resolved.given}: the graph is {whole / 2**20:,.1f} MiB even with its initializers "
                               "in external data, over protobuf's 2 GiB (large constants inside nodes?); "
                               "nothing written")
    path = staged.path(resolved)
    if moved:
        data_target = resolved.path.with_name(resolved.path.name + EXTERNAL_SUFFIX)
        with open(staged.path(data_target), "wb") as handle:
            for offset, data in moved:
                handle.seek(offset)
                _write_payload(handle, data)
    with open(path, "wb") as handle:
        handle.write(shell_bytes)
        handle.write(length_delimited_key(MODEL_GRAPH_FIELD) + encode_varint(graph_length))
        handle.write(graph_bytes)
        for header, payload in initializers:
            key, head = _encoded(header, payload)
            handle.write(key + head)
            if payload is not None:
                _write_payload(handle, payload)
    return path


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


def save_with_arrays(model: onnx.ModelProto, arrays: list[tuple[str, np.ndarray]], target: PathLike | Target,
                     staged: OutputTransaction | None = None) -> Path:
    """Write ``model`` with ``arrays`` appended as initializers, atomically; ``model`` is not changed.

    ``model`` should hold only small tensors itself: it is serialized in the usual way.
    """
    return write_model(model, [array_entry(name, array) for name, array in arrays], target, staged)


def without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose graph has no initializers (the tensors themselves are not copied)."""
    bare = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            _copy_field(bare, field, value)
    for field, value in model.graph.ListFields():
        if field.name != "initializer":
            _copy_field(bare.graph, field, value)
    return bare


def _copy_field(message, field, value) -> None:
    if field.is_repeated:
        getattr(message, field.name).extend(value)
    elif field.type == field.TYPE_MESSAGE:
        getattr(message, field.name).CopyFrom(value)
    else:
        setattr(message, field.name, value)


def save_large(model: onnx.ModelProto, target: PathLike | Target, staged: OutputTransaction | None = None) -> Path:
    """Write an in-memory ``model`` too large to serialize as one message (see :func:`write_model`)."""
    from onnx import numpy_helper

    entries: list[Entry] = [
        (t, None) if t.data_type == TensorProto.STRING else array_entry(t.name, numpy_helper.to_array(t))
        for t in model.graph.initializer
    ]
    return write_model(without_initializers(model), entries, target, staged)
