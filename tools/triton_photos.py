#!/usr/bin/env python3
"""Does a real Triton server, serving ``foldkit triton --backend python`` entries, answer what ``foldkit detect`` does?

Writes a Python-backend entry for each model given (a raw/decoded YOLO model is decoded and
suppressed in numpy inside the entry; one exported with ``--nms`` uses its graph), starts
nvidia-pytriton's tritonserver on 127.0.0.1, sends every photo as encoded bytes over HTTP, and
compares each answer with ``foldkit detect`` on REFERENCE (the raw model): detections compared,
same classes in the same order, largest score and box-corner differences (image pixels).

    python tools/triton_photos.py REFERENCE.onnx PHOTO_FOLDER MODEL.onnx [MODEL.onnx …]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import tritonclient.http as http

from foldkit.deploy.detect import collect_images, detect_images
from foldkit.deploy.triton.local_server import LocalServer, write_backend_directory
from foldkit.deploy.triton.python import write_python_repository


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference")
    parser.add_argument("photos")
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()
    photos = collect_images([args.photos])
    want = detect_images(args.reference, photos, providers="cpu")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        names = [write_python_repository(m, work / "repo", name=f"model{i}").parent.name
                 for i, m in enumerate(args.models)]
        backends = write_backend_directory(work / "backends")
        with LocalServer(work / "repo", backends, log=work / "server.log") as server:
            client = http.InferenceServerClient(server.url, network_timeout=300)
            for name, model in zip(names, args.models, strict=True):
                client.load_model(name)
                count, score, box, same = 0, 0.0, 0.0, True
                for photo, expected in zip(photos, want, strict=True):
                    data = np.frombuffer(photo.read_bytes(), np.uint8)
                    feed = http.InferInput("image", [len(data)], "UINT8")
                    feed.set_data_from_numpy(data)
                    result = client.infer(name, [feed])
                    rows = result.as_numpy("detections")[:int(result.as_numpy("count")[0])]
                    same &= rows[:, 5].astype(int).tolist() == [d.class_id for d in expected.detections]
                    for row, d in zip(rows, expected.detections, strict=False):
                        count += 1
                        score = max(score, abs(float(row[4]) - d.score))
                        box = max(box, float(np.abs(row[:4] - np.asarray(d.box)).max()))
                print(f"{model}: {len(photos)} images, {count} detections, same classes in the same order: {same}, "
                      f"max |score diff| {score:.2e}, max |box diff| {box:.2e} px")
            client.close()


if __name__ == "__main__":
    main()
