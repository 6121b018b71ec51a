"""What the CLI tells a person while and after a command runs: errors, warnings, progress.

Printing lives here, apart from the commands, so every command speaks with one voice: one line per
error or warning, prefixed ``foldkit COMMAND:``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import TextIO


def one_line(text: str) -> str:
    """The text with control characters escaped, so a file name with a newline stays on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def fail(command: str, message: str, code: int) -> int:
    """One line on stderr, whatever the message quotes; returns the exit code."""
    print(f"foldkit {command}: {one_line(message)}", file=sys.stderr)
    return code


@contextlib.contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """Every warning raised while a command runs is one line in foldkit's voice (no source line), once."""
    seen: set[str] = set()

    def show(message: Warning | str, *_args: object, **_kwargs: object) -> None:
        text = one_line(str(message).strip().splitlines()[0] if str(message).strip() else type(message).__name__)
        if text not in seen:
            seen.add(text)
            print(f"foldkit {command}: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


class _QuietStream:
    """A stdout that goes quiet once its reader has gone (``foldkit inspect … | head``).

    The command still runs to its end and returns its real exit code; what it would have printed
    after the pipe closed is dropped instead of ending in "error: Broken pipe".
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.closed_by_reader = False

    def write(self, text: str) -> int:
        if not self.closed_by_reader:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def flush(self) -> None:
        if not self.closed_by_reader:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self) -> None:
        self.closed_by_reader = True
        with contextlib.suppress(OSError, ValueError):  # no flush at exit into the closed pipe
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


@contextlib.contextmanager
def quiet_on_closed_pipe() -> Iterator[None]:
    original = sys.stdout
    sys.stdout = _QuietStream(original)
    try:
        yield
    finally:
        sys.stdout = original


def progress_bar(unit: str = "it") -> Callable[[int, int, str], None] | None:
    """A tqdm progress callback ``(done, total, label)`` on a terminal (rate in ``unit``/s, ETA); None otherwise."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar: tqdm | None = None

    def update(done: int, total: int, label: str) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, file=sys.stderr, leave=False, dynamic_ncols=True, unit=unit)
        bar.set_description_str(label[:40])
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def status_lines() -> Callable[[str], None] | None:
    """Status lines for long steps (calibration, sensitivity) on a terminal; quiet otherwise."""
    if not sys.stderr.isatty():
        return None
    return lambda message: print(f"  {message}", file=sys.stderr, flush=True)
