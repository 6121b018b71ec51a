"""The quantize step that keeps the few layers int8 hurts most in float, within the latency budget.

Quantized heads are where users of other quantizers report "int8 detects nothing", and the first
conv sees the raw image; but which layers matter is measured, not assumed: the all-but-one
sensitivity ranking (:mod:`foldkit.quantize.sensitivity`) on the best model so far. Ranking costs
one quantization and one judgement per layer (about 20 minutes for YOLOv3's 75 convs on 2 cores),
so a model with more than :data:`RANK_EVERY_LAYER_UP_TO` int8 layers has a shortlist ranked: the
layers that read the graph input, the layers whose output is a graph output, and the
:data:`SHORTLIST_WORST_INPUTS` layers whose input activation u8 rounds worst (noise-to-signal over
the calibration histograms); the report says how many of how many were ranked.

The top :data:`FLOAT_LAYERS_TRIED` layers whose float copy helps are then tried one by one, each
on top of those already kept; a layer stays float only when its gain beats the judgement's
bootstrap noise and buys at least 1 dB, and the model's p50 stays within ``latency_budget`` × the
float model's (:meth:`Context.within_budget`). The last
int8 layer always stays int8: a model with every layer in float is the float model, not its int8
version (on an AMX CPU a one-conv model's float copy fit a 1× budget). The report names each layer
kept in float with what it bought and cost.
"""

from __future__ import annotations

from foldkit.quantize.activations import activation_stats
from foldkit.quantize.context import Candidate, Context
from foldkit.quantize.options import OFF_INT8_MIN_GAIN_DB
from foldkit.quantize.report import FloatLayer
from foldkit.quantize.sensitivity import rank_layers

FLOAT_LAYERS_TRIED = 3  # the most sensitive layers tried in float, one at a time
RANK_EVERY_LAYER_UP_TO = 12  # int8 layers; a larger model has a shortlist ranked
SHORTLIST_WORST_INPUTS = 4  # layers added to the shortlist for the u8 rounding of their input


def float_layers(context: Context, best: Candidate) -> Candidate:
    layers = [node.name for node in best.quantizer.quantizable_nodes() if node.name not in best.exclude]
    only = shortlist(context, best) if len(layers) > RANK_EVERY_LAYER_UP_TO else None
    ranking = rank_layers(best.quantizer, context.judge, best.exclude, best.judgement.min_snr_db,
                          context.options.progress, only=only)
    if only is None:
        context.report.sensitivity = ranking  # every layer: the report's sensitivity table
    else:
        context.report.notes.append(
            f"float layers: ranked {len(ranking)} of {len(layers)} int8 layers (those reading the input, those "
            f"writing an output, the {SHORTLIST_WORST_INPUTS} whose input u8 rounds worst): "
            + ", ".join(f"{layer.node} {layer.gain_db:+.2f} dB" for layer in ranking))
    helpful = [layer for layer in ranking if layer.gain_db >= OFF_INT8_MIN_GAIN_DB][:FLOAT_LAYERS_TRIED]
    if not helpful:
        context.report.notes.append(f"float layers: no single layer in float raises the worst output's SNR by "
                                    f"{OFF_INT8_MIN_GAIN_DB:g} dB")
    chosen, floated = best, 0
    for layer in helpful:
        if floated + 1 >= len(layers):
            context.report.notes.append(f"float layers: {layer.node} stays int8, the model's last int8 layer")
            break
        nodes = best.quantizer.layer_nodes(layer.node)
        candidate = context.candidate(chosen.quantizer, [*chosen.exclude, *nodes])
        note = f"{', '.join(nodes)} in float (alone: {layer.gain_db:+.2f} dB)"
        kept = context.within_budget(f"+ {layer.node} in float", chosen, candidate, note)
        if kept is candidate:
            reason = f"float-layers step: {context.report.steps[-1].note}"
            context.report.float_layers.append(FloatLayer(layer.node, reason))
            floated += 1
        chosen = kept
    return chosen


def shortlist(context: Context, best: Candidate) -> set[str]:
    """The layers worth ranking in a large model: input readers, output writers, the worst-rounded inputs."""
    quantizer = best.quantizer
    graph = quantizer.model.graph
    inputs, outputs = {i.name for i in graph.input}, {o.name for o in graph.output}
    by_name = {node.name: node for node in graph.node}
    nodes = [node for node in quantizer.quantizable_nodes() if node.name not in best.exclude]
    chosen = {node.name for node in nodes if node.input[0] in inputs}
    # a layer writes an output when the last op of its chain (conv, activation, pool …) does
    chosen |= {node.name for node in nodes
               if set(by_name[quantizer.layer_nodes(node.name)[-1]].output) & outputs}
    ranges = quantizer.ranges()
    stats = {s.name: s for s in activation_stats(quantizer.model, quantizer.calibrate(), context.data.calibration,
                                                 context.input_name)}
    noise = {node.name: stats[node.input[0]].noise_to_signal(*ranges[node.input[0]])
             for node in nodes if node.input[0] in stats}
    rest = sorted((name for name in noise if name not in chosen), key=noise.__getitem__, reverse=True)
    return chosen | set(rest[:SHORTLIST_WORST_INPUTS])
