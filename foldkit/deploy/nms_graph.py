"""Non-maximum suppression at the end of a decoded YOLO graph, so a runtime needs no foldkit code.

The tail reads the decoded candidates (N, boxes, 4 + 1 + C) = cx, cy, w, h, objectness, class
scores, and ends the graph with ONNX ``NonMaxSuppression``. It computes what
:func:`foldkit.deploy.yolo.postprocess` computes, in the same order:

- scores are Darknet's: ``objectness × class score`` for every class of a box whose objectness
  exceeds ``conf``; a (box, class) pair is a candidate when that score exceeds ``conf`` too;
- suppression is class-aware and greedy: a candidate is dropped when a higher-scored kept one of
  its class overlaps it by IoU > ``iou``;
- detections are ordered by descending score, ties by box index, then class index (the numpy
  path's stable sort over candidates in (box, class) order), and the first ``max_det`` are kept.

Outputs: ``detections`` (N, max_det, 6) float32 = x1 y1 x2 y2 score class in network-input pixels,
rows past ``count`` zero, and ``count`` (N,) int64. ``conf`` and ``iou`` are graph inputs of shape
[1] whose initializers are their defaults: a runtime that feeds nothing gets the defaults, one that
feeds them changes the thresholds without a new file. ``max_det`` fixes the output shape and is a
constant. Unlike the numpy path, which keeps the 4096 best candidates before suppression, the graph
suppresses among all of them; the two differ only when more than 4096 candidates pass ``conf``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from foldkit.defaults import DEFAULT_CONF, DEFAULT_IOU, DEFAULT_MAX_DET, MAX_MAX_DET
from foldkit.errors import FoldkitError
from foldkit.onnxio.metadata import CLASSES_KEY, DECODED_KEY, NMS_KEY, add_metadata, read_metadata

MIN_NMS_OPSET = 13  # Squeeze, Unsqueeze and ReduceSum take their axes as inputs from opset 13 on
DETECTIONS, COUNT, CONF, IOU = "detections", "count", "conf", "iou"  # names a runtime sees
CANDIDATES = "candidates"  # the decoded tensor the tail reads, renamed from the decoder's output
_PREFIX = "nms/"  # every value and node the tail adds


@dataclass(frozen=True)
class NmsSettings:
    """The tail's settings; checked on construction, so a bad threshold never reaches a graph."""

    max_det: int = DEFAULT_MAX_DET
    conf: float = DEFAULT_CONF
    iou: float = DEFAULT_IOU

    def __post_init__(self) -> None:
        check_thresholds(self.conf, self.iou)
        if isinstance(self.max_det, bool) or not isinstance(self.max_det, int) or not 1 <= self.max_det <= MAX_MAX_DET:
            raise FoldkitError(f"max_det must be an integer from 1 to {MAX_MAX_DET}, not {self.max_det!r}")


def check_thresholds(conf: float, iou: float) -> None:
    """conf and iou finite numbers in [0, 1]: anything else is a typo, refused in one line."""
    if not (isinstance(conf, int | float) and math.isfinite(conf) and 0 <= conf <= 1):
        raise FoldkitError(f"conf must be a number in [0, 1], not {conf!r}")
    if not (isinstance(iou, int | float) and math.isfinite(iou) and 0 <= iou <= 1):
        raise FoldkitError(f"iou must be a number in [0, 1], not {iou!r}")


def nms_settings(metadata: dict[str, str]) -> NmsSettings | None:
    """The settings of a model whose graph ends with this tail (``foldkit.nms``), or None."""
    if NMS_KEY not in metadata:
        return None
    try:
        return NmsSettings(**json.loads(metadata[NMS_KEY]))
    except (ValueError, TypeError, FoldkitError) as exc:
        raise FoldkitError(f"malformed {NMS_KEY} metadata in the model ({type(exc).__name__}: {exc})") from None


