"""The input size each image runs at: the model's one size, or, for a dynamic model, a "rect" letterbox.

``letterbox="square"`` fits every image into the run size (the model's fixed size, or the
``--img-size`` a dynamic model runs at), Darknet's letterbox arithmetic as always. ``"rect"``
(Ultralytics' rectangular inference) first fits the image into that size the same way, then trims
the canvas: each side only up to the next multiple of the network stride. The image is resized to
exactly the size the square letterbox gives it (the tests check it), so detections are those of
the square letterbox on less gray border — fewer pixels to run. Boxes map back through Darknet's
``correct_yolo_boxes`` of the rect canvas (:func:`foldkit.darknet.preprocess.box_correction`).

Images of different rect sizes cannot share a batch tensor: :func:`size_groups` groups a batch by
size, and each group runs on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from foldkit.darknet.preprocess import letterbox_size
from foldkit.defaults import DEFAULT_LETTERBOX, LETTERBOX_MODES
from foldkit.errors import FoldkitError
from foldkit.onnxio.input_size import InputSize, Size, input_size
from foldkit.runtime import Predictor


def check_letterbox(mode: str) -> str:
    """``mode`` if it names a letterbox mode, else a one-line error listing them."""
    if mode not in LETTERBOX_MODES:
        raise FoldkitError(f"unknown letterbox {mode!r}; choose one of {', '.join(LETTERBOX_MODES)}")
    return mode


def run_size(predictor: Predictor, requested: int | Size | None, mode: str = DEFAULT_LETTERBOX
             ) -> tuple[InputSize, Size]:
    """A predictor's input size and the size to run it at; a rect letterbox needs a dynamic model."""
    sizing = input_size(predictor.input_shape, predictor.metadata, str(predictor.path))
    return sizing, choose_size(sizing, requested if requested is not None else predictor.image_size, mode)


def choose_size(sizing: InputSize, requested: int | Size | None, mode: str) -> Size:
    """:meth:`InputSize.choose`, and a rect letterbox refused for a model whose size is fixed."""
    chosen = sizing.choose(requested)
    if check_letterbox(mode) == "rect" and not sizing.dynamic:
        raise FoldkitError(f"{sizing.where}: a rect letterbox needs a model with a dynamic height and width "
                           f"(this one is fixed at {chosen[0]}x{chosen[1]}); export it with --img-size dynamic")
    return chosen


def rect_size(width: int, height: int, size: Size, stride: Size) -> Size:
    """(H, W) of the rect canvas of a ``width × height`` image fitted into ``size``: each side of the
    letterboxed image rounded up to the next multiple of the stride (never past ``size``)."""
    new_w, new_h = letterbox_size(width, height, size[1], size[0])
    return (min(size[0], math.ceil(new_h / stride[0]) * stride[0]),
            min(size[1], math.ceil(new_w / stride[1]) * stride[1]))


def image_sizes(shapes: Sequence[tuple[int, ...]], size: Size, stride: Size, mode: str) -> list[Size]:
    """The run size of each image (HWC ``shapes``): ``size`` for all, or each one's rect canvas."""
    if check_letterbox(mode) == "square":
        return [size] * len(shapes)
    return [rect_size(shape[1], shape[0], size, stride) for shape in shapes]


def size_groups(sizes: Sequence[Size]) -> list[list[int]]:
    """Indices of the images that share a run size, in order of first appearance: one batch tensor each."""
    groups: dict[Size, list[int]] = {}
    for index, size in enumerate(sizes):
        groups.setdefault(size, []).append(index)
    return list(groups.values())
