"""ONNX Runtime sessions with an explicit provider and graph optimization level.

ONNX Runtime rewrites graphs before running them; at ``basic`` and above its ``ConvBNFusion``
folds Conv+BatchNormalization on its own. Whoever compares folded and unfolded models must
control this, so every session here names its optimization level and can disable single
optimizers by rule name.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from foldkit.errors import FoldkitError
from foldkit.limits import ensure_fits

OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
CONV_BN_FUSION = "ConvBNFusion"
# What onnxruntime raises for a model or input it cannot handle (its errors are not Exception subclasses
# of one base): turned into one-line FoldkitErrors.
ORT_ERRORS = tuple(
    getattr(ort.capi.onnxruntime_pybind11_state, name)
    for name in ("Fail", "InvalidGraph", "InvalidArgument", "InvalidProtobuf", "NoSuchFile", "NoModel",
                 "NotImplemented", "RuntimeException", "EPFail")
)
_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
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


_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def random_inputs(session: ort.InferenceSession, *, seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Seeded inputs for every session input: floats uniform in [0, 1), symbolic dims = ``batch``."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for arg in session.get_inputs():
        dtype = _ORT_TYPES.get(arg.type)
        if dtype is None:
            raise FoldkitError(f"input '{arg.name}' has type {arg.type}, which foldkit cannot generate")
        shape = [d if isinstance(d, int) and d > 0 else batch for d in arg.shape]
        ensure_fits(float(np.prod(shape, dtype=np.float64)) * 8, f"input '{arg.name}' of shape {shape}")
        values = rng.random(shape) if np.dtype(dtype).kind == "f" else rng.integers(0, 2, shape)
        feeds[arg.name] = values.astype(dtype)
    return feeds


def run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run and return outputs by name."""
    names = [o.name for o in session.get_outputs()]
    try:
        results = session.run(names, feeds)
    except ORT_ERRORS as exc:
        raise FoldkitError(f"onnxruntime failed running the model: {str(exc).splitlines()[0]}") from None
    return dict(zip(names, results, strict=True))




class ProviderWarning(UserWarning):
    """An execution provider was asked for but another one runs the model."""


def provider_preference(requested: str | Sequence[str] | None, *, strict: bool = False) -> list[str]:
    """The providers to try, in order, always ending with CPU.

    ``auto`` (or None) tries TensorRT, then CUDA, then CPU — whichever this onnxruntime has. Named
    providers that this build lacks are dropped with a :class:`ProviderWarning`, or refused with
    ``strict``.
    """
    available = ort.get_available_providers()
    if requested in (None, "auto"):
        chosen = [p for p in _PREFERENCE if p in available]
    else:
        chosen = []
        for name in [requested] if isinstance(requested, str) else list(requested):
            full = _SHORT_NAMES.get(name.lower(), name)
            if full in available:
                chosen.append(full)
                continue
            message = f"execution provider {name!r} is not available; this onnxruntime has {', '.join(available)}"
            if strict:
                raise FoldkitError(message)
            warnings.warn(f"{message}; falling back to CPU", ProviderWarning, stacklevel=2)
    return chosen + [p for p in ("CPUExecutionProvider",) if p not in chosen]


class Predictor:
    """An inference session that says which provider runs it, for deploying foldkit models.

    Providers are tried in preference order; one that fails to initialize is skipped with a
    warning (or refused with ``strict``). On CUDA, inputs and outputs go through IO binding. A
    model that ONNX Runtime optimized offline carries the provider it was optimized for, and is
    refused on any other: fused nodes such as Conv+LeakyRelu exist for one provider only and can
    crash another.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        providers: str | Sequence[str] | None = "auto",
        strict: bool = False,
        threads: int | None = None,
        opt_level: str = "all",
        warmup: int = 0,
    ) -> None:
        self.path = Path(model)
        from foldkit.onnxio.files import load_onnx
        from foldkit.onnxio.metadata import OPTIMIZED_FOR_KEY, read_metadata

        proto = load_onnx(self.path, load_external_data=False)
        self.metadata = read_metadata(proto)
        self.opt_level, self.threads = opt_level, threads
        self.session, self.provider = self._open(provider_preference(providers, strict=strict), strict)
        optimized_for = self.metadata.get(OPTIMIZED_FOR_KEY)
        if optimized_for and optimized_for != self.provider:
            raise FoldkitError(
                f"{self.path}: this model was optimized offline by ONNX Runtime for {optimized_for} and must not run "
                f"on {self.provider} (its fused nodes are provider-specific); use the un-optimized model here"
            )
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise FoldkitError(f"{self.path}: a predictor needs a model with one input, found {len(inputs)}")
        self.input_name, self.input_shape = inputs[0].name, inputs[0].shape
        self.output_names = [o.name for o in self.session.get_outputs()]
        for _ in range(warmup):
            self(np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in self.input_shape], np.float32))

    def _open(self, candidates: list[str], strict: bool) -> tuple[ort.InferenceSession, str]:
        for provider in candidates:
            try:
                session = create_session(self.path, providers=[provider], opt_level=self.opt_level,
                                         threads=self.threads)
            except FoldkitError as exc:
                if strict or provider == candidates[-1]:
                    raise
                warnings.warn(f"{provider} failed to initialize ({exc}); trying the next provider", ProviderWarning,
                              stacklevel=3)
                continue
            used = session.get_providers()[0]
            if used != provider:
                message = f"asked for {provider}, but ONNX Runtime runs the model on {used}"
                if strict:
                    raise FoldkitError(f"{self.path}: {message}")
                warnings.warn(message, ProviderWarning, stacklevel=3)
            return session, used
        raise FoldkitError(f"{self.path}: no execution provider could run the model")

    @property
    def fixed_batch(self) -> int | None:
        first = self.input_shape[0] if self.input_shape else None
        return first if isinstance(first, int) and first > 0 else None

    def __call__(self, images: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run on an NCHW float32 batch; returns outputs by name.

        ``extra`` feeds inputs that have defaults in the graph (overridable initializers such as the
        thresholds of :mod:`foldkit.deploy.nms_graph`).
        """
        images = np.ascontiguousarray(images, dtype=np.float32)
        feeds = {self.input_name: images, **(extra or {})}
        if self.provider == "CUDAExecutionProvider":
            binding = self.session.io_binding()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, value)
            for name in self.output_names:
                binding.bind_output(name, "cuda")
            try:
                self.session.run_with_iobinding(binding)
            except ORT_ERRORS as exc:
                raise FoldkitError(f"{self.path}: onnxruntime failed running the model: "
                                   f"{str(exc).splitlines()[0]}") from None
            return dict(zip(self.output_names, binding.copy_outputs_to_cpu(), strict=True))
        return run(self.session, feeds)

    def save_optimized(self, target: str | os.PathLike) -> None:
        """Save the graph ONNX Runtime optimized for this provider, recording the provider in its metadata."""
        from foldkit.onnxio.files import load_onnx, save_onnx
        from foldkit.onnxio.metadata import OPTIMIZED_FOR_KEY, add_metadata

        with tempfile.TemporaryDirectory() as folder:
            raw = Path(folder) / "optimized.onnx"
            create_session(self.path, providers=[self.provider], optimized_model_path=raw, opt_level=self.opt_level,
                           threads=self.threads)
            optimized = load_onnx(raw)
        add_metadata(optimized, {OPTIMIZED_FOR_KEY: self.provider})
        save_onnx(optimized, target)
