"""``foldkit triton``: a Triton Inference Server model repository entry for an ONNX model."""

from __future__ import annotations

import argparse

from foldkit.cli import options
from foldkit.cli.codes import EXIT_OK
from foldkit.defaults import TRITON_KINDS

NAME = "triton"
HELP = "write a Triton model repository entry (onnxruntime backend)"
DESCRIPTION = (
    "Write REPO/NAME/config.pbtxt and REPO/NAME/1/model.onnx for Triton's onnxruntime backend, inputs and outputs "
    "read from the model. The entry is staged and renamed whole: a failed run leaves the old entry."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the .onnx model to serve")
    parser.add_argument("--repo", required=True, help="the model repository folder (created if missing)")
    parser.add_argument("--name", help="model name in the repository (default: the file's stem)")
    parser.add_argument("--max-batch", type=options.positive, default=8,
                        help="Triton's max_batch_size (dynamic-batch models)")
    parser.add_argument("--instances", type=options.positive, default=1, help="model instances in the group")
    parser.add_argument("--kind", choices=TRITON_KINDS, default="cpu", help="instance group kind")


def run(args: argparse.Namespace) -> int:
    from foldkit.deploy.triton import write_repository

    config = write_repository(args.model, args.repo, name=args.name, max_batch=args.max_batch,
                              instances=args.instances, kind=args.kind)
    print(f"wrote {config} and {config.parent / '1' / 'model.onnx'}")
    return EXIT_OK
