"""OpenVINO's own runtime (the ``openvino`` package) reading the ONNX file, as a backend.

OpenVINO compiles the ONNX graph for a device with an *inference precision hint*: ``f32`` keeps
float32 throughout (what parity needs); without a hint the CPU plugin picks its own, bf16 on
CPUs with AMX or AVX-512 BF16 and f32 elsewhere. What it picked is read back from the compiled
model's properties and recorded, never assumed. Where OpenVINO cannot compile a model at its default
precision (OpenVINO 2026.4 on an AMX CPU has no bf16 kernel for a convolution on signed-int8
activations, ONNX Runtime's ``quantize_static`` default), the default is retried as f32 with a
:class:`PrecisionWarning` naming the reason, and the record says so. OpenVINO does not check an input's shape against
the model's fixed dimensions (it ran a 48×192 image through a 224×224 classifier without a word),
so this backend checks every feed's dtype and fixed dims itself.

``onnxruntime-openvino`` (ORT with an OpenVINO execution provider) is a different thing: that
wheel replaces ``onnxruntime``; foldkit uses the ``openvino`` package side by side with it.
"""

from __future__ import annotations

import io
import os
import warnings
from collections import Counter
from typing import Any

import numpy as np
import onnx

from foldkit.defaults import OPENVINO_PRECISIONS
from foldkit.errors import FoldkitError
from foldkit.probe import ORT_TYPES
from foldkit.runtime.interface import TensorInfo

OPENVINO = "OpenVINO"  # the backend's name where an ORT provider's name would stand
DEVICE = "CPU"
# foldkit's precision names → OpenVINO's INFERENCE_PRECISION_HINT values; "default" sets no hint.
PRECISIONS = dict(zip(OPENVINO_PRECISIONS, ("f32", None, "bf16", "f16"), strict=True))
_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "f64": "tensor(double)", "i64": "tensor(int64)",
          "i32": "tensor(int32)", "u8": "tensor(uint8)", "boolean": "tensor(bool)"}
_NOT_LAYERS = ("Const", "Input", "Output")  # runtime-model entries that are not computation
INSTALL_HINT = "OpenVINO is not installed: pip install 'foldkit[openvino]'"


class PrecisionWarning(UserWarning):
    """OpenVINO runs a model at another precision than its default, because the default could not compile."""


