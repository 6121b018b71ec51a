"""A Darknet network plan (:mod:`.specs`) → an ``nn.Module`` that computes what Darknet computes.

Each section after ``[net]`` becomes one module with Darknet's layer index.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.functional import adaptive_avg_pool2d, avg_pool2d, conv2d, interpolate, pad

from foldkit.darknet import specs as spec
from foldkit.darknet.builtin import BUILTIN_MODELS, builtin_cfg_path, resolve_cfg  # noqa: F401 - re-exported
from foldkit.darknet.plan import plan_network
from foldkit.darknet.registry import LAYER_TYPES, lookup, require_all
from foldkit.darknet.specs import NetInfo, NetworkPlan, YoloHead  # noqa: F401 - re-exported for users of this module
from foldkit.defaults import BN_EPS
from foldkit.nn import ConvNormAct, make_activation


class SpecModule(nn.Module):
    """A module whose behaviour is its plan entry (``spec``), with nothing learned."""

    def __init__(self, p: object) -> None:
        super().__init__()
        self.spec: Any = p


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
    """Darknet's ``[shortcut]``: a (weighted) sum of this layer's input and the ``from`` layers, then the activation.

    Inputs are aligned as :class:`foldkit.darknet.specs.Shortcut` describes: a larger map is sampled
    every ``step``-th pixel, extra channels are ignored, missing channels add nothing. With
    ``weights_type`` the raw weights are a parameter (what ``.weights`` stores) and are normalized as
    Darknet does before it infers.
    """

    def __init__(self, p: spec.Shortcut) -> None:
        super().__init__()
        self.spec = p
        self.act = make_activation(p.activation)
        self.weight = nn.Parameter(torch.ones(p.weight_count)) if p.weight_count else None

    def forward(self, x: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        p = self.spec
        inputs = [x, *(self._align(o, c, step) for o, c, step in zip(others, p.from_channels, p.steps, strict=True))]
        if self.weight is not None:
            factors = spec.normalized_shortcut_weights(self.weight, p)
            inputs = [factors[i].view(1, -1, 1, 1) * t for i, t in enumerate(inputs)]  # indexed: fx-traceable
        total = inputs[0]
        for other in inputs[1:]:
            total = total + other
        return self.act(total)

    def _align(self, other: torch.Tensor, channels: int, step: int) -> torch.Tensor:
        own = self.spec.shape[0]
        if step > 1:  # the planner checked that the larger map is exactly step times this one: no end needed
            other = other[:, :, ::step, ::step]
        if channels > own:
            return other[:, :own]
        if channels < own:
            return pad(other, (0, 0, 0, 0, 0, own - channels))
        return other


class Blur(nn.Module):
    """Darknet's fixed antialiasing blur: a depthwise conv with a constant kernel (a buffer, not a weight)."""

    kernel: torch.Tensor

    def __init__(self, channels: int, antialiasing: int, stride: tuple[int, int]) -> None:
        super().__init__()
        kernel = torch.tensor(spec.blur_kernel(antialiasing), dtype=torch.float32)
        self.register_buffer("kernel", kernel.expand(channels, 1, *kernel.shape).contiguous())
        self.stride, self.padding, self.channels = stride, spec.blur_padding(antialiasing), channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.kernel, None, self.stride, self.padding, groups=self.channels)


class SharedConv(nn.Module):
    """A conv with ``share_index``: the owner layer's weights and BatchNorm, its own stride, padding and dilation."""

    owner: Any  # a ConvNormAct (torch types submodule attributes loosely)

    def __init__(self, owner: nn.Module, p: spec.Conv) -> None:
        super().__init__()
        self.owner = owner
        self.stride, self.padding, self.dilation, self.groups = p.conv_stride, p.padding, p.dilation, p.groups
        self.act = make_activation(p.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.owner.conv
        y = conv2d(x, conv.weight, conv.bias, self.stride, self.padding, self.dilation, self.groups)
        return self.act(self.owner.norm(y))


class Connected(nn.Module):
    """Darknet's ``[connected]``: flatten (channel-major), Linear, optional BatchNorm, activation; N×1×1 out."""

    def __init__(self, p: spec.Connected) -> None:
        super().__init__()
        self.linear = nn.Linear(p.inputs, p.outputs, bias=not p.batch_normalize)
        self.norm = nn.BatchNorm1d(p.outputs, eps=BN_EPS) if p.batch_normalize else nn.Identity()
        self.act = make_activation(p.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.linear(torch.flatten(x, 1))))[:, :, None, None]


