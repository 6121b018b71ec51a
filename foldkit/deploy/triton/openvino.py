"""A Triton model repository entry for Triton's OpenVINO backend, reading the ONNX file itself.

``backend: "openvino"`` with ``default_model_filename: "model.onnx"`` (the backend reads ONNX as
well as OpenVINO IR), tensors from the model as for the onnxruntime entry, and the OpenVINO
settings foldkit measures with: the ``LATENCY`` performance hint, one stream, the record's thread
count and, for a bf16 record, ``HINT_BF16``.

The backend accepts no other precision hint: it cannot be told to keep float32, so a record measured
at fp32 on a CPU whose OpenVINO default is bf16 (AMX, AVX-512 BF16) would run bf16 there, and fp16
cannot be asked for at all. Writing such an entry warns (:class:`RecordWarning`) and names the way to
run exactly what was measured: the Python-backend entry, which runs foldkit's OpenVINO backend.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import onnx

from foldkit.deploy.triton.entry import (
    MODEL_FILE,
    check_max_batch,
    entry_name,
    instance_group,
    parameters,
    tensor_blocks,
    write_entry,
)
from foldkit.onnxio.files import load_onnx, require_input_file
from foldkit.onnxio.metadata import read_metadata
from foldkit.runtime.deployment import BF16_FLAGS, DeploymentRecord, RecordWarning, deployment_record


def openvino_parameters(record: DeploymentRecord | None, where: str) -> dict[str, str]:
    """The backend's parameters for a record (or foldkit's defaults), warning where it cannot follow the record."""
    values = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if record is None:
        return values
    if record.threads is not None:
        values["INFERENCE_NUM_THREADS"] = str(record.threads)
    if record.precision == "bf16":
        values["HINT_BF16"] = "YES"
    elif record.precision == "fp16" or (record.precision == "fp32" and set(BF16_FLAGS) & set(record.cpu.flags)):
        warnings.warn(f"{where}: measured with OpenVINO at {record.precision}, which Triton's OpenVINO backend cannot "
                      "ask for (it has only HINT_BF16; on this record's CPU its default is bf16); "
                      "--backend python runs exactly what was measured", RecordWarning, stacklevel=3)
    return values


def openvino_config(model: onnx.ModelProto, name: str, *, max_batch: int = 8, instances: int = 1,
                    where: str = "<model>", record: DeploymentRecord | None = None) -> str:
    """The ``config.pbtxt`` text of an OpenVINO-backend entry for ``model``."""
    check_max_batch(max_batch)
    tensors, batched = tensor_blocks(model, where)
    lines = [f'name: "{name}"', 'backend: "openvino"', f'default_model_filename: "{MODEL_FILE}"',
             f"max_batch_size: {max_batch if batched else 0}", *tensors, instance_group(instances, "cpu"),
             *parameters(openvino_parameters(record, where))]
    if batched:
        lines.append("dynamic_batching { }")
    return "\n".join(lines) + "\n"


def write_openvino_repository(
    model_path: str | os.PathLike, repo: str | os.PathLike, *, name: str | None = None, max_batch: int = 8,
    instances: int = 1,
) -> Path:
    """Write an OpenVINO-backend entry in ``repo``; returns the config path (staged like every entry)."""
    model_path = require_input_file(model_path, "model")
    name = entry_name(model_path, name)
    model = load_onnx(model_path, load_external_data=False)
    config = openvino_config(model, name, max_batch=max_batch, instances=instances, where=str(model_path),
                             record=deployment_record(read_metadata(model), str(model_path)))
    return write_entry(model_path, model, Path(repo), name, config)