def openvino_available() -> bool:
    """Whether the ``openvino`` package can be imported here."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


class OpenVINOBackend:
    """An ONNX model compiled by OpenVINO for its CPU device, with an explicit precision hint and thread count."""

    name = OPENVINO

    def __init__(self, model: onnx.ModelProto | str | os.PathLike, *, precision: str = "fp32",
                 threads: int | None = None) -> None:
        if precision not in PRECISIONS:
            raise FoldkitError(f"unknown OpenVINO precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if not openvino_available():
            raise FoldkitError(INSTALL_HINT)
        import openvino as ov
        from openvino.frontend import FrontEndManager

        self.label = model.graph.name if isinstance(model, onnx.ModelProto) else str(model)
        self.precision, self.version = precision, ov.get_version().split("-")[0]
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if PRECISIONS[precision]:
            config["INFERENCE_PRECISION_HINT"] = PRECISIONS[precision]
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        # The ONNX frontend only: OpenVINO's generic reader tries every framework on a bad file.
        frontend = FrontEndManager().load_by_framework("onnx")
        source = io.BytesIO(model.SerializeToString()) if isinstance(model, onnx.ModelProto) else str(model)
        self.core = ov.Core()
        self.fallback: str | None = None  # why the default precision was replaced by f32, where it was
        try:  # OpenVINO's errors (GeneralFailure, OpConversionFailure, RuntimeError…) share no base but Exception
            converted = frontend.convert(frontend.load(source))
        except Exception as exc:
            raise FoldkitError(f"{self.label}: OpenVINO cannot load the model: {_last_line(exc)}") from None
        try:
            self.compiled = self.core.compile_model(converted, DEVICE, config)
        except Exception as exc:
            if PRECISIONS[precision] is not None:
                raise FoldkitError(f"{self.label}: OpenVINO cannot load the model at {precision}: "
                                   f"{_last_line(exc)}") from None
            self.compiled = self._compile_f32_instead(converted, config, exc, model)
        self.request = self.compiled.create_infer_request()
        # Names from the converted graph: compiling merges tensors through Identity nodes, and a compiled
        # output can then answer to an inner tensor's name instead of the ONNX output's.
        self.output_names = [port.get_any_name() for port in converted.outputs]
        self._inputs = [_describe(port) for port in converted.inputs]

    def _compile_f32_instead(self, converted: Any, config: dict[str, Any], exc: Exception,
                             model: onnx.ModelProto | str | os.PathLike) -> Any:
        """The default precision failed to compile: f32 instead, said and recorded (or the first error)."""
        default = _text(self.core.get_property(DEVICE, "INFERENCE_PRECISION_HINT"))
        why = f"OpenVINO cannot compile it at its default {default} on this CPU ({_last_line(exc)})"
        if signed_int8_activations(model):
            why += "; its activations are quantized to signed int8, which OpenVINO's bf16 convolutions do not take"
        try:
            compiled = self.core.compile_model(converted, DEVICE, config | {"INFERENCE_PRECISION_HINT": "f32"})
        except Exception:
            raise FoldkitError(f"{self.label}: {why}") from None
        self.fallback = f"{why}: compiled with f32 instead"
        warnings.warn(f"{self.label}: {self.fallback}", PrecisionWarning, stacklevel=3)
        return compiled

    def get_inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check(feeds)
        try:
            results = self.request.infer({name: feeds[name] for name in (i.name for i in self._inputs)})
        except Exception as exc:
            raise FoldkitError(f"{self.label}: OpenVINO failed running the model: {_last_line(exc)}") from None
        return {name: np.asarray(results[port]) for name, port in zip(self.output_names, self.compiled.outputs,
                                                                      strict=True)}

    def record(self) -> dict[str, Any]:
        prop = self.compiled.get_property
        return {"runtime": "openvino", "version": self.version,
                "device": f"{DEVICE} ({self.core.get_property(DEVICE, 'FULL_DEVICE_NAME')})",
                "precision_hint": PRECISIONS[self.precision] or ("none (OpenVINO's default)" if self.fallback is None
                                                                  else f"f32 ({self.fallback})"),
                "inference_precision": _text(prop("INFERENCE_PRECISION_HINT")),
                "threads": int(prop("INFERENCE_NUM_THREADS")), "streams": int(prop("NUM_STREAMS")),
                "performance_hint": _text(prop("PERFORMANCE_HINT")),
                "convolution_precisions": self._convolution_precisions()}

    def ran_ops(self) -> dict[str, int]:
        """Layer types of the graph the device really runs (after OpenVINO's fusions), counted; no constants."""
        kinds = Counter(kind for kind, _ in self._runtime_layers())
        return {kind: count for kind, count in sorted(kinds.items()) if kind not in _NOT_LAYERS}

    def _convolution_precisions(self) -> list[str]:
        """The precisions OpenVINO's convolutions really run in (f32, bf16, u8/i8 for int8), not the hint asked."""
        return sorted({precision for kind, precision in self._runtime_layers() if kind == "Convolution"})

    def _runtime_layers(self) -> list[tuple[str, str]]:
        """(layer type, runtime precision) of every layer in the compiled graph."""
        infos = (op.get_rt_info() for op in self.compiled.get_runtime_model().get_ordered_ops())
        return [(str(info["layerType"].astype(str)), str(info["runtimePrecision"].astype(str))) for info in infos]

    def _check(self, feeds: dict[str, np.ndarray]) -> None:
        """Names, dtypes and fixed dims of the feeds, which OpenVINO itself does not check."""
        for spec in self._inputs:
            if spec.name not in feeds:
                raise FoldkitError(f"{self.label}: input '{spec.name}' is missing")
            value = feeds[spec.name]
            fits = len(value.shape) == len(spec.shape) and all(
                d is None or d == v for d, v in zip(spec.shape, value.shape, strict=True))
            if value.dtype != ORT_TYPES.get(spec.type) or not fits:
                raise FoldkitError(f"{self.label}: input '{spec.name}' is {value.dtype} {list(value.shape)}, but "
                                   f"the model takes {spec.type} {spec.shape}")


def signed_int8_activations(model: onnx.ModelProto | str | os.PathLike) -> bool:
    """Whether a QDQ model quantizes an activation to int8 (a QuantizeLinear with an int8 zero point)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    int8 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    return any(node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in int8
               for node in model.graph.node)


def _describe(port: Any) -> TensorInfo:
    """A compiled model's input port in ONNX Runtime's spelling: dynamic dims are None."""
    kind = port.get_element_type().get_type_name()
    shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
    return TensorInfo(port.get_any_name(), _TYPES.get(kind, f"tensor({kind})"), shape)


def _text(value: Any) -> str:
    """An OpenVINO property value as text: ``<Type: 'float32'>`` → ``f32``, enums by their name."""
    if hasattr(value, "get_type_name"):
        return str(value.get_type_name())
    return str(getattr(value, "name", value))


def _last_line(exc: Exception) -> str:
    """OpenVINO's messages start with source locations; the last non-empty line says what is wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
