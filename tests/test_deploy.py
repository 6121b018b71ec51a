"""Deployment: decoding and NMS on known boxes, letterboxing, providers, detect end to end, Triton."""

import json
import warnings

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from PIL import Image

from foldkit import FoldkitError, build_model, randomize_batchnorm
from foldkit.cli import main
from foldkit.darknet.head_decode import HeadSpec
from foldkit.darknet.weights import save_weights
from foldkit.deploy.letterbox import Letterbox, letterbox, unletterbox
from foldkit.deploy.yolo import decode_heads, nms, postprocess
from foldkit.onnxio.metadata import add_metadata
from foldkit.runtime import Predictor, ProviderWarning

SPEC = HeadSpec(anchors=((10, 14), (23, 27), (37, 58)), classes=3)


def _logit(p):
    return np.log(p / (1 - p))


def _head_with_boxes(boxes, size=64, grid=4):
    """Raw head logits containing (anchor, row, col, cx, cy, w, h, class, objectness) boxes, nothing else."""
    raw = np.full((1, 3 * 8, grid, grid), -20.0)
    stride = size / grid
    for a, row, col, cx, cy, w, h, cls, obj in boxes:
        base = a * 8
        raw[0, base + 0, row, col] = _logit(cx / stride - col)
        raw[0, base + 1, row, col] = _logit(cy / stride - row)
        raw[0, base + 2, row, col] = np.log(w / SPEC.anchors[a][0])
        raw[0, base + 3, row, col] = np.log(h / SPEC.anchors[a][1])
        raw[0, base + 4, row, col] = _logit(obj)
        raw[0, base + 5 + cls, row, col] = 8.0
    return raw.astype(np.float32)


IDENTITY = Letterbox.identity(64, 64)


def test_decoded_boxes_come_back_exactly():
    raw = _head_with_boxes([(1, 2, 1, 20.8, 41.6, 30.0, 20.0, 2, 0.95), (0, 0, 3, 55.0, 7.0, 8.0, 9.0, 1, 0.9)])
    decoded = decode_heads([raw], [SPEC], (64, 64))
    found = postprocess(decoded, [IDENTITY], conf=0.5, iou=0.45)[0]
    assert len(found) == 2
    by_class = {d.class_id: d.box for d in found}
    np.testing.assert_allclose(by_class[2], (20.8 - 15, 41.6 - 10, 20.8 + 15, 41.6 + 10), atol=1e-4 * 64)
    np.testing.assert_allclose(by_class[1], (51.0, 2.5, 59.0, 11.5), atol=1e-4 * 64)


def test_duplicates_suppressed_per_class_other_classes_kept():
    raw = _head_with_boxes([
        (1, 2, 1, 20.8, 41.6, 30.0, 20.0, 2, 0.95),
        (2, 2, 1, 21.0, 41.0, 31.0, 21.0, 2, 0.80),  # same class, IoU ≈ 0.9: suppressed
        (0, 2, 1, 20.8, 41.6, 30.0, 20.0, 0, 0.90),  # same place, another class: kept
    ])
    found = postprocess(decode_heads([raw], [SPEC], (64, 64)), [IDENTITY], conf=0.5, iou=0.45)[0]
    assert sorted((d.class_id, round(d.score, 2)) for d in found) == [(0, 0.9), (2, 0.95)]


def test_nms_is_greedy():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10], [20, 20, 30, 30]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # 0 suppresses 1; 2 overlaps 0 by 0.67 → suppressed too (greedy compares with kept boxes only)
    assert nms(boxes, scores, np.zeros(4, int), 0.5).tolist() == [0, 3]
    assert nms(boxes, scores, np.zeros(4, int), 0.7).tolist() == [0, 2, 3]  # 1 vs 0: 0.82 > 0.7; 2 vs 0: 0.67


@pytest.mark.parametrize("resize", ["darknet", "pil"])
def test_letterbox_round_trip(resize):
    image = (np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)
    tensor, info = letterbox(image, (64, 64), resize)
    assert tensor.shape == (1, 3, 64, 64) and tensor.dtype == np.float32 and info.resize == resize
    assert (info.offset_x, info.offset_y) == (0, 8) and info.scale_x == info.scale_y == pytest.approx(64 / 120)
    assert np.all(tensor[0, :, :8] == 0.5) and np.all(tensor[0, :, -8:] == 0.5)  # gray bands
    assert not np.any(tensor[0, :, 8:-8] == 0.5)  # the image fills the rest (no pixel of it is exactly 0.5 here)
    original = np.array([[12.0, 30.0, 100.0, 80.0]])
    in_input = original * np.array([info.scale_x, info.scale_y] * 2) + np.array([info.offset_x, info.offset_y] * 2)
    np.testing.assert_allclose(unletterbox(in_input, info), original, atol=1e-9)


