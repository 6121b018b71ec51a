"""A real Triton server (nvidia-pytriton's tritonserver 2.51, CPU) serving what ``foldkit triton`` writes.

The server is started once for the module on 127.0.0.1, with explicit model control so each test
loads only the entry it needs, and stopped by the fixture. It has no onnxruntime or OpenVINO backend:
those entries must fail for exactly that reason. The Python-backend entries must answer, over
HTTP through tritonclient, what ``foldkit detect`` answers.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from foldkit.cli import main
from foldkit.deploy.detect import detect_images
from foldkit.deploy.nms_graph import NmsSettings, append_nms
from foldkit.deploy.triton.local_server import (
    LocalServer,
    pytriton_server_dir,
    server_environment,
    write_backend_directory,
)
from foldkit.runtime import create_session

SIZE = 128  # conftest.tiny_yolo's input size
START_TIMEOUT_S = 90  # the server itself starts in about a second; this bounds a broken install
LOAD_TIMEOUT_S = 120  # one Python-backend model: the stub starts Python and imports onnxruntime and foldkit

http = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402


def _missing_libraries(program: Path, env: dict[str, str]) -> list[str]:
    """Shared libraries ``program`` needs that the loader cannot find (libpython3.X for the stub, say)."""
    if shutil.which("ldd") is None:
        return []
    listing = subprocess.run(["ldd", str(program)], capture_output=True, text=True, env=env, timeout=30).stdout
    return [line.split()[0] for line in listing.splitlines() if "not found" in line]


@pytest.fixture(scope="module")
def models(tiny_yolo, tmp_path_factory) -> dict[str, Path]:
    """conftest's yolov3-tiny decoded in the graph, and that graph with NMS.

    ``foldkit detect`` on the decoded model is the numpy path (decoding in the graph equals the numpy
    decoding of the raw heads: tests/test_nms_graph.py).
    """
    path = tmp_path_factory.mktemp("models") / "nms.onnx"
    onnx.save(append_nms(onnx.load(tiny_yolo["decoded"]), NmsSettings(max_det=20, conf=0.3)), path)
    return {"decoded": tiny_yolo["decoded"], "nms": path}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    paths = []
    for i, (h, w) in enumerate([(96, 150), (140, 80)]):
        small = Image.fromarray(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8))
        small.resize((w, h)).save(folder / f"photo{i}.jpg", quality=90)
        paths.append(folder / f"photo{i}.jpg")
    return paths


@pytest.fixture(scope="module")
def repo(tmp_path_factory, models) -> Path:
    """Every entry the tests load, written by the CLI."""
    repo = tmp_path_factory.mktemp("repo")
    for args in (["triton", str(models["nms"]), "--name", "nms_ort"],
                 ["triton", str(models["nms"]), "--name", "nms_ov", "--backend", "openvino"],
                 ["triton", str(models["nms"]), "--name", "nms_py", "--backend", "python"],
                 ["triton", str(models["decoded"]), "--name", "numpy_py", "--backend", "python"],
                 ["triton", str(models["decoded"]), "--name", "tensors_py", "--backend", "python", "--tensors"]):
        assert main([*args, "--repo", str(repo)]) == 0
    return repo


@pytest.fixture(scope="module")
def server(tmp_path_factory, repo):
    """tritonserver on free 127.0.0.1 ports; yields an HTTP client; stopped (its stubs with it) afterwards."""
    server_dir = pytriton_server_dir()
    if server_dir is None:
        pytest.skip("nvidia-pytriton is not installed (pip install --no-deps nvidia-pytriton==0.7.0)")
    backends = write_backend_directory(tmp_path_factory.mktemp("backends"))
    missing = _missing_libraries(backends / "python" / "triton_python_backend_stub", server_environment(server_dir))
    if missing:
        pytest.skip(f"the Python backend stub cannot start here: {', '.join(missing)} not found")
    log = tmp_path_factory.mktemp("log") / "tritonserver.log"
    with LocalServer(repo, backends, log=log, start_timeout=START_TIMEOUT_S) as running:
        client = http.InferenceServerClient(running.url, network_timeout=LOAD_TIMEOUT_S)
        try:
            yield client
        finally:
            client.close()


def _detect(client, name: str, image: Path, thresholds: tuple[float, float] | None = None) -> tuple[np.ndarray, int]:
    """One image through the entry; ``thresholds`` (conf, iou) sent as inputs, else the entry's defaults."""
    data = np.frombuffer(image.read_bytes(), np.uint8)
    inputs = [http.InferInput("image", [len(data)], "UINT8")]
    inputs[0].set_data_from_numpy(data)
    for key, value in zip(("conf", "iou"), thresholds or (), strict=False):
        inputs.append(http.InferInput(key, [1], "FP32"))
        inputs[-1].set_data_from_numpy(np.array([value], np.float32))
    result = client.infer(name, inputs)
    return result.as_numpy("detections"), int(result.as_numpy("count")[0])


