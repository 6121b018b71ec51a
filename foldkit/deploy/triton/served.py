"""The ``TritonPythonModel`` a foldkit Python-backend entry's ``model.py`` re-exports.

Triton's Python backend runs it inside ``triton_python_backend_stub``, which provides the module
``triton_python_backend_utils``. The entry's config names the handler (``foldkit_handler``:
``tensors`` or ``detections``), ``max_det``, and for a dynamic-size detector the size it runs at and
its letterbox; the model is ``model.onnx`` beside ``model.py``. A
request that fails (an image that does not decode, a bad threshold) gets an error response with
foldkit's one-line message; the other requests of the batch are answered.

numpy 2: the stub's numpy conversions were built for numpy 1's array descriptors and read a numpy 2
array's item size as 0 (empty outputs) and BYTES inputs from the wrong memory. So tensors cross
the stub through DLPack only, both ways, and the images come as UINT8 (DLPack has no BYTES).
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from typing import Any

import numpy as np

from foldkit.defaults import DEFAULT_LETTERBOX
from foldkit.deploy.triton.handlers import DetectionHandler, TensorHandler
from foldkit.errors import FoldkitError

HANDLER_KEY, MAX_DET_KEY = "foldkit_handler", "foldkit_max_det"  # config.pbtxt parameters
IMG_SIZE_KEY, LETTERBOX_KEY = "foldkit_img_size", "foldkit_letterbox"  # "HxW" a dynamic model runs at; square/rect
_NUMPY_USED_CAPSULE = ctypes.c_char_p(b"used_dltensor")  # numpy's name for a consumed DLPack capsule; kept alive
_set_capsule_name = ctypes.pythonapi.PyCapsule_SetName
_set_capsule_name.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _size(text: str | None) -> tuple[int, int] | None:
    """The entry's ``foldkit_img_size`` ("HxW", as foldkit triton writes it)."""
    if text is None:
        return None
    height, width = text.split("x")
    return int(height), int(width)


class TritonPythonModel:
    """Triton's entry points: ``initialize`` once per instance, ``execute`` per batch of requests."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / args["model_version"]
        self.inputs = [entry["name"] for entry in config["input"]]
        self.outputs = {entry["name"]: entry["data_type"] for entry in config["output"]}
        model = folder / "model.onnx"
        if parameters.get(HANDLER_KEY) == "detections":
            self.handler: DetectionHandler | TensorHandler = DetectionHandler(
                model, int(parameters[MAX_DET_KEY]), img_size=_size(parameters.get(IMG_SIZE_KEY)),
                letterbox=parameters.get(LETTERBOX_KEY, DEFAULT_LETTERBOX))
        else:
            self.handler = TensorHandler(model)

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils  # only inside the stub

        responses = []
        for request in requests:
            try:
                feeds = {}
                for name in self.inputs:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    if tensor is not None:
                        feeds[name] = np.from_dlpack(_Capsule(tensor.to_dlpack())).copy()
                results = self.handler(feeds)
                tensors = [_output(pb_utils, name, _plain(results[name], pb_utils.triton_string_to_numpy(kind)))
                           for name, kind in self.outputs.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except FoldkitError as exc:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))))
        return responses

    def finalize(self) -> None:
        self.handler = None  # type: ignore[assignment]


def _output(pb_utils: Any, name: str, array: np.ndarray) -> Any:
    """A response tensor that shares ``array`` through DLPack (the stub's numpy path misreads numpy 2 arrays).

    The stub renames the capsule it consumed to its own "used" name, which numpy's capsule
    destructor does not know (it would report an error for every output); marking it with numpy's
    "used" name after the stub has taken it lets the destructor step aside, as it should.
    """
    capsule = array.__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _set_capsule_name(capsule, _NUMPY_USED_CAPSULE)
    return tensor


def _plain(array: np.ndarray, dtype: Any) -> np.ndarray:
    """C-contiguous, native byte order, exactly the config's type."""
    return np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("="))


class _Capsule:
    """A DLPack capsule from the stub, wrapped so ``np.from_dlpack`` takes it (CPU memory)."""

    def __init__(self, capsule: Any) -> None:
        self.capsule = capsule

    def __dlpack__(self, **_: Any) -> Any:
        return self.capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU, device 0
