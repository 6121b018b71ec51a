"""The quantize step that replaces nearest rounding of the conv weights by learned rounding (AdaRound).

The best model so far is quantized, its convs learn their rounding on its own int8 activations
over the calibration inputs (:mod:`foldkit.quantize.adaround_model`), and the float model with
those grid-exact weights is quantized again with the same weight bits and activation overrides;
kept only where the held-out judgement says it wins beyond its noise. It replaces the bias
correction step's work too (each bias absorbs the learned rounding's mean shift), so bias
correction tried after it finds the weights on the grid and nothing to correct.
"""

from __future__ import annotations

import onnx

from foldkit.quantize.adaround_model import adaround_onnx
from foldkit.quantize.context import Candidate, Context


def learned_rounding(context: Context, best: Candidate) -> Candidate:
    rounded, report = adaround_onnx(best.quantizer.model, onnx.load(str(best.path)), context.data.calibration,
                                    context.input_name, reduce_range=best.quantizer.reduce_range,
                                    seed=context.options.seed, progress=context.options.progress)
    context.report.adaround = report
    return context.weigh("+ learned rounding (AdaRound)", best, context.candidate(
        context.derived(rounded, best, "adarounded"), best.exclude), note=report.summary())
