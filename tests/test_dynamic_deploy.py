"""Dynamic-size models in deployment: detect's --img-size and rect letterbox, check, bench and triton.

The rect letterbox's arithmetic is checked exactly (its input is the square letterbox's centre
window, its box map the square one's shifted by half the trimmed border); on the trained
yolov3-tiny, a dynamic export runs at two sizes exactly as the fixed exports at those sizes do, and
rect detections are the square letterbox's objects.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from foldkit.cli import main
from foldkit.darknet.export import export_darknet, load_network
from foldkit.darknet.weights import save_weights
from foldkit.deploy.detect import detect_images
from foldkit.deploy.letterbox import letterbox
from foldkit.deploy.sizing import image_sizes, rect_size, size_groups
from foldkit.errors import FoldkitError
from foldkit.runtime import Predictor

# (height, width) of test images: landscape, portrait, extreme aspects, square, smaller than the input
IMAGE_SHAPES = [(480, 640), (640, 480), (333, 1000), (1000, 333), (416, 416), (120, 200), (577, 301)]


@pytest.mark.parametrize(("height", "width"), IMAGE_SHAPES)
def test_rect_letterbox_is_the_square_letterbox_trimmed(height, width):
    image = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    size, stride = (416, 416), (32, 32)
    rect = rect_size(width, height, size, stride)
    assert all(r % s == 0 and 0 < r <= n for r, s, n in zip(rect, stride, size, strict=True))
    square_input, square = letterbox(image, size)
    rect_input, trimmed = letterbox(image, rect)
    top, left = (size[0] - rect[0]) // 2, (size[1] - rect[1]) // 2
    assert np.array_equal(rect_input, square_input[:, :, top:top + rect[0], left:left + rect[1]])
    assert (trimmed.scale_x, trimmed.scale_y) == (square.scale_x, square.scale_y)
    # a box in the rect input is that box shifted by half the trimmed border in the square input: same image box
    assert trimmed.offset_x + (size[1] - rect[1]) / 2 == square.offset_x
    assert trimmed.offset_y + (size[0] - rect[0]) / 2 == square.offset_y
    assert max(rect) == 416 and min(rect) < 416 or height == width


def test_size_groups_keep_order_and_split_sizes():
    shapes = [(480, 640, 3), (640, 480, 3), (480, 640, 3), (416, 416, 3)]
    sizes = image_sizes(shapes, (416, 416), (32, 32), "rect")
    assert sizes == [(320, 416), (416, 320), (320, 416), (416, 416)]
    assert size_groups(sizes) == [[0, 2], [1], [3]]
    assert image_sizes(shapes, (416, 416), (32, 32), "square") == [(416, 416)] * 4


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """yolov3-tiny (built-in cfg, traced at 416) with seeded weights: a dynamic and a fixed direct export."""
    folder = tmp_path_factory.mktemp("seeded")
    network, _ = load_network("yolov3-tiny")
    save_weights(network, folder / "tiny.weights")
    for name, size in (("dynamic", "dynamic"), ("fixed", None)):
        export_darknet("yolov3-tiny", folder / f"{name}.onnx", weights=folder / "tiny.weights", img_size=size,
                       batch=None)
    return folder


def test_sizes_a_model_refuses(seeded, tmp_path, capsys):
    assert Predictor(seeded / "dynamic.onnx", providers="cpu").image_size == (416, 416)  # the traced size
    assert Predictor(seeded / "dynamic.onnx", providers="cpu", img_size=(64, 96)).image_size == (64, 96)
    with pytest.raises(FoldkitError, match="not a multiple of the network stride 32"):
        Predictor(seeded / "dynamic.onnx", providers="cpu", img_size=100)
    with pytest.raises(FoldkitError, match="fixed at 416x416, not 320x320"):
        Predictor(seeded / "fixed.onnx", providers="cpu", img_size=320)
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(image)
    for model, extra in (("fixed.onnx", ["--img-size", "320"]), ("fixed.onnx", ["--letterbox", "rect"]),
                         ("dynamic.onnx", ["--img-size", "96x100"])):
        assert main(["detect", str(seeded / model), str(image), "-o", str(tmp_path / "out"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and model in err[0]
    assert not (tmp_path / "out").exists()


def test_check_probes_multiples_of_the_stride(seeded, capsys):
    unfolded = seeded / "unfolded.onnx"
    export_darknet("yolov3-tiny", unfolded, weights=seeded / "tiny.weights", img_size="dynamic", fold=False)
    assert main(["check", str(seeded / "dynamic.onnx"), str(unfolded)]) == 0
    out = capsys.readouterr().out
    assert "images 1x3x416x416" in out and "images 1x3x384x448" in out  # traced size, then one stride off per side


def test_bench_runs_a_dynamic_model_at_a_concrete_size(seeded):
    from foldkit.bench.runners import input_feeds

    assert input_feeds(seeded / "dynamic.onnx", 2, 0)["images"].shape == (2, 3, 416, 416)
    assert input_feeds(seeded / "dynamic.onnx", 1, 0, (64, 96))["images"].shape == (1, 3, 64, 96)
    with pytest.raises(FoldkitError, match="not a multiple"):
        input_feeds(seeded / "dynamic.onnx", 1, 0, 50)
    with pytest.raises(FoldkitError, match="fixed at 416x416"):
        input_feeds(seeded / "fixed.onnx", 1, 0, 64)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_triton_writes_dynamic_height_and_width(seeded, tmp_path, backend):
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed")
    from google.protobuf import text_format

    assert main(["triton", str(seeded / "dynamic.onnx"), "--repo", str(tmp_path), "--name", "tiny",
                 "--backend", backend]) == 0
    config = text_format.Parse((tmp_path / "tiny" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.backend == backend
    assert [list(i.dims) for i in config.input] == [[3, -1, -1]] and config.max_batch_size > 0
    assert [list(o.dims) for o in config.output] == [[255, -1, -1]] * 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import shared_real_dir

    real = shared_real_dir()
    if real is None:
        pytest.skip("../shared/real (pjreddie's trained yolov3-tiny and Darknet's photos; set FOLDKIT_SHARED) "
                    "is not present")
    folder = tmp_path_factory.mktemp("trained")
    weights = real / "yolov3-tiny.weights"
    for name, size in (("dynamic", "dynamic"), ("320", 320), ("608x416", (608, 416)), ("416", None)):
        export_darknet(real / "yolov3-tiny.cfg", folder / f"{name}.onnx", weights=weights, img_size=size)
    return folder, real


def test_trained_dynamic_model_equals_fixed_exports(trained):
    folder, _ = trained
    dynamic = ort.InferenceSession(str(folder / "dynamic.onnx"), providers=["CPUExecutionProvider"])
    for name, size in (("320", (320, 320)), ("608x416", (608, 416))):
        fixed = ort.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        x = np.random.default_rng(1).random((1, 3, *size), dtype=np.float32)
        for got, want in zip(dynamic.run(None, {"images": x}), fixed.run(None, {"images": x}), strict=True):
            assert got.shape == want.shape
            assert float(np.abs(got - want).max()) <= 1e-5 * float(np.abs(want).max())  # the same nodes


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def test_trained_detect_sizes_and_rect_letterbox(trained, tmp_path):
    folder, real = trained
    photos = [real / "photos"]

    def run(model, **settings):
        return {r.image.name: r.detections for r in detect_images(model, photos, None, **settings)}

    fixed = run(folder / "416.onnx")
    square = run(folder / "dynamic.onnx", img_size=416)
    for name, want in fixed.items():  # the dynamic model at 416 finds what the fixed one finds
        assert [d.class_id for d in square[name]] == [d.class_id for d in want]
        assert all(np.abs(np.subtract(a.box, b.box)).max() < 1e-3 for a, b in zip(square[name], want, strict=True))
    rect = run(folder / "dynamic.onnx", img_size=416, letterbox="rect")
    assert run(folder / "dynamic.onnx", img_size=416, letterbox="rect", batch=4) == rect  # grouped batches
    matched = [max((_iou(d.box, r.box) for r in rect[name] if r.class_id == d.class_id), default=0.0)
               for name, found in square.items() for d in found if d.score >= 0.5]
    assert len(matched) >= 10 and min(matched) >= 0.7 and float(np.median(matched)) >= 0.9
    at_320 = run(folder / "dynamic.onnx", img_size=320)  # a smaller input still finds the person, in image pixels
    person = max((d for d in square["person.jpg"] if d.class_id == 0), key=lambda d: d.score)
    assert max(_iou(person.box, d.box) for d in at_320["person.jpg"] if d.class_id == 0) >= 0.8


def test_exported_model_records_the_stride(seeded):
    from foldkit.onnxio.metadata import STRIDE_KEY, read_metadata

    meta = read_metadata(onnx.load(str(seeded / "fixed.onnx"), load_external_data=False))
    assert meta[STRIDE_KEY] == "32"


def test_input_size_of_a_model():
    from foldkit.onnxio.input_size import input_size
    from foldkit.onnxio.metadata import INPUT_SHAPE_KEY, STRIDE_KEY

    meta = {INPUT_SHAPE_KEY: "[1, 3, 100, 200]", STRIDE_KEY: "32"}
    assert input_size([1, 3, 64, 96], meta, "m").choose(None) == (64, 96)  # fixed: its own size, stride aside
    dynamic = input_size(["batch", 3, "height", "width"], meta, "m")
    assert dynamic.dynamic and dynamic.choose(None) == (100, 200)  # the exported size, proven by the export
    assert dynamic.choose(32) == (32, 32) and dynamic.choose((64, 320)) == (64, 320)
    with pytest.raises(FoldkitError, match="m: input size 64x100 is not a multiple of the network stride 32"):
        dynamic.choose((64, 100))
    with pytest.raises(FoldkitError, match="an input image of 3200000x3200000"):
        dynamic.choose(3_200_000)
    assert input_size([1, 3, "h", "w"], {STRIDE_KEY: "16x8"}, "m").choose((16, 8)) == (16, 8)
    with pytest.raises(FoldkitError, match="states no size"):
        input_size([1, 3, "h", "w"], {}, "m").choose(None)
    with pytest.raises(FoldkitError, match="fixes one of height and width"):
        input_size([1, 3, 64, "w"], {}, "m")
    with pytest.raises(FoldkitError, match="malformed foldkit.stride"):
        input_size([1, 3, "h", "w"], {STRIDE_KEY: "0"}, "m")


def test_quantize_calibrates_a_dynamic_model_at_its_exported_size(seeded):
    from foldkit.quantize.calibration import SyntheticCalibrationWarning, load_calibration, model_input

    name, shape = model_input(onnx.load(str(seeded / "dynamic.onnx")), "m")
    assert (name, shape) == ("images", (None, 3, 416, 416))
    with pytest.warns(SyntheticCalibrationWarning):
        data = load_calibration(shape, random_count=2, held_out=1)
    assert data.calibration.shape == (2, 3, 416, 416)


def test_triton_python_entry_runs_a_dynamic_detector_at_a_size_with_rect(seeded, tmp_path, capsys):
    """The entry records the size and letterbox; the served handler finds what ``foldkit detect`` finds with them."""
    import json

    from PIL import Image

    from foldkit.deploy.triton.served import TritonPythonModel

    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed")
    from google.protobuf import json_format, text_format

    assert main(["triton", str(seeded / "dynamic.onnx"), "--repo", str(tmp_path / "repo"), "--backend", "python",
                 "--img-size", "96", "--letterbox", "rect", "--name", "d"]) == 0
    config = text_format.Parse((tmp_path / "repo" / "d" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    assert (parameters["foldkit_img_size"], parameters["foldkit_letterbox"]) == ("96x96", "rect")
    served = TritonPythonModel()
    served.initialize({"model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
                       "model_repository": str(tmp_path / "repo" / "d"), "model_version": "1"})
    image = np.random.default_rng(5).integers(0, 256, (60, 100, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    encoded = np.frombuffer((tmp_path / "a.png").read_bytes(), np.uint8)
    answer = served.handler({"image": encoded, "conf": np.array([0.05], np.float32)})
    want = detect_images(seeded / "dynamic.onnx", [tmp_path / "a.png"], None, conf=0.05, img_size=96,
                         letterbox="rect")[0].detections[:answer["detections"].shape[0]]
    rows = answer["detections"][:int(answer["count"][0])]
    assert len(want) > 2 and len(rows) == len(want)
    assert np.allclose(rows[:, :4], [d.box for d in want], atol=1e-3) and list(rows[:, 5]) == [d.class_id for d in want]
    capsys.readouterr()
    for model, extra in (("fixed.onnx", ["--backend", "python", "--letterbox", "rect"]),
                         ("dynamic.onnx", ["--img-size", "96"])):  # a fixed model; the onnxruntime backend
        assert main(["triton", str(seeded / model), "--repo", str(tmp_path / "r2"), *extra]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