class Crop(SpecModule):
    """Darknet's ``[crop]`` at inference: the centre crop, then ``2x − 1`` unless ``noadjust``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.spec
        x = x[:, :, p.top:p.top + p.height, p.left:p.left + p.width]
        return x * 2.0 - 1.0 if p.adjust else x


class Reorg(nn.Module):
    """``[reorg]`` (Darknet's index map: SpaceToDepth of the input reinterpreted as (C/s², H·s, W·s)) or ``[reorg3d]``.

    ``reverse`` is DepthToSpace (DCR); ``[reorg3d]`` reverse reinterprets around it.
    """

    def __init__(self, p: spec.Reorg, out_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.spec, self.out_shape = p, out_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sizes are read from ``x`` (traced as Shape ops), so an export with a dynamic size stays correct."""
        s, reverse = self.spec.stride, self.spec.reverse
        c, h, w = self.spec.in_shape[0], x.shape[2], x.shape[3]
        if self.spec.darknet_map != reverse:  # reinterpret the buffer as (C/s², H·s, W·s) around the map
            c, h, w = c // (s * s), h * s, w * s
        batch = x.shape[0]
        if reverse:  # DepthToSpace, DCR
            y = x.reshape(batch, s, s, c // (s * s), h, w).permute(0, 3, 4, 1, 5, 2)
        else:  # SpaceToDepth
            y = x.reshape(batch, c, h // s, s, w // s, s).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(batch, self.out_shape[0], *_scaled(x, self.out_shape[1] / self.spec.in_shape[1]))


def _scaled(x: torch.Tensor, factor: float) -> tuple:
    """``x``'s height and width times ``factor`` (a stride or its inverse), as the tracer records them."""
    if factor >= 1:
        return x.shape[2] * int(factor), x.shape[3] * int(factor)
    return x.shape[2] // round(1 / factor), x.shape[3] // round(1 / factor)


class ScaleChannels(nn.Module):
    """``[scale_channels]``: the ``from`` map times this layer's input (C×1×1 per channel, 1×H×W per pixel)."""

    def __init__(self, activation: str) -> None:
        super().__init__()
        self.act = make_activation(activation)

    def forward(self, scale: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.act(target * scale)


class Sam(ScaleChannels):
    """``[sam]``: this layer's input times the ``from`` map, elementwise."""


class DepthMaxPool(nn.Module):
    """``maxpool_depth``: the max over channels g, g+G, … at each pixel."""

    def __init__(self, p: spec.DepthMaxPool, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.spec, self.shape = p, shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups, height, width = self.shape
        return x.reshape(-1, self.spec.in_channels // groups, groups, height, width).amax(dim=1)


class LocalAvgPool(SpecModule):
    """``[local_avgpool]``: maxpool's windows (leading pad floor(p/2)), the mean of the in-bounds elements only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.spec
        pads = (p.lead, p.trail, p.lead, p.trail)
        size = (p.size, p.size)
        total = avg_pool2d(pad(x, pads), size, p.stride)
        count = avg_pool2d(pad(torch.ones_like(x[:1, :1]), pads), size, p.stride)
        return total / count


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
            x = pad(x, (self.lead, self.trail, self.lead, self.trail), value=float("-inf"))
        return self.pool(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by ``stride``, times Darknet's ``scale``."""

    def __init__(self, stride: int, scale: float = 1.0) -> None:
        super().__init__()
        self.stride, self.scale = stride, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = interpolate(x, scale_factor=self.stride, mode="nearest")
        return x * self.scale if self.scale != 1.0 else x


class GlobalAvgPool(nn.Module):
    """Darknet's ``[avgpool]``: the mean over H×W, output C×1×1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return adaptive_avg_pool2d(x, 1)


class Softmax(nn.Module):
    """Darknet's ``[softmax]`` over the flattened C×H×W values of each sample, in ``groups`` equal chunks."""

    def __init__(self, temperature: float = 1.0, groups: int = 1) -> None:
        super().__init__()
        self.temperature, self.groups = temperature, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        if self.temperature != 1.0:
            x = x / self.temperature
        if self.groups == 1:
            return torch.softmax(x, dim=1)
        return torch.softmax(x.view(x.shape[0], self.groups, -1), dim=-1).view(x.shape[0], -1)


def patches(x: torch.Tensor, size: int, stride: int, padding: int) -> torch.Tensor:
    """Darknet's ``im2col``: (N, C·size², out_h·out_w), rows in (c, ky, kx) order, zero padding.

    Strided slices and a stack (rather than ``unfold``), which trace and export as plain ops.
    """
    x = pad(x, (padding,) * 4)
    out_h, out_w = (x.shape[2] - size) // stride + 1, (x.shape[3] - size) // stride + 1
    windows = [x[:, :, ky:ky + stride * (out_h - 1) + 1:stride, kx:kx + stride * (out_w - 1) + 1:stride]
               for ky in range(size) for kx in range(size)]
    return torch.stack(windows, dim=2).reshape(x.shape[0], -1, out_h * out_w)


class LocallyConnected(nn.Module):
    """Darknet's ``[local]``: at each output position j its own kernels ``weight[j]`` (filters × C·size²).

    ``bias`` has one value per output element (filters × out_h × out_w), as ``.weights`` stores it.
    Initialized as Darknet does: uniform in ±√(2 / (C·size²)).
    """

    def __init__(self, p: spec.Local) -> None:
        super().__init__()
        self.spec = p
        scale = (2.0 / p.patch) ** 0.5
        self.weight = nn.Parameter((torch.rand(p.locations, p.filters, p.patch) * 2 - 1) * scale)
        self.bias = nn.Parameter(torch.zeros(p.filters, p.out_h, p.out_w))
        self.act = make_activation(p.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.spec
        cols = patches(x, p.size, p.stride, p.pad).permute(2, 0, 1)  # (L, N, K)
        y = torch.matmul(cols, self.weight.transpose(1, 2)).permute(1, 2, 0)  # (N, filters, L)
        return self.act(y.reshape(-1, p.filters, p.out_h, p.out_w) + self.bias)


class Detection(SpecModule):
    """yolov1's ``[detection]``: the map unchanged, or each cell's class scores softmaxed (``softmax=1``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.spec
        if not p.softmax:
            return x
        flat, count = torch.flatten(x, 1), p.cells * p.classes
        probs = torch.softmax(flat[:, :count].reshape(-1, p.cells, p.classes), dim=-1).reshape(-1, count)
        return torch.cat([probs, flat[:, count:]], dim=1).reshape(x.shape)


class Passthrough(nn.Module):
    """Layers that change nothing at inference: heads (their input is the head map), dropout, cost, contrastive."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class DarknetModel(nn.Module):
    """A network built from a Darknet cfg.

    ``forward`` returns, for a detector, a tuple of the raw head maps (N, anchors·(entries+classes), H, W),
    one per head section (``[yolo]``, ``[region]``, ``[Gaussian_yolo]``) in cfg order; for a
    classifier, the last layer's output.
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
        for layer, sources in zip(self.layers, self.inputs_of, strict=True):
            inputs = [x if j < 0 else outputs[j] for j in sources]
            outputs.append(layer(*inputs))
        if self.head_layers:
            return tuple(outputs[i] for i in self.head_layers)
        return outputs[-1]


def _conv_module(p: spec.Conv, layer: spec.Layer, built: list[nn.Module]) -> nn.Module:
    if p.share_from is not None:
        block: nn.Module = SharedConv(built[p.share_from], p)
    else:
        block = ConvNormAct(p.in_channels, p.filters, p.size, p.conv_stride, p.padding, groups=p.groups,
                            dilation=p.dilation, norm="batch" if p.batch_normalize else "none",
                            activation=p.activation)
    if p.antialiasing:
        blur = Blur(p.filters, p.antialiasing, p.stride)
        block = block.append(blur) if isinstance(block, ConvNormAct) else nn.Sequential(block, blur)
    return block


def _maxpool_module(p: spec.MaxPool, layer: spec.Layer, built: list[nn.Module]) -> nn.Module:
    pool = DarknetMaxPool(p.size, p.pool_stride[0], p.pool_stride[1], p.padding)
    return nn.Sequential(pool, Blur(p.channels, p.antialiasing, p.stride)) if p.antialiasing else pool


def _passthrough(p: object, layer: spec.Layer, built: list[nn.Module]) -> nn.Module:
    return Passthrough()


ModuleFactory = Callable[[Any, spec.Layer, list[nn.Module]], nn.Module]
_MODULES: dict[type, ModuleFactory] = {
    spec.Conv: _conv_module,
    spec.Local: lambda p, layer, built: LocallyConnected(p),
    spec.Connected: lambda p, layer, built: Connected(p),
    spec.MaxPool: _maxpool_module,
    spec.DepthMaxPool: lambda p, layer, built: DepthMaxPool(p, layer.shape),
    spec.LocalAvgPool: lambda p, layer, built: LocalAvgPool(p),
    spec.AvgPool: lambda p, layer, built: GlobalAvgPool(),
    spec.Route: lambda p, layer, built: Route(p.groups, p.group_id),
    spec.Shortcut: lambda p, layer, built: Shortcut(p),
    spec.ScaleChannels: lambda p, layer, built: ScaleChannels(p.activation),
    spec.Sam: lambda p, layer, built: Sam(p.activation),
    spec.Crop: lambda p, layer, built: Crop(p),
    spec.Reorg: lambda p, layer, built: Reorg(p, layer.shape),
    spec.Upsample: lambda p, layer, built: Upsample(p.stride, p.scale),
    spec.Softmax: lambda p, layer, built: Softmax(p.temperature, p.groups),
    spec.Activation: lambda p, layer, built: make_activation(p.activation),
    spec.Detection: lambda p, layer, built: Detection(p),
    spec.Passthrough: _passthrough,  # [dropout], [cost], [contrastive]
    spec.YoloHead: _passthrough,  # heads: their input is the head map the graph outputs
    spec.GaussianYoloHead: _passthrough,
    spec.RegionHead: _passthrough,
}
require_all(_MODULES, LAYER_TYPES, "PyTorch builder")


def make_module(layer: spec.Layer, built: list[nn.Module]) -> nn.Module:
    """The PyTorch module for one planned layer (``built``: the modules of the layers before it)."""
    return lookup(_MODULES, layer.params, "PyTorch builder")(layer.params, layer, built)


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
        modules: list[nn.Module] = []
        for layer in plan.layers:
            modules.append(make_module(layer, modules))
    return DarknetModel(modules, plan).eval()
