"""ONNX Runtime sessions with an explicit provider and graph optimization level.

ONNX Runtime rewrites graphs before running them; at ``basic`` and above its ``ConvBNFusion``
folds Conv+BatchNormalization on its own. Whoever compares folded and unfolded models must
control this, so every session here names its optimization level and can disable single
optimizers by rule name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort

from foldkit.errors import FoldkitError

OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
CONV_BN_FUSION = "ConvBNFusion"
_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_SHORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def resolve_providers(requested: str | Sequence[str] | None = "auto") -> list[str]:
    """``auto`` → CUDA when this onnxruntime has it, else CPU; names may be short (``cuda``)."""
    available = ort.get_available_providers()
    if requested in (None, "auto"):
        preferred = "CUDAExecutionProvider" if "CUDAExecutionProvider" in available else "CPUExecutionProvider"
        return [preferred] + (["CPUExecutionProvider"] if preferred != "CPUExecutionProvider" else [])
    names = [requested] if isinstance(requested, str) else list(requested)
    resolved = []
    for name in names:
        full = _SHORT_NAMES.get(name.lower(), name)
        if full not in available:
            raise FoldkitError(f"execution provider {name!r} is not available; this onnxruntime has {', '.join(available)}")
        resolved.append(full)
    return resolved


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
    except (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidGraph,
            ort.capi.onnxruntime_pybind11_state.InvalidArgument, ort.capi.onnxruntime_pybind11_state.NotImplemented) as exc:
        where = model.graph.name if isinstance(model, onnx.ModelProto) else Path(model).name
        raise FoldkitError(f"{where}: onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None


_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def random_inputs(session: ort.InferenceSession, *, seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Seeded inputs for every session input: floats uniform in [0, 1), symbolic dims = ``batch``."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in session.get_inputs():
        dtype = _ORT_TYPES.get(arg.type)
        if dtype is None:
            raise FoldkitError(f"input '{arg.name}' has type {arg.type}, which foldkit cannot generate")
        shape = [d if isinstance(d, int) and d > 0 else batch for d in arg.shape]
        values = rng.random(shape) if np.dtype(dtype).kind == "f" else rng.integers(0, 2, shape)
        feeds[arg.name] = values.astype(dtype)
    return feeds


def run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run and return outputs by name."""
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))
