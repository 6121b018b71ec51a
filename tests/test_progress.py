"""Progress on long work: reported layer by layer, and silent when stderr is not a terminal."""

from __future__ import annotations

from foldkit import build_model, randomize_batchnorm
from foldkit.cli import main
from foldkit.darknet.export import export_darknet
from foldkit.darknet.weights import save_weights


def test_direct_export_reports_every_layer_and_the_cli_is_quiet_off_a_terminal(tmp_path, capsys):
    model = build_model("yolov3-tiny", 64, seed=0)
    randomize_batchnorm(model, (2, 3, 64, 64), seed=0)
    save_weights(model, tmp_path / "w.weights")
    calls: list[tuple[int, int, str]] = []
    export_darknet("yolov3-tiny", tmp_path / "a.onnx", weights=tmp_path / "w.weights", img_size=64,
                   progress=lambda done, total, label: calls.append((done, total, label)))
    layers = len(model.layers)
    assert [done for done, _, _ in calls] == list(range(1, layers + 1))
    assert {total for _, total, _ in calls} == {layers} and calls[0][2] == "layer 0 [convolutional]"
    assert main(["export", "yolov3-tiny", "--weights", str(tmp_path / "w.weights"), "--img-size", "64",
                 "-o", str(tmp_path / "b.onnx")]) == 0
    assert capsys.readouterr().err == ""  # pytest's stderr is no terminal: no bar, no carriage returns
