"""What a model's layers are and which of its normalizations fold — without changing anything."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from foldkit.darknet.build import DarknetModel, build_model
from foldkit.onnxio.files import load_onnx
from foldkit.fold.onnx import fold_onnx, node_counts
from foldkit.fold.torch import fold_module


def inspect_module(model: nn.Module) -> str:
    """A table of a Darknet model's layers with each norm's fold verdict; or the report for any module."""
    _, report = fold_module(model)
    if not isinstance(model, DarknetModel):
        return report.format(verbose=True)
    verdicts = {entry.node: entry for entry in report.entries}
    lines = [f"  {'#':>4} {'layer':<14} {'conv':<26} {'norm':<12} {'activation':<11} fold"]
    for index, (kind, layer) in enumerate(zip(model.kinds, model.layers)):
        conv = norm = act = verdict = ""
        if kind == "convolutional":
            c = layer.conv
            conv = f"{c.in_channels}→{c.out_channels} {c.kernel_size[0]}x{c.kernel_size[1]}/{c.stride[0]}"
            conv += f" g{c.groups}" if c.groups > 1 else ""
            norm = type(layer.norm).__name__ if not isinstance(layer.norm, nn.Identity) else "-"
            act = type(layer.act).__name__
            entry = verdicts.get(f"layers.{index}.norm")
            verdict = entry.status + (f": {entry.reason}" if entry and entry.reason else "") if entry else "-"
        lines.append(f"  {index:>4} {kind:<14} {conv:<26} {norm:<12} {act:<11} {verdict}")
    return "\n".join(lines + ["", report.format()])


def inspect_target(target: str | os.PathLike) -> str:
    """``inspect`` for a built-in name, a ``.cfg`` path or an ``.onnx`` path."""
    if Path(target).suffix.lower() == ".onnx":
        model = load_onnx(target)
        before = node_counts(model)
        folded, report = fold_onnx(model, inplace=True)
        ops = ", ".join(f"{op}×{n}" for op, n in before.items())
        return f"{target}: {sum(before.values())} nodes ({ops})\n{report.format(verbose=True)}"
    return f"{target}:\n" + inspect_module(build_model(target))
