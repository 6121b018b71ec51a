"""Each quantized activation's histogram on the calibration inputs, and what u8 rounding does to it.

ORT's MinMax calibration sets a tensor's u8 range to the extremes it saw; one rare large value
then coarsens the step for every ordinary one. Here each activation ORT quantizes (the tensors
in its calibration cache) gets a histogram over its calibrated range, accumulated over every
calibration input, and from it:

* the MSE-optimal range: the [lo, hi] inside the calibrated one that minimises the expected
  squared error of u8 quantization (rounding inside, clipping outside), searched on a grid of
  shrink factors for each end (ORT's asymmetric u8 grid, zero exactly representable);
* the noise-to-signal power ratio u8 leaves on it: E[(x − q(x))²] / E[x²], which ranks the
  activations that int8 rounds worst (the candidates for 16-bit).

Both measure the error where the next layer sees it. A conv's output that only a LeakyReLU (or
ReLU) reads is rounded to u8 before the activation (ORT quantizes both tensors), and the
activation scales every negative value and its error by its slope α: an error there reaches the
next layer α² as large in power. Weighing the negative side by α² (:func:`negative_weights`)
lets the search give the positive side the resolution it needs (measured on pjreddie's trained
yolov3-tiny: the second conv's output kept [−72, 16] unweighted, 47 of 255 steps for everything
LeakyReLU passes; weighted, +2.1 dB at the worst head).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from foldkit.runtime import create_session

BINS = 4096  # per tensor, over its calibrated range
BINS_PER_STEP = 4  # a u8 step this many bins wide or more: the bins' own rounding error is used
# Candidate fractions of each end of the calibrated range: every 1 % down to half, then geometric to 1/64.
SHRINK = np.concatenate([np.linspace(1.0, 0.5, 51), np.geomspace(0.5, 1 / 64, 26)[1:]])
SWEEPS = 2
U8_LEVELS = 255


@dataclass
class ActivationStats:
    """One activation's calibrated range, histogram, and what u8 does to it."""

    name: str
    lowest: float
    highest: float
    counts: np.ndarray  # BINS counts over [lowest, highest]
    negative_weight: float = 1.0  # how much a squared error below 0 counts: α² behind a LeakyReLU(α)

    @property
    def centres(self) -> np.ndarray:
        edges = np.linspace(self.lowest, self.highest, BINS + 1)
        return (edges[:-1] + edges[1:]) / 2

    def u8_mse(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Expected squared u8 error per candidate range (arrays of equal shape; 0 is kept inside), as
        the next layer sees it (errors below 0 weighed by :attr:`negative_weight`).

        Values outside the grid's span are clipped to its end. Inside, where a u8 step spans at
        least :data:`BINS_PER_STEP` bins, each bin's centre is rounded as ORT would (exact for the
        distribution the histogram sees, spikes included); where a step is narrower than that, the
        bins cannot say where in a step their values lie, and the error is Δ²/12 (uniform).
        """
        lo, hi = np.minimum(np.asarray(lo, np.float64), 0.0), np.maximum(np.asarray(hi, np.float64), 0.0)
        scale = np.maximum((hi - lo) / U8_LEVELS, np.finfo(np.float64).tiny)[..., None]
        zero = np.round(-lo / scale[..., 0])[..., None]
        bottom, top = -zero * scale, (U8_LEVELS - zero) * scale
        x = self.centres
        rounded = np.square(x - (np.clip(np.round(x / scale) + zero, 0, U8_LEVELS) - zero) * scale)
        fine = scale >= BINS_PER_STEP * (self.highest - self.lowest) / BINS
        inside = np.where(fine, rounded, np.square(scale) / 12)
        error = np.where(x < bottom, np.square(x - bottom), np.where(x > top, np.square(x - top), inside))
        return (error * self._weights).sum(axis=-1) / max(self.counts.sum(), 1)

    @property
    def _weights(self) -> np.ndarray:
        """Each bin's count, its negative bins weighed by :attr:`negative_weight`."""
        return np.where(self.centres < 0, self.negative_weight, 1.0) * self.counts

    def power(self) -> float:
        return float((np.square(self.centres) * self._weights).sum() / max(self.counts.sum(), 1))

    def mse_range(self) -> tuple[float, float]:
        """The [lo, hi] that minimises the expected u8 error (the calibrated range when nothing beats it).

        Coordinate descent over the two ends, each a 1-D search over :data:`SHRINK` fractions of the
        calibrated end (fine near 1, where 8-bit optima of light tails lie); two sweeps settle it.
        """
        lo, hi = min(self.lowest, 0.0), max(self.highest, 0.0)
        for _ in range(SWEEPS):
            lo = float(min(self.lowest, 0.0) * SHRINK[int(np.argmin(self.u8_mse(min(self.lowest, 0.0) * SHRINK,
                                                                               np.full(len(SHRINK), hi))))])
            hi = float(max(self.highest, 0.0) * SHRINK[int(np.argmin(self.u8_mse(np.full(len(SHRINK), lo),
                                                                                max(self.highest, 0.0) * SHRINK)))])
        return lo, hi

    def noise_to_signal(self, lo: float, hi: float) -> float:
        """E[(x − q(x))²] / E[x²] for u8 over [lo, hi] (both weighed as :meth:`u8_mse` weighs them)."""
        power = self.power()
        return float(self.u8_mse(np.array(lo), np.array(hi))) / power if power > 0 else 0.0


