#!/usr/bin/env python3
"""Where the int8 error of the trained yolov3-tiny lives: u8 activations, int8 weights, the rounding's draw.

pjreddie's trained yolov3-tiny at 416, folded, calibrated on the shared photos and judged on seeded
variants of them exactly as ``foldkit quantize`` does. Rows, each one model judged (worst head SNR,
detection agreement with the float model):

* u8 activations with the pass's MSE ranges (weighed for the LeakyReLU behind them), s8 weights;
* the same redrawn ``--draws`` times (:mod:`foldkit.quantize.draws`: every range's ends jittered by
  ±0.5 %, conv weights near a tie of the s8 grid flipped at random; the spread is the luck of the
  rounding, not a better or worse model);
* ORT's plain quantize_static (MinMax ranges), once and redrawn: the baseline the gain is measured from;
* u8 after each activation only: the conv and its LeakyReLU fused (the form OpenVINO runs,
  :mod:`foldkit.quantize.fused_form`; judged in ORT, which runs those convs in float), once and redrawn;
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
from foldkit.quantize.draws import JITTER, TIE_BAND, equivalent_draws
from foldkit.quantize.fused_form import fuse_conv_activations
from foldkit.quantize.judge import HeldOutJudge, Judgement
from foldkit.quantize.options import HELD_OUT_VARIANTS
from foldkit.quantize.static import StaticQuantizer, range_overrides

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quantize import default_real  # a sibling script, not a package

SIZE = 416


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=default_real(), help="the shared folder of trained models")
    parser.add_argument("--draws", type=int, default=8, help="equivalent models per redrawn row")
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
    u8 = range_overrides({s.name: s.mse_range() for s in stats})
    u16 = {name: {"quant_type": QuantType.QUInt16} for name in nearest.calibrate()}

    def row(activations: str, weights: str, judgements: list[Judgement]) -> dict:
        agreements = [compare_detections(judge.reference, j.outputs, heads, (SIZE, SIZE)) for j in judgements]
        values: dict[str, list[float]] = {"snr": [j.min_snr_db for j in judgements], "f1": [a.f1 for a in agreements],
                  "score": [a.mean_abs_score_diff for a in agreements],
                  "missed": [a.misses for a in agreements], "extra": [a.extras for a in agreements]}
        return {"activations": activations, "weights": weights, "snr": _span(values["snr"], ".1f"),
                "f1": _span(values["f1"], ".3f"), "score": _span(values["score"], ".3f"),
                "missed_extra": f"{_span(values['missed'], 'd')} / {_span(values['extra'], 'd')}", "values": values}

    redrawn = f"s8, ties (±{TIE_BAND:.0%}) flipped at random; ranges ±{JITTER:.1%}"
    clipped = nearest.with_overrides(u8, "u8")
    base = clipped.quantize()
    rounded, _ = adaround_onnx(folded, onnx.load(str(base)), data.calibration, input_name, reduce_range=False)
    learned = StaticQuantizer(rounded, folder, "adaround", data, input_name)
    return [
        row("u8, the pass's MSE ranges", "s8, nearest", [judge.judge(base)]),
        row(f"u8, the pass's MSE ranges, redrawn ({draws} equivalent models)", redrawn,
            equivalent_draws(clipped, [], judge, seed=1, count=draws)),
        row("u8, ORT's MinMax ranges (plain quantize_static)", "s8, nearest", [judge.judge(nearest.quantize())]),
        row(f"u8, ORT's MinMax ranges, redrawn ({draws} equivalent models)", redrawn,
            equivalent_draws(nearest, [], judge, seed=1, count=draws)),
        row("u8 after each activation only (conv + LeakyReLU fused: OpenVINO's form)", "s8, nearest",
            [judge.judge(_fused(base))]),
        row(f"u8 after each activation only, redrawn ({draws} equivalent models)", redrawn,
            equivalent_draws(clipped, [], judge, seed=1, count=draws, form=_fused)),
        row("u16 everywhere", "s8, nearest", [judge.judge(nearest.with_overrides(u16, "u16").quantize())]),
        row("u16 everywhere", "s8, AdaRound", [judge.judge(learned.with_overrides(u16, "u16").quantize())]),
        row("u8, the pass's MSE ranges", "s8, AdaRound", [judge.judge(learned.with_overrides(u8, "u8").quantize())]),
    ]


def _fused(path: Path) -> Path:
    """The fused form of the QDQ model at ``path``, written beside it."""
    fused, _ = fuse_conv_activations(onnx.load(str(path)))
    written = path.with_suffix(".fused.onnx")
    onnx.save(fused, str(written))
    return written


def _span(values: list[float], spec: str) -> str:
    """One value, or the lowest–highest of several, formatted with ``spec``."""
    low, high = min(values), max(values)
    return f"{low:{spec}}" if low == high else f"{low:{spec}}–{high:{spec}}"


if __name__ == "__main__":
    main()
