"""``foldkit quantize`` and ``foldkit check --min-snr`` from the command line: exit codes and files."""

from __future__ import annotations

import json

import onnx
import pytest

from foldkit.cli import main


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quantize-cli")
    path = folder / "tiny.onnx"
    assert main(["export", "yolov3-tiny", "-o", str(path), "--img-size", "64", "--no-fold"]) == 0
    return path


def _reject_constant(token: str):
    raise ValueError(f"non-standard JSON token {token}")


def test_quantize_writes_int8_and_strict_report_then_check_gates_on_snr(float_model, tmp_path, capsys):
    int8, report = tmp_path / "tiny.int8.onnx", tmp_path / "report.json"
    assert main(["quantize", str(float_model), "-o", str(int8), "--calib-random", "8", "--report", str(report),
                 "--skip", "adaround,float"]) == 0  # minutes on yolov3-tiny; tested in test_quantize_adaround
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "BatchNormalization" not in ops  # folded, then QDQ
    data = json.loads(report.read_text(), parse_constant=_reject_constant)
    snrs = [o["snr_db"] for o in data["outputs"]] if "outputs" in data else [data["min_snr_db"]]
    assert all(isinstance(v, float) for v in snrs)
    capsys.readouterr()
    # the same int8 model passes a gate below its SNR and fails one far above it
    assert main(["check", str(int8), str(float_model), "--min-snr", "3"]) == 0
    assert "SNR ≥ 3 dB" in capsys.readouterr().out
    assert main(["check", str(int8), str(float_model), "--min-snr", "90"]) == 1


def test_unreachable_target_snr_exits_1_and_writes_nothing(float_model, tmp_path, capsys):
    int8 = tmp_path / "never.onnx"
    skip = "7bit,equalize,clip,adaround,bias,u16,float"  # the steps are not what this test is about
    assert main(["quantize", str(float_model), "-o", str(int8), "--calib-random", "8", "--target-snr", "200",
                 "--skip", skip]) == 1
    assert not int8.exists()
    assert "200" in capsys.readouterr().out


@pytest.mark.parametrize("flag,ranked", [(["--no-sensitivity"], False), (["--sensitivity"], True)])
def test_sensitivity_can_be_forced_or_turned_off(float_model, tmp_path, flag, ranked):
    report = tmp_path / "report.json"
    skip = "7bit,equalize,clip,adaround,bias,u16,float"
    assert main(["quantize", str(float_model), "-o", str(tmp_path / "q.onnx"), "--calib-random", "8", "--skip", skip,
                 "--report", str(report), *flag]) == 0
    data = json.loads(report.read_text(), parse_constant=_reject_constant)
    assert data["min_snr_db"] < 20  # low: by default (auto) the layers would be ranked
    assert bool(data["sensitivity"]) == ranked


@pytest.mark.parametrize("args,words", [
    (["--calib-random", "8", "--calib", "x.npy"], "not allowed with argument"),
    ([], "one of the arguments --calib --calib-random is required"),
    (["--calib-random", "8", "--target-snr", "nan"], "signal-to-noise ratio"),
    (["--calib-random", "8", "--skip", "clip,adaquant"], "unknown step(s) adaquant; choose from 7bit, equalize"),
    (["--calib-random", "8", "--sensitivity", "--no-sensitivity"], "not allowed with argument --sensitivity"),
])
def test_bad_quantize_arguments_exit_2_on_one_line(float_model, tmp_path, capsys, args, words):
    assert main(["quantize", str(float_model), "-o", str(tmp_path / "o.onnx"), *args]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_quantize_refuses_to_overwrite_its_input(float_model, capsys):
    before = float_model.read_bytes()
    assert main(["quantize", str(float_model), "-o", str(float_model), "--calib-random", "8"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err and float_model.read_bytes() == before
