"""``foldkit check``: parity of two ONNX models on the same inputs."""

from __future__ import annotations

import argparse

from foldkit.cli import options
from foldkit.cli.codes import EXIT_OK, EXIT_PARITY_FAILED
from foldkit.defaults import OPT_LEVEL_NAMES

NAME = "check"
HELP = "prove two ONNX models compute the same outputs (parity), or an int8 model's SNR"
DESCRIPTION = (
    "Run CANDIDATE and REFERENCE on the same seeded inputs and compare every output. An output passes when "
    "max|candidate − reference| ≤ atol + rtol · max|reference|, or, with --min-snr, when its signal-to-noise ratio "
    "against the reference reaches DB. Exit 1 when any output fails."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("candidate", help="the model under test (e.g. the folded or int8 one)")
    parser.add_argument("reference", help="the model it must agree with (e.g. the unfolded original)")
    options.add_tolerances(parser)
    options.add_seed(parser, "the generated inputs")
    parser.add_argument("--batch", type=options.positive, default=1, help="batch size for dynamic batch dimensions")
    parser.add_argument("--providers", default="auto",
                        help="auto (TensorRT > CUDA > CPU, as this onnxruntime has them), or cpu, cuda, …")
    parser.add_argument("--min-snr", type=options.snr, metavar="DB",
                        help="pass each output on its signal-to-noise ratio instead of atol/rtol (int8 vs float)")
    parser.add_argument("--opt-level", choices=OPT_LEVEL_NAMES,
                        help="ONNX Runtime graph optimizations for both models (default: disable, so each runs as "
                             "written; all with --min-snr, so an int8 model runs ORT's int8 kernels)")


def run(args: argparse.Namespace) -> int:
    from foldkit.parity import compare_onnx_models

    opt_level = args.opt_level or ("all" if args.min_snr is not None else "disable")
    report = compare_onnx_models(
        args.candidate, args.reference, atol=args.atol, rtol=args.rtol, seed=args.seed, batch=args.batch,
        providers=args.providers, opt_level=opt_level, min_snr=args.min_snr,
    )
    print(report.format())
    return EXIT_OK if report.passed else EXIT_PARITY_FAILED
