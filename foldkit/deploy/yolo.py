"""YOLO around an ONNX model: decode and non-maximum suppression, in numpy, as ``darknet detect`` does.

Decoding is :func:`foldkit.darknet.head_decode.decode_head` (the formula the in-graph decoder
traces too) run on numpy arrays in float64. Thresholds are Darknet's (get_yolo_detections): a box
is a candidate when objectness > conf, and each class with ``objectness × class score > conf`` is
a detection, so one box can carry several classes. Suppression is do_nms_sort's: per class, in
descending score, a box is dropped when a kept box of its class overlaps it by more than ``iou``
(IoU of the unclipped boxes); computed on the IoU matrix as a fixed point (no Python loop over
boxes). Boxes go back to the image through the letterbox's correction (:mod:`.letterbox`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from foldkit import strict_json
from foldkit.darknet.head_decode import HEAD_NAMES, HeadSpec, decode_head
from foldkit.defaults import HEAD_KINDS
from foldkit.deploy.letterbox import Letterbox, unletterbox
from foldkit.errors import FoldkitError
from foldkit.onnxio.metadata import YOLO_HEADS_KEY

MAX_CANDIDATES = 4096  # per image, by score, before suppression (the IoU matrix is candidates²)


@dataclass
class Detection:
    class_id: int
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original image pixels
    label: str = ""

    def to_dict(self) -> dict:
        return {"class_id": self.class_id, "label": self.label, "score": round(self.score, 6),
                "box": [round(v, 3) for v in self.box]}


def heads_from_metadata(metadata: dict[str, str]) -> list[HeadSpec] | None:
    """Head specs from foldkit's ONNX metadata (``foldkit.yolo_heads``), or None if absent."""
    if YOLO_HEADS_KEY not in metadata:
        return None
    try:
        described = strict_json.loads(metadata[YOLO_HEADS_KEY])
        heads = [_head_spec(h) for h in described]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FoldkitError(f"malformed {YOLO_HEADS_KEY} metadata in the model ({type(exc).__name__}: {exc}); "
                           "pass --classes and --anchors instead") from None
    if not heads:
        raise FoldkitError(f"{YOLO_HEADS_KEY} metadata in the model lists no heads")
    return heads


def _head_spec(h: dict) -> HeadSpec:
    """One head of the metadata, checked: positive class count, finite positive anchor pairs."""
    kind = h.get("kind", "yolo")
    if kind == "region" and (h.get("coords", 4) != 4 or h.get("tree")):
        raise FoldkitError("cannot decode a [region] head with coords ≠ 4 or a tree= hierarchy (yolo9000); "
                           "export it with raw heads and decode it yourself")
    anchors = tuple((float(w), float(h_)) for w, h_ in h["anchors"])
    classes = h["classes"]
    if kind not in HEAD_KINDS or not isinstance(classes, int) or classes < 1 or not anchors or not all(
            math.isfinite(v) and v > 0 for pair in anchors for v in pair):
        raise ValueError(f"head {h!r} needs a kind yolo/region, classes ≥ 1 and finite positive anchors")
    return HeadSpec(anchors, classes, float(h.get("scale_x_y", 1.0)), bool(h.get("new_coords", False)), kind,
                    bool(h.get("softmax", True)))


def parse_anchors(text: str, classes: int, scale_x_y: float = 1.0, kind: str = "yolo") -> list[HeadSpec]:
    """``"w,h,w,h,…;w,h,…"``: each head's anchors in output order, heads separated by ';'.

    Anchors are in input pixels for ``kind="yolo"`` and in grid cells for ``kind="region"``, as in the cfg.
    """
    heads = []
    for part in text.split(";"):
        try:
            values = [float(v) for v in part.replace(" ", "").split(",") if v]
        except ValueError:
            raise FoldkitError(f"--anchors: {part!r} is not a comma-separated list of numbers") from None
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise FoldkitError(f"--anchors: anchor sizes must be finite and positive, not {part!r}")
        if not values or len(values) % 2:
            raise FoldkitError(f"--anchors: each head needs (w, h) pairs, got {len(values)} values in {part!r}")
        heads.append(HeadSpec(tuple(zip(values[0::2], values[1::2], strict=True)), classes, scale_x_y, kind=kind))
    return heads


