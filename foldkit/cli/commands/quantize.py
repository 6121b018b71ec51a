"""``foldkit quantize``: int8 (QDQ) after the fold, with its accuracy measured."""

from __future__ import annotations

import argparse

from foldkit.cli import options
from foldkit.cli.codes import EXIT_OK, EXIT_PARITY_FAILED
from foldkit.cli.feedback import status_lines
from foldkit.defaults import CALIBRATION_METHODS
from foldkit.quantize.options import (
    BIAS_CORRECTION,
    EQUALIZE,
    HELD_OUT_VARIANTS,
    LATENCY_BUDGET,
    OFF_INT8_MIN_GAIN_DB,
    STEPS,
)

NAME = "quantize"
HELP = "quantize to int8 (QDQ) after the fold, with the accuracy cost measured"
DESCRIPTION = (
    "Fold the model, then quantize it to int8 with ONNX Runtime's static quantizer plus foldkit's measured steps; "
    "each step is kept only where it improves the held-out signal-to-noise ratio by more than the measured noise "
    "of that judgement. A folder of images calibrates on all of them and is judged on seeded variants of them. "
    "With --target-snr, exit 1 (and nothing written) when no setting reaches it."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a float ONNX model (foldkit folds it first)")
    parser.add_argument("-o", "--output", required=True, help="the int8 .onnx file to write")
    options.add_calibration(parser)
    parser.add_argument("--held-out", type=options.positive,
                        help="inputs kept aside to judge the result (default: a quarter of an .npy batch; for a "
                             "folder, seeded variants of its images instead)")
    parser.add_argument("--held-out-variants", type=options.positive, default=HELD_OUT_VARIANTS, metavar="N",
                        help="seeded variants (crop, mirror, stretch) of each folder image that judge the result")
    parser.add_argument("--method", choices=CALIBRATION_METHODS, default="minmax", help="calibration method")
    parser.add_argument("--target-snr", type=options.snr, metavar="DB",
                        help="keep the fewest most sensitive layers in float until every held-out output reaches it")
    parser.add_argument("--exclude", type=options.comma_list, default=[],
                        help="comma-separated node names to keep in float")
    parser.add_argument("--no-equalize", action="store_true", help="do not try cross-layer equalization")
    parser.add_argument("--no-bias-correction", action="store_true", help="do not try bias correction")
    parser.add_argument("--skip", type=_steps, default=[], metavar="STEPS",
                        help=f"comma-separated steps not to try, of: {', '.join(STEPS)}")
    parser.add_argument("--latency-budget", type=options.scale, default=LATENCY_BUDGET, metavar="X",
                        help="the most a step that leaves the int8 kernels (u16, layers in float) may cost, "
                             f"as a multiple of the float model's p50, and it must buy {OFF_INT8_MIN_GAIN_DB:g} dB "
                             "(default: %(default)s)")
    ranking = parser.add_mutually_exclusive_group()
    ranking.add_argument("--sensitivity", action="store_const", const="always", dest="sensitivity", default="auto",
                         help="always run the per-layer sensitivity analysis (default: when an output's SNR is low "
                              "or a target is missed)")
    ranking.add_argument("--no-sensitivity", action="store_const", const="never", dest="sensitivity",
                         help="never run it (one quantization per layer: minutes on a large network)")
    options.add_seed(parser, "the calibration split and random inputs")
    parser.add_argument("--report", help="also write the report as JSON here")


def _steps(text: str) -> list[str]:
    names = options.comma_list(text)
    unknown = [name for name in names if name not in STEPS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    return names


def run(args: argparse.Namespace) -> int:
    from foldkit.quantize import QuantizeOptions, quantize_onnx

    skipped = {*args.skip, *(step for step, off in ((EQUALIZE, args.no_equalize),
                                                   (BIAS_CORRECTION, args.no_bias_correction)) if off)}
    report = quantize_onnx(args.model, args.output, QuantizeOptions(
        calib=args.calib, calib_random=args.calib_random, held_out=args.held_out,
        held_out_variants=args.held_out_variants, seed=args.seed, method=args.method,
        steps=tuple(step for step in STEPS if step not in skipped),
        target_snr=args.target_snr, exclude=args.exclude, sensitivity=args.sensitivity,
        latency_budget=args.latency_budget, progress=status_lines(),
    ), report_path=args.report)
    print(report.format())
    if args.report:
        print(f"wrote {args.report}")
    return EXIT_OK if report.passed else EXIT_PARITY_FAILED
