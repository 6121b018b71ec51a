"""Where initializer values live while a pass works on a graph.

The default store keeps them where ONNX does, inside each ``TensorProto``. A pass that only reads
and writes through a store also works on a graph whose tensors stay in the file until written
out (:mod:`foldkit.onnxio.lazy`), which is what lets ``foldkit fold`` handle a large model without
parsing and re-serializing every weight in memory.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from foldkit.errors import FoldkitError


def require_numeric(tensor: onnx.TensorProto, where: str | None = None) -> None:
    """Passes compute with initializer values: a tensor of strings where numbers belong is the model's error."""
    if tensor.data_type == onnx.TensorProto.STRING:
        raise FoldkitError(f"{where + ': ' if where else ''}initializer '{tensor.name}' holds strings where a "
                           "computation needs numbers")


class TensorStore:
    """Values of initializers: read, replaced, and materialized as complete ``TensorProto`` s.

    ``where`` (the model's file, when known) starts the message of a value that cannot be read.
    """

    where: str | None = None

    def get(self, tensor: onnx.TensorProto) -> np.ndarray:
        require_numeric(tensor, self.where)
        return numpy_helper.to_array(tensor)

    def put(self, tensor: onnx.TensorProto, array: np.ndarray) -> None:
        """Give ``tensor`` (already in the graph, possibly new and empty) the value ``array``."""
        tensor.CopyFrom(numpy_helper.from_array(np.asarray(array), tensor.name))

    def materialized(self, tensor: onnx.TensorProto) -> onnx.TensorProto:
        """A complete TensorProto holding the data (for evaluating nodes over it)."""
        return tensor
