"""The Darknet conv block and its parts: convolution, normalization, activation.

:class:`ConvNormAct` is the PyTorch counterpart of keras-yolo3's ``DarknetConv2D_BN_Leaky``: a
convolution without bias, a BatchNorm, and LeakyReLU(0.1). Activation and normalization are
selectable so that users can build the variants and see which of them fold: BatchNorm (and
InstanceNorm with running statistics) is a fixed per-channel affine map at inference and folds
into the convolution; GroupNorm, LayerNorm and InstanceNorm without running statistics normalize
with statistics of each sample and cannot fold.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from foldkit.defaults import (
    ACTIVATION_NAMES,
    BN_EPS,
    GELU_C1,
    GELU_C3,
    LEAKY_SLOPE,
    NORMALIZE_CHANNELS_EPS,
    SELU_ALPHA,
    SELU_LAMBDA,
)
from foldkit.errors import FoldkitError


class DarknetActivation(nn.Module):
    """A Darknet activation with no PyTorch twin, written as Darknet's formula (activations.h/.c).

    The piecewise ones are expressed with clamps, which is exact and exports to plain ONNX ops.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def extra_repr(self) -> str:
        return self.name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FORMULAS[self.name](x)


def _normalize_channels(x: torch.Tensor) -> torch.Tensor:
    positive = torch.relu(x)
    return positive / (NORMALIZE_CHANNELS_EPS + positive.sum(dim=1, keepdim=True))


def _normalize_channels_softmax(x: torch.Tensor, subtract_max: bool) -> torch.Tensor:
    if subtract_max:
        x = x - x.amax(dim=1, keepdim=True)
    e = torch.exp(x)
    return e / (NORMALIZE_CHANNELS_EPS + e.sum(dim=1, keepdim=True))


def _stair(x: torch.Tensor) -> torch.Tensor:
    n = torch.floor(x)
    odd = n - 2.0 * torch.floor(n * 0.5)
    return torch.floor(x * 0.5) + odd * (x - n)


def _soft_clip(x: torch.Tensor, low: float, high: float, slope: float, scale: float, offset: float) -> torch.Tensor:
    """``scale·clip(x, low, high) + offset + slope·(x − clip(x))``: Darknet's plse and lhtan."""
    clipped = torch.clamp(x, low, high)
    return clipped * scale + offset + (x - clipped) * slope


_FORMULAS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu6": lambda x: torch.clamp(x, 0.0, 6.0),
    # exp(x) − 1 as Darknet writes it (and as ONNX exports it: expm1 has no ONNX op)
    "elu": lambda x: torch.where(x >= 0, x, torch.exp(torch.clamp(x, max=0.0)) - 1.0),
    "selu": lambda x: SELU_LAMBDA * torch.where(x >= 0, x, SELU_ALPHA * (torch.exp(torch.clamp(x, max=0.0)) - 1.0)),
    "gelu": lambda x: 0.5 * x * (1.0 + torch.tanh(GELU_C1 * x + GELU_C3 * x * x * x)),
    "ramp": lambda x: torch.relu(x) + 0.1 * x,
    "loggy": lambda x: 2.0 * torch.sigmoid(x) - 1.0,
    "plse": lambda x: _soft_clip(x, -4.0, 4.0, 0.01, 0.125, 0.5),
    "lhtan": lambda x: _soft_clip(x, 0.0, 1.0, 0.001, 1.0, 0.0),
    "hardtan": lambda x: torch.clamp(x, -1.0, 1.0),
    "stair": _stair,
    "hard_mish": lambda x: x * torch.clamp(x + 2.0, 0.0, 2.0) * 0.5,
    "normalize_channels": _normalize_channels,
    "normalize_channels_softmax": lambda x: _normalize_channels_softmax(x, False),
    "normalize_channels_softmax_maxval": lambda x: _normalize_channels_softmax(x, True),
}

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "leaky": lambda: nn.LeakyReLU(LEAKY_SLOPE),
    "revleaky": lambda: nn.LeakyReLU(LEAKY_SLOPE),  # Darknet computes it exactly as leaky
    "relie": lambda: nn.LeakyReLU(0.01),
    "relu": nn.ReLU,
    "logistic": nn.Sigmoid,
    "tanh": nn.Tanh,
    # nn.Mish uses softplus with threshold 20, as Darknet's CPU mish does.
    "mish": nn.Mish,
    # Darknet's swish is x·σ(x) without a β parameter: exactly SiLU.
    "swish": nn.SiLU,
    "linear": nn.Identity,
    **{name: (lambda name=name: DarknetActivation(name)) for name in _FORMULAS},
}
assert set(ACTIVATIONS) == set(ACTIVATION_NAMES), "defaults.ACTIVATION_NAMES and nn.ACTIVATIONS must agree"


def make_activation(name: str) -> nn.Module:
    """Return the activation module for a Darknet activation name."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise FoldkitError(
            f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}"
        ) from None


def _group_count(channels: int, preferred: int = 32) -> int:
    """The largest divisor of ``channels`` not above ``preferred`` (GroupNorm needs a divisor)."""
    return max(g for g in range(1, min(preferred, channels) + 1) if channels % g == 0)


NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": lambda c: nn.BatchNorm2d(c, eps=BN_EPS),
    "group": lambda c: nn.GroupNorm(_group_count(c), c),
    # LayerNorm over (C, H, W) with a per-channel affine, independent of the spatial size.
    "layer": lambda c: nn.GroupNorm(1, c),
    "instance": lambda c: nn.InstanceNorm2d(c, affine=True),
    "none": lambda c: nn.Identity(),
}


def make_norm(name: str, channels: int) -> nn.Module:
    """Return the normalization module ``name`` for ``channels`` channels."""
    try:
        return NORMS[name](channels)
    except KeyError:
        raise FoldkitError(f"unknown normalization {name!r}; known: {', '.join(NORMS)}") from None


class ConvNormAct(nn.Sequential):
    """Conv2d → normalization → activation; Darknet's ``[convolutional]`` layer.

    With a normalization the convolution has no bias (the norm's shift replaces it), as in
    Darknet with ``batch_normalize=1``; with ``norm="none"`` the convolution has a bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | None = None,
        groups: int = 1,
        dilation: int = 1,
        norm: str = "batch",
        activation: str = "leaky",
    ) -> None:
        if padding is None:
            padding = (kernel_size // 2) * dilation
        conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding,
            dilation=dilation, groups=groups, bias=(norm == "none"),
        )
        super().__init__()
        self.conv = conv
        self.norm = make_norm(norm, out_channels)
        self.act = make_activation(activation)


def DarknetConv2D_BN_Leaky(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> ConvNormAct:  # noqa: N802 - keras-yolo3's name
    """keras-yolo3's block by its own name: conv without bias, BatchNorm, LeakyReLU(0.1).

    keras-yolo3 pads stride-2 convs on the top-left only ('valid' after ZeroPadding2D(((1,0),(1,0))));
    this uses Darknet's symmetric padding, which is what the Darknet weights were trained with.
    """
    return ConvNormAct(in_channels, out_channels, kernel_size, stride, norm="batch", activation="leaky")


def count_parameters(model: nn.Module) -> int:
    """Learnable parameters (weights, biases, γ, β); running statistics are buffers, not counted."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "ACTIVATIONS", "NORMS", "ConvNormAct", "DarknetConv2D_BN_Leaky", "make_activation",
    "make_norm", "count_parameters", "BN_EPS", "LEAKY_SLOPE",
]
