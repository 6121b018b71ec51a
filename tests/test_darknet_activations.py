"""Darknet's activations: the one formula table, through PyTorch and through the direct ONNX writer.

The reference is a float64 numpy transcription of Darknet's C (pjreddie's activations.h, AlexeyAB's
activations.c for the newer ones), written here independently of :mod:`foldkit.activations`, with
Darknet's literals (0.1, 1.0507, 0.797885 …) so a constant changed in foldkit's table is caught.
Both backends run in float32 and are held to the float64 reference on the float32 inputs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from foldkit import build_model
from foldkit.activations import ACTIVATION_NAMES
from foldkit.darknet.to_onnx import darknet_to_onnx
from foldkit.darknet.weights import WeightsHeader, save_weights
from foldkit.defaults import INPUT_NAME
from foldkit.runtime import create_session, run

# float32 evaluation against float64: measured ≤ 6e-7·(1 + |ref|) on this grid (swish through ONNX Runtime,
# AMD EPYC); the bound 1e-5·(scale + |ref|) leaves more than 15× headroom.
ATOL, RTOL = 1e-5, 1e-5


def _elementwise(f, x: np.ndarray) -> np.ndarray:
    return np.vectorize(f, otypes=[np.float64])(x)


def _softplus(x: np.ndarray) -> np.ndarray:
    """AlexeyAB's softplus_activate with threshold 20 (mish's inner term)."""
    with np.errstate(over="ignore"):
        return np.where(x > 20, x, np.where(x < -20, np.exp(x), np.log1p(np.exp(x))))


def _channel_normalized(values: np.ndarray) -> np.ndarray:
    return values / (0.0001 + values.sum(1, keepdims=True))


def _maxval_softmax(x: np.ndarray) -> np.ndarray:
    return _channel_normalized(np.exp(x - x.max(1, keepdims=True)))


DARKNET = {  # name → float64 formula as Darknet's C writes it
    "linear": lambda x: x,
    "logistic": lambda x: 1 / (1 + np.exp(-x)),
    "loggy": lambda x: 2 / (1 + np.exp(-x)) - 1,
    "relu": lambda x: x * (x > 0),
    "relu6": lambda x: np.minimum(np.maximum(x, 0), 6),
    "elu": lambda x: _elementwise(lambda v: v if v >= 0 else math.exp(v) - 1, x),
    "selu": lambda x: _elementwise(lambda v: 1.0507 * v if v >= 0 else 1.0507 * 1.6732 * (math.exp(v) - 1), x),
    "gelu": lambda x: 0.5 * x * (1 + np.tanh(0.797885 * x + 0.035677 * x ** 3)),
    "relie": lambda x: np.where(x > 0, x, 0.01 * x),
    "ramp": lambda x: x * (x > 0) + 0.1 * x,
    "leaky": lambda x: np.where(x > 0, x, 0.1 * x),
    "revleaky": lambda x: np.where(x > 0, x, 0.1 * x),
    "tanh": lambda x: np.tanh(x),  # Darknet: (exp(2x) − 1)/(exp(2x) + 1), which overflows to NaN past x ≈ 355
    "plse": lambda x: _elementwise(
        lambda v: .01 * (v + 4) if v < -4 else (.01 * (v - 4) + 1 if v > 4 else .125 * v + .5), x),
    "stair": lambda x: _elementwise(
        lambda v: math.floor(v / 2) if math.floor(v) % 2 == 0 else (v - math.floor(v)) + math.floor(v / 2), x),
    "hardtan": lambda x: np.clip(x, -1, 1),
    "lhtan": lambda x: _elementwise(lambda v: .001 * v if v < 0 else (.001 * (v - 1) + 1 if v > 1 else v), x),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "hard_mish": lambda x: _elementwise(lambda v: v if v > 0 else (v * v / 2 + v if v > -2 else 0.0), x),
    "normalize_channels": lambda x: _channel_normalized(np.where(x > 0, x, 0)),
    "normalize_channels_softmax": lambda x: _channel_normalized(np.exp(x)),
    "normalize_channels_softmax_maxval": _maxval_softmax,
}


def _grid(largest: float) -> np.ndarray:
    """[-8, 8) in steps of 1/8 (integers and halves: where stair and the clamps turn) and large values, 3 channels."""
    fine = np.arange(-64, 64, dtype=np.float64) / 8.0
    large = np.array([-largest, -50.0, -20.5, -12.25, 12.25, 20.5, 50.0, largest] * 2)
    grid = np.concatenate([fine, large])  # 144 values
    return np.stack([grid, grid[::-1], np.roll(grid, 5)]).reshape(1, 3, 8, 18).astype(np.float32)


def _input(name: str) -> np.ndarray:
    # exp of the input must stay finite in float32 for the softmax without the max subtracted (Darknet's too)
    return _grid(80.0 if name == "normalize_channels_softmax" else 1000.0)


def _one_layer(tmp_path: Path, body: str, shape: tuple[int, int, int]) -> Path:
    c, h, w = shape
    path = tmp_path / "t.cfg"
    path.write_text(f"[net]\nchannels={c}\nheight={h}\nwidth={w}\n" + body)
    return path


def _assert_close(got: np.ndarray, expected: np.ndarray, scale: np.ndarray | float = 1.0) -> None:
    error = np.abs(got.astype(np.float64) - expected)
    bound = ATOL * scale + RTOL * np.abs(expected)
    assert np.isfinite(got).all()
    assert (error <= bound).all(), f"max error {error.max():.3g} at {np.unravel_index(error.argmax(), error.shape)}"


def test_every_activation_has_a_reference():
    assert set(DARKNET) == set(ACTIVATION_NAMES)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_matches_darknets_formula_in_torch_and_onnx(tmp_path, name):
    """The one formula, evaluated by PyTorch and by ONNX Runtime, against Darknet's C in float64."""
    x = _input(name)
    with np.errstate(over="ignore"):  # exp(1000) = inf in the reference, as in Darknet's C
        expected = DARKNET[name](x.astype(np.float64))
    cfg = _one_layer(tmp_path, f"[activation]\nactivation={name}\n", x.shape[1:])
    with torch.no_grad():
        _assert_close(build_model(cfg)(torch.from_numpy(x)).numpy(), expected)
    (tmp_path / "empty.weights").write_bytes(WeightsHeader().pack())
    session = create_session(darknet_to_onnx(cfg, tmp_path / "empty.weights").model(), providers="cpu")
    _assert_close(run(session, {INPUT_NAME: x})["output"], expected)


