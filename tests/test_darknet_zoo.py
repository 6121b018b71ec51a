"""The Darknet zoo (../shared/darknet/zoo, FORMAT-ZOO.md): every feed-forward cfg builds and converts,
and every layer foldkit added for it computes what Darknet computes.

Three kinds of check:
- the walk: each zoo cfg builds in PyTorch (on the meta device: shapes, no arithmetic), runs a
  forward pass there, has as many stored floats as its ``.weights`` holds, and converts with the
  direct converter; the recurrent and XNOR cfgs are refused with the reason;
- per layer, PyTorch against a float64 numpy transcription of Darknet's C loop or formula;
- per layer type, the direct converter's ONNX against the PyTorch builder on seeded, conditioned
  weights written by ``save_weights`` and read back.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_darknet_dir

from foldkit import FoldkitError, build_model, export_onnx
from foldkit.darknet.plan import plan_network
from foldkit.darknet.specs import RegionHead, normalized_shortcut_weights
from foldkit.darknet.to_onnx import darknet_to_onnx
from foldkit.darknet.weights import (
    WeightsHeader,
    expected_floats,
    load_weights,
    save_weights,
)
from foldkit.defaults import INPUT_NAME
from foldkit.runtime import create_session, run
from foldkit.synthetic import condition_weights

ZOO = shared_darknet_dir() / "zoo" if shared_darknet_dir() else None
ZOO_CFGS = sorted(p.name for p in ZOO.glob("*.cfg")) if ZOO and ZOO.is_dir() else ["(zoo absent)"]
RECURRENT = {"crnn.train.cfg": "crnn", "gru.cfg": "gru", "lstm.train.cfg": "lstm", "rnn.cfg": "rnn",
             "rnn.train.cfg": "rnn", "yolov3-tiny_occlusion_track.cfg": "crnn"}
XNOR = {"darknet53_448_xnor.cfg", "tiny-yolo_xnor.cfg", "yolov3-tiny_xnor.cfg"}
WALK_SIZES = (64, 96, 128, 160, 224, 256)  # the smallest that the cfg's layers allow is used


def _stored_floats(model: torch.nn.Module) -> int:
    """What a ``.weights`` file stores for a built model: parameters plus BatchNorm running statistics."""
    stats = sum(m.running_mean.numel() + m.running_var.numel() for m in model.modules()
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    return sum(p.numel() for p in model.parameters()) + stats


def _smallest_size(cfg: Path) -> int:
    for size in WALK_SIZES:
        try:
            plan_network(cfg, size)
            return size
        except FoldkitError:
            continue
    raise AssertionError(f"{cfg.name} plans at none of {WALK_SIZES}")


def _zero_weights(plan, path: Path) -> None:
    """A ``.weights`` file of the right size, all zeros (sparse: written in no time)."""
    with open(path, "wb") as handle:
        handle.write(WeightsHeader().pack())
        handle.truncate(WeightsHeader().size + 4 * expected_floats(plan))


def _walk(names: list[str]) -> list:
    """Every cfg; by default a representative third (every third by name, plus every refused one), the rest slow."""
    return [name if index % 3 == 0 or name in RECURRENT or name in XNOR
            else pytest.param(name, marks=pytest.mark.slow) for index, name in enumerate(names)]


@pytest.mark.parametrize("name", _walk(ZOO_CFGS))
def test_zoo_cfg_builds_and_converts_or_is_refused_with_the_reason(name, tmp_path):
    if ZOO is None or not ZOO.is_dir():
        pytest.skip("../shared/darknet/zoo is not present")
    cfg = ZOO / name
    if name in RECURRENT or name in XNOR:
        with pytest.raises(FoldkitError) as info:
            plan_network(cfg, 64)
        message = str(info.value)
        assert message.startswith(f"{cfg}:") and "\n" not in message
        if name in RECURRENT:
            assert f"[{RECURRENT[name]}]" in message and "not a feed-forward image network" in message
        else:
            assert "option 'xnor' is refused: XNOR-binarized conv" in message
        return
    size = _smallest_size(cfg)
    plan = plan_network(cfg, size)
    with torch.device("meta"):
        model = build_model(cfg, size)
        outputs = model(torch.empty(1, plan.info.channels, size, size))
    assert _stored_floats(model) == expected_floats(plan)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    weights = tmp_path / "zero.weights"
    _zero_weights(plan, weights)
    # fold=False: the arrays are views of the file, so the whole zoo converts in seconds; folding is
    # checked numerically below.
    direct = darknet_to_onnx(cfg, weights, img_size=size, fold=False)
    graph_shapes = [tuple(d.dim_value for d in o.type.tensor_type.shape.dim) for o in direct.graph_model.graph.output]
    assert graph_shapes == [tuple(o.shape) for o in outputs]
    assert [o.name for o in direct.graph_model.graph.output] == model.output_names()


def test_zoo_walk_covers_the_whole_folder(shared_darknet):
    """87 cfgs: 78 build, 6 recurrent and 3 XNOR cfgs are refused (issue 11)."""
    names = {p.name for p in (shared_darknet / "zoo").glob("*.cfg")}
    if not names:
        pytest.skip("../shared/darknet/zoo is not present")
    assert len(names) == 87 and set(RECURRENT) | XNOR <= names
    assert len(names - set(RECURRENT) - XNOR) == 78


# --- PyTorch against numpy transcriptions of Darknet's loops -------------------------------------

def _reorg_cpu(x: np.ndarray, w: int, h: int, c: int, batch: int, stride: int, forward: int) -> np.ndarray:
    """blas.c reorg_cpu, line for line (A:src/blas.c:10-34)."""
    out = np.zeros_like(x)
    out_c = c // (stride * stride)
    for b in range(batch):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2, offset = k % out_c, k // out_c
                    w2, h2 = i * stride + offset % stride, j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    if forward:
                        out[out_index] = x[in_index]
                    else:
                        out[in_index] = x[out_index]
    return out


def _one_layer(tmp_path: Path, body: str, shape: tuple[int, int, int], name: str = "t.cfg") -> Path:
    c, h, w = shape
    path = tmp_path / name
    path.write_text(f"[net]\nchannels={c}\nheight={h}\nwidth={w}\n" + body)
    return path


@pytest.mark.parametrize("section,reverse,shape", [
    ("reorg", 0, (8, 6, 4)), ("reorg", 1, (8, 6, 4)), ("reorg3d", 0, (8, 6, 4)), ("reorg3d", 1, (16, 6, 4)),
])
def test_reorg_is_darknets_index_map(tmp_path, section, reverse, shape):
    c, h, w = shape
    cfg = _one_layer(tmp_path, f"[{section}]\nstride=2\nreverse={reverse}\n", shape)
    x = np.random.default_rng(0).standard_normal(2 * c * h * w)
    got = build_model(cfg)(torch.from_numpy(x).view(2, c, h, w)).numpy().ravel()
    # [reorg] passes its input sizes to reorg_cpu, [reorg3d] its output sizes (FORMAT-ZOO §2.2-2.3)
    if section == "reorg":
        expected = _reorg_cpu(x, w, h, c, 2, 2, reverse)
    elif reverse:
        expected = _reorg_cpu(x, w * 2, h * 2, c // 4, 2, 2, 1)
    else:
        expected = _reorg_cpu(x, w // 2, h // 2, c * 4, 2, 2, 0)
    np.testing.assert_array_equal(got, expected)
    if section == "reorg" and not reverse:  # and it is not a plain space-to-depth
        assert not np.array_equal(got, torch.nn.functional.pixel_unshuffle(
            torch.from_numpy(x).view(2, c, h, w), 2).numpy().ravel())


def _pjreddie_shortcut(prev: np.ndarray, add: np.ndarray) -> np.ndarray:
    """pjreddie blas.c shortcut_cpu with alpha = beta = 1 (P:src/blas.c:68-92)."""
    c2, h2, w2 = prev.shape
    c1, h1, w1 = add.shape
    stride, sample = max(1, w1 // w2), max(1, w2 // w1)
    out = prev.copy()
    for k in range(min(c1, c2)):
        for j in range(min(h1, h2)):
            for i in range(min(w1, w2)):
                if j * sample < h2 and i * sample < w2 and j * stride < h1 and i * stride < w1:
                    out[k, j * sample, i * sample] += add[k, j * stride, i * stride]
    return out


def test_strided_shortcut_is_pjreddies_rule(tmp_path):
    """A resnet downsampling block: 6×8×8 added onto 4×4×4 (and, the other way, channels 4 onto 6)."""
    body = ("[convolutional]\nfilters=6\nsize=1\nactivation=linear\n"
            "[convolutional]\nfilters=4\nsize=3\npad=1\nstride=2\nactivation=linear\n"
            "[shortcut]\nfrom=-2\nactivation=leaky\n")
    model = build_model(_one_layer(tmp_path, body, (3, 8, 8)), seed=1).double()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        first = model.layers[0](x)
        second = model.layers[1](first)
        got = model(x)[0].numpy()
    summed = _pjreddie_shortcut(second[0].numpy(), first[0].numpy())
    np.testing.assert_allclose(got, np.where(summed > 0, summed, 0.1 * summed), rtol=1e-12, atol=1e-12)
    assert "strided_shortcut" in plan_network(_one_layer(tmp_path, body, (3, 8, 8))).info.choices


def _alexeyab_shortcut(inputs: list[np.ndarray], weights: np.ndarray | None, per_channel: bool) -> np.ndarray:
    """AlexeyAB blas.c shortcut_multilayer_cpu over flat indices, weights already fused (A:src/blas.c:77-143)."""
    prev = inputs[0]
    c, h, w = prev.shape
    step = h * w if per_channel else c * h * w
    layer_step = c if per_channel else 1
    out = np.zeros(prev.size)
    flat = [t.ravel() for t in inputs]
    for src_i in range(prev.size):
        channel = src_i // step
        out[src_i] = flat[0][src_i] * (weights[channel] if weights is not None else 1.0)
        for k, add in enumerate(flat[1:]):
            if src_i < add.size:
                factor = weights[channel + (k + 1) * layer_step] if weights is not None else 1.0
                out[src_i] += add[src_i] * factor
    return out.reshape(prev.shape)


def _fused(raw: np.ndarray, inputs: int, normalization: str) -> np.ndarray:
    """fuse_conv_batchnorm's rewrite of shortcut weights (A:src/network.c:1334-1381), element by element."""
    w = raw.reshape(inputs, -1).astype(np.float64)
    out = np.empty_like(w)
    for c in range(w.shape[1]):
        column = w[:, c]
        if normalization == "relu":
            terms = np.maximum(column, 0.001)
        else:
            terms = np.exp(column - column.max())
        out[:, c] = terms / (0.0001 + terms.sum())
    return out.ravel()


