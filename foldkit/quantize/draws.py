"""Equivalent int8 models: the baseline re-quantized with every activation range moved by a hair.

A range moved by ±:data:`JITTER` (a fraction of one u8 step at most) makes a model no better and no
worse in expectation, but its activations round differently: the spread of the held-out SNR over
such models is the luck of the rounding's draw, which the bootstrap over held-out inputs cannot
see (:mod:`foldkit.quantize.significance`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from foldkit.quantize.judge import HeldOutJudge, Judgement
from foldkit.quantize.static import StaticQuantizer, range_overrides

DRAWS = 3  # jittered re-quantizations of the baseline (each one quantization and one judgement)
JITTER = 0.005  # each end of each range moved by up to ±0.5 %


def jittered_draws(quantizer: StaticQuantizer, exclude: Sequence[str], judge: HeldOutJudge, seed: int = 0,
                   count: int = DRAWS) -> list[Judgement]:
    """``count`` judgements of ``quantizer``'s model with each range's ends jittered (seeded): its calibrated
    range, or the range its overrides set. The draws go to the tensors in name order: ORT writes its
    calibration cache in an order that changes from process to process, and the same seed must give
    the same draws."""
    rng = np.random.default_rng(seed)
    ranges = {name: (low, high) for name, (low, high) in quantizer.ranges().items()
              if np.isfinite(low) and np.isfinite(high) and high > low}
    draws = []
    for index in range(count):
        moved = range_overrides({name: (low * (1 + rng.uniform(-JITTER, JITTER)),
                                        high * (1 + rng.uniform(-JITTER, JITTER)))
                                 for name, (low, high) in sorted(ranges.items())})  # not ORT's cache order
        overrides = {name: {**quantizer.overrides.get(name, {}), **entry} for name, entry in moved.items()}
        jittered = quantizer.with_overrides(overrides, f"draw{index}")
        draws.append(judge.judge(jittered.quantize(exclude)))
    return draws
