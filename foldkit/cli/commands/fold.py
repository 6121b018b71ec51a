"""``foldkit fold``: fold BatchNorm (and per-channel Mul/Add) in any ONNX model."""

from __future__ import annotations

import argparse

from foldkit.cli import options
from foldkit.cli.codes import EXIT_OK, EXIT_PARITY_FAILED

NAME = "fold"
HELP = "fold BatchNorm (and per-channel Mul/Add) into the linear ops of an ONNX model"
DESCRIPTION = (
    "Fold every BatchNormalization (and per-channel Mul/Add) into the Conv, ConvTranspose, Gemm or MatMul next to "
    "it, in float64, cast once. Every norm left unfolded is reported with its reason. With --check the result is "
    "proven against the original; exit 1 (and nothing written) when parity fails."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="the ONNX model to fold (never modified)")
    parser.add_argument("-o", "--output", required=True, help="the folded .onnx file to write")
    parser.add_argument("--report", help="also write the per-node report as JSON here")
    parser.add_argument("--check", action="store_true",
                        help="prove parity against the original (both run with every ORT optimization off)")
    parser.add_argument("--simplify", action="store_true",
                        help="run onnx-simplifier after the fold; the result is always parity-checked (implies "
                             "--check)")
    parser.add_argument("--allow-initializer-inputs", action="store_true",
                        help="treat initializers that are also graph inputs as constants")
    options.add_tolerances(parser)


def run(args: argparse.Namespace) -> int:
    from foldkit.pipeline import fold_file

    result = fold_file(
        args.input, args.output, report_path=args.report, check=args.check,
        allow_initializer_inputs=args.allow_initializer_inputs, atol=args.atol, rtol=args.rtol,
        simplify=args.simplify,
    )
    print(result.format())
    return EXIT_OK if result.parity is None or result.parity.passed else EXIT_PARITY_FAILED
