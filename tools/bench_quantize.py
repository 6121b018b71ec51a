#!/usr/bin/env python3
"""int8 after the fold: what each foldkit step buys over ORT's own quantizer, and what it costs.

For each network (yolov3, yolov3-tiny by default, at 416): seeded weights made well-conditioned
(``condition_weights``: every conv scaled to unit output mean square, BN statistics measured),
written as Darknet ``.weights`` and converted by foldkit's direct converter without folding; one
seeded calibration batch (``--calib`` N inputs plus ``--held-out`` more, uniform [0, 1), the
distribution the weights were conditioned on) is shared by every row. Rows, from one
``quantize_onnx`` run: ORT ``quantize_static`` (QDQ, per-channel s8 weights, u8 activations,
MinMax) on the folded model, then + cross-layer equalization, + bias correction, + target SNR
(default: the plain quantizer's min head SNR + 3 dB). Each row: min and mean head SNR on the
held-out inputs, and p50 latency of its int8 model against the float model, all timed
interleaved in one run at ORT's defaults.

    python tools/bench_quantize.py [--models yolov3,yolov3-tiny] [--img-size 416] [--rounds 5]
        [--calib 12] [--held-out 3] [--target-snr DB] [--sensitivity auto|off] [--json R.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from foldkit import build_model, condition_weights
from foldkit.darknet.to_onnx import darknet_to_onnx
from foldkit.darknet.weights import save_weights
from foldkit.defaults import INPUT_NAME
from foldkit.fold.onnx import fold_onnx
from foldkit.onnxio.files import load_onnx, save_onnx
from foldkit.quantize import quantize_onnx
from foldkit.quantize.calibration import load_calibration
from foldkit.quantize.judge import HeldOutJudge, mean_snr, min_snr
from foldkit.quantize.latency import time_interleaved
from foldkit.quantize.static import StaticQuantizer


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def conditioned_onnx(name: str, size: int, seed: int, folder: Path) -> Path:
    net = build_model(name, size, seed=seed)
    condition_weights(net, torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed + 1)), seed=seed)
    weights = folder / f"{name}.weights"
    save_weights(net, weights)
    path = folder / f"{name}.onnx"
    darknet_to_onnx(name, weights, img_size=size, fold=False).save(path)
    return path


def bench(name: str, args: argparse.Namespace, folder: Path, log) -> dict:
    started = time.perf_counter()
    path = conditioned_onnx(name, args.img_size, args.seed, folder)
    calib = folder / f"{name}.calib.npy"
    rng = np.random.default_rng(args.seed + 7)
    np.save(calib, rng.random((args.calib + args.held_out, 3, args.img_size, args.img_size), dtype=np.float32))
    target = args.target_snr
    folded, _ = fold_onnx(load_onnx(path))
    float_path = folder / f"{name}.folded.onnx"
    save_onnx(folded, float_path)
    if target is None:  # the plain quantizer's score on the same data, + 3 dB
        data = load_calibration((1, 3, args.img_size, args.img_size), calib=calib, held_out=args.held_out)
        plain = StaticQuantizer(folded, folder, f"{name}-plain", data, INPUT_NAME)
        target = min_snr(HeldOutJudge(float_path, data.held_out, INPUT_NAME).errors(plain.quantize())) + 3.0
        log(f"{name}: plain quantize_static min SNR {target - 3:.2f} dB → target {target:.2f} dB")
    steps_dir = folder / f"{name}-steps"
    steps_dir.mkdir()
    report = quantize_onnx(path, folder / f"{name}.int8.onnx", calib=calib, held_out=args.held_out,
                           target_snr=target, latency_rounds=0, step_models=steps_dir, progress=log,
                           sensitivity=None if args.sensitivity == "auto" else False)
    log(report.format())
    sample = np.load(calib)[-1:]
    models: dict[str, str | os.PathLike] = {"float": float_path, **{s.name: s.model_file for s in report.steps}}
    log(f"{name}: timing {len(models)} models, {args.rounds} interleaved rounds")
    samples = time_interleaved(models, sample, INPUT_NAME, rounds=args.rounds, warmup=1)
    p50 = {key: float(np.median(values)) for key, values in samples.items()}
    rows = [{"step": "float (folded)", "kept": True, "min_snr_db": None, "mean_snr_db": None,
             "p50_ms": p50["float"], "ratio": 1.0}]
    rows += [{"step": s.name, "kept": s.kept, "min_snr_db": min_snr(s.outputs), "mean_snr_db": mean_snr(s.outputs),
              "p50_ms": p50[s.name], "ratio": p50[s.name] / p50["float"]} for s in report.steps]
    return {"model": name, "target_snr_db": target, "target_reached": report.target_reached,
            "input_noise_snr_db": report.input_noise_snr_db,
            "float_layers": [layer.node for layer in report.float_layers], "rows": rows,
            "sensitivity_top": [(s.node, s.gain_db) for s in report.sensitivity[:5]],
            "notes": report.notes, "seconds": time.perf_counter() - started}


def table(results: list[dict]) -> str:
    lines = ["| model | step | kept | min head SNR (dB) | mean head SNR (dB) | p50 (ms) | × float p50 |",
             "|---|---|---|---:|---:|---:|---:|"]
    for result in results:
        for row in result["rows"]:
            snr = (("—", "—") if row["min_snr_db"] is None
                   else (f"{row['min_snr_db']:.1f}", f"{row['mean_snr_db']:.1f}"))
            kept = "yes" if row["kept"] else "no"
            lines.append(f"| {result['model']} | {row['step']} | {kept} | {snr[0]} | {snr[1]} "
                         f"| {row['p50_ms']:.0f} | {row['ratio']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="yolov3,yolov3-tiny")
    parser.add_argument("--img-size", type=int, default=416)
    parser.add_argument("--calib", type=int, default=12, help="calibration inputs")
    parser.add_argument("--held-out", type=int, default=3, help="held-out inputs the SNR is measured on")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--target-snr", type=float, default=None, help="default: plain quantizer + 3 dB")
    parser.add_argument("--sensitivity", choices=("auto", "off"), default="auto",
                        help="off: rank layers only when the target is missed (75 quantizations on yolov3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-quantize-") as tmp:
        for name in args.models.split(","):
            results.append(bench(name, args, Path(tmp), log))
    environment = {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)),
                   "onnxruntime": ort.__version__, "onnx": onnx.__version__, "argv": sys.argv[1:]}
    print(f"CPU: {environment['cpu']}, {environment['cores']} cores; onnxruntime {ort.__version__}")
    print(table(results))
    for result in results:
        print(f"{result['model']}: the float model with u8 rounding noise on its input: "
              f"{result['input_noise_snr_db']:.1f} dB min head SNR")
        print(f"{result['model']}: target {result['target_snr_db']:.1f} dB reached: {result['target_reached']}; "
              f"float layers: {len(result['float_layers'])}; most sensitive: "
              + ", ".join(f"{node} {gain:+.1f} dB" for node, gain in result["sensitivity_top"]))
        for note in result["notes"]:
            print(f"  note: {note}")
    if args.json:
        args.json.write_text(json.dumps({"environment": environment, "results": results}, indent=2, allow_nan=False))


if __name__ == "__main__":
    main()
