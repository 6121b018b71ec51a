"""Where each linear op keeps its output channels, groups and bias: the one table the patterns read.

A fold scales a weight along its output-channel axis (:func:`foldkit.fold.affine.channel_scale`
explains the two layouts). Which axis that is, whether a ``group`` attribute splits it, and in
which input slot the bias goes differs per op; nothing else about the fold does.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from foldkit.fold.onnx.graph import attributes


@dataclass(frozen=True)
class OpLayout:
    """How one op type lays out its weight (input 1) and bias."""

    output_axis: int  # weight axis holding the output channels (of one group, for axis 1)
    weight_ranks: tuple[int, int | None]  # (lowest, highest or None: any) weight rank the layout describes
    bias_input: int = 2  # input slot of the bias (MatMul has none: it becomes Gemm's C)
    groups_attribute: str | None = None  # attribute splitting channels into groups
    transposed_by: str | None = None  # attribute that, when 1, moves the output channels to axis 0


LAYOUTS: dict[str, OpLayout] = {
    "Conv": OpLayout(output_axis=0, weight_ranks=(3, None), groups_attribute="group"),  # [C_out, C_in/g, k…]
    "ConvTranspose": OpLayout(output_axis=1, weight_ranks=(3, None), groups_attribute="group"),  # [C_in, C_out/g, k…]
    "Gemm": OpLayout(output_axis=1, weight_ranks=(2, 2), transposed_by="transB"),  # B: [K, N], or [N, K] transposed
    "MatMul": OpLayout(output_axis=1, weight_ranks=(2, 2)),  # B: [K, N]; a batched (3-D+) B has no one column axis
}
CONVS = ("Conv", "ConvTranspose")


def weight_axis_and_groups(node: onnx.NodeProto) -> tuple[int, int]:
    """(output-channel axis of ``node``'s weight, groups) from :data:`LAYOUTS` and its attributes."""
    layout = LAYOUTS[node.op_type]
    attrs = attributes(node)
    axis = 0 if layout.transposed_by and attrs.get(layout.transposed_by, 0) else layout.output_axis
    groups = attrs.get(layout.groups_attribute, 1) if layout.groups_attribute else 1
    return axis, groups
