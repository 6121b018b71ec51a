"""A Triton Inference Server model repository for an ONNX model (the ``onnxruntime`` backend).

Writes ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.onnx``. Inputs and outputs, with their
data types and dims, come from the model itself. When every input and output has a dynamic
first dimension, it becomes Triton's batch dimension (``max_batch_size`` > 0, dims without it,
dynamic batching on); otherwise the model is served as is (``max_batch_size: 0``, full dims).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import onnx

from foldkit.errors import FoldkitError
from foldkit.onnxio.files import (
    OutputTransaction,
    check_external_locations,
    check_outputs,
    load_onnx,
    require_input_file,
)

TRITON_INT_MAX = 2**31 - 1  # config.pbtxt's max_batch_size and instance count are int32
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")

TRITON_TYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16", onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16", onnx.TensorProto.INT8: "TYPE_INT8", onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32", onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.UINT16: "TYPE_UINT16", onnx.TensorProto.UINT32: "TYPE_UINT32",
    onnx.TensorProto.UINT64: "TYPE_UINT64", onnx.TensorProto.BOOL: "TYPE_BOOL", onnx.TensorProto.STRING: "TYPE_STRING",
}


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


def _tensor_block(kind: str, value: onnx.ValueInfoProto, drop_batch: bool, where: str) -> str:
    if not value.name.isprintable() or '"' in value.name or "\\" in value.name:
        raise FoldkitError(f"{where}: {kind} name {value.name!r} cannot be written into config.pbtxt safely")
    elem = value.type.tensor_type.elem_type
    if elem not in TRITON_TYPES:
        raise FoldkitError(f"{where}: {kind} '{value.name}' has ONNX type {elem}, which Triton cannot serve")
    dims = _dims(value)[1:] if drop_batch else _dims(value)
    return (f"  {{\n    name: \"{value.name}\"\n    data_type: {TRITON_TYPES[elem]}\n"
            f"    dims: [ {', '.join(map(str, dims))} ]\n  }}")


def triton_config(model: onnx.ModelProto, name: str, *, max_batch: int = 8, instances: int = 1,
                  kind: str = "cpu", where: str = "<model>") -> str:
    """The ``config.pbtxt`` text for ``model``."""
    if kind not in ("cpu", "gpu"):
        raise FoldkitError(f"instance kind must be cpu or gpu, not {kind!r}")
    if not (1 <= instances <= TRITON_INT_MAX and 1 <= max_batch <= TRITON_INT_MAX):
        raise FoldkitError(f"--instances and --max-batch must be from 1 to {TRITON_INT_MAX} (Triton reads them as "
                           f"32-bit integers), not {instances} and {max_batch}")
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    values = inputs + list(graph.output)
    batched = all(v.type.tensor_type.shape.dim and _dims(v)[0] == -1 for v in values)
    lines = [f'name: "{name}"', 'backend: "onnxruntime"', f"max_batch_size: {max_batch if batched else 0}"]
    lines.append("input [\n" + ",\n".join(_tensor_block("input", v, batched, where) for v in inputs) + "\n]")
    lines.append("output [\n" + ",\n".join(_tensor_block("output", v, batched, where) for v in graph.output) + "\n]")
    lines.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_{kind.upper()}\n  }}\n]")
    if batched:
        lines.append("dynamic_batching { }")
    return "\n".join(lines) + "\n"


def check_model_name(name: str) -> str:
    """``name`` if Triton can use it as a model folder name: letters, digits, ``_ . -``, not ``.``/``..``.

    Anything else (a path separator, a quote, a control character) could write outside the
    repository or inject fields into config.pbtxt.
    """
    if not MODEL_NAME.fullmatch(name) or name in (".", ".."):
        raise FoldkitError(f"model name {name!r} is not a valid Triton model folder name: use letters, digits, "
                           "'_', '.' and '-', starting with a letter, digit or '_'")
    return name


def default_model_name(model_path: Path) -> str:
    """The file's stem with every character Triton would not accept replaced by '_'."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", model_path.stem).lstrip(".-")
    return name if MODEL_NAME.fullmatch(name) else "model"


def write_repository(
    model_path: str | os.PathLike, repo: str | os.PathLike, *, name: str | None = None, max_batch: int = 8,
    instances: int = 1, kind: str = "cpu",
) -> Path:
    """Write the model's folder in ``repo``; returns the config path. The model file is copied.

    Everything (config, model, its external data files) is staged and renamed into place together,
    so a failure leaves an existing entry as it was.
    """
    model_path, repo = require_input_file(model_path, "model"), Path(repo)
    name = check_model_name(name) if name is not None else default_model_name(model_path)
    model = load_onnx(model_path, load_external_data=False)
    config = triton_config(model, name, max_batch=max_batch, instances=instances, kind=kind, where=str(model_path))
    entry, version = repo / name, repo / name / "1"
    if repo.exists() and not repo.is_dir():
        raise FoldkitError(f"{repo}: exists and is not a folder")
    locations = sorted(check_external_locations(model, model_path))
    sources = [model_path, *(model_path.parent / location for location in locations)]
    targets = [entry / "config.pbtxt", version / "model.onnx", *(version / location for location in locations)]
    clashing = sorted({str(t) for t in targets if targets.count(t) > 1})
    if clashing:
        raise FoldkitError(f"{model_path}: an external data file would be written over another output of the "
                           f"entry: {', '.join(clashing)}")
    for folder in {t.parent for t in targets}:
        if folder.exists():
            check_outputs([t for t in targets if t.parent == folder], sources)
    with OutputTransaction(sources) as staged:
        for folder in sorted({t.parent for t in targets}):
            staged.make_folder(folder)
        staged.write_text(targets[0], config)
        for source, target in zip(sources, targets[1:], strict=True):
            shutil.copyfile(require_input_file(source, "external data file"), staged.path(target))
    return targets[0]
