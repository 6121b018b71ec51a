"""The optional steps of the quantize pass, each tried on top of the best model so far.

Every step makes one or more candidate int8 models, judges each on the held-out inputs and keeps
one only when its worst-output SNR gain exceeds the bootstrap noise of that judgement
(:mod:`foldkit.quantize.significance`); what was tried and what it measured goes in the report
whether kept or not. The steps, in the order tried (:data:`foldkit.quantize.options.STEPS`):

* 7-bit weights, only where this CPU's u8×s8 kernels saturate (:mod:`foldkit.cpu`);
* cross-layer equalization; bias correction (their own modules);
* MSE-optimal activation ranges (:mod:`foldkit.quantize.activations`);
* learned rounding of the conv weights (:mod:`foldkit.quantize.step_adaround`);
* u16 for the graph outputs and the k activations u8 rounds worst (highest noise-to-signal), for
  k = 0 and 2, the better that gains at least 1 dB and stays within the latency budget (p50
  against float, measured);
* the most sensitive layers in float, within the latency budget
  (:mod:`foldkit.quantize.step_float_layers`).
"""

from __future__ import annotations

from collections.abc import Callable

import onnx
from onnxruntime.quantization import QuantType

from foldkit.quantize.activations import activation_stats
from foldkit.quantize.bias_correction import correct_biases
from foldkit.quantize.context import Candidate, Context
from foldkit.quantize.equalize import equalize_onnx
from foldkit.quantize.options import (
    ADAROUND,
    BIAS_CORRECTION,
    EQUALIZE,
    FLOAT_LAYERS,
    MIXED_U16,
    MSE_CLIP,
    WEIGHTS_7BIT,
)
from foldkit.quantize.report import QuantizeReport
from foldkit.quantize.static import range_overrides
from foldkit.quantize.step_adaround import learned_rounding
from foldkit.quantize.step_float_layers import float_layers

U16_EXTRA = (0, 2)  # how many of the worst activations a u16 try adds to the graph outputs


def seven_bit_weights(context: Context, best: Candidate) -> Candidate:
    if not context.cpu.saturates_u8s8:
        context.report.notes.append(f"7-bit weights not tried: this CPU ({context.cpu.kind}) accumulates u8×s8 "
                                    "in 32 bits, so full 8-bit weights do not saturate")
        return best
    quantizer = context.derived(best.quantizer.model, best, "reduced-range", reduce_range=True)
    return context.weigh("+ 7-bit weights", best, context.candidate(quantizer, best.exclude),
                         note="this CPU has no VNNI: u8×s8 pairs sum in saturating 16 bits")


def equalization(context: Context, best: Candidate) -> Candidate:
    equalized, context.report.equalization = equalize_onnx(best.quantizer.model)
    if not context.report.equalization.pairs:
        context.report.notes.append("equalization: no conv pair qualified")
        return best
    quantizer = context.derived(equalized, best, "equalized")
    return context.weigh("+ cross-layer equalization", best, context.candidate(quantizer, best.exclude))


def mse_clipping(context: Context, best: Candidate) -> Candidate:
    stats = activation_stats(best.quantizer.model, best.quantizer.calibrate(), context.data.calibration,
                             context.input_name)
    ranges = {s.name: s.mse_range() for s in stats}
    narrowed = sum(1 for s in stats if ranges[s.name] != (min(s.lowest, 0.0), max(s.highest, 0.0)))
    quantizer = best.quantizer.with_overrides(range_overrides(ranges), "clipped")
    return context.weigh("+ MSE-optimal activation ranges", best, context.candidate(quantizer, best.exclude),
                         note=f"{narrowed} of {len(stats)} ranges narrowed")


def bias_correction(context: Context, best: Candidate) -> Candidate:
    corrected, context.report.bias_correction = correct_biases(
        best.quantizer.model, onnx.load(str(best.path)), context.data.calibration, context.input_name)
    return context.weigh("+ bias correction", best, context.candidate(
        context.derived(corrected, best, "bias-corrected"), best.exclude))


def mixed_u16(context: Context, best: Candidate) -> Candidate:
    """u16 for the graph outputs and the k activations u8 rounds worst; the best within the latency budget.

    A graph output's u8 rounding lands on the output unattenuated (a detector's raw head logits in
    256 steps), so the outputs come first; then the activations by their u8 noise-to-signal ratio.
    """
    stats = activation_stats(best.quantizer.model, best.quantizer.calibrate(), context.data.calibration,
                             context.input_name)
    ranges = best.quantizer.ranges()
    outputs = {o.name for o in best.quantizer.model.graph.output}
    order = sorted(stats, key=lambda s: (s.name not in outputs, -s.noise_to_signal(*ranges[s.name])))
    first = sum(1 for s in stats if s.name in outputs)
    chosen = best
    for extra in U16_EXTRA:
        count = first + extra
        if count == 0 or count > len(order) or (extra and count == first):
            continue
        names = [s.name for s in order[:count]]
        quantizer = best.quantizer.with_overrides({n: {"quant_type": QuantType.QUInt16} for n in names},
                                                  f"u16-{count}")
        chosen = _weigh_u16(context, best, chosen, context.candidate(quantizer, best.exclude), names,
                            f"+ u16 ({first} outputs + {extra} worst)")
    return chosen


def _weigh_u16(context: Context, best: Candidate, chosen: Candidate, candidate: Candidate, names: list[str],
               step: str) -> Candidate:
    """Keep ``candidate`` over ``chosen`` when it wins within the latency budget (:meth:`Context.within_budget`);
    a kept earlier try that it beats is then no longer kept."""
    kept = context.within_budget(step, chosen, candidate, ", ".join(names))
    if kept is candidate and chosen is not best:
        _drop(context.report, chosen)
    return kept


def _drop(report: QuantizeReport, superseded: Candidate) -> None:
    """A u16 try that a later, larger one beat is no longer the kept step."""
    for step in report.steps:
        if step.model_file == str(superseded.path):
            step.kept = False
            step.note += "; superseded by a later try"


STEP_FUNCTIONS: dict[str, Callable[[Context, Candidate], Candidate]] = {
    WEIGHTS_7BIT: seven_bit_weights,
    EQUALIZE: equalization,
    MSE_CLIP: mse_clipping,
    ADAROUND: learned_rounding,
    BIAS_CORRECTION: bias_correction,
    MIXED_U16: mixed_u16,
    FLOAT_LAYERS: float_layers,
}
