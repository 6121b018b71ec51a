"""YOLO decoding inside the graph: raw head maps → one (N, boxes, 4 + 1 + classes) tensor.

Darknet's inference transform (yolo_layer.c): σ on tx, ty, objectness and class scores; then
``x = x·scale_x_y − (scale_x_y − 1)/2``; the box centre is ``(col + x)·stride`` and its size
``exp(tw)·anchor_w`` (or, with ``new_coords=1``, where the conv already applied the logistic,
``x`` is used as is and the size is ``(2·tw)²·anchor_w``). Boxes are (cx, cy, w, h) in input pixels,
followed by objectness and the class scores (not yet multiplied by objectness).

``[region]`` heads (YOLOv2, FORMAT-ZOO §3.3) decode as Darknet's region layer does: σ on tx, ty and
objectness, ``exp(tw)·anchor_w`` with anchors in grid cells (so times the stride in pixels), and
the class scores softmaxed when the section says ``softmax=1`` (left raw otherwise, as AlexeyAB does).
``[Gaussian_yolo]`` heads and hierarchical (``tree=``) region heads are exported raw only.
"""

from __future__ import annotations

import torch
from torch import nn

from foldkit.darknet.build import DarknetModel, YoloHead
from foldkit.darknet.specs import GaussianYoloHead, RegionHead
from foldkit.errors import FoldkitError


class YoloDecoder(nn.Module):
    """Wraps a detector so that its forward returns decoded boxes from every head, concatenated."""

    decodes_boxes = True  # read by foldkit.export_onnx for the model's metadata

    def __init__(self, model: DarknetModel) -> None:
        super().__init__()
        if not model.is_detector:
            raise ValueError("decoding needs a detector with [yolo] heads")
        self.model = model
        self.heads = model.info.heads
        for i, head in enumerate(self.heads):
            if isinstance(head, GaussianYoloHead) or (isinstance(head, RegionHead) and (head.tree or head.coords != 4)):
                what = ("[Gaussian_yolo]" if isinstance(head, GaussianYoloHead)
                        else "a hierarchical or coords≠4 [region]")
                raise FoldkitError(f"{model.info.source}: layer {head.layer + 1} is {what} head; foldkit exports "
                                   "its raw map but does not decode it in the graph")
            self.register_buffer(f"anchors{i}", torch.tensor(head.anchors, dtype=torch.float32).view(1, -1, 1, 1, 2))

    def output_names(self) -> list[str]:
        return ["detections"]

    @property
    def info(self):
        return self.model.info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.model(x)
        return torch.cat([self._decode(m, head, getattr(self, f"anchors{i}")) for i, (m, head) in
                          enumerate(zip(maps, self.heads, strict=True))], dim=1)

    def _decode(self, raw: torch.Tensor, head: YoloHead | RegionHead, anchors: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = raw.shape
        # strides from the size the network was built for: constants in the exported graph
        stride_y, stride_x = self.info.height / height, self.info.width / width
        count = len(head.anchors)
        p = raw.view(batch, count, head.classes + 5, height, width).permute(0, 1, 3, 4, 2)
        rows = torch.arange(height, dtype=raw.dtype).view(1, 1, height, 1)
        cols = torch.arange(width, dtype=raw.dtype).view(1, 1, 1, width)
        if isinstance(head, RegionHead):
            cells = torch.tensor([stride_x, stride_y], dtype=raw.dtype)
            xy = torch.sigmoid(p[..., 0:2])
            classes = torch.softmax(p[..., 5:], dim=-1) if head.softmax else p[..., 5:]
            scores = torch.cat([torch.sigmoid(p[..., 4:5]), classes], dim=-1)
            wh = torch.exp(p[..., 2:4]) * anchors * cells
            boxes = torch.cat([((xy[..., 0] + cols) * stride_x).unsqueeze(-1),
                               ((xy[..., 1] + rows) * stride_y).unsqueeze(-1), wh, scores], dim=-1)
            return boxes.reshape(batch, count * height * width, head.classes + 5)
        xy = p[..., 0:2] if head.new_coords else torch.sigmoid(p[..., 0:2])
        xy = xy * head.scale_x_y - 0.5 * (head.scale_x_y - 1.0)
        cx = (xy[..., 0] + cols) * stride_x
        cy = (xy[..., 1] + rows) * stride_y
        wh = (2.0 * p[..., 2:4]) ** 2 * anchors if head.new_coords else torch.exp(p[..., 2:4]) * anchors
        scores = p[..., 4:] if head.new_coords else torch.sigmoid(p[..., 4:])
        boxes = torch.cat([cx.unsqueeze(-1), cy.unsqueeze(-1), wh, scores], dim=-1)
        return boxes.reshape(batch, count * height * width, head.classes + 5)
