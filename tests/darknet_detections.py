"""pjreddie's libdarknet as the detection oracle (ctypes), and matching foldkit's detections against it.

``darknet detect`` is: load_image_color → letterbox_image → network_predict → get_network_boxes
(thresh, hier 0.5) → do_nms_sort(0.45) → every (box, class) with prob > thresh. Through ctypes the
same calls give the boxes and exact scores (the binary prints only rounded percentages).
Used by tests/test_darknet_detect_oracle.py and tools/darknet_detect_table.py.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, Structure, c_char_p, c_float, c_int, c_void_p
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LIBDARKNET = Path(os.environ.get("FOLDKIT_LIBDARKNET", "/usr/lib/darknet/libdarknet.so"))
HIER_THRESH = 0.5  # test_detector's default
NMS_IOU = 0.45  # test_detector's nms


class _Box(Structure):
    _fields_ = [("x", c_float), ("y", c_float), ("w", c_float), ("h", c_float)]


class _Detection(Structure):
    _fields_ = [("bbox", _Box), ("classes", c_int), ("prob", POINTER(c_float)), ("mask", POINTER(c_float)),
                ("objectness", c_float), ("sort_class", c_int)]


class _Image(Structure):
    _fields_ = [("w", c_int), ("h", c_int), ("c", c_int), ("data", POINTER(c_float))]


@dataclass(frozen=True)
class Found:
    """One detection: class, score, (x1, y1, x2, y2) in image pixels clipped to the image."""

    class_id: int
    score: float
    box: tuple[float, float, float, float]


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    signatures = {
        "load_network": ([c_char_p, c_char_p, c_int], c_void_p),
        "load_image_color": ([c_char_p, c_int, c_int], _Image),
        "make_image": ([c_int, c_int, c_int], _Image),
        "letterbox_image": ([_Image, c_int, c_int], _Image),
        "resize_image": ([_Image, c_int, c_int], _Image),
        "free_image": ([_Image], None),
        "network_predict_image": ([c_void_p, _Image], POINTER(c_float)),
        "get_network_boxes": ([c_void_p, c_int, c_int, c_float, c_float, POINTER(c_int), c_int, POINTER(c_int)],
                              POINTER(_Detection)),
        "do_nms_sort": ([POINTER(_Detection), c_int, c_int, c_float], None),
        "free_detections": ([POINTER(_Detection), c_int], None),
    }
    for name, (args, result) in signatures.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = args, result
    return lib


class Libdarknet:
    """libdarknet.so loaded once; None-safe construction via :func:`load`."""

    def __init__(self, path: Path = LIBDARKNET) -> None:
        self.lib = _bind(ctypes.CDLL(str(path)))

    def _copied(self, result: _Image, *inputs: _Image) -> np.ndarray:
        """``result``'s pixels as a C×H×W array; then ``result`` and ``inputs`` are freed."""
        try:
            return np.ctypeslib.as_array(result.data, shape=(result.c, result.h, result.w)).copy()
        finally:
            for image in (result, *inputs):
                self.lib.free_image(image)

    def letterbox(self, path: Path, width: int, height: int) -> np.ndarray:
        """letterbox_image of the photo as Darknet loads it: C×H×W float32."""
        image = self.lib.load_image_color(str(path).encode(), 0, 0)
        return self._copied(self.lib.letterbox_image(image, width, height), image)

    def resize(self, chw: np.ndarray, width: int, height: int) -> np.ndarray:
        """resize_image of a C×H×W float32 array."""
        image = self.lib.make_image(chw.shape[2], chw.shape[1], chw.shape[0])
        np.ctypeslib.as_array(image.data, shape=chw.shape)[:] = chw
        return self._copied(self.lib.resize_image(image, width, height), image)

    def network(self, cfg: Path, weights: Path) -> int:
        """A loaded network (batch 1): a handle for :meth:`detect`. Darknet prints its layers to stderr."""
        return self.lib.load_network(str(cfg).encode(), str(weights).encode(), 0)

    def detect(self, net: int, path: Path, thresh: float, classes: int) -> list[Found]:
        """``darknet detect``'s detections of one photo, in image pixels (boxes clipped to the image)."""
        image = self.lib.load_image_color(str(path).encode(), 0, 0)
        count = c_int(0)
        try:
            self.lib.network_predict_image(net, image)
            dets = self.lib.get_network_boxes(net, image.w, image.h, thresh, HIER_THRESH, None, 0,
                                              ctypes.byref(count))
            self.lib.do_nms_sort(dets, count.value, classes, NMS_IOU)
            found = [_found(dets[i], k, image.w, image.h) for i in range(count.value) for k in range(classes)
                     if dets[i].prob[k] > thresh]
            self.lib.free_detections(dets, count.value)
            return found
        finally:
            self.lib.free_image(image)


def _found(det: _Detection, k: int, width: int, height: int) -> Found:
    b = det.bbox
    box = np.clip([b.x - b.w / 2, b.y - b.h / 2, b.x + b.w / 2, b.y + b.h / 2], 0, [width, height, width, height])
    return Found(k, float(det.prob[k]), (float(box[0]), float(box[1]), float(box[2]), float(box[3])))


def load() -> Libdarknet | None:
    """libdarknet, or None where it is not installed."""
    try:
        return Libdarknet() if LIBDARKNET.is_file() else None
    except OSError:
        return None


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two (x1, y1, x2, y2) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Match:
    """foldkit's detections of one photo against Darknet's: pairs by class and overlap, misses, extras."""

    pairs: list[tuple[Found, Found]]  # (darknet, foldkit)
    missed: list[Found]  # Darknet's, not found by foldkit
    extra: list[Found]  # foldkit's, not in Darknet's

    @property
    def min_iou(self) -> float:
        return min((iou(d.box, f.box) for d, f in self.pairs), default=1.0)

    @property
    def max_score_error(self) -> float:
        return max((abs(d.score - f.score) for d, f in self.pairs), default=0.0)


def match(darknet: list[Found], ours: list[Found]) -> Match:
    """Pair each Darknet detection with foldkit's same-class detection of highest IoU (each used once)."""
    left = list(ours)
    pairs, missed = [], []
    for want in sorted(darknet, key=lambda d: -d.score):
        candidates = [f for f in left if f.class_id == want.class_id and iou(f.box, want.box) > 0]
        if not candidates:
            missed.append(want)
            continue
        best = max(candidates, key=lambda f: iou(f.box, want.box))
        left.remove(best)
        pairs.append((want, best))
    return Match(pairs, missed, left)
