"""``foldkit detect``: run a YOLO ONNX model on images, JSON and drawn boxes per image."""

from __future__ import annotations

import argparse
import warnings

from foldkit.cli import options
from foldkit.cli.codes import EXIT_OK
from foldkit.cli.feedback import progress_bar
from foldkit.defaults import (
    DEFAULT_LETTERBOX,
    DEFAULT_RESIZE,
    DETECT_ENGINES,
    HEAD_KINDS,
    LETTERBOX_MODES,
    RESIZE_METHODS,
)
from foldkit.errors import FoldkitError

NAME = "detect"
HELP = "run a YOLO ONNX model on images: JSON and drawn boxes per image"
DESCRIPTION = (
    "Detect objects with a YOLO ONNX model: letterbox each image, run the model, decode the heads, apply class-wise "
    "NMS, and write IMAGE.json and a drawn IMAGE.jpg per image into the output folder. A model exported by foldkit "
    "carries its classes and anchors; for others give --classes and --anchors. Images may be files, folders, list "
    "files (.txt, one path per line) or glob patterns. --engine ray runs the same work on a Ray cluster (an actor "
    "pool, one ONNX Runtime session per actor); there an unreadable image is a row with its error, not a failed run."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a YOLO .onnx model (raw head maps)")
    parser.add_argument("images", nargs="+",
                        help="image files, folders of images, list files (.txt, one path per line) or glob patterns")
    parser.add_argument("-o", "--out-dir", default="detections", help="the folder for the JSON and drawn images")
    parser.add_argument("--names", help="class names, one per line (Darknet .names; default: class numbers)")
    parser.add_argument("--conf", type=options.fraction, default=0.25, help="objectness × class score threshold")
    parser.add_argument("--iou", type=options.fraction, default=0.45, help="NMS IoU threshold (per class)")
    parser.add_argument("--providers", default="auto",
                        help="auto (TensorRT > CUDA > CPU, as this onnxruntime has them), or a comma-separated "
                             "list of cpu, cuda, tensorrt, openvino (OpenVINO's own runtime)")
    options.add_precision(parser)
    parser.add_argument("--strict", action="store_true", help="fail instead of falling back to another provider")
    parser.add_argument("--batch", type=options.positive, default=1, help="images per run (dynamic-batch models)")
    parser.add_argument("--classes", type=options.positive, help="class count (models without foldkit metadata)")
    parser.add_argument("--anchors", help="'w,h,w,h,…;…' per head in output order (models without metadata)")
    parser.add_argument("--head", choices=HEAD_KINDS, default="yolo",
                        help="head kind for --anchors: yolo (anchors in pixels) or region (YOLOv2, anchors in cells)")
    parser.add_argument("--scale-x-y", type=options.scale, default=1.0,
                        help="the cfg's scale_x_y (models without metadata)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace IMAGE.json/IMAGE.jpg files already in the output folder (refused otherwise: "
                             "they may be the user's own)")
    parser.add_argument("--resize", choices=RESIZE_METHODS, default=DEFAULT_RESIZE,
                        help="darknet: Darknet's letterbox_image arithmetic, the detections of darknet detect; "
                             "pil: PIL's antialiasing bilinear filter (models trained on such inputs)")
    options.add_image_size(parser, default_help="the model's own size; another needs a model exported with "
                                                "--img-size dynamic, and a multiple of its stride")
    parser.add_argument("--letterbox", choices=LETTERBOX_MODES, default=DEFAULT_LETTERBOX,
                        help="square: every image fills the whole input size; rect (dynamic models): each image's "
                             "input only up to the next multiple of the network stride per side (fewer gray "
                             "pixels to run; differently sized inputs run as separate batches)")
    parser.add_argument("--table", help="write one .parquet or .jsonl table, a row per image, instead of --out-dir")
    parser.add_argument("--engine", choices=DETECT_ENGINES, default="local",
                        help="local: this process; ray: a Ray Data actor pool (pip install 'foldkit[ray]')")
    parser.add_argument("--address", help="--engine ray: a running Ray cluster (HOST:PORT, or ray://HOST:PORT); "
                        "default: a local Ray on this machine's cores")
    parser.add_argument("--workers", type=options.positive,
                        help="--engine ray: actors in the pool, each with its share of the CPUs as ONNX Runtime "
                        "threads (default: one per CPU of the cluster)")


def run(args: argparse.Namespace) -> int:
    providers = args.providers if args.providers == "auto" else options.comma_list(args.providers)
    settings = dict(names=args.names, conf=args.conf, iou=args.iou, providers=providers, strict=args.strict,
                    batch=args.batch, classes=args.classes, anchors=args.anchors, scale_x_y=args.scale_x_y,
                    head_kind=args.head, table=args.table, resize=args.resize, overwrite=args.overwrite,
                    img_size=args.img_size, letterbox=args.letterbox,
                    precision=args.precision, progress=progress_bar(unit="img"))
    where = args.table or args.out_dir
    if args.engine == "ray":
        return _run_ray(args, settings, where)
    if args.address is not None or args.workers is not None:
        raise FoldkitError("--address and --workers need --engine ray")
    from foldkit.deploy.detect import detect_images

    results = detect_images(args.model, args.images, args.out_dir, **settings)
    total = sum(len(r.detections) for r in results)
    print(f"{len(results)} image(s), {total} detection(s); wrote {where}")
    return EXIT_OK


def _run_ray(args: argparse.Namespace, settings: dict, where: str) -> int:
    from foldkit.deploy.engines.ray import detect_with_ray

    summary = detect_with_ray(args.model, args.images, args.out_dir, address=args.address, workers=args.workers,
                              **settings)
    if summary.errors:
        warnings.warn(f"{summary.errors} image(s) could not be read; their rows carry the error", stacklevel=1)
    print(f"{summary.images} image(s), {summary.detections} detection(s) on {summary.workers} Ray actor(s) × "
          f"{summary.threads} thread(s), {summary.images / summary.seconds:.1f} images/s; wrote {where}")
    return EXIT_OK
