#!/usr/bin/env python3
"""Rect against square letterbox on real photos: same objects? how many fewer pixels, how much faster?

Runs ``foldkit detect``'s code on a dynamic-size model over a folder of photos, once with the square
letterbox and once with the rect one, and prints per photo the rect input size and, for every
square detection scoring at least ``--min-score``, the best IoU with a rect detection of its class.
Then times both letterboxes' model runs side by side (interleaved rounds, median per image).

    python tools/rect_letterbox_photos.py DYNAMIC.onnx PHOTO_FOLDER [--img-size 416] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from foldkit.cli.options import image_size
from foldkit.deploy.detect import collect_images, detect_images
from foldkit.deploy.engines.batch import RunnerSpec, load_image
from foldkit.deploy.letterbox import letterbox
from foldkit.deploy.sizing import image_sizes


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("photos")
    parser.add_argument("--img-size", type=image_size, default=416)
    parser.add_argument("--min-score", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    photos = collect_images([args.photos])
    found = {mode: detect_images(args.model, photos, providers="cpu", img_size=args.img_size, letterbox=mode)
             for mode in ("square", "rect")}
    runner = RunnerSpec(args.model, "cpu", img_size=args.img_size, letterbox="rect").build()
    images = [load_image(p) for p in photos]
    sizes = {"square": image_sizes([i.shape for i in images], runner.input_size, runner.sizing.stride, "square"),
             "rect": image_sizes([i.shape for i in images], runner.input_size, runner.sizing.stride, "rect")}
    matched = []
    for k, (square, rect) in enumerate(zip(found["square"], found["rect"], strict=True)):
        best = [max((iou(d.box, r.box) for r in rect.detections if r.class_id == d.class_id), default=0.0)
                for d in square.detections if d.score >= args.min_score]
        matched += best
        print(f"{photos[k].name}: rect input {sizes['rect'][k][0]}x{sizes['rect'][k][1]}, "
              f"{len(square.detections)} square / {len(rect.detections)} rect detections, best IoU of the square "
              f"ones ≥ {args.min_score}: {[round(b, 3) for b in best]}")
    print(f"{len(matched)} detections ≥ {args.min_score}: min IoU {min(matched):.3f}, median "
          f"{statistics.median(matched):.3f}")
    pixels = {mode: sum(h * w for h, w in sizes[mode]) for mode in sizes}
    print(f"input pixels: rect/square {pixels['rect'] / pixels['square']:.3f}")
    tensors = {mode: [letterbox(i, s)[0] for i, s in zip(images, sizes[mode], strict=True)] for mode in sizes}
    times: dict[str, list[float]] = {mode: [] for mode in sizes}
    for _ in range(args.rounds):
        for mode in sizes:
            for tensor in tensors[mode]:
                start = time.perf_counter()
                runner.predictor(np.ascontiguousarray(tensor))
                times[mode].append(time.perf_counter() - start)
    medians = {mode: statistics.median(t) * 1e3 for mode, t in times.items()}
    print(f"model run per image, median of {args.rounds} interleaved rounds: square {medians['square']:.2f} ms, "
          f"rect {medians['rect']:.2f} ms, rect/square {medians['rect'] / medians['square']:.2f}")


if __name__ == "__main__":
    main()
