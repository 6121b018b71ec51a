"""Do the int8 model's detections agree with the float model's? F1, score differences, misses, extras.

Both models' outputs on the held-out inputs go through foldkit's own decoder and suppression
(:mod:`foldkit.deploy.yolo`, at ``foldkit detect``'s default thresholds); boxes stay in the network
input's pixels, the frame both share. A float detection is matched by the int8 detection of the
same class with the highest IoU ≥ ``MATCH_IOU`` not matched yet, the float detections taken in
descending score. Unmatched float detections are misses, unmatched int8 ones extras; F1 is
2·matched / (float + int8 detections), 1 when neither model finds anything.

F1 over a few dozen detections is coarse, so the agreement also carries each input's counts (a
bootstrap over the inputs gives F1's interval) and how many float scores lie within
``NEAR_SCORE`` of the threshold: a detection there crosses it with a score change that small, so
they bound how close to F1 = 1 any int8 model with that |Δscore| can come.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from foldkit.defaults import DEFAULT_CONF
from foldkit.deploy.yolo import Detection, HeadSpec, Letterbox, _iou_matrix, decode_heads, postprocess

MATCH_IOU = 0.5
NEAR_SCORE = 0.03  # a float score this close to the threshold is counted as near it
F1_RESAMPLES = 1000  # bootstrap resamples of the inputs for F1's interval


@dataclass
class DetectionAgreement:
    images: int
    float_detections: int
    int8_detections: int
    matched: int
    misses: int  # float detections the int8 model lost
    extras: int  # int8 detections the float model does not have
    mean_abs_score_diff: float  # over matched pairs (0 when none)
    near_threshold: int = 0  # float scores within ±NEAR_SCORE of the threshold (above it: detections)
    per_input: list[tuple[int, int, int]] = field(default_factory=list)  # (float, int8, matched) per input

    @property
    def f1(self) -> float:
        total = self.float_detections + self.int8_detections
        return 1.0 if total == 0 else 2 * self.matched / total

    def f1_interval(self, seed: int = 0) -> tuple[float, float]:
        """F1's 95 % interval from a bootstrap over the inputs (each resample: 2·Σmatched / Σ detections)."""
        counts = np.array(self.per_input, dtype=np.float64).reshape(-1, 3)
        if len(counts) < 2:
            return self.f1, self.f1
        picks = np.random.default_rng(seed).integers(0, len(counts), (F1_RESAMPLES, len(counts)))
        totals = counts[picks].sum(axis=1)
        detections = totals[:, 0] + totals[:, 1]
        f1 = np.where(detections > 0, 2 * totals[:, 2] / np.maximum(detections, 1), 1.0)
        low, high = np.percentile(f1, [2.5, 97.5])
        return float(low), float(high)

    def summary(self) -> str:
        low, high = self.f1_interval()
        return (f"detections vs float on {self.images} held-out inputs: F1 {self.f1:.3f} (95 % bootstrap over "
                f"inputs {low:.3f}–{high:.3f}), mean |Δscore| {self.mean_abs_score_diff:.3f} over {self.matched} "
                f"matched, {self.misses} missed, {self.extras} extra (float found {self.float_detections}; "
                f"{self.near_threshold} float scores within ±{NEAR_SCORE:g} of the {DEFAULT_CONF:g} threshold)")


def detections_of(outputs: dict[str, np.ndarray], heads: list[HeadSpec] | None, input_size: tuple[int, int],
                  conf: float = DEFAULT_CONF):
    """Each input's detections in input pixels: raw head maps decoded with ``heads``, or already decoded."""
    maps = list(outputs.values())
    decoded = maps[0] if heads is None else decode_heads(maps, heads, input_size)
    frame = Letterbox.identity(input_size[1], input_size[0])
    return postprocess(decoded, [frame] * len(decoded), conf=conf)


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
    per_input, differences = [], []
    for want, got in zip(floats, int8s, strict=True):
        matched = 0
        for cls in {d.class_id for d in want} & {d.class_id for d in got}:  # IoU matrices per class stay small
            pairs = _match([d for d in want if d.class_id == cls], [d for d in got if d.class_id == cls])
            matched += len(pairs)
            differences += [abs(g.score - w.score) for w, g in pairs]
        per_input.append((len(want), len(got), matched))
    found, kept, matched = (sum(counts) for counts in zip(*per_input, strict=True)) if per_input else (0, 0, 0)
    near = sum(abs(d.score - DEFAULT_CONF) < NEAR_SCORE
               for image in detections_of(reference, heads, input_size, DEFAULT_CONF - NEAR_SCORE) for d in image)
    return DetectionAgreement(len(floats), found, kept, matched, found - matched, kept - matched,
                              float(np.mean(differences)) if differences else 0.0, near, per_input)
