"""NMS in the graph: its detections equal the numpy path's on the raw model, box for box, in order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from foldkit.cli import main
from foldkit.darknet.export import export_darknet
from foldkit.deploy.detect import detect_images
from foldkit.deploy.nms_graph import CONF, COUNT, DETECTIONS, IOU, NmsSettings, append_nms, nms_settings
from foldkit.errors import FoldkitError
from foldkit.onnxio.metadata import read_metadata
from foldkit.runtime import create_session

SIZE = 128  # conftest.tiny_yolo's input size


def assert_same_detections(got, want, size: int) -> None:
    """Same classes in the same order; scores within 1e-5; boxes within 1e-5 of the image size.

    Boxes are float32 pixel coordinates in the graph and float64 in the numpy path: at 400 px one
    float32 step is 3e-5 px, so the box tolerance scales with the image.
    """
    assert [d.class_id for d in got] == [d.class_id for d in want]
    for g, w in zip(got, want, strict=True):
        assert abs(g.score - w.score) <= 1e-5
        assert np.abs(np.subtract(g.box, w.box)).max() <= 1e-5 * size


@pytest.fixture(scope="module")
def models(tiny_yolo, tmp_path_factory) -> dict[str, Path]:
    """The built-in yolov3-tiny raw, decoded, and decoded with NMS (max_det 50), dynamic batch."""
    path = tmp_path_factory.mktemp("nms") / "nms.onnx"
    onnx.save(append_nms(onnx.load(tiny_yolo["decoded"]), NmsSettings(max_det=50)), path)
    return {**tiny_yolo, "nms": path}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Three seeded images of different shapes (letterboxed differently)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(120, 200), (200, 90), (160, 160)]):
        smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)).resize((w, h)))
        Image.fromarray(smooth).save(folder / f"img{i}.png")
        paths.append(folder / f"img{i}.png")
    return paths


@pytest.mark.parametrize(("conf", "iou"), [(0.4, 0.45), (0.6, 0.2)])
def test_nms_graph_equals_numpy_path(models, images, conf, iou):
    """One file, two thresholds fed as inputs; batch 3 in the graph vs the raw model image by image."""
    got = detect_images(models["nms"], images, conf=conf, iou=iou, batch=3, providers="cpu")
    want = detect_images(models["raw"], images, conf=conf, iou=iou, batch=1, providers="cpu")
    assert sum(len(r.detections) for r in want) > 3  # the comparison is not vacuous
    for g, w, path in zip(got, want, images, strict=True):
        assert_same_detections(g.detections, w.detections[:50], max(Image.open(path).size))


def test_nms_graph_outputs_and_defaults(models, images):
    """Fixed-shape outputs, zero rows past the count, defaults from the initializers, max_det honoured."""
    model = onnx.load(models["nms"])
    assert nms_settings(read_metadata(model)) == NmsSettings(max_det=50)
    session = create_session(models["nms"], providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    x = np.random.default_rng(1).random((2, 3, SIZE, SIZE), dtype=np.float32)
    default = session.run(None, {"images": x})
    explicit = session.run(None, {"images": x, CONF: np.array([0.25], np.float32), IOU: np.array([0.45], np.float32)})
    for a, b in zip(default, explicit, strict=True):
        np.testing.assert_array_equal(a, b)
    rows, counts = dict(zip([o.name for o in session.get_outputs()], default, strict=True)).values()
    assert rows.shape == (2, 50, 6) and counts.dtype == np.int64
    for row, count in zip(rows, counts, strict=True):
        assert 0 < count <= 50 and not row[count:].any()
        assert np.all(np.diff(row[:count, 4]) <= 0)  # by descending score
    none = session.run([DETECTIONS, COUNT], {"images": x, CONF: np.array([1.0], np.float32)})
    assert not none[0].any() and not none[1].any()


def test_max_det_keeps_the_best(models, images, tmp_path):
    """max_det=2 keeps the numpy path's first two detections of each image."""
    raw = detect_images(models["raw"], images, conf=0.5, providers="cpu")
    rebuilt = tmp_path / "two.onnx"
    onnx.save(append_nms(onnx.load(models["decoded"]), NmsSettings(max_det=2, conf=0.5)), rebuilt)
    assert nms_settings(read_metadata(onnx.load(rebuilt))) == NmsSettings(2, 0.5, 0.45)
    got = detect_images(rebuilt, images, conf=0.5, providers="cpu")
    for g, w, path in zip(got, raw, images, strict=True):
        assert len(g.detections) == min(2, len(w.detections))
        assert_same_detections(g.detections, w.detections[:2], max(Image.open(path).size))
    with pytest.raises(FoldkitError, match="already ends with NMS"):
        append_nms(onnx.load(models["nms"]), NmsSettings())


@pytest.mark.slow
def test_real_yolov3_tiny_photos(shared_real, tmp_path):
    """pjreddie's trained yolov3-tiny on the real photos: the graph's detections are the numpy path's."""
    real = shared_real
    cfg, weights = real / "yolov3-tiny.cfg", real / "yolov3-tiny.weights"
    export_darknet(cfg, tmp_path / "raw.onnx", weights=weights)
    export_darknet(cfg, tmp_path / "nms.onnx", weights=weights, nms=NmsSettings())
    photos = sorted((real / "photos").glob("*.jpg"))
    got = detect_images(tmp_path / "nms.onnx", photos, providers="cpu")
    want = detect_images(tmp_path / "raw.onnx", photos, providers="cpu")
    assert sum(len(r.detections) for r in want) >= len(photos)
    for g, w, path in zip(got, want, photos, strict=True):
        assert_same_detections(g.detections, w.detections, max(Image.open(path).size))


