"""``foldkit quantize``: int8 (QDQ) after the fold, with its accuracy measured."""

from __future__ import annotations

import argparse

from foldkit.cli import options
from foldkit.cli.codes import EXIT_OK, EXIT_PARITY_FAILED
from foldkit.cli.feedback import status_lines
from foldkit.defaults import CALIBRATION_METHODS

NAME = "quantize"
HELP = "quantize to int8 (QDQ) after the fold, with the accuracy cost measured"
DESCRIPTION = (
    "Fold the model, then quantize it to int8 with ONNX Runtime's static quantizer plus foldkit's measured steps; "
    "each step is kept only where it improves the held-out signal-to-noise ratio. With --target-snr, exit 1 (and "
    "nothing written) when no setting reaches it."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a float ONNX model (foldkit folds it first)")
    parser.add_argument("-o", "--output", required=True, help="the int8 .onnx file to write")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--calib", help="a folder of images (preprocessed as detect does) or an .npy NCHW batch")
    source.add_argument("--calib-random", type=options.positive, metavar="N",
                        help="N seeded random inputs (smoke tests only: not representative data)")
    parser.add_argument("--held-out", type=options.positive,
                        help="inputs kept aside to judge the result (default: a quarter of them)")
    parser.add_argument("--method", choices=CALIBRATION_METHODS, default="minmax", help="calibration method")
    parser.add_argument("--target-snr", type=options.snr, metavar="DB",
                        help="keep the fewest most sensitive layers in float until every held-out output reaches it")
    parser.add_argument("--exclude", type=options.comma_list, default=[],
                        help="comma-separated node names to keep in float")
    parser.add_argument("--no-equalize", action="store_true", help="do not try cross-layer equalization")
    parser.add_argument("--no-bias-correction", action="store_true", help="do not try bias correction")
    parser.add_argument("--sensitivity", action="store_true", help="always run the per-layer sensitivity analysis")
    options.add_seed(parser, "the calibration split and random inputs")
    parser.add_argument("--report", help="also write the report as JSON here")


def run(args: argparse.Namespace) -> int:
    from foldkit.onnxio.files import check_outputs, write_text_atomic
    from foldkit.quantize import quantize_onnx

    check_outputs([args.output, args.report], [args.model, args.calib])
    report = quantize_onnx(
        args.model, args.output, calib=args.calib, calib_random=args.calib_random, held_out=args.held_out,
        seed=args.seed, method=args.method, equalize=not args.no_equalize,
        bias_correction=not args.no_bias_correction, target_snr=args.target_snr, exclude=args.exclude,
        sensitivity=True if args.sensitivity else None, progress=status_lines(),
    )
    print(report.format())
    if args.report:
        write_text_atomic(args.report, report.to_json())
        print(f"wrote {args.report}")
    return EXIT_OK if report.passed else EXIT_PARITY_FAILED
