#!/usr/bin/env python3
"""Does a model exported with ``--nms`` find what ``foldkit detect`` finds on the raw model, on real photos?

Runs ``foldkit detect``'s code on both models over every image of a folder, at several thresholds
fed to the NMS graph as inputs, and prints per setting: detections compared, whether classes come
in the same order, and the largest score and box-corner differences (box corners in image pixels).

    python tools/nms_parity_photos.py NMS.onnx RAW.onnx PHOTO_FOLDER [--thresholds 0.25:0.45,0.1:0.3]
"""

from __future__ import annotations

import argparse

import numpy as np

from foldkit.deploy.detect import collect_images, detect_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nms_model")
    parser.add_argument("raw_model")
    parser.add_argument("photos")
    parser.add_argument("--thresholds", default="0.25:0.45,0.1:0.3", help="conf:iou pairs, comma-separated")
    args = parser.parse_args()
    photos = collect_images([args.photos])
    for pair in args.thresholds.split(","):
        conf, iou = (float(v) for v in pair.split(":"))
        got = detect_images(args.nms_model, photos, conf=conf, iou=iou, providers="cpu")
        want = detect_images(args.raw_model, photos, conf=conf, iou=iou, providers="cpu")
        count, score, box, same = 0, 0.0, 0.0, True
        for g, w in zip(got, want, strict=True):
            same &= [d.class_id for d in g.detections] == [d.class_id for d in w.detections]
            for a, b in zip(g.detections, w.detections, strict=False):
                count += 1
                score = max(score, abs(a.score - b.score))
                box = max(box, float(np.abs(np.subtract(a.box, b.box)).max()))
        print(f"conf {conf:g} iou {iou:g}: {len(photos)} images, {count} detections, same classes in the same "
              f"order: {same}, max |score diff| {score:.2e}, max |box diff| {box:.2e} px")


if __name__ == "__main__":
    main()