class _Tail:
    """Collects the tail's nodes and constants, every name prefixed so none clashes with the graph's."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.constants.append(numpy_helper.from_array(value, _PREFIX + name))
        return _PREFIX + name

    def op(self, op_type: str, inputs: list[str], outputs: int | list[str] = 1, **attrs) -> list[str]:
        names = ([f"{_PREFIX}{op_type.lower()}{len(self.nodes)}_{i}" for i in range(outputs)]
                 if isinstance(outputs, int) else outputs)
        self.nodes.append(helper.make_node(op_type, inputs, names, name=f"{_PREFIX}{op_type}{len(self.nodes)}",
                                           **attrs))
        return names

    def one(self, op_type: str, inputs: list[str], **attrs) -> str:
        return self.op(op_type, inputs, 1, **attrs)[0]


def _int64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _scores_and_boxes(t: _Tail) -> tuple[str, str]:
    """Corner boxes (N, B, 4) and Darknet's scores (N, C, B), zero where objectness ≤ conf."""
    axis2 = t.const("axis2", _int64(2))

    def columns(start: int, end: int) -> str:
        return t.one("Slice", [CANDIDATES, t.const(f"from{start}", _int64(start)),
                               t.const(f"to{end}", _int64(end)), axis2])

    centres, sizes, objectness = columns(0, 2), columns(2, 4), columns(4, 5)
    classes = columns(5, np.iinfo(np.int64).max)
    half = t.one("Mul", [sizes, t.const("half", np.array(0.5, np.float32))])
    boxes = t.one("Concat", [t.one("Sub", [centres, half]), t.one("Add", [centres, half])], axis=2)
    probabilities = t.one("Mul", [objectness, classes])
    kept = t.one("Where", [t.one("Greater", [objectness, CONF]), probabilities,
                           t.const("zero", np.array(0.0, np.float32))])
    return boxes, t.one("Transpose", [kept], perm=[0, 2, 1])


def _sorted_selection(t: _Tail, selected: str, scores: str, classes: int) -> tuple[str, str, str, str]:
    """NMS's (K, 3) picks as (image, score, class, row index) sorted by image, -score, box, class.

    TopK keeps ties in index order, so three stable sorts from the least significant key up give
    the numpy path's order within each image.
    """
    column = {name: t.one("Gather", [selected, t.const(f"col{i}", np.array(i, np.int64))], axis=1)
              for i, name in enumerate(("image", "class", "box"))}
    picked_scores = t.one("GatherND", [scores, selected])
    key = t.one("Add", [t.one("Mul", [column["box"], t.const("classes", np.array(classes, np.int64))]),
                        column["class"]])
    total = t.one("Shape", [picked_scores])
    order = t.op("TopK", [t.one("Cast", [key], to=TensorProto.DOUBLE), total], 2, largest=0, sorted=1)[1]
    by_score = t.op("TopK", [t.one("Gather", [picked_scores, order]), total], 2, largest=1, sorted=1)[1]
    order = t.one("Gather", [order, by_score])
    images = t.one("Cast", [t.one("Gather", [column["image"], order])], to=TensorProto.DOUBLE)
    order = t.one("Gather", [order, t.op("TopK", [images, total], 2, largest=0, sorted=1)[1]])
    return (t.one("Gather", [column["image"], order]), t.one("Gather", [picked_scores, order]),
            t.one("Gather", [column["class"], order]), order)