def _assert_served_equals_detect(client, name: str, model: Path, images: list[Path], conf: float, iou: float,
                                 send: bool) -> None:
    """The entry's rows equal ``foldkit detect``'s detections: classes exactly, scores and boxes within 1e-5."""
    want = detect_images(model, images, conf=conf, iou=iou, providers="cpu")
    assert sum(len(r.detections) for r in want) >= 2  # not a comparison of empty lists
    for image, expected in zip(images, want, strict=True):
        rows, count = _detect(client, name, image, (conf, iou) if send else None)
        reference = np.array([[*d.box, d.score, d.class_id] for d in expected.detections]).reshape(-1, 6)[:len(rows)]
        assert count == len(reference) and not rows[count:].any()
        np.testing.assert_array_equal(rows[:count, 5], reference[:, 5])
        np.testing.assert_allclose(rows[:count, 4], reference[:, 4], rtol=0, atol=1e-5)
        np.testing.assert_allclose(rows[:count, :4], reference[:, :4], rtol=0, atol=1e-5 * max(Image.open(image).size))


@pytest.mark.parametrize(("name", "backend"), [("nms_ort", "onnxruntime"), ("nms_ov", "openvino")])
def test_entries_for_absent_backends_fail_only_for_the_missing_backend(server, name, backend):
    """The server parses the whole config (a bad field fails first) and stops only at the backend's library."""
    with pytest.raises(InferenceServerException) as failure:
        server.load_model(name)
    assert f"unable to find backend library for backend '{backend}'" in str(failure.value)


def test_python_entry_with_nms_graph_equals_foldkit_detect(server, models, images):
    """Encoded JPEG bytes in, foldkit detect's detections (on the raw model, numpy NMS) out; thresholds as inputs."""
    server.load_model("nms_py")
    _assert_served_equals_detect(server, "nms_py", models["decoded"], images, 0.3, 0.45, send=False)  # graph defaults
    _assert_served_equals_detect(server, "nms_py", models["decoded"], images, 0.5, 0.3, send=True)
    with pytest.raises(InferenceServerException, match="no format Pillow reads"):
        _detect(server, "nms_py", models["decoded"])  # an ONNX file is not an image
    with pytest.raises(InferenceServerException, match="conf must be"):
        _detect(server, "nms_py", images[0], (1.5, 0.45))


@pytest.mark.slow
def test_python_entry_with_numpy_nms_equals_foldkit_detect(server, models, images):
    server.load_model("numpy_py")
    _assert_served_equals_detect(server, "numpy_py", models["decoded"], images, 0.25, 0.45, send=False)


@pytest.mark.slow
def test_python_entry_serves_tensors_exactly(server, models):
    server.load_model("tensors_py")
    x = np.random.default_rng(0).random((1, 3, SIZE, SIZE), dtype=np.float32)
    feed = http.InferInput("images", list(x.shape), "FP32")
    feed.set_data_from_numpy(x)
    result = server.infer("tensors_py", [feed])
    session = create_session(models["decoded"], providers=["CPUExecutionProvider"])
    for output, expected in zip(session.get_outputs(), session.run(None, {"images": x}), strict=True):
        np.testing.assert_array_equal(result.as_numpy(output.name), expected)
