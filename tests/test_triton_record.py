"""``foldkit triton`` serves a model the way ``foldkit optimize`` measured it: its deployment record, followed.

Configs are parsed with Triton's own schema (tritonclient's ``model_config_pb2``); the Python-backend
handler is run here; a real server loading the OpenVINO entry is in tests/test_triton_server.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from google.protobuf import text_format

from foldkit.cli import main
from foldkit.deploy.triton.handlers import TensorHandler
from foldkit.onnxio.metadata import DEPLOYMENT_KEY, add_metadata
from foldkit.runtime import create_session
from foldkit.runtime.deployment import CpuSignature, DeploymentRecord, RecordWarning
from foldkit.runtime.openvino import OPENVINO, openvino_available

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed")
needs_openvino = pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed")
AMX_XEON = CpuSignature("Intel(R) Xeon(R) Platinum 8480+", ("avx2", "avx512f", "avx512_vnni", "avx512_bf16",
                                                             "amx_bf16", "amx_int8", "amx_tile"))


def _with_record(source, target, **fields) -> str:
    model = onnx.load(str(source))
    add_metadata(model, {DEPLOYMENT_KEY: DeploymentRecord(candidate="measured", **fields).to_json()})
    onnx.save(model, str(target))
    return str(target)


def _config(repo, name):
    return text_format.Parse((repo / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def _parameters(config) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def test_an_ort_record_sets_the_graph_level_and_threads(tiny_yolo, tmp_path):
    model = _with_record(tiny_yolo["raw"], tmp_path / "m.onnx", backend="CPUExecutionProvider", opt_level="extended",
                         threads=3)
    assert main(["triton", model, "--repo", str(tmp_path / "repo"), "--name", "m"]) == 0
    config = _config(tmp_path / "repo", "m")
    assert config.backend == "onnxruntime" and config.optimization.graph.level == 1  # the backend's "extended"
    assert _parameters(config) == {"intra_op_thread_count": "3"}
    plain = tmp_path / "plain"
    assert main(["triton", str(tiny_yolo["raw"]), "--repo", str(plain), "--name", "m"]) == 0
    assert not _config(plain, "m").HasField("optimization") and not _config(plain, "m").parameters


def test_a_gpu_record_gets_a_gpu_instance_group_and_tensorrt(tiny_yolo, tmp_path):
    model = _with_record(tiny_yolo["raw"], tmp_path / "m.onnx", backend="TensorrtExecutionProvider")
    assert main(["triton", model, "--repo", str(tmp_path / "repo"), "--name", "m"]) == 0
    config = _config(tmp_path / "repo", "m")
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert [a.name for a in config.optimization.execution_accelerators.gpu_execution_accelerator] == ["tensorrt"]
    assert not config.optimization.HasField("graph")  # measured at "all": the backend's default


def test_an_openvino_bf16_record_writes_an_openvino_entry(tiny_yolo, tmp_path, capsys):
    model = _with_record(tiny_yolo["raw"], tmp_path / "m.onnx", backend=OPENVINO, precision="bf16", threads=2,
                         cpu=AMX_XEON)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RecordWarning)  # bf16 is expressible: nothing to warn about
        assert main(["triton", model, "--repo", str(tmp_path / "repo"), "--name", "m"]) == 0
    assert "wrote the openvino backend's entry" in capsys.readouterr().out
    config = _config(tmp_path / "repo", "m")
    assert config.backend == "openvino" and config.default_model_filename == "model.onnx"
    assert _parameters(config) == {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": "2",
                                   "HINT_BF16": "YES"}
    assert config.max_batch_size == 8 and [list(i.dims) for i in config.input] == [[3, 128, 128]]
    assert (tmp_path / "repo" / "m" / "1" / "model.onnx").read_bytes() == (tmp_path / "m.onnx").read_bytes()


def test_what_triton_cannot_follow_is_said(tiny_yolo, tmp_path, capsys):
    fp32_on_amx = _with_record(tiny_yolo["raw"], tmp_path / "a.onnx", backend=OPENVINO, precision="fp32", cpu=AMX_XEON)
    assert main(["triton", fp32_on_amx, "--repo", str(tmp_path / "repo")]) == 0
    err = capsys.readouterr().err
    assert "measured with OpenVINO at fp32, which Triton's OpenVINO backend cannot ask for" in err
    assert "HINT_BF16" not in _parameters(_config(tmp_path / "repo", "a"))
    fp32_here = _with_record(tiny_yolo["raw"], tmp_path / "b.onnx", backend=OPENVINO, precision="fp32",
                             cpu=CpuSignature("AMD EPYC", ("avx2",)))  # OpenVINO's default is f32 there: no warning
    assert main(["triton", fp32_here, "--repo", str(tmp_path / "repo")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["triton", fp32_here, "--repo", str(tmp_path / "repo"), "--name", "ort", "--backend",
                 "onnxruntime"]) == 0
    assert "was measured on OpenVINO; the onnxruntime backend will not run it as measured" in capsys.readouterr().err
    assert _config(tmp_path / "repo", "ort").backend == "onnxruntime"


def test_options_that_do_not_apply_to_a_backend_are_refused(tiny_yolo, tmp_path, capsys):
    for extra, message in ((["--backend", "openvino", "--kind", "gpu"], "openvino backend runs on the CPU"),
                           (["--backend", "onnxruntime", "--tensors"], "--tensors applies to --backend python")):
        assert main(["triton", str(tiny_yolo["raw"]), "--repo", str(tmp_path / "r"), *extra]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@needs_openvino
def test_the_python_entry_runs_the_recorded_runtime(tiny_yolo, tmp_path):
    model = _with_record(tiny_yolo["raw"], tmp_path / "m.onnx", backend=OPENVINO, precision="fp32", threads=1)
    handler = TensorHandler(tmp_path / "m.onnx")
    assert handler.backend.name == OPENVINO and handler.backend.record()["threads"] == 1
    assert TensorHandler(tiny_yolo["raw"]).backend.name == "CPUExecutionProvider"  # no record: ORT on the CPU
    x = np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32)
    served = handler({"images": x})
    session = create_session(model, providers=["CPUExecutionProvider"])
    for output, expected in zip(session.get_outputs(), session.run(None, {"images": x}), strict=True):
        # fp32 in both runtimes: their difference is float32 rounding, far below 1e-3 of the head's range
        assert np.abs(served[output.name] - expected).max() <= 1e-3 * np.abs(expected).max()
