"""Which layers int8 hurts most, and the fewest to keep in float for a target output SNR.

Sensitivity is measured, not guessed: for each quantizable layer (a conv with the activation,
pool or pad that carries its output on), the model is quantized with that one layer kept in
float and everything else int8 (all-but-one), and the held-out output SNR
is compared with the all-int8 model's. The gain ranks the layers. The target search then keeps
the top k of that ranking in float, for the smallest k that reaches the target (k doubles until
it does, then a bisection finds the smallest; each try is a real quantization and a real run).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from foldkit.quantize.judge import HeldOutJudge, Judgement, min_snr
from foldkit.quantize.options import Progress
from foldkit.quantize.static import StaticQuantizer


@dataclass
class LayerSensitivity:
    node: str
    op: str
    snr_db: float  # min output SNR with only this layer in float
    gain_db: float  # over the all-int8 model


@dataclass
class TargetSearch:
    """The outcome of a target-SNR search: how many layers stay float, and every try on the way."""

    target_db: float
    reached: bool
    float_layers: list[str]  # each with the ops that carry its output (StaticQuantizer.layer_nodes)
    judgement: Judgement
    path: Path  # the chosen (or, when not reached, the most-float) model
    tries: list[tuple[int, float]] = field(default_factory=list)  # (layers kept float, min SNR)


def rank_layers(quantizer: StaticQuantizer, judge: HeldOutJudge, exclude: Sequence[str], baseline_db: float,
                progress: Progress | None = None, only: Collection[str] | None = None) -> list[LayerSensitivity]:
    """Every quantizable layer not already excluded (or those of them in ``only``), most sensitive first."""
    candidates = [node for node in quantizer.quantizable_nodes()
                  if node.name not in exclude and (only is None or node.name in only)]
    ranking = []
    for index, node in enumerate(candidates):
        path = quantizer.quantize([*exclude, *quantizer.layer_nodes(node.name)])
        snr = min_snr(judge.errors(path))
        path.unlink()
        ranking.append(LayerSensitivity(node.name, node.op_type, snr, snr - baseline_db))
        if progress:
            progress(f"sensitivity {index + 1}/{len(candidates)}: {node.name} float → {snr:.1f} dB")
    return sorted(ranking, key=lambda layer: layer.gain_db, reverse=True)


def fewest_float_layers(quantizer: StaticQuantizer, judge: HeldOutJudge, ranking: list[LayerSensitivity],
                        exclude: Sequence[str], target_db: float,
                        progress: Progress | None = None) -> TargetSearch:
    """Keep the k most sensitive layers in float, for the smallest k whose min output SNR ≥ ``target_db``.

    At least one layer stays int8: a model with every layer in float reaches any target and is no
    int8 model at all, so needing that means the target cannot be reached.
    """
    order = [layer.node for layer in ranking][:max(len(ranking) - 1, 0)]
    results: dict[int, tuple[float, Judgement, Path]] = {}

    def attempt(k: int) -> bool:
        if k not in results:
            path = quantizer.quantize([*exclude, *(n for layer in order[:k] for n in quantizer.layer_nodes(layer))])
            judgement = judge.judge(path)
            results[k] = (judgement.min_snr_db, judgement, path)
            if progress:
                progress(f"target {target_db:g} dB: {k} layer(s) float → {results[k][0]:.1f} dB")
        return results[k][0] >= target_db

    low, high = 0, min(1, len(order))
    while high < len(order) and not attempt(high):
        low, high = high, min(2 * high, len(order))
    reached = attempt(high)
    if reached:
        while high - low > 1:  # attempt(low) failed (or low = 0), attempt(high) passed
            middle = (low + high) // 2
            if attempt(middle):
                high = middle
            else:
                low = middle
    _, judgement, path = results[high]
    for k, (_, _, other) in results.items():
        if k != high:
            other.unlink(missing_ok=True)
    return TargetSearch(target_db, reached, order[:high], judgement, path,
                        sorted((k, value[0]) for k, value in results.items()))
