"""Where an output goes: each output path resolved once, against the files it may never replace.

The one output rule (docs/safety.md), applied by every API function that writes:

- A path whose text ends in ``/`` names a folder: refused for a file output (``-o newdir/``
  never writes a file named ``newdir``, ``-o existing.onnx/`` never replaces ``existing.onnx``).
- A symlink is followed: the file it points to is replaced, the link itself stays.
- A character device or FIFO (``/dev/stdout``, ``/dev/null``, ``/proc/self/fd/1``, or a link to
  one), and anything reached through a ``/proc/PID/fd/N`` link, is a *stream*: the finished
  output is written through it, never renamed over it. Any other special file is refused.
- Existing inputs, and every file an input brings along (a model's external data, the images in
  a calibration folder), are protected: no output may be one of them, through any link.
- Two outputs may not be the same file (they may share a stream: written in turn); an output's
  folder must exist and be writable.
- A file the user did not name (one of detect's per-image outputs) replaces an existing file only
  when the caller says so (``replace=True``, the CLI's ``--overwrite``).

Inputs that do not exist (a built-in network name such as ``yolov3-tiny``) protect nothing.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from foldkit.errors import FoldkitError

PathLike = str | os.PathLike
DESCRIPTOR_LINK = re.compile(r"/proc/[^/]+/fd/\d+")  # /dev/stdout, /dev/fd/N and /proc/self/fd/N end here
MAX_LINK_HOPS = 40  # the kernel's own limit on symlinks followed in one lookup


@dataclass(frozen=True)
class Target:
    """An output path resolved: ``path`` is what gets replaced (or, for a stream, opened)."""

    given: Path
    path: Path
    stream: bool = False


def _identity(path: Path) -> tuple:
    """What makes two paths the same file: (device, inode) when it exists, else the resolved path."""
    try:
        info = path.stat()
        return ("inode", info.st_dev, info.st_ino)
    except OSError:
        return ("path", str(path.resolve()))


def _through_descriptor(path: Path) -> bool:
    """Whether ``path`` reaches a file through a /proc/PID/fd/N link (whatever that descriptor is)."""
    hop = Path(os.path.abspath(path))
    for _ in range(MAX_LINK_HOPS):
        if DESCRIPTOR_LINK.fullmatch(os.path.join(os.path.realpath(hop.parent), hop.name)):
            return True
        if not hop.is_symlink():
            return False
        hop = Path(os.path.abspath(hop.parent / os.readlink(hop)))
    return False


def resolve_output(raw: PathLike) -> Target:
    """``raw`` as an output file: where it is written, or a one-line FoldkitError saying why not."""
    text = os.fspath(raw)
    if text == "":
        raise FoldkitError("an output path is empty")
    if text.endswith(("/", os.sep, "/.", "/..")) or text in (".", ".."):
        raise FoldkitError(f"{text}: ends in '/', which names a folder; give a file path")
    given = Path(text)
    try:
        info = os.stat(given)
    except FileNotFoundError:
        if given.is_symlink():
            raise FoldkitError(f"{given}: is a symlink to a missing file ({os.readlink(given)}); "
                               "refusing to follow it") from None
        return Target(given, _existing_folder(given) / given.name)
    except OSError as exc:
        raise FoldkitError(f"{given}: cannot use as an output: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise FoldkitError(f"{given}: is a folder; give a file path")
    if stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode) or _through_descriptor(given):
        return Target(given, given, stream=True)
    if not stat.S_ISREG(info.st_mode):
        raise FoldkitError(f"{given}: exists and is not a regular file, a character device or a FIFO; "
                           "refusing to replace it")
    real = Path(os.path.realpath(given))
    _existing_folder(real)
    return Target(given, real)


def _existing_folder(path: Path) -> Path:
    """The resolved folder ``path`` would be written in; it must exist and be writable."""
    folder = path.parent
    if not folder.is_dir():
        raise FoldkitError(f"{path}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FoldkitError(f"{path}: output folder {folder} is not writable")
    return folder.resolve()


def brought_along(inputs: Iterable[PathLike | None]) -> list[Path]:
    """Every existing input file, a folder input standing for the regular files directly in it."""
    files: list[Path] = []
    for path in (Path(p) for p in inputs if p is not None and os.fspath(p) != ""):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file())
        elif path.exists():
            files.append(path)
    return files


class Protected:
    """The files no output may replace: the inputs (and what they bring along), then the outputs so far."""

    def __init__(self, inputs: Iterable[PathLike | None] = ()) -> None:
        self._inputs = {_identity(path): path for path in brought_along(inputs)}
        self._outputs: dict[tuple, Path] = {}

    def add_inputs(self, inputs: Iterable[PathLike | None]) -> None:
        for path in brought_along(inputs):
            self._inputs.setdefault(_identity(path), path)

    def claim(self, target: Target, *, replace: bool = True) -> Target:
        """Record ``target`` as an output; refuse an input, an output claimed before, or (unless ``replace``) a file."""
        key = _identity(target.path)
        for role, owners in (("the input", self._inputs), ("another output", self._outputs)):
            if key in owners and not (target.stream and owners is self._outputs):  # a stream takes them in turn
                raise FoldkitError(f"{target.given}: is {role} ({owners[key]}); refusing to overwrite {role}, "
                                   "choose another path")
        if not replace and not target.stream and target.path.exists():
            raise FoldkitError(f"{target.given}: exists and was not written by this run; refusing to replace it "
                               "(choose another folder, or pass --overwrite)")
        self._outputs[key] = target.given
        return target


def check_outputs(outputs: Iterable[PathLike | None], inputs: Iterable[PathLike | None] = (), *,
                  replace: bool = True) -> list[Target]:
    """Resolve every output before any work and refuse what would destroy an input or collide.

    ``None`` entries (an optional output not asked for) are skipped.
    """
    protected = Protected(inputs)
    return [protected.claim(resolve_output(raw), replace=replace) for raw in outputs if raw is not None]
