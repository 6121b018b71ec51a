"""What ``foldkit triton`` writes, without a server: configs Triton's schema parses, the Python entry's handler."""

from __future__ import annotations

import os
import shutil

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from PIL import Image

from foldkit.cli import main
from foldkit.deploy.detect import detect_images
from foldkit.deploy.nms_graph import NmsSettings, append_nms
from foldkit.deploy.triton.handlers import DetectionHandler
from foldkit.deploy.triton.local_server import pytriton_server_dir, write_backend_directory
from foldkit.errors import FoldkitError

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed")


@pytest.fixture(scope="module")
def models(tiny_yolo, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    onnx.save(append_nms(onnx.load(tiny_yolo["decoded"]), NmsSettings(max_det=7, conf=0.3)), folder / "nms.onnx")
    shutil.copyfile(tiny_yolo["decoded"], folder / "decoded.onnx")
    return folder


def _config(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_python_entry_config_and_model_py(models, tmp_path, capsys):
    assert main(["triton", str(models / "nms.onnx"), "--repo", str(tmp_path), "--backend", "python"]) == 0
    config = _config(tmp_path / "nms" / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size == 0
    assert [(i.name, list(i.dims), i.optional) for i in config.input] == [
        ("image", [-1], False), ("conf", [1], True), ("iou", [1], True)]
    assert [(o.name, list(o.dims)) for o in config.output] == [("detections", [7, 6]), ("count", [1])]
    assert config.parameters["foldkit_handler"].string_value == "detections"
    model_py = (tmp_path / "nms" / "1" / "model.py").read_text()
    compile(model_py, "model.py", "exec")
    assert repr(str(os.path.dirname(os.path.dirname(os.path.abspath(__import__("foldkit").__file__))))) in model_py
    assert (tmp_path / "nms" / "1" / "model.onnx").read_bytes() == (models / "nms.onnx").read_bytes()

    assert main(["triton", str(models / "nms.onnx"), "--repo", str(tmp_path), "--name", "ort"]) == 0
    ort = _config(tmp_path / "ort" / "config.pbtxt")  # the thresholds are optional inputs with graph defaults
    assert [(i.name, i.optional) for i in ort.input] == [("images", False), ("conf", True), ("iou", True)]
    assert main(["triton", str(models / "decoded.onnx"), "--repo", str(tmp_path), "--backend", "python",
                 "--tensors", "--name", "t"]) == 0
    tensors = _config(tmp_path / "t" / "config.pbtxt")
    assert tensors.parameters["foldkit_handler"].string_value == "tensors"
    assert [(i.name, list(i.dims)) for i in tensors.input] == [("images", [-1, 3, 128, 128])]
    capsys.readouterr()
    assert main(["triton", str(models / "nms.onnx"), "--repo", str(tmp_path), "--tensors"]) == 2
    assert main(["triton", str(models / "nms.onnx"), "--repo", str(tmp_path), "--backend", "python",
                 "--name", "../out"]) == 2
    assert main(["triton", str(models / "nms.onnx"), "--repo", str(tmp_path), "--backend", "python",
                 "--kind", "gpu"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 3
    assert not (tmp_path.parent / "out").exists()


def test_detection_handler_equals_detect(models, tmp_path):
    """The Python entry's work, in process: encoded bytes in, foldkit detect's detections out."""
    rng = np.random.default_rng(5)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).resize((140, 100)).save(path)
    want = detect_images(models / "decoded.onnx", [path], conf=0.3, providers="cpu")[0].detections
    assert want
    for model in ("nms.onnx", "decoded.onnx"):
        handler = DetectionHandler(models / model, max_det=7)
        answer = handler({"image": np.frombuffer(path.read_bytes(), np.uint8), "conf": np.array([0.3], np.float32)})
        count = int(answer["count"][0])
        assert answer["detections"].shape == (7, 6) and count == min(7, len(want))
        rows = np.array([[*d.box, d.score, d.class_id] for d in want[:count]])
        np.testing.assert_allclose(answer["detections"][:count], rows, rtol=0, atol=1e-5 * 140)
        assert not answer["detections"][count:].any()
    with pytest.raises(FoldkitError, match="no format Pillow reads"):
        handler({"image": np.frombuffer(b"GIF89a but not really", np.uint8)})
    with pytest.raises(FoldkitError, match="iou must be"):
        handler({"image": np.frombuffer(path.read_bytes(), np.uint8), "iou": np.array([2.0], np.float32)})


def test_backend_directory_has_an_executable_stub(tmp_path):
    if pytriton_server_dir() is None:
        pytest.skip("nvidia-pytriton is not installed (pip install --no-deps nvidia-pytriton==0.7.0)")
    folder = write_backend_directory(tmp_path / "backends")
    stub = folder / "python" / "triton_python_backend_stub"
    assert os.access(stub, os.X_OK) and (folder / "python" / "libtriton_python.so").stat().st_size > 0
    with pytest.raises(FoldkitError, match="refusing to overwrite the input"):
        write_backend_directory(tmp_path / "backends", stub=stub)  # the stub would overwrite its own source
