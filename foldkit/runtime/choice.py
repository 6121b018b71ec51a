"""Which backend runs a model: the user's provider names resolved, and the chosen backend opened.

``openvino`` names OpenVINO's own runtime; every other name is an ONNX Runtime execution provider
(``cpu``, ``cuda``, ``tensorrt`` or a full name). ``auto`` never picks OpenVINO: it is asked for by
name, so a model keeps running where it ran before the package was installed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import onnx

from foldkit.errors import FoldkitError
from foldkit.runtime.interface import Backend
from foldkit.runtime.openvino import INSTALL_HINT, OPENVINO, OpenVINOBackend, openvino_available
from foldkit.runtime.ort import CPU_PROVIDER, ProviderWarning, available_provider, open_ort, provider_preference


def backend_preference(requested: str | Sequence[str] | None, *, strict: bool = False) -> list[str]:
    """The backends to try, in order, always ending with ORT's CPU provider (see :func:`provider_preference`)."""
    if requested in (None, "auto"):
        return provider_preference("auto")
    chosen: list[str] = []
    for name in [requested] if isinstance(requested, str) else list(requested or []):
        found = _openvino(strict) if name.lower() == OPENVINO.lower() else available_provider(name, strict=strict)
        if found and found not in chosen:
            chosen.append(found)
    return chosen + [p for p in (CPU_PROVIDER,) if p not in chosen]


def open_backend(
    model: onnx.ModelProto | str | os.PathLike, providers: str | Sequence[str] | None = "auto", *,
    opt_level: str = "all", disabled_optimizers: Sequence[str] = (), threads: int | None = None,
    precision: str = "fp32", spinning: bool = True,
) -> Backend:
    """Load ``model`` on the first of ``providers`` (strictly: a name that is not here is an error).

    OpenVINO first means OpenVINO's runtime; else ONNX Runtime gets the whole list and places
    nodes itself. ``opt_level``, ``disabled_optimizers`` and ``spinning`` are ONNX Runtime's;
    ``precision`` is OpenVINO's inference precision hint (``fp32``; ``default``: OpenVINO's own
    choice; ``bf16``; ``fp16``).
    """
    chosen = backend_preference(providers, strict=True)
    if chosen[0] == OPENVINO:
        return OpenVINOBackend(model, precision=precision, threads=threads)
    return open_ort(model, chosen, opt_level=opt_level, disabled_optimizers=disabled_optimizers, threads=threads,
                    spinning=spinning)


def _openvino(strict: bool) -> str | None:
    if openvino_available():
        return OPENVINO
    if strict:
        raise FoldkitError(INSTALL_HINT)
    warnings.warn(f"{INSTALL_HINT}; falling back to CPU", ProviderWarning, stacklevel=3)
    return None
