"""What deployment needs to know about an exported network, kept in the ONNX model's metadata_props.

Keys are prefixed ``foldkit.``; list and dict values are JSON. Deploy code reads them back; a
model exported elsewhere has none, and then the values must be given explicitly. Every key is
named once, here.
"""

from __future__ import annotations

import json
from typing import Any

import onnx

PREFIX = "foldkit."
VERSION_KEY = PREFIX + "version"
FOLDED_KEY = PREFIX + "folded"
FOLD_SUMMARY_KEY = PREFIX + "fold_summary"
EXPORTER_KEY = PREFIX + "exporter"
NETWORK_KEY = PREFIX + "network"  # "detector" or "classifier"
INPUT_SHAPE_KEY = PREFIX + "input_shape"
INPUT_LAYOUT_KEY = PREFIX + "input_layout"
CLASSES_KEY = PREFIX + "classes"
YOLO_HEADS_KEY = PREFIX + "yolo_heads"
DECODED_KEY = PREFIX + "decoded"
STRIDE_KEY = PREFIX + "stride"  # the network stride ("32", or "HxW"): input sizes are multiples of it
NMS_KEY = PREFIX + "nms"  # JSON {max_det, conf, iou}: the graph ends with NMS (foldkit.deploy.nms_graph)
OPTIMIZED_FOR_KEY = PREFIX + "optimized_for"  # the provider an offline-optimized model was saved for
DEPLOYMENT_KEY = PREFIX + "deployment"  # how `foldkit optimize` measured the model to run (runtime/deployment.py)

INPUT_LAYOUT = "NCHW RGB [0,1]"


def fold_metadata(report: Any) -> dict[str, str]:
    """Whether the model was folded (``report`` is None when not) and the fold's one-line summary."""
    props = {FOLDED_KEY: str(report is not None).lower()}
    if report is not None:
        props[FOLD_SUMMARY_KEY] = report.summary()
    return props


def network_metadata(info: Any, input_shape: tuple, *, decoded: bool = False) -> dict[str, str]:
    """Metadata for a Darknet network's ``NetInfo``: kind, input, classes, anchors, strides, scale_x_y."""
    from foldkit import __version__

    props = {VERSION_KEY: __version__, INPUT_SHAPE_KEY: json.dumps(list(input_shape)), INPUT_LAYOUT_KEY: INPUT_LAYOUT,
             DECODED_KEY: str(decoded).lower()}
    if info is None:
        return props
    props[NETWORK_KEY] = "detector" if info.heads else "classifier"
    if info.heads:
        props[CLASSES_KEY] = str(info.heads[0].classes)
        props[YOLO_HEADS_KEY] = json.dumps([head_metadata(h) for h in info.heads])
    return props


def head_metadata(head: Any) -> dict:
    """One head's decoding parameters: a ``[yolo]`` head's (anchors in input pixels) or a ``[region]``
    head's (``kind: region``, anchors in grid cells, ``coords``, ``softmax``, ``tree``)."""
    kind = getattr(head, "kind", "yolo")
    entry = {"kind": kind, "classes": head.classes, "anchors": head.anchors, "stride": head.stride}
    if kind == "region":
        return entry | {"coords": head.coords, "softmax": head.softmax, "tree": head.tree}
    return entry | {"mask": head.mask, "scale_x_y": head.scale_x_y, "new_coords": head.new_coords}


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """foldkit's metadata entries of a model, by their full keys."""
    return {p.key: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}


def add_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    """Add or replace metadata entries, keeping the others."""
    merged = {p.key: p.value for p in model.metadata_props} | props
    onnx.helper.set_model_props(model, merged)
