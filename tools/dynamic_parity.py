#!/usr/bin/env python3
"""How close is one dynamic-size ONNX export to PyTorch built at each size? Measured against float64.

Exports a Darknet network once with ``--img-size dynamic`` (seeded random weights unless
``--weights``), then for each size builds the PyTorch model at that size with the same weights and
prints the largest output difference from a float64 run of it: the ONNX model's and the float32
PyTorch model's (the float32 noise the ONNX model is judged against), and their ratio.

    python tools/dynamic_parity.py yolov3-tiny [--sizes 320,416,608,256x416] [--exporter direct] [--decode]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from foldkit.cli.options import image_size
from foldkit.darknet.build import build_model
from foldkit.darknet.decode import YoloDecoder
from foldkit.darknet.export import export_darknet, load_network
from foldkit.darknet.weights import load_weights, save_weights


def _run(model: torch.nn.Module, x: np.ndarray, dtype: torch.dtype) -> list[np.ndarray]:
    with torch.no_grad():
        out = model.to(dtype)(torch.from_numpy(x).to(dtype))
    return [o.double().numpy() for o in (out if isinstance(out, tuple) else (out,))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a built-in name or a .cfg")
    parser.add_argument("--weights", help="Darknet .weights (default: seeded random weights, saved as .weights)")
    parser.add_argument("--sizes", default="320,416,608,256x416", help="comma-separated N or HxW")
    parser.add_argument("--exporter", default="direct", choices=["direct", "torchscript"])
    parser.add_argument("--decode", action="store_true", help="decode the heads in the graph (torchscript)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(args.weights) if args.weights else Path(folder) / "seeded.weights"
        if not args.weights:
            save_weights(load_network(args.model)[0], weights)
        path = Path(folder) / "dynamic.onnx"
        export_darknet(args.model, path, weights=weights, img_size="dynamic", exporter=args.exporter,
                       decode=args.decode)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for k, text in enumerate(args.sizes.split(",")):
            size = image_size(text)
            size = (size, size) if isinstance(size, int) else size
            network = build_model(args.model, size)
            load_weights(network, weights)
            model = YoloDecoder(network) if args.decode else network
            x = np.random.default_rng(k).random((1, 3, *size), dtype=np.float32)
            want = _run(copy.deepcopy(model), x, torch.float64)
            float32 = _run(model, x, torch.float32)
            got = session.run(None, {"images": x})
            onnx_err = max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))
            torch_err = max(float(np.abs(f - w).max()) for f, w in zip(float32, want, strict=True))
            print(f"{size[0]}x{size[1]}: outputs {[list(g.shape) for g in got]}, max|onnx − float64| {onnx_err:.2e}, "
                  f"max|torch float32 − float64| {torch_err:.2e}, ratio {onnx_err / torch_err:.2f}")


if __name__ == "__main__":
    main()
