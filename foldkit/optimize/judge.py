"""How close each candidate comes to the original model on held-out inputs.

The reference is the model as given (not folded) on ONNX Runtime with every graph optimization off,
so each candidate is proven against the original, not against another candidate. Signal and noise
are summed over every held-out input per output (parity's SNR on the stacked outputs); for a model
with YOLO metadata the candidate's detections are also matched against the reference's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from foldkit.parity import compare_outputs
from foldkit.quantize.detections import DetectionAgreement, compare_detections
from foldkit.runtime import Backend


@dataclass
class Accuracy:
    """A candidate's lowest output SNR over the held-out inputs and, for detectors, its detection agreement."""

    min_snr_db: float
    detections: DetectionAgreement | None = None

    @property
    def f1(self) -> float | None:
        return None if self.detections is None else self.detections.f1


def outputs_on(backend: Backend, inputs: np.ndarray, input_name: str) -> dict[str, np.ndarray]:
    """The backend's outputs for each input (run one at a time, as deployed), stacked along the batch."""
    runs = [backend.run({input_name: sample[None]}) for sample in inputs]
    return {name: np.concatenate([run[name] for run in runs]) for name in backend.output_names}


class Judge:
    """The reference outputs on the held-out inputs, and the accuracy of any candidate's outputs."""

    def __init__(self, reference: dict[str, np.ndarray], heads: list | None, input_size: tuple[int, int] | None,
                 detector: bool) -> None:
        self.reference = reference
        self.heads, self.input_size, self.detector = heads, input_size, detector

    def accuracy(self, outputs: dict[str, np.ndarray]) -> Accuracy:
        report = compare_outputs(outputs, self.reference, candidate_name="candidate", reference_name="original")
        snrs = [o.snr_db for o in report.outputs]
        lowest = min(snrs) if snrs and all(not math.isnan(s) for s in snrs) else -math.inf
        detections = None
        if self.detector and self.input_size is not None:
            detections = compare_detections(self.reference, outputs, self.heads, self.input_size)
        return Accuracy(lowest, detections)
