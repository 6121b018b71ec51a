"""Darknet cfg → PyTorch: the built-in networks, Darknet's semantics, and clear errors."""

import numpy as np
import pytest
import torch

from foldkit import FoldkitError, build_model
from foldkit.darknet.build import DarknetMaxPool
from foldkit.darknet.cfg import parse_cfg, parse_cfg_text
from foldkit.darknet.plan import plan_network
from foldkit.nn import count_parameters

# FORMAT.md §4: learnable parameters (conv W + γ,β or bias), independent of input size.
BUILTIN_COUNTS = {"darknet53": 41_609_928, "yolov3": 61_949_149, "yolov3-tiny": 8_852_366}


@pytest.mark.parametrize("name,params", BUILTIN_COUNTS.items())
def test_builtin_parameter_counts(name, params):
    assert count_parameters(build_model(name)) == params


def test_builtin_output_shapes():
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        heads = build_model("yolov3", 64)(x)
        tiny = build_model("yolov3-tiny", 64)(x)
        probs = build_model("darknet53", 64)(x)
    assert [tuple(h.shape) for h in heads] == [(1, 255, 2, 2), (1, 255, 4, 4), (1, 255, 8, 8)]
    assert [tuple(h.shape) for h in tiny] == [(1, 255, 2, 2), (1, 255, 4, 4)]
    assert probs.shape == (1, 1000)
    assert torch.allclose(probs.sum(dim=1), torch.ones(1))


def test_yolo_head_metadata():
    model = build_model("yolov3")
    assert [h.stride for h in model.info.heads] == [32, 16, 8]
    assert model.info.heads[0].anchors == [(116, 90), (156, 198), (373, 326)]
    assert model.info.heads[2].mask == [0, 1, 2]


@pytest.mark.parametrize("name,shared", [("yolov3", "yolov3.cfg"), ("yolov3-tiny", "yolov3-tiny.cfg"),
                                         ("darknet53", "darknet53.cfg")])
def test_builtins_match_the_real_darknet_cfgs(name, shared, shared_darknet):
    ours, real = build_model(name, 96), build_model(shared_darknet / shared, 96)
    assert ours.kinds == real.kinds and ours.inputs_of == real.inputs_of
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in real.parameters()]
    assert repr(ours.layers) == repr(real.layers)