class NumpyOps:
    """:class:`~foldkit.darknet.head_decode.ArrayOps` for numpy (float64 in, float64 out)."""

    @staticmethod
    def sigmoid(x: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic

    exp = staticmethod(np.exp)

    @staticmethod
    def softmax(x: np.ndarray) -> np.ndarray:
        exp = np.exp(x - x.max(axis=-1, keepdims=True))
        return exp / exp.sum(axis=-1, keepdims=True)

    @staticmethod
    def concat(parts: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts, axis=-1)

    permute = staticmethod(np.transpose)

    @staticmethod
    def arange(n: int, like: np.ndarray) -> np.ndarray:
        return np.arange(n, dtype=like.dtype)

    @staticmethod
    def constant(values: Sequence[float], like: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=like.dtype)


def decode_heads(heads: list[np.ndarray], specs: list[HeadSpec], input_size: tuple[int, int]) -> np.ndarray:
    """Raw head maps (N, A·(5+C), H, W) → (N, boxes, 4 + 1 + C): cx, cy, w, h in input pixels, obj, classes."""
    if len(heads) != len(specs):
        raise FoldkitError(f"the model has {len(heads)} outputs but {len(specs)} YOLO heads are described")
    decoded = []
    for raw, spec in zip(heads, specs, strict=True):
        count = len(spec.anchors)
        if raw.ndim != 4 or raw.shape[1] != count * spec.depth:
            raise FoldkitError(
                f"output of shape {list(raw.shape)} is not a {HEAD_NAMES[spec.kind]} head with {count} anchors "
                f"× (5 + {spec.classes})"
            )
        anchors = np.asarray(spec.anchors, dtype=np.float64).reshape(1, count, 1, 1, 2)
        decoded.append(decode_head(raw.astype(np.float64), spec, anchors, input_size, NumpyOps()))
    return np.concatenate(decoded, axis=1)


def _iou_matrix(boxes: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    area = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    iw = (np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None])).clip(0)
    ih = (np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None])).clip(0)
    inter = iw * ih
    union = area[:, None] + area[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """Class-aware greedy NMS; returns kept indices by descending score.

    Greedy suppression keeps box j unless a kept, higher-scored box of its class overlaps it by
    more than ``iou``. That rule has one fixed point, reached by iterating it from "keep all" on
    the whole IoU matrix at once; each step settles at least one more box in score order.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, classes = boxes[order], classes[order]
    overlaps = (_iou_matrix(boxes) > iou) & (classes[:, None] == classes[None])
    overlaps = np.triu(overlaps, k=1)  # i suppresses j only if i ranks before j
    keep = np.ones(len(order), dtype=bool)
    while True:
        updated = ~(overlaps & keep[:, None]).any(axis=0)
        if np.array_equal(updated, keep):
            return order[keep]
        keep = updated


def postprocess(
    decoded: np.ndarray, letterboxes: list[Letterbox], *, conf: float = 0.25, iou: float = 0.45,
    names: list[str] | None = None,
) -> list[list[Detection]]:
    """(N, boxes, 5 + C) decoded predictions → detections per image, in original-image pixels."""
    results = []
    for predictions, info in zip(decoded, letterboxes, strict=True):
        objectness = predictions[:, 4]
        probabilities = objectness[:, None] * predictions[:, 5:]
        rows, class_ids = np.nonzero((objectness[:, None] > conf) & (probabilities > conf))
        scores = probabilities[rows, class_ids]
        if len(scores) > MAX_CANDIDATES:
            top = np.argsort(-scores, kind="stable")[:MAX_CANDIDATES]
            rows, class_ids, scores = rows[top], class_ids[top], scores[top]
        cx, cy, w, h = (predictions[rows, i] for i in range(4))
        corners = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        kept = nms(corners, scores, class_ids, iou) if len(scores) else np.zeros(0, dtype=int)
        original = unletterbox(corners[kept], info)
        results.append([
            Detection(int(c), float(s), (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                      names[c] if names and c < len(names) else str(int(c)))
            for c, s, box in zip(class_ids[kept], scores[kept], original, strict=True)
        ])
    return results
