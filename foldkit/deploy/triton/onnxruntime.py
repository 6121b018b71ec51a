"""A Triton Inference Server model repository entry for an ONNX model (the ``onnxruntime`` backend).

Writes ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.onnx``. Inputs and outputs, with their
data types and dims, come from the model itself; inputs with a default in the graph (such as the
thresholds of an in-graph NMS, :mod:`foldkit.deploy.nms_graph`) are optional. When every input and
output has a dynamic first dimension, it becomes Triton's batch dimension (``max_batch_size`` > 0,
dims without it, dynamic batching on); otherwise the model is served as is (``max_batch_size: 0``,
full dims).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from foldkit.deploy.triton.entry import TRITON_INT_MAX, dims, entry_name, instance_group, tensor_block, write_entry
from foldkit.errors import FoldkitError
from foldkit.onnxio.files import load_onnx, require_input_file


def triton_config(model: onnx.ModelProto, name: str, *, max_batch: int = 8, instances: int = 1,
                  kind: str = "cpu", where: str = "<model>") -> str:
    """The ``config.pbtxt`` text for ``model``."""
    if not 1 <= max_batch <= TRITON_INT_MAX:
        raise FoldkitError(f"--max-batch must be from 1 to {TRITON_INT_MAX} (Triton reads it as a 32-bit integer), "
                           f"not {max_batch}")
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    defaults = [i for i in graph.input if i.name in initializers]
    values = inputs + defaults + list(graph.output)
    batched = all(v.type.tensor_type.shape.dim and dims(v)[0] == -1 for v in values)
    blocks = [tensor_block("input", v, batched, where) for v in inputs]
    blocks += [tensor_block("input", v, batched, where, optional=True) for v in defaults]
    lines = [f'name: "{name}"', 'backend: "onnxruntime"', f"max_batch_size: {max_batch if batched else 0}"]
    lines.append("input [\n" + ",\n".join(blocks) + "\n]")
    lines.append("output [\n" + ",\n".join(tensor_block("output", v, batched, where) for v in graph.output) + "\n]")
    lines.append(instance_group(instances, kind))
    if batched:
        lines.append("dynamic_batching { }")
    return "\n".join(lines) + "\n"


def write_repository(
    model_path: str | os.PathLike, repo: str | os.PathLike, *, name: str | None = None, max_batch: int = 8,
    instances: int = 1, kind: str = "cpu",
) -> Path:
    """Write the model's folder in ``repo``; returns the config path. The model file is copied.

    Everything (config, model, its external data files) is staged and renamed into place together,
    so a failure leaves an existing entry as it was.
    """
    model_path = require_input_file(model_path, "model")
    name = entry_name(model_path, name)
    model = load_onnx(model_path, load_external_data=False)
    config = triton_config(model, name, max_batch=max_batch, instances=instances, kind=kind, where=str(model_path))
    return write_entry(model_path, model, Path(repo), name, config)
