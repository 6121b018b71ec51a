"""A model deployed on the first backend that loads it, saying which one that was."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from foldkit.errors import FoldkitError
from foldkit.runtime.choice import backend_preference, open_backend
from foldkit.runtime.deployment import deployment_record
from foldkit.runtime.interface import Backend
from foldkit.runtime.openvino import OPENVINO
from foldkit.runtime.ort import ProviderWarning, create_session


class Predictor:
    """An inference backend that says what runs it, for deploying foldkit models.

    A model that carries a deployment record (``foldkit optimize``) runs, under ``providers="auto"``,
    on the backend and with the settings the record names. Backends are tried in preference order
    (``openvino`` or ORT providers, see :func:`foldkit.runtime.choice.backend_preference`); one that
    fails to initialize is skipped with a warning (or refused with ``strict``). ``img_size`` is the
    size a model with a dynamic height and width runs at (``image_size``; a fixed model refuses
    another). A model that ONNX
    Runtime optimized offline carries the provider it was optimized for, and is refused on any other:
    fused nodes such as Conv+LeakyRelu exist for one provider only and can crash another.
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
        precision: str = "fp32",
        img_size: int | tuple[int, int] | None = None,
    ) -> None:
        self.path = Path(model)
        from foldkit.onnxio.files import load_onnx
        from foldkit.onnxio.metadata import OPTIMIZED_FOR_KEY, read_metadata

        proto = load_onnx(self.path, load_external_data=False)
        self.metadata = read_metadata(proto)
        self.deployment = deployment_record(self.metadata, str(self.path))
        if self.deployment is not None and providers in (None, "auto"):  # run it as it was measured
            recorded = self.deployment.backend_options()
            providers, precision, opt_level = recorded["providers"], recorded["precision"], recorded["opt_level"]
            threads = threads if threads is not None else recorded["threads"]
            if (warning := self.deployment.cpu_warning()) is not None:
                warnings.warn(warning, ProviderWarning, stacklevel=2)
        self.opt_level, self.threads, self.precision = opt_level, threads, precision
        self.backend = self._open(backend_preference(providers, strict=strict), strict)
        self._record: dict[str, Any] | None = None
        self.provider = self.backend.name
        optimized_for = self.metadata.get(OPTIMIZED_FOR_KEY)
        if optimized_for and optimized_for != self.provider:
            raise FoldkitError(
                f"{self.path}: this model was optimized offline by ONNX Runtime for {optimized_for} and must not run "
                f"on {self.provider} (its fused nodes are provider-specific); use the un-optimized model here"
            )
        inputs = self.backend.get_inputs()
        if len(inputs) != 1:
            raise FoldkitError(f"{self.path}: a predictor needs a model with one input, found {len(inputs)}")
        self.input_name, self.input_shape = inputs[0].name, inputs[0].shape
        self.output_names = self.backend.output_names
        self.image_size = self._image_size(img_size)
        for _ in range(warmup):
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in self.input_shape]
            if self.image_size is not None:
                shape[2:] = self.image_size
            self(np.zeros(shape, np.float32))

    def _image_size(self, requested: int | tuple[int, int] | None) -> tuple[int, int] | None:
        """(H, W) an NCHW image model runs at: its fixed size, or for a dynamic one ``requested`` or the size
        it was exported at (a multiple of its stride, :mod:`foldkit.onnxio.input_size`); None where the
        model states none and none was asked for."""
        from foldkit.onnxio.input_size import input_size

        if requested is not None:
            if len(self.input_shape) != 4:
                raise FoldkitError(f"{self.path}: an image size needs an NCHW input, not {self.input_shape}")
            return input_size(self.input_shape, self.metadata, str(self.path)).choose(requested)
        try:
            return input_size(self.input_shape, self.metadata, str(self.path)).choose(None)
        except FoldkitError:  # not an image input, or one that states no size: the caller's arrays decide
            return None

    def _open(self, candidates: list[str], strict: bool) -> Backend:
        for provider in candidates:
            try:
                backend = open_backend(self.path, [provider], opt_level=self.opt_level, threads=self.threads,
                                       precision=self.precision)
            except FoldkitError as exc:
                if strict or provider == candidates[-1]:
                    raise
                warnings.warn(f"{provider} failed to initialize ({exc}); trying the next provider", ProviderWarning,
                              stacklevel=3)
                continue
            if backend.name != provider:
                message = f"asked for {provider}, but ONNX Runtime runs the model on {backend.name}"
                if strict:
                    raise FoldkitError(f"{self.path}: {message}")
                warnings.warn(message, ProviderWarning, stacklevel=3)
            return backend
        raise FoldkitError(f"{self.path}: no execution provider could run the model")

    @property
    def fixed_batch(self) -> int | None:
        first = self.input_shape[0] if self.input_shape else None
        return first if isinstance(first, int) and first > 0 else None

    def record(self) -> dict[str, Any]:
        """What runs the model: runtime, version, device, precision, threads.

        Fixed once the backend is open, so it is asked once: every image's record repeats it, and
        OpenVINO answers it through several property queries.
        """
        if self._record is None:
            self._record = self.backend.record()
        return dict(self._record)

    def __call__(self, images: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run on an NCHW float32 batch; returns outputs by name.

        ``extra`` feeds inputs that have defaults in the graph (overridable initializers such as the
        thresholds of :mod:`foldkit.deploy.nms_graph`).
        """
        return self.backend.run({self.input_name: np.ascontiguousarray(images, dtype=np.float32), **(extra or {})})

    def save_optimized(self, target: str | os.PathLike) -> None:
        """Save the graph ONNX Runtime optimized for this provider, recording the provider in its metadata."""
        from foldkit.onnxio.files import load_onnx, save_onnx
        from foldkit.onnxio.metadata import OPTIMIZED_FOR_KEY, add_metadata

        if self.provider == OPENVINO:
            raise FoldkitError(f"{self.path}: saving an optimized graph is ONNX Runtime's; OpenVINO compiles its "
                               "own at load time")
        with tempfile.TemporaryDirectory() as folder:
            raw = Path(folder) / "optimized.onnx"
            create_session(self.path, providers=[self.provider], optimized_model_path=raw, opt_level=self.opt_level,
                           threads=self.threads)
            optimized = load_onnx(raw)
        add_metadata(optimized, {OPTIMIZED_FOR_KEY: self.provider})
        save_onnx(optimized, target)