@pytest.mark.parametrize("weights_type,normalization", [
    (None, None), ("per_feature", "relu"), ("per_channel", "relu"), ("per_layer", "softmax"),
    ("per_channel", "avg_relu"), ("per_channel", "softmax"),
])
def test_shortcut_prefix_and_weights_match_alexeyab(tmp_path, weights_type, normalization):
    """Two 'from' inputs, one with fewer channels (6 onto 8) and one with more (10): the flat-prefix rule."""
    body = ("[convolutional]\nfilters=6\nsize=1\nactivation=linear\n"
            "[convolutional]\nfilters=10\nsize=1\nactivation=linear\n"
            "[convolutional]\nfilters=8\nsize=1\nactivation=linear\n"
            "[shortcut]\nfrom=-3,-2\nactivation=linear\n")
    if weights_type:
        body += f"weights_type={weights_type}\nweights_normalization={normalization}\n"
    cfg = _one_layer(tmp_path, body, (3, 4, 4))
    model = build_model(cfg, seed=2).double()
    shortcut = model.layers[3]
    if weights_type:
        with torch.no_grad():
            shortcut.weight.copy_(torch.randn(shortcut.weight.shape, generator=torch.Generator().manual_seed(3)))
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        outs = [model.layers[0](x)]
        outs.append(model.layers[1](outs[0]))
        outs.append(model.layers[2](outs[1]))
        got = model(x)[0].numpy()
    per_channel = weights_type == "per_channel"
    fused = None
    if weights_type:
        fused = _fused(shortcut.weight.detach().numpy(), 3, "relu" if "relu" in normalization else "softmax")
        assert shortcut.weight.numel() == (24 if per_channel else 3)
    expected = _alexeyab_shortcut([outs[2][0].numpy(), outs[0][0].numpy(), outs[1][0].numpy()], fused, per_channel)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_shortcut_weights_round_trip_through_weights_file(tmp_path):
    body = ("[convolutional]\nfilters=4\nsize=1\nactivation=linear\n"
            "[shortcut]\nfrom=-1\nweights_type=per_channel\nweights_normalization=softmax\n")
    cfg = _one_layer(tmp_path, body, (4, 4, 4))
    model = build_model(cfg, seed=4)
    with torch.no_grad():
        model.layers[1].weight.copy_(torch.arange(8.0))
    save_weights(model, tmp_path / "w.weights")
    values = np.fromfile(tmp_path / "w.weights", dtype="<f4", offset=20)
    assert values.size == expected_floats(model) == 4 + 16 + 8
    np.testing.assert_array_equal(values[-8:], np.arange(8.0))  # the shortcut's record comes last, raw
    again = build_model(cfg)
    load_weights(again, tmp_path / "w.weights")
    np.testing.assert_array_equal(again.layers[1].weight.detach().numpy(), np.arange(8.0))


