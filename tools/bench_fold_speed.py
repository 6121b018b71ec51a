#!/usr/bin/env python3
"""Load + fold + save of an unfolded ONNX model: foldkit against onnxsim, onnxslim and ORT.

Each tool runs as its own process (interpreter start and imports included, as a user runs it),
in interleaved rounds (foldkit, onnxsim, onnxslim, ORT, plain load+save, then again), and the
wall time and peak resident memory of each process are recorded (``wait4``'s ru_maxrss); dirty
pages are flushed between runs.

    python tools/bench_fold_speed.py                 # exports yolov3 (416, unfolded) first
    python tools/bench_fold_speed.py model.onnx --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
ORT_BASIC = (
    "import sys, onnxruntime as ort\n"
    "o = ort.SessionOptions(); o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC\n"
    "o.optimized_model_filepath = sys.argv[2]\n"
    "ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])\n"
)
LOAD_SAVE = "import sys, onnx; onnx.save(onnx.load(sys.argv[1]), sys.argv[2])\n"


def tools(source: Path, out: Path) -> dict[str, list[str]]:
    foldkit = [str(Path(PY).with_name("foldkit")), "fold", str(source), "-o", str(out / "foldkit.onnx")]
    return {
        "foldkit fold": foldkit,
        "onnxsim": [PY, "-m", "onnxsim", str(source), str(out / "onnxsim.onnx")],
        "onnxslim": [PY, "-m", "onnxslim", str(source), str(out / "onnxslim.onnx")],
        "ORT offline BASIC (C++)": [PY, "-c", ORT_BASIC, str(source), str(out / "ort.onnx")],
        "onnx.load + onnx.save": [PY, "-c", LOAD_SAVE, str(source), str(out / "plain.onnx")],
    }


def run_once(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one process.

    The previous tool's written file is flushed first (``os.sync``), so its write-back is not
    charged to whichever tool runs next.
    """
    os.sync()
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        errors = process.stderr.read().decode()[-2000:] if process.stderr is not None else ""
        raise SystemExit(f"failed: {' '.join(command)}\n{errors}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="an unfolded .onnx (default: export yolov3 at 416)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        source = Path(args.model) if args.model else out / "yolov3-unfolded.onnx"
        if not args.model:
            subprocess.run([str(Path(PY).with_name("foldkit")), "export", "yolov3", "-o", str(source), "--no-fold",
                            "--random-weights", "0"], check=True, stdout=subprocess.DEVNULL)
        size_mb = source.stat().st_size / 1e6
        commands = tools(source, out)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                samples[name].append(run_once(command))
        print(f"{source.name}: {size_mb:.0f} MB, {args.rounds} interleaved rounds, median wall time, max peak RSS")
        print("| tool | seconds (median) | min–max | peak RSS MB | RSS / file size |")
        print("|---|---:|---:|---:|---:|")
        for name, values in samples.items():
            seconds = [s for s, _ in values]
            rss = max(r for _, r in values)
            print(f"| {name} | {statistics.median(seconds):.2f} | {min(seconds):.2f}–{max(seconds):.2f} | "
                  f"{rss:.0f} | {rss / size_mb:.2f}× |")


if __name__ == "__main__":
    main()
