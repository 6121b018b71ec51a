"""``foldkit demo``: the main job on a built-in network, nothing downloaded."""

from __future__ import annotations

import argparse
from pathlib import Path

from foldkit.cli import options
from foldkit.cli.codes import EXIT_OK, EXIT_PARITY_FAILED

NAME = "demo"
HELP = "export a built-in network folded and unfolded, prove parity, time both"
DESCRIPTION = (
    "Export a built-in network (seeded random weights with realistic BatchNorm statistics) folded and unfolded, "
    "prove the two agree and agree with a float64 reference, and time them side by side. Nothing is downloaded."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default="yolov3-tiny",
                        help="a built-in network: darknet53, yolov3 or yolov3-tiny")
    options.add_image_size(parser, default=416)
    parser.add_argument("--out", default="foldkit-demo", help="the folder for the two ONNX files")
    parser.add_argument("--rounds", type=options.positive, default=20, help="timed rounds per variant")
    parser.add_argument("--threads", type=options.positive, help="ORT intra-op threads (default: ORT's choice)")


def run(args: argparse.Namespace) -> int:
    from foldkit.demo import run_demo

    passed = run_demo(args.model, img_size=args.img_size, out=Path(args.out), rounds=args.rounds,
                      threads=args.threads)
    return EXIT_OK if passed else EXIT_PARITY_FAILED
