"""``foldkit export``: a Darknet network (built-in name or .cfg, with or without .weights) to ONNX."""

from __future__ import annotations

import argparse

from foldkit.cli import options
from foldkit.cli.codes import EXIT_OK
from foldkit.cli.feedback import progress_bar
from foldkit.defaults import (
    BN_VARIANTS,
    DEFAULT_CONF,
    DEFAULT_IOU,
    DEFAULT_MAX_DET,
    DEFAULT_OPSET,
    EXPORT_ROUTES,
)

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
    parser.add_argument("--img-size", type=options.export_image_size, metavar="N|HxW|dynamic",
                        help="input size: N (square), HxW (height x width), or 'dynamic': height and width "
                             "symbolic in the graph, any multiple of the network stride (refused, naming the "
                             "layer, where the network cannot take another size) (default: the cfg's [net] "
                             "width and height)")
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
    parser.add_argument("--nms", action="store_true",
                        help="end the graph with NonMaxSuppression (implies --decode): outputs detections "
                             "(N, max-det, 6) = x1 y1 x2 y2 score class in input pixels and count (N,); conf and iou "
                             "are graph inputs defaulting to --conf and --iou")
    parser.add_argument("--max-det", type=options.max_det,
                        default=DEFAULT_MAX_DET, help="with --nms: detection rows per image")
    parser.add_argument("--conf", type=options.fraction, default=DEFAULT_CONF,
                        help="with --nms: the default objectness × class score threshold")
    parser.add_argument("--iou", type=options.fraction, default=DEFAULT_IOU,
                        help="with --nms: the default per-class IoU threshold")
    parser.add_argument("--random-weights", type=options.seed, metavar="SEED",
                        help="seed of the random weights used without --weights (default: 0)")


def run(args: argparse.Namespace) -> int:
    from foldkit.darknet.export import export_darknet
    from foldkit.deploy.nms_graph import NmsSettings

    nms = NmsSettings(args.max_det, args.conf, args.iou) if args.nms else None
    result = export_darknet(
        args.model, args.output, weights=args.weights, seed=args.random_weights, img_size=args.img_size,
        batch=args.batch, opset=args.opset, fold=not args.no_fold, decode=args.decode, exporter=args.exporter,
        bn_variant=args.bn_variant, progress=progress_bar(), nms=nms,
    )
    print(result.format())
    return EXIT_OK
