"""``foldkit check``: parity of two ONNX models on the same inputs."""

from __future__ import annotations

import argparse

from foldkit.cli import options
from foldkit.cli.codes import EXIT_OK, EXIT_PARITY_FAILED
from foldkit.defaults import OPT_LEVEL_NAMES

NAME = "check"
HELP = "prove two ONNX models compute the same outputs (parity), or an int8 model's SNR"
DESCRIPTION = (
    "Run CANDIDATE and REFERENCE on the same seeded inputs (uniform over the input's range, normal(0,1) and "
    "uniform ±100; every dynamic dimension at two sizes, the batch at --batch and --batch + 1) and compare every "
    "output. A float output passes when max|candidate − reference| ≤ atol + rtol · max|reference| on every input, "
    "or, with --min-snr, when its signal-to-noise ratio against the reference reaches DB (in-range inputs only); "
    "integer, boolean and string outputs must be equal. Exit 1 when any output fails or the outputs differ in "
    "names, shapes or types. A CANDIDATE that ends with foldkit's NMS (export --nms) against a REFERENCE without it "
    "is compared by detections: the graph's against foldkit's numpy decoding and NMS on the reference's outputs, "
    "same order, scores within 1e-5."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("candidate", help="the model under test (e.g. the folded or int8 one)")
    parser.add_argument("reference", help="the model it must agree with (e.g. the unfolded original)")
    options.add_tolerances(parser)
    options.add_seed(parser, "the generated inputs")
    parser.add_argument("--batch", type=options.positive, default=1,
                        help="first batch size for a dynamic batch dimension (this plus one is tried too)")
    parser.add_argument("--input-range", type=float, nargs=2, metavar=("LO", "HI"),
                        help="the inputs' own value range, drawn first (default: the reference's metadata, else 0 1)")
    parser.add_argument("--providers", default="auto",
                        help="auto (TensorRT > CUDA > CPU, as this onnxruntime has them), or cpu, cuda, …; "
                             "openvino: OpenVINO's own runtime")
    parser.add_argument("--reference-providers",
                        help="run the reference elsewhere, e.g. --providers openvino --reference-providers cpu "
                             "(default: as --providers)")
    options.add_precision(parser)
    parser.add_argument("--min-snr", type=options.snr, metavar="DB",
                        help="pass each output on its signal-to-noise ratio instead of atol/rtol (int8 vs float)")
    parser.add_argument("--opt-level", choices=OPT_LEVEL_NAMES,
                        help="ONNX Runtime graph optimizations for both models (default: disable, so each runs as "
                             "written; all with --min-snr, so an int8 model runs ORT's int8 kernels)")


def run(args: argparse.Namespace) -> int:
    from foldkit.parity import compare_onnx_models

    if _ends_with_nms(args.candidate) and not _ends_with_nms(args.reference):  # detections vs the numpy path
        from foldkit.deploy.nms_parity import compare_nms_to_numpy

        nms_report = compare_nms_to_numpy(args.candidate, args.reference, seed=args.seed, batch=args.batch,
                                          providers=args.providers)
        print(nms_report.format())
        return EXIT_OK if nms_report.passed else EXIT_PARITY_FAILED
    opt_level = args.opt_level or ("all" if args.min_snr is not None else "disable")
    report = compare_onnx_models(
        args.candidate, args.reference, atol=args.atol, rtol=args.rtol, seed=args.seed, batch=args.batch,
        providers=args.providers, opt_level=opt_level, min_snr=args.min_snr,
        value_range=tuple(args.input_range) if args.input_range else None,
        reference_providers=args.reference_providers, precision=args.precision,
    )
    print(report.format())
    return EXIT_OK if report.passed else EXIT_PARITY_FAILED


def _ends_with_nms(model: str) -> bool:
    from foldkit.onnxio.files import load_onnx
    from foldkit.onnxio.metadata import NMS_KEY, read_metadata

    return NMS_KEY in read_metadata(load_onnx(model, load_external_data=False))