@pytest.mark.parametrize("body", [
    "[shortcut]\nfrom=-1\nweights_type=per_feature\n",  # Darknet demands a normalization with weights
    "[shortcut]\nfrom=-1\nalpha=0.5\n",
])
def test_unsupported_shortcuts_are_refused(tmp_path, body):
    cfg = _one_layer(tmp_path, "[convolutional]\nfilters=4\nsize=1\n" + body, (3, 4, 4))
    with pytest.raises(FoldkitError, match=rf"^{cfg}:\d+: \[shortcut\] layer 1 "):
        build_model(cfg)


def _local_avgpool(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """maxpool_layer.c forward_local_avgpool_layer_cpu: the mean of the in-bounds elements
    (A:src/maxpool_layer.c:343-379)."""
    c, h, w = x.shape
    out_h, out_w = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    offset = -(padding // 2)
    out = np.zeros((c, out_h, out_w))
    for k in range(c):
        for i in range(out_h):
            for j in range(out_w):
                values = [x[k, offset + i * stride + n, offset + j * stride + m]
                          for n in range(size) for m in range(size)
                          if 0 <= offset + i * stride + n < h and 0 <= offset + j * stride + m < w]
                out[k, i, j] = sum(values) / len(values)
    return out


@pytest.mark.parametrize("size,stride,padding,hw", [(4, 4, 3, 16), (3, 2, 2, 7), (2, 2, 1, 5), (3, 1, 2, 4)])
def test_local_avgpool_matches_darknet(tmp_path, size, stride, padding, hw):
    cfg = _one_layer(tmp_path, f"[local_avgpool]\nsize={size}\nstride={stride}\npadding={padding}\n", (2, hw, hw))
    x = np.random.default_rng(size).standard_normal((2, hw, hw))
    got = build_model(cfg)(torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(got, _local_avgpool(x, size, stride, padding), rtol=1e-12)


def test_crop_connected_and_their_weights_order(tmp_path):
    """[crop] = centre crop then 2x − 1; [connected] flattens channel-major and reads b, W, γ, μ, σ²
    (FORMAT-ZOO §4-5)."""
    body = ("[crop]\ncrop_height=4\ncrop_width=3\n"
            "[connected]\noutput=5\nbatch_normalize=1\nactivation=leaky\n")
    cfg = _one_layer(tmp_path, body, (2, 7, 6))
    model = build_model(cfg, seed=5)
    condition_weights(model, torch.rand(4, 2, 7, 6))
    save_weights(model, tmp_path / "w.weights")
    values = np.fromfile(tmp_path / "w.weights", dtype="<f4", offset=20).astype(np.float64)
    bias, weight, gamma, mean, var = np.split(values, np.cumsum([5, 5 * 24, 5, 5]))
    x = np.random.default_rng(6).random((1, 2, 7, 6))
    cropped = 2 * x[:, :, 1:5, 1:4] - 1  # (7 − 4)//2 = 1, (6 − 3)//2 = 1
    z = weight.reshape(5, 24) @ cropped.reshape(1, 24).T
    y = gamma[:, None] * (z - mean[:, None]) / np.sqrt(var[:, None] + 1e-5) + bias[:, None]
    expected = np.where(y > 0, y, 0.1 * y).T
    with torch.no_grad():
        got = model(torch.from_numpy(x).float())
    assert tuple(got.shape) == (1, 5, 1, 1)
    np.testing.assert_allclose(got.numpy().reshape(1, 5), expected, rtol=1e-5, atol=1e-6)


def test_maxpool_depth_takes_strided_channel_groups(tmp_path):
    cfg = _one_layer(tmp_path, "[maxpool]\nmaxpool_depth=1\nout_channels=2\nsize=3\nstride=2\n", (6, 3, 4))
    x = np.random.default_rng(13).standard_normal((1, 6, 3, 4))
    got = build_model(cfg)(torch.from_numpy(x)).numpy()
    expected = np.stack([x[0, [0, 2, 4]].max(axis=0), x[0, [1, 3, 5]].max(axis=0)])[None]  # channels g, g+G, …
    np.testing.assert_array_equal(got, expected)


def test_scale_channels_and_sam(tmp_path):
    body = ("[convolutional]\nfilters=4\nsize=1\nactivation=linear\n"
            "[avgpool]\n"
            "[scale_channels]\nfrom=-2\n"
            "[convolutional]\nfilters=1\nsize=1\nactivation=logistic\n"
            "[scale_channels]\nfrom=-2\nscale_wh=1\nactivation=leaky\n"
            "[sam]\nfrom=-1\n")
    cfg = _one_layer(tmp_path, body, (3, 5, 5))
    model = build_model(cfg, seed=7).double()
    x = torch.rand(1, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        outs = []
        for layer, sources in zip(model.layers, model.inputs_of, strict=True):
            outs.append(layer(*[x if s < 0 else outs[s] for s in sources]))
    conv, pooled = outs[0].numpy(), outs[0].numpy().mean(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(outs[2].numpy(), conv * pooled, rtol=1e-12)
    scaled = outs[2].numpy() * outs[3].numpy()  # 1×H×W per pixel, then leaky
    np.testing.assert_allclose(outs[4].numpy(), np.where(scaled > 0, scaled, 0.1 * scaled), rtol=1e-12)
    np.testing.assert_allclose(outs[5].numpy(), outs[4].numpy() ** 2, rtol=1e-12)


def _blur_reference(x: np.ndarray, antialiasing: int, stride: int) -> np.ndarray:
    kernel = np.outer([1, 2, 1], [1, 2, 1]) / 16.0 if antialiasing == 1 else np.full((2, 2), 0.25)
    pad = 1 if antialiasing == 1 else 0
    c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    k = kernel.shape[0]
    out_h, out_w = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    return np.array([[[np.sum(padded[ch, i * stride:i * stride + k, j * stride:j * stride + k] * kernel)
                       for j in range(out_w)] for i in range(out_h)] for ch in range(c)])


@pytest.mark.parametrize("antialiasing", [1, 2])
def test_antialiasing_blurs_after_a_stride_1_conv_and_maxpool(tmp_path, antialiasing):
    body = (f"[convolutional]\nfilters=3\nsize=3\npad=1\nstride=2\nantialiasing={antialiasing}\nactivation=leaky\n"
            f"[maxpool]\nsize=2\nstride=2\nantialiasing={antialiasing}\n")
    cfg = _one_layer(tmp_path, body, (2, 12, 12))
    model = build_model(cfg, seed=8).double()
    x = torch.rand(1, 2, 12, 12, dtype=torch.float64)
    conv = model.layers[0].conv
    with torch.no_grad():
        host = torch.nn.functional.leaky_relu(torch.nn.functional.conv2d(x, conv.weight, conv.bias, 1, 1), 0.1)
        first = model.layers[0](x)
        pooled = torch.nn.functional.max_pool2d(torch.nn.functional.pad(first, (0, 1, 0, 1), value=-math.inf), 2, 1)
        second = model.layers[1](first)
    np.testing.assert_allclose(first[0].numpy(), _blur_reference(host[0].numpy(), antialiasing, 2), rtol=1e-12)
    np.testing.assert_allclose(second[0].numpy(), _blur_reference(pooled[0].numpy(), antialiasing, 2), rtol=1e-12)
    assert expected_floats(model) == 3 + 3 * 2 * 9  # the blur kernels are constants, not in .weights


def test_share_index_reuses_weights_with_its_own_dilation(tmp_path):
    body = ("[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"
            "[convolutional]\nshare_index=0\ndilation=2\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\nactivation=linear\n")
    cfg = _one_layer(tmp_path, body, (4, 9, 9))
    model = build_model(cfg, seed=9).double().eval()
    assert expected_floats(model) == 4 * 4 + 4 * 4 * 9  # one record: the owner's
    owner = model.layers[0]
    x = torch.rand(1, 4, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        first = owner(x)
        expected = owner.norm(torch.nn.functional.conv2d(first, owner.conv.weight, None, 1, 2, 2))
        np.testing.assert_allclose(model(x).numpy(), expected.numpy(), rtol=1e-12)


# --- the direct converter against the PyTorch builder, per new layer type ------------------------

LAYER_CFGS = {
    "local": ((3, 12, 10), ("[convolutional]\nfilters=6\nsize=3\npad=1\nbatch_normalize=1\nactivation=leaky\n"
                           "[local]\nsize=3\nstride=1\npad=1\nfilters=5\nactivation=leaky\n"
                           "[local]\nsize=2\nstride=2\npad=0\nfilters=4\nactivation=linear\n"
                           "[connected]\noutput=52\nactivation=linear\n"
                           "[detection]\nclasses=3\ncoords=4\nside=2\nnum=2\nsoftmax=1\n")),
    "reorg": ((16, 12, 12), ("[convolutional]\nfilters=8\nsize=3\npad=1\nbatch_normalize=1\nactivation=leaky\n"
                            "[reorg]\nstride=2\n[reorg3d]\nstride=2\n[reorg]\nstride=2\nreverse=1\n"
                            "[convolutional]\nfilters=30\nsize=1\nactivation=linear\n"
                            "[region]\nanchors=1,1,2,2\nclasses=10\nnum=2\nsoftmax=1\n")),
    "connected": ((3, 12, 12), ("[crop]\ncrop_height=10\ncrop_width=9\n"
                               "[convolutional]\nfilters=4\nsize=3\nstride=2\npad=1\nbatch_normalize=1\nactivation=mish\n"
                               "[dropout]\nprobability=.5\n"
                               "[connected]\noutput=16\nbatch_normalize=1\nactivation=relu6\n"
                               "[connected]\noutput=10\nactivation=linear\n[softmax]\ngroups=2\n[cost]\n")),
    "attention": ((8, 16, 16), ("[convolutional]\nfilters=8\nsize=3\npad=1\ngroups=8\n"
                               "batch_normalize=1\nactivation=swish\n"
                               "[avgpool]\n[convolutional]\nfilters=8\nsize=1\nactivation=logistic\n"
                               "[scale_channels]\nfrom=-3\n"
                               "[convolutional]\nfilters=8\nsize=1\nactivation=logistic\n[sam]\nfrom=-2\n"
                               "[local_avgpool]\nsize=4\nstride=4\n"
                               "[maxpool]\nmaxpool_depth=1\nout_channels=4\n[route]\nlayers=-1,-2\n"
                               "[convolutional]\nfilters=12\nsize=3\nstride_x=2\nstride_y=1\npad=1\nantialiasing=1\n"
                               "batch_normalize=1\nactivation=hard_mish\n"
                               "[convolutional]\nfilters=30\nsize=1\nactivation=linear\n"
                               "[Gaussian_yolo]\nmask=0,1\nanchors=4,4,8,8\nclasses=6\nnum=2\n")),
    "shortcut": ((3, 16, 16), ("[convolutional]\nfilters=8\nsize=3\npad=1\nbatch_normalize=1\nactivation=leaky\n"
                              "[convolutional]\nfilters=16\nsize=3\nstride=2\npad=1\nbatch_normalize=1\nactivation=leaky\n"
                              "[shortcut]\nfrom=-2\nactivation=leaky\n"
                              "[convolutional]\nfilters=20\nsize=1\nbatch_normalize=1\nactivation=gelu\n"
                              "[convolutional]\nfilters=16\nsize=3\npad=1\ndilation=2\nbatch_normalize=1\nactivation=elu\n"
                              "[shortcut]\nfrom=-2,-3\nweights_type=per_channel\nweights_normalization=softmax\n"
                              "[convolutional]\nfilters=20\nsize=1\nbatch_normalize=1\nactivation=linear\n"
                              "[convolutional]\nshare_index=4\nfilters=16\nsize=3\npad=1\n"
                              "batch_normalize=1\nactivation=selu\n"
                              "[shortcut]\nfrom=-3\nweights_type=per_feature\nweights_normalization=relu\n"
                              "activation=normalize_channels_softmax\n[avgpool]\n[softmax]\n")),
}


def _torch_vs_direct(cfg: Path, size: tuple[int, int], tmp_path: Path,
                     seed: int = 0) -> tuple[list[float], list[float]]:
    """Relative max errors against the float64 PyTorch model, per output: (direct ONNX, PyTorch float32).

    Weights are seeded, conditioned, written by ``save_weights`` and read back by both paths.
    """
    plan = plan_network(cfg, size)
    model = build_model(cfg, size, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    sample = torch.rand(2, plan.info.channels, *size, generator=generator)
    condition_weights(model, sample, seed=seed)
    for module in model.modules():  # weighted shortcuts: seeded weights, not the initial ones
        if hasattr(module, "spec") and getattr(module, "weight", None) is not None:
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
    save_weights(model, tmp_path / "w.weights")
    fresh = build_model(cfg, size)
    load_weights(fresh, tmp_path / "w.weights")
    with torch.no_grad():
        single = fresh(sample)
        truth = copy.deepcopy(fresh).double()(sample.double())
    single, truth = (t if isinstance(t, tuple) else (t,) for t in (single, truth))
    direct = darknet_to_onnx(cfg, tmp_path / "w.weights", img_size=size, batch=None)
    assert all(n.op_type != "BatchNormalization" for n in direct.graph_model.graph.node)
    got = run(create_session(direct.model(), providers="cpu"), {INPUT_NAME: sample.numpy()})
    errors: tuple[list[float], list[float]] = ([], [])
    for name, reference, float32 in zip(fresh.output_names(), truth, single, strict=True):
        reference = reference.numpy()
        assert got[name].shape == reference.shape
        scale = max(np.abs(reference).max(), 1e-12)
        errors[0].append(float(np.abs(got[name] - reference).max() / scale))
        errors[1].append(float(np.abs(float32.numpy() - reference).max() / scale))
    return errors


def _assert_direct_as_close_as_float32_allows(errors: tuple[list[float], list[float]]) -> None:
    """Within rtol 1e-4 of float64, or — where float32 noise alone exceeds that (deep nets with 2×2 maps
    at test sizes, FORMAT-ZOO's enet-coco note) — no worse than 2× PyTorch's own float32 error."""
    for direct, float32 in zip(*errors, strict=True):
        assert direct <= max(1e-4, 2 * float32), errors


@pytest.mark.parametrize("name", LAYER_CFGS)
def test_direct_converter_matches_pytorch_per_layer_type(tmp_path, name):
    shape, body = LAYER_CFGS[name]
    cfg = _one_layer(tmp_path, body, shape, f"{name}.cfg")
    errors = _torch_vs_direct(cfg, shape[1:], tmp_path)
    assert max(errors[0]) <= 1e-4, errors


@pytest.mark.parametrize("name", LAYER_CFGS)
def test_torch_exporter_folds_and_exports_the_new_layers(tmp_path, name):
    """The PyTorch route (what --decode uses): fx finds the conv→norm pairs, the ONNX export runs them."""
    shape, body = LAYER_CFGS[name]
    model = build_model(_one_layer(tmp_path, body, shape, f"{name}.cfg"), seed=1)
    sample = torch.rand(2, *shape, generator=torch.Generator().manual_seed(1))
    condition_weights(model, sample, seed=1)
    result = export_onnx(model, tmp_path / "m.onnx", input_shape=(2, *shape), fold=True)
    # shortcut: the BatchNorm that share_index reuses runs after two convs, so the PyTorch pass keeps it
    # (reported once per call)
    # (the direct converter folds it: both convs read the same folded tensors)
    expected_summary = {"local": "1 folded, 0 not folded", "reorg": "1 folded, 0 not folded",
                        "connected": "2 folded, 0 not folded", "attention": "2 folded, 0 not folded",
                        "shortcut": "4 folded, 2 not folded (2× the norm module is called in 2 places)"}[name]
    assert result.fold_report.summary().startswith(expected_summary), result.fold_report.summary()
    got = run(create_session(str(result.path), providers="cpu"), {INPUT_NAME: sample.numpy()})
    with torch.no_grad():
        expected = model(sample)
    for output, reference in zip(model.output_names(), expected if isinstance(expected, tuple) else (expected,),
                                 strict=True):
        reference = reference.numpy()
        assert float(np.abs(got[output] - reference).max()) <= 1e-4 * float(np.abs(reference).max())


# Small real cfgs ([region], [crop]+[dropout], prefix [shortcut], [local_avgpool]+[contrastive]); the
# synthetic cfgs above cover the rest at a fraction of the time.
@pytest.mark.parametrize("name,size", [
    ("yolov2-tiny.cfg", 96), ("cifar.cfg", 32), ("yolov3-tiny-prn.cfg", 64), ("yolov4-tiny_contrastive.cfg", 64),
])
def test_direct_converter_matches_pytorch_on_zoo_cfgs(shared_darknet, tmp_path, name, size):
    cfg = shared_darknet / "zoo" / name
    if not cfg.is_file():
        pytest.skip(f"{cfg} is not present")
    _assert_direct_as_close_as_float32_allows(_torch_vs_direct(cfg, (size, size), tmp_path))


def test_region_head_metadata(shared_darknet):
    cfg = shared_darknet / "zoo" / "yolov2-voc.cfg"
    if not cfg.is_file():
        pytest.skip(f"{cfg} is not present")
    plan = plan_network(cfg, 416)
    (head,) = plan.info.heads
    assert isinstance(head, RegionHead) and head.kind == "region"
    assert (head.classes, head.coords, head.num, head.softmax, head.stride) == (20, 4, 5, True, 32)
    assert head.anchors[0] == (1.3221, 1.73145)  # grid cells, as the cfg lists them
    assert plan.layers[head.layer].shape == (125, 13, 13)


def test_normalized_shortcut_weights_is_one_formula_for_numpy_and_torch():
    from foldkit.darknet.specs import Shortcut

    raw = np.random.default_rng(10).standard_normal(3 * 4)
    for normalization in ("relu", "softmax"):
        p = Shortcut(shape=(4, 1, 1), from_channels=(4, 4), steps=(1, 1), weights_type="per_channel",
                     normalization=normalization)
        numpy_result = normalized_shortcut_weights(raw, p)
        torch_result = normalized_shortcut_weights(torch.from_numpy(raw), p).numpy()
        np.testing.assert_allclose(numpy_result.ravel(), _fused(raw, 3, normalization), rtol=1e-12)
        np.testing.assert_allclose(torch_result, numpy_result, rtol=1e-12)


def test_region_heads_decode_as_darknets_region_layer(tmp_path):
    """A planted head map (the network input, sampled every 2nd pixel) decoded per FORMAT-ZOO §3.3."""
    from foldkit.darknet.decode import YoloDecoder

    classes, num = 3, 2
    body = ("[local_avgpool]\nsize=1\nstride=2\npadding=0\n"
            f"[region]\nanchors=1.5,2,3,0.5\nclasses={classes}\nnum={num}\nsoftmax=1\n")
    cfg = _one_layer(tmp_path, body, (num * (classes + 5), 8, 12))
    raw = torch.randn(1, num * (classes + 5), 8, 12, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        got = YoloDecoder(build_model(cfg))(raw).numpy()
    t = raw[:, :, ::2, ::2].double().numpy().reshape(1, num, classes + 5, 4, 6)
    sigmoid = 1 / (1 + np.exp(-t))
    anchors = np.array([[1.5, 2.0], [3.0, 0.5]])
    rows, cols = np.arange(4).reshape(1, 1, 4, 1), np.arange(6).reshape(1, 1, 1, 6)
    x = (cols + sigmoid[:, :, 0]) / 6 * 12  # (col + σ(tx))/W in network pixels
    y = (rows + sigmoid[:, :, 1]) / 4 * 8
    w = np.exp(t[:, :, 2]) * anchors[:, 0].reshape(1, num, 1, 1) / 6 * 12  # anchors in grid cells
    h = np.exp(t[:, :, 3]) * anchors[:, 1].reshape(1, num, 1, 1) / 4 * 8
    e = np.exp(t[:, :, 5:] - t[:, :, 5:].max(axis=2, keepdims=True))
    expected = np.concatenate([np.stack([x, y, w, h, sigmoid[:, :, 4]], axis=2), e / e.sum(axis=2, keepdims=True)],
                              axis=2).transpose(0, 1, 3, 4, 2).reshape(1, -1, classes + 5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_gaussian_yolo_heads_are_exported_raw_not_decoded(tmp_path):
    from foldkit.darknet.decode import YoloDecoder

    cfg = _one_layer(tmp_path, "[activation]\n[Gaussian_yolo]\nmask=0\nanchors=4,4\nclasses=2\nnum=1\n", (11, 4, 4))
    model = build_model(cfg)
    x = torch.randn(1, 11, 4, 4)
    assert torch.equal(model(x)[0], x)
    with pytest.raises(FoldkitError, match=r"\[Gaussian_yolo\] head; foldkit exports its raw map"):
        YoloDecoder(model)


def test_yolov2_weights_size_matches_the_published_file(shared_darknet):
    """pjreddie's yolov2.weights is 203,934,260 bytes: a 16-byte header and 50,983,561 floats."""
    header = WeightsHeader(0, 1, 0, 0)
    assert header.size + 4 * expected_floats(plan_network(shared_darknet / "yolov2.cfg", 416)) == 203_934_260


def test_connected_weights_of_a_transposed_file_are_transposed(tmp_path):
    """A header version above 1000 means [connected] weights are stored [inputs][outputs] (FORMAT-ZOO §4)."""
    cfg = _one_layer(tmp_path, "[connected]\noutput=3\nactivation=linear\n", (2, 2, 1))
    model = build_model(cfg, seed=12)
    weight = model.layers[0].linear.weight.detach().numpy()
    bias = model.layers[0].linear.bias.detach().numpy()
    header = WeightsHeader(1001, 0, 0, 0)
    (tmp_path / "t.weights").write_bytes(header.pack() + bias.astype("<f4").tobytes()
                                         + weight.T.astype("<f4").tobytes())
    again = build_model(cfg)
    load_weights(again, tmp_path / "t.weights")
    np.testing.assert_array_equal(again.layers[0].linear.weight.detach().numpy(), weight)
