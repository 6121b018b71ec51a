"""The ``foldkit`` command: argument parsing only; every command calls the Python API.

Exit codes: 0 success, 1 a parity check failed, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from foldkit.errors import FoldkitError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value}")
    return value


def _batch(text: str) -> int | str:
    if text == "dynamic":
        return text
    try:
        return _positive(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"batch must be at least 1 or 'dynamic', not {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="foldkit", description=__doc__.splitlines()[0])
    from foldkit import __version__

    parser.add_argument("--version", action="version", version=f"foldkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="export a Darknet network to ONNX, BN folded by foldkit")
    export.add_argument("model", help="built-in name (darknet53, yolov3, yolov3-tiny) or a .cfg path")
    export.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    export.add_argument("--img-size", type=_positive, help="input height and width (default: the cfg's [net])")
    export.add_argument("--batch", type=_batch, default=1, help="batch size, or 'dynamic' (default 1)")
    export.add_argument("--opset", type=_positive, default=17, help="ONNX opset (default 17)")
    export.add_argument("--no-fold", action="store_true", help="keep BatchNormalization nodes")
    export.add_argument("--exporter", choices=("auto", "direct", "torchscript", "dynamo"), default="auto",
                        help="direct: cfg + weights → ONNX without PyTorch (fast); torchscript/dynamo: through torch. "
                             "auto: direct when --weights is given without --decode, else torchscript")
    export.add_argument("--weights", help="a Darknet .weights file for the cfg")
    export.add_argument("--bn-variant", choices=("alexeyab", "pjreddie"), default="alexeyab",
                        help="BatchNorm ε: alexeyab √(σ²+1e-5) (default; also pjreddie on GPU) or pjreddie CPU √σ²+1e-6")
    export.add_argument("--decode", action="store_true",
                        help="decode YOLO heads in the graph: one (N, boxes, 4+1+classes) output, boxes in input pixels")
    export.add_argument("--random-weights", type=int, metavar="SEED",
                        help="seeded random weights with realistic BN statistics (for networks without trained weights)")

    check = commands.add_parser("check", help="parity of two ONNX models on the same seeded inputs")
    check.add_argument("candidate")
    check.add_argument("reference")
    check.add_argument("--atol", type=float, default=1e-6)
    check.add_argument("--rtol", type=float, default=1e-4, help="relative to each reference output's max |value|")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--batch", type=_positive, default=1, help="batch size for dynamic batch dimensions")
    check.add_argument("--providers", default="auto", help="auto, cpu, cuda, … (default auto)")

    inspect = commands.add_parser("inspect", help="layers, norms, and which norms fold (and why not)")
    inspect.add_argument("target", help="built-in name, .cfg or .onnx path")

    fold = commands.add_parser("fold", help="fold BatchNorm (and per-channel Mul/Add) in an ONNX model")
    fold.add_argument("input")
    fold.add_argument("-o", "--output", required=True)
    fold.add_argument("--report", help="write the per-node report as JSON here")
    fold.add_argument("--check", action="store_true", help="verify parity against the original (ConvBNFusion off)")
    fold.add_argument("--allow-initializer-inputs", action="store_true",
                      help="treat initializers that are also graph inputs as constants")
    fold.add_argument("--atol", type=float, default=1e-6)
    fold.add_argument("--rtol", type=float, default=1e-4)

    bench = commands.add_parser("bench", help="benchmark folded vs unfolded inference, saying exactly what ran")
    bench.add_argument("model", help="built-in name, .cfg (with --weights) or .onnx (foldkit folds it for the folded side)")
    bench.add_argument("--weights", help="Darknet .weights for a .cfg model (default: seeded random weights)")
    bench.add_argument("--img-size", type=_positive)
    bench.add_argument("--variants", default="all", help="comma-separated variant names, or 'all'")
    bench.add_argument("--batch", default="1", help="comma-separated batch sizes (default 1)")
    bench.add_argument("--providers", default="available",
                       help="comma-separated: cpu, cuda, tensorrt; default: CPU plus CUDA and TensorRT where "
                            "this onnxruntime has them")
    bench.add_argument("--threads", type=_positive, help="intra-op threads for ORT and torch (default: their own)")
    bench.add_argument("--warmup", type=_positive, default=3)
    bench.add_argument("--rounds", type=_positive, default=20, help="timed interleaved rounds")
    bench.add_argument("--baseline", help="variant the ratios are taken against (default: the first)")
    bench.add_argument("--opset", type=_positive, default=17)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--no-memory", action="store_true", help="skip the per-variant peak memory processes")
    bench.add_argument("--json", help="write every setting and raw sample as JSON")
    bench.add_argument("--csv", help="write one line per timed sample")
    bench.add_argument("--plot", help="write a PNG chart of latencies and ratios")

    detect = commands.add_parser("detect", help="run a YOLO ONNX model on images: JSON and drawn boxes per image")
    detect.add_argument("model")
    detect.add_argument("images", nargs="+", help="image files or folders")
    detect.add_argument("-o", "--out-dir", default="detections")
    detect.add_argument("--names", help="class names, one per line (Darknet .names)")
    detect.add_argument("--conf", type=float, default=0.25, help="objectness × class score threshold")
    detect.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (per class)")
    detect.add_argument("--providers", default="auto", help="auto (TensorRT > CUDA > CPU), or a comma-separated list")
    detect.add_argument("--strict", action="store_true", help="fail instead of falling back to another provider")
    detect.add_argument("--batch", type=_positive, default=1, help="images per run (dynamic-batch models)")
    detect.add_argument("--classes", type=_positive, help="class count (models without foldkit metadata)")
    detect.add_argument("--anchors", help="'w,h,w,h,…;…' per head in output order (models without metadata)")
    detect.add_argument("--scale-x-y", type=float, default=1.0, help="the cfg's scale_x_y (models without metadata)")

    triton = commands.add_parser("triton", help="write a Triton model repository (onnxruntime backend)")
    triton.add_argument("model")
    triton.add_argument("--repo", required=True)
    triton.add_argument("--name", help="model name in the repository (default: the file's stem)")
    triton.add_argument("--max-batch", type=_positive, default=8)
    triton.add_argument("--instances", type=_positive, default=1)
    triton.add_argument("--kind", choices=("cpu", "gpu"), default="cpu", help="instance group kind")

    demo = commands.add_parser("demo", help="export a built-in network folded and unfolded, prove parity, time both")
    demo.add_argument("model", nargs="?", default="yolov3-tiny")
    demo.add_argument("--img-size", type=_positive, default=416)
    demo.add_argument("--out", default="foldkit-demo", help="folder for the ONNX files (default ./foldkit-demo)")
    demo.add_argument("--rounds", type=_positive, default=20, help="timed rounds per variant")
    demo.add_argument("--threads", type=_positive, help="ORT intra-op threads (default: ORT's choice)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FoldkitError as exc:
        print(f"foldkit {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _export(args) -> int:
    exporter = args.exporter
    if exporter == "auto":
        exporter = "direct" if args.weights and not args.decode and args.opset >= 13 else "torchscript"
    if exporter == "direct":
        return _export_direct(args)
    from foldkit.darknet.build import build_model
    from foldkit.darknet.decode import YoloDecoder
    from foldkit.darknet.weights import load_weights
    from foldkit.export import export_onnx
    from foldkit.onnxio.metadata import network_metadata
    from foldkit.synthetic import randomize_batchnorm

    if args.weights and args.random_weights is not None:
        raise FoldkitError("--weights and --random-weights exclude each other")
    model = build_model(args.model, args.img_size, seed=args.random_weights)
    shape = (1 if args.batch == "dynamic" else args.batch, model.info.channels, model.info.height, model.info.width)
    if args.weights:
        load_weights(model, args.weights, bn_variant=args.bn_variant)
    elif args.random_weights is not None:
        randomize_batchnorm(model, (2, *shape[1:]), seed=args.random_weights)
    if args.decode:
        if not model.is_detector:
            raise FoldkitError(f"{args.model}: --decode needs a detector with [yolo] sections")
        model = YoloDecoder(model)
    metadata = network_metadata(model.info, shape) | {"foldkit.decoded": str(args.decode).lower()}
    result = export_onnx(
        model, args.output, input_shape=shape, fold=not args.no_fold, opset=args.opset,
        dynamic_batch=args.batch == "dynamic", exporter=exporter, metadata=metadata,
    )
    _print_export(result.path, result.opset, shape, args.batch == "dynamic", exporter, result.fold_report)
    return 0


def _export_direct(args) -> int:
    from foldkit.darknet.to_onnx import darknet_to_onnx
    from foldkit.onnxio.metadata import add_metadata, network_metadata

    if not args.weights:
        raise FoldkitError("the direct exporter converts a cfg with its --weights")
    if args.decode:
        raise FoldkitError("--decode goes through PyTorch: use --exporter torchscript (or auto)")
    converted = darknet_to_onnx(
        args.model, args.weights, img_size=args.img_size, batch=None if args.batch == "dynamic" else args.batch,
        opset=args.opset, fold=not args.no_fold, bn_variant=args.bn_variant,
    )
    info = converted.plan.info
    shape = (1 if args.batch == "dynamic" else args.batch, info.channels, info.height, info.width)
    add_metadata(converted.graph_model, network_metadata(info, shape) | {"foldkit.decoded": "false"})
    converted.save(args.output)
    _print_export(args.output, args.opset, shape, args.batch == "dynamic", "direct", converted.fold_report)
    return 0


def _print_export(path, opset, shape, dynamic, exporter, report) -> None:
    print(f"wrote {path} (opset {opset}, input {'x'.join(map(str, shape))}{', dynamic batch' if dynamic else ''},"
          f" {exporter} exporter)")
    print(report.format() if report else "fold: off (--no-fold): BatchNormalization nodes kept")


def _check(args) -> int:
    from foldkit.parity import compare_onnx_models

    report = compare_onnx_models(
        args.candidate, args.reference, atol=args.atol, rtol=args.rtol, seed=args.seed, batch=args.batch,
        providers=args.providers,
    )
    print(report.format())
    return 0 if report.passed else 1


def _inspect(args) -> int:
    from foldkit.inspect import inspect_target

    print(inspect_target(args.target))
    return 0


def _fold(args) -> int:
    from foldkit.pipeline import fold_file

    result = fold_file(
        args.input, args.output, report_path=args.report, check=args.check,
        allow_initializer_inputs=args.allow_initializer_inputs, atol=args.atol, rtol=args.rtol,
    )
    print(result.format())
    return 0 if result.parity is None or result.parity.passed else 1


def _bench(args) -> int:
    from foldkit import bench

    try:
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError:
        raise FoldkitError(f"--batch must be comma-separated integers, not {args.batch!r}") from None
    if min(batches) < 1:
        raise FoldkitError(f"--batch sizes must be at least 1, got {args.batch}")
    if Path(args.model).suffix.lower() in (".onnx", ".cfg") and not Path(args.model).is_file():
        raise FoldkitError(f"{args.model}: no such file")
    config = bench.BenchConfig(
        model=args.model, variants=bench.parse_variants(args.variants), batches=batches,
        providers=bench.available_providers() if args.providers == "available"
        else [p.strip() for p in args.providers.split(",")], img_size=args.img_size, weights=args.weights,
        threads=args.threads, warmup=args.warmup, rounds=args.rounds, seed=args.seed, opset=args.opset,
        baseline=args.baseline, measure_memory=not args.no_memory,
    )
    result = bench.run_benchmark(config, progress=_progress_bar if sys.stderr.isatty() else None)
    print(bench.format_table(result))
    for path, write in ((args.json, bench.write_json), (args.csv, bench.write_csv), (args.plot, bench.write_plot)):
        if path:
            write(result, path)
            print(f"wrote {path}")
    return 0


def _progress_bar(done: int, total: int, label: str) -> None:
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<40}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _detect(args) -> int:
    import warnings

    from foldkit.deploy.detect import detect_images

    providers = args.providers if args.providers == "auto" else [p.strip() for p in args.providers.split(",")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = detect_images(
            args.model, args.images, args.out_dir, names=args.names, conf=args.conf, iou=args.iou,
            providers=providers, strict=args.strict, batch=args.batch, classes=args.classes, anchors=args.anchors,
            scale_x_y=args.scale_x_y, progress=_progress_bar if sys.stderr.isatty() else None,
        )
    for warning in caught:
        print(f"foldkit detect: warning: {warning.message}", file=sys.stderr)
    total = sum(len(r.detections) for r in results)
    print(f"{len(results)} image(s), {total} detection(s); wrote JSON and drawn images to {args.out_dir}")
    return 0


def _triton(args) -> int:
    from foldkit.deploy.triton import write_repository

    config = write_repository(args.model, args.repo, name=args.name, max_batch=args.max_batch,
                              instances=args.instances, kind=args.kind)
    print(f"wrote {config} and {config.parent / '1' / 'model.onnx'}")
    return 0


def _demo(args) -> int:
    from foldkit.demo import run_demo

    return run_demo(args.model, img_size=args.img_size, out=Path(args.out), rounds=args.rounds, threads=args.threads)


COMMANDS = {"export": _export, "check": _check, "inspect": _inspect, "fold": _fold, "bench": _bench, "detect": _detect,
            "triton": _triton, "demo": _demo}

if __name__ == "__main__":
    sys.exit(main())
