#!/usr/bin/env python3
"""Where the int8 error of the trained yolov3-tiny lives: u8 activations, int8 weights, the rounding's draw.

pjreddie's trained yolov3-tiny at 416, folded, calibrated on the shared photos and judged on seeded
variants of them exactly as ``foldkit quantize`` does. Rows, each one model judged (worst head SNR,
detection agreement with the float model):

* u8 activations with the pass's MSE ranges (weighed for the LeakyReLU behind them), s8 weights;
* the same with every range's ends jittered by ±0.5 % (``--draws`` equivalent models: the spread is
  the luck of the rounding, not a better or worse model);
* every activation at u16, s8 weights rounded to nearest: what 8-bit weights alone leave;
* every activation at u16, s8 weights with learned rounding (AdaRound on the u8 model's inputs);
* u8 activations with the AdaRound weights.

    python tools/int8_floor.py [--real DIR] [--draws 8] [--json R.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType

from foldkit.cpu import int8_capability
from foldkit.darknet.export import export_darknet
from foldkit.deploy.yolo import heads_from_metadata
from foldkit.fold.onnx import fold_onnx
from foldkit.onnxio.metadata import read_metadata
from foldkit.quantize.activations import activation_stats
from foldkit.quantize.adaround_model import adaround_onnx
from foldkit.quantize.calibration import load_calibration, model_input
from foldkit.quantize.detections import compare_detections
from foldkit.quantize.draws import JITTER, jittered_draws
from foldkit.quantize.judge import HeldOutJudge, Judgement
from foldkit.quantize.options import HELD_OUT_VARIANTS
from foldkit.quantize.static import StaticQuantizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quantize import default_real  # a sibling script, not a package

SIZE = 416


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=default_real(), help="the shared folder of trained models")
    parser.add_argument("--draws", type=int, default=8, help="jittered equivalent models")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args()
    if not (args.real / "yolov3-tiny.weights").is_file():
        sys.exit(f"{args.real}: no yolov3-tiny.weights here (set FOLDKIT_SHARED or --real)")
    with tempfile.TemporaryDirectory(prefix="int8-floor-") as tmp:
        rows = measure(args.real, Path(tmp), args.draws)
    print(f"CPU: {int8_capability().describe()}; onnxruntime {ort.__version__}")
    print("| activations | weights | worst head SNR (dB) | F1 | mean abs Δscore | missed / extra |")
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['activations']} | {row['weights']} | {row['snr']} | {row['f1']} | {row['score']} | "
              f"{row['missed_extra']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def measure(real: Path, folder: Path, draws: int) -> list[dict]:
    source = folder / "yolov3-tiny.onnx"
    export_darknet(real / "yolov3-tiny.cfg", source, weights=real / "yolov3-tiny.weights", img_size=SIZE, fold=False)
    folded, _ = fold_onnx(onnx.load(str(source)))
    input_name, shape = model_input(folded, str(source))
    data = load_calibration(shape, calib=real / "photos", variants=HELD_OUT_VARIANTS)
    nearest = StaticQuantizer(folded, folder, "nearest", data, input_name)
    judge = HeldOutJudge(nearest.float_path, data.held_out, input_name)
    heads = heads_from_metadata(read_metadata(folded))
    stats = activation_stats(folded, nearest.calibrate(), data.calibration, input_name)
    u8 = {s.name: {"rmin": np.float32(lo), "rmax": np.float32(hi)} for s in stats for lo, hi in [s.mse_range()]}
    u16 = {name: {"quant_type": QuantType.QUInt16} for name in nearest.calibrate()}

    def row(activations: str, weights: str, judgements: list[Judgement]) -> dict:
        agreements = [compare_detections(judge.reference, j.outputs, heads, (SIZE, SIZE)) for j in judgements]
        values = {"snr": [j.min_snr_db for j in judgements], "f1": [a.f1 for a in agreements],
                  "score": [a.mean_abs_score_diff for a in agreements]}
        shown = {key: (f"{min(v):.3f}–{max(v):.3f}" if key != "snr" else f"{min(v):.1f}–{max(v):.1f}")
                 if len(v) > 1 else (f"{v[0]:.3f}" if key != "snr" else f"{v[0]:.1f}") for key, v in values.items()}
        missed_extra = (f"{agreements[0].misses} / {agreements[0].extras}" if len(agreements) == 1 else
                        f"{min(a.misses for a in agreements)}–{max(a.misses for a in agreements)} / "
                        f"{min(a.extras for a in agreements)}–{max(a.extras for a in agreements)}")
        return {"activations": activations, "weights": weights, **shown, "missed_extra": missed_extra,
                "values": values}

    clipped = nearest.with_overrides(u8, "u8")
    base = clipped.quantize()
    rounded, _ = adaround_onnx(folded, onnx.load(str(base)), data.calibration, input_name, reduce_range=False)
    learned = StaticQuantizer(rounded, folder, "adaround", data, input_name)
    return [
        row("u8, the pass's MSE ranges", "s8, nearest", [judge.judge(base)]),
        row(f"u8, ranges jittered ±{JITTER:.1%} ({draws} equivalent models)", "s8, nearest",
            jittered_draws(clipped, [], judge, seed=1, count=draws)),
        row("u16 everywhere", "s8, nearest", [judge.judge(nearest.with_overrides(u16, "u16").quantize())]),
        row("u16 everywhere", "s8, AdaRound", [judge.judge(learned.with_overrides(u16, "u16").quantize())]),
        row("u8, the pass's MSE ranges", "s8, AdaRound", [judge.judge(learned.with_overrides(u8, "u8").quantize())]),
    ]


if __name__ == "__main__":
    main()
