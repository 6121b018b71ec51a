"""YOLOv2 ``[region]`` decoding inside the graph: a raw head map → (N, boxes, 4 + 1 + classes).

Darknet's region layer (FORMAT-ZOO §3.2–3.3): σ on tx, ty and objectness, a softmax over the
class scores of each (cell, anchor) (the logistic per class when ``softmax=0``, as pjreddie's
layer does), and ``bx = (col + σ(tx))/W``, ``bw = exp(tw)·anchor_w/W`` with anchors in grid
cells. Boxes come out as (cx, cy, w, h) in input pixels followed by objectness and the class
probabilities, the layout :class:`foldkit.darknet.decode.YoloDecoder` writes for ``[yolo]`` heads,
so one decoder can concatenate both.
"""

from __future__ import annotations

import torch

from foldkit.darknet.layers import RegionHead
from foldkit.errors import FoldkitError


def decode_region(raw: torch.Tensor, head: RegionHead, input_size: tuple[int, int]) -> torch.Tensor:
    """(N, A·(5 + C), H, W) raw region map → (N, A·H·W, 5 + C) boxes in input pixels, objectness, classes."""
    if head.coords != 4 or head.tree:
        raise FoldkitError(f"layer {head.layer}: [region] with coords={head.coords}"
                           f"{' and a tree= hierarchy' if head.tree else ''} cannot be decoded in the graph")
    batch, _, height, width = raw.shape
    count, depth = len(head.anchors), head.classes + 5
    p = raw.view(batch, count, depth, height, width).permute(0, 1, 3, 4, 2)
    input_h, input_w = input_size
    cell_w, cell_h = input_w / width, input_h / height
    cols = torch.arange(width, dtype=raw.dtype).view(1, 1, 1, width)
    rows = torch.arange(height, dtype=raw.dtype).view(1, 1, height, 1)
    xy = torch.sigmoid(p[..., 0:2])
    cx = (xy[..., 0] + cols) * cell_w
    cy = (xy[..., 1] + rows) * cell_h
    anchors = torch.tensor(head.anchors, dtype=raw.dtype).view(1, count, 1, 1, 2)
    wh = torch.exp(p[..., 2:4]) * anchors * torch.tensor([cell_w, cell_h], dtype=raw.dtype)
    logits = p[..., 5:]
    classes = torch.softmax(logits, dim=-1) if head.softmax else torch.sigmoid(logits)
    boxes = torch.cat([cx.unsqueeze(-1), cy.unsqueeze(-1), wh, torch.sigmoid(p[..., 4:5]), classes], dim=-1)
    return boxes.reshape(batch, count * height * width, depth)