def _darknet_maxpool_reference(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """A literal transcription of maxpool_layer.c's forward loop (positions outside are skipped)."""
    c, h, w = x.shape
    out_h, out_w = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    offset = -(padding // 2)
    out = np.full((c, out_h, out_w), -np.inf, dtype=x.dtype)
    for k in range(c):
        for i in range(out_h):
            for j in range(out_w):
                for n in range(size):
                    for m in range(size):
                        y, xx = offset + i * stride + n, offset + j * stride + m
                        if 0 <= y < h and 0 <= xx < w:
                            out[k, i, j] = max(out[k, i, j], x[k, y, xx])
    return out


@pytest.mark.parametrize("size,stride,padding,hw", [(2, 1, 1, 7), (2, 2, 1, 7), (2, 2, 1, 8), (3, 2, 2, 9),
                                                    (5, 1, 4, 6), (3, 1, 2, 5), (3, 3, 2, 10)])
def test_maxpool_matches_darknet(size, stride, padding, hw):
    x = -torch.rand(2, hw, hw, generator=torch.Generator().manual_seed(size * 10 + hw)) - 1  # all negative
    expected = _darknet_maxpool_reference(x.numpy(), size, stride, padding)
    got = DarknetMaxPool(size, stride, stride, padding)(x[None])[0].numpy()
    np.testing.assert_array_equal(got, expected)


def test_cfg_grammar(tmp_path):
    text = "[net]\nwidth = 32\nheight=32\nchannels=3\n\n# comment\n; also\n[conv]\nfilters = 4\nfilters=8\n" \
           "size=3\npad=1\nbatch_normalize=1\nactivation = leaky # trailing\n"
    sections = parse_cfg_text(text, "t.cfg")
    conv = sections[1]
    assert conv.type == "convolutional" and conv.index == 0
    assert conv.get_int("filters") == 4  # the first occurrence wins
    assert conv.get_str("activation") == "leaky#trailing"  # Darknet keeps inline comments in strings
    path = tmp_path / "t.cfg"
    path.write_text(text.replace("activation = leaky # trailing\n", ""))
    model = build_model(path)
    assert model.layers[0].act.name == "logistic"  # Darknet's default activation is logistic


NET = "[net]\nwidth=32\nheight=32\nchannels=3\n"
CONV = "[convolutional]\nfilters=8\nsize=3\npad=1\nactivation=leaky\n"


@pytest.mark.parametrize("body,line,words", [
    (NET + CONV + "[deconvolutional]\nfilters=2\n", 10, "[deconvolutional] layer 1 is not supported"),
    (NET + CONV + "[local]\nsize=5\npad=1\n", 12, "pad=1 with size=5: Darknet sizes the output"),
    (NET + CONV + "[reorg]\nstride=3\n", 11, "stride=3 (reverse=0) does not divide input 8×32×32"),
    (NET + "[convolutional]\nfilters=eight\n", 6, "'filters=eight' is not a valid int"),
    (NET + CONV + "[route]\nlayers=-1, 5\n", 11, "refers to layer 5"),
    (NET + CONV + "[maxpool]\nsize=3\nstride=3\n[shortcut]\nfrom=-2\n", 14, "an integer factor larger"),
    (NET + CONV + "[convolutional]\nfilters=8\nsize=3\nxnor=1\n", 13, "option 'xnor' is refused: XNOR-binarized"),
    (NET + "[rnn]\noutput=8\n", 5, "recurrent layer: not a feed-forward image network"),
    ("[convolutional]\nfilters=8\n", 1, "the first section must be [net]"),
    (NET + "[convolutional]\nactivation=sparkly\n", 6, "unknown activation 'sparkly'"),
    (NET + CONV + "[yolo]\nmask=0\nanchors=1,2\nclasses=80\nnum=1\n", 10, "expects 1×(80+5) = 85 input channels"),
])
def test_bad_cfg_names_file_and_line(tmp_path, body, line, words):
    path = tmp_path / "bad.cfg"
    path.write_text(body)
    with pytest.raises(FoldkitError) as info:
        build_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:"), message
    assert words in message and "\n" not in message


def test_unknown_model_name():
    with pytest.raises(FoldkitError, match="not a built-in model"):
        build_model("yolov9-huge")


def test_route_size_mismatch_at_an_odd_input_size():
    with pytest.raises(FoldkitError, match="concatenates outputs of different sizes"):
        build_model("yolov3", 100)


# Every cfg in ../shared/darknet builds since the zoo layers landed (issue 11): none is refused.
SHARED_CFGS = {
    "csdarknet53-omega.cfg", "darknet19.alexeyab.cfg", "darknet19.cfg", "darknet53.cfg", "enet-coco.cfg",
    "yolov2-tiny.cfg", "yolov2.alexeyab.cfg", "yolov2.cfg", "yolov3-spp.cfg", "yolov3-tiny.cfg",
    "yolov3.alexeyab.cfg", "yolov3.cfg", "yolov4-tiny.cfg", "yolov4.cfg",
}


def test_every_shared_cfg_builds(shared_darknet):
    names = {p.name for p in shared_darknet.glob("*.cfg")}
    assert names == SHARED_CFGS
    for name in sorted(names):
        plan = plan_network(shared_darknet / name, 64 if "tiny" in name else 128)
        with torch.device("meta"):
            model = build_model(shared_darknet / name, 64 if "tiny" in name else 128)
        assert count_parameters(model) > 0 and len(model.layers) == len(plan.layers)
        assert parse_cfg(shared_darknet / name)[0].type == "net"


# FORMAT.md §4, "learnable (PyTorch-style)": the real cfgs' parameter counts.
SHARED_COUNTS = {
    "yolov4.cfg": 64_363_101, "yolov4-tiny.cfg": 6_056_606, "yolov3-spp.cfg": 62_998_749,
    "csdarknet53-omega.cfg": 27_642_184, "darknet19.cfg": 20_842_376, "yolov3.alexeyab.cfg": 61_949_149,
}


@pytest.mark.parametrize("cfg,params", SHARED_COUNTS.items())
def test_shared_cfg_parameter_counts(cfg, params, shared_darknet):
    assert count_parameters(build_model(shared_darknet / cfg, 128)) == params
