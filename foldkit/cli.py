"""The ``foldkit`` command: argument parsing only; every command calls the Python API.

Exit codes: 0 success; 1 a parity check (or an accuracy target) failed; 2 bad input or a failing
environment (one line on stderr naming the file); 3 an internal error (one line; the traceback
with ``FOLDKIT_DEBUG=1``).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from foldkit.defaults import DEFAULT_ATOL, DEFAULT_OPSET, DEFAULT_RTOL
from foldkit.errors import FoldkitError

EXIT_OK, EXIT_PARITY_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
MIN_OPSET = 11
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds are unsigned 32-bit here


# --- option types: each refuses what the API could not use, with argparse's one-line error ---

def _integer(text: str, low: int, high: int | None, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"expected {what}, not {value}")
    return value


def _positive(text: str) -> int:
    return _integer(text, 1, None, "a positive integer")


def _seed(text: str) -> int:
    return _integer(text, 0, MAX_SEED, f"a seed from 0 to {MAX_SEED}")


def _opset(text: str) -> int:
    import onnx

    newest = onnx.defs.onnx_opset_version()
    return _integer(text, MIN_OPSET, newest, f"an opset from {MIN_OPSET} to {newest} (this onnx's newest)")


def _batch(text: str) -> int | None:
    """A batch size, or None for 'dynamic'."""
    if text == "dynamic":
        return None
    try:
        return _positive(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"batch must be at least 1 or 'dynamic', not {text!r}") from None


def _batch_list(text: str) -> list[int]:
    return [_integer(b, 1, None, "comma-separated batch sizes of at least 1") for b in text.split(",")]


def _real(text: str, low: float, high: float, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected {what}, not {text}")
    return value


def _tolerance(text: str) -> float:
    return _real(text, 0.0, math.inf, "a finite tolerance ≥ 0")


def _fraction(text: str) -> float:
    return _real(text, 0.0, 1.0, "a number from 0 to 1")


def _snr(text: str) -> float:
    return _real(text, -1000.0, 1000.0, "a signal-to-noise ratio in dB")


def _scale(text: str) -> float:
    return _real(text, 1e-6, 1e6, "a positive finite number")


def _add_tolerances(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--atol", type=_tolerance, default=DEFAULT_ATOL)
    parser.add_argument("--rtol", type=_tolerance, default=DEFAULT_RTOL,
                        help="relative to each reference output's max |value|")


class UsageError(Exception):
    """A command line argparse refuses; reported on one line with exit 2 like any bad input."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    from foldkit import __version__

    parser = _Parser(prog="foldkit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"foldkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="export a Darknet network to ONNX, BN folded by foldkit")
    export.add_argument("model", help="built-in name (darknet53, yolov3, yolov3-tiny) or a .cfg path")
    export.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    export.add_argument("--img-size", type=_positive, help="input height and width (default: the cfg's [net])")
    export.add_argument("--batch", type=_batch, default=1, help="batch size, or 'dynamic' (default 1)")
    export.add_argument("--opset", type=_opset, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    export.add_argument("--no-fold", action="store_true", help="keep BatchNormalization nodes")
    export.add_argument("--exporter", choices=("auto", "direct", "torchscript", "dynamo"), default="auto",
                        help="direct: cfg + weights → ONNX without PyTorch (fast); torchscript/dynamo: through torch. "
                             "auto: direct when --weights is given without --decode, else torchscript")
    export.add_argument("--weights", help="a Darknet .weights file for the cfg")
    export.add_argument("--bn-variant", choices=("alexeyab", "pjreddie"), default="alexeyab",
                        help="BatchNorm ε: alexeyab √(σ²+1e-5) (default; also pjreddie on GPU) "
                             "or pjreddie CPU √σ²+1e-6")
    export.add_argument("--decode", action="store_true",
                        help="decode YOLO heads in the graph: one (N, boxes, 4+1+classes) output, "
                             "boxes in input pixels")
    export.add_argument("--random-weights", type=_seed, metavar="SEED",
                        help="seed of the random weights used without --weights (default 0)")

    check = commands.add_parser("check", help="parity of two ONNX models on the same seeded inputs")
    check.add_argument("candidate")
    check.add_argument("reference")
    _add_tolerances(check)
    check.add_argument("--seed", type=_seed, default=0)
    check.add_argument("--batch", type=_positive, default=1, help="batch size for dynamic batch dimensions")
    check.add_argument("--providers", default="auto", help="auto, cpu, cuda, … (default auto)")
    check.add_argument("--min-snr", type=_snr, metavar="DB",
                       help="pass each output on its signal-to-noise ratio instead of atol/rtol (int8 vs float)")
    check.add_argument("--opt-level", choices=("disable", "basic", "extended", "all"),
                       help="ORT graph optimizations for both models (default: disable; all with --min-snr, so an "
                            "int8 model runs ORT's int8 kernels rather than its QDQ graph emulated in float)")

    inspect = commands.add_parser("inspect", help="layers, norms, and which norms fold (and why not)")
    inspect.add_argument("target", help="built-in name, .cfg or .onnx path")
    inspect.add_argument("--img-size", type=_positive, help="input height and width for a cfg (default: its [net])")
    inspect.add_argument("--bn-variant", choices=("alexeyab", "pjreddie"), default="alexeyab",
                         help="the BatchNorm ε a cfg's weights will be read with (named in the fork choices)")

    fold = commands.add_parser("fold", help="fold BatchNorm (and per-channel Mul/Add) in an ONNX model")
    fold.add_argument("input")
    fold.add_argument("-o", "--output", required=True)
    fold.add_argument("--report", help="write the per-node report as JSON here")
    fold.add_argument("--check", action="store_true", help="verify parity against the original (ConvBNFusion off)")
    fold.add_argument("--simplify", action="store_true",
                      help="run onnx-simplifier after the fold; the result is always parity-checked (implies --check)")
    fold.add_argument("--allow-initializer-inputs", action="store_true",
                      help="treat initializers that are also graph inputs as constants")
    _add_tolerances(fold)

    bench = commands.add_parser("bench", help="benchmark folded vs unfolded inference, saying exactly what ran")
    bench.add_argument("model", help="built-in name, .cfg (with --weights) or .onnx "
                                     "(foldkit folds it for the folded side)")
    bench.add_argument("--weights", help="Darknet .weights for a .cfg model (default: seeded random weights)")
    bench.add_argument("--img-size", type=_positive)
    bench.add_argument("--variants", default="all", help="comma-separated variant names, or 'all'")
    bench.add_argument("--batch", type=_batch_list, default=[1], help="comma-separated batch sizes (default 1)")
    bench.add_argument("--providers", default="available",
                       help="comma-separated: cpu, cuda, tensorrt; default: CPU plus CUDA and TensorRT where "
                            "this onnxruntime has them")
    bench.add_argument("--threads", type=_positive, help="intra-op threads for ORT and torch (default: their own)")
    bench.add_argument("--warmup", type=_positive, default=3)
    bench.add_argument("--rounds", type=_positive, default=20, help="timed interleaved rounds")
    bench.add_argument("--baseline", help="variant the ratios are taken against (default: the first)")
    bench.add_argument("--opset", type=_opset, default=DEFAULT_OPSET)
    bench.add_argument("--seed", type=_seed, default=0)
    int8 = bench.add_mutually_exclusive_group()
    int8.add_argument("--int8-model", help="an int8 (QDQ) ONNX model of the same network: adds its row")
    int8.add_argument("--quantize", action="store_true",
                      help="add an int8 row: the folded model quantized on the fly (seeded synthetic calibration)")
    bench.add_argument("--no-memory", action="store_true", help="skip the per-variant peak memory processes")
    bench.add_argument("--json", help="write every setting and raw sample as JSON")
    bench.add_argument("--csv", help="write one line per timed sample")
    bench.add_argument("--plot", help="write a PNG chart of latencies and ratios")

    detect = commands.add_parser("detect", help="run a YOLO ONNX model on images: JSON and drawn boxes per image")
    detect.add_argument("model")
    detect.add_argument("images", nargs="+", help="image files or folders")
    detect.add_argument("-o", "--out-dir", default="detections")
    detect.add_argument("--names", help="class names, one per line (Darknet .names)")
    detect.add_argument("--conf", type=_fraction, default=0.25, help="objectness × class score threshold")
    detect.add_argument("--iou", type=_fraction, default=0.45, help="NMS IoU threshold (per class)")
    detect.add_argument("--providers", default="auto", help="auto (TensorRT > CUDA > CPU), or a comma-separated list")
    detect.add_argument("--strict", action="store_true", help="fail instead of falling back to another provider")
    detect.add_argument("--batch", type=_positive, default=1, help="images per run (dynamic-batch models)")
    detect.add_argument("--classes", type=_positive, help="class count (models without foldkit metadata)")
    detect.add_argument("--anchors", help="'w,h,w,h,…;…' per head in output order (models without metadata)")
    detect.add_argument("--head", choices=("yolo", "region"), default="yolo",
                        help="head kind for --anchors: yolo (anchors in pixels) or region (YOLOv2, anchors in cells)")
    detect.add_argument("--scale-x-y", type=_scale, default=1.0, help="the cfg's scale_x_y (models without metadata)")

    triton = commands.add_parser("triton", help="write a Triton model repository (onnxruntime backend)")
    triton.add_argument("model")
    triton.add_argument("--repo", required=True)
    triton.add_argument("--name", help="model name in the repository (default: the file's stem)")
    triton.add_argument("--max-batch", type=_positive, default=8)
    triton.add_argument("--instances", type=_positive, default=1)
    triton.add_argument("--kind", choices=("cpu", "gpu"), default="cpu", help="instance group kind")

    quantize = commands.add_parser("quantize", help="int8 (QDQ) after the fold, with its accuracy measured")
    quantize.add_argument("model", help="a float ONNX model (foldkit folds it first)")
    quantize.add_argument("-o", "--output", required=True, help="the int8 .onnx file to write")
    source = quantize.add_mutually_exclusive_group(required=True)
    source.add_argument("--calib", help="a folder of images (letterboxed as detect does) or an .npy NCHW batch")
    source.add_argument("--calib-random", type=_positive, metavar="N",
                        help="N seeded random inputs (smoke tests only: not representative data)")
    quantize.add_argument("--held-out", type=_positive,
                          help="inputs kept aside to judge the result (default: a quarter)")
    quantize.add_argument("--method", choices=("minmax", "percentile", "entropy"), default="minmax",
                          help="calibration method (default minmax)")
    quantize.add_argument("--target-snr", type=_snr, metavar="DB",
                          help="keep the fewest most sensitive layers in float until every held-out output reaches it")
    quantize.add_argument("--exclude", default="", help="comma-separated node names to keep in float")
    quantize.add_argument("--no-equalize", action="store_true", help="do not try cross-layer equalization")
    quantize.add_argument("--no-bias-correction", action="store_true", help="do not try bias correction")
    quantize.add_argument("--sensitivity", action="store_true", help="always run the per-layer sensitivity analysis")
    quantize.add_argument("--seed", type=_seed, default=0)
    quantize.add_argument("--report", help="write the report as JSON here")

    demo = commands.add_parser("demo", help="export a built-in network folded and unfolded, prove parity, time both")
    demo.add_argument("model", nargs="?", default="yolov3-tiny")
    demo.add_argument("--img-size", type=_positive, default=416)
    demo.add_argument("--out", default="foldkit-demo", help="folder for the ONNX files (default ./foldkit-demo)")
    demo.add_argument("--rounds", type=_positive, default=20, help="timed rounds per variant")
    demo.add_argument("--threads", type=_positive, help="ORT intra-op threads (default: ORT's choice)")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"{exc.prog}: error: {exc} (see {exc.prog} --help)", file=sys.stderr)
        return EXIT_BAD_INPUT
    in_main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if in_main_thread else None
    try:
        return COMMANDS[args.command](args)
    except FoldkitError as exc:
        return _fail(args.command, f"error: {exc}", EXIT_BAD_INPUT)
    except OSError as exc:  # the environment: a full disk, a read-only folder, a vanished file
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(args.command, f"error: {where}{exc.strerror or exc}", EXIT_BAD_INPUT)
    except MemoryError:
        return _fail(args.command, "error: out of memory", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted", 130)
    except Exception as exc:  # a bug in foldkit: one line, the traceback only when asked for
        if os.environ.get("FOLDKIT_DEBUG") == "1":
            traceback.print_exc()
        detail = str(exc).splitlines()[0] if str(exc) else ""
        return _fail(args.command, f"internal error: {type(exc).__name__}: {detail} "
                                   "(set FOLDKIT_DEBUG=1 for the traceback)", EXIT_INTERNAL)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like an exception, so every staged output removes its temporary files."""
    raise SystemExit(128 + signum)


def _fail(command: str, message: str, code: int) -> int:
    """One line on stderr, whatever the message quotes (a file name with a newline is shown escaped)."""
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
    print(f"foldkit {command}: {line}", file=sys.stderr)
    return code


def _progress() -> Callable[[int, int, str], None] | None:
    """A tqdm progress callback ``(done, total, label)`` on a terminal; None (quiet) otherwise."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar: tqdm | None = None

    def update(done: int, total: int, label: str) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, file=sys.stderr, leave=False, dynamic_ncols=True)
        bar.set_description_str(label[:40])
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def _export(args: argparse.Namespace) -> int:
    from foldkit.darknet.export import export_darknet
    from foldkit.onnxio.files import check_outputs

    check_outputs([args.output], [args.model, args.weights])
    result = export_darknet(
        args.model, args.output, weights=args.weights, seed=args.random_weights, img_size=args.img_size,
        batch=args.batch, opset=args.opset, fold=not args.no_fold, decode=args.decode, exporter=args.exporter,
        bn_variant=args.bn_variant, progress=_progress(),
    )
    print(result.format())
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from foldkit.parity import compare_onnx_models

    opt_level = args.opt_level or ("all" if args.min_snr is not None else "disable")
    report = compare_onnx_models(
        args.candidate, args.reference, atol=args.atol, rtol=args.rtol, seed=args.seed, batch=args.batch,
        providers=args.providers, opt_level=opt_level, min_snr=args.min_snr,
    )
    print(report.format())
    return EXIT_OK if report.passed else EXIT_PARITY_FAILED


