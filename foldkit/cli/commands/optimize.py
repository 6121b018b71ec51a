"""``foldkit optimize``: the fastest artifact this machine can run, proven accurate."""

from __future__ import annotations

import argparse

from foldkit.cli import options
from foldkit.cli.codes import EXIT_OK, EXIT_PARITY_FAILED
from foldkit.cli.feedback import status_lines
from foldkit.defaults import OPTIMIZE_BUDGET_S, OPTIMIZE_MIN_SNR_DB

NAME = "optimize"
HELP = "try every runtime and precision this machine runs; keep the fastest that stays accurate"
DESCRIPTION = (
    "Build the candidates this machine supports (ONNX Runtime float32 and foldkit's int8, OpenVINO float32, bf16 "
    "where the CPU has it, and int8; CUDA/TensorRT where present), judge each against the original model on "
    "held-out inputs, time them side by side, and write the fastest one that passes the accuracy gate to "
    "OUT_DIR/model.onnx with a deployment record (also OUT_DIR/deployment.json) that detect, the predictor, "
    "the Ray engine and triton follow. "
    f"The gate is every output's SNR ≥ {OPTIMIZE_MIN_SNR_DB:g} dB unless --min-snr or --min-f1 say otherwise. "
    "Exit 1, nothing written, when no candidate passes."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from foldkit.optimize.candidates import candidate_names

    parser.add_argument("model", help="a float ONNX model (e.g. from foldkit export)")
    parser.add_argument("-o", "--out-dir", required=True, help="the folder for model.onnx and deployment.json")
    options.add_calibration(parser)
    gate = parser.add_mutually_exclusive_group()
    gate.add_argument("--min-snr", type=options.snr, metavar="DB",
                      help=f"every output's held-out SNR must reach DB (default: {OPTIMIZE_MIN_SNR_DB:g})")
    gate.add_argument("--min-f1", type=options.fraction, metavar="F",
                      help="detection agreement with the original (F1, YOLO models) must reach F instead")
    parser.add_argument("--budget-s", type=lambda t: options.real(t, 0.0, 3600.0, "seconds from 0 to 3600"),
                        default=OPTIMIZE_BUDGET_S, help="time for the interleaved latency rounds")
    parser.add_argument("--candidates", type=options.comma_list,
                        help=f"comma-separated candidates to try (default: all): {', '.join(candidate_names())}")
    parser.add_argument("--threads", type=options.positive, help="intra-op threads (default: each runtime's own)")
    options.add_seed(parser, "the calibration split and held-out variants")


def run(args: argparse.Namespace) -> int:
    from foldkit.optimize import OptimizeOptions, optimize_model

    report = optimize_model(args.model, args.out_dir, OptimizeOptions(
        calib=args.calib, calib_random=args.calib_random, min_snr=args.min_snr, min_f1=args.min_f1,
        candidates=args.candidates, budget_s=args.budget_s, threads=args.threads, seed=args.seed,
        progress=status_lines()))
    print(report.format())
    return EXIT_OK if report.passed else EXIT_PARITY_FAILED
