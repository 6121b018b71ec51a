"""Darknet sections → a plan of layers: what each layer computes, what it reads, its output shape.

This is the one reading of Darknet's layer semantics; it imports no framework. Shapes are tracked
with Darknet's formulas while planning, so a route between mismatched sizes, a shortcut between
mismatched shapes or a ``[yolo]`` head fed the wrong channel count is reported with its file and
line, and sections foldkit cannot build are refused by name.
"""

from __future__ import annotations

from collections.abc import Callable

from foldkit.activations import ACTIVATION_NAMES
from foldkit.darknet.cfg import Section
from foldkit.darknet.registry import SECTION_TYPES, RegistryError, require_all
from foldkit.darknet.specs import (
    ANTIALIAS_BLUR,
    Activation,
    AvgPool,
    Connected,
    Conv,
    Crop,
    DepthMaxPool,
    Detection,
    GaussianYoloHead,
    Layer,
    Local,
    LocalAvgPool,
    MaxPool,
    NetInfo,
    NetworkPlan,
    Passthrough,
    RegionHead,
    Reorg,
    Route,
    Sam,
    ScaleChannels,
    Shape,
    Shortcut,
    Softmax,
    Upsample,
    YoloHead,
)

RECURRENT = ("rnn", "lstm", "gru", "crnn")

_CONV_REFUSALS = {
    "xnor": "XNOR-binarized conv (sign inputs, sign·mean|w| weights, bit-packed GEMM): Darknet's result depends on "
            "its code path (c mod 32, padding bits) and is not a float conv foldkit can reproduce",
    "binary": "binary weights are binarized by Darknet's GPU forward but not its CPU one, so the layer has no single "
              "meaning",
    "coordconv": "coordconv runs only in Darknet's GPU build, where it writes the wrong elements",
    "flipped": "flipped (transposed) kernels are not supported by foldkit",
}
_FORK_NOTES = {
    "relu6": "relu6 = min(max(x, 0), 6) as AlexeyAB's GPU build computes it (its CPU build outputs zeros; "
             "pjreddie maps the name to relu)",
    "strided_shortcut": "[shortcut] from a larger map: pjreddie's strided sampling from[:, :, ::s, ::s] "
                        "(AlexeyAB aborts on these cfgs)",
    "prefix_shortcut": "[shortcut] between different channel counts: AlexeyAB's channel-prefix rule",
    "crop": "[crop]: the CPU forward (integer centre offsets, 2x − 1 on every channel)",
}


def _activation(section: Section, default: str) -> str:
    name = section.get_str("activation", default)
    if name not in ACTIVATION_NAMES:
        raise section.error(f"unknown activation {name!r}; known: {', '.join(ACTIVATION_NAMES)}", "activation")
    return name


def _antialiasing(section: Section) -> int:
    value = section.get_int("antialiasing", 0)
    if value not in ANTIALIAS_BLUR and value != 0:
        raise section.error(f"antialiasing={value}: Darknet defines 1 (3×3 blur) and 2 (2×2 blur)", "antialiasing")
    return value


def _blurred(size: int, antialiasing: int, stride: int) -> int:
    """Output size after Darknet's fixed antialiasing blur (a conv with its own size and padding)."""
    if not antialiasing:
        return size
    kernel, pad = ANTIALIAS_BLUR[antialiasing]
    return (size + 2 * pad - kernel) // stride + 1