def _inspect(args: argparse.Namespace) -> int:
    from foldkit.inspect import inspect_target

    print(inspect_target(args.target, bn_variant=args.bn_variant, img_size=args.img_size))
    return EXIT_OK


def _fold(args: argparse.Namespace) -> int:
    from foldkit.pipeline import fold_file

    result = fold_file(
        args.input, args.output, report_path=args.report, check=args.check,
        allow_initializer_inputs=args.allow_initializer_inputs, atol=args.atol, rtol=args.rtol,
        simplify=args.simplify,
    )
    print(result.format())
    return EXIT_OK if result.parity is None or result.parity.passed else EXIT_PARITY_FAILED


def _bench(args: argparse.Namespace) -> int:
    from foldkit import bench
    from foldkit.onnxio.files import check_outputs

    check_outputs([args.json, args.csv, args.plot], [args.model, args.weights, args.int8_model])
    quantizer: Callable[[Path, Path], Path] | None = None
    if args.quantize:
        from foldkit.quantize import quantized_model_path

        quantizer = quantized_model_path
    config = bench.BenchConfig(
        model=args.model, quantize=quantizer,
        variants=bench.parse_variants(args.variants, int8=args.int8_model is not None or args.quantize),
        batches=args.batch, int8_model=None if args.int8_model is None else Path(args.int8_model),
        providers=bench.available_providers() if args.providers == "available"
        else [p.strip() for p in args.providers.split(",")], img_size=args.img_size, weights=args.weights,
        threads=args.threads, warmup=args.warmup, rounds=args.rounds, seed=args.seed, opset=args.opset,
        baseline=args.baseline, measure_memory=not args.no_memory,
    )
    result = bench.run_benchmark(config, progress=_progress())
    print(bench.format_table(result))
    for path, write in ((args.json, bench.write_json), (args.csv, bench.write_csv), (args.plot, bench.write_plot)):
        if path:
            write(result, path)
            print(f"wrote {path}")
    return EXIT_OK


