#!/usr/bin/env python3
"""Where ONNX Runtime spends a model's time on the CPU: kernel time per op type, from ORT's own profiler.

Runs the model at ORT's default optimization level (what ``foldkit detect`` and ``bench`` run), a
few warm-up runs, then ``--runs`` profiled ones on seeded uniform inputs; prints each op type's share
of the summed kernel time and its milliseconds per run. Shapes come from the model's input (a
dynamic dimension needs ``--size``).

    python tools/ort_op_profile.py MODEL.onnx [--runs 10] [--size 416] [--top 12]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from foldkit.cpu import int8_capability

WARMUP = 3


def op_times(model: Path, runs: int, size: int | None) -> dict[str, float]:
    """Summed kernel microseconds per op type over ``runs`` runs after :data:`WARMUP` (all profiled; the
    warm-up runs' kernels are left out by the run windows ORT records)."""
    with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        feeds = {}
        rng = np.random.default_rng(0)
        for spec in session.get_inputs():
            dims = [d if isinstance(d, int) else (1 if i == 0 else size) for i, d in enumerate(spec.shape)]
            shape = [d for d in dims if d is not None]
            if len(shape) != len(dims):
                raise SystemExit(f"{model}: input {spec.name} has a dynamic size; give --size")
            feeds[spec.name] = rng.random(shape, dtype=np.float32)
        for _ in range(WARMUP + runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    timed = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[WARMUP:]
    totals: collections.Counter[str] = collections.Counter()
    for event in events:
        if (event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
                and any(begin <= event["ts"] <= end for begin, end in timed)):
            totals[event["args"]["op_name"]] += event["dur"]
    return dict(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--runs", type=int, default=10, help="profiled runs")
    parser.add_argument("--size", type=int, default=None, help="height and width for a dynamic input")
    parser.add_argument("--top", type=int, default=12, help="op types shown")
    args = parser.parse_args()
    totals = op_times(args.model, args.runs, args.size)
    everything = sum(totals.values())
    print(f"{args.model}: CPU {int8_capability().describe()}; onnxruntime {ort.__version__}; {args.runs} runs")
    print(f"{'op type':<28} {'share':>6} {'ms/run':>8}")
    for op, micros in sorted(totals.items(), key=lambda item: -item[1])[:args.top]:
        print(f"{op:<28} {micros / everything:6.1%} {micros / args.runs / 1000:8.2f}")


if __name__ == "__main__":
    main()
