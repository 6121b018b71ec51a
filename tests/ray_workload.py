"""What the Ray tests detect on: a seeded yolov3-tiny exported by foldkit, and random images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from foldkit import build_model, randomize_batchnorm
from foldkit.cli import main
from foldkit.darknet.weights import save_weights


def export_model(folder: Path, size: int) -> Path:
    """yolov3-tiny with seeded weights and BatchNorm statistics, exported by foldkit (dynamic batch)."""
    model = build_model("yolov3-tiny", size, seed=4)
    randomize_batchnorm(model, (2, 3, size, size), seed=4)
    save_weights(model, folder / "w.weights")
    onnx_path = folder / f"tiny{size}.onnx"
    assert main(["export", "yolov3-tiny", "--weights", str(folder / "w.weights"), "--img-size", str(size),
                 "-o", str(onnx_path), "--batch", "dynamic"]) == 0
    return onnx_path


def write_images(folder: Path, count: int, seed: int = 1) -> list[Path]:
    """Random RGB images of varied sizes (letterboxing differs per image)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        shape = (int(rng.integers(24, 100)), int(rng.integers(24, 100)), 3)
        paths.append(folder / f"img{i:03d}.png")
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(paths[-1])
    return paths
