#!/usr/bin/env python3
"""images/s of ``foldkit detect``: the local engine, and the Ray engine with 1 and 2 workers, in one run.

yolov3-tiny at 416 (pjreddie's trained weights when ../shared/real has them, else seeded ones) on
``--images`` JPEGs: the photos in ../shared/real/photos repeated, else random 640×480 ones
(``FOLDKIT_SHARED`` names another shared folder). Seeded weights on noise find thousands of boxes per
image, so there suppression, not the network, dominates: measure with the real ones. Each
configuration runs ``--rounds`` times, interleaved, into a fresh JSONL table; one local Ray
(this machine's cores, 127.0.0.1) serves every Ray run, so its start-up is not counted. Per run:
the end-to-end seconds (actor start-up included) and the steady rate (first result to last).

    python tools/bench_ray.py [--images 240] [--batch 4] [--rounds 2] [--conf 0.25]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a single-node Ray on 127.0.0.1 only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's foldkit, also for the Ray workers (they start in REPO)

from foldkit.darknet.export import export_darknet  # noqa: E402
from foldkit.deploy.detect import detect_images  # noqa: E402
from foldkit.deploy.engines.ray import detect_with_ray  # noqa: E402

SHARED = Path(os.environ.get("FOLDKIT_SHARED", REPO.parent / "shared")) / "real"


def workload(folder: Path, count: int) -> tuple[Path, list[Path]]:
    """The model and ``count`` image files (distinct paths, so none is deduplicated)."""
    from PIL import Image

    weights = SHARED / "yolov3-tiny.weights"
    model = folder / "tiny416.onnx"
    if weights.is_file():
        export_darknet(SHARED / "yolov3-tiny.cfg", model, weights=weights, img_size=416, batch=None)
    else:
        export_darknet("yolov3-tiny", model, seed=0, img_size=416, batch=None)
    photos = sorted((SHARED / "photos").glob("*.jpg")) if (SHARED / "photos").is_dir() else []
    (folder / "images").mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / "images" / f"{i:05d}.jpg"
        if photos:
            shutil.copyfile(photos[i % len(photos)], path)
        else:
            Image.fromarray((rng.random((480, 640, 3)) * 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return model, paths


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def timed(run, count: int) -> tuple[float, float]:
    """(end-to-end seconds, steady images/s from the first result to the last)."""
    stamps: list[tuple[float, int]] = []
    began = time.perf_counter()
    run(lambda done, total, label: stamps.append((time.perf_counter(), done)))
    total = time.perf_counter() - began
    (t0, n0), (t1, n1) = stamps[0], stamps[-1]
    assert n1 == count
    return total, (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240, help="image files to detect")
    parser.add_argument("--batch", type=int, default=4, help="images per model run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each configuration, interleaved")
    parser.add_argument("--conf", type=float, default=0.25, help="detection threshold")
    args = parser.parse_args()
    import ray

    ray.init(include_dashboard=False, logging_level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, paths = workload(folder, args.images)
        configs = {
            "local engine": lambda table, p: detect_images(model, paths, table=table, conf=args.conf,
                                                          batch=args.batch, progress=p),
            "ray, 1 worker": lambda table, p: detect_with_ray(model, paths, table=table, conf=args.conf,
                                                             batch=args.batch, workers=1, progress=p),
            "ray, 2 workers": lambda table, p: detect_with_ray(model, paths, table=table, conf=args.conf,
                                                              batch=args.batch, workers=2, progress=p),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
        for round_ in range(args.rounds):
            for name, run in configs.items():
                table = folder / f"{round_}-{name.replace(' ', '_').replace(',', '')}.jsonl"
                results[name].append(timed(lambda p, run=run, table=table: run(table, p), len(paths)))
                print(f"round {round_ + 1}, {name}: {results[name][-1][0]:.1f} s end-to-end", flush=True)
    ray.shutdown()
    print(f"{cpu_name()}, {os.cpu_count()} CPUs; {args.images} images, "
          f"batch {args.batch}, {args.rounds} rounds interleaved")
    print(f"{'engine':<16} {'end-to-end s (median)':>22} {'images/s end-to-end':>20} {'images/s steady':>16}")
    for name, runs in results.items():
        total = statistics.median(t for t, _ in runs)
        steady = statistics.median(r for _, r in runs)
        print(f"{name:<16} {total:>22.1f} {args.images / total:>20.1f} {steady:>16.1f}")


if __name__ == "__main__":
    main()
