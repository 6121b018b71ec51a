"""foldkit optimize: every candidate judged and timed, the fastest passing one written with its record."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import pytest
from PIL import Image

from foldkit.cli import main
from foldkit.darknet.export import export_darknet
from foldkit.onnxio.metadata import DEPLOYMENT_KEY, read_metadata
from foldkit.optimize import MODEL_FILE, RECORD_FILE, OptimizeOptions, optimize_model
from foldkit.runtime import OPENVINO, Predictor, ProviderWarning, openvino_available
from foldkit.runtime.deployment import CpuSignature, DeploymentRecord


@pytest.fixture(scope="module")
def unfolded(tmp_path_factory):
    path = tmp_path_factory.mktemp("optimize") / "tiny.onnx"
    export_darknet("yolov3-tiny", path, img_size=64, fold=False)
    return path


def _options(**kwargs) -> OptimizeOptions:
    return OptimizeOptions(calib_random=4, budget_s=0.0, **kwargs)


def test_the_fastest_passing_candidate_is_written_with_its_deployment_record(unfolded, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random calibration says it is for smoke tests only
        report = optimize_model(unfolded, tmp_path / "out", _options(min_snr=20.0))
    ran = [r for r in report.results if r.skipped is None]
    assert {"ort-fp32", "ort-int8"} <= {r.name for r in ran}
    if openvino_available():  # the int8 model in OpenVINO's fused form is a candidate of its own
        assert {"openvino-int8", "openvino-int8-fused"} <= {r.name for r in ran}
    for row in ran:
        assert row.p50_ms is not None and row.p50_ms > 0 and row.rounds >= 3 and row.create_ms is not None
        assert row.passed == (row.min_snr_db is not None and row.min_snr_db >= 20.0)
    fp32 = report.result("ort-fp32")
    assert fp32 is not None and fp32.passed and fp32.min_snr_db is not None and fp32.min_snr_db > 80  # a fold only
    chosen = report.result(report.chosen or "")
    assert chosen is not None and chosen.passed
    assert chosen.p50_ms == min(r.p50_ms for r in ran if r.passed)
    model = onnx.load(str(tmp_path / "out" / MODEL_FILE))
    record = DeploymentRecord.from_json(read_metadata(model)[DEPLOYMENT_KEY], "model")
    assert record.candidate == report.chosen and len(record.table) == len(report.results)
    assert json.loads((tmp_path / "out" / RECORD_FILE).read_text())["candidate"] == report.chosen
    assert not [n for n in model.graph.node if n.op_type == "BatchNormalization"]


def test_nothing_that_fails_the_gate_is_chosen_and_then_nothing_is_written(unfolded, tmp_path, capsys):
    code = main(["optimize", str(unfolded), "-o", str(tmp_path / "out"), "--calib-random", "4", "--min-snr", "999",
                 "--budget-s", "0", "--candidates", "ort-fp32,openvino-fp32"])
    out = capsys.readouterr().out
    assert code == 1 and "nothing passes the gate" in out and "FAILS: SNR" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed (pip install 'foldkit[openvino]')")
def test_the_predictor_runs_the_model_as_its_record_says(unfolded, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = optimize_model(unfolded, tmp_path / "out", _options(candidates=["openvino-fp32"]))
    assert report.chosen == "openvino-fp32"
    predictor = Predictor(tmp_path / "out" / MODEL_FILE)
    assert predictor.provider == OPENVINO and predictor.record()["runtime"] == "openvino"
    assert Predictor(tmp_path / "out" / MODEL_FILE, providers="cpu").provider == "CPUExecutionProvider"


def _cpu_has_bf16() -> bool:
    """The kernel's word (/proc/cpuinfo), not OpenVINO's: AMX or AVX-512 BF16."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


@pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed (pip install 'foldkit[openvino]')")
def test_the_bf16_candidate_runs_bf16_where_the_cpu_has_it_and_says_why_not_elsewhere(unfolded, tmp_path):
    """On a CPU with AMX or AVX-512 BF16 the bf16 candidate runs, OpenVINO's own record says its convolutions ran
    in bf16, and its SNR is bf16's, far below float32's; elsewhere it is listed as not runnable, with the reason."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = optimize_model(unfolded, tmp_path / "out", _options(candidates=["ort-fp32", "openvino-bf16"],
                                                                     min_snr=0.0))
    fp32, bf16 = report.result("ort-fp32"), report.result("openvino-bf16")
    assert fp32 is not None and bf16 is not None and fp32.min_snr_db is not None
    if _cpu_has_bf16():
        assert bf16.skipped is None and bf16.min_snr_db is not None
        assert bf16.record["inference_precision"] == "bf16" and "bf16" in bf16.record["convolution_precisions"]
        assert bf16.min_snr_db < fp32.min_snr_db - 20  # bf16's 8-bit mantissa, not float32 under another name
    else:
        assert bf16.skipped is not None and "no bf16 instructions" in bf16.skipped and bf16.p50_ms is None


def test_a_record_made_on_another_cpu_is_followed_with_a_warning(unfolded, tmp_path):
    other = CpuSignature("Intel(R) Xeon(R) Platinum 8480+", ("avx2", "avx512f", "avx512_vnni", "amx_int8"))
    assert CpuSignature.here().differs_from(CpuSignature.here()) is None
    assert "measured on Intel(R) Xeon(R) Platinum 8480+" in (CpuSignature.here().differs_from(other) or "")
    model = onnx.load(str(unfolded))
    from foldkit.onnxio.metadata import add_metadata

    record = DeploymentRecord(backend="CPUExecutionProvider", candidate="ort-fp32", cpu=other)
    add_metadata(model, {DEPLOYMENT_KEY: record.to_json()})
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.warns(ProviderWarning, match="run `foldkit optimize` again on this machine"):
        Predictor(tmp_path / "m.onnx")


def test_a_malformed_record_is_one_line_exit_2(unfolded, tmp_path, capsys):
    model = onnx.load(str(unfolded))
    from foldkit.onnxio.metadata import add_metadata

    record = json.loads(DeploymentRecord(backend="CPUExecutionProvider").to_json()) | {"threads": -2}
    add_metadata(model, {DEPLOYMENT_KEY: json.dumps(record)})
    onnx.save(model, str(tmp_path / "m.onnx"))
    Image.new("RGB", (32, 24), (90, 120, 200)).save(tmp_path / "a.png")
    code = main(["detect", str(tmp_path / "m.onnx"), str(tmp_path / "a.png"), "-o", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and "malformed deployment record (threads must be a positive integer" in err
    assert err.count("\n") == 1