def _conv_reference(x: np.ndarray, weight: np.ndarray, bn: tuple[np.ndarray, ...]) -> np.ndarray:
    """3×3 pad-1 conv, then Darknet's BatchNorm (ε = 1e-5 inside the root), float64."""
    gamma, beta, mean, var = (a.astype(np.float64)[:, None, None] for a in bn)
    padded = np.pad(x.astype(np.float64)[0], ((0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))  # C, H, W, 3, 3
    conv = np.einsum("chwij,fcij->fhw", windows, weight.astype(np.float64))
    return gamma * (conv - mean) / np.sqrt(var + 1e-5) + beta


def test_leaky_slope_on_a_conv_in_torch_and_onnx(tmp_path):
    """A conv + BN + leaky layer, both routes, against Darknet's leaky (slope 0.1) in float64.

    Catches a slope changed anywhere (0.1 → 0.01 moves every negative output by 0.09·|y|).
    """
    cfg = _one_layer(tmp_path, "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\nactivation=leaky\n",
                     (3, 6, 6))
    model = build_model(cfg, seed=3)
    generator = torch.Generator().manual_seed(4)
    norm = model.layers[0].norm
    with torch.no_grad():
        for tensor, low in ((norm.weight, 0.5), (norm.bias, -1.0), (norm.running_mean, -0.5), (norm.running_var, 0.2)):
            tensor.copy_(torch.rand(4, generator=generator) + low)
    save_weights(model, tmp_path / "t.weights")
    x = np.random.default_rng(5).standard_normal((1, 3, 6, 6)).astype(np.float32)
    before = _conv_reference(x, model.layers[0].conv.weight.detach().numpy(),
                             tuple(t.detach().numpy() for t in (norm.weight, norm.bias, norm.running_mean,
                                                                  norm.running_var)))
    assert (before < -0.5).sum() > 20, "the test needs negative conv outputs to see the slope"
    expected = np.where(before > 0, before, 0.1 * before)[None]
    scale = float(np.abs(expected).max())
    with torch.no_grad():
        _assert_close(model(torch.from_numpy(x)).numpy(), expected, scale)
    session = create_session(darknet_to_onnx(cfg, tmp_path / "t.weights").model(), providers="cpu")
    _assert_close(run(session, {INPUT_NAME: x})["output"], expected, scale)
