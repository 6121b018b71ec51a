"""Make one variant runnable (a runtime backend or a loaded torch module), and say what it really runs.

Opening a runner is what "session creation" times: ORT loads and optimizes the file, OpenVINO
reads and compiles it, torch unpickles the saved module. The same function opens runners for
timing and for the memory probe's fresh process, so both measure the same thing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from foldkit.bench.variants import Variant
from foldkit.errors import FoldkitError
from foldkit.fold.onnx import node_counts
from foldkit.runtime import (
    OPENVINO,
    OpenVINOBackend,
    create_session,
    open_backend,
    provider_preference,
    random_inputs,
    resolve_providers,
)

TORCH_CPU = "torch-cpu"


@dataclass
class Runner:
    """One inference call with everything prepared, the provider that really runs it, and a way to ask what ran
    (called outside the timed creation: OpenVINO's record reads its compiled graph)."""

    run: Callable[[], Any]
    provider_used: str
    record: Callable[[], dict[str, Any]]


def available_providers() -> list[str]:
    """CPU, then CUDA and TensorRT where this onnxruntime has them: ``auto``'s preference, slowest first."""
    return provider_preference("auto")[::-1]


def input_feeds(model: Path, batch: int, seed: int, img_size: int | tuple[int, int] | None = None
                ) -> dict[str, np.ndarray]:
    """The seeded input every variant gets: :func:`foldkit.runtime.random_inputs` of the model's one input,
    at :func:`run_size`."""
    session = create_session(model, providers="cpu", opt_level="disable")
    if len(session.get_inputs()) != 1:
        raise FoldkitError(f"{model}: bench needs a model with one input, found {len(session.get_inputs())}")
    _check_batch(model, session.get_inputs()[0].shape, batch)
    return random_inputs(session, seed=seed, batch=batch, size=run_size(model, img_size))


def run_size(model: Path, img_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """(H, W) of an NCHW model's runs: ``img_size`` where its height and width are dynamic, else the size its
    metadata states (:class:`foldkit.onnxio.input_size.InputSize`); a fixed model only at its own. None
    for other inputs."""
    from foldkit.onnxio.files import load_onnx
    from foldkit.onnxio.input_size import input_size
    from foldkit.onnxio.metadata import read_metadata

    proto = load_onnx(model, load_external_data=False)
    dims = proto.graph.input[0].type.tensor_type.shape.dim if len(proto.graph.input) else []
    if len(dims) != 4:
        return None
    shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
    return input_size(shape, read_metadata(proto), str(model)).choose(img_size)


def open_runner(variant: Variant, path: Path, *, provider: str, feeds: dict[str, np.ndarray],
                threads: int | None) -> Runner:
    """Load ``path`` as ``variant`` says, ready to run on ``feeds``."""
    if variant.runtime == "torch":
        return _torch_runner(path, feeds, threads)
    backend = open_backend(path, OPENVINO if variant.runtime == "openvino" else provider, opt_level=variant.level,
                           disabled_optimizers=variant.disabled, threads=threads, precision=variant.precision,
                           spinning=False)
    _check_batch(path, backend.get_inputs()[0].shape, next(iter(feeds.values())).shape[0])
    return Runner(lambda: backend.run(feeds), backend.name, backend.record)


def _torch_runner(path: Path, feeds: dict[str, np.ndarray], threads: int | None) -> Runner:
    import torch

    if threads:
        torch.set_num_threads(threads)
    module = torch.load(path, weights_only=False).eval()
    x = torch.from_numpy(next(iter(feeds.values())))

    def run() -> Any:
        with torch.no_grad():
            return module(x)

    def record() -> dict[str, Any]:
        return {"runtime": "torch", "version": torch.__version__, "device": "CPU", "threads": torch.get_num_threads()}

    return Runner(run, TORCH_CPU, record)


def ran_ops(variant: Variant, path: Path, *, provider: str, threads: int | None, folder: Path) -> dict[str, int]:
    """Op counts of what really runs: the graph ORT saves after optimizing, the layers OpenVINO compiled, or the
    torch module's leaf layers."""
    if variant.runtime == "openvino":
        return OpenVINOBackend(path, precision=variant.precision, threads=threads).ran_ops()
    if variant.runtime == "ort":
        optimized = folder / f"{variant.name}-{provider}.optimized.onnx"
        create_session(path, providers=resolve_providers(provider), opt_level=variant.level,
                       disabled_optimizers=variant.disabled, threads=threads, optimized_model_path=optimized)
        return node_counts(onnx.load(str(optimized), load_external_data=False)) if optimized.exists() else {}
    import torch

    module = torch.load(path, weights_only=False)
    return dict(sorted(Counter(type(m).__name__ for m in module.modules() if not list(m.children())).items()))


def _check_batch(path: Path, shape: list, batch: int) -> None:
    """A fixed batch dimension is kept by random_inputs, so another batch size must be refused, not run as it."""
    if shape and isinstance(shape[0], int) and shape[0] > 0 and shape[0] != batch:
        raise FoldkitError(f"{path}: the model's batch size is fixed at {shape[0]}; cannot run batch {batch}")
