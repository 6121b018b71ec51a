"""Darknet sections → a plan of layers: what each layer computes, what it reads, its output shape.

This is the one reading of Darknet's layer semantics; it imports no framework. The PyTorch
builder (:mod:`.build`) and the direct ONNX writer (:mod:`.to_onnx`) both turn the plan into
their own objects. Shapes are tracked with Darknet's formulas while planning, so a route between
mismatched sizes, a shortcut between mismatched shapes or a ``[yolo]`` head fed the wrong channel
count is reported with its file and line, and sections foldkit cannot build are refused by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from foldkit.darknet.cfg import Section, parse_cfg
from foldkit.defaults import ACTIVATION_NAMES
from foldkit.errors import FoldkitError

Shape = tuple[int, int, int]  # (C, H, W)
BUILTIN_MODELS = {
    "darknet53": "darknet53.cfg",
    "yolov3": "yolov3.cfg",
    "yolov3-tiny": "yolov3-tiny.cfg",
}


@dataclass(frozen=True)
class Conv:
    in_channels: int
    filters: int
    size: int
    stride: tuple[int, int]
    padding: int  # per side, already multiplied by dilation
    groups: int
    dilation: int
    batch_normalize: bool
    activation: str


@dataclass(frozen=True)
class MaxPool:
    size: int
    stride: tuple[int, int]
    padding: int  # Darknet's total padding: floor(p/2) leading, the rest trailing

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
class Shortcut:
    activation: str = "linear"


@dataclass(frozen=True)
class Upsample:
    stride: int
    scale: float = 1.0


@dataclass(frozen=True)
class AvgPool:
    pass


@dataclass(frozen=True)
class Softmax:
    temperature: float = 1.0


@dataclass(frozen=True)
class Passthrough:
    pass


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


@dataclass
class NetInfo:
    """The parts of ``[net]`` that inference needs."""

    channels: int
    height: int
    width: int
    source: str = ""
    heads: list[YoloHead] = field(default_factory=list)


@dataclass
class Layer:
    """Darknet layer ``i``: its kind (section type), parameters, the layers it reads (−1 is the input), shape."""

    kind: str
    params: object
    sources: list[int]
    shape: Shape


@dataclass
class NetworkPlan:
    info: "NetInfo"
    layers: list[Layer]


def _activation(section: Section, default: str) -> str:
    name = section.get_str("activation", default)
    if name not in ACTIVATION_NAMES:
        raise section.error(f"unknown activation {name!r}; known: {', '.join(ACTIVATION_NAMES)}", "activation")
    return name


class _Planner:
    """Walks the sections once, describing each layer and tracking Darknet's output shapes."""

    def __init__(self, sections: list[Section], img_size: tuple[int, int] | None) -> None:
        self.sections = sections
        net = sections[0]
        height = img_size[0] if img_size else net.get_int("height", 0)
        width = img_size[1] if img_size else net.get_int("width", 0)
        channels = net.get_int("channels", 0)
        if min(height, width, channels) <= 0:
            raise net.error(f"needs positive width, height and channels (found {width}, {height}, {channels})")
        self.info = NetInfo(channels, height, width, source=net.source)
        self.shapes: list[Shape] = []
        self.layers: list[Layer] = []

    def plan(self) -> NetworkPlan:
        for section in self.sections[1:]:
            describe = getattr(self, f"_{section.type}", None)
            if describe is None:
                raise section.error("is not supported by foldkit; cannot build this network")
            params, sources, shape = describe(section)
            if min(shape) <= 0:
                raise section.error(f"produces an empty output {shape} for input {self._input_shape(section)}")
            self.layers.append(Layer(section.type, params, sources, shape))
            self.shapes.append(shape)
        return NetworkPlan(self.info, self.layers)

    # --- helpers -------------------------------------------------------------------------
    def _input_shape(self, section: Section) -> Shape:
        if section.index == 0:
            return (self.info.channels, self.info.height, self.info.width)
        return self.shapes[section.index - 1]

    def _resolve(self, section: Section, key: str, index: int) -> int:
        """Darknet's layer references: negative is relative to this layer, non-negative absolute."""
        target = section.index + index if index < 0 else index
        if not 0 <= target < section.index:
            raise section.error(f"{key} refers to layer {index} (absolute {target}), which is not an earlier layer", key)
        return target

    # --- one method per section type -----------------------------------------------------
    def _convolutional(self, section: Section):
        c, h, w = self._input_shape(section)
        filters = section.get_int("filters", 1)
        size = section.get_int("size", 1)
        stride = section.get_int("stride", 1)
        stride_y, stride_x = section.get_int("stride_y", stride), section.get_int("stride_x", stride)
        padding = size // 2 if section.get_int("pad", 0) else section.get_int("padding", 0)
        groups = max(1, section.get_int("groups", 1))
        dilation = section.get_int("dilation", 1) if size > 1 else 1
        batch_normalize = section.get_int("batch_normalize", 0)
        for key in ("binary", "xnor", "share_index", "flipped", "antialiasing", "coordconv", "deform"):
            if section.get_int(key, 0):
                raise section.error(f"option '{key}' is not supported by foldkit", key)
        if filters <= 0 or size <= 0 or stride_y <= 0 or stride_x <= 0:
            raise section.error("filters, size and stride must be positive")
        if c % groups or filters % groups:
            raise section.error(f"groups={groups} must divide input channels {c} and filters {filters}", "groups")
        padding *= dilation  # Darknet's im2col pads by pad·dilation
        activation = _activation(section, default="logistic")
        out_h = (h + 2 * padding - dilation * (size - 1) - 1) // stride_y + 1
        out_w = (w + 2 * padding - dilation * (size - 1) - 1) // stride_x + 1
        params = Conv(c, filters, size, (stride_y, stride_x), padding, groups, dilation, bool(batch_normalize), activation)
        return params, [section.index - 1], (filters, out_h, out_w)

    def _maxpool(self, section: Section):
        c, h, w = self._input_shape(section)
        stride = section.get_int("stride", 1)
        stride_y, stride_x = section.get_int("stride_y", stride), section.get_int("stride_x", stride)
        size = section.get_int("size", stride)
        padding = section.get_int("padding", size - 1)
        if section.get_int("maxpool_depth", 0):
            raise section.error("option 'maxpool_depth' is not supported by foldkit", "maxpool_depth")
        if size <= 0 or stride_y <= 0 or stride_x <= 0 or padding < 0:
            raise section.error("size and stride must be positive and padding non-negative")
        if padding >= size + max(stride_x, stride_y):
            raise section.error(f"padding={padding} would make windows of padding only", "padding")
        out = ((h + padding - size) // stride_y + 1, (w + padding - size) // stride_x + 1)
        return MaxPool(size, (stride_y, stride_x), padding), [section.index - 1], (c, *out)

    def _route(self, section: Section):
        sources = [self._resolve(section, "layers", i) for i in section.get_ints("layers")]
        if not sources:
            raise section.error("'layers' is empty", "layers")
        groups = section.get_int("groups", 1)
        group_id = section.get_int("group_id", 0)
        if groups < 1 or not 0 <= group_id < groups:
            raise section.error(f"needs groups ≥ 1 and 0 ≤ group_id < groups (found {groups}, {group_id})", "groups")
        shapes = [self.shapes[i] for i in sources]
        if len({s[1:] for s in shapes}) > 1:
            found = ", ".join(f"layer {i}: {s[1]}×{s[2]}" for i, s in zip(sources, shapes))
            raise section.error(f"concatenates outputs of different sizes ({found})", "layers")
        for i, s in zip(sources, shapes):
            if s[0] % groups:
                raise section.error(f"groups={groups} does not divide layer {i}'s {s[0]} channels", "groups")
        channels = sum(s[0] for s in shapes) // groups
        return Route(groups, group_id), sources, (channels, *shapes[0][1:])

    def _shortcut(self, section: Section):
        if section.get_str("weights_type", "none") != "none":
            raise section.error("weighted shortcuts (weights_type) are not supported by foldkit", "weights_type")
        if section.get_float("alpha", 1.0) != 1.0 or section.get_float("beta", 1.0) != 1.0:
            raise section.error("shortcut alpha/beta other than 1 are not supported by foldkit")
        sources = [self._resolve(section, "from", i) for i in section.get_ints("from")]
        shape = self._input_shape(section)
        for i in sources:
            if self.shapes[i] != shape:
                raise section.error(
                    f"adds layer {i} of shape {self.shapes[i]} to its input of shape {shape}; shapes must match", "from"
                )
        activation = _activation(section, default="linear")
        return Shortcut(activation), [section.index - 1, *sources], shape

    def _upsample(self, section: Section):
        c, h, w = self._input_shape(section)
        stride = section.get_int("stride", 2)
        if stride < 1:
            raise section.error(f"stride={stride}: only upsampling (stride ≥ 1) is supported", "stride")
        return Upsample(stride, section.get_float("scale", 1.0)), [section.index - 1], (c, h * stride, w * stride)

    def _avgpool(self, section: Section):
        return AvgPool(), [section.index - 1], (self._input_shape(section)[0], 1, 1)

    def _softmax(self, section: Section):
        if section.get_int("groups", 1) != 1:
            raise section.error("grouped softmax is not supported by foldkit", "groups")
        c, h, w = self._input_shape(section)
        return Softmax(section.get_float("temperature", 1.0)), [section.index - 1], (c * h * w, 1, 1)

    def _passthrough(self, section: Section):
        return Passthrough(), [section.index - 1], self._input_shape(section)

    _dropout = _cost = _passthrough

    def _yolo(self, section: Section):
        c, h, w = self._input_shape(section)
        classes = section.get_int("classes", 20)
        num = section.get_int("num", 1)
        mask = section.get_ints("mask", list(range(num)))
        values = section.get_floats("anchors", [0.0] * (2 * num))[: 2 * num]
        if len(values) < 2 * num:
            raise section.error(f"num={num} needs {2 * num} anchor values, found {len(values)}", "anchors")
        pairs = list(zip(values[0::2], values[1::2]))
        for m in mask:
            if not 0 <= m < num:
                raise section.error(f"mask index {m} is outside the {num} anchors", "mask")
        expected = len(mask) * (classes + 5)
        if c != expected:
            raise section.error(
                f"expects {len(mask)}×({classes}+5) = {expected} input channels, the layer before gives {c}"
            )
        head = YoloHead(
                layer=section.index - 1, classes=classes, anchors=[pairs[m] for m in mask], mask=mask,
                scale_x_y=section.get_float("scale_x_y", 1.0), new_coords=bool(section.get_int("new_coords", 0)),
                stride=self.info.height // h,
        )
        self.info.heads.append(head)
        return head, [section.index - 1], (c, h, w)


def builtin_cfg_path(name: str) -> Path:
    """Path of a built-in network's cfg, shipped inside the package."""
    if name not in BUILTIN_MODELS:
        raise FoldkitError(f"unknown built-in model {name!r}; built-ins: {', '.join(BUILTIN_MODELS)}")
    return Path(str(resources.files("foldkit.models").joinpath(BUILTIN_MODELS[name])))


def resolve_cfg(model: str | os.PathLike) -> Path:
    """A built-in name or a path to a ``.cfg`` file → the cfg's path."""
    if str(model) in BUILTIN_MODELS:
        return builtin_cfg_path(str(model))
    path = Path(model)
    if path.is_file():
        return path
    raise FoldkitError(
        f"{model}: not a built-in model ({', '.join(BUILTIN_MODELS)}) and no such cfg file"
    )


def plan_network(model: str | os.PathLike, img_size: int | tuple[int, int] | None = None) -> NetworkPlan:
    """Plan a built-in network or a cfg file; ``img_size`` (int or (height, width)) overrides ``[net]``'s."""
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    from foldkit.darknet.budget import check_memory  # budget reads weights.py, which imports this module

    sections = parse_cfg(resolve_cfg(model))
    plan = _Planner(sections, img_size).plan()
    check_memory(plan, sections)
    return plan
