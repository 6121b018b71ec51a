"""YOLO around an ONNX model: letterbox in, decode and non-maximum suppression out, all in numpy.

Decoding follows Darknet's yolo layer (σ on x, y, objectness and classes; ``scale_x_y``; grid
offsets; ``exp(tw)·anchor``) and, for YOLOv2 models, its region layer (FORMAT-ZOO §3.3: σ on x, y
and objectness, a softmax over the class scores, anchors in grid cells). Scores are Darknet's: a box
is kept when objectness > conf, and each class with ``objectness × class score > conf`` is a
detection, so one box can carry several classes. Suppression is class-aware and greedy, computed
on the IoU matrix as a fixed point (no Python loop over boxes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from foldkit import strict_json
from foldkit.errors import FoldkitError
from foldkit.onnxio.metadata import YOLO_HEADS_KEY

MAX_CANDIDATES = 4096  # per image, by score, before suppression (the IoU matrix is candidates²)
LETTERBOX_FILL = 0.5  # Darknet's letterbox gray


HEAD_KINDS = ("yolo", "region")  # the head maps this module decodes
_HEAD_NAMES = {"yolo": "YOLO", "region": "YOLOv2 region"}


@dataclass(frozen=True)
class HeadSpec:
    """What decoding one head map needs.

    ``kind="yolo"``: anchors in input pixels. ``kind="region"`` (YOLOv2): anchors in grid cells,
    classes by softmax; with ``softmax=False`` the class scores stay raw, as AlexeyAB's region layer
    and the in-graph decoder leave them (pjreddie's applies the logistic).
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


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the network input: ``input = original·scale + pad``."""

    scale: float
    pad_x: float
    pad_y: float
    width: int
    height: int


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
    if kind not in ("yolo", "region") or not isinstance(classes, int) or classes < 1 or not anchors or not all(
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


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """An HWC uint8 RGB image → a 1×3×H×W float32 input in [0, 1], aspect ratio kept, padded gray."""
    from PIL import Image

    height, width = image.shape[:2]
    target_h, target_w = size
    scale = min(target_w / width, target_h / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR),
                         dtype=np.float32) / 255.0
    canvas = np.full((target_h, target_w, 3), LETTERBOX_FILL, dtype=np.float32)
    pad_x, pad_y = (target_w - new_w) // 2, (target_h - new_h) // 2
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
    return canvas.transpose(2, 0, 1)[None], Letterbox(new_w / width, pad_x, pad_y, width, height)


def unletterbox(boxes: np.ndarray, info: Letterbox) -> np.ndarray:
    """x1, y1, x2, y2 in network-input pixels → original-image pixels, clipped to the image."""
    out = boxes.astype(np.float64).copy()
    out[..., [0, 2]] = ((out[..., [0, 2]] - info.pad_x) / info.scale).clip(0, info.width)
    out[..., [1, 3]] = ((out[..., [1, 3]] - info.pad_y) / info.scale).clip(0, info.height)
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def decode_heads(heads: list[np.ndarray], specs: list[HeadSpec], input_size: tuple[int, int]) -> np.ndarray:
    """Raw head maps (N, A·(5+C), H, W) → (N, boxes, 4 + 1 + C): cx, cy, w, h in input pixels, obj, classes."""
    if len(heads) != len(specs):
        raise FoldkitError(f"the model has {len(heads)} outputs but {len(specs)} YOLO heads are described")
    decoded = []
    for raw, spec in zip(heads, specs, strict=True):
        count, depth = len(spec.anchors), spec.classes + 5
        if raw.ndim != 4 or raw.shape[1] != count * depth:
            raise FoldkitError(
                f"output of shape {list(raw.shape)} is not a {_HEAD_NAMES[spec.kind]} head with {count} anchors "
                f"× (5 + {spec.classes})"
            )
        n, _, h, w = raw.shape
        p = raw.astype(np.float64).reshape(n, count, depth, h, w).transpose(0, 1, 3, 4, 2)
        decode = _decode_region if spec.kind == "region" else _decode_yolo
        boxes = decode(p, spec, (h, w), input_size)
        decoded.append(boxes.reshape(n, count * h * w, depth))
    return np.concatenate(decoded, axis=1)


def _cell_centres(xy: np.ndarray, grid: tuple[int, int], input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Offsets within each cell (…, H, W, 2) → box centres in input pixels."""
    (h, w), (input_h, input_w) = grid, input_size
    cx = (xy[..., 0] + np.arange(w)[None, None, None, :]) * (input_w / w)
    cy = (xy[..., 1] + np.arange(h)[None, None, :, None]) * (input_h / h)
    return cx, cy


def _decode_yolo(p: np.ndarray, spec: HeadSpec, grid: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """Darknet's yolo layer on (N, A, H, W, 5 + C) raw entries; anchors in input pixels."""
    xy = p[..., 0:2] if spec.new_coords else _sigmoid(p[..., 0:2])
    xy = xy * spec.scale_x_y - 0.5 * (spec.scale_x_y - 1.0)
    cx, cy = _cell_centres(xy, grid, input_size)
    anchors = np.asarray(spec.anchors, dtype=np.float64)[None, :, None, None, :]
    wh = (2.0 * p[..., 2:4]) ** 2 * anchors if spec.new_coords else np.exp(p[..., 2:4]) * anchors
    scores = p[..., 4:] if spec.new_coords else _sigmoid(p[..., 4:])
    return np.concatenate([cx[..., None], cy[..., None], wh, scores], axis=-1)


def _decode_region(p: np.ndarray, spec: HeadSpec, grid: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """Darknet's region layer (get_region_boxes) on (N, A, H, W, 5 + C) raw entries; anchors in grid cells.

    ``bx = (col + σ(tx))/W``, ``bw = exp(tw)·anchor_w/W`` (fractions of the input), objectness σ,
    classes softmax over the C scores of each (cell, anchor) (raw without ``softmax``).
    """
    cx, cy = _cell_centres(_sigmoid(p[..., 0:2]), grid, input_size)
    (h, w), (input_h, input_w) = grid, input_size
    cell = np.array([input_w / w, input_h / h])
    anchors = np.asarray(spec.anchors, dtype=np.float64)[None, :, None, None, :] * cell
    wh = np.exp(p[..., 2:4]) * anchors
    classes = p[..., 5:]
    if spec.softmax:
        exp = np.exp(classes - classes.max(axis=-1, keepdims=True))
        classes = exp / exp.sum(axis=-1, keepdims=True)
    return np.concatenate([cx[..., None], cy[..., None], wh, _sigmoid(p[..., 4:5]), classes], axis=-1)


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
