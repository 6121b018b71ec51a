"""Reading inputs with clear errors, and the one door every output goes through.

The rules every command follows:

- Inputs are only read, and only when they are regular files (a FIFO would block, a device
  would stream forever).
- Outputs are resolved and checked before any work starts (:func:`check_outputs`, the rule in
  :mod:`foldkit.onnxio.outputs`), then staged and renamed into place together
  (:class:`OutputTransaction`, :mod:`foldkit.onnxio.staging`).
- A model's external-data locations must stay inside the model's folder; those files are
  protected like the model itself (:func:`model_companions`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from foldkit.defaults import MAX_TEXT_INPUT_BYTES
from foldkit.errors import FoldkitError
from foldkit.onnxio import wire
from foldkit.onnxio.outputs import PathLike, Target, check_outputs, resolve_output
from foldkit.onnxio.staging import OutputTransaction, atomic_path, write_atomic, write_text_atomic
from foldkit.onnxio.stream import save_large
from foldkit.onnxio.validate import check_model_data

__all__ = [
    "OutputTransaction", "PathLike", "Target", "atomic_path", "check_external_locations", "check_outputs",
    "external_locations", "load_onnx", "model_companions", "read_text_input", "require_input_file",
    "resolve_output", "save_onnx", "write_atomic", "write_text_atomic",
]


def require_input_file(path: PathLike, what: str = "input") -> Path:
    """``path`` as a Path if it is a readable regular file, else a one-line FoldkitError."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FoldkitError(f"{path}: no such file") from None
    except OSError as exc:
        raise FoldkitError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise FoldkitError(f"{path}: is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise FoldkitError(f"{path}: not a regular file (a FIFO, socket or device cannot be the {what})")
    if not os.access(path, os.R_OK):
        raise FoldkitError(f"{path}: permission denied")
    return path


def read_text_input(path: PathLike, what: str) -> str:
    """A small UTF-8 text input read whole; a file over :data:`~foldkit.defaults.MAX_TEXT_INPUT_BYTES` is refused."""
    path = require_input_file(path, what)
    size = path.stat().st_size
    if size > MAX_TEXT_INPUT_BYTES:
        raise FoldkitError(f"{path}: {size:,} bytes is too large for a {what} (at most {MAX_TEXT_INPUT_BYTES:,})")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FoldkitError(f"{path}: a {what} must be UTF-8 text") from None


def _tensors_with_data(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor in a graph that can hold data: initializers and node attributes, subgraphs too."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors_with_data(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors_with_data(subgraph)


def external_locations(model: onnx.ModelProto) -> set[str]:
    """The external-data file names a model's tensors point to."""
    return {
        entry.value
        for tensor in _tensors_with_data(model.graph)
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data if entry.key == "location"
    }


def check_external_locations(model: onnx.ModelProto, path: PathLike) -> set[str]:
    """Refuse external-data locations that are absolute or leave the folder of the model at ``path``."""
    folder = Path(path).resolve().parent
    locations = external_locations(model)
    for location in locations:
        if os.path.isabs(location) or Path(location).is_absolute():
            raise FoldkitError(f"{path}: external data location {location!r} is absolute; only files beside "
                               "the model are read")
        resolved = (folder / location).resolve()
        # '..' is refused even when it comes back inside: the same relative name is reused on the
        # writing side (a Triton entry), where it would climb out of the target folder.
        if ".." in Path(location.replace("\\", "/")).parts or folder not in resolved.parents:
            raise FoldkitError(f"{path}: external data location {location!r} leaves the model's folder")
    return locations


def load_onnx(path: PathLike, *, load_external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX file, turning every failure into a one-line :class:`FoldkitError`.

    External data is loaded only from files inside the model's folder.
    """
    path = require_input_file(path, "model")
    if path.stat().st_size == 0:
        raise FoldkitError(f"{path}: file is empty, not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
        locations = check_external_locations(model, path)
        if locations and load_external_data:
            for location in locations:  # a FIFO here would block the loader
                require_input_file(path.parent / location, "external data file")
            onnx.load_external_data_for_model(model, str(path.parent))
        check_model_data(model, str(path))
    except DecodeError as exc:
        raise FoldkitError(f"{path}: not a valid ONNX model (protobuf decode failed: {exc})") from None
    except (OSError, ValueError, UnicodeError, onnx.checker.ValidationError) as exc:
        raise FoldkitError(f"{path}: cannot load ONNX model: {exc}") from None
    if not model.graph.node and not model.graph.output:
        raise FoldkitError(f"{path}: not a valid ONNX model (no graph found)")
    return model


def model_companions(path: PathLike) -> list[Path]:
    """The external-data files the model at ``path`` brings along: protected like the model itself.

    Read from the file (a loaded model no longer says where its tensors came from); only the
    protobuf is parsed, not the external data.
    """
    model = load_onnx(path, load_external_data=False)
    return [Path(path).parent / location for location in sorted(external_locations(model))]


def save_onnx(model: onnx.ModelProto, target: PathLike | Target, staged: OutputTransaction | None = None) -> Path:
    """Save ``model`` atomically (in ``staged`` when given); returns the staged path.

    A model over protobuf's 2 GiB keeps its tensors in ``TARGET.data``, staged and renamed with it
    (:func:`foldkit.onnxio.stream.write_model`).
    """
    if model.ByteSize() > wire.PROTOBUF_LIMIT:
        return save_large(model, target, staged)
    if staged is None:
        with OutputTransaction() as own:
            return save_onnx(model, target, own)
    path = staged.path(target)
    path.write_bytes(model.SerializeToString())
    return path
