"""YOLO decoding inside the graph: raw head maps → one (N, boxes, 4 + 1 + classes) tensor.

The formula is :func:`foldkit.darknet.head_decode.decode_head`, the one ``foldkit detect`` runs in
numpy; here it runs on torch tensors (:class:`TorchOps`) and is traced into the exported graph.
Boxes are (cx, cy, w, h) in input pixels, followed by objectness and the class scores (not yet
multiplied by objectness). With ``dynamic_size`` the grid and the strides are computed from the
input's shape at run time (Shape and Range in the graph), not baked in. ``[Gaussian_yolo]`` heads
and hierarchical (``tree=``) or coords ≠ 4 region heads are exported raw only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from foldkit.darknet.build import DarknetModel
from foldkit.darknet.head_decode import HeadSpec, decode_head
from foldkit.darknet.specs import GaussianYoloHead, RegionHead
from foldkit.errors import FoldkitError


class TorchOps:
    """:class:`~foldkit.darknet.head_decode.ArrayOps` for torch (traceable into ONNX)."""

    sigmoid = staticmethod(torch.sigmoid)
    exp = staticmethod(torch.exp)
    permute = staticmethod(torch.permute)

    @staticmethod
    def softmax(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=-1)

    @staticmethod
    def concat(parts: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(parts), dim=-1)

    @staticmethod
    def arange(n: int, like: torch.Tensor) -> torch.Tensor:
        return torch.arange(n, dtype=like.dtype)

    @staticmethod
    def constant(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(list(values), dtype=like.dtype)


class YoloDecoder(nn.Module):
    """Wraps a detector so that its forward returns decoded boxes from every head, concatenated."""

    decodes_boxes = True  # read by foldkit.export_onnx for the model's metadata

    def __init__(self, model: DarknetModel, *, dynamic_size: bool = False) -> None:
        super().__init__()
        self.dynamic_size = dynamic_size
        if not model.is_detector:
            raise ValueError("decoding needs a detector with [yolo] heads")
        self.model = model
        for head in model.info.heads:
            if isinstance(head, GaussianYoloHead) or (isinstance(head, RegionHead) and (head.tree or head.coords != 4)):
                what = ("[Gaussian_yolo]" if isinstance(head, GaussianYoloHead)
                        else "a hierarchical or coords≠4 [region]")
                raise FoldkitError(f"{model.info.source}: layer {head.layer + 1} is {what} head; foldkit exports "
                                   "its raw map but does not decode it in the graph")
        self.specs = [HeadSpec.of(head) for head in model.info.heads]
        for i, spec in enumerate(self.specs):
            self.register_buffer(f"anchors{i}", torch.tensor(spec.anchors, dtype=torch.float32).view(1, -1, 1, 1, 2))

    def output_names(self) -> list[str]:
        return ["detections"]

    @property
    def info(self):
        return self.model.info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.model(x)
        # Fixed: the size the network was built for, constants in the graph. Dynamic: the input's own
        # shape, which the tracer records as Shape ops, so grid offsets and strides follow the runtime size.
        size = (x.shape[2], x.shape[3]) if self.dynamic_size else (self.info.height, self.info.width)
        return torch.cat([decode_head(m, spec, getattr(self, f"anchors{i}"), size, TorchOps()) for i, (m, spec) in
                          enumerate(zip(maps, self.specs, strict=True))], dim=1)
