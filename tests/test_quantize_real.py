"""quantize on pjreddie's trained yolov3-tiny and two real photos (skipped without ../shared/real).

Small on purpose (160×160, two photos, two variants each): the full measurement is
tools/bench_quantize.py, with its numbers in docs/int8.md.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest

from foldkit.darknet.export import export_darknet
from foldkit.onnxio.metadata import YOLO_HEADS_KEY, read_metadata
from foldkit.quantize import QuantizeOptions, quantize_onnx
from foldkit.quantize.options import BIAS_CORRECTION, MSE_CLIP, WEIGHTS_7BIT

PHOTOS = ("dog.jpg", "person.jpg")


@pytest.fixture
def trained_tiny(shared_real: Path, tmp_path: Path) -> tuple[Path, Path]:
    path = tmp_path / "tiny.onnx"
    export_darknet(shared_real / "yolov3-tiny.cfg", path, weights=shared_real / "yolov3-tiny.weights", img_size=160,
                   fold=False)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS:
        shutil.copyfile(shared_real / "photos" / name, photos / name)
    return path, photos


def test_trained_tiny_int8_keeps_only_winning_steps_and_reports_detections(trained_tiny, tmp_path) -> None:
    model, photos = trained_tiny
    report = quantize_onnx(model, tmp_path / "tiny.int8.onnx", QuantizeOptions(
        calib=photos, held_out_variants=2, steps=(WEIGHTS_7BIT, MSE_CLIP, BIAS_CORRECTION), sensitivity="never",
        latency_rounds=0))
    assert "2 images" in report.calibration and "4 seeded variants" in report.calibration
    plain = report.steps[0]
    for step in report.steps[1:]:  # kept only beyond twice its bootstrap noise
        gain = step.min_snr_db - max((s for s in report.steps[:report.steps.index(step)] if s.kept),
                                     key=lambda s: report.steps.index(s)).min_snr_db
        assert step.kept == (gain > 2 * (step.noise_db or 0) and gain > 0), (step.name, gain, step.noise_db)
    assert report.min_snr_db >= plain.min_snr_db
    assert [s.name for s in report.steps[1:]][-2:] == ["+ MSE-optimal activation ranges", "+ bias correction"]
    detections = report.detections
    assert detections is not None and detections.images == 4 and detections.float_detections > 0
    assert 0 <= detections.f1 <= 1 and detections.matched + detections.misses == detections.float_detections
    assert "detections vs float on 4 held-out inputs" in report.format()
    written = onnx.load(str(tmp_path / "tiny.int8.onnx"))
    assert YOLO_HEADS_KEY in read_metadata(written)  # foldkit detect decodes the int8 model without flags
