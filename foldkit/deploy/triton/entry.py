"""What every Triton model-repository entry shares: its name, its tensors' config blocks, its staged writing.

An entry is ``REPO/NAME/config.pbtxt`` plus files under ``REPO/NAME/`` (the model in ``1/``, and
for the Python backend its ``model.py`` and stub). Everything is staged and renamed into place
together, so a failure leaves an existing entry as it was.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import onnx

from foldkit.defaults import TRITON_KINDS
from foldkit.errors import FoldkitError
from foldkit.onnxio.files import OutputTransaction, check_external_locations, check_outputs, require_input_file

TRITON_INT_MAX = 2**31 - 1  # config.pbtxt's max_batch_size and instance count are int32
MODEL_FILE = "model.onnx"  # the model's name in the entry's version folder (the backends' default)
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")

TRITON_TYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16", onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16", onnx.TensorProto.INT8: "TYPE_INT8", onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32", onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.UINT16: "TYPE_UINT16", onnx.TensorProto.UINT32: "TYPE_UINT32",
    onnx.TensorProto.UINT64: "TYPE_UINT64", onnx.TensorProto.BOOL: "TYPE_BOOL", onnx.TensorProto.STRING: "TYPE_STRING",
}


def dims(value: onnx.ValueInfoProto) -> list[int]:
    """A tensor's dims, -1 where dynamic."""
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


def tensor_block(kind: str, value: onnx.ValueInfoProto, drop_batch: bool, where: str, *, optional: bool = False) -> str:
    """One ``input``/``output`` entry of config.pbtxt for an ONNX value, its name checked for the text format."""
    elem = value.type.tensor_type.elem_type
    if elem not in TRITON_TYPES:
        raise FoldkitError(f"{where}: {kind} '{value.name}' has ONNX type {elem}, which Triton cannot serve")
    shape = dims(value)[1:] if drop_batch else dims(value)
    return block(kind, value.name, TRITON_TYPES[elem], shape, where, optional=optional)


def block(kind: str, name: str, data_type: str, shape: list[int], where: str, *, optional: bool = False) -> str:
    """One ``input``/``output`` entry of config.pbtxt."""
    if not name.isprintable() or '"' in name or "\\" in name:
        raise FoldkitError(f"{where}: {kind} name {name!r} cannot be written into config.pbtxt safely")
    extra = "\n    optional: true" if optional else ""
    return (f"  {{\n    name: \"{name}\"\n    data_type: {data_type}\n"
            f"    dims: [ {', '.join(map(str, shape))} ]{extra}\n  }}")


def tensor_blocks(model: onnx.ModelProto, where: str) -> tuple[list[str], bool]:
    """config.pbtxt's ``input [...]`` and ``output [...]`` for a model served as is, and whether it is batched.

    When every input and output has a dynamic first dimension, that dimension is Triton's batch
    (left out of the dims); inputs with a default in the graph (initializers, such as an in-graph
    NMS's thresholds) are optional.
    """
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    defaults = [i for i in graph.input if i.name in initializers]
    values = inputs + defaults + list(graph.output)
    batched = all(v.type.tensor_type.shape.dim and dims(v)[0] == -1 for v in values)
    blocks = [tensor_block("input", v, batched, where) for v in inputs]
    blocks += [tensor_block("input", v, batched, where, optional=True) for v in defaults]
    outputs = [tensor_block("output", v, batched, where) for v in graph.output]
    return ["input [\n" + ",\n".join(blocks) + "\n]", "output [\n" + ",\n".join(outputs) + "\n]"], batched


def check_max_batch(max_batch: int) -> None:
    if not 1 <= max_batch <= TRITON_INT_MAX:
        raise FoldkitError(f"--max-batch must be from 1 to {TRITON_INT_MAX} (Triton reads it as a 32-bit integer), "
                           f"not {max_batch}")


def parameters(values: dict[str, str]) -> list[str]:
    """config.pbtxt ``parameters`` entries (string values, as every backend reads them)."""
    for key, value in values.items():
        if not (key + value).isprintable() or any(c in key + value for c in '"\\'):
            raise FoldkitError(f"parameter {key!r}: {value!r} cannot be written into config.pbtxt safely")
    return [f'parameters: {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}'
            for key, value in values.items()]


def instance_group(instances: int, kind: str) -> str:
    if kind not in TRITON_KINDS:
        raise FoldkitError(f"instance kind must be cpu or gpu, not {kind!r}")
    if not 1 <= instances <= TRITON_INT_MAX:
        raise FoldkitError(f"--instances must be from 1 to {TRITON_INT_MAX} (Triton reads it as a 32-bit integer), "
                           f"not {instances}")
    return f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_{kind.upper()}\n  }}\n]"


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


def entry_name(model_path: Path, name: str | None) -> str:
    return check_model_name(name) if name is not None else default_model_name(model_path)


def write_entry(model_path: Path, model: onnx.ModelProto, repo: Path, name: str, config: str,
                files: dict[str, str | Path] | None = None) -> Path:
    """Stage ``REPO/NAME/config.pbtxt``, ``1/model.onnx`` with its external data, and ``files``; rename together.

    ``files`` maps paths inside the entry to text to write or a file to copy. Returns the config path.
    """
    entry, version = repo / name, repo / name / "1"
    if repo.exists() and not repo.is_dir():
        raise FoldkitError(f"{repo}: exists and is not a folder")
    locations = sorted(check_external_locations(model, model_path))
    copying = [(version / MODEL_FILE, model_path)]
    copying += [(version / location, model_path.parent / location) for location in locations]
    writing = [(entry / "config.pbtxt", config)]
    for inside, content in (files or {}).items():
        if isinstance(content, Path):
            copying.append((entry / inside, content))
        else:
            writing.append((entry / inside, content))
    targets = [t for t, _ in writing] + [t for t, _ in copying]
    copies, texts = dict(copying), dict(writing)
    clashing = sorted({str(t) for t in targets if targets.count(t) > 1})
    if clashing:
        raise FoldkitError(f"{model_path}: an external data file would be written over another output of the "
                           f"entry: {', '.join(clashing)}")
    for folder in {t.parent for t in targets}:
        if folder.exists():
            check_outputs([t for t in targets if t.parent == folder], list(copies.values()))
    with OutputTransaction(list(copies.values())) as staged:
        for folder in sorted({t.parent for t in targets}):
            staged.make_folder(folder)
        for target, text in texts.items():
            staged.write_text(target, text)
        for target, source in copies.items():
            shutil.copyfile(require_input_file(source, "file of the entry"), staged.path(target))
    for target, source in copies.items():
        if os.access(source, os.X_OK):  # a program (the Python backend's stub) stays one; the umask still applies
            mode = target.stat().st_mode
            target.chmod(mode | (mode & 0o444) >> 2)
    return entry / "config.pbtxt"
