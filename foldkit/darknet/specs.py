"""What each Darknet layer computes, framework-free: one frozen dataclass per kind of layer, the plan.

The planner (:mod:`.planner`) fills these from cfg sections; the PyTorch builder (:mod:`.build`)
and the direct ONNX writer (:mod:`.to_onnx`) turn them into their own objects, and the
``.weights`` layout (:mod:`.layout`) says which arrays each stores. The few formulas two of those
share (the antialiasing blur, the weighted shortcut's normalization) live here, written once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

Shape = tuple[int, int, int]  # (C, H, W)


@dataclass(frozen=True)
class Conv:
    in_channels: int
    filters: int
    size: int
    stride: tuple[int, int]  # (y, x) of the layer's output; with antialiasing, the blur's stride
    padding: int  # per side, already multiplied by dilation
    groups: int
    dilation: int
    batch_normalize: bool
    activation: str
    antialiasing: int = 0  # 1: 3×3 [1,2,1]ᵀ[1,2,1]/16 blur after the activation, 2: 2×2 box; the conv runs at stride 1
    share_from: int | None = None  # share_index: this layer runs layer ``share_from``'s weights (no record of its own)

    @property
    def conv_stride(self) -> tuple[int, int]:
        return (1, 1) if self.antialiasing else self.stride


@dataclass(frozen=True)
class MaxPool:
    size: int
    stride: tuple[int, int]  # with antialiasing, the blur's stride (the pool runs at stride 1)
    padding: int  # Darknet's total padding: floor(p/2) leading, the rest trailing
    antialiasing: int = 0
    channels: int = 0  # input channels (the blur is depthwise)

    @property
    def pool_stride(self) -> tuple[int, int]:
        return (1, 1) if self.antialiasing else self.stride

    @property
    def lead(self) -> int:
        return self.padding // 2

    @property
    def trail(self) -> int:
        return self.padding - self.lead


@dataclass(frozen=True)
class Route:
    groups: int = 1
    group_id: int = 0


@dataclass(frozen=True)
class DepthMaxPool:
    """``[maxpool] maxpool_depth=1``: per pixel, output channel g is the max of input channels g, g+G, g+2G, …"""

    in_channels: int
    out_channels: int  # G


@dataclass(frozen=True)
class LocalAvgPool(MaxPool):
    """``[local_avgpool]``: maxpool's geometry, the mean of the in-bounds elements of each window."""


@dataclass(frozen=True)
class Shortcut:
    """``out = act(Σᵢ wᵢ·inᵢ)`` over this layer's input and the ``from`` layers, Darknet's alignment rules.

    Inputs with more channels contribute their first C channels, fewer channels are added to the
    first ones (AlexeyAB's flat-prefix rule); a larger input of the same aspect is
    sampled every ``stride``-th pixel (pjreddie's strided rule, §7.3: the resnets' downsampling
    blocks). With ``weights_type`` the raw weights come from ``.weights`` and are normalized as
    ``fuse_conv_batchnorm`` does (§7.2).
    """

    activation: str = "linear"
    shape: Shape = (0, 0, 0)  # this layer's (= its input's) shape
    from_channels: tuple[int, ...] = ()  # per ``from`` input
    steps: tuple[int, ...] = ()  # per ``from`` input: 1, or the sampling stride of a larger map
    weights_type: str = "none"  # none | per_feature | per_channel
    normalization: str = "none"  # relu | softmax (Darknet requires one with weights)

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def weight_count(self) -> int:
        inputs = len(self.steps) + 1
        return {"none": 0, "per_feature": inputs, "per_channel": inputs * self.channels}[self.weights_type]


@dataclass(frozen=True)
class ScaleChannels:
    """``[scale_channels]``: the ``from`` map times this layer's input, per channel (C×1×1) or per pixel (1×H×W)."""

    activation: str = "linear"


@dataclass(frozen=True)
class Sam:
    """``[sam]``: this layer's input times the ``from`` map, elementwise (spatial attention)."""

    activation: str = "linear"


@dataclass(frozen=True)
class Connected:
    """``[connected]``: flatten C×H×W (channel-major), Linear, optional BatchNorm, activation; output N×1×1."""

    inputs: int
    outputs: int
    batch_normalize: bool
    activation: str


@dataclass(frozen=True)
class Crop:
    """``[crop]`` at inference (CPU): the centre crop, then ``2x − 1`` unless ``noadjust``."""

    top: int
    left: int
    height: int
    width: int
    adjust: bool


@dataclass(frozen=True)
class Reorg:
    """``[reorg]`` (Darknet's index map, not SpaceToDepth) or ``[reorg3d]`` (= SpaceToDepth)."""

    stride: int
    reverse: bool
    darknet_map: bool  # True for [reorg]: reinterpret the input as (C/s², H·s, W·s) around the space-to-depth
    in_shape: Shape


@dataclass(frozen=True)
class Upsample:
    stride: int
    scale: float = 1.0


@dataclass(frozen=True)
class AvgPool:
    pass


@dataclass(frozen=True)
class Softmax:
    """Softmax over each of ``groups`` equal chunks of the flat C·H·W input."""

    temperature: float = 1.0
    groups: int = 1


