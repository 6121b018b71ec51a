"""Darknet's own preprocessing and box correction, as pjreddie's ``darknet detect`` does them, vectorized.

``letterbox_image`` (src/image.c) fits an image into the network input keeping its aspect ratio:
the new size is computed in integers, the image is resized by ``resize_image`` and embedded, centred
(integer offsets), in a canvas filled with 0.5. ``resize_image`` is not an ordinary bilinear filter:
it point-samples two passes, columns first, at ``c·(W−1)/(w−1)`` (float32 arithmetic throughout),
takes the last source column as is for the last output column, and for the last output row keeps only
the ``(1 − dy)`` term — so that row is slightly darker whenever its sample position falls short of the
last source row. PIL's resize differs from it by up to 0.47 on a photo, enough to move yolov3-tiny's
scores by 0.14 and lose detections (docs/darknet-detect.md), which is why detections only match
Darknet's when this arithmetic is reproduced exactly.

``correct_yolo_boxes`` / ``correct_region_boxes`` (yolo_layer.c, region_layer.c) map boxes back to
the image with the offset ``(net − new)/2`` as a real number (the embedding used the integer
half), and per-axis scales ``new_w/width`` and ``new_h/height``; :func:`box_correction` gives that
map in network-input pixels.

Every step is whole-array numpy in float32, so the tensor is bit-identical to libdarknet's (the
tests compare them with it). Where Darknet's arithmetic is undefined — a resize to one pixel row,
``0·∞`` — the last source row is used, as Darknet's column pass does for one column; a letterboxed
side that would round to 0 pixels is given 1.
"""

from __future__ import annotations

import numpy as np

LETTERBOX_FILL = 0.5  # the gray Darknet's letterbox_image fills the canvas with


def to_unit(image: np.ndarray) -> np.ndarray:
    """A uint8 image → float32 in [0, 1] as Darknet's loader computes it, ``(float)byte/255.``.

    Darknet divides in double and rounds once to float32; for the 256 byte values a float32
    division gives the same numbers (the tests check all of them), at a fraction of the cost.
    """
    return image.astype(np.float32) / np.float32(255)


def letterbox_size(width: int, height: int, net_w: int, net_h: int) -> tuple[int, int]:
    """The resized image's (new_w, new_h) inside a ``net_w × net_h`` input: letterbox_image's integer rule."""
    if np.float32(net_w) / np.float32(width) < np.float32(net_h) / np.float32(height):
        return net_w, max(1, height * net_w // width)
    return max(1, width * net_h // height), net_h


def _positions(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Where resize_image samples one axis: the integer position and float32 fraction of each output pixel.

    ``c·((source − 1)/(target − 1))`` in float32, truncated. A one-pixel source is read at its pixel;
    a one-pixel target (0·∞ in Darknet) at the last source pixel.
    """
    if source == 1 or target == 1:
        return np.full(target, source - 1), np.zeros(target, dtype=np.float32)
    scale = np.float32(source - 1) / np.float32(target - 1)
    position = np.arange(target, dtype=np.float32) * scale
    index = position.astype(np.int64)
    return index, position - index.astype(np.float32)


def resize_image(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Darknet's ``resize_image`` of a C×H×W image (Darknet's planar layout) to C × ``height`` × ``width``, float32.

    Columns: ``(1 − dx)·p[ix] + dx·p[ix + 1]``, the last column copied. Rows: ``(1 − dy)·q[iy]``,
    plus ``dy·q[iy + 1]`` on every row but the last (and none when the source has one row).
    ``pixels`` is float32, or uint8 read as Darknet's loader reads bytes (:func:`to_unit`). Only
    the source rows and columns that are sampled are converted and filtered: a 12-megapixel photo
    costs little more than a small one.
    """
    source_h, source_w = pixels.shape[1:]
    iy, dy = _positions(source_h, height)
    rows, where = np.unique(np.concatenate([iy, np.minimum(iy + 1, source_h - 1)]), return_inverse=True)
    ix, dx = _positions(source_w, width)
    ix[-1], dx[-1] = source_w - 1, 0  # the last column is copied, whatever its sample position
    sampled = pixels[:, rows]
    left, right = np.take(sampled, ix, axis=2), np.take(sampled, np.minimum(ix + 1, source_w - 1), axis=2)
    if pixels.dtype == np.uint8:
        left, right = to_unit(left), to_unit(right)
    columns = (1 - dx) * left + dx * right
    out = (1 - dy)[:, None] * columns[:, where[:height]]
    if source_h > 1:  # the last row keeps only its (1 − dy) term
        out[:, :-1] += dy[:-1, None] * columns[:, where[height:-1]]
    return out


def embed_image(resized: np.ndarray, net_w: int, net_h: int) -> np.ndarray:
    """A C×h×w image centred (integer offsets) on a C×net_h×net_w canvas of 0.5: letterbox_image's embedding."""
    channels, new_h, new_w = resized.shape
    canvas = np.full((channels, net_h, net_w), LETTERBOX_FILL, dtype=np.float32)
    left, top = (net_w - new_w) // 2, (net_h - new_h) // 2
    canvas[:, top:top + new_h, left:left + new_w] = resized
    return canvas


def letterbox_image(image: np.ndarray, net_w: int, net_h: int) -> tuple[np.ndarray, tuple[int, int]]:
    """An HWC uint8 RGB image → Darknet's letterboxed 3×net_h×net_w float32 input, and (new_w, new_h)."""
    height, width = image.shape[:2]
    new_w, new_h = letterbox_size(width, height, net_w, net_h)
    return embed_image(resize_image(image.transpose(2, 0, 1), new_w, new_h), net_w, net_h), (new_w, new_h)


def box_correction(width: int, height: int, net_w: int, net_h: int) -> tuple[float, float, float, float]:
    """correct_yolo_boxes as an affine map in input pixels: ``image = (input − offset)/scale`` per axis.

    Returns (scale_x, scale_y, offset_x, offset_y): scales ``new/original``, offsets ``(net − new)/2``.
    """
    new_w, new_h = letterbox_size(width, height, net_w, net_h)
    return new_w / width, new_h / height, (net_w - new_w) / 2, (net_h - new_h) / 2
