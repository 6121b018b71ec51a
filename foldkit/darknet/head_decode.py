"""Darknet's YOLO and region head transforms, written once for every array library that runs them.

The in-graph decoder (:mod:`foldkit.darknet.decode`, torch, traced into ONNX) and ``foldkit detect``
(:mod:`foldkit.deploy.yolo`, numpy) both call :func:`decode_head`; each passes the few
primitives that differ between the libraries (:class:`ArrayOps`). Slicing and arithmetic are
written once here, so a formula fixed for one path is fixed for the other. This module imports
neither numpy nor torch: detect runs without loading PyTorch.

``[yolo]`` (yolo_layer.c): σ on tx, ty, objectness and class scores; ``x·scale_x_y − (scale_x_y − 1)/2``;
centre ``(col + x)·stride``; size ``exp(tw)·anchor_w`` (anchors in input pixels). With
``new_coords=1`` the conv already applied the logistic: x and the scores are used as they are and
the size is ``(2·tw)²·anchor_w``.

``[region]`` (region_layer.c): σ on tx, ty and objectness, ``exp(tw)·anchor_w``
with anchors in grid cells (so times the stride), class scores softmaxed when the section says
``softmax=1`` and left raw otherwise (as AlexeyAB does).

Both give, per (anchor, row, column), ``cx, cy, w, h`` in network-input pixels, objectness and the
class scores (not yet multiplied by objectness).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from foldkit.defaults import HEAD_KINDS
from foldkit.errors import FoldkitError

HEAD_NAMES = {"yolo": "YOLO", "region": "YOLOv2 region"}


@dataclass(frozen=True)
class HeadSpec:
    """What decoding one head map needs.

    ``kind="yolo"``: anchors in input pixels. ``kind="region"`` (YOLOv2): anchors in grid cells,
    classes by softmax; with ``softmax=False`` the class scores stay raw, as AlexeyAB's region layer
    leaves them (pjreddie's applies the logistic).
    """

    anchors: tuple[tuple[float, float], ...]
    classes: int
    scale_x_y: float = 1.0
    new_coords: bool = False
    kind: str = "yolo"
    softmax: bool = True

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise FoldkitError(f"cannot decode a [{self.kind}] head; foldkit decodes {', '.join(HEAD_KINDS)} heads")
        if self.classes < 1 or not self.anchors:
            raise FoldkitError(f"a {self.kind} head needs at least one class and one anchor")

    @property
    def depth(self) -> int:
        """Entries per anchor: x, y, w, h, objectness, then the classes."""
        return self.classes + 5

    @classmethod
    def of(cls, head: Any) -> HeadSpec:
        """The spec of a built network's head (``YoloHead`` or ``RegionHead`` from the cfg)."""
        return cls(tuple((float(w), float(h)) for w, h in head.anchors), head.classes, float(head.scale_x_y),
                   bool(head.new_coords), head.kind, bool(getattr(head, "softmax", True)))


class ArrayOps(Protocol):
    """The primitives :func:`decode_head` needs that numpy and torch spell differently."""

    def sigmoid(self, x: Any) -> Any: ...

    def exp(self, x: Any) -> Any: ...

    def softmax(self, x: Any) -> Any:
        """Over the last axis."""

    def concat(self, parts: Sequence[Any]) -> Any:
        """Along the last axis."""

    def permute(self, x: Any, axes: tuple[int, ...]) -> Any: ...

    def arange(self, n: int, like: Any) -> Any:
        """0 … n−1 in ``like``'s float type."""

    def constant(self, values: Sequence[float], like: Any) -> Any:
        """A 1-D array in ``like``'s float type."""


def decode_head(raw: Any, spec: HeadSpec, anchors: Any, input_size: tuple[int, int], ops: ArrayOps) -> Any:
    """A raw head map (N, A·(5+C), H, W) → (N, A·H·W, 5 + C): cx, cy, w, h in input pixels, objectness, classes.

    ``anchors`` is ``spec.anchors`` as an array of ``raw``'s library, shaped (1, A, 1, 1, 2); the
    strides come from ``input_size`` (H, W) over the map's size: constants in a graph when the size
    is, computed at run time when ``input_size`` is the traced input's shape (a dynamic-size export).
    """
    batch, _, height, width = raw.shape
    count = len(spec.anchors)
    p = ops.permute(raw.reshape(batch, count, spec.depth, height, width), (0, 1, 3, 4, 2))
    stride = (input_size[1] / width, input_size[0] / height)
    cols = ops.arange(width, raw).reshape(1, 1, 1, width)
    rows = ops.arange(height, raw).reshape(1, 1, height, 1)
    if spec.kind == "region":
        entries = _region(p, spec, anchors * ops.constant(stride, raw), ops)
    else:
        entries = _yolo(p, spec, anchors, ops)
    cx = (entries[0][..., 0] + cols) * stride[0]
    cy = (entries[0][..., 1] + rows) * stride[1]
    boxes = ops.concat([cx[..., None], cy[..., None], *entries[1:]])
    return boxes.reshape(batch, count * height * width, spec.depth)


def _yolo(p: Any, spec: HeadSpec, anchors: Any, ops: ArrayOps) -> tuple[Any, ...]:
    """yolo_layer.c: (offsets within the cell, w h in pixels, objectness and classes)."""
    xy = p[..., 0:2] if spec.new_coords else ops.sigmoid(p[..., 0:2])
    xy = xy * spec.scale_x_y - 0.5 * (spec.scale_x_y - 1.0)
    wh = (2.0 * p[..., 2:4]) ** 2 * anchors if spec.new_coords else ops.exp(p[..., 2:4]) * anchors
    scores = p[..., 4:] if spec.new_coords else ops.sigmoid(p[..., 4:])
    return xy, wh, scores


def _region(p: Any, spec: HeadSpec, anchors_px: Any, ops: ArrayOps) -> tuple[Any, ...]:
    """region_layer.c: (offsets within the cell, w h in pixels, objectness, classes)."""
    classes = ops.softmax(p[..., 5:]) if spec.softmax else p[..., 5:]
    return ops.sigmoid(p[..., 0:2]), ops.exp(p[..., 2:4]) * anchors_px, ops.sigmoid(p[..., 4:5]), classes