class _Planner:
    """Walks the sections once, describing each layer and tracking Darknet's output shapes."""

    def __init__(self, sections: list[Section], img_size: tuple[int, int] | None) -> None:
        for section in sections[1:]:
            if section.type in RECURRENT:
                raise section.error(
                    "is a recurrent layer: not a feed-forward image network (Darknet keeps its hidden state "
                    "between calls and steps it time_steps times)")
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
            describe = _DESCRIBERS.get(section.type.lower())
            if describe is None:
                raise section.error("is not supported by foldkit; cannot build this network")
            params, sources, shape = describe(self, section)
            if type(params) not in SECTION_TYPES[section.type.lower()]:
                raise RegistryError(f"internal error: the planner made a {type(params).__name__} of a "
                                    f"[{section.type}], which the registry does not list")
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
            raise section.error(f"{key} refers to layer {index} (absolute {target}), which is not an earlier layer",
                                key)
        return target

    def _note(self, key: str) -> None:
        self.info.choices[key] = _FORK_NOTES[key]

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
        batch_normalize = bool(section.get_int("batch_normalize", 0))
        for key, reason in _CONV_REFUSALS.items():
            if section.get_int(key, 0):
                raise section.error(f"option '{key}' is refused: {reason}", key)
        if filters <= 0 or size <= 0 or stride_y <= 0 or stride_x <= 0 or dilation <= 0:
            raise section.error("filters, size, stride and dilation must be positive")
        if c % groups or filters % groups:
            raise section.error(f"groups={groups} must divide input channels {c} and filters {filters}", "groups")
        if size == 1 and (padding or (stride_x == 1 and stride_y > 1)):
            raise section.error("a 1×1 conv with padding, or with stride_x=1 and stride_y>1, takes Darknet's "
                                "unpadded, unstrided shortcut and reads the wrong pixels")
        if dilation > 1 and 2 * padding != size - 1:
            raise section.error(f"dilation={dilation} needs 2·padding = size − 1 (Darknet's output size ignores "
                                "dilation)", "dilation")
        antialiasing = _antialiasing(section)
        share_from = self._shared_conv(section, c, filters, size, groups, batch_normalize)
        activation = _activation(section, default="logistic")
        if activation == "relu6":
            self._note("relu6")
        conv_y, conv_x = (1, 1) if antialiasing else (stride_y, stride_x)
        out_h = _blurred((h + 2 * padding - size) // conv_y + 1, antialiasing, stride_y)
        out_w = _blurred((w + 2 * padding - size) // conv_x + 1, antialiasing, stride_x)
        params = Conv(c, filters, size, (stride_y, stride_x), padding * dilation, groups, dilation, batch_normalize,
                      activation, antialiasing, share_from)
        return params, [section.index - 1], (filters, out_h, out_w)

    def _shared_conv(self, section: Section, c: int, filters: int, size: int, groups: int, bn: bool) -> int | None:
        """``share_index``: the earlier conv whose weights this one runs (followed to the owner)."""
        if not section.has("share_index"):
            return None
        target = self._resolve(section, "share_index", section.get_int("share_index"))
        owner = self.layers[target].params
        if not isinstance(owner, Conv):
            raise section.error(f"share_index={target} is a [{self.layers[target].kind}], not a conv", "share_index")
        if (owner.in_channels, owner.filters, owner.size, owner.groups, owner.batch_normalize) != (c, filters, size,
                                                                                                   groups, bn):
            raise section.error(f"share_index={target}: that conv's channels, filters, size, groups or "
                                "batch_normalize differ from this one's", "share_index")
        return owner.share_from if owner.share_from is not None else target

    def _maxpool(self, section: Section, kind: type = MaxPool):
        c, h, w = self._input_shape(section)
        stride = section.get_int("stride", 1)
        stride_y, stride_x = section.get_int("stride_y", stride), section.get_int("stride_x", stride)
        size = section.get_int("size", stride)
        padding = section.get_int("padding", size - 1)
        if kind is MaxPool and section.get_int("maxpool_depth", 0):  # size, stride, padding are ignored
            groups = section.get_int("out_channels", 1)
            if groups < 1 or c % groups:
                raise section.error(f"maxpool_depth with out_channels={groups} needs it to divide the {c} input "
                                    "channels", "out_channels")
            return DepthMaxPool(c, groups), [section.index - 1], (groups, h, w)
        if size <= 0 or stride_y <= 0 or stride_x <= 0 or padding < 0:
            raise section.error("size and stride must be positive and padding non-negative")
        if padding >= size + max(stride_x, stride_y):
            raise section.error(f"padding={padding} would make windows of padding only", "padding")
        antialiasing = _antialiasing(section) if kind is MaxPool else 0
        pool_y, pool_x = (1, 1) if antialiasing else (stride_y, stride_x)
        out = (_blurred((h + padding - size) // pool_y + 1, antialiasing, stride_y),
               _blurred((w + padding - size) // pool_x + 1, antialiasing, stride_x))
        return kind(size, (stride_y, stride_x), padding, antialiasing, c), [section.index - 1], (c, *out)

    def _local_avgpool(self, section: Section):
        return self._maxpool(section, LocalAvgPool)

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
            found = ", ".join(f"layer {i}: {s[1]}×{s[2]}" for i, s in zip(sources, shapes, strict=True))
            raise section.error(f"concatenates outputs of different sizes ({found})", "layers")
        for i, s in zip(sources, shapes, strict=True):
            if s[0] % groups:
                raise section.error(f"groups={groups} does not divide layer {i}'s {s[0]} channels", "groups")
        channels = sum(s[0] for s in shapes) // groups
        return Route(groups, group_id), sources, (channels, *shapes[0][1:])

    def _shortcut(self, section: Section):
        if section.get_float("alpha", 1.0) != 1.0 or section.get_float("beta", 1.0) != 1.0:
            raise section.error("shortcut alpha/beta other than 1 are not supported by foldkit")
        sources = [self._resolve(section, "from", i) for i in section.get_ints("from")]
        if not sources:
            raise section.error("'from' is empty", "from")
        weights_type = {"per_layer": "per_feature"}.get(section.get_str("weights_type", "none"),
                                                         section.get_str("weights_type", "none"))
        normalization = {"avg_relu": "relu"}.get(section.get_str("weights_normalization", "none"),
                                                 section.get_str("weights_normalization", "none"))
        if weights_type not in ("none", "per_feature", "per_channel"):
            raise section.error(f"weights_type={weights_type}: Darknet knows none, per_feature, per_channel",
                                "weights_type")
        if weights_type != "none" and normalization not in ("relu", "softmax"):
            raise section.error("weights_type needs weights_normalization=relu, avg_relu or softmax: Darknet stops "
                                "with 'Incorrect weights_normalization' otherwise",
                                "weights_normalization")
        shape = self._input_shape(section)
        steps = [self._shortcut_step(section, i, shape, len(sources) == 1 and weights_type == "none")
                 for i in sources]
        activation = _activation(section, default="linear")
        from_channels = tuple(self.shapes[i][0] for i in sources)
        return (Shortcut(activation, shape, from_channels, tuple(steps), weights_type, normalization),
                [section.index - 1, *sources], shape)

    def _shortcut_step(self, section: Section, source: int, shape: Shape, plain: bool) -> int:
        """1 for an input of the same H×W, else pjreddie's sampling stride for a larger one."""
        (c, h, w), (fc, fh, fw) = shape, self.shapes[source]
        if (fh, fw) == (h, w):
            if plain and fc < c and self._input_shape(self.sections[source + 1]) == shape:
                raise section.error(f"adds layer {source} ({fc} channels) whose input has this layer's shape {shape}: "
                                    "Darknet's fast path then reads past its output", "from")
            if fc != c:
                self._note("prefix_shortcut")
            return 1
        step = fh // h
        if plain and fh % h == 0 and fw % w == 0 and fw // w == step:
            self._note("strided_shortcut")
            if fc != c:
                self._note("prefix_shortcut")
            return step
        raise section.error(f"adds layer {source} of shape {self.shapes[source]} to its input of shape {shape}: only "
                            "one unweighted 'from' map an integer factor larger (pjreddie's strided rule) may "
                            "differ in size", "from")

    def _scale_channels(self, section: Section):
        source = self._resolve(section, "from", section.get_int("from"))
        prev, target = self._input_shape(section), self.shapes[source]
        per_pixel = bool(section.get_int("scale_wh", 0))
        expected = (1, *target[1:]) if per_pixel else (target[0], 1, 1)
        if prev != expected:
            raise section.error(f"scales layer {source} of shape {target} by its input of shape {prev}; "
                                f"scale_wh={int(per_pixel)} needs {expected}", "from")
        return ScaleChannels(_activation(section, default="linear")), [section.index - 1, source], target

    def _sam(self, section: Section):
        source = self._resolve(section, "from", section.get_int("from"))
        prev = self._input_shape(section)
        if self.shapes[source] != prev:
            raise section.error(f"multiplies layer {source} of shape {self.shapes[source]} with its input of shape "
                                f"{prev}; shapes must match", "from")
        return Sam(_activation(section, default="linear")), [section.index - 1, source], prev

    def _connected(self, section: Section):
        c, h, w = self._input_shape(section)
        outputs = section.get_int("output", 1)
        if outputs <= 0:
            raise section.error(f"output={outputs} must be positive", "output")
        params = Connected(c * h * w, outputs, bool(section.get_int("batch_normalize", 0)),
                           _activation(section, default="logistic"))
        return params, [section.index - 1], (outputs, 1, 1)

    def _crop(self, section: Section):
        c, h, w = self._input_shape(section)
        height, width = section.get_int("crop_height", 1), section.get_int("crop_width", 1)
        if not (0 < height <= h and 0 < width <= w):
            raise section.error(f"crops {height}×{width} out of a {h}×{w} input")
        self._note("crop")
        params = Crop((h - height) // 2, (w - width) // 2, height, width, not section.get_int("noadjust", 0))
        return params, [section.index - 1], (c, height, width)

    def _reorg(self, section: Section, darknet_map: bool = True):
        c, h, w = self._input_shape(section)
        stride = section.get_int("stride", 1)
        reverse = bool(section.get_int("reverse", 0))
        for key in ("flatten", "extra"):
            if section.get_int(key, 0):
                raise section.error(f"pjreddie's '{key}' mode of [reorg] is not supported by foldkit", key)
        # Darknet's kernel walks C·H·W elements with C/s² (or C/s⁴) channels: other shapes read out of bounds.
        divisor = stride ** (4 if reverse and not darknet_map else 2)
        if stride < 1 or (not reverse and (h % stride or w % stride)) or ((reverse or darknet_map) and c % divisor):
            raise section.error(f"stride={stride} (reverse={int(reverse)}) does not divide input {c}×{h}×{w} as "
                                "Darknet's index map needs", "stride")
        s2 = stride * stride
        shape = (c // s2, h * stride, w * stride) if reverse else (c * s2, h // stride, w // stride)
        return Reorg(stride, reverse, darknet_map, (c, h, w)), [section.index - 1], shape

    def _reorg3d(self, section: Section):
        return self._reorg(section, darknet_map=False)

    def _upsample(self, section: Section):
        c, h, w = self._input_shape(section)
        stride = section.get_int("stride", 2)
        if stride < 1:
            raise section.error(f"stride={stride}: only upsampling (stride ≥ 1) is supported", "stride")
        return Upsample(stride, section.get_float("scale", 1.0)), [section.index - 1], (c, h * stride, w * stride)

    def _avgpool(self, section: Section):
        return AvgPool(), [section.index - 1], (self._input_shape(section)[0], 1, 1)

    def _softmax(self, section: Section):
        if section.has("tree"):
            raise section.error("a hierarchical softmax (tree=) needs Darknet's tree file; not supported", "tree")
        groups = section.get_int("groups", 1)
        c, h, w = self._input_shape(section)
        if groups < 1 or (c * h * w) % groups:
            raise section.error(f"groups={groups} must divide the {c * h * w} inputs", "groups")
        return Softmax(section.get_float("temperature", 1.0), groups), [section.index - 1], (c * h * w, 1, 1)

    def _passthrough(self, section: Section):
        return Passthrough(), [section.index - 1], self._input_shape(section)


    def _activation(self, section: Section):
        params = Activation(_activation(section, default="linear"))
        return params, [section.index - 1], self._input_shape(section)

    def _detection(self, section: Section):
        c, h, w = self._input_shape(section)
        side, num = section.get_int("side", 7), section.get_int("num", 1)
        coords, classes = section.get_int("coords", 1), section.get_int("classes", 1)
        expected = side * side * ((1 + coords) * num + classes)
        if c * h * w != expected:
            raise section.error(f"expects side²·((1+coords)·num + classes) = {expected} inputs, found {c * h * w}")
        params = Detection(side * side, classes, bool(section.get_int("softmax", 0)))
        return params, [section.index - 1], (c, h, w)

    def _local(self, section: Section):
        c, h, w = self._input_shape(section)
        filters, size = section.get_int("filters", 1), section.get_int("size", 1)
        stride, pad = section.get_int("stride", 1), section.get_int("pad", 0)
        if filters <= 0 or size <= 0 or stride <= 0 or pad < 0:
            raise section.error("filters, size and stride must be positive, pad non-negative")
        if pad and 2 * pad + 1 != size:
            raise section.error(f"pad={pad} with size={size}: Darknet sizes the output for size = 2·pad + 1 but "
                                "im2col pads by pad pixels, so its buffers disagree", "pad")
        out_h, out_w = (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1
        params = Local(c, filters, size, stride, pad, out_h, out_w, _activation(section, default="logistic"))
        return params, [section.index - 1], (filters, out_h, out_w)

    def _yolo(self, section: Section, entries: int = 5, head_type: type = YoloHead):
        c, h, w = self._input_shape(section)
        classes = section.get_int("classes", 20)
        num = section.get_int("num", 1)
        mask = section.get_ints("mask", list(range(num)))
        given = section.get_floats("anchors", [])
        # Anchors only decode the raw map. Darknet reads 2·num values into a zeroed array; a mask past num
        # reads beyond it (cspx-p7-mish: num=16, masks to 19, 20 anchors listed): use the listed ones.
        used = max(2 * num, 2 * (max(mask, default=0) + 1))
        if any(m < 0 or 2 * m + 1 >= max(2 * num, len(given)) for m in mask):
            raise section.error(f"a mask index in {mask} is outside the {len(given) // 2} anchors listed", "mask")
        if len(given) < 2 * num or max(mask, default=0) >= num:
            self.info.choices[f"anchors@{section.index}"] = (
                f"[{section.type}] layer {section.index}: num={num} with {len(given)} anchor values and mask {mask}: "
                "missing values are 0 (Darknet's zeroed array), masks past num use the listed anchors")
        values = (given + [0.0] * used)[:used]
        pairs = list(zip(values[0::2], values[1::2], strict=True))
        expected = len(mask) * (classes + entries)
        if c != expected:
            raise section.error(
                f"expects {len(mask)}×({classes}+{entries}) = {expected} input channels, the layer before gives {c}"
            )
        head = head_type(
                layer=section.index - 1, classes=classes, anchors=[pairs[m] for m in mask], mask=mask,
                scale_x_y=section.get_float("scale_x_y", 1.0), new_coords=bool(section.get_int("new_coords", 0)),
                stride=self.info.height // h,
        )
        if isinstance(head, GaussianYoloHead):
            head.yolo_point = section.get_str("yolo_point", "center")
        self.info.heads.append(head)
        return head, [section.index - 1], (c, h, w)

    def _gaussian_yolo(self, section: Section):
        return self._yolo(section, entries=9, head_type=GaussianYoloHead)

    def _region(self, section: Section):
        c, h, w = self._input_shape(section)
        classes, coords, num = section.get_int("classes", 20), section.get_int("coords", 4), section.get_int("num", 1)
        values = section.get_floats("anchors", [])[: 2 * num]
        values += [0.5] * (2 * num - len(values))  # Darknet's default anchor is 0.5 cells
        expected = num * (classes + coords + 1)
        if num < 1 or c != expected:
            raise section.error(f"expects {num}×({classes}+{coords}+1) = {expected} input channels, "
                                f"the layer before gives {c}")
        head = RegionHead(layer=section.index - 1, classes=classes,
                          anchors=list(zip(values[0::2], values[1::2], strict=True)),
                          coords=coords, num=num, softmax=bool(section.get_int("softmax", 0)),
                          tree=section.get_str("tree", "") or None, stride=self.info.height // h,
                          mask=list(range(num)))
        self.info.heads.append(head)
        return head, [section.index - 1], (c, h, w)


def plan_sections(sections: list[Section], img_size: tuple[int, int] | None = None) -> NetworkPlan:
    """The framework-free plan of parsed cfg sections; ``img_size`` (height, width) overrides ``[net]``'s."""
    return _Planner(sections, img_size).plan()


Describer = Callable[[_Planner, Section], tuple[object, list[int], Shape]]
_DESCRIBERS: dict[str, Describer] = {
    "convolutional": _Planner._convolutional,
    "local": _Planner._local,
    "connected": _Planner._connected,
    "maxpool": _Planner._maxpool,
    "local_avgpool": _Planner._local_avgpool,
    "avgpool": _Planner._avgpool,
    "route": _Planner._route,
    "shortcut": _Planner._shortcut,
    "scale_channels": _Planner._scale_channels,
    "sam": _Planner._sam,
    "crop": _Planner._crop,
    "reorg": _Planner._reorg,
    "reorg3d": _Planner._reorg3d,
    "upsample": _Planner._upsample,
    "softmax": _Planner._softmax,
    "activation": _Planner._activation,
    "dropout": _Planner._passthrough,
    "cost": _Planner._passthrough,
    "contrastive": _Planner._passthrough,
    "detection": _Planner._detection,
    "yolo": _Planner._yolo,
    "gaussian_yolo": _Planner._gaussian_yolo,
    "region": _Planner._region,
}
require_all(_DESCRIBERS, SECTION_TYPES, "planner")
