#!/usr/bin/env python3
"""docs/darknet-detect.md's tables: foldkit detect against pjreddie's libdarknet on Darknet's photos.

    python tools/darknet_detect_table.py [--real ../shared/real] [--json DIR ...] [--repeats 20]

Exports the trained yolov3-tiny with foldkit (pjreddie's BatchNorm epsilon), runs ``darknet detect``'s
calls through libdarknet (threshold 0.25, NMS 0.45) and foldkit's detect with each resize, and prints
per photo: Darknet's detection count, then for each foldkit run max |Δscore|, min IoU, misses/extras.
``--json DIR`` adds a column for a folder of detect JSON files written elsewhere (e.g. an older
foldkit). Then the per-image letterbox cost of each resize, measured interleaved in one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import shared_real_dir
from darknet_detections import Found, Match, load, match

from foldkit.darknet.export import export_darknet
from foldkit.defaults import RESIZE_METHODS
from foldkit.deploy.detect import detect_images, load_image
from foldkit.deploy.letterbox import letterbox

THRESH, CLASSES = 0.25, 80


def _from_json(folder: Path) -> dict[str, list[Found]]:
    answers = {}
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        answers[Path(record["image"]).name] = [Found(d["class_id"], d["score"], tuple(d["box"]))
                                               for d in record["detections"]]
    return answers


def _cell(result: Match) -> str:
    if not result.pairs:
        return f"– | – | {len(result.missed)}/{len(result.extra)}"
    return f"{result.max_score_error:.2g} | {result.min_iou:.5f} | {len(result.missed)}/{len(result.extra)}"


def _cost(images: list[np.ndarray], size: tuple[int, int], repeats: int) -> dict[str, float]:
    """Median milliseconds per letterbox, per method, alternating methods within each repeat."""
    times: dict[str, list[float]] = {m: [] for m in RESIZE_METHODS}
    for _ in range(repeats):
        for method in RESIZE_METHODS:
            for image in images:
                start = time.perf_counter()
                letterbox(image, size, method)
                times[method].append(time.perf_counter() - start)
    return {m: 1000 * float(np.median(t)) for m, t in times.items()}


def _print_costs(photos: list[Path], repeats: int) -> None:
    """The 7 photos, and dog.jpg tiled 5×6 (a 13-megapixel photo), letterboxed to 416×416."""
    images = [load_image(p) for p in photos]
    large = np.ascontiguousarray(np.tile(images[0], (6, 5, 1)))
    for name, batch in (("the 7 photos", images), (f"a {large.shape[1]}×{large.shape[0]} image", [large])):
        cost = _cost(batch, (416, 416), repeats)
        print(f"letterbox of {name} to 416×416, median ms per image: "
              + ", ".join(f"{m} {v:.1f}" for m, v in cost.items())
              + f" (darknet/pil {cost['darknet'] / cost['pil']:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=shared_real_dir(), help="folder with yolov3-tiny and photos/")
    parser.add_argument("--json", type=Path, action="append", default=[], help="a folder of detect JSON files")
    parser.add_argument("--repeats", type=int, default=10, help="letterbox timing repeats per image")
    args = parser.parse_args()
    lib = load()
    if lib is None or args.real is None:
        sys.exit("needs libdarknet (Debian package darknet) and ../shared/real")
    photos = sorted((args.real / "photos").glob("*.jpg"))
    net = lib.network(args.real / "yolov3-tiny.cfg", args.real / "yolov3-tiny.weights")
    darknet = {p.name: lib.detect(net, p, THRESH, CLASSES) for p in photos}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "yolov3-tiny.onnx"
        export_darknet(args.real / "yolov3-tiny.cfg", model, weights=args.real / "yolov3-tiny.weights",
                       bn_variant="pjreddie")
        runs = {f"resize={m}": {r.image.name: [Found(d.class_id, d.score, d.box) for d in r.detections]
                                for r in detect_images(model, photos, conf=THRESH, resize=m)}
                for m in RESIZE_METHODS}
    runs |= {str(folder): _from_json(folder) for folder in args.json}
    print("| photo | Darknet | " + " | ".join(f"{name}: max Δscore | min IoU | missed/extra" for name in runs) + " |")
    print("|---|---|" + "---|---|---|" * len(runs))
    for photo in darknet:
        cells = [_cell(match(darknet[photo], run.get(photo, []))) for run in runs.values()]
        print(f"| {photo} | {len(darknet[photo])} | " + " | ".join(cells) + " |")
    print()
    _print_costs(photos, args.repeats)


if __name__ == "__main__":
    main()
