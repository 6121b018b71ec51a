"""Outputs written in full before they appear: staged beside their targets, renamed together.

Each output is written into a private staging folder (``.foldkit-XXXXXXXX.tmp``) created in its
target's folder, under the target's own name: a file and the files it refers to by relative name
(a model and its external data) can be opened there before they are renamed, and a legal
255-character name stays legal. :meth:`OutputTransaction.commit` gives each file the mode a new
file gets under the umask and renames it over its target (a stream target, see
:mod:`foldkit.onnxio.outputs`, is written through instead); a failure, an interrupt or SIGTERM
removes every staged file and leaves every target as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from foldkit.errors import FoldkitError
from foldkit.onnxio.outputs import PathLike, Protected, Target, resolve_output

STAGING_PREFIX, STAGING_SUFFIX = ".foldkit-", ".tmp"


def _new_file_mode() -> int:
    """The mode a new regular file gets under the current umask (0666 & ~umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_DEFERRED_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGTERM and SIGINT while the bookkeeping of staged files changes.

    A staged file created but not yet recorded (or renamed but still recorded) would escape
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


def write_through(source: Path, stream: Path) -> None:
    """Append ``source``'s bytes to the stream at ``stream``: it is opened, never created or truncated.

    A FIFO without a reader is refused rather than waited on.
    """
    try:
        fd = os.open(stream, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
    except OSError as exc:
        raise FoldkitError(f"{stream}: cannot write to it: {exc.strerror}") from None
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        with open(source, "rb") as handle, open(fd, "wb", closefd=False) as out:
            shutil.copyfileobj(handle, out)
    finally:
        os.close(fd)


class OutputTransaction:
    """Outputs staged beside their targets and renamed into place together.

    ``path(target)`` hands out the staging path for ``target`` after resolving it and checking it
    against ``protected`` (the inputs and the outputs claimed so far); :meth:`commit` renames every
    staged file over its target, :meth:`rollback` removes them (and the folders :meth:`make_folder`
    created). Used as a context manager it commits on success and rolls back on any exception,
    KeyboardInterrupt and SystemExit (SIGTERM, see the CLI) included.
    """

    def __init__(self, inputs: Iterable[PathLike | None] = (), *, replace: bool = True) -> None:
        self.protected = Protected(inputs)
        self.replace = replace
        self._pending: list[tuple[Path, Target]] = []
        self._made: list[Path] = []
        self._staging: dict[Path, Path] = {}  # target folder (or None for streams) → staging folder

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

    def _staging_folder(self, folder: Path | None) -> Path:
        key = folder if folder is not None else Path("<streams>")
        if key not in self._staging:
            try:
                made = tempfile.mkdtemp(prefix=STAGING_PREFIX, suffix=STAGING_SUFFIX, dir=folder)
            except OSError as exc:
                raise FoldkitError(f"cannot write in {folder or tempfile.gettempdir()}: {exc.strerror}") from None
            self._staging[key] = Path(made)
        return self._staging[key]

    def path(self, target: PathLike | Target, *, replace: bool | None = None) -> Path:
        """The staging path of ``target`` (resolved and checked here); the file is created empty."""
        resolved = target if isinstance(target, Target) else resolve_output(target)
        self.protected.claim(resolved, replace=self.replace if replace is None else replace)
        with _signals_deferred():
            folder = self._staging_folder(None if resolved.stream else resolved.path.parent)
            staged = folder / resolved.path.name
            try:
                staged.touch(exist_ok=False)
            except OSError as exc:
                raise FoldkitError(f"{resolved.given}: cannot write in {folder.parent}: {exc.strerror}") from None
            self._pending.append((staged, resolved))
        return staged

    def write_bytes(self, target: PathLike | Target, data: bytes) -> None:
        self.path(target).write_bytes(data)

    def write_text(self, target: PathLike | Target, text: str) -> None:
        self.path(target).write_text(text, encoding="utf-8")

    def commit(self) -> None:
        mode = _new_file_mode()
        for staged, _ in self._pending:
            os.chmod(staged, mode)
        for staged, target in self._pending:  # streams first: a stream that cannot be written renames nothing
            if target.stream:
                write_through(staged, target.path)
        with _signals_deferred():  # all renamed and forgotten, or none
            for staged, target in self._pending:
                if not target.stream:
                    os.replace(staged, target.path)
            self._pending.clear()
            self._made.clear()
        self._remove_staging()

    def rollback(self) -> None:
        for staged, _ in self._pending:
            staged.unlink(missing_ok=True)
        self._pending.clear()
        self._remove_staging()
        for folder in reversed(self._made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._made.clear()

    def _remove_staging(self) -> None:
        for folder in self._staging.values():
            shutil.rmtree(folder, ignore_errors=True)
        self._staging.clear()

    def __enter__(self) -> OutputTransaction:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self.rollback()
            return
        try:
            self.commit()
        except BaseException:
            self.rollback()
            raise


@contextlib.contextmanager
def atomic_path(target: PathLike, inputs: Iterable[PathLike | None] = ()) -> Iterator[Path]:
    """Yield a staging path for ``target``; it replaces ``target`` on success."""
    with OutputTransaction(inputs) as transaction:
        yield transaction.path(target)


def write_atomic(target: PathLike, writer: Callable[[Path], None], inputs: Iterable[PathLike | None] = ()) -> None:
    """Call ``writer(staging_path)`` and move the result to ``target`` atomically."""
    with atomic_path(target, inputs) as tmp:
        writer(tmp)


def write_text_atomic(target: PathLike, text: str, inputs: Iterable[PathLike | None] = ()) -> None:
    with atomic_path(target, inputs) as tmp:
        tmp.write_text(text, encoding="utf-8")
