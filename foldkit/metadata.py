"""What deployment needs to know about an exported network, kept in the ONNX model's metadata_props.

Keys are prefixed ``foldkit.``; list and dict values are JSON. Deploy code reads them back; a
model exported elsewhere has none, and then the values must be given explicitly.
"""

from __future__ import annotations

import json

import onnx

PREFIX = "foldkit."


def fold_metadata(report) -> dict[str, str]:
    """Whether the model was folded (``report`` is None when not) and the fold's one-line summary."""
    props = {"foldkit.folded": str(report is not None).lower()}
    if report is not None:
        props["foldkit.fold_summary"] = report.summary()
    return props


def network_metadata(info, input_shape: tuple) -> dict[str, str]:
    """Metadata for a Darknet network's ``NetInfo``: kind, input, classes, anchors, strides, scale_x_y."""
    from foldkit import __version__

    props = {"foldkit.version": __version__, "foldkit.input_shape": json.dumps(list(input_shape)),
             "foldkit.input_layout": "NCHW RGB [0,1]"}
    if info is None:
        return props
    props["foldkit.network"] = "detector" if info.heads else "classifier"
    if info.heads:
        props["foldkit.classes"] = str(info.heads[0].classes)
        props["foldkit.yolo_heads"] = json.dumps([head_metadata(h) for h in info.heads])
    return props


def head_metadata(head) -> dict:
    """One head's decoding parameters: a ``[yolo]`` head's (anchors in input pixels) or a ``[region]``
    head's (``kind: region``, anchors in grid cells, ``coords``, ``softmax``, ``tree``)."""
    kind = getattr(head, "kind", "yolo")
    entry = {"kind": kind, "classes": head.classes, "anchors": head.anchors, "stride": head.stride}
    if kind == "region":
        return entry | {"coords": head.coords, "softmax": head.softmax, "tree": head.tree}
    return entry | {"mask": head.mask, "scale_x_y": head.scale_x_y, "new_coords": head.new_coords}


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """foldkit's metadata of a model, without the prefix."""
    return {p.key[len(PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}


def add_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    """Add or replace metadata entries, keeping the others."""
    merged = {p.key: p.value for p in model.metadata_props} | props
    onnx.helper.set_model_props(model, merged)