@pytest.mark.parametrize(("settings", "message"), [
    ({"conf": 1.5}, "conf must be"), ({"iou": float("nan")}, "iou must be"), ({"conf": -0.1}, "conf must be"),
    ({"max_det": 0}, "max_det must be"), ({"max_det": 2.5}, "max_det must be"),
])
def test_bad_settings_refused(settings, message):
    with pytest.raises(FoldkitError, match=message):
        NmsSettings(**settings)


def test_nms_needs_a_decoded_graph(models):
    with pytest.raises(FoldkitError, match="--decode"):
        append_nms(onnx.load(models["raw"]), NmsSettings())
    with pytest.raises(FoldkitError, match="malformed foldkit.nms"):
        nms_settings({"foldkit.nms": '{"max_det": "many"}'})


def test_cli_export_nms_check_and_refusals(models, images, tmp_path, capsys):
    """export --nms, check (by detections) and detect through the CLI; typos are exit 2, one line."""
    out = tmp_path / "cli.onnx"
    assert main(["export", "yolov3-tiny", "-o", str(out), "--img-size", str(SIZE), "--nms", "--max-det", "40",
                 "--conf", "0.5", "--iou", "0.4"]) == 0
    assert nms_settings(read_metadata(onnx.load(out))) == NmsSettings(40, 0.5, 0.4)
    capsys.readouterr()
    assert main(["check", str(out), str(models["raw"]), "--batch", "2"]) == 0
    report = capsys.readouterr().out
    assert "PASSED: same detections, same order" in report and " 0 detection(s)" not in report
    image = str(images[0])
    for model, folder in ((out, "with_nms"), (models["raw"], "numpy")):
        assert main(["detect", str(model), image, "-o", str(tmp_path / folder), "--conf", "0.5", "--iou", "0.4"]) == 0
    found = [json.loads((tmp_path / folder / f"{images[0].stem}.json").read_text())["detections"]
             for folder in ("with_nms", "numpy")]
    assert found[0] and [d["class_id"] for d in found[0]] == [d["class_id"] for d in found[1][:40]]  # max-det 40
    for bad in (["--conf", "1.5"], ["--iou", "nan"], ["--max-det", "0"]):
        assert main(["export", "yolov3-tiny", "-o", str(tmp_path / "bad.onnx"), "--nms", *bad]) == 2
    assert main(["export", "yolov3-tiny", "-o", str(tmp_path / "bad.onnx"), "--nms", "--exporter", "direct",
                 "--weights", str(out)]) == 2
    assert not (tmp_path / "bad.onnx").exists()
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 4 and "Traceback" not in "".join(errors) and "goes through PyTorch" in errors[-1]


def _identity_decoded_model(classes: int) -> onnx.ModelProto:
    """A 'decoded' model whose output is its input: the tail then sees exactly the candidates a test writes."""
    from onnx import TensorProto, helper

    from foldkit.onnxio.metadata import CLASSES_KEY, DECODED_KEY, add_metadata

    value = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["detections"])], "decoded",
                              [value("images", TensorProto.FLOAT, ["batch", None, 5 + classes])],
                              [value("detections", TensorProto.FLOAT, ["batch", None, 5 + classes])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    add_metadata(model, {DECODED_KEY: "true", CLASSES_KEY: str(classes)})
    return model


def test_tail_order_ties_and_empty_images():
    """Hand-made candidates: an image with none, ties ordered by box then class, one box with two classes."""
    from foldkit.deploy.yolo import Letterbox, postprocess

    rows = np.zeros((3, 5, 7), np.float32)  # cx cy w h objectness p(class0) p(class1)
    rows[1] = [[50, 50, 20, 20, 0.9, 0.5, 0.5],   # two classes at one score (class 0 is suppressed by box 2)
               [200, 50, 20, 20, 0.9, 0.5, 0.1],  # same score as box 0 class 0: after box 0
               [52, 50, 20, 20, 0.9, 0.6, 0.0],   # overlaps box 0 (IoU 0.82): suppresses its class 0
               [400, 400, 10, 10, 0.2, 1.0, 1.0],  # objectness ≤ conf: never a candidate
               [300, 300, 30, 30, 0.95, 0.0, 0.9]]
    rows[2, 0] = [10, 10, 4, 4, 0.99, 0.99, 0.0]
    session = create_session(append_nms(_identity_decoded_model(2), NmsSettings(max_det=4)),
                             providers=["CPUExecutionProvider"])
    detections, counts = session.run(None, {"images": rows})
    want = postprocess(rows.astype(np.float64), [Letterbox.identity(1000, 1000)] * 3, conf=0.25, iou=0.45)
    assert counts.tolist() == [0, 4, 1] and [len(w) for w in want] == [0, 4, 1]
    assert [(int(c), round(float(s), 4)) for c, s in detections[1, :, 5:3:-1]] == [
        (1, 0.855), (0, 0.54), (1, 0.45), (0, 0.45)]  # 0.45 tie: box 0 class 1 before box 1 class 0
    for image in (1, 2):
        got = detections[image, :counts[image]]
        expected = np.array([[*d.box, d.score, d.class_id] for d in want[image]])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert not detections[0].any()
