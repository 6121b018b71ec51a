"""``foldkit export``: a Darknet network (built-in name or .cfg, with or without .weights) to ONNX."""

from __future__ import annotations

import argparse

from foldkit.cli import options
from foldkit.cli.codes import EXIT_OK
from foldkit.cli.feedback import progress_bar
from foldkit.defaults import BN_VARIANTS, DEFAULT_OPSET, EXPORT_ROUTES

NAME = "export"
HELP = "export a Darknet network to ONNX, BatchNorm folded by foldkit"
DESCRIPTION = (
    "Export a Darknet network to ONNX. Without --weights the network gets seeded random weights (seed 0 unless "
    "--random-weights says otherwise). Every BatchNorm is folded into its convolution by foldkit unless --no-fold."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a built-in name (darknet53, yolov3, yolov3-tiny) or a Darknet .cfg path")
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument("--weights", help="a Darknet .weights file for the cfg (default: seeded random weights)")
    parser.add_argument("--img-size", type=options.positive,
                        help="input height and width (default: the cfg's [net] width and height)")
    parser.add_argument("--batch", type=options.batch, default=1, help="batch size, or 'dynamic'")
    parser.add_argument("--opset", type=options.opset, default=DEFAULT_OPSET, help="ONNX opset")
    parser.add_argument("--no-fold", action="store_true", help="keep the BatchNormalization nodes")
    parser.add_argument("--exporter", choices=EXPORT_ROUTES, default="auto",
                        help="direct: cfg + weights → ONNX without PyTorch (fast); torchscript/dynamo: through "
                             "torch; auto: direct when --weights is given without --decode, else torchscript")
    parser.add_argument("--bn-variant", choices=BN_VARIANTS, default="alexeyab",
                        help="BatchNorm ε: alexeyab √(σ²+1e-5) (also pjreddie's GPU build) or pjreddie's CPU "
                             "build √σ²+1e-6")
    parser.add_argument("--decode", action="store_true",
                        help="decode YOLO heads in the graph: one (N, boxes, 4+1+classes) output, boxes in input "
                             "pixels")
    parser.add_argument("--random-weights", type=options.seed, metavar="SEED",
                        help="seed of the random weights used without --weights (default: 0)")


def run(args: argparse.Namespace) -> int:
    from foldkit.darknet.export import export_darknet
    from foldkit.onnxio.files import check_outputs

    check_outputs([args.output], [args.model, args.weights])
    result = export_darknet(
        args.model, args.output, weights=args.weights, seed=args.random_weights, img_size=args.img_size,
        batch=args.batch, opset=args.opset, fold=not args.no_fold, decode=args.decode, exporter=args.exporter,
        bn_variant=args.bn_variant, progress=progress_bar(),
    )
    print(result.format())
    return EXIT_OK
