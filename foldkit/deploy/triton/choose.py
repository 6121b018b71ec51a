"""Which Triton backend an entry is written for: the user's choice, or the one the model was measured on.

``auto`` follows the model's deployment record (``foldkit optimize``): OpenVINO → Triton's OpenVINO
backend, an ONNX Runtime provider → the onnxruntime backend; a model without a record gets the
onnxruntime backend. A backend named explicitly is written as asked; when it is not the runtime
the record names, a :class:`RecordWarning` says that the server will not run what was measured.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from foldkit.defaults import DEFAULT_MAX_DET, TRITON_BACKENDS
from foldkit.deploy.triton.onnxruntime import write_repository
from foldkit.deploy.triton.openvino import write_openvino_repository
from foldkit.deploy.triton.python import write_python_repository
from foldkit.errors import FoldkitError
from foldkit.onnxio.files import require_input_file
from foldkit.runtime.deployment import DeploymentRecord, RecordWarning, model_deployment_record
from foldkit.runtime.openvino import OPENVINO

AUTO, ONNXRUNTIME, OPENVINO_BACKEND, PYTHON = TRITON_BACKENDS


def recorded_backend(record: DeploymentRecord | None) -> str:
    """The Triton backend that runs a model the way its record says (onnxruntime without a record)."""
    return OPENVINO_BACKEND if record is not None and record.backend == OPENVINO else ONNXRUNTIME


def write_triton_entry(
    model_path: str | os.PathLike, repo: str | os.PathLike, *, backend: str = AUTO, name: str | None = None,
    max_batch: int = 8, instances: int = 1, kind: str = "cpu", max_det: int = DEFAULT_MAX_DET, tensors: bool = False,
    img_size: int | tuple[int, int] | None = None, letterbox: str | None = None,
) -> tuple[Path, str]:
    """Write one entry; returns its config path and the backend it was written for.

    ``python`` runs foldkit inside Triton's Python backend (images in, detections out for a YOLO
    model, unless ``tensors``); it follows a record itself, on any runtime the record names.
    ``img_size`` and ``letterbox``: the size a dynamic-size detector served as detections runs at
    (Python backend only; the tensor backends serve the model's own input shape, -1 where dynamic).
    """
    model_path = require_input_file(model_path, "model")
    record = model_deployment_record(model_path)
    chosen = recorded_backend(record) if backend == AUTO else backend
    _check_options(chosen, kind, tensors, sized=img_size is not None or letterbox is not None)
    if record is not None and chosen not in (recorded_backend(record), PYTHON):
        warnings.warn(f"{model_path}: its deployment record ({record.candidate}) was measured on {record.backend}; "
                      f"the {chosen} backend will not run it as measured (--backend auto follows the record)",
                      RecordWarning, stacklevel=2)
    if chosen == PYTHON:
        config = write_python_repository(model_path, repo, name=name, instances=instances, max_det=max_det,
                                         tensors=tensors, img_size=img_size, letterbox=letterbox)
    elif chosen == OPENVINO_BACKEND:
        config = write_openvino_repository(model_path, repo, name=name, max_batch=max_batch, instances=instances)
    else:
        config = write_repository(model_path, repo, name=name, max_batch=max_batch, instances=instances, kind=kind)
    return config, chosen


def _check_options(backend: str, kind: str, tensors: bool, sized: bool) -> None:
    if backend not in TRITON_BACKENDS:
        raise FoldkitError(f"unknown Triton backend {backend!r}; choose from {', '.join(TRITON_BACKENDS)}")
    if backend in (PYTHON, OPENVINO_BACKEND) and kind != "cpu":
        raise FoldkitError(f"the {backend} backend runs on the CPU: --kind gpu does not apply")
    if tensors and backend != PYTHON:
        raise FoldkitError("--tensors applies to --backend python; the other backends serve tensors")
    if sized and backend != PYTHON:
        raise FoldkitError("--img-size and --letterbox apply to --backend python; the other backends serve the "
                           "model's tensors at the shape the request brings")
