"""The Darknet conv block and its parts: convolution, normalization, activation.

:class:`ConvNormAct` is the PyTorch counterpart of keras-yolo3's ``DarknetConv2D_BN_Leaky``: a
convolution without bias, a BatchNorm, and LeakyReLU(0.1). Activation and normalization are
selectable so that users can build the variants and see which of them fold: BatchNorm (and
InstanceNorm with running statistics) is a fixed per-channel affine map at inference and folds
into the convolution; GroupNorm, LayerNorm and InstanceNorm without running statistics normalize
with statistics of each sample and cannot fold.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional

from foldkit.activations import LEAKY_SLOPE, formula
from foldkit.defaults import BN_EPS
from foldkit.errors import FoldkitError


class TorchOps:
    """The activation primitives of :mod:`foldkit.activations`, as torch functions (traceable, exportable)."""

    relu = staticmethod(torch.relu)
    sigmoid = staticmethod(torch.sigmoid)
    tanh = staticmethod(torch.tanh)
    exp = staticmethod(torch.exp)
    floor = staticmethod(torch.floor)
    mish = staticmethod(functional.mish)  # softplus linear above 20, as Darknet's CPU mish

    @staticmethod
    def leaky(x: torch.Tensor, slope: float) -> torch.Tensor:
        return functional.leaky_relu(x, slope)

    @staticmethod
    def clip(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return torch.clamp(x, low, high)

    @staticmethod
    def elu(x: torch.Tensor, alpha: float) -> torch.Tensor:
        return functional.elu(x, alpha)

    @staticmethod
    def channel_sum(x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1, keepdim=True)

    @staticmethod
    def channel_max(x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=1, keepdim=True)


class DarknetActivation(nn.Module):
    """A Darknet activation: its one formula (:mod:`foldkit.activations`) on torch tensors.

    The module keeps the activation's name and looks the formula up when it runs, so it pickles
    (the benchmark's memory processes and ``torch.save`` need that; a formula is a lambda).
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        formula(name)  # an unknown name fails here, when the network is built
        self.name = name

    def extra_repr(self) -> str:
        return self.name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return formula(self.name)(x, TorchOps)


def make_activation(name: str) -> nn.Module:
    """Return the activation module for a Darknet activation name (a :class:`FoldkitError` if unknown)."""
    return DarknetActivation(name)


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
    "NORMS", "ConvNormAct", "DarknetConv2D_BN_Leaky", "make_activation",
    "make_norm", "count_parameters", "BN_EPS", "LEAKY_SLOPE",
]
