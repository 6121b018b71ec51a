"""``foldkit triton``: a Triton Inference Server model repository entry for an ONNX model."""

from __future__ import annotations

import argparse

from foldkit.cli import options
from foldkit.cli.codes import EXIT_OK
from foldkit.defaults import DEFAULT_MAX_DET, LETTERBOX_MODES, TRITON_BACKENDS, TRITON_KINDS

NAME = "triton"
HELP = "write a Triton model repository entry (onnxruntime, openvino or python backend)"
DESCRIPTION = (
    "Write REPO/NAME/config.pbtxt and REPO/NAME/1/model.onnx for Triton's onnxruntime or OpenVINO backend, inputs "
    "and outputs read from the model; or, with --backend python, an entry that runs foldkit inside Triton's Python "
    "backend and, for a YOLO model, takes an encoded image and answers foldkit detect's detections. A model written "
    "by foldkit optimize is served as its deployment record says (runtime, precision, optimization level, threads). "
    "The entry is staged and renamed whole: a failed run leaves the old entry."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the .onnx model to serve")
    parser.add_argument("--repo", required=True, help="the model repository folder (created if missing)")
    parser.add_argument("--name", help="model name in the repository (default: the file's stem)")
    parser.add_argument("--max-batch", type=options.positive, default=8,
                        help="Triton's max_batch_size (dynamic-batch models)")
    parser.add_argument("--instances", type=options.positive, default=1, help="model instances in the group")
    parser.add_argument("--kind", choices=TRITON_KINDS, default="cpu", help="instance group kind")
    parser.add_argument("--backend", choices=TRITON_BACKENDS, default="auto",
                        help="onnxruntime: Triton's ORT backend; openvino: Triton's OpenVINO backend (CPU); python: "
                             "foldkit inside Triton's Python backend (CPU); auto: the runtime of the model's "
                             "deployment record (foldkit optimize), else onnxruntime")
    parser.add_argument("--tensors", action="store_true",
                        help="with --backend python: serve a YOLO model's tensors, not detections from images")
    parser.add_argument("--max-det", type=options.max_det,
                        default=DEFAULT_MAX_DET,
                        help="with --backend python: detection rows per image (a model with NMS keeps its own)")
    options.add_image_size(parser, default_help="the model's own; with --backend python, the size a detector "
                                                "exported with --img-size dynamic runs at")
    parser.add_argument("--letterbox", choices=LETTERBOX_MODES,
                        help="with --backend python: square, or rect for a dynamic-size detector (each image's "
                             "input only up to the next multiple of the network stride; default: square)")
    parser.add_argument("--write-backends", metavar="DIR",
                        help="also write DIR/python/ from nvidia-pytriton with this Python's stub, for its "
                             "tritonserver --backend-directory DIR")


def run(args: argparse.Namespace) -> int:
    from foldkit.deploy.triton.choose import PYTHON, write_triton_entry
    from foldkit.deploy.triton.local_server import write_backend_directory

    config, backend = write_triton_entry(args.model, args.repo, backend=args.backend, name=args.name,
                                         max_batch=args.max_batch, instances=args.instances, kind=args.kind,
                                         max_det=args.max_det, tensors=args.tensors,
                                         img_size=args.img_size, letterbox=args.letterbox)
    written = [config] + ([config.parent / "1" / "model.py"] if backend == PYTHON else [])
    written.append(config.parent / "1" / "model.onnx")
    print(f"wrote the {backend} backend's entry: {', '.join(map(str, written))}")
    if args.write_backends:
        print(f"wrote {write_backend_directory(args.write_backends) / 'python'}")
    return EXIT_OK
