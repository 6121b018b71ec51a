"""A model's image input size as deployment sees it: fixed by the graph, or free in multiples of a stride.

A foldkit export with ``--img-size dynamic`` declares height and width symbolic and records the
size it was traced at (``foldkit.input_shape``) and the network stride (``foldkit.stride``). Every
command that must run such a model at a concrete size (detect, bench, the Triton handlers) asks
:meth:`InputSize.choose`: the size asked for, else the traced one; a fixed model runs only at its
own size; a dynamic one only at multiples of its stride (the network's routes concatenate maps of
equal size only there, and its heads decode a whole grid).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from foldkit.errors import FoldkitError
from foldkit.limits import ensure_fits
from foldkit.onnxio.metadata import INPUT_SHAPE_KEY, STRIDE_KEY

Size = tuple[int, int]  # (height, width)


@dataclass(frozen=True)
class InputSize:
    """``fixed`` is (H, W) when the graph fixes them, else None; ``default`` the traced size; ``stride`` (y, x)."""

    fixed: Size | None
    default: Size | None
    stride: Size = (1, 1)
    where: str = "the model"

    @property
    def dynamic(self) -> bool:
        return self.fixed is None

    def choose(self, requested: int | Size | None) -> Size:
        """The size to run at: ``requested`` (N or (H, W)), else the model's own; refused in one line when
        a fixed model is asked for another size or a dynamic one for a size off its stride."""
        size = (requested, requested) if isinstance(requested, int) else requested
        if self.fixed is not None:
            if size is not None and size != self.fixed:
                raise FoldkitError(f"{self.where}: the input size is fixed at {_text(self.fixed)}, not "
                                   f"{_text(size)}; export the network with --img-size dynamic (or at this size)")
            return self.fixed
        if size is None:  # the size the model was exported at: proven by the export, whatever the stride
            if self.default is None:
                raise FoldkitError(f"{self.where}: the input's height and width are dynamic and the model states "
                                   "no size; give --img-size")
            return self.default
        self.check(size)
        return size

    def check(self, size: Size) -> None:
        """A dynamic model's size must be a positive multiple of its stride, per axis, and its float32
        RGB input alone must fit in memory (a typo such as 41600 is refused before anything runs)."""
        if min(size) < 1 or size[0] % self.stride[0] or size[1] % self.stride[1]:
            stride = str(self.stride[0]) if self.stride[0] == self.stride[1] else _text(self.stride)
            raise FoldkitError(f"{self.where}: input size {_text(size)} is not a multiple of the network stride "
                               f"{stride}")
        ensure_fits(4.0 * 3 * size[0] * size[1], f"{self.where}: an input image of {_text(size)}")


def _text(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def input_size(shape: Sequence, metadata: dict[str, str], where: str) -> InputSize:
    """The input size of a model whose one input has ``shape`` (NCHW, ints where fixed)."""
    if len(shape) != 4:
        raise FoldkitError(f"{where}: input shape {list(shape)} is not NCHW")
    height, width = (d if isinstance(d, int) and d > 0 else None for d in shape[2:])
    if height is not None and width is not None:
        return InputSize((height, width), (height, width), declared_stride(metadata, where), where)
    if (height, width) != (None, None):
        raise FoldkitError(f"{where}: input shape {list(shape)} fixes one of height and width but not the other")
    return InputSize(None, _traced(metadata), declared_stride(metadata, where), where)


def declared_stride(metadata: dict[str, str], where: str) -> Size:
    """``foldkit.stride`` ("32" or "HxW"), or (1, 1) for a model that states none."""
    text = metadata.get(STRIDE_KEY)
    if text is None:
        return (1, 1)
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise FoldkitError(f"{where}: malformed {STRIDE_KEY} metadata {text!r}")
    return (parts[0], parts[-1])


def _traced(metadata: dict[str, str]) -> Size | None:
    try:
        shape = json.loads(metadata.get(INPUT_SHAPE_KEY, "null"))
    except ValueError:
        return None
    if isinstance(shape, list) and len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:]):
        return (shape[2], shape[3])
    return None
