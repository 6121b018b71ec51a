"""Do the int8 model's detections agree with the float model's? F1, score differences, misses, extras.

Both models' outputs on the held-out inputs go through foldkit's own decoder and suppression
(:mod:`foldkit.deploy.yolo`, at ``foldkit detect``'s default thresholds); boxes stay in the network
input's pixels, the frame both share. A float detection is matched by the int8 detection of the
same class with the highest IoU ≥ ``MATCH_IOU`` not matched yet, the float detections taken in
descending score. Unmatched float detections are misses, unmatched int8 ones extras; F1 is
2·matched / (float + int8 detections), 1 when neither model finds anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from foldkit.deploy.yolo import Detection, HeadSpec, Letterbox, _iou_matrix, decode_heads, postprocess

MATCH_IOU = 0.5


@dataclass
class DetectionAgreement:
    images: int
    float_detections: int
    int8_detections: int
    matched: int
    misses: int  # float detections the int8 model lost
    extras: int  # int8 detections the float model does not have
    mean_abs_score_diff: float  # over matched pairs (0 when none)

    @property
    def f1(self) -> float:
        total = self.float_detections + self.int8_detections
        return 1.0 if total == 0 else 2 * self.matched / total

    def summary(self) -> str:
        return (f"detections vs float on {self.images} held-out inputs: F1 {self.f1:.3f}, mean |Δscore| "
                f"{self.mean_abs_score_diff:.3f} over {self.matched} matched, {self.misses} missed, "
                f"{self.extras} extra (float found {self.float_detections})")


def detections_of(outputs: dict[str, np.ndarray], heads: list[HeadSpec] | None, input_size: tuple[int, int]):
    """Each input's detections in input pixels: raw head maps decoded with ``heads``, or already decoded."""
    maps = list(outputs.values())
    decoded = maps[0] if heads is None else decode_heads(maps, heads, input_size)
    frame = Letterbox.identity(input_size[1], input_size[0])
    return postprocess(decoded, [frame] * len(decoded))


def _match(want: list[Detection], got: list[Detection]) -> list[tuple[Detection, Detection]]:
    """Greedy matching of one class's detections: each float one, by descending score, takes the
    unmatched int8 one it overlaps most, if that IoU ≥ ``MATCH_IOU``."""
    overlap = _iou_matrix(np.array([d.box for d in want] + [d.box for d in got]))[:len(want), len(want):]
    taken = np.zeros(len(got), dtype=bool)
    pairs = []
    for i in np.argsort([-d.score for d in want], kind="stable"):
        candidates = np.where(~taken & (overlap[i] >= MATCH_IOU), overlap[i], -1.0)
        j = int(np.argmax(candidates))
        if candidates[j] >= 0:
            taken[j] = True
            pairs.append((want[i], got[j]))
    return pairs


def compare_detections(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
                       heads: list[HeadSpec] | None, input_size: tuple[int, int]) -> DetectionAgreement:
    """Agreement of ``candidate``'s detections with ``reference``'s, over every input."""
    floats, int8s = detections_of(reference, heads, input_size), detections_of(candidate, heads, input_size)
    matched, differences = 0, []
    for want, got in zip(floats, int8s, strict=True):
        for cls in {d.class_id for d in want} & {d.class_id for d in got}:  # IoU matrices per class stay small
            pairs = _match([d for d in want if d.class_id == cls], [d for d in got if d.class_id == cls])
            matched += len(pairs)
            differences += [abs(g.score - w.score) for w, g in pairs]
    found, kept = sum(map(len, floats)), sum(map(len, int8s))
    return DetectionAgreement(len(floats), found, kept, matched, found - matched, kept - matched,
                              float(np.mean(differences)) if differences else 0.0)
