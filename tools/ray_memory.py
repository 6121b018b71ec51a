#!/usr/bin/env python3
"""The Ray engine's driver memory over a large collection: resident memory sampled as results stream in.

Generates ``--images`` small random PNGs (24–64 px a side) and a seeded yolov3-tiny at 64, then runs
``detect_with_ray`` into a JSONL table on a local Ray (this machine's cores, 127.0.0.1), sampling the
driver's VmRSS every ``--every`` images. A driver that held the collection (pixels, drawings or
records) would grow with the images done; a streaming one stays flat after the first batches.

    python tools/ray_memory.py [--images 10000] [--every 1000] [--workers 2] [--batch 8] [--out rows.jsonl]
"""

from __future__ import annotations

import argparse
import logging
import os
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
from foldkit.deploy.engines.ray import detect_with_ray  # noqa: E402


def rss_mib() -> float:
    """This process's resident memory (VmRSS) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def make_images(folder: Path, count: int) -> list[Path]:
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        side = rng.integers(24, 65, size=2)
        paths.append(folder / f"{i:06d}.png")
        Image.fromarray((rng.random((side[0], side[1], 3)) * 255).astype(np.uint8)).save(paths[-1])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="small images to generate and detect")
    parser.add_argument("--every", type=int, default=1000, help="sample the driver's memory every N images")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors")
    parser.add_argument("--batch", type=int, default=8, help="images per model run")
    parser.add_argument("--out", help="keep the JSONL table here (default: a temporary folder)")
    args = parser.parse_args()
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        began = time.perf_counter()
        paths = make_images(folder / "images", args.images)
        export_darknet("yolov3-tiny", folder / "tiny64.onnx", seed=0, img_size=64, batch=None)
        print(f"generated {len(paths)} images in {time.perf_counter() - began:.0f} s")
        ray.init(include_dashboard=False, logging_level=logging.ERROR)
        samples: list[tuple[int, float, float]] = [(0, time.perf_counter(), rss_mib())]
        print(f"{'images done':>11} {'driver RSS MiB':>15} {'images/s':>9}")
        print(f"{0:>11} {samples[0][2]:>15.1f} {'':>9}")

        def sample(done: int, total: int, label: str) -> None:
            if done - samples[-1][0] >= args.every or done == total:
                now = time.perf_counter()
                rate = (done - samples[-1][0]) / (now - samples[-1][1])
                samples.append((done, now, rss_mib()))
                print(f"{done:>11} {samples[-1][2]:>15.1f} {rate:>9.1f}", flush=True)

        table = Path(args.out) if args.out else folder / "rows.jsonl"
        summary = detect_with_ray(folder / "tiny64.onnx", [folder / "images"], table=table, conf=0.5,
                                  batch=args.batch, workers=args.workers, progress=sample)
        ray.shutdown()
    settled = [rss for done, _, rss in samples if done >= args.every]
    print(f"{summary.images} images, {summary.detections} detections, {summary.seconds:.0f} s; driver RSS "
          f"after the first {args.every}: {settled[0]:.1f} MiB, at the end: {settled[-1]:.1f} MiB "
          f"(max {max(settled):.1f})")


if __name__ == "__main__":
    main()
