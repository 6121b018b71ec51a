"""Equivalent int8 models: the baseline re-quantized with its rounding redrawn, no better and no worse.

Two nudges, each far below one step of the grid it touches, make a model that rounds differently:

* every activation range's ends moved by up to ±:data:`JITTER` (values far from the zero point move
  by a fraction of a u8 step and round anew; values near it hardly move);
* every conv weight that lies within ±:data:`TIE_BAND` of a step of halfway between two points of
  ORT's s8 grid moved to the other one with probability ½ (about 5 % of the weights, each 0.45–0.55
  of a step from either point: the weights' error power grows by about 3 %), which changes every conv's output
  by a hair and so the rounding of every activation after it.

The range jitter alone undersampled the draw: on the trained yolov3-tiny, 8 jittered models spanned
27.0–27.4 dB at the worst head, while 8 with tie weights flipped as well span 24.6–27.4 dB
(``tools/int8_floor.py``), about as far as AdaRound's learned rounding moves it (24.9 dB).
The spread of the held-out SNR over such models is the luck of the rounding's draw, which the
bootstrap over held-out inputs cannot see (:mod:`foldkit.quantize.significance`).

Only ``Conv`` weights are flipped: ORT quantizes them per output channel (axis 0), the grid
:class:`foldkit.quantize.adaround.Grid` reproduces; Gemm and MatMul weights keep their rounding.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from foldkit.quantize.adaround import Grid
from foldkit.quantize.judge import HeldOutJudge, Judgement
from foldkit.quantize.static import StaticQuantizer, range_overrides

DRAWS = 5  # equivalent re-quantizations of the baseline (each one quantization and one judgement)
CANDIDATE_DRAWS = 2  # of each candidate a step makes: its gain is judged on the means
JITTER = 0.005  # each end of each range moved by up to ±0.5 %
TIE_BAND = 0.05  # weights within ±5 % of a grid step of a tie may take the other neighbour


def equivalent_draws(quantizer: StaticQuantizer, exclude: Sequence[str], judge: HeldOutJudge, seed: int = 0,
                     count: int = DRAWS, form: Callable[[Path], Path] | None = None) -> list[Judgement]:
    """``count`` judgements of ``quantizer``'s model redrawn (seeded): tie weights of the quantized convs
    flipped and each range's ends jittered around its calibrated range, or the range its overrides set.
    None where no quantized conv weight is near a tie (learned rounding puts every weight on the grid):
    the range jitter alone would undersample the draw. The draws go to tensors and weights in name order:
    ORT writes its calibration cache in an order that changes from process to process, and the same seed
    must give the same draws. ``form``: turns each quantized file into the file judged (the fused form
    OpenVINO runs, say); by default the QDQ file itself."""
    ties = _tie_weights(quantizer.model, set(exclude), quantizer.reduce_range)  # found once, flipped per draw
    if not any(weight.tie.any() for weight in ties):
        return []
    rng = np.random.default_rng(seed)
    ranges = {name: (low, high) for name, (low, high) in quantizer.ranges().items()
              if np.isfinite(low) and np.isfinite(high) and high > low}
    draws = []
    for index in range(count):
        moved = range_overrides({name: (low * (1 + rng.uniform(-JITTER, JITTER)),
                                        high * (1 + rng.uniform(-JITTER, JITTER)))
                                 for name, (low, high) in sorted(ranges.items())})  # not ORT's cache order
        overrides = {name: {**quantizer.overrides.get(name, {}), **entry} for name, entry in moved.items()}
        flipped = _flipped(quantizer.model, ties, rng)
        redrawn = quantizer.equivalent(flipped, f"{quantizer.name}-draw{index}", overrides)
        written = redrawn.quantize(exclude)
        draws.append(judge.judge(form(written) if form else written))
    return draws


def flip_tie_weights(model: onnx.ModelProto, exclude: set[str], reduce_range: bool,
                     rng: np.random.Generator) -> onnx.ModelProto:
    """A copy of ``model`` whose quantized convs' weights within :data:`TIE_BAND` of a tie on ORT's grid sit
    exactly on one of its two neighbours, each chosen with probability ½; every other weight unchanged
    (nothing moves to or from the grid's ends ±qmax: they set the scale ORT computes), and so is every
    weight that an excluded conv or any other node also reads."""
    return _flipped(model, _tie_weights(model, exclude, reduce_range), rng)


@dataclass(frozen=True)
class _TieWeight:
    """One weight initializer only quantized convs read, on ORT's grid: its two candidate integers per
    element and which elements lie within :data:`TIE_BAND` of a tie, away from the grid's ends."""

    name: str
    weight: np.ndarray
    grid: Grid
    nearest: np.ndarray
    other: np.ndarray  # the grid point on the other side of the weight from its nearest one
    tie: np.ndarray


def _tie_weights(model: onnx.ModelProto, exclude: set[str], reduce_range: bool) -> list[_TieWeight]:
    """The weights of :class:`_TieWeight`, in name order."""
    initializers = {init.name: init for init in model.graph.initializer}
    quantized = {node.input[1] for node in model.graph.node
                 if node.op_type == "Conv" and node.name not in exclude and node.input[1] in initializers}
    elsewhere = {name for node in model.graph.node if not (node.op_type == "Conv" and node.name not in exclude)
                 for name in node.input}  # a weight a float node also reads must not move
    found = []
    for name in sorted(quantized - elsewhere):
        weight = numpy_helper.to_array(initializers[name])
        grid = Grid.of(weight, reduce_range)
        ratio = grid.ratio(weight)
        nearest = grid.nearest(weight)
        other = np.where(ratio > nearest, nearest + 1, nearest - 1)
        reach = np.maximum(np.abs(nearest), np.abs(other))
        tie = (np.abs(ratio - np.floor(ratio) - 0.5) < TIE_BAND) & (reach < grid.qmax)
        found.append(_TieWeight(name, weight, grid, nearest, other, tie))
    return found


def _flipped(model: onnx.ModelProto, ties: list[_TieWeight], rng: np.random.Generator) -> onnx.ModelProto:
    """A copy of ``model`` with each tie weight on its nearest or its other grid point, ½ each."""
    model = copy.deepcopy(model)
    initializers = {init.name: init for init in model.graph.initializer}
    for entry in ties:
        chosen = np.where(entry.tie & (rng.random(entry.nearest.shape) < 0.5), entry.other, entry.nearest)
        on_grid = entry.grid.weights(chosen, entry.weight.shape)
        initializers[entry.name].CopyFrom(numpy_helper.from_array(
            np.where(entry.tie.reshape(entry.weight.shape), on_grid, entry.weight).astype(entry.weight.dtype),
            entry.name))
    return model
