"""ONNX Runtime sessions with an explicit provider (CPU, CUDA, TensorRT) and graph optimization level.

ONNX Runtime rewrites graphs before running them; at ``basic`` and above its ``ConvBNFusion``
folds Conv+BatchNormalization on its own. Whoever compares folded and unfolded models must
control this, so every session here names its optimization level and can disable single
optimizers by rule name.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from foldkit.defaults import OPT_LEVEL_NAMES
from foldkit.errors import FoldkitError
from foldkit.limits import ensure_fits
from foldkit.probe import ORT_TYPES
from foldkit.runtime.interface import Backend, TensorInfo

OPT_LEVELS = dict(zip(OPT_LEVEL_NAMES, (
    ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, ort.GraphOptimizationLevel.ORT_ENABLE_ALL), strict=True))
CONV_BN_FUSION = "ConvBNFusion"
# What onnxruntime raises for a model or input it cannot handle (its errors are not Exception subclasses
# of one base): turned into one-line FoldkitErrors.
ORT_ERRORS = tuple(
    getattr(ort.capi.onnxruntime_pybind11_state, name)
    for name in ("Fail", "InvalidGraph", "InvalidArgument", "InvalidProtobuf", "NoSuchFile", "NoModel",
                 "NotImplemented", "RuntimeException", "EPFail")
)
CPU_PROVIDER = "CPUExecutionProvider"
_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", CPU_PROVIDER)
_SHORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def resolve_providers(requested: str | Sequence[str] | None = "auto") -> list[str]:
    """Providers to hand ONNX Runtime; a name this build lacks is an error (see :func:`provider_preference`)."""
    return provider_preference(requested, strict=True)


def create_session(
    model: onnx.ModelProto | str | os.PathLike,
    *,
    providers: str | Sequence[str] | None = "auto",
    opt_level: str = "all",
    disabled_optimizers: Sequence[str] = (),
    threads: int | None = None,
    optimized_model_path: str | os.PathLike | None = None,
    spinning: bool = True,
) -> ort.InferenceSession:
    """An ``InferenceSession`` with exactly the settings asked for.

    ``disabled_optimizers`` names ORT rewrite rules to switch off, e.g. ``["ConvBNFusion"]``.
    ``optimized_model_path`` saves the graph ORT actually runs, to see what it rewrote.
    ``spinning=False`` stops ORT's idle threads from busy-waiting after a run, which would steal
    the cores from whatever runs next (an interleaved benchmark's next variant).
    """
    if opt_level not in OPT_LEVELS:
        raise FoldkitError(f"unknown optimization level {opt_level!r}; choose one of {', '.join(OPT_LEVELS)}")
    options = ort.SessionOptions()
    options.graph_optimization_level = OPT_LEVELS[opt_level]
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if optimized_model_path:
        options.optimized_model_filepath = str(optimized_model_path)
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(
            source, sess_options=options, providers=resolve_providers(providers),
            disabled_optimizers=list(disabled_optimizers) or None,
        )
    except ORT_ERRORS as exc:
        where = model.graph.name if isinstance(model, onnx.ModelProto) else Path(model).name
        raise FoldkitError(f"{where}: onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None


def random_inputs(session: ort.InferenceSession | Backend, *, seed: int = 0, batch: int = 1,
                  size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs for every input of a session or backend: floats uniform in [0, 1), symbolic dims = ``batch``.

    ``size`` (height, width) fills a 4-D input's symbolic dims 2 and 3 (a dynamic-size image input).
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for arg in session.get_inputs():
        dtype = ORT_TYPES.get(arg.type)
        if dtype is None:
            raise FoldkitError(f"input '{arg.name}' has type {arg.type}, which foldkit cannot generate")
        free = [batch] * len(arg.shape)
        if size is not None and len(free) == 4:
            free[2:] = size
        shape = [d if isinstance(d, int) and d > 0 else f for d, f in zip(arg.shape, free, strict=True)]
        ensure_fits(float(np.prod(shape, dtype=np.float64)) * 8, f"input '{arg.name}' of shape {shape}")
        values = rng.random(shape) if np.dtype(dtype).kind == "f" else rng.integers(0, 2, shape)
        feeds[arg.name] = values.astype(dtype)
    return feeds


def run(session: ort.InferenceSession, feeds: dict[str, np.ndarray], *, label: str = "") -> dict[str, np.ndarray]:
    """Run and return outputs by name; ``label`` (the model's name) starts any error message."""
    names = [o.name for o in session.get_outputs()]
    try:
        results = session.run(names, feeds)
    except ORT_ERRORS as exc:
        where = f"{label}: " if label else ""
        raise FoldkitError(f"{where}onnxruntime failed running the model: {str(exc).splitlines()[0]}") from None
    return dict(zip(names, results, strict=True))


class ProviderWarning(UserWarning):
    """An execution provider was asked for but another one runs the model."""


def provider_preference(requested: str | Sequence[str] | None, *, strict: bool = False) -> list[str]:
    """The providers to try, in order, always ending with CPU.

    ``auto`` (or None) tries TensorRT, then CUDA, then CPU — whichever this onnxruntime has. Named
    providers that this build lacks are dropped with a :class:`ProviderWarning`, or refused with
    ``strict``.
    """
    if requested in (None, "auto"):
        return [p for p in _PREFERENCE if p in ort.get_available_providers()]
    names = [requested] if isinstance(requested, str) else list(requested)
    chosen = [p for p in (available_provider(name, strict=strict) for name in names) if p]
    return chosen + [p for p in (CPU_PROVIDER,) if p not in chosen]


def available_provider(name: str, *, strict: bool = False) -> str | None:
    """The full name of provider ``name`` (``cpu``, ``cuda``, ``tensorrt`` or a full name) if this onnxruntime
    has it; else None with a :class:`ProviderWarning`, or a FoldkitError with ``strict``."""
    available = ort.get_available_providers()
    full = _SHORT_NAMES.get(name.lower(), name)
    if full in available:
        return full
    message = f"execution provider {name!r} is not available; this onnxruntime has {', '.join(available)}"
    if strict:
        raise FoldkitError(message)
    warnings.warn(f"{message}; falling back to CPU", ProviderWarning, stacklevel=3)
    return None


class OrtBackend:
    """An ONNX Runtime session behind the backend interface. On CUDA, inputs and outputs go through IO binding."""

    def __init__(self, session: ort.InferenceSession, *, label: str, settings: dict[str, Any]) -> None:
        self.session, self.label, self.settings = session, label, settings
        self.name = session.get_providers()[0]
        self.output_names = [o.name for o in session.get_outputs()]

    def get_inputs(self) -> list[TensorInfo]:
        return [TensorInfo(arg.name, arg.type, list(arg.shape)) for arg in self.session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.name != "CUDAExecutionProvider":
            return run(self.session, feeds, label=self.label)
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, "cuda")
        try:
            self.session.run_with_iobinding(binding)
        except ORT_ERRORS as exc:
            raise FoldkitError(f"{self.label}: onnxruntime failed running the model: "
                               f"{str(exc).splitlines()[0]}") from None
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu(), strict=True))

    def record(self) -> dict[str, Any]:
        return {"runtime": "onnxruntime", "version": ort.__version__, "provider": self.name} | self.settings


def open_ort(
    model: onnx.ModelProto | str | os.PathLike, providers: str | Sequence[str] | None = "auto", *,
    opt_level: str = "all", disabled_optimizers: Sequence[str] = (), threads: int | None = None, spinning: bool = True,
) -> OrtBackend:
    """:func:`create_session` as a backend."""
    session = create_session(model, providers=providers, opt_level=opt_level,
                             disabled_optimizers=disabled_optimizers, threads=threads, spinning=spinning)
    label = model.graph.name if isinstance(model, onnx.ModelProto) else str(model)
    settings = {"threads": threads or "ORT default", "graph_optimizations": opt_level,
                "disabled_optimizers": list(disabled_optimizers)}
    return OrtBackend(session, label=label, settings=settings)
