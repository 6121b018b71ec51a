"""A Triton model-repository entry for the Python backend: ONNX Runtime inside, foldkit around it.

For servers without the onnxruntime backend (the ``tritonserver`` that PyPI's ``nvidia-pytriton``
ships has only the Python backend). The entry is::

    REPO/NAME/config.pbtxt                 backend: "python", foldkit_handler, foldkit_max_det
                                           (foldkit_img_size, foldkit_letterbox: a dynamic-size detector)
    REPO/NAME/1/model.py                   sys.path set up, then foldkit's TritonPythonModel
    REPO/NAME/1/model.onnx

A detector (YOLO metadata, or an NMS graph) is served as ``detections``: the client sends one
encoded image per request (``image``: the file's bytes as UINT8) and optionally ``conf`` and
``iou``, and gets ``detections`` (max_det, 6) = x1 y1 x2 y2 score class in image pixels and
``count`` (1), computed as ``foldkit detect`` computes them. Any other model is served as ``tensors``: its own
inputs and outputs.

Three things the Python backend does not do by itself:

- the stub runs its own interpreter, and the server's environment (``PYTHONPATH``, a virtualenv)
  does not reach it, so ``model.py`` puts the folders of foldkit and of the Python that wrote the
  entry at the front of ``sys.path``; the stub must be built for that Python's version;
- pip's ``nvidia-pytriton`` keeps its stubs where its server does not look:
  :mod:`foldkit.deploy.triton.local_server` writes a backend directory that has the right one;
- with numpy 2 the stub's own numpy conversions break: tensors cross it through DLPack
  (:mod:`foldkit.deploy.triton.served`), so images come as UINT8, not BYTES.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

import onnx

import foldkit
from foldkit.defaults import DEFAULT_LETTERBOX, DEFAULT_MAX_DET
from foldkit.deploy.nms_graph import NmsSettings, nms_settings
from foldkit.deploy.sizing import choose_size
from foldkit.deploy.triton.entry import block, entry_name, instance_group, parameters, tensor_block, write_entry
from foldkit.deploy.triton.handlers import CONF, COUNT, DETECTIONS, IMAGE, IOU
from foldkit.deploy.triton.served import HANDLER_KEY, IMG_SIZE_KEY, LETTERBOX_KEY, MAX_DET_KEY
from foldkit.errors import FoldkitError
from foldkit.onnxio.files import load_onnx, require_input_file
from foldkit.onnxio.input_size import input_size
from foldkit.onnxio.metadata import DECODED_KEY, YOLO_HEADS_KEY, read_metadata

MODEL_PY = '''"""Triton Python-backend entry written by foldkit {version}: serves model.onnx beside this file.

The stub does not see the server's environment, so the folders foldkit and its dependencies
were installed in (by the Python that wrote this entry, {python}) come first on sys.path.
"""

import sys

for _folder in reversed({folders!r}):
    if _folder not in sys.path:
        sys.path.insert(0, _folder)

from foldkit.deploy.triton.served import TritonPythonModel  # noqa: E402,F401
'''


def _sizing(model: onnx.ModelProto, where: str, handler: str, img_size: int | tuple[int, int] | None,
            letterbox: str | None) -> dict[str, str]:
    """The entry's size parameters, refused here (one line) where the model cannot run so."""
    if img_size is None and letterbox is None:
        return {}
    if handler != "detections":
        raise FoldkitError(f"{where}: --img-size and --letterbox apply to a detector served as detections")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
    mode = letterbox or DEFAULT_LETTERBOX
    height, width = choose_size(input_size(shape, read_metadata(model), where), img_size, mode)
    return {IMG_SIZE_KEY: f"{height}x{width}", LETTERBOX_KEY: mode}


def import_folders() -> list[str]:
    """Where this foldkit and its dependencies are imported from, for the stub's sys.path."""
    folders = [str(Path(foldkit.__file__).resolve().parents[1])]
    for key in ("purelib", "platlib"):
        folder = sysconfig.get_paths()[key]
        if folder not in folders:
            folders.append(folder)
    return folders


def is_detector(model: onnx.ModelProto) -> bool:
    metadata = read_metadata(model)
    return YOLO_HEADS_KEY in metadata or metadata.get(DECODED_KEY) == "true"


def python_config(model: onnx.ModelProto, name: str, *, handler: str, max_det: int, instances: int = 1,
                  where: str = "<model>", sizing: dict[str, str] | None = None) -> str:
    """The ``config.pbtxt`` text of a Python-backend entry (``max_batch_size: 0``: a request is a batch).

    ``sizing``: the run size and letterbox parameters of a dynamic-size detector."""
    if handler == "detections":
        inputs = [block("input", IMAGE, "TYPE_UINT8", [-1], where),
                  block("input", CONF, "TYPE_FP32", [1], where, optional=True),
                  block("input", IOU, "TYPE_FP32", [1], where, optional=True)]
        outputs = [block("output", DETECTIONS, "TYPE_FP32", [max_det, 6], where),
                   block("output", COUNT, "TYPE_INT64", [1], where)]
    else:
        graph = model.graph
        initializers = {i.name for i in graph.initializer}
        inputs = [tensor_block("input", v, False, where, optional=v.name in initializers) for v in graph.input]
        outputs = [tensor_block("output", v, False, where) for v in graph.output]
    lines = [f'name: "{name}"', 'backend: "python"', "max_batch_size: 0",
             "input [\n" + ",\n".join(inputs) + "\n]", "output [\n" + ",\n".join(outputs) + "\n]",
             instance_group(instances, "cpu"),
             *parameters({HANDLER_KEY: handler, MAX_DET_KEY: str(max_det)} | (sizing or {}))]
    return "\n".join(lines) + "\n"


def write_python_repository(
    model_path: str | os.PathLike, repo: str | os.PathLike, *, name: str | None = None, instances: int = 1,
    max_det: int = DEFAULT_MAX_DET, tensors: bool = False, img_size: int | tuple[int, int] | None = None,
    letterbox: str | None = None,
) -> Path:
    """Write a Python-backend entry; returns the config path. ``tensors``: a detector's raw tensors, not detections.

    ``img_size`` and ``letterbox`` (detections only) are checked against the model now: the size a
    model with a dynamic height and width runs at, and ``rect`` to trim each image's input to the
    next multiple of its stride (:mod:`foldkit.deploy.sizing`).
    """
    model_path = require_input_file(model_path, "model")
    name = entry_name(model_path, name)
    model = load_onnx(model_path, load_external_data=False)
    handler = "detections" if is_detector(model) and not tensors else "tensors"
    settings = nms_settings(read_metadata(model))
    max_det = settings.max_det if settings is not None else NmsSettings(max_det=max_det).max_det
    sizing = _sizing(model, str(model_path), handler, img_size, letterbox)
    config = python_config(model, name, handler=handler, max_det=max_det, instances=instances, where=str(model_path),
                           sizing=sizing)
    text = MODEL_PY.format(version=foldkit.__version__, python=sys.version.split()[0], folders=import_folders())
    return write_entry(model_path, model, Path(repo), name, config, {"1/model.py": text})
