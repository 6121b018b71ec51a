"""Reading inputs with clear errors and writing outputs atomically.

An output is written to a temporary file in the target's folder and renamed over the target
only when complete, so a failure never leaves a half-written file and never destroys an
existing one. Inputs are only ever read.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import onnx
from google.protobuf.message import DecodeError, EncodeError

from foldkit.errors import FoldkitError

@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise FoldkitError(f"{target}: output folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_atomic(target: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result to ``target`` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    write_atomic(target, lambda tmp: tmp.write_text(text))


def load_onnx(path: str | os.PathLike, *, load_external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX file, turning every failure into a one-line :class:`FoldkitError`."""
    path = Path(path)
    if not path.exists():
        raise FoldkitError(f"{path}: no such file")
    if not path.is_file():
        raise FoldkitError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise FoldkitError(f"{path}: file is empty, not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except DecodeError as exc:
        raise FoldkitError(f"{path}: not a valid ONNX model (protobuf decode failed: {exc})") from None
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise FoldkitError(f"{path}: cannot load ONNX model: {exc}") from None
    if not model.graph.node and not model.graph.output:
        raise FoldkitError(f"{path}: not a valid ONNX model (no graph found)")
    return model


def save_onnx(model: onnx.ModelProto, target: str | os.PathLike) -> None:
    """Save ``model`` atomically; a model over protobuf's 2 GiB keeps its tensors in ``TARGET.data``.

    The model is serialized once; only when that fails for size are tensors moved to external data.
    """
    target = Path(target)
    try:
        data = model.SerializeToString()
    except (ValueError, EncodeError):  # over 2 GiB: protobuf refuses to serialize one message
        data = None

    def writer(tmp: Path) -> None:
        if data is not None:
            with open(tmp, "wb") as handle:
                handle.write(data)
        else:
            onnx.save_model(
                model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                location=f"{target.name}.data", size_threshold=1024,
            )

    write_atomic(target, writer)
