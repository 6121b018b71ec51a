"""A Triton Inference Server model repository entry for an ONNX model (the ``onnxruntime`` backend).

Writes ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.onnx``. Inputs and outputs, with their
data types and dims, come from the model itself (:func:`foldkit.deploy.triton.entry.tensor_blocks`).
A model that carries a deployment record (``foldkit optimize``) gets the settings it was measured
with: ONNX Runtime's graph optimization level, its intra-op thread count, and for a record made
on CUDA or TensorRT a GPU instance group (TensorRT as the GPU execution accelerator).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from foldkit.deploy.triton.entry import (
    check_max_batch,
    entry_name,
    instance_group,
    parameters,
    tensor_blocks,
    write_entry,
)
from foldkit.onnxio.files import load_onnx, require_input_file
from foldkit.onnxio.metadata import read_metadata
from foldkit.runtime.deployment import DeploymentRecord, deployment_record

# ONNX Runtime's levels as the onnxruntime backend reads ``optimization { graph { level } }``: it
# enables all optimizations unless told otherwise (-1 basic, 1 extended, 2 none).
GRAPH_LEVELS = {"basic": -1, "extended": 1, "disable": 2}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def recorded_settings(record: DeploymentRecord | None, kind: str) -> tuple[list[str], str]:
    """The config lines that run the model as its record says, and the instance kind (GPU for a GPU record)."""
    if record is None:
        return [], kind
    optimization = []
    if record.opt_level in GRAPH_LEVELS:
        optimization.append(f"  graph: {{ level: {GRAPH_LEVELS[record.opt_level]} }}")
    if record.backend == "TensorrtExecutionProvider":
        optimization.append('  execution_accelerators {\n    gpu_execution_accelerator: [ { name: "tensorrt" } ]\n  }')
    lines = ["optimization {\n" + "\n".join(optimization) + "\n}"] if optimization else []
    if record.threads is not None:
        lines += parameters({"intra_op_thread_count": str(record.threads)})
    return lines, "gpu" if record.backend in GPU_PROVIDERS else kind


def triton_config(model: onnx.ModelProto, name: str, *, max_batch: int = 8, instances: int = 1,
                  kind: str = "cpu", where: str = "<model>", record: DeploymentRecord | None = None) -> str:
    """The ``config.pbtxt`` text for ``model``; ``record``: the deployment record to follow, if any."""
    check_max_batch(max_batch)
    tensors, batched = tensor_blocks(model, where)
    tuning, kind = recorded_settings(record, kind)
    lines = [f'name: "{name}"', 'backend: "onnxruntime"', f"max_batch_size: {max_batch if batched else 0}",
             *tensors, instance_group(instances, kind), *tuning]
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
    config = triton_config(model, name, max_batch=max_batch, instances=instances, kind=kind, where=str(model_path),
                           record=deployment_record(read_metadata(model), str(model_path)))
    return write_entry(model_path, model, Path(repo), name, config)