def _quantize(args: argparse.Namespace) -> int:
    from foldkit.onnxio.files import check_outputs, write_text_atomic
    from foldkit.quantize import STEPS, QuantizeOptions, quantize_onnx
    from foldkit.quantize.options import BIAS_CORRECTION, EQUALIZE

    check_outputs([args.output, args.report], [args.model, args.calib])
    skipped = {step for step, off in ((EQUALIZE, args.no_equalize), (BIAS_CORRECTION, args.no_bias_correction))
               if off}
    report = quantize_onnx(args.model, args.output, QuantizeOptions(
        calib=args.calib, calib_random=args.calib_random, held_out=args.held_out, seed=args.seed,
        method=args.method, steps=tuple(s for s in STEPS if s not in skipped), target_snr=args.target_snr,
        exclude=[name.strip() for name in args.exclude.split(",") if name.strip()],
        sensitivity="always" if args.sensitivity else "auto", progress=_status(),
    ))
    print(report.format())
    if args.report:
        write_text_atomic(args.report, report.to_json())
        print(f"wrote {args.report}")
    return EXIT_OK if report.passed else EXIT_PARITY_FAILED


def _status() -> Callable[[str], None] | None:
    """Status lines for long steps (calibration, sensitivity) on a terminal; quiet otherwise."""
    if not sys.stderr.isatty():
        return None
    return lambda message: print(f"  {message}", file=sys.stderr, flush=True)