def test_darknet_box_correction_uses_the_half_pixel_offset_and_per_axis_scales():
    """correct_yolo_boxes: offset (net − new)/2 as a real number though the image sits at its integer half,
    and each axis scaled by its own integer new size (47/90 ≠ 64/121)."""
    _, info = letterbox(np.zeros((90, 121, 3), np.uint8), (64, 64))
    assert (info.offset_x, info.offset_y) == (0.0, 8.5)
    assert (info.scale_x, info.scale_y) == (64 / 121, 47 / 90)
    _, pil = letterbox(np.zeros((90, 121, 3), np.uint8), (64, 64), "pil")
    assert (pil.offset_x, pil.offset_y) == (0, 8)  # PIL's image is mapped back from where it was placed


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy")
    model = build_model("yolov3-tiny", 64, seed=4)
    randomize_batchnorm(model, (2, 3, 64, 64), seed=4)
    save_weights(model, folder / "w.weights")
    for name, extra in (("raw", []), ("decoded", ["--decode"]), ("fixed", ["--batch", "1"])):
        batch = [] if name == "fixed" else ["--batch", "dynamic"]
        assert main(["export", "yolov3-tiny", "--weights", str(folder / "w.weights"), "--img-size", "64",
                     "-o", str(folder / f"{name}.onnx"), *batch, *extra]) == 0
    rng = np.random.default_rng(1)
    for i, shape in enumerate([(90, 120, 3), (64, 48, 3), (50, 50, 3)]):
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def _detections(folder, out):
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


def test_detect_end_to_end_raw_and_decoded_agree(exported, tmp_path):
    (tmp_path / "coco.names").write_text("\n".join(f"class{i}" for i in range(80)))
    runs = {}
    for name in ("raw", "decoded"):
        out = tmp_path / name
        assert main(["detect", str(exported / f"{name}.onnx"), str(exported), "-o", str(out), "--conf", "0.6",
                     "--names", str(tmp_path / "coco.names"), "--batch", "2"]) == 0
        runs[name] = _detections(exported, out)
        assert sorted(p.name for p in out.glob("*.jpg")) == ["img0.jpg", "img1.jpg", "img2.jpg"]
        assert Image.open(out / "img0.jpg").size == (120, 90)
    assert runs["raw"].keys() == runs["decoded"].keys() == {"img0", "img1", "img2"}
    total = 0
    for stem, record in runs["raw"].items():
        other = runs["decoded"][stem]["detections"]
        assert record["width"] > 0 and record["provider"] == "CPUExecutionProvider"
        assert len(record["detections"]) == len(other)
        total += len(other)
        for a, b in zip(record["detections"], other, strict=True):
            assert a["class_id"] == b["class_id"] and a["label"] == f"class{a['class_id']}"
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)
            np.testing.assert_allclose(a["box"], b["box"], atol=1e-2)
            assert 0 <= a["box"][0] <= a["box"][2] <= record["width"]
    assert total > 0