def _build_tail(t: _Tail, settings: NmsSettings, classes: int) -> None:
    boxes, scores = _scores_and_boxes(t)
    max_det = t.const("max_det", _int64(settings.max_det))
    selected = t.one("NonMaxSuppression", [boxes, scores, max_det, IOU, CONF], center_point_box=0)
    images, picked_scores, picked_classes, order = _sorted_selection(t, selected, scores, classes)
    picked_boxes = t.one("GatherND", [boxes, t.one("Gather", [selected, t.const("image_box", _int64(0, 2))], axis=1)])
    picked_boxes = t.one("Gather", [picked_boxes, order])
    zero, one = t.const("i0", np.array(0, np.int64)), t.const("i1", np.array(1, np.int64))
    batch = t.one("Gather", [t.one("Shape", [CANDIDATES]), zero])
    same_image = t.one("Equal", [t.one("Unsqueeze", [t.one("Range", [zero, batch, one]), t.const("ax1", _int64(1))]),
                                 t.one("Unsqueeze", [images, t.const("ax0", _int64(0))])])
    per_image = t.one("ReduceSum", [t.one("Cast", [same_image], to=TensorProto.INT64), t.const("axes1", _int64(1))],
                      keepdims=0)
    firsts = t.one("CumSum", [per_image, zero], exclusive=1)
    positions = t.one("Range", [zero, t.one("Gather", [t.one("Shape", [images]), zero]), one])
    rank = t.one("Sub", [positions, t.one("Gather", [firsts, images])])
    keep = t.one("Less", [rank, t.const("max_det_scalar", np.array(settings.max_det, np.int64))])
    axis1 = t.const("axis1", _int64(1))
    rows = t.one("Concat", [picked_boxes, t.one("Unsqueeze", [picked_scores, axis1]),
                            t.one("Unsqueeze", [t.one("Cast", [picked_classes], to=TensorProto.FLOAT), axis1])],
                 axis=1)
    where = t.one("Concat", [t.one("Unsqueeze", [images, axis1]), t.one("Unsqueeze", [rank, axis1])], axis=1)
    shape = t.one("Concat", [t.one("Unsqueeze", [batch, t.const("ax0b", _int64(0))]),
                             t.const("row_shape", _int64(settings.max_det, 6))], axis=0)
    empty = t.one("ConstantOfShape", [shape], value=numpy_helper.from_array(np.zeros(1, np.float32)))
    t.op("ScatterND", [empty, t.one("Compress", [where, keep], axis=0), t.one("Compress", [rows, keep], axis=0)],
         [DETECTIONS])
    t.op("Min", [per_image, t.const("max_det_count", _int64(settings.max_det))], [COUNT])


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def append_nms(model: onnx.ModelProto, settings: NmsSettings, *, where: str = "<model>") -> onnx.ModelProto:
    """A copy of a decoded YOLO model with the NMS tail appended and ``foldkit.nms`` in its metadata."""
    metadata = read_metadata(model)
    if NMS_KEY in metadata:
        raise FoldkitError(f"{where}: the model already ends with NMS")
    if metadata.get(DECODED_KEY) != "true" or len(model.graph.output) != 1:
        raise FoldkitError(f"{where}: NMS goes after in-graph decoding: export with --decode (one decoded output)")
    if _opset(model) < MIN_NMS_OPSET:
        raise FoldkitError(f"{where}: NMS in the graph needs opset {MIN_NMS_OPSET} or newer, not {_opset(model)}")
    decoded = model.graph.output[0]
    dims = decoded.type.tensor_type.shape.dim
    classes = _class_count(metadata, dims, where)
    taken = {v for n in model.graph.node for v in (*n.input, *n.output)} | {i.name for i in model.graph.input}
    clashes = sorted(n for n in taken | {i.name for i in model.graph.initializer}
                     if n in (CANDIDATES, DETECTIONS, COUNT, CONF, IOU) and n != decoded.name or n.startswith(_PREFIX))
    if clashes:
        raise FoldkitError(f"{where}: the graph already uses the names {', '.join(clashes)} that the NMS tail adds")
    result = onnx.ModelProto()
    result.CopyFrom(model)
    _rename_value(result.graph, decoded.name, CANDIDATES)
    t = _Tail()
    _build_tail(t, settings, classes)
    graph = result.graph
    batch = onnx.TensorShapeProto.Dimension()
    batch.CopyFrom(dims[0])
    graph.node.extend(t.nodes)
    graph.initializer.extend([*t.constants, numpy_helper.from_array(np.array([settings.conf], np.float32), CONF),
                              numpy_helper.from_array(np.array([settings.iou], np.float32), IOU)])
    graph.input.extend([helper.make_tensor_value_info(CONF, TensorProto.FLOAT, [1]),
                        helper.make_tensor_value_info(IOU, TensorProto.FLOAT, [1])])
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info(DETECTIONS, TensorProto.FLOAT, [None, settings.max_det, 6]),
                         helper.make_tensor_value_info(COUNT, TensorProto.INT64, [None])])
    for output in graph.output:
        output.type.tensor_type.shape.dim[0].CopyFrom(batch)
    add_metadata(result, {NMS_KEY: json.dumps(asdict(settings))})
    onnx.checker.check_model(result)
    return result


def _class_count(metadata: dict[str, str], dims, where: str) -> int:
    """C of the decoded (N, boxes, 4 + 1 + C) output: from the metadata, checked against a known last dim."""
    text = metadata.get(CLASSES_KEY, "")
    classes = int(text) if text.isdigit() else 0
    last = dims[2].dim_value if len(dims) == 3 and dims[2].HasField("dim_value") else None
    if len(dims) != 3 or classes < 1 or last not in (None, classes + 5):
        raise FoldkitError(f"{where}: the decoded output is not (N, boxes, 4 + 1 + classes) with the classes "
                           f"in the {CLASSES_KEY} metadata")
    return classes


def _rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
        node.input[:] = [new if name == old else name for name in node.input]
