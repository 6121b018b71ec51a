"""Conv → BatchNormalization: each filter scaled by its channel's γ/√(σ²+ε), the shift into the bias.

A Conv weight is ``[C_out, C_in/g, k…]``: output channels on axis 0 whatever the groups.
"""

from __future__ import annotations

from foldkit.fold.onnx.patterns.linear_bn import LinearThenBatchNorm


class ConvBatchNorm(LinearThenBatchNorm):
    op_type = "Conv"
