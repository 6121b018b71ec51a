"""A Darknet network plan (:mod:`.layers`) → an ``nn.Module`` that computes what Darknet computes.

Each section after ``[net]`` becomes one module with Darknet's layer index.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from foldkit.darknet import layers as spec
from foldkit.darknet.layers import (  # noqa: F401 - re-exported for users of this module
    BUILTIN_MODELS, NetInfo, NetworkPlan, YoloHead, builtin_cfg_path, plan_network, resolve_cfg,
)
from foldkit.nn import ConvNormAct, make_activation

class Route(nn.Module):
    """Concatenate the listed layers' outputs along channels; with ``groups``, take one slice of each."""

    def __init__(self, groups: int = 1, group_id: int = 0) -> None:
        super().__init__()
        self.groups, self.group_id = groups, group_id

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.groups > 1:
            inputs = tuple(t.chunk(self.groups, dim=1)[self.group_id] for t in inputs)
        return inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=1)


class Shortcut(nn.Module):
    """Residual sum of this layer's input and the ``from`` layers, then the activation."""

    def __init__(self, activation: str = "linear") -> None:
        super().__init__()
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        for other in others:
            x = x + other
        return self.act(x)


class DarknetMaxPool(nn.Module):
    """Darknet's maxpool: leading pad floor(p/2), trailing pad up to the rest, padding never wins.

    Padded positions behave as −∞ (Darknet skips them); zero padding would change outputs. The
    common size-2 stride-2 pool is exactly ``MaxPool2d(2, 2, ceil_mode=True)``; other cases pad
    explicitly with −∞ (for YOLOv3-tiny's size-2 stride-1 pool: right and bottom only).
    """

    def __init__(self, size: int, stride_y: int, stride_x: int, padding: int) -> None:
        super().__init__()
        self.lead = padding // 2
        self.trail = padding - self.lead
        # Without a leading pad, a size-k stride-k pool is ceil mode: windows start inside the input.
        self.plain_ceil = self.lead == 0 and size == stride_y == stride_x and padding == size - 1
        self.pool = nn.MaxPool2d(size, (stride_y, stride_x), ceil_mode=self.plain_ceil)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.plain_ceil and (self.lead or self.trail):
            x = F.pad(x, (self.lead, self.trail, self.lead, self.trail), value=float("-inf"))
        return self.pool(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by ``stride``, times Darknet's ``scale``."""

    def __init__(self, stride: int, scale: float = 1.0) -> None:
        super().__init__()
        self.stride, self.scale = stride, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=self.stride, mode="nearest")
        return x * self.scale if self.scale != 1.0 else x


class GlobalAvgPool(nn.Module):
    """Darknet's ``[avgpool]``: the mean over H×W, output C×1×1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 1)


class Softmax(nn.Module):
    """Darknet's ``[softmax]`` over the flattened C×H×W values of each sample."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return torch.softmax(x / self.temperature if self.temperature != 1.0 else x, dim=1)


class Passthrough(nn.Module):
    """Layers that change nothing at inference: ``[yolo]`` (its input is a head output), dropout, cost."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class DarknetModel(nn.Module):
    """A network built from a Darknet cfg.

    ``forward`` returns, for a detector, a tuple of the raw head maps (N, anchors·(5+classes), H, W),
    one per ``[yolo]`` section in cfg order; for a classifier, the last layer's output.
    ``layers[i]`` is Darknet's layer ``i``; ``inputs_of[i]`` lists the layer indices it reads
    (−1 is the network input).
    """

    def __init__(self, layers: list[nn.Module], plan: NetworkPlan) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.plan = plan
        self.inputs_of = [layer.sources for layer in plan.layers]
        self.kinds = [layer.kind for layer in plan.layers]
        self.info = plan.info
        self.head_layers = [head.layer for head in plan.info.heads]

    @property
    def is_detector(self) -> bool:
        return bool(self.head_layers)

    def output_names(self) -> list[str]:
        if self.is_detector:
            return [f"head{i}" for i in range(len(self.head_layers))]
        return ["output"]

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outputs: list[torch.Tensor] = []
        for layer, sources in zip(self.layers, self.inputs_of):
            inputs = [x if j < 0 else outputs[j] for j in sources]
            outputs.append(layer(*inputs))
        if self.head_layers:
            return tuple(outputs[i] for i in self.head_layers)
        return outputs[-1]


def make_module(layer: spec.Layer) -> nn.Module:
    """The PyTorch module for one planned layer."""
    p = layer.params
    if isinstance(p, spec.Conv):
        return ConvNormAct(p.in_channels, p.filters, p.size, p.stride, p.padding, groups=p.groups,
                           dilation=p.dilation, norm="batch" if p.batch_normalize else "none", activation=p.activation)
    if isinstance(p, spec.MaxPool):
        return DarknetMaxPool(p.size, p.stride[0], p.stride[1], p.padding)
    if isinstance(p, spec.Route):
        return Route(p.groups, p.group_id)
    if isinstance(p, spec.Shortcut):
        return Shortcut(p.activation)
    if isinstance(p, spec.Upsample):
        return Upsample(p.stride, p.scale)
    if isinstance(p, spec.AvgPool):
        return GlobalAvgPool()
    if isinstance(p, spec.Softmax):
        return Softmax(p.temperature)
    return Passthrough()  # [yolo], [dropout], [cost]


def build_model(
    model: str | os.PathLike, img_size: int | tuple[int, int] | None = None, *, seed: int | None = None
) -> DarknetModel:
    """Build the network of a built-in name or a cfg path, in eval mode.

    ``img_size`` (an int or (height, width)) overrides ``[net]``'s size; weights do not depend
    on it, but shapes are checked for it. ``seed`` makes the initial weights reproducible
    without touching the caller's global random state.
    """
    plan = plan_network(model, img_size)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        modules = [make_module(layer) for layer in plan.layers]
    return DarknetModel(modules, plan).eval()
