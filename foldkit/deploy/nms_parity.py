"""Parity of an in-graph NMS model with the numpy path on its raw or decoded twin (``foldkit check``).

Plain tensor parity cannot judge NMS outputs: a score that moves by 1e-7 can swap two rows. This
compares detections instead, on the same seeded input batch: the NMS model's graph against
:func:`foldkit.deploy.yolo.postprocess` run on the reference model's outputs. Both must find the
same detections, in the same order, with the same classes; scores within ``SCORE_TOLERANCE`` and
box corners within ``BOX_TOLERANCE`` × the input size (float32 graph coordinates against float64
numpy ones). NaN or Inf never passes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from foldkit.deploy.engines.batch import YoloRunner
from foldkit.deploy.nms_graph import nms_settings
from foldkit.deploy.nms_model import NmsRunner
from foldkit.deploy.yolo import Detection, Letterbox, heads_from_metadata
from foldkit.errors import FoldkitError
from foldkit.runtime import Predictor

SCORE_TOLERANCE = 1e-5
BOX_TOLERANCE = 1e-5  # of the input's larger side


@dataclass
class NmsParityReport:
    candidate: str
    reference: str
    images: int
    conf: float
    iou: float
    detections: int = 0
    max_score_diff: float = 0.0
    max_box_diff: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = [f"NMS parity: {self.candidate} (graph NMS)  vs  {self.reference} (foldkit's numpy NMS)",
                 f"  {self.images} seeded image(s), conf {self.conf:g}, iou {self.iou:g}: {self.detections} "
                 f"detection(s); max score diff {self.max_score_diff:.3e}, max box diff {self.max_box_diff:.3e} px"]
        if not self.detections:
            lines.append("  note: no detections on the seeded noise images, so nothing was compared; "
                         "compare foldkit detect's answers on real images")
        lines += [f"  FAILED: {problem}" for problem in self.problems[:10]]
        lines.append("  PASSED: same detections, same order" if self.passed else
                     f"  FAILED: {len(self.problems)} difference(s)")
        return "\n".join(lines)


def compare_nms_to_numpy(candidate: str | os.PathLike, reference: str | os.PathLike, *, seed: int = 0,
                         batch: int = 1, providers: str = "auto") -> NmsParityReport:
    """Detections of ``candidate`` (ends with NMS) vs the numpy path on ``reference``, at the graph's defaults."""
    nms_model = Predictor(candidate, providers=providers)
    settings = nms_settings(nms_model.metadata)
    if settings is None:
        raise FoldkitError(f"{candidate}: no foldkit.nms metadata: the model does not end with foldkit's NMS")
    numpy_model = Predictor(reference, providers=providers)
    runners: list[NmsRunner | YoloRunner] = [
        NmsRunner(nms_model, settings), YoloRunner(numpy_model, heads_from_metadata(numpy_model.metadata))]
    if runners[0].input_size != runners[1].input_size:
        raise FoldkitError(f"{candidate} and {reference} take inputs of different sizes")
    height, width = runners[0].input_size
    count = nms_model.fixed_batch or batch
    images = np.random.default_rng(seed).random((count, 3, height, width)).astype(np.float32)  # as check's inputs
    identity = [Letterbox.identity(width, height)] * len(images)
    found = [r.detect(images, identity, conf=settings.conf, iou=settings.iou, names=None) for r in runners]
    report = NmsParityReport(str(candidate), str(reference), len(images), settings.conf, settings.iou)
    for index, (got, want) in enumerate(zip(*found, strict=True)):
        _compare_image(report, index, got, want[:settings.max_det], max(height, width))
    return report


def _compare_image(report: NmsParityReport, index: int, got: list[Detection], want: list[Detection],
                   size: int) -> None:
    report.detections += len(want)
    if [d.class_id for d in got] != [d.class_id for d in want]:
        report.problems.append(f"image {index}: classes {[d.class_id for d in got]} vs {[d.class_id for d in want]}")
        return
    for g, w in zip(got, want, strict=True):
        score = abs(g.score - w.score)
        box = float(np.abs(np.subtract(g.box, w.box)).max())
        report.max_score_diff, report.max_box_diff = max(report.max_score_diff, score), max(report.max_box_diff, box)
        if not (score <= SCORE_TOLERANCE and box <= BOX_TOLERANCE * size):  # NaN fails both
            report.problems.append(f"image {index}: class {w.class_id} score {g.score:.6f} vs {w.score:.6f}, "
                                   f"box {np.round(g.box, 3).tolist()} vs {np.round(w.box, 3).tolist()}")