def _detect(args: argparse.Namespace) -> int:
    from foldkit.deploy.detect import detect_images

    providers = args.providers if args.providers == "auto" else [p.strip() for p in args.providers.split(",")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = detect_images(
            args.model, args.images, args.out_dir, names=args.names, conf=args.conf, iou=args.iou,
            providers=providers, strict=args.strict, batch=args.batch, classes=args.classes, anchors=args.anchors,
            scale_x_y=args.scale_x_y, head_kind=args.head, progress=_progress(),
        )
    for warning in caught:
        print(f"foldkit detect: warning: {warning.message}", file=sys.stderr)
    total = sum(len(r.detections) for r in results)
    print(f"{len(results)} image(s), {total} detection(s); wrote JSON and drawn images to {args.out_dir}")
    return EXIT_OK


def _triton(args: argparse.Namespace) -> int:
    from foldkit.deploy.triton import write_repository

    config = write_repository(args.model, args.repo, name=args.name, max_batch=args.max_batch,
                              instances=args.instances, kind=args.kind)
    print(f"wrote {config} and {config.parent / '1' / 'model.onnx'}")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from foldkit.demo import run_demo

    passed = run_demo(args.model, img_size=args.img_size, out=Path(args.out), rounds=args.rounds,
                      threads=args.threads)
    return EXIT_OK if passed else EXIT_PARITY_FAILED


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "export": _export, "check": _check, "inspect": _inspect, "fold": _fold, "bench": _bench, "detect": _detect,
    "triton": _triton, "quantize": _quantize, "demo": _demo,
}

if __name__ == "__main__":
    sys.exit(main())
