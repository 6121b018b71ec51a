"""Open an ONNX file without reading its tensors: the graph in memory, the weights left in the file.

The file is walked at the protobuf wire level: the model's fields and the graph's fields are
parsed as usual, except that each initializer's ``raw_data`` is only located (offset, length),
never read. A :class:`FileTensorStore` reads a tensor when a pass asks for it, keeps the ones the
pass replaces, and writing copies every untouched tensor straight from the input file. A fold
of a 250 MB model then reads each weight once, writes each once, and never holds two copies.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper

from foldkit.errors import FoldkitError
from foldkit.onnxio.outputs import PathLike, Target
from foldkit.onnxio.staging import OutputTransaction
from foldkit.onnxio.store import TensorStore
from foldkit.onnxio.stream import FileRange, array_entry, raw_tensor_entry, write_model
from foldkit.onnxio.validate import check_model_data
from foldkit.onnxio.wire import (
    GRAPH_INITIALIZER_FIELD,
    LENGTH_DELIMITED,
    MODEL_GRAPH_FIELD,
    TENSOR_RAW_DATA_FIELD,
    iter_fields,
)

LAZY_MIN_BYTES = 4096  # smaller tensors are read right away


class FileTensorStore(TensorStore):
    """Tensor values read from the source file on demand; replacements kept as arrays."""

    def __init__(self, fd: int, locations: dict[str, tuple[int, int]], path: Path | None = None) -> None:
        self.fd = fd
        self.path = path
        self.where = None if path is None else str(path)
        self.locations = locations  # name → (offset of raw_data, length) in the source file
        self.replaced: dict[str, np.ndarray] = {}

    def get(self, tensor: onnx.TensorProto) -> np.ndarray:
        if tensor.name in self.replaced:
            return self.replaced[tensor.name]
        if tensor.name in self.locations:
            offset, length = self.locations[tensor.name]
            dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
            data = os.pread(self.fd, length, offset)
            if len(data) != length:
                raise FoldkitError(f"{self.path}: the file changed while being read (tensor '{tensor.name}' "
                                   f"has {len(data)} of its {length} bytes)")
            return np.frombuffer(data, dtype=dtype).reshape(tuple(tensor.dims))
        return super().get(tensor)

    def put(self, tensor: onnx.TensorProto, array: np.ndarray) -> None:
        array = np.asarray(array)
        name = tensor.name
        tensor.Clear()
        tensor.name, tensor.data_type = name, helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        self.replaced[name] = array
        self.locations.pop(name, None)

    def materialized(self, tensor: onnx.TensorProto) -> onnx.TensorProto:
        if tensor.name not in self.replaced and tensor.name not in self.locations:
            return tensor
        from onnx import numpy_helper

        return numpy_helper.from_array(self.get(tensor), tensor.name)

    def entry(self, tensor: onnx.TensorProto):
        """How :func:`write_model` writes this initializer."""
        if tensor.name in self.replaced:
            return array_entry(tensor.name, self.replaced[tensor.name])
        if tensor.name in self.locations:
            offset, length = self.locations[tensor.name]
            return raw_tensor_entry(tensor, FileRange(self.fd, offset, length))
        return tensor, None


@dataclass
class LazyModel:
    """A model whose large tensors stay in ``path`` until :meth:`save`."""

    path: Path
    model: onnx.ModelProto
    store: FileTensorStore

    def save(self, target: PathLike | Target, staged: OutputTransaction | None = None) -> Path:
        """Write the model to ``target`` (in ``staged`` when given); returns the staged path."""
        graph = self.model.graph
        streamed = [self.store.entry(t) for t in graph.initializer]
        bare = onnx.ModelProto()
        bare.CopyFrom(self.model)  # small: the initializers here hold no large data
        bare.graph.ClearField("initializer")
        return write_model(bare, streamed, target, staged)

    def close(self) -> None:
        os.close(self.store.fd)

    def __enter__(self) -> LazyModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_lazy(path: str | os.PathLike) -> LazyModel | None:
    """Open ``path`` lazily; None when its layout needs the ordinary loader (external data, odd encodings)."""
    path = Path(path)
    if not path.is_file():
        return None  # the ordinary loader says what is wrong
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise FoldkitError(f"{path}: file is empty, not an ONNX model")
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as view:
            model, locations = _parse(view, size)
    except (ValueError, IndexError, DecodeError):
        os.close(fd)
        return None  # not a layout this reader handles (or not ONNX): the ordinary loader decides
    except BaseException:
        os.close(fd)
        raise
    if model is None:
        os.close(fd)
        return None
    try:
        check_model_data(model, str(path), {name: length for name, (_, length) in locations.items()})
    except BaseException:
        os.close(fd)
        raise
    return LazyModel(path, model, FileTensorStore(fd, locations, path))


def _parse(view, size: int):
    outside: list[tuple[int, int, int]] = []
    graphs: list[tuple[int, int, int]] = []
    for number, wire, field_start, start, end in iter_fields(view, 0, size):
        is_graph = number == MODEL_GRAPH_FIELD and wire == LENGTH_DELIMITED
        (graphs if is_graph else outside).append((field_start, start, end))
    if len(graphs) != 1:
        return None, {}
    model = onnx.ModelProto()
    model.ParseFromString(b"".join(view[s:e] for s, _, e in outside))
    _, graph_start, graph_end = graphs[0]
    graph_rest, headers, locations = [], [], {}
    for number, wire, field_start, start, end in iter_fields(view, graph_start, graph_end):
        if number != GRAPH_INITIALIZER_FIELD or wire != 2:
            graph_rest.append(view[field_start:end])
            continue
        header, raw = bytearray(), None
        for t_number, t_wire, t_field_start, t_start, t_end in iter_fields(view, start, end):
            if t_number == TENSOR_RAW_DATA_FIELD and t_wire == LENGTH_DELIMITED and t_end - t_start >= LAZY_MIN_BYTES:
                raw = (t_start, t_end - t_start)
            else:
                header += view[t_field_start:t_end]
        tensor = onnx.TensorProto()
        tensor.ParseFromString(bytes(header))
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            return None, {}
        if raw is not None:
            locations[tensor.name] = raw
        headers.append(tensor)
    model.graph.ParseFromString(b"".join(graph_rest))
    model.graph.initializer.extend(headers)
    return model, locations