def cached_ranges(cache: Path) -> dict[str, tuple[float, float]]:
    """The (lowest, highest) of every tensor in ORT's JSON calibration cache."""
    data = json.loads(cache.read_text())["data"]
    return {name: (float(entry["lowest"]["data"][0]), float(entry["highest"]["data"][0]))
            for name, entry in data.items()}


def activation_stats(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]], inputs: np.ndarray,
                     input_name: str) -> list[ActivationStats]:
    """Histograms of every tensor in ``ranges`` that the float model computes, over ``inputs``.

    The graph input is left as calibrated: an image's u8 range maps one to one onto its 8-bit
    pixels, and clipping it discards real information (measured: −1.4 dB on the trained
    yolov3-tiny). Tensors with an empty or non-finite range (a −∞ pad's output, which stays float)
    are left out too. A tensor read only by LeakyReLUs or ReLUs of one slope weighs its negative
    errors by the slope squared (:func:`negative_weights`).
    """
    probe = copy.deepcopy(model)
    produced = {out for node in probe.graph.node for out in node.output}
    known = {o.name for o in probe.graph.output}
    wanted = [name for name, (low, high) in ranges.items()
              if name in produced and np.isfinite(low) and np.isfinite(high) and high > low]
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted if n not in known)
    session = create_session(probe, providers="cpu", opt_level="disable")
    counts = {name: np.zeros(BINS, np.int64) for name in wanted}
    for sample in inputs:
        for name, value in zip(wanted, session.run(wanted, {input_name: sample[None]}), strict=True):
            low, high = ranges[name]
            counts[name] += np.histogram(value, bins=BINS, range=(low, high))[0]
    weights = negative_weights(model)
    return [ActivationStats(name, *ranges[name], counts[name], weights.get(name, 1.0)) for name in wanted]


def negative_weights(model: onnx.ModelProto) -> dict[str, float]:
    """α² for every tensor that only LeakyReLU(α)s (ReLU: α = 0) of one slope read and that is no graph output.

    Such a tensor's negative values reach the next layer multiplied by α, and so do their rounding
    errors. A tensor with any other reader (a graph output, a concat, two activations of different
    slopes) is seen unscaled somewhere: it keeps weight 1.
    """
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for tensor in node.input:
            readers.setdefault(tensor, []).append(node)
    outputs = {o.name for o in model.graph.output}
    weights = {}
    for tensor, nodes in readers.items():
        slopes = {_slope(node) if node.input[0] == tensor else None for node in nodes}
        if tensor not in outputs and len(slopes) == 1 and (slope := slopes.pop()) is not None:
            weights[tensor] = slope * slope
    return weights


def _slope(node: onnx.NodeProto) -> float | None:
    """The negative-side slope of a ReLU or LeakyReLU (ONNX's default α is 0.01), else None."""
    if node.op_type == "Relu":
        return 0.0
    if node.op_type == "LeakyRelu":
        return next((a.f for a in node.attribute if a.name == "alpha"), 0.01)
    return None
