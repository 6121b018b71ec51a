#!/usr/bin/env python3
"""How accurate is a folded fp16 model? foldkit vs onnxsim vs ONNX Runtime's own fp16 fold.

Builds a network with seeded weights and BatchNorm statistics that include variances near 1e-4
(so folding amplifies some filters by ~100×), exports it unfolded, converts it to fp16, folds it
three ways and runs each in ONNX Runtime against a float64 PyTorch truth on the same inputs:

* unfolded fp16 (ORT_DISABLE_ALL): conv then BN, each in fp16;
* foldkit: the fold computed in float64 and rounded once to fp16;
* onnxsim: its simplifier's fold of the fp16 graph;
* ORT: ORT_ENABLE_BASIC's ConvBNFusion on the fp16 graph, saved and rerun with optimizations off.

    python tools/fp16_fold_accuracy.py [MODEL] [--img-size N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import onnxsim
from onnx import numpy_helper

from foldkit import build_model, export_onnx, fold_onnx, randomize_batchnorm
from foldkit.parity import torch_outputs
from foldkit.runtime import create_session, run


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Float32 initializers, inputs and outputs to float16 (Resize's float-only inputs stay)."""
    keep = {name for node in model.graph.node if node.op_type == "Resize" for name in node.input[1:]}
    for index, init in enumerate(model.graph.initializer):
        if init.data_type == onnx.TensorProto.FLOAT and init.name not in keep:
            model.graph.initializer[index].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    return model


def error(outputs: dict, truth: list[np.ndarray]) -> float:
    return max(float(np.abs(o.astype(np.float64) - t).max() / np.abs(t).max())
               for o, t in zip(outputs.values(), truth, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="yolov3-tiny")
    parser.add_argument("--img-size", type=int, default=416)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    size = args.img_size
    net = build_model(args.model, size, seed=args.seed)
    randomize_batchnorm(net, (2, 3, size, size), seed=args.seed)
    unfolded = to_fp16(export_onnx(net, None, input_shape=(1, 3, size, size), fold=False).model)
    images = np.random.default_rng(args.seed).random((1, 3, size, size)).astype(np.float16)
    truth = torch_outputs(net, images.astype(np.float32), float64=True)

    candidates = {"unfolded fp16 (conv, then BN)": unfolded}
    candidates["foldkit (float64 fold, one rounding)"], report = fold_onnx(unfolded)
    simplified, ok = onnxsim.simplify(unfolded)
    candidates["onnxsim"] = simplified
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ort.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(path)
        ort.InferenceSession(unfolded.SerializeToString(), options, providers=["CPUExecutionProvider"])
        candidates["ORT ConvBNFusion (fp16, stepwise)"] = onnx.load(str(path))

    amplification = max(e.max_amplification for e in report.folded)
    print(f"{args.model} {size}x{size} fp16, max fold amplification {amplification:.0f}; "
          "error = max|out − float64 truth| / max|truth| over the heads")
    print("| model | BatchNormalization nodes | error vs float64 |")
    print("|---|---:|---:|")
    for name, model in candidates.items():
        bn = sum(1 for n in model.graph.node if n.op_type == "BatchNormalization")
        session = create_session(model, providers="cpu", opt_level="disable")
        print(f"| {name} | {bn} | {error(run(session, {'images': images}), truth):.3e} |")


if __name__ == "__main__":
    main()
