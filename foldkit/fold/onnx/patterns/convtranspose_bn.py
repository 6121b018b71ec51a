"""ConvTranspose → BatchNormalization, groups included.

A ConvTranspose weight is ``[C_in, C_out/g, k…]``: output channel ``group·(C_out/g) + j`` is column
j of the rows of that group, so the scale is laid out per group (the layout table says so).
"""

from __future__ import annotations

from foldkit.fold.onnx.patterns.linear_bn import LinearThenBatchNorm


class ConvTransposeBatchNorm(LinearThenBatchNorm):
    op_type = "ConvTranspose"
