"""Running a model whose graph ends with foldkit's NMS tail: thresholds in, image-pixel detections out.

The graph has already decoded, scored, suppressed and ordered the boxes
(:mod:`foldkit.deploy.nms_graph`); what is left is what only the caller knows: mapping boxes from
network-input pixels back to the original image (undoing the letterbox, clipped to the image as
:func:`foldkit.deploy.yolo.unletterbox` does for the numpy path) and naming the classes.
"""

from __future__ import annotations

import numpy as np

from foldkit.defaults import DEFAULT_LETTERBOX
from foldkit.deploy.nms_graph import CONF, COUNT, DETECTIONS, IOU, NmsSettings, check_thresholds
from foldkit.deploy.sizing import run_size
from foldkit.deploy.yolo import Detection, Letterbox, unletterbox
from foldkit.errors import FoldkitError
from foldkit.onnxio.input_size import Size
from foldkit.runtime import Predictor


def detections_from_rows(rows: np.ndarray, info: Letterbox, names: list[str] | None) -> list[Detection]:
    """(count, 6) rows x1 y1 x2 y2 score class in network-input pixels → detections in image pixels."""
    boxes = unletterbox(rows[:, :4], info)
    found = []
    for box, score, class_id in zip(boxes, rows[:, 4], rows[:, 5].astype(np.int64), strict=True):
        label = names[class_id] if names and class_id < len(names) else str(int(class_id))
        found.append(Detection(int(class_id), float(score), (float(box[0]), float(box[1]), float(box[2]),
                                                             float(box[3])), label))
    return found


class NmsRunner:
    """A predictor over an NMS model; ``detect`` has :class:`foldkit.deploy.detect.YoloRunner`'s signature."""

    def __init__(self, predictor: Predictor, settings: NmsSettings, *, img_size: int | Size | None = None,
                 letterbox: str = DEFAULT_LETTERBOX) -> None:
        self.predictor, self.settings, self.letterbox = predictor, settings, letterbox
        self.sizing, self.input_size = run_size(predictor, img_size, letterbox)
        if sorted(predictor.output_names) != sorted([DETECTIONS, COUNT]):
            raise FoldkitError(f"{predictor.path}: the foldkit.nms metadata says the graph ends with NMS, but its "
                               f"outputs are {predictor.output_names}, not {DETECTIONS} and {COUNT}")

    def detect(self, batch: np.ndarray, letterboxes: list[Letterbox], *, conf: float, iou: float,
               names: list[str] | None) -> list[list[Detection]]:
        """Detections of the first ``len(letterboxes)`` images of ``batch``, in each original image's pixels."""
        check_thresholds(conf, iou)
        outputs = self.predictor(batch, {CONF: np.array([conf], np.float32), IOU: np.array([iou], np.float32)})
        rows, counts = outputs[DETECTIONS], outputs[COUNT]
        if rows.ndim != 3 or rows.shape[2] != 6 or counts.shape != rows.shape[:1]:
            raise FoldkitError(f"{self.predictor.path}: NMS outputs of shapes {list(rows.shape)} and "
                               f"{list(counts.shape)} are not (N, max_det, 6) and (N,)")
        return [detections_from_rows(rows[i, :int(counts[i])].astype(np.float64), info, names)
                for i, info in enumerate(letterboxes)]
