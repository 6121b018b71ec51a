"""Image sources named on the command line: files, folders, list files and glob patterns.

A ``.txt`` argument is a list file, one image path per line, as Darknet's ``train.txt`` and
``valid.txt`` are: relative lines are relative to the current folder, as Darknet reads them. An
argument with ``*``, ``?`` or ``[`` that is not an existing path is a glob pattern (``**`` recurses).
Folders are left for :func:`foldkit.deploy.detect.collect_images` to expand.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from foldkit.errors import FoldkitError
from foldkit.onnxio.files import require_input_file

LIST_SUFFIX = ".txt"
GLOB_CHARACTERS = frozenset("*?[")


def expand_sources(inputs: Sequence[str | os.PathLike]) -> list[str | os.PathLike]:
    """``inputs`` with each list file replaced by its lines and each glob pattern by its sorted matches."""
    expanded: list[str | os.PathLike] = []
    for item in inputs:
        text = os.fspath(item)
        if Path(text).suffix.lower() == LIST_SUFFIX and Path(text).exists():
            expanded += _list_file(Path(text))
        elif GLOB_CHARACTERS & set(text) and not Path(text).exists():
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise FoldkitError(f"{text}: the pattern matches no file")
            expanded += matches
        else:
            expanded.append(item)
    return expanded


def _list_file(path: Path) -> list[str]:
    try:
        text = require_input_file(path, "image list").read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FoldkitError(f"{path}: an image list must be UTF-8 text, one path per line") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise FoldkitError(f"{path}: the image list names no image")
    return lines
