"""The fold patterns, one per file, registered here in the order the pass tries them.

For a BatchNormalization the patterns that fold it into the op before it come first; only when
none applies is it folded forward into the conv after it (:mod:`.bn_conv`).
"""

from __future__ import annotations

from foldkit.fold.onnx.patterns.bn_conv import BatchNormConv
from foldkit.fold.onnx.patterns.conv_bn import ConvBatchNorm
from foldkit.fold.onnx.patterns.conv_mul_add import ConvMulAdd
from foldkit.fold.onnx.patterns.convtranspose_bn import ConvTransposeBatchNorm
from foldkit.fold.onnx.patterns.gemm_bn import GemmBatchNorm
from foldkit.fold.onnx.patterns.matmul_bn import MatMulBatchNorm
from foldkit.fold.onnx.plan import Pattern

PATTERNS: tuple[Pattern, ...] = (
    ConvBatchNorm(),
    ConvTransposeBatchNorm(),
    GemmBatchNorm(),
    MatMulBatchNorm(),
    BatchNormConv(),
    ConvMulAdd(),
)
