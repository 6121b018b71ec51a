"""Reading inputs with clear errors and writing outputs safely.

The rules every command follows:

- Inputs are only read, and only when they are regular files (a FIFO would block, a device
  would stream forever).
- Outputs are checked before any work starts (:func:`check_outputs`): an output may not be an
  input or another output, a folder, or anything but a regular file, and its folder must exist.
- An output is written to a temporary file in its own folder and renamed over the target only
  when complete, with the mode the umask gives a new file; a failure, an interrupt or SIGTERM
  removes the temporary file and leaves the target as it was. Several outputs that belong
  together (a Triton entry, a folder of detections) are staged the same way and renamed only
  when all of them are complete (:class:`OutputTransaction`).
- A model's external-data locations must stay inside the model's folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError, EncodeError

from foldkit.errors import FoldkitError
from foldkit.onnxio.validate import check_model_data

PathLike = str | os.PathLike


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


def _identity(path: Path) -> tuple:
    """What makes two paths the same file: (device, inode) when it exists, else the resolved path."""
    try:
        info = path.stat()
        return ("inode", info.st_dev, info.st_ino)
    except OSError:
        return ("path", str(path.resolve()))


def check_outputs(outputs: Iterable[PathLike | None], inputs: Iterable[PathLike | None] = ()) -> None:
    """Refuse, before any work, outputs that would destroy an input, collide, or are not files.

    ``None`` entries (an optional output not asked for) are skipped.
    """
    seen: dict[tuple, Path] = {}
    for path in (Path(p) for p in inputs if p is not None):
        seen[_identity(path)] = path
    taken = dict(seen)
    for raw in outputs:
        if raw is None:
            continue
        if str(raw) == "":
            raise FoldkitError("an output path is empty")
        path = Path(raw)
        key = _identity(path)
        if key in taken:
            other = taken[key]
            role = "the input" if key in seen else "another output"
            raise FoldkitError(f"{path}: is {role} ({other}); refusing to overwrite {role}, choose another path")
        taken[key] = path
        folder = path.parent
        if not folder.is_dir():
            raise FoldkitError(f"{path}: output folder {folder} does not exist")
        if path.is_symlink() or path.exists():
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode) or (path.is_symlink() and path.is_dir()):
                raise FoldkitError(f"{path}: is a folder; give a file path")
            if not stat.S_ISREG(path.stat().st_mode if path.exists() else mode):
                raise FoldkitError(f"{path}: exists and is not a regular file; refusing to replace it")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise FoldkitError(f"{path}: output folder {folder} is not writable")


def _new_file_mode() -> int:
    """The mode a new regular file gets under the current umask (0666 & ~umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_DEFERRED_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGTERM and SIGINT while the bookkeeping of staged files changes.

    A temporary file created but not yet recorded (or renamed but still recorded) would escape
    the rollback if the signal's exception were raised in between; held, it is raised right after.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class OutputTransaction:
    """Outputs written to temporary files beside their targets, renamed into place together.

    ``path(target)`` hands out a temporary path for ``target``; :meth:`commit` gives each its final
    mode and renames it over its target, :meth:`rollback` removes every temporary file (and the
    folders :meth:`make_folder` created). Used as a context manager it commits on success and
    rolls back on any exception, KeyboardInterrupt and SystemExit (SIGTERM, see the CLI) included.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []
        self._made: list[Path] = []

    def make_folder(self, folder: PathLike) -> Path:
        """Create ``folder`` (and missing parents); removed again on rollback if it was new."""
        folder = Path(folder)
        missing = []
        probe = folder
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        with _signals_deferred():
            folder.mkdir(parents=True, exist_ok=True)
            self._made.extend(reversed(missing))
        return folder

    def path(self, target: PathLike) -> Path:
        target = Path(target)
        folder = target.parent if str(target.parent) else Path(".")
        if not folder.is_dir():
            raise FoldkitError(f"{target}: output folder {folder} does not exist")
        with _signals_deferred():
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
            except OSError as exc:
                raise FoldkitError(f"{target}: cannot write in {folder}: {exc.strerror}") from None
            self._pending.append((Path(tmp), target))
        os.close(fd)
        return Path(tmp)

    def write_bytes(self, target: PathLike, data: bytes) -> None:
        self.path(target).write_bytes(data)

    def write_text(self, target: PathLike, text: str) -> None:
        self.path(target).write_text(text, encoding="utf-8")

    def commit(self) -> None:
        mode = _new_file_mode()
        for tmp, _ in self._pending:
            os.chmod(tmp, mode)
        with _signals_deferred():  # all renamed and forgotten, or none
            for tmp, target in self._pending:
                os.replace(tmp, target)
            self._pending.clear()
            self._made.clear()

    def rollback(self) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending.clear()
        for folder in reversed(self._made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._made.clear()

    def __enter__(self) -> OutputTransaction:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()


@contextlib.contextmanager
def atomic_path(target: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success."""
    with OutputTransaction() as transaction:
        yield transaction.path(target)


def write_atomic(target: PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result to ``target`` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)


def write_text_atomic(target: PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


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


def save_onnx(model: onnx.ModelProto, target: PathLike) -> None:
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