def test_provider_selection_and_fallback(exported):
    import onnxruntime as ort

    auto = Predictor(exported / "raw.onnx")
    assert auto.provider in ort.get_available_providers()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.warns(ProviderWarning, match="'cuda' is not available"):
            fallback = Predictor(exported / "raw.onnx", providers=["cuda"])
        assert fallback.provider == "CPUExecutionProvider"
        with pytest.raises(FoldkitError, match="'cuda' is not available"):
            Predictor(exported / "raw.onnx", providers=["cuda"], strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Predictor(exported / "raw.onnx", providers=["cpu"], strict=True).provider == "CPUExecutionProvider"


def test_offline_optimized_model_is_refused_on_another_provider(exported, tmp_path):
    predictor = Predictor(exported / "raw.onnx", providers=["cpu"])
    predictor.save_optimized(tmp_path / "opt.onnx")
    optimized = onnx.load(str(tmp_path / "opt.onnx"))
    props = {p.key: p.value for p in optimized.metadata_props}
    assert props["foldkit.optimized_for"] == "CPUExecutionProvider"
    assert Predictor(tmp_path / "opt.onnx", providers=["cpu"]).provider == "CPUExecutionProvider"
    add_metadata(optimized, {"foldkit.optimized_for": "CUDAExecutionProvider"})
    onnx.save(optimized, str(tmp_path / "cuda-opt.onnx"))
    with pytest.raises(FoldkitError, match="optimized offline by ONNX Runtime for CUDAExecutionProvider"):
        Predictor(tmp_path / "cuda-opt.onnx", providers=["cpu"])


def test_detect_strict_provider_exits_2(exported, tmp_path, capsys):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    assert main(["detect", str(exported / "raw.onnx"), str(exported / "img0.png"), "-o", str(tmp_path),
                 "--providers", "cuda", "--strict"]) == 2
    assert "not available" in capsys.readouterr().err


def _parse_config(path):
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_triton_repository_dynamic_and_fixed_batch(exported, tmp_path):
    assert main(["triton", str(exported / "raw.onnx"), "--repo", str(tmp_path), "--name", "tiny",
                 "--max-batch", "16", "--instances", "2"]) == 0
    config = _parse_config(tmp_path / "tiny" / "config.pbtxt")
    assert config.backend == "onnxruntime" and config.max_batch_size == 16 and config.HasField("dynamic_batching")
    assert [(i.name, list(i.dims)) for i in config.input] == [("images", [3, 64, 64])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("head0", [255, 2, 2]), ("head1", [255, 4, 4])]
    assert config.input[0].data_type == 11  # TYPE_FP32
    assert config.instance_group[0].count == 2
    assert (tmp_path / "tiny" / "1" / "model.onnx").read_bytes() == (exported / "raw.onnx").read_bytes()

    assert main(["triton", str(exported / "fixed.onnx"), "--repo", str(tmp_path), "--kind", "gpu"]) == 0
    fixed = _parse_config(tmp_path / "fixed" / "config.pbtxt")
    assert fixed.max_batch_size == 0 and not fixed.HasField("dynamic_batching")
    assert list(fixed.input[0].dims) == [1, 3, 64, 64] and list(fixed.output[1].dims) == [1, 255, 4, 4]
    assert fixed.instance_group[0].kind == fixed.instance_group[0].KIND_GPU


def test_model_without_metadata_needs_explicit_values(exported, tmp_path, capsys):
    bare = onnx.load(str(exported / "raw.onnx"))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    image = str(exported / "img0.png")
    assert main(["detect", str(tmp_path / "bare.onnx"), image, "-o", str(tmp_path / "o")]) == 2
    assert "no YOLO metadata" in capsys.readouterr().err
    anchors = "81,82,135,169,344,319;10,14,23,27,37,58"
    assert main(["detect", str(tmp_path / "bare.onnx"), image, "-o", str(tmp_path / "o"), "--classes", "80",
                 "--anchors", anchors, "--conf", "0.5"]) == 0
    with_meta = tmp_path / "m"
    assert main(["detect", str(exported / "raw.onnx"), image, "-o", str(with_meta), "--conf", "0.5"]) == 0
    found = json.loads((tmp_path / "o" / "img0.json").read_text())["detections"]
    assert found and found == json.loads((with_meta / "img0.json").read_text())["detections"]


@pytest.mark.parametrize("case,words", [
    ("unreadable", "cannot read the image"),
    ("not-yolo", "is not a YOLO head with 3 anchors × (5 + 20)"),
    ("missing", "no such image or folder"),
])
def test_detect_bad_input(exported, tmp_path, capsys, case, words):
    (tmp_path / "broken.jpg").write_text("not an image")
    args = ["detect", str(exported / "raw.onnx"), str(tmp_path / "broken.jpg"), "-o", str(tmp_path / "o")]
    if case == "not-yolo":
        args = ["detect", str(exported / "raw.onnx"), str(exported / "img0.png"), "-o", str(tmp_path / "o"),
                "--classes", "20", "--anchors", "1,2,3,4,5,6;1,2,3,4,5,6"]
    elif case == "missing":
        args[2] = str(tmp_path / "nowhere.png")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1, err


def test_model_exported_from_python_detects_without_classes_or_anchors(exported, tmp_path):
    """foldkit.export_onnx writes the head metadata itself: detect needs no --classes/--anchors for it."""
    from foldkit import export_onnx
    from foldkit.darknet.weights import load_weights

    model = build_model("yolov3-tiny", 64)
    load_weights(model, exported / "w.weights")
    export_onnx(model, tmp_path / "py.onnx", input_shape=(1, 3, 64, 64))
    out = tmp_path / "out"
    assert main(["detect", str(tmp_path / "py.onnx"), str(exported / "img0.png"), "-o", str(out),
                 "--conf", "0.5"]) == 0
    cli_out = tmp_path / "cli"
    assert main(["detect", str(exported / "fixed.onnx"), str(exported / "img0.png"), "-o", str(cli_out),
                 "--conf", "0.5"]) == 0
    python_boxes = json.loads((out / "img0.json").read_text())["detections"]
    cli_boxes = json.loads((cli_out / "img0.json").read_text())["detections"]
    assert python_boxes and len(python_boxes) == len(cli_boxes)
    for ours, theirs in zip(python_boxes, cli_boxes, strict=True):
        assert ours["label"] == theirs["label"]
        np.testing.assert_allclose(ours["box"], theirs["box"], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("heads", ["{not json", '[{"classes": 2}]', "[1]", "[]",
                                   '[{"classes": 3, "anchors": [[10, "nan"]]}]'])
def test_malformed_head_metadata_is_one_line_exit_2(exported, tmp_path, capsys, heads):
    model = onnx.load(str(exported / "raw.onnx"))
    add_metadata(model, {"foldkit.yolo_heads": heads})
    onnx.save(model, str(tmp_path / "bad.onnx"))
    assert main(["detect", str(tmp_path / "bad.onnx"), str(exported / "img0.png"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "foldkit.yolo_heads" in err and err.count("\n") == 1 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("existing", [False, True])
def test_an_image_named_twice_is_detected_once(exported, tmp_path, existing):
    out = tmp_path / "out"
    if existing:
        out.mkdir()
    image = str(exported / "img0.png")
    assert main(["detect", str(exported / "raw.onnx"), image, image, "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["img0.jpg", "img0.json"]


def test_resize_option_reaches_the_letterbox_and_the_json(exported, tmp_path):
    """--resize pil changes the input (so the scores) and is recorded; the default is Darknet's letterbox."""
    records = {}
    for resize in ("darknet", "pil"):
        args = [] if resize == "darknet" else ["--resize", "pil"]
        out = tmp_path / resize
        assert main(["detect", str(exported / "raw.onnx"), str(exported / "img0.png"), "-o", str(out),
                     "--conf", "0.4", *args]) == 0
        records[resize] = json.loads((out / "img0.json").read_text())
        assert records[resize]["resize"] == resize
    scores = {r: sorted(d["score"] for d in records[r]["detections"]) for r in records}
    assert scores["darknet"] and scores["pil"] and scores["darknet"] != scores["pil"]


@pytest.mark.parametrize("spec", [
    HeadSpec(anchors=((10, 14), (23, 27)), classes=3),
    HeadSpec(anchors=((10, 14), (23, 27)), classes=3, scale_x_y=1.05),
    HeadSpec(anchors=((10, 14), (23, 27)), classes=3, scale_x_y=2.0, new_coords=True),
    HeadSpec(anchors=((1.0, 1.5), (2.5, 2.0)), classes=3, kind="region"),
    HeadSpec(anchors=((1.0, 1.5), (2.5, 2.0)), classes=3, kind="region", softmax=False),
], ids=["yolo", "scale_x_y", "new_coords", "region", "region-raw-classes"])
def test_the_one_decode_formula_gives_the_same_boxes_in_numpy_and_torch(spec):
    """decode_head through NumpyOps (detect) and TorchOps (export --decode): the primitives each library spells
    differently give the same numbers, for every head variant."""
    import torch

    from foldkit.darknet.decode import TorchOps
    from foldkit.darknet.head_decode import decode_head
    from foldkit.deploy.yolo import NumpyOps

    raw = np.random.default_rng(5).normal(size=(2, len(spec.anchors) * spec.depth, 4, 6))
    anchors = np.asarray(spec.anchors).reshape(1, -1, 1, 1, 2)
    ours = decode_head(raw, spec, anchors, (64, 96), NumpyOps())
    theirs = decode_head(torch.from_numpy(raw), spec, torch.from_numpy(anchors), (64, 96), TorchOps()).numpy()
    assert ours.shape == (2, len(spec.anchors) * 24, spec.depth)
    np.testing.assert_allclose(theirs, ours, rtol=1e-12, atol=1e-12)
