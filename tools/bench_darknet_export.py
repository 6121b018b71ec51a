#!/usr/bin/env python3
"""Darknet .cfg + .weights → folded ONNX: how long against the I/O it cannot avoid.

The floor is reading the .weights file and writing the ONNX file; `foldkit export` also builds
the network, exports, folds and validates. Both run as processes, in interleaved rounds, on seeded
weights written by foldkit's own writer (yolov3: 248 MB). ``--model`` takes a built-in name or a cfg
path, e.g. the largest zoo cfg (cspx-p7-mish, 276 M parameters, a 1.1 GB .weights file):

    python tools/bench_darknet_export.py [--model yolov3 | --model path/to.cfg] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
IO_FLOOR = (
    "import sys, numpy as np\n"
    "np.fromfile(sys.argv[1], dtype=np.uint8)\n"  # read the weights
    "data = open(sys.argv[2], 'rb').read()\n"  # the ONNX bytes foldkit produced
    "open(sys.argv[3], 'wb').write(data)\n"  # written once
)


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov3", help="built-in name or .cfg path")
    parser.add_argument("--calibration-size", type=int, default=128,
                        help="input size for the seeded BatchNorm statistics (any size the cfg allows)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # the checkout's own foldkit (run from the repository root), not whichever one the venv installed
    foldkit = [PY, "-m", "foldkit.cli"]
    with tempfile.TemporaryDirectory() as folder:
        weights, onnx_path, copy = (Path(folder) / n for n in ("w.weights", "m.onnx", "copy.onnx"))
        subprocess.run([PY, "-c", (
            "import sys; from foldkit import build_model, randomize_batchnorm\n"
            "from foldkit.darknet.weights import save_weights\n"
            "size = int(sys.argv[3]); m = build_model(sys.argv[1], size, seed=0)\n"
            "randomize_batchnorm(m, (2, m.info.channels, size, size))\n"
            "save_weights(m, sys.argv[2])"), args.model, str(weights), str(args.calibration_size)], check=True)
        export = [*foldkit, "export", args.model, "--weights", str(weights), "-o", str(onnx_path)]
        floor = [PY, "-c", IO_FLOOR, str(weights), str(onnx_path), str(copy)]
        timed(export)  # produces the ONNX file the floor writes
        samples: dict[str, list[float]] = {"foldkit export --weights (folded)": [], "read .weights + write .onnx": []}
        for _ in range(args.rounds):
            samples["foldkit export --weights (folded)"].append(timed(export))
            samples["read .weights + write .onnx"].append(timed(floor))
        base = statistics.median(samples["read .weights + write .onnx"])
        print(f"{Path(args.model).name}: .weights {weights.stat().st_size / 1e6:.0f} MB,"
              f" .onnx {onnx_path.stat().st_size / 1e6:.0f} MB, {args.rounds} interleaved rounds")
        print("| step | seconds (median) | min–max | × I/O floor |")
        print("|---|---:|---:|---:|")
        for name, values in samples.items():
            print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f}–{max(values):.2f} | "
                  f"{statistics.median(values) / base:.2f}× |")


if __name__ == "__main__":
    main()
