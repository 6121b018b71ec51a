"""The command line: exit codes, one-line errors, atomic outputs."""

import subprocess
import sys
import warnings

import onnx
import pytest

from foldkit.cli import main


def test_export_check_inspect_roundtrip(tmp_path, capsys):
    folded, unfolded = tmp_path / "f.onnx", tmp_path / "u.onnx"
    assert main(["export", "yolov3-tiny", "-o", str(folded), "--img-size", "64", "--random-weights", "0"]) == 0
    assert main(["export", "yolov3-tiny", "-o", str(unfolded), "--img-size", "64", "--random-weights", "0",
                 "--no-fold", "--batch", "dynamic"]) == 0
    capsys.readouterr()
    assert main(["check", str(folded), str(unfolded), "--rtol", "1e-4"]) == 0
    out = capsys.readouterr().out
    assert "PASSED: 2/2" in out and "head1" in out
    assert "ran on onnxruntime CPUExecutionProvider, graph optimizations 'disable'" in out
    assert main(["check", str(folded), str(unfolded), "--rtol", "1e-9", "--atol", "0"]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert main(["inspect", str(unfolded)]) == 0
    assert "11 folded, 0 not folded" in capsys.readouterr().out
    assert main(["inspect", "yolov3-tiny"]) == 0
    out = capsys.readouterr().out
    assert "maxpool" in out and "folded" in out


def test_inspect_shows_why_norms_do_not_fold(tmp_path, capsys):
    import torch

    from foldkit.nn import ConvNormAct

    model = torch.nn.Sequential(ConvNormAct(3, 8, norm="group"), ConvNormAct(8, 8, norm="batch")).eval()
    path = tmp_path / "g.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, 3, 8, 8),), str(path), dynamo=False, do_constant_folding=False,
                          opset_version=18)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    # torch writes GroupNorm as InstanceNormalization on a reshaped tensor, then Mul/Add
    assert "1 folded, 1 not folded" in out
    assert "not-foldable /0/norm/InstanceNormalization" in out and "its own statistics" in out


@pytest.mark.parametrize("args,words", [
    (["check", "{tmp}/missing.onnx", "{tmp}/missing.onnx"], "no such file"),
    (["check", "{tmp}/corrupt.onnx", "{tmp}/corrupt.onnx"], "not a valid ONNX model"),
    (["export", "yolov99", "-o", "{tmp}/out.onnx"], "not a built-in model"),
    (["export", "{tmp}/bad.cfg", "-o", "{tmp}/out.onnx"], "bad.cfg:5: [unicorn] layer 0 is not supported"),
    (["inspect", "{tmp}/empty.onnx"], "file is empty"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, words):
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07garbage that is not protobuf \xff\xff\xff")
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "bad.cfg").write_text("[net]\nwidth=32\nheight=32\nchannels=3\n[unicorn]\n")
    code = main([a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert code == 2
    assert words in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.onnx").exists()


def test_failed_export_leaves_existing_output_untouched(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"precious")
    assert main(["export", "yolov3", "-o", str(target), "--img-size", "100"]) == 2  # route size mismatch
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left behind


def test_export_replaces_existing_output(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    assert main(["export", "yolov3-tiny", "-o", str(target), "--img-size", "64"]) == 0
    onnx.checker.check_model(onnx.load(str(target)))


def test_argument_errors_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "foldkit.cli", "export", "yolov3", "-o", "x.onnx", "--batch", "0"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "batch must be at least 1" in result.stderr