@dataclass(frozen=True)
class Local:
    """``[local]`` (yolov1): a convolution whose weights differ at every output position (pjreddie's local_layer.c).

    Darknet pads by ``pad`` pixels (not size/2) and stores, per output position j (row-major),
    the kernel of every filter over (C, size, size) as ``im2col`` orders it; one bias per output value.
    """

    in_channels: int
    filters: int
    size: int
    stride: int
    pad: int
    out_h: int
    out_w: int
    activation: str

    @property
    def locations(self) -> int:
        return self.out_h * self.out_w

    @property
    def patch(self) -> int:
        return self.in_channels * self.size * self.size


@dataclass(frozen=True)
class Detection:
    """``[detection]`` (yolov1's head): the input unchanged, or with a softmax over each cell's classes.

    Darknet's layout is the classes of all ``cells`` first (cell-major), then confidences, then boxes;
    decoding (``sqrt``, boxes) happens outside the network, so the map is the network's output.
    """

    cells: int
    classes: int
    softmax: bool


@dataclass(frozen=True)
class Passthrough:
    pass


@dataclass(frozen=True)
class Activation:
    """``[activation]``: an activation alone (AlexeyAB; default linear)."""

    activation: str = "linear"


@dataclass
class YoloHead:
    """What a ``[yolo]`` section says about decoding its head map."""

    layer: int
    classes: int
    anchors: list[tuple[float, float]]  # this head's (w, h) in input pixels, in mask order
    mask: list[int]
    scale_x_y: float = 1.0
    new_coords: bool = False
    stride: int = 0  # input pixels per grid cell
    kind: str = "yolo"


@dataclass
class GaussianYoloHead(YoloHead):
    """``[Gaussian_yolo]``: a YOLOv3 head with K + 9 entries per anchor (μ, σ of x, y, w, h; obj; classes)."""

    yolo_point: str = "center"
    kind: str = "gaussian_yolo"


@dataclass
class RegionHead:
    """What a ``[region]`` (YOLOv2) section says about decoding its head map.

    The graph outputs the raw conv map (NCHW, channel ``n·(classes+coords+1) + e``); decoding is
    Darknet's: ``bx = (col + σ(tx))/W``, ``bw = exp(tw)·anchor_w/W`` with anchors in **grid cells**,
    objectness σ, classes softmax (or, with ``tree``, the hierarchical softmax of that file).
    ``mask``, ``scale_x_y`` and ``new_coords`` are the neutral values, so code written for
    :class:`YoloHead` reads the same fields.
    """

    layer: int
    classes: int
    anchors: list[tuple[float, float]]  # (w, h) in grid cells, one per anchor
    coords: int = 4
    num: int = 1
    softmax: bool = False
    tree: str | None = None
    stride: int = 0
    mask: list[int] = field(default_factory=list)
    scale_x_y: float = 1.0
    new_coords: bool = False
    kind: str = "region"


Head = YoloHead | RegionHead


@dataclass
class NetInfo:
    """The parts of ``[net]`` that inference needs."""

    channels: int
    height: int
    width: int
    source: str = ""
    heads: list[Head] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)  # fork choices this network depends on, for inspect


@dataclass
class Layer:
    """Darknet layer ``i``: its kind (section type), parameters, the layers it reads (−1 is the input), shape."""

    kind: str
    params: object
    sources: list[int]
    shape: Shape


@dataclass
class NetworkPlan:
    info: NetInfo
    layers: list[Layer]


ANTIALIAS_BLUR = {1: (3, 1), 2: (2, 0)}  # antialiasing → (blur kernel size, blur padding)


def blur_kernel(antialiasing: int) -> np.ndarray:
    """Darknet's fixed antialiasing blur (one channel's kernel): [1,2,1]ᵀ[1,2,1]/16, or a 2×2 box of 1/4."""
    if antialiasing == 1:
        row = np.array([1.0, 2.0, 1.0])
        return np.outer(row, row) / 16.0
    return np.full((2, 2), 0.25)


def blur_padding(antialiasing: int) -> int:
    return ANTIALIAS_BLUR[antialiasing][1]


SHORTCUT_MIN_WEIGHT = 0.001  # fuse_conv_batchnorm's floor under relu-normalized shortcut weights
SHORTCUT_SUM_EPS = 0.0001  # added to the normalizing sum


def normalized_shortcut_weights(raw, p: Shortcut):
    """A weighted shortcut's raw ``.weights`` values → the (inputs, 1 or C) factors Darknet infers with.

    AlexeyAB's ``fuse_conv_batchnorm`` rewrites them once (network.c 1334-1381): relu
    ``max(w, 0.001)/(0.0001 + Σ max(w, 0.001))``, softmax ``exp(w − m)/(0.0001 + Σ exp(w − m))``,
    per channel over the inputs. Written with operations numpy arrays and torch tensors share, so
    the direct converter (float64 numpy) and the PyTorch module (traceable) use this one formula.
    """
    inputs = len(p.steps) + 1
    w = raw.reshape(inputs, -1)
    if p.normalization == "relu":
        w = w.clip(SHORTCUT_MIN_WEIGHT, None)
    else:
        m = w[0]
        for i in range(1, inputs):
            m = (m + w[i] + abs(m - w[i])) / 2  # max(m, w[i]) in either library
        w = math.e ** (w - m)
    return w / (SHORTCUT_SUM_EPS + w.sum(0)[None])
