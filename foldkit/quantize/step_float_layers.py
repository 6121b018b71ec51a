"""The quantize step that keeps the few layers int8 hurts most in float, within the latency budget.

Quantized heads are where users of other quantizers report "int8 detects nothing", and the first
conv sees the raw image; but which layers matter is measured, not assumed: the all-but-one
sensitivity ranking (:mod:`foldkit.quantize.sensitivity`) on the best model so far. The top
:data:`FLOAT_LAYERS_TRIED` layers whose float copy helps are then tried one by one, each on top
of those already kept; a layer stays float only when its gain beats the judgement's bootstrap
noise and the model's p50 stays within ``latency_budget`` × the float model's. The last int8
layer always stays int8: a model with every layer in float is the float model, not its int8 version
(on an AMX CPU a one-conv model's float copy fit a 1× budget). The report names each layer kept in
float with what it bought and cost.
"""

from __future__ import annotations

from foldkit.quantize.context import Candidate, Context
from foldkit.quantize.report import FloatLayer
from foldkit.quantize.sensitivity import rank_layers

FLOAT_LAYERS_TRIED = 3  # the most sensitive layers tried in float, one at a time


def float_layers(context: Context, best: Candidate) -> Candidate:
    ranking = rank_layers(best.quantizer, context.judge, best.exclude, best.judgement.min_snr_db,
                          context.options.progress)
    context.report.sensitivity = ranking
    helpful = [layer for layer in ranking if layer.gain_db > 0][:FLOAT_LAYERS_TRIED]
    if not helpful:
        context.report.notes.append("float layers: no single layer in float raises the worst output's SNR")
    chosen, floated = best, 0
    for layer in helpful:
        if floated + 1 >= len(ranking):  # the ranking has one entry per int8 layer
            context.report.notes.append(f"float layers: {layer.node} stays int8, the model's last int8 layer")
            break
        nodes = best.quantizer.layer_nodes(layer.node)
        candidate = context.candidate(chosen.quantizer, [*chosen.exclude, *nodes])
        note = f"{', '.join(nodes)} in float (alone: {layer.gain_db:+.2f} dB)"
        kept = context.within_budget(f"+ {layer.node} in float", chosen, candidate, note, min_gain=0.0)
        if kept is candidate:
            reason = f"float-layers step: {context.report.steps[-1].note}"
            context.report.float_layers.append(FloatLayer(layer.node, reason))
            floated += 1
        chosen = kept
    return chosen
