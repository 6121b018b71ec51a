"""``foldkit detect``: run a YOLO ONNX model on images, JSON and drawn boxes per image."""

from __future__ import annotations

import argparse

from foldkit.cli import options
from foldkit.cli.codes import EXIT_OK
from foldkit.cli.feedback import progress_bar
from foldkit.defaults import HEAD_KINDS

NAME = "detect"
HELP = "run a YOLO ONNX model on images: JSON and drawn boxes per image"
DESCRIPTION = (
    "Detect objects with a YOLO ONNX model: letterbox each image, run the model, decode the heads, apply class-wise "
    "NMS, and write IMAGE.json and a drawn IMAGE.jpg per image into the output folder. A model exported by foldkit "
    "carries its classes and anchors; for others give --classes and --anchors."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a YOLO .onnx model (raw head maps)")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("-o", "--out-dir", default="detections", help="the folder for the JSON and drawn images")
    parser.add_argument("--names", help="class names, one per line (Darknet .names; default: class numbers)")
    parser.add_argument("--conf", type=options.fraction, default=0.25, help="objectness × class score threshold")
    parser.add_argument("--iou", type=options.fraction, default=0.45, help="NMS IoU threshold (per class)")
    parser.add_argument("--providers", default="auto",
                        help="auto (TensorRT > CUDA > CPU, as this onnxruntime has them), or a comma-separated list")
    parser.add_argument("--strict", action="store_true", help="fail instead of falling back to another provider")
    parser.add_argument("--batch", type=options.positive, default=1, help="images per run (dynamic-batch models)")
    parser.add_argument("--classes", type=options.positive, help="class count (models without foldkit metadata)")
    parser.add_argument("--anchors", help="'w,h,w,h,…;…' per head in output order (models without metadata)")
    parser.add_argument("--head", choices=HEAD_KINDS, default="yolo",
                        help="head kind for --anchors: yolo (anchors in pixels) or region (YOLOv2, anchors in cells)")
    parser.add_argument("--scale-x-y", type=options.scale, default=1.0,
                        help="the cfg's scale_x_y (models without metadata)")


def run(args: argparse.Namespace) -> int:
    from foldkit.deploy.detect import detect_images

    providers = args.providers if args.providers == "auto" else options.comma_list(args.providers)
    results = detect_images(
        args.model, args.images, args.out_dir, names=args.names, conf=args.conf, iou=args.iou,
        providers=providers, strict=args.strict, batch=args.batch, classes=args.classes, anchors=args.anchors,
        scale_x_y=args.scale_x_y, head_kind=args.head, progress=progress_bar(),
    )
    total = sum(len(r.detections) for r in results)
    print(f"{len(results)} image(s), {total} detection(s); wrote JSON and drawn images to {args.out_dir}")
    return EXIT_OK
