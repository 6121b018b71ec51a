"""``foldkit bench``: folded vs unfolded inference, timed honestly, saying exactly what ran."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from foldkit.cli import options
from foldkit.cli.codes import EXIT_OK
from foldkit.cli.feedback import progress_bar
from foldkit.defaults import DEFAULT_OPSET

NAME = "bench"
HELP = "benchmark folded vs unfolded (and int8) inference, saying exactly what ran"
DESCRIPTION = (
    "Time a network's variants in interleaved rounds. ONNX Runtime folds Conv+BatchNorm itself (ConvBNFusion) "
    "from its basic level up, so the unfolded model is timed with and without that fusion: folding by foldkit "
    "alone buys little over ORT's defaults, and the table shows it."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from foldkit.bench import VARIANTS

    parser.add_argument("model", help="a built-in name, a .cfg (with --weights) or an .onnx (foldkit folds it for "
                                      "the folded side)")
    parser.add_argument("--weights", help="Darknet .weights for a .cfg model (default: seeded random weights)")
    options.add_image_size(parser, default_help="a cfg's [net] size; for an .onnx with a dynamic size, "
                                                "the size it was exported at")
    parser.add_argument("--variants", default="all",
                        help=f"comma-separated variant names, or 'all': {', '.join(VARIANTS)}")
    parser.add_argument("--batch", type=options.batch_list, default=[1], help="comma-separated batch sizes")
    parser.add_argument("--providers", default="available",
                        help="comma-separated: cpu, cuda, tensorrt, openvino (CPU, plus the OpenVINO rows timed "
                             "beside ORT's); 'available': CPU plus CUDA and TensorRT where this onnxruntime has them")
    parser.add_argument("--threads", type=options.positive,
                        help="intra-op threads for ORT, OpenVINO and torch (default: their own choice)")
    parser.add_argument("--warmup", type=options.positive, default=3, help="untimed runs per variant first")
    parser.add_argument("--rounds", type=options.positive, default=20, help="timed interleaved rounds")
    parser.add_argument("--baseline", help="the variant the ratios are taken against (default: the first)")
    parser.add_argument("--opset", type=options.opset, default=DEFAULT_OPSET, help="ONNX opset of the exports")
    options.add_seed(parser, "the random weights and inputs")
    int8 = parser.add_mutually_exclusive_group()
    int8.add_argument("--int8-model", help="an int8 (QDQ) ONNX model of the same network: adds its row")
    int8.add_argument("--quantize", action="store_true",
                      help="add an int8 row: the folded model quantized on the fly (seeded synthetic calibration)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-variant peak-memory processes")
    parser.add_argument("--json", help="write every setting and raw sample as JSON here")
    parser.add_argument("--csv", help="write one line per timed sample here")
    parser.add_argument("--plot", help="write a PNG chart of latencies and ratios here (needs matplotlib)")


def run(args: argparse.Namespace) -> int:
    from foldkit import bench

    quantizer: Callable[[Path, Path], Path] | None = None
    if args.quantize:
        from foldkit.quantize import quantized_model_path

        quantizer = quantized_model_path
    providers = bench.available_providers() if args.providers == "available" else options.comma_list(args.providers)
    config = bench.BenchConfig(
        model=args.model, quantize=quantizer,
        variants=bench.parse_variants(args.variants, int8=args.int8_model is not None or args.quantize,
                                      openvino="openvino" in (p.lower() for p in providers)),
        batches=args.batch, int8_model=None if args.int8_model is None else Path(args.int8_model),
        providers=providers, img_size=args.img_size, weights=args.weights,
        threads=args.threads, warmup=args.warmup, rounds=args.rounds, seed=args.seed, opset=args.opset,
        baseline=args.baseline, measure_memory=not args.no_memory, outputs=(args.json, args.csv, args.plot),
    )
    result = bench.run_benchmark(config, progress=progress_bar())
    print(bench.format_table(result))
    for path, write in ((args.json, bench.write_json), (args.csv, bench.write_csv), (args.plot, bench.write_plot)):
        if path:
            write(result, path)
            print(f"wrote {path}")
    return EXIT_OK
