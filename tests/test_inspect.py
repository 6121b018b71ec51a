"""``foldkit inspect`` on a cfg: every layer's index, type, output shape and fold verdict, and the fork choices."""

from __future__ import annotations

import re

import pytest

from foldkit.cli import main
from foldkit.errors import FoldkitError
from foldkit.inspect import inspect_target

CFG = """[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
groups=2
activation=mish

[shortcut]
from=-2
activation=linear

[convolutional]
filters=21
size=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14,23,27,37,58
classes=2
num=3
"""


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "small.cfg"
    path.write_text(CFG)
    return path


def _rows(text: str) -> dict[int, list[str]]:
    """The table's rows by layer index, split on runs of two or more spaces."""
    rows = {}
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells and cells[0].isdigit():
            rows[int(cells[0])] = cells[1:]
    return rows


def test_each_layer_has_its_type_shape_and_fold_verdict(cfg):
    text = inspect_target(cfg)
    assert text.splitlines()[0] == f"{cfg}: input 3×32×32, 6 layers, detector, 1 heads (yolo)"
    rows = _rows(text)
    assert rows == {
        0: ["convolutional", "8×16×16", "3→8 3x3/2", "leaky", "folded"],
        1: ["maxpool", "8×8×8", "-"],
        2: ["convolutional", "8×8×8", "8→8 3x3/1 g2", "mish", "folded"],
        3: ["shortcut", "8×8×8", "linear", "-"],
        4: ["convolutional", "21×8×8", "8→21 1x1/1", "linear", "-"],
        5: ["yolo", "21×8×8", "-"],
    }
    assert "fold: 2 folded, 0 not folded" in text


def test_fork_choices_name_the_batchnorm_variant(cfg):
    assert "BatchNorm ε (alexeyab): γ(x − μ)/√(σ² + 1e-5) + β" in inspect_target(cfg)
    assert "BatchNorm ε (pjreddie): γ(x − μ)/(√σ² + 1e-6) + β" in inspect_target(cfg, bn_variant="pjreddie")
    with pytest.raises(FoldkitError, match="unknown BatchNorm variant 'cudnn'"):
        inspect_target(cfg, bn_variant="cudnn")


def test_img_size_changes_the_shapes(cfg):
    rows = _rows(inspect_target(cfg, img_size=64))
    assert rows[0][1] == "8×32×32" and rows[5][1] == "21×16×16"


def test_cli_inspect_prints_the_table(cfg, capsys):
    assert main(["inspect", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert _rows(out)[2][:2] == ["convolutional", "8×8×8"] and "Fork choices:" in out


def test_fork_choices_list_what_the_network_relies_on(tmp_path):
    """A shortcut between different channel counts follows AlexeyAB's channel-prefix rule, and says so."""
    path = tmp_path / "prefix.cfg"
    path.write_text("[net]\nwidth=16\nheight=16\nchannels=3\n\n"
                    "[convolutional]\nfilters=8\nsize=1\nactivation=leaky\n\n"
                    "[convolutional]\nfilters=16\nsize=1\nactivation=leaky\n\n"
                    "[shortcut]\nfrom=-2\nactivation=linear\n")
    text = inspect_target(path)
    assert _rows(text)[2] == ["shortcut", "16×16×16", "linear", "-"]
    assert "channel-prefix" in text.split("Fork choices:")[1]
    (tmp_path / "plain.cfg").write_text(CFG)  # its shortcut adds equal shapes: no fork choice to name
    assert "channel-prefix" not in inspect_target(tmp_path / "plain.cfg")
