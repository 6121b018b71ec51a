"""What a model's layers are and which of its normalizations fold — without changing anything.

For a Darknet cfg (or built-in name) the table is the network plan's: each layer's index, section
type, output shape C×H×W and whether its normalization folds (and, if not, why), followed by the
fork choices the result depends on (BatchNorm ε, and each Darknet behaviour where AlexeyAB's and
pjreddie's builds disagree that this network relies on), and the network stride with whether
the network can be exported with a dynamic size. For an ONNX file it is the fold report.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from foldkit.darknet import specs as spec
from foldkit.darknet.build import DarknetModel, build_model
from foldkit.darknet.sizes import network_stride, require_dynamic, stride_text
from foldkit.errors import FoldkitError
from foldkit.fold.onnx import fold_onnx, node_counts
from foldkit.fold.report import FOLDED, FoldReport
from foldkit.fold.torch import fold_module
from foldkit.onnxio.files import load_onnx

BN_EPSILON_NOTES = {
    "alexeyab": "γ(x − μ)/√(σ² + 1e-5) + β, as AlexeyAB's Darknet and pjreddie's GPU build compute it "
                "(--bn-variant pjreddie for pjreddie's CPU build, γ(x − μ)/(√σ² + 1e-6) + β)",
    "pjreddie": "γ(x − μ)/(√σ² + 1e-6) + β, as pjreddie's CPU build computes it (the variance is rewritten so "
                "that ε = 0 reproduces it exactly)",
}


def inspect_module(model: nn.Module, *, bn_variant: str = "alexeyab") -> str:
    """A table of a Darknet model's layers with each norm's fold verdict; or the fold report for any module."""
    _, report = fold_module(model)
    if not isinstance(model, DarknetModel):
        return report.format(verbose=True)
    rows = [("#", "layer", "output", "conv", "activation", "norm: fold")]
    for index, layer in enumerate(model.plan.layers):
        rows.append((str(index), layer.kind, "×".join(map(str, layer.shape)), _conv_text(layer.params),
                     getattr(layer.params, "activation", ""), _fold_text(report, index)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    return "\n".join([_summary_line(model), *lines, "", *_choice_lines(model.info, bn_variant), "", report.format()])


def _summary_line(model: DarknetModel) -> str:
    info = model.info
    heads = [getattr(head, "kind", "yolo") for head in info.heads]
    kind = f"detector, {len(heads)} heads ({', '.join(sorted(set(heads)))})" if heads else "classifier"
    return f"input {info.channels}×{info.height}×{info.width}, {len(model.plan.layers)} layers, {kind}"


def _conv_text(params: object) -> str:
    if not isinstance(params, spec.Conv):
        return ""
    stride_y, stride_x = params.stride
    stride = str(stride_y) if stride_y == stride_x else f"{stride_y}x{stride_x}"
    text = f"{params.in_channels}→{params.filters} {params.size}x{params.size}/{stride}"
    text += f" g{params.groups}" if params.groups > 1 else ""
    return text + (f" d{params.dilation}" if params.dilation > 1 else "")


def _fold_text(report: FoldReport, index: int) -> str:
    """The verdicts of the norms inside layer ``index`` ('-' when it has none)."""
    entries = [e for e in report.entries if e.node.startswith(f"layers.{index}.")]
    if not entries:
        return "-"
    return "; ".join(e.status if e.status == FOLDED or not e.reason else f"{e.status}: {e.reason}" for e in entries)


def _choice_lines(info: spec.NetInfo, bn_variant: str) -> list[str]:
    """The fork choices this network's result depends on."""
    lines = ["Fork choices:", f"  BatchNorm ε ({bn_variant}): {BN_EPSILON_NOTES[bn_variant]}"]
    lines += [f"  {key}: {note}" for key, note in getattr(info, "choices", {}).items()]
    return lines


def inspect_target(target: str | os.PathLike, *, bn_variant: str = "alexeyab",
                   img_size: int | tuple[int, int] | None = None) -> str:
    """``inspect`` for a built-in name, a ``.cfg`` path or an ``.onnx`` path."""
    if Path(target).suffix.lower() == ".onnx":
        model = load_onnx(target)
        before = node_counts(model)
        _, report = fold_onnx(model, inplace=True)
        ops = ", ".join(f"{op}×{n}" for op, n in before.items())
        return f"{target}: {sum(before.values())} nodes ({ops})\n{report.format(verbose=True)}"
    if bn_variant not in BN_EPSILON_NOTES:
        raise FoldkitError(f"unknown BatchNorm variant {bn_variant!r}; choose one of {', '.join(BN_EPSILON_NOTES)}")
    network = build_model(target, img_size)
    return f"{target}: " + inspect_module(network, bn_variant=bn_variant) + "\n" + _size_line(target, network.plan)


def _size_line(target: str | os.PathLike, plan: spec.NetworkPlan) -> str:
    """The network stride, and whether ``export --img-size dynamic`` can leave height and width free."""
    stride = stride_text(network_stride(plan))
    try:
        require_dynamic(target, plan)
    except FoldkitError as refused:
        return f"Input size: network stride {stride}; --img-size dynamic is refused: {refused}"
    return f"Input size: network stride {stride}; --img-size dynamic exports any multiple of it"
