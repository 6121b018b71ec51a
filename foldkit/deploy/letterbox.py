"""Fitting an image into a network's input, and mapping boxes back: Darknet's way by default.

``resize="darknet"`` (the default) is pjreddie's ``letterbox_image`` and ``correct_yolo_boxes``
(:mod:`foldkit.darknet.preprocess`): the input tensor is bit-identical to Darknet's, so a network
exported from a Darknet cfg gives ``darknet detect``'s detections. ``resize="pil"`` keeps the same
layout (aspect ratio kept, centred, 0.5 gray) but resizes with PIL's antialiasing bilinear filter,
which some models trained outside Darknet expect; boxes then map back through the integer padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from foldkit.darknet.preprocess import box_correction, embed_image, letterbox_image, letterbox_size
from foldkit.defaults import DEFAULT_RESIZE, RESIZE_METHODS
from foldkit.errors import FoldkitError


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the network input: ``input = original·scale + offset``, per axis."""

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    width: int
    height: int
    resize: str = DEFAULT_RESIZE

    @classmethod
    def identity(cls, width: int, height: int) -> Letterbox:
        """The image is the input: boxes come back unchanged (but clipped to it)."""
        return cls(1.0, 1.0, 0.0, 0.0, width, height)


def check_resize(resize: str) -> str:
    """``resize`` if it names a method, else a one-line error listing them."""
    if resize not in RESIZE_METHODS:
        raise FoldkitError(f"unknown resize {resize!r}; choose one of {', '.join(RESIZE_METHODS)}")
    return resize


def letterbox(image: np.ndarray, size: tuple[int, int], resize: str = DEFAULT_RESIZE) -> tuple[np.ndarray, Letterbox]:
    """An HWC uint8 RGB image → a 1×3×H×W float32 input in [0, 1] (``size`` is (H, W)), and how to map back."""
    check_resize(resize)
    if resize == "pil":
        return _pil_letterbox(image, size)
    (height, width), (net_h, net_w) = image.shape[:2], size
    tensor, _ = letterbox_image(image, net_w, net_h)
    return tensor[None], Letterbox(*box_correction(width, height, net_w, net_h), width, height, resize)


def _pil_letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Darknet's new size and placement, resized by PIL (antialiasing bilinear); boxes map back from the placement."""
    from PIL import Image

    (height, width), (net_h, net_w) = image.shape[:2], size
    new_w, new_h = letterbox_size(width, height, net_w, net_h)
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR), dtype=np.float32)
    canvas = embed_image(resized.transpose(2, 0, 1) / np.float32(255), net_w, net_h)
    left, top = (net_w - new_w) // 2, (net_h - new_h) // 2
    return canvas[None], Letterbox(new_w / width, new_h / height, left, top, width, height, "pil")


def unletterbox(boxes: np.ndarray, info: Letterbox) -> np.ndarray:
    """x1, y1, x2, y2 in network-input pixels → original-image pixels (float64), clipped to the image."""
    out = boxes.astype(np.float64).copy()
    out[..., [0, 2]] = ((out[..., [0, 2]] - info.offset_x) / info.scale_x).clip(0, info.width)
    out[..., [1, 3]] = ((out[..., [1, 3]] - info.offset_y) / info.scale_y).clip(0, info.height)
    return out
